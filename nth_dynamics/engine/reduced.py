"""The reduced-basis hierarchy of one network, with the estimate of its basis
error (docs/theory.md §8): what a scenario cell runs in ``basis: reduced``.

The hierarchy projected on a basis V is exact when the residual r(t) of the
NTH's own solution stays in the span of V, and its error is driven by the
part of r(t) outside it. No trajectory that is known before the projected
tower is computed is that residual, so the basis is built in two steps:

1. the **seed**: the POD of the reference gradient flow's residual when it
   is given, else of the p = 2 residual (closed form from K2). The reference
   misses only the part of r_NTH − r_ref (≈ √n·E_p) outside its span, a
   relative O(1/m) error of E_p; the p = 2 residual misses O(1/m) of r
   itself, which enters K2's motion at the size of E_4 (docs/theory.md §8).
2. the **enlargement**: the projected hierarchy is solved on the seed, and V
   is enlarged by the POD of that reduced solution's own residuals (the part
   outside the seed), so that the final basis spans the NTH's own residual
   to first order. The hierarchy is solved again on the enlarged basis; its
   outputs are the ones returned, and the change of f between the two solves
   is the **basis error** estimate — the seed solve's error, and so a
   conservative estimate for the enlarged solve's. While it exceeds
   ``accuracy`` the basis is enlarged again (``max_enlargements``); after
   that, :class:`BasisError` is raised rather than returning outputs their
   own estimate calls inaccurate.

Measured (tanh FFNet, width 256, depth 1, n = 24, t1 = 10, tol 1e−12, solver
tolerances 1e−12; max|f_reduced − f_full| in units of E_p, seed k → enlarged k):

    seed            p = 3 (E_3 = 1.8e−3)          p = 4 (E_4 = 1.2e−4)
    p = 2 alone     k 7: 3.5e−4 → k 14: 1.1e−9    k 7: 4.0e−3 → k 15: 6.9e−8
    reference       k 12: 2.4e−5 → k 18: 2e−11    k 12: 1.9e−5 → k 18: 6.9e−8
    both stacked    k 15: 8.8e−6 → k 21: 7e−13    k 15: 4.3e−6 → k 21: 7.1e−8

(6.9e−8·E_4 is the solver-tolerance floor.) The p = 2 seed alone is not
accurate enough for p = 4 (4e−3·E_4), as §8 argues, until it is enlarged;
the reference seed reaches the floor after one enlargement with its estimate
(1.9e−5·E_4) already below any useful accuracy, and stacking both only adds
directions. Hence: the reference when there is one, else p = 2 with as many
enlargements as the estimate asks for.
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

from .basis import enlarge_basis, residual_basis
from .hierarchy import SUCCESSFUL, Trajectory, closed_form_p2, solve_nth
from .losses import AbstractLoss, resolve_loss
from .kernels import Tower, basis_chunk, kernel_tower

DENSE_SAVES = 64
"""Uniform times in [0, t1] at which every trajectory is sampled for its POD,
besides the save times: a smooth residual's modes need the whole interval."""


SOLVER_FLOOR_FACTOR = 100
"""A basis-error estimate within this factor of the solves' tolerance
(rtol·max|f| + atol) is taken for solver error, and the refusal says to lower
rtol and atol rather than to change the basis."""


class BasisError(RuntimeError):
    """The reduced-basis hierarchy's own error estimate exceeds the accuracy asked for."""


