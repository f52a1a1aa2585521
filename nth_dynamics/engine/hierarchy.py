"""The Neural Tangent Hierarchy truncated at order p, integrated with Diffrax
(docs/theory.md §3; HY Thm 2.3 and eq. 2.7).

    df_a/dt   = −(1/n) Σ_b K2(a, b) r_b
    dK(r)/dt  = −(1/n) Σ_b K(r+1)(…, b) r_b        2 ≤ r ≤ p − 1
    dK(p)/dt  = 0                                   (truncation)

with r_b = f(x_b) − y_b on the training points, or for another loss ℓ its
derivative ℓ′(f_b, y_b) (docs/theory.md §9; ``loss=``). The state is the pytree
(f, K2, …, K(p−1)); the frozen K(p) is passed to the vector field as an
argument rather than carried in the state, so the solver's stage copies never
duplicate the largest tensor.

The reduced-basis hierarchy (docs/theory.md §8) is the same system on the
projected tower of a basis V (n, k): K2 is whole, every index from the third
on is a basis index, and levels ≥ 2 contract with the coefficients c = Vᵀr:

    df/dt = −(1/n) K2 · r,   dK2/dt = −(1/n) K̂3 · c,   dK̂(r)/dt = −(1/n) K̂(r+1) · c.
"""

from __future__ import annotations

from collections.abc import Sequence

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .basis import check_basis
from .kernels import MAX_ORDER, Tower
from .losses import AbstractLoss, check_labels, resolve_loss

SOLVERS: dict[str, type[diffrax.AbstractSolver]] = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
    "heun": diffrax.Heun,
    "bosh3": diffrax.Bosh3,
    "kvaerno5": diffrax.Kvaerno5,
}
"""Solver names accepted by scenarios → Diffrax classes."""


OUTCOMES = (
    "successful", "max_steps_reached", "dt_min_reached", "max_steps_rejected", "nonfinite",
    "nonfinite_input", "nonlinear_max_steps_reached", "nonlinear_divergence", "singular",
    "breakdown", "stagnation", "conlim", "event_occurred", "internal_error",
)
"""Diffrax result members by name (public attributes of ``diffrax.RESULTS``):
``Trajectory.stats["result"]`` is the position of a solve's result in this
tuple, ``len(OUTCOMES)`` for any other."""

SUCCESSFUL = OUTCOMES.index("successful")
"""Result code of a solve that reached its final time (``Trajectory.stats["result"]``)."""


class SolverError(RuntimeError):
    """An ODE solve did not reach its final time (step budget or step-size failure)."""


class Trajectory(eqx.Module):
    """Outputs and NTK along a trajectory, saved at ``ts``.

    ``f``: (len(ts), N_eval) network outputs; ``ntk``: (len(ts), N_eval, n) the
    kernel K2; ``kernels``: the whole NTH state at ``ts`` when asked for
    (``save_state=True``), else None; ``stats``: solver statistics
    (num_steps, num_accepted_steps, num_rejected_steps, result code).
    """

    ts: Float[Array, " time"]
    f: Float[Array, "time n_eval"]
    ntk: Float[Array, "time n_eval n"]
    stats: dict
    kernels: tuple | None = None


def solve_nth(
    tower: Sequence[Array],
    f0: Float[Array, " n_eval"],
    y_train: Float[Array, " n"],
    ts: Float[Array, " time"],
    *,
    solver: str | diffrax.AbstractSolver = "tsit5",
    rtol: float = 1e-9,
    atol: float = 1e-9,
    basis: Float[Array, "n k"] | None = None,
    max_steps: int = 100_000,
    save_state: bool = False,
    loss: str | AbstractLoss = "mse",
    throw: bool = True,
) -> Trajectory:
    """Integrate the NTH truncated at order ``p = len(tower) + 1``.

    Args:
        tower: ``(K2, …, Kp)`` at t = 0 (from :func:`kernel_tower`, which
            for a network with ``output_scale`` α gives the rescaled tower
            K(r)/α^(r−2) of docs/theory.md §9); the last kernel given is the
            frozen one. With ``basis``, the projected
            tower of the same basis (``kernel_tower(…, basis=basis)``).
        f0: outputs at t = 0 on the evaluation points; the first n rows are
            the training points.
        y_train: training labels, shape (n,).
        ts: save times, non-decreasing, ≥ 0; integration runs from 0 to ts[-1].
        solver: a name in :data:`SOLVERS` or a Diffrax solver instance.
        rtol, atol: tolerances of the PID step-size controller.
        basis: V of shape (n, k) with orthonormal columns: integrate the
            reduced-basis hierarchy of docs/theory.md §8 (exact when the
            residual stays in the span of V). None: the full hierarchy.
        max_steps: step budget; exceeding it raises :class:`SolverError`.
        save_state: also return the whole state (f, K2, …, K(p−1)) at ``ts``
            (memory: len(ts) × state; most users will not need it).
        loss: the training loss, ``"mse"`` (½(f − y)², the residual r),
            ``"logistic"`` (labels ±1) or an :class:`AbstractLoss`: its
            ℓ′(f, y) takes the place of r (docs/theory.md §9).
        throw: raise when the solve fails (Diffrax's name for it); False
            returns the failed solve, its outputs inf from where it stopped
            and the reason in ``stats["result"]`` (a truncation that blew
            up is a result, ``hierarchy.on_failure: record``).

    Raises:
        SolverError: when the solver fails or runs out of steps and
            ``throw`` (outside tracing; under ``jax.vmap``/``jit`` the
            result code is in ``stats["result"]`` and
            :func:`check_solution` raises).
    """
    tower = tuple(jnp.asarray(kernel) for kernel in tower)
    f0, y_train, ts = jnp.asarray(f0), jnp.asarray(y_train), jnp.asarray(ts)
    basis = None if basis is None else check_basis(basis, y_train.shape[0])
    _check_nth_inputs(tower, f0, y_train, ts, None if basis is None else basis.shape[1])
    loss = resolve_loss(loss)
    check_labels(loss, y_train)
    solution = _solve_nth(
        tower, f0, y_train, ts, basis, _solver(solver), jnp.asarray(rtol), jnp.asarray(atol), max_steps, save_state,
        loss,
    )
    if throw:
        check_solution(solution, "NTH")
    return solution


