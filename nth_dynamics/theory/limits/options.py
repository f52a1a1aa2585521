"""The options of a limit network, checked once: the architecture, the
networks' own options, and the dense-layer options of neural-tangents'
``stax.Dense`` (docs/theory.md §10); and the inputs of a kernel call."""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from ...engine.networks import (
    BRANCHES,
    PARAMETERIZATIONS,  # noqa: F401  (one concept in one place: nd.limits re-exports it)
    READOUTS,
    residual_scale,
    resolve_dense_options,
    resolve_trained,
)
from .duals import dual
from .recursion import Affine, Architecture

DENSE_OPTIONS = ("W_std", "b_std", "parameterization", "width")
"""Options of every dense layer, as in neural-tangents' ``stax.Dense`` (docs/theory.md §10)."""

ARCHITECTURE_OPTIONS: dict[str, tuple[str, ...]] = {
    "ffnet": ("activation", "readout", "trained", "quadrature_nodes", *DENSE_OPTIONS),
    "resnet": ("activation", "readout", "trained", "quadrature_nodes", "alpha", "gamma", "branch", *DENSE_OPTIONS),
}
"""Options each architecture accepts: the networks' own, ``quadrature_nodes`` and
the dense-layer options of :data:`DENSE_OPTIONS` (limit kernels only)."""


def _check_size(name: str, value, why: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer ≥ 1 ({why}), got {value!r}")
    return int(value)


def _resolve_affine(options: dict, input_dim: int | None) -> Affine | None:
    """The dense layers' options (docs/theory.md §10), checked as the finite
    networks check them (b_std None or 0: no biases); None for the defaults."""
    W_std, b_std, parameterization = resolve_dense_options(
        options.get("W_std", 1.0), options.get("b_std"), options.get("parameterization", "ntk")
    )
    width = options.get("width")
    if parameterization == "standard":
        if width is None:
            raise ValueError("parameterization='standard' needs width= (the hidden width: its NTK grows with it)")
        width = _check_size("width", width, "the hidden width")
        if input_dim is None:
            raise ValueError("parameterization='standard' needs input_dim= here (the first layer's NTK term is input_dim·x·x′)")
        input_dim = _check_size("input_dim", input_dim, "the input dimension d")
    elif width is not None:
        raise ValueError("width only enters parameterization='standard' (the NTK parameterization's kernels do not depend on it)")
    if W_std == 1.0 and b_std == 0.0 and parameterization == "ntk":
        return None
    as_array = lambda v: jnp.asarray(v, dtype=jnp.float64)
    return Affine(
        as_array(W_std), as_array(b_std), as_array(parameterization == "standard"), as_array(b_std > 0),
        as_array(width or 1), as_array(input_dim or 1),
    )


def resolve_architecture(
    architecture: str, depth: int, input_dim: int | None = None, **options
) -> tuple[Architecture, float]:
    """Validate the options of :func:`ntk` and return the recursion's static
    description and the residual scale α (1.0 for the FFNet). ``input_dim`` (the
    inputs' dimension d) is needed by ``parameterization="standard"`` only.

    Raises ValueError, naming the allowed values, for an unknown architecture,
    option or value.
    """
    if architecture not in ARCHITECTURE_OPTIONS:
        raise ValueError(f"architecture must be one of {sorted(ARCHITECTURE_OPTIONS)}, got {architecture!r}")
    allowed = ARCHITECTURE_OPTIONS[architecture]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for {architecture!r}; allowed: {list(allowed)}")
    min_depth = 0 if architecture == "ffnet" else 1
    if not isinstance(depth, (int, np.integer)) or isinstance(depth, bool) or depth < min_depth:
        raise ValueError(f"depth must be an integer ≥ {min_depth} for {architecture!r}, got {depth!r}")
    readout = options.get("readout", "activation")
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {list(READOUTS)}, got {readout!r}")
    branch = options.get("branch", "two")
    if branch not in BRANCHES:
        raise ValueError(f"branch must be one of {list(BRANCHES)}, got {branch!r}")
    trained = resolve_trained(options.get("trained", "all"))
    dual_ = dual(options.get("activation", "tanh"), options.get("quadrature_nodes"))
    affine = _resolve_affine(options, input_dim)
    alpha = 1.0
    if architecture == "resnet":
        alpha = residual_scale(int(depth), alpha=options.get("alpha"), gamma=options.get("gamma"))
        if branch == "one" and readout == "activation":
            raise ValueError(
                "the one-matrix branch leaves non-Gaussian hidden units (no fresh matrix after σ), "
                "so readout='activation' has no covariance recursion; use readout='linear'"
            )
    homogeneous = dual_.homogeneous and not options.get("b_std")  # None or 0: no biases
    return Architecture(architecture, dual_, readout, trained, branch, affine, homogeneous), alpha


def _kernel_inputs(
    x1: ArrayLike, x2: ArrayLike | None, architecture: str, depth: int, options: dict
) -> tuple[tuple[Array, Array, Array], Architecture, float]:
    """The input Gram and resolve_architecture, with the input dimension taken from x1."""
    cross0, left0, right0 = _inputs(x1, x2)
    if "input_dim" in options:
        raise ValueError("input_dim is the inputs' own dimension here; it is an option of the profile functions only")
    arch, alpha = resolve_architecture(architecture, depth, jnp.shape(x1)[1], **options)
    if x2 is None and arch.dual.homogeneous and not arch.homogeneous:
        # ReLU with biases, off the correlation form: its angle arccos(ρ) turns
        # an ulp of x·x against |x|² into √ε ~ 1e−8 on the diagonal; make ρ = 1 there
        cross0 = cross0.at[jnp.diag_indices(cross0.shape[0])].set(left0)
    return (cross0, left0, right0), arch, alpha


def _inputs(x1: ArrayLike, x2: ArrayLike | None) -> tuple[Array, Array, Array]:
    x1 = jnp.asarray(x1, dtype=jnp.float64)
    x2 = x1 if x2 is None else jnp.asarray(x2, dtype=jnp.float64)
    if x1.ndim != 2 or x2.ndim != 2 or x1.shape[1] != x2.shape[1]:
        raise ValueError(f"x1 and x2 must have shapes (N1, d) and (N2, d), got {x1.shape} and {x2.shape}")
    return x1 @ x2.T, jnp.sum(x1 * x1, axis=1), jnp.sum(x2 * x2, axis=1)


def _rescaled(mantissa: Array, row: Array, col: Array, log_scale: Array) -> Array:
    log_scale = float(log_scale)
    if abs(log_scale) > 700:
        warnings.warn(
            f"the kernel's scale e^{log_scale:.0f} is outside float64's range: the values "
            "under/overflow; use normalized_ntk or ntk_shape for the shape",
            stacklevel=3,
        )
    return mantissa * row[:, None] * col[None, :] * jnp.exp(log_scale)
