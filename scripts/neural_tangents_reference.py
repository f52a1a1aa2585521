"""Reference NNGP/NTK values from neural-tangents' analytic ``stax`` kernels.

Writes ``tests/data/neural_tangents_reference.json``, which
``tests/test_limits.py`` compares :mod:`nth_dynamics.theory.limits` against
(docs/theory.md §10, docs/neural_tangents.md). The project never imports
neural-tangents: this script is run once by hand and its output committed.

neural-tangents 0.6.5 is archived and broken on current JAX, so it runs in a
venv of its own, pinned to the last versions it works with::

    python3.11 -m venv /tmp/nt-0.6.5
    /tmp/nt-0.6.5/bin/pip install neural-tangents==0.6.5 jax==0.4.25 \\
        jaxlib==0.4.25 numpy==1.26.4 tf2jax==0.3.6 tensorflow-cpu==2.21.0

Run it with any Python from the repository root: it creates that venv if
``/tmp/nt-0.6.5/bin/python`` is missing (``--venv`` to put it elsewhere) and
re-runs itself there::

    python3.11 scripts/neural_tangents_reference.py

Every case is a ``stax.serial`` of Dense layers (``W_std``, ``b_std`` and
``parameterization`` the same in every Dense, ``out_dim = width``), ReLU or Erf,
and residual blocks ``FanOut(2), parallel(branch, Identity), FanInSum`` with the
two-matrix branch ``Dense, σ, Dense`` multiplied by α. In the NTK
parameterization α·Dense(W_std, b_std) is the built-in ``Dense(α W_std, α b_std)``
(the same function of the same N(0, 1) parameters); in the standard one it is
not (the weights' initial scale differs, not their gradient), so α is a
``Scale(α)`` layer — ``x ↦ α x``, kernels × α² — written below because stax's
own elementwise layers mark their output non-Gaussian and FanInSum refuses
them. One NTK-parameterization case is computed both ways to check ``Scale``.

The inputs are four points on the unit sphere in d = 3 (numpy seed 0);
neural-tangents is given them times √d (the project's first layer ``W0 x`` has
variance |x|², neural-tangents' ``W_std/√d · W x`` has W_std²|x|²/d).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

VENV = "/tmp/nt-0.6.5"
PINS = [
    "neural-tangents==0.6.5",
    "jax==0.4.25",
    "jaxlib==0.4.25",
    "numpy==1.26.4",
    "tf2jax==0.3.6",
    "tensorflow-cpu==2.21.0",
]
OUTPUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "neural_tangents_reference.json"
WIDTH = 10  # out_dim of every hidden Dense: enters the standard-parameterization NTK
ALPHA = 0.5
D, N_POINTS, SEED = 3, 4, 0


def _ensure_venv(venv: str) -> None:
    """Re-run this script inside the pinned venv (creating it) unless already there."""
    try:
        import neural_tangents  # noqa: F401

        return
    except ImportError:
        pass
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([python, "-m", "pip", "install", *PINS], check=True)
    os.execv(python, [python, *sys.argv])


def inputs():
    import numpy as np

    x = np.random.default_rng(SEED).standard_normal((N_POINTS, D))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def Scale(c: float):
    """``x ↦ c x``: a linear map keeps the layer Gaussian, so nngp and ntk × c²."""
    from neural_tangents import stax

    @stax.layer
    def layer():
        def init_fn(rng, input_shape):
            return input_shape, ()

        def apply_fn(params, x, **kwargs):
            return c * x

        def kernel_fn(k, **kwargs):
            scaled = lambda a: None if a is None else c * c * a  # noqa: E731
            return k.replace(cov1=scaled(k.cov1), nngp=scaled(k.nngp), cov2=scaled(k.cov2), ntk=scaled(k.ntk))

        return init_fn, apply_fn, kernel_fn

    return layer()


def network(architecture, depth, activation, readout, W_std, b_std, parameterization, scale_layer):
    """The stax layers and their one-line description."""
    from neural_tangents import stax

    bias = None if b_std == 0 else b_std  # the project's b_std = 0 is "no bias" (see docs)
    dense = lambda out, w=W_std, b=bias: stax.Dense(out, w, b, parameterization=parameterization)  # noqa: E731
    sigma, sigma_name = {"relu": (stax.Relu, "Relu"), "erf": (stax.Erf, "Erf")}[activation]
    D_ = f"Dense({{out}}, W_std={W_std}, b_std={bias}, parameterization={parameterization!r})"
    layers, words = [dense(WIDTH)], [D_.format(out=WIDTH)]
    if architecture == "ffnet":
        for _ in range(depth):
            layers += [sigma(), dense(WIDTH)]
        words.append(f"[{sigma_name}, {D_.format(out=WIDTH)}]×{depth}")
    else:
        if scale_layer:
            branch = stax.serial(dense(WIDTH), sigma(), dense(WIDTH), Scale(ALPHA))
            last = f"{D_.format(out=WIDTH)}, Scale({ALPHA})"
        else:
            scaled_b = None if bias is None else ALPHA * bias
            branch = stax.serial(dense(WIDTH), sigma(), dense(WIDTH, ALPHA * W_std, scaled_b))
            last = f"Dense({WIDTH}, W_std={ALPHA * W_std}, b_std={scaled_b}, parameterization={parameterization!r})"
        block = stax.serial(stax.FanOut(2), stax.parallel(branch, stax.Identity()), stax.FanInSum())
        layers += [block] * depth
        words.append(f"[FanOut(2), parallel(serial({D_.format(out=WIDTH)}, {sigma_name}, {last}), Identity), FanInSum]×{depth}")
    if readout == "activation":
        layers.append(sigma())
        words.append(sigma_name)
    layers.append(dense(1))
    words.append(D_.format(out=1))
    return stax.serial(*layers), "serial(" + ", ".join(words) + ")"


def cases():
    """(architecture, depth, activation, readout, W_std, b_std, parameterization, scale_layer)."""
    for parameterization in ("ntk", "standard"):
        for architecture in ("ffnet", "resnet"):
            for activation in ("relu", "erf"):
                for W_std in (1.0, 1.5):
                    for b_std in (0.0, 0.5):
                        for depth in (1, 3):
                            yield architecture, depth, activation, "activation", W_std, b_std, parameterization, parameterization == "standard"
                # a linear readout and a small bias, once each
                yield architecture, 2, activation, "linear", 1.5, 0.1, parameterization, parameterization == "standard"
    # Scale(α) against the built-in Dense(α W_std, α b_std) where the two agree
    yield "resnet", 3, "relu", "activation", 1.5, 0.5, "ntk", True
    yield "resnet", 3, "erf", "activation", 1.5, 0.5, "ntk", True


def main() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    import neural_tangents as nt
    import numpy as np

    x = inputs()
    x_nt = np.sqrt(D) * x
    records = []
    for architecture, depth, activation, readout, W_std, b_std, parameterization, scale_layer in cases():
        (_, _, kernel_fn), stax_text = network(
            architecture, depth, activation, readout, W_std, b_std, parameterization, scale_layer)
        k = kernel_fn(x_nt, x_nt, ("nngp", "ntk"))
        options = {"activation": activation, "readout": readout, "W_std": W_std, "b_std": b_std,
                   "parameterization": parameterization}
        if architecture == "resnet":
            options["alpha"] = ALPHA
        if parameterization == "standard":
            options["width"] = WIDTH
        records.append({
            "architecture": architecture,
            "depth": depth,
            "options": options,
            "stax": stax_text,
            "alpha_as": "Scale" if scale_layer else "Dense",
            "nngp": np.asarray(k.nngp, dtype=np.float64).tolist(),
            "ntk": np.asarray(k.ntk, dtype=np.float64).tolist(),
        })
    payload = {
        "description": (
            "neural-tangents 0.6.5 analytic stax kernels (kernel_fn(x_nt, x_nt, ('nngp', 'ntk'))), "
            "x_nt = sqrt(d) * x; made by scripts/neural_tangents_reference.py; "
            "'options' are nth_dynamics.limits' options that reproduce each case on x"
        ),
        "versions": {"neural_tangents": nt.__version__, "jax": jax.__version__, "numpy": np.__version__},
        "d": D,
        "width": WIDTH,
        "x": x.tolist(),
        "x_nt": x_nt.tolist(),
        "cases": records,
    }
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {len(records)} cases to {OUTPUT}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", default=VENV, help="where the pinned neural-tangents venv lives")
    _ensure_venv(parser.parse_args().venv)
    main()