@eqx.filter_jit
def _solve_nth(tower, f0, y_train, ts, basis, solver, rtol, atol, max_steps, save_state, loss) -> Trajectory:
    n = y_train.shape[0]
    state0 = (f0,) + tower[:-1]
    frozen = tower[-1]

    def vector_field(t, state, frozen):
        l_prime = loss.derivative(state[0][:n], y_train)  # ℓ′: the residual f − y for the squared loss
        kernels = state[1:] + (frozen,)
        if basis is None:
            # contracting the last (newest) index of each kernel with ℓ′
            return tuple(-(kernel @ l_prime) / n for kernel in kernels)
        coefficients = basis.T @ l_prime  # every index from the third on is a basis index
        return (-(kernels[0] @ l_prime) / n,) + tuple(-(kernel @ coefficients) / n for kernel in kernels[1:])

    def save(t, state, frozen):
        ntk = state[1] if len(state) > 1 else frozen
        return (state[0], ntk, state) if save_state else (state[0], ntk)

    solution = integrate(vector_field, state0, frozen, ts, save, solver, rtol, atol, max_steps)
    saved = solution.ys
    return Trajectory(
        ts=ts,
        f=saved[0],
        ntk=saved[1],
        stats=solver_stats(solution),
        kernels=saved[2] if save_state else None,
    )


def integrate(vector_field, y0, args, ts, save, solver, rtol, atol, max_steps, norm=None) -> diffrax.Solution:
    """Diffrax from t = 0 to ts[-1] with a PID step-size controller (error in
    ``norm``, Diffrax's RMS norm by default), saving ``save(t, y, args)`` at
    ``ts``; failures are reported in ``solution.result``, not raised, so that
    vmapped batches can be checked afterwards (:func:`check_solution`)."""
    controller = diffrax.PIDController(rtol=rtol, atol=atol, **({} if norm is None else {"norm": norm}))
    return diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        solver,
        t0=0.0,
        t1=ts[-1],
        dt0=None,
        y0=y0,
        args=args,
        saveat=diffrax.SaveAt(ts=ts, fn=save),
        stepsize_controller=controller,
        max_steps=max_steps,
        throw=False,
    )


def closed_form_p2(
    ntk: Float[ArrayLike, "n_eval n"],
    f0: Float[ArrayLike, " n_eval"],
    y_train: Float[ArrayLike, " n"],
    ts: Float[ArrayLike, " time"],
    *,
    loss: str | AbstractLoss = "mse",
) -> Float[Array, "time n_eval"]:
    """Outputs of the frozen-NTK (p = 2) dynamics in closed form (docs/theory.md §3):

        f_train(t) − y = exp(−t K_tt / n) (f_train(0) − y)
        f_eval(t) = f_eval(0) − K_et K_tt⁻¹ (I − exp(−t K_tt / n)) (f_train(0) − y)

    computed through the eigendecomposition of K_tt, with (1 − e^{−tλ/n})/λ
    taken to its limit t/n as λ → 0 so that a singular K_tt stays finite.
    A time ``inf`` gives the t → ∞ limit, kernel (ridgeless) regression
    f_eval = f_eval(0) − K_et K_tt⁻¹ (f_train(0) − y), with the eigenvalues
    of K_tt floored at 1e-13 λ_max (rounding can leave λ_min ≤ 0).

    Only the squared loss has this closed form (``loss="mse"``); any other
    loss raises ValueError: solve p = 2 with :func:`solve_nth` (``loss=``).
    """
    if not resolve_loss(loss).closed_form:
        raise ValueError(
            f"closed_form_p2: the loss {resolve_loss(loss).name!r} has no closed form at p = 2; "
            "use solve_nth((K2,), f0, y_train, ts, loss=...) (Diffrax)"
        )
    ntk, f0, y_train, ts = map(jnp.asarray, (ntk, f0, y_train, ts))
    n = y_train.shape[0]
    k_tt = 0.5 * (ntk[:n] + ntk[:n].T)
    eigenvalues, eigenvectors = jnp.linalg.eigh(k_tt)
    residual0 = eigenvectors.T @ (f0[:n] - y_train)
    rates = eigenvalues[None, :] * ts[:, None] / n
    # (1 − e^{−tλ/n}) / λ, continued to t/n at λ = 0
    gain = jnp.where(
        jnp.abs(rates) > 1e-12,
        -jnp.expm1(-rates) / jnp.where(eigenvalues == 0, 1.0, eigenvalues)[None, :],
        ts[:, None] / n * (1 - rates / 2),
    )
    floored = jnp.maximum(eigenvalues, 1e-13 * eigenvalues[-1])
    gain = jnp.where(jnp.isinf(ts)[:, None], 1 / floored[None, :], gain)  # K_tt⁻¹ at t = ∞
    decrement = (gain * residual0[None, :]) @ eigenvectors.T  # K_tt⁻¹(I − e^{−tK/n}) r0
    return f0[None, :] - decrement @ ntk.T