class ReducedHierarchy(eqx.Module):
    """Outputs of the reduced-basis hierarchy for each order, the basis and
    its error estimate (docs/theory.md §8).

    ``trajectories[i]``: the :class:`Trajectory` (``f``: time × N_eval,
    ``ntk``: time × N_eval × n) of order ``orders[i]`` at the save times, on
    the final basis. ``basis``: V (n, k), k = ``rank``; ``seed_rank``: the
    rank of the seed basis it was enlarged from. ``tower``: the projected
    tower at t = 0 on ``basis`` (K2 whole, K̂(r) of shape (N_eval, n, k, …)).
    ``basis_error`` (order,): max over times and evaluation points of |Δf|,
    the change of the outputs between the last two bases (0 for p = 2, which
    has no projected index, and 0 when the final basis has rank n: it spans
    every residual, so the projected hierarchy is the full one; NaN for an
    order whose final solve stopped before t1 — a truncation that blew up,
    inf from there on, as its ``stats["result"]`` says, which the caller
    records or refuses; an order whose solve stopped only on the smaller
    basis is enlarged again, as no change can be measured from it).
    ``basis_error_ratio`` (order,): that divided by ``error_scale`` —
    max_t E_p(t) = ‖f_ref − f̃_p‖₂/√n over the training points when a
    reference was given, else max |f̃_p − f̃_2| (the finite-width correction
    the hierarchy adds).
    """

    orders: tuple[int, ...] = eqx.field(static=True)
    trajectories: tuple[Trajectory, ...]
    basis: Float[Array, "n k"]
    seed_rank: int = eqx.field(static=True)
    tower: Tower
    basis_error: Float[Array, " order"]
    basis_error_ratio: Float[Array, " order"]
    error_scale: Float[Array, " order"]

    @property
    def rank(self) -> int:
        return self.basis.shape[1]