def solver_stats(solution: diffrax.Solution) -> dict:
    stats = {key: solution.stats[key] for key in ("num_steps", "num_accepted_steps", "num_rejected_steps")}
    stats["result"] = result_code(solution.result)
    return stats


def result_code(result: diffrax.RESULTS) -> Array:
    """The position of a Diffrax result in :data:`OUTCOMES` (an integer array,
    so that results of vmapped solves stack and compare like any statistic)."""
    matches = [result == getattr(diffrax.RESULTS, name) for name in OUTCOMES]
    return jnp.select(matches, [jnp.asarray(code) for code in range(len(OUTCOMES))], len(OUTCOMES))


def check_solution(trajectory: Trajectory, what: str) -> None:
    """Raise :class:`SolverError` if any solve in ``trajectory`` (possibly a
    vmapped batch) failed. Does nothing while being traced."""
    result = trajectory.stats["result"]
    if isinstance(result, jax.core.Tracer):
        return
    failed = jnp.asarray(result) != SUCCESSFUL
    if bool(jnp.any(failed)):
        code = int(jnp.max(jnp.where(failed, result, 0)))
        message = _outcome_message(code).split("\n")[0].rstrip(".")
        steps = int(jnp.max(trajectory.stats["num_steps"]))
        raise SolverError(
            f"{what} solver stopped after {steps} steps: {message}; "
            "or loosen rtol/atol, or shorten the time grid (t1)."
        )


def _outcome_message(code: int) -> str:
    if code >= len(OUTCOMES):
        return "the solve failed (a Diffrax result not listed in OUTCOMES)"
    return diffrax.RESULTS[getattr(diffrax.RESULTS, OUTCOMES[code])]


def _solver(solver: str | diffrax.AbstractSolver) -> diffrax.AbstractSolver:
    if isinstance(solver, diffrax.AbstractSolver):
        return solver
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {sorted(SOLVERS)}, got {solver!r}")
    return SOLVERS[solver]()


def _check_nth_inputs(tower: Tower, f0: Array, y_train: Array, ts: Array, rank: int | None) -> None:
    if not 1 <= len(tower) <= MAX_ORDER - 1:
        raise ValueError(
            f"tower must hold K2…Kp with 2 ≤ p ≤ {MAX_ORDER}, i.e. 1 to {MAX_ORDER - 1} kernels, "
            f"got {len(tower)}"
        )
    n_eval, n = f0.shape[0], y_train.shape[0]
    if f0.ndim != 1 or y_train.ndim != 1 or n_eval < n:
        raise ValueError(
            f"f0 must have shape (N_eval,) and y_train (n,) with N_eval ≥ n, got {f0.shape}, {y_train.shape}"
        )
    for r, kernel in enumerate(tower, start=2):
        expected = (n_eval,) + (n,) * (r - 1) if rank is None else (n_eval, n) + (rank,) * (r - 2)
        if kernel.shape != expected:
            what = "(N_eval, n, …)" if rank is None else "(N_eval, n, k, …): a tower projected on the same basis"
            raise ValueError(f"K{r} must have shape {expected} {what}, got {kernel.shape}")
    if ts.ndim != 1 or ts.shape[0] == 0:
        raise ValueError(f"ts must be a non-empty 1-D array of save times, got shape {ts.shape}")
    if isinstance(ts, jax.core.Tracer):
        return  # values unknown while tracing: shapes were checked
    times = np.asarray(ts)
    if times[0] < 0 or np.any(np.diff(times) < 0):
        raise ValueError("ts must be a non-empty, non-decreasing 1-D array of times ≥ 0")