def reduced_hierarchy(
    model: eqx.Module,
    x_train: Float[Array, "n d"],
    y_train: Float[Array, " n"],
    ts: Float[Array, " time"],
    orders: Sequence[int],
    x_eval: Float[Array, "n_eval d"] | None = None,
    *,
    reference: Float[Array, "time_ref n"] | None = None,
    reference_f: Float[Array, "time n_eval"] | None = None,
    tol: float = 1e-12,
    accuracy: float | None = 1e-3,
    max_enlargements: int = 2,
    filter_spec: PyTree | None = None,
    batch_size: int | None = None,
    solver: str = "tsit5",
    rtol: float = 1e-9,
    atol: float = 1e-9,
    max_steps: int = 100_000,
    loss: str | AbstractLoss = "mse",
    throw: bool = True,
) -> ReducedHierarchy:
    """The NTH truncated at each of ``orders``, on a reduced basis built from
    the network's own trajectories, with its error estimate (module docstring).

    Args:
        model, x_train, x_eval, filter_spec, batch_size: as for
            :func:`~nth_dynamics.kernel_tower`.
        y_train: training labels (n,); ts: save times (non-decreasing, ≥ 0).
        orders: truncation orders p, 2 ≤ p ≤ 6; one tower to max(orders)
            serves them all, so they share one basis.
        reference: ℓ′(f_ref(t), y) of the reference gradient flow on the
            training points (time_ref, n) — for the squared loss the
            residuals f_ref(t) − y — at times sampling [0, t1] (e.g. its
            saves): the seed of the basis (recommended; without it the p = 2
            solution's ℓ′ seeds it, and p ≥ 4 usually needs a second enlargement).
        reference_f: the reference outputs on the evaluation points at ``ts``
            (time, N_eval); when given, the error ratio is relative to E_p.
        tol: POD truncation (:func:`~nth_dynamics.residual_basis`) for the
            seed and for every enlargement; each enlarged rank is then
            rounded up to a whole number of the tower's direction chunks
            (the extra POD directions cost no time and only add accuracy).
        accuracy: largest ``basis_error_ratio`` accepted; None accepts any
            (the estimate is still reported).
        max_enlargements: enlargements beyond the first while the estimate
            exceeds ``accuracy``.
        solver, rtol, atol, max_steps, loss: as for :func:`~nth_dynamics.solve_nth`.
            Every projected index is contracted with ℓ′, so the basis is the
            POD of ℓ′ trajectories (for the squared loss, of residuals).
        throw: as for :func:`~nth_dynamics.solve_nth`; False returns an
            order whose solve stopped early (inf from there on, its basis
            error NaN) and keeps judging the basis of the others.

    Raises:
        SolverError: a solve failed and ``throw``.
        BasisError: the estimate still exceeds ``accuracy`` after
            ``max_enlargements`` further enlargements.
    """
    x_train, y_train, ts = map(jnp.asarray, (x_train, y_train, ts))
    x_eval = x_train if x_eval is None else jnp.asarray(x_eval)
    orders = tuple(sorted(set(orders)))
    loss = resolve_loss(loss)
    n, order = x_train.shape[0], max(orders)
    tower_options = {"filter_spec": filter_spec, "batch_size": batch_size}
    solve_options = {"solver": solver, "rtol": rtol, "atol": atol, "max_steps": max_steps, "throw": throw}
    grid, at_saves = _sampling_grid(ts)
    f0 = jax.vmap(model)(x_eval)
    (ntk0,) = kernel_tower(model, x_train, 2, x_eval, **tower_options)
    if loss.closed_form:
        p2 = closed_form_p2(ntk0, f0, y_train, grid, loss=loss)
    else:
        p2 = solve_nth((ntk0,), f0, y_train, grid, loss=loss, **solve_options).f
    # every projected index is contracted with ℓ′ (the residual for the squared loss): ℓ′ is what V must span
    seed = loss.derivative(p2[:, :n], y_train) if reference is None else jnp.asarray(reference)
    def chunk_rank(k: int) -> int:
        """k rounded up to a whole number of the tower's direction chunks: the
        last chunk would otherwise be padded with zero directions
        (kernels._chunked), so these extra POD directions cost no time."""
        chunk = basis_chunk(model, x_train, order, k, x_eval, **tower_options)
        return min(n, -(-k // chunk) * chunk)

    # the seed is not rounded: its extra directions would stay under the enlargement's new ones
    # and be rounded again (measured: k 9 → 16 → 24 where 9 → 14 → 16 suffices, 2.3× the tower)
    basis = residual_basis(seed, tol)
    seed_rank = basis.shape[1]

    def enlarge(basis, residuals):
        enlarged = enlarge_basis(basis, residuals, tol)
        rounded = chunk_rank(enlarged.shape[1])
        if rounded > enlarged.shape[1]:
            enlarged = enlarge_basis(basis, residuals, extra=rounded - basis.shape[1])
        return enlarged

    def solve_all(basis):
        tower = kernel_tower(model, x_train, order, x_eval, basis=basis, **tower_options)
        return tower, [
            solve_nth(tower[: p - 1], f0, y_train, grid, basis=basis, loss=loss, **solve_options) for p in orders
        ]

    tower, solutions = solve_all(basis)
    scale = _error_scale(orders, solutions, at_saves, y_train, reference_f, p2)
    # a seed of rank n spans R^n: its hierarchy is the full one (no basis error), and enlarging it would only
    # compute the same tower again (at time.unit n_over_lambda_min every seed of results/n_scaling_H32* did)
    error = ratio = jnp.zeros(len(orders), scale.dtype)
    for attempt in range(max_enlargements + 1 if seed_rank < n else 0):
        # a truncation that blew up is inf from where its solve stopped: its snapshots before that still count
        own = [_finite_rows(loss.derivative(s.f[:, :n], y_train)) for p, s in zip(orders, solutions) if p > 2]
        enlarged = enlarge(basis, jnp.concatenate(own or [seed]))
        new_tower, new_solutions = solve_all(enlarged)
        compared = jnp.asarray([_reached_t1(a) and _reached_t1(b) for a, b in zip(new_solutions, solutions)])
        error = jnp.stack([jnp.max(jnp.abs(a.f - b.f)) for a, b in zip(new_solutions, solutions)])
        error = jnp.where(compared, error, jnp.nan)  # no estimate where either solve stopped early
        basis, tower, solutions = enlarged, new_tower, new_solutions
        scale = _error_scale(orders, solutions, at_saves, y_train, reference_f, p2)
        ratio = error / scale
        if basis.shape[1] == n:
            # V spans R^n: the projected hierarchy is the full one, and what it returns has no basis error.
            # The change from the last basis measured that basis, not this one (only solver error is left).
            error, ratio = jnp.zeros_like(error), jnp.zeros_like(ratio)
            break
        # an order whose final solve stopped early is a failure of the truncated dynamics, not of the
        # basis: its outputs are inf and the caller records or refuses it (Trajectory.stats["result"])
        judged = [i for i, s in enumerate(solutions) if _reached_t1(s)]
        if accuracy is None or all(bool(ratio[i] <= accuracy) for i in judged):
            break
        if attempt == max_enlargements:
            rejected = [i for i in judged if not bool(ratio[i] <= accuracy)]
            worst = max(rejected, key=lambda i: float(jnp.nan_to_num(ratio[i], nan=jnp.inf)))
            if bool(jnp.isnan(ratio[worst])):
                raise BasisError(
                    f"reduced basis of rank {basis.shape[1]} (of n = {n}): the p = {orders[worst]} hierarchy on the "
                    f"smaller basis before it stopped before t1, so its basis error cannot be estimated; use the full "
                    f"basis, or raise max_steps"
                )
            # the estimate is a difference of two solves: it cannot fall below their own error
            floor = rtol * float(jnp.max(jnp.abs(solutions[worst].f))) + atol
            remedy = "use the full basis, or lower tol"
            if float(error[worst]) <= SOLVER_FLOOR_FACTOR * floor:
                remedy = (f"the estimate ({float(error[worst]):.2g}) is within {SOLVER_FLOOR_FACTOR}× of the solves' own "
                          f"tolerance (rtol·max|f| + atol = {floor:.2g}): lower rtol and atol")
            raise BasisError(
                f"reduced basis of rank {basis.shape[1]} (of n = {n}): its error estimate for p = {orders[worst]} "
                f"is {float(ratio[worst]):.2g} of {'E_p' if reference_f is not None else 'the finite-width correction'}, "
                f"above accuracy {accuracy:g}; {remedy}"
            )
    trajectories = tuple(
        Trajectory(ts=ts, f=s.f[at_saves], ntk=s.ntk[at_saves], stats=s.stats) for s in solutions
    )
    return ReducedHierarchy(
        orders=orders, trajectories=trajectories, basis=basis, seed_rank=seed_rank, tower=tower,
        basis_error=error, basis_error_ratio=ratio, error_scale=scale,
    )


def _reached_t1(solution: Trajectory) -> bool:
    """Whether a solve reached its last save time (its Diffrax result is success)."""
    return bool(jnp.all(jnp.asarray(solution.stats["result"]) == SUCCESSFUL))


def _finite_rows(snapshots: Array) -> Array:
    """The snapshots before a failed solve stopped (Diffrax saves inf after
    that); all of them for a solve that reached t1."""
    return snapshots[np.asarray(jnp.all(jnp.isfinite(snapshots), axis=1))]


def _sampling_grid(ts: Array) -> tuple[Array, Array]:
    """The save times merged with DENSE_SAVES uniform times in [0, t1], sorted,
    and the positions of the save times in it."""
    merged = jnp.concatenate([ts, jnp.linspace(0.0, ts[-1], DENSE_SAVES, dtype=ts.dtype)])
    order = jnp.argsort(merged, stable=True)
    positions = jnp.argsort(order)[: ts.shape[0]]
    return merged[order], positions


def _error_scale(orders, solutions, at_saves, y_train, reference_f, p2) -> Array:
    """max_t E_p(t) with a reference, else max |f̃_p − f̃_2| (see ReducedHierarchy)."""
    n = y_train.shape[0]
    if reference_f is not None:
        reference_f = jnp.asarray(reference_f)
        return jnp.stack([
            jnp.max(jnp.linalg.norm(reference_f[:, :n] - s.f[at_saves, :n], axis=-1)) / jnp.sqrt(n) for s in solutions
        ])
    return jnp.stack([jnp.max(jnp.abs(s.f - p2)) for s in solutions])
