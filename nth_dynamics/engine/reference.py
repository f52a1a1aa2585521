"""Reference training of the real network: gradient flow, gradient descent
and the optimizers of optax on the loss L(θ) = (1/n) Σ_a ℓ(f(x_a; θ), y_a),
by default the squared loss L(θ) = (1/2n) Σ_a (f(x_a; θ) − y_a)²
(docs/theory.md §1, §9; ``loss=``, :mod:`nth_dynamics.engine.losses`).

Only the trained parameters move; every function saves the outputs on the
evaluation points and the NTK K2 at the save times, so the NTH can be compared
with the network it describes. Gradient descent and optax share one stepper
(:func:`_descend`): k steps of size η are saved at t = k·η.

A network with ``output_scale`` α ≠ 1 (docs/theory.md §9,
:mod:`~nth_dynamics.engine.laziness`) is trained as f_α = f0 + α (f − f0) on
L(f_α)/α², with f0 its outputs at the parameters it starts from: the outputs
saved are f_α's, the NTK saved is K2 of f, the K̃2 of f_α's hierarchy.
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, PyTree

from .hierarchy import (
    SOLVERS,
    Trajectory,
    _solver,
    check_solution,
    integrate,
    solver_stats,
)
from .kernels import kernel_tower
from .laziness import lazy_loss_factor, lazy_outputs, output_scale
from .losses import AbstractLoss, check_labels, resolve_loss
from .networks import trained_filter


def l2_norm(tree: PyTree) -> Array:
    """sqrt(Σ x²) over every leaf: the error norm of the reference gradient flow.

    Diffrax's default RMS norm divides by the parameter count, so the error in
    the outputs would grow like √P·tol with width and hide the small effects
    the hierarchy predicts (docs/theory.md §7)."""
    return jnp.sqrt(sum(jnp.sum(jnp.abs(leaf) ** 2) for leaf in jax.tree.leaves(tree)))


def gradient_flow(
    model: eqx.Module,
    x_train: Float[Array, "n d"],
    y_train: Float[Array, " n"],
    ts: Float[Array, " time"],
    x_eval: Float[Array, "n_eval d"] | None = None,
    *,
    filter_spec: PyTree | None = None,
    solver: str | diffrax.AbstractSolver = "tsit5",
    rtol: float = 1e-9,
    atol: float = 1e-9,
    max_steps: int = 100_000,
    loss: str | AbstractLoss = "mse",
) -> Trajectory:
    """Gradient flow dθ/dt = −∇θ L(θ) of the real network, from its current
    parameters, integrated by Diffrax with the error of the whole trained
    parameter vector controlled in the L2 norm (:func:`l2_norm`). ``loss``:
    ``"mse"``, ``"logistic"`` (labels ±1) or an :class:`~nth_dynamics.AbstractLoss`.

    Returns a :class:`~nth_dynamics.hierarchy.Trajectory`: ``f`` (len(ts),
    N_eval) on ``x_eval`` (default ``x_train``; first n rows = train) and
    ``ntk`` (len(ts), N_eval, n), the K2 of the trained network at each save.

    A network with ``output_scale`` α (module docstring) follows
    dθ/dt = −∇θ L(f_α)/α², f_α = f0 + α (f − f0); ``f`` is then f_α and
    ``ntk`` the K2 of f, as the hierarchy of ``kernel_tower`` has them.
    """
    x_train, y_train, ts = map(jnp.asarray, (x_train, y_train, ts))
    x_eval = x_train if x_eval is None else jnp.asarray(x_eval)
    _check_reference_inputs(x_train, y_train, x_eval)
    loss = resolve_loss(loss)
    check_labels(loss, y_train)
    trajectory = _gradient_flow(
        model, filter_spec, x_train, y_train, ts, x_eval, _solver(solver), jnp.asarray(rtol), jnp.asarray(atol), max_steps,
        loss,
    )
    check_solution(trajectory, "reference gradient-flow")
    return trajectory


@eqx.filter_jit
def _gradient_flow(model, filter_spec, x_train, y_train, ts, x_eval, solver, rtol, atol, max_steps, loss):
    params0, static = eqx.partition(model, trained_filter(model) if filter_spec is None else filter_spec)
    start = _Start.of(model, x_train, x_eval)
    loss_gradient = jax.grad(_loss_of(static, x_train, y_train, loss, start))

    def vector_field(t, params, args):
        return jax.tree.map(jnp.negative, loss_gradient(params))

    def save(t, params, args):
        return _outputs_and_ntk(eqx.combine(params, static), filter_spec, x_train, x_eval, start)

    solution = integrate(vector_field, params0, None, ts, save, solver, rtol, atol, max_steps, norm=l2_norm)
    f, ntk = solution.ys
    return Trajectory(ts=ts, f=f, ntk=ntk, stats=solver_stats(solution))


def gradient_descent(
    model: eqx.Module,
    x_train: Float[Array, "n d"],
    y_train: Float[Array, " n"],
    lr: float,
    steps: int,
    save_every: int,
    x_eval: Float[Array, "n_eval d"] | None = None,
    *,
    filter_spec: PyTree | None = None,
    loss: str | AbstractLoss = "mse",
) -> Trajectory:
    """Full-batch gradient descent θ ← θ − lr ∇θ L(θ), ``steps`` steps, saving
    every ``save_every`` steps (and at step 0). The same system as gradient
    flow sampled at t = k·lr, up to an O(lr) gap that no width removes (docs/theory.md §1).
    ``loss`` as for :func:`gradient_flow`.

    ``ts`` of the result are the gradient-flow times k·lr of the saves. A
    network with ``output_scale`` α steps on L(f_α)/α² and returns f_α, as
    :func:`gradient_flow` does.
    """
    x_train, y_train, x_eval, loss = _check_descent_inputs(x_train, y_train, lr, steps, save_every, x_eval, loss)
    return _gradient_descent(model, filter_spec, x_train, y_train, lr, steps // save_every, save_every, x_eval, loss)


@eqx.filter_jit
def _gradient_descent(model, filter_spec, x_train, y_train, lr, n_saves, save_every, x_eval, loss):
    params0, static = eqx.partition(model, trained_filter(model) if filter_spec is None else filter_spec)
    start = _Start.of(model, x_train, x_eval)
    loss_gradient = jax.grad(_loss_of(static, x_train, y_train, loss, start))

    def step(params, _):
        return jax.tree.map(lambda p, g: p - lr * g, params, loss_gradient(params)), None

    return _descend(step, params0, lambda params: params, static, filter_spec, x_train, x_eval, lr, n_saves, save_every,
                    start)


def optax_reference(
    model: eqx.Module,
    x_train: Float[Array, "n d"],
    y_train: Float[Array, " n"],
    optimizer: optax.GradientTransformation,
    steps: int,
    save_every: int,
    x_eval: Float[Array, "n_eval d"] | None = None,
    *,
    lr: float,
    filter_spec: PyTree | None = None,
    loss: str | AbstractLoss = "mse",
) -> Trajectory:
    """Full-batch training by an optax optimizer on the loss of
    :func:`gradient_descent` (the same normalisation: ``optax.sgd(lr)`` is
    gradient descent with step lr), ``steps`` steps, saving every
    ``save_every`` steps (and at step 0), at the times t = k·lr.

    A reference the hierarchy does not describe (momentum, Adam, …:
    docs/theory.md §9): it shows where a gradient-flow description stops.
    ``optimizer`` is any ``optax.GradientTransformation`` (e.g. from
    :func:`~nth_dynamics.make_optimizer`); ``lr`` the step it was built
    with, which sets the time axis; ``loss`` as for :func:`gradient_flow`,
    and so is a network's ``output_scale`` α (L(f_α)/α², returning f_α).
    """
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}")
    x_train, y_train, x_eval, loss = _check_descent_inputs(x_train, y_train, lr, steps, save_every, x_eval, loss)
    return _optax_reference(model, filter_spec, x_train, y_train, optimizer, lr, steps // save_every, save_every, x_eval, loss)


@eqx.filter_jit
def _optax_reference(model, filter_spec, x_train, y_train, optimizer, lr, n_saves, save_every, x_eval, loss):
    params0, static = eqx.partition(model, trained_filter(model) if filter_spec is None else filter_spec)
    start = _Start.of(model, x_train, x_eval)
    loss_gradient = jax.grad(_loss_of(static, x_train, y_train, loss, start))

    def step(carry, _):
        params, state = carry
        updates, state = optimizer.update(loss_gradient(params), state, params)
        return (optax.apply_updates(params, updates), state), None

    carry0 = (params0, optimizer.init(params0))
    return _descend(step, carry0, lambda carry: carry[0], static, filter_spec, x_train, x_eval, lr, n_saves, save_every,
                    start)


def _descend(step, carry0, params_of, static, filter_spec, x_train, x_eval, lr, n_saves, save_every, start) -> Trajectory:
    """``n_saves × save_every`` applications of ``step`` (a ``lax.scan`` body
    on ``carry``, whose parameters are ``params_of(carry)``), saving the outputs
    (of f_α: ``start``) and K2 at step 0 and every ``save_every`` steps, at the times k·lr."""

    def save(carry):
        return _outputs_and_ntk(eqx.combine(params_of(carry), static), filter_spec, x_train, x_eval, start)

    def chunk(carry, _):
        carry, _ = jax.lax.scan(step, carry, None, length=save_every)
        return carry, save(carry)

    _, (f, ntk) = jax.lax.scan(chunk, carry0, None, length=n_saves)
    f0, ntk0 = save(carry0)
    ts = lr * save_every * jnp.arange(n_saves + 1, dtype=f0.dtype)
    no_solver = jnp.asarray(n_saves * save_every)
    return Trajectory(
        ts=ts,
        f=jnp.concatenate([f0[None], f]),
        ntk=jnp.concatenate([ntk0[None], ntk]),
        stats={
            "num_steps": no_solver,
            "num_accepted_steps": no_solver,
            "num_rejected_steps": jnp.zeros_like(no_solver),
            "result": jnp.asarray(0),
        },
    )


def loss(model: eqx.Module, x_train: Array, y_train: Array, kind: str | AbstractLoss = "mse") -> Array:
    """L = (1/n) Σ_a ℓ(f(x_a), y_a); for the squared loss ``kind="mse"``, (1/2n) Σ_a (f(x_a) − y_a)²."""
    return resolve_loss(kind).mean(jax.vmap(model)(x_train), y_train)


class _Start(eqx.Module):
    """What training f_α = f0 + α (f − f0) needs of the starting point: α and
    f0 on the training and the evaluation points (None at α = 1, where f_α is f)."""

    alpha: float = eqx.field(static=True)
    f0_train: Array | None
    f0_eval: Array | None

    @classmethod
    def of(cls, model, x_train, x_eval) -> _Start:
        alpha = output_scale(model)
        if alpha == 1.0:
            return cls(alpha, None, None)
        return cls(alpha, jax.vmap(model)(x_train), jax.vmap(model)(x_eval))


def _loss_of(static, x_train, y_train, kind, start: _Start):
    """θ ↦ L(f_α)/α²; at α = 1, f_α is f and the factor is 1 (an exact
    product): :func:`loss` itself."""

    def loss_of_params(params):
        f = lazy_outputs(jax.vmap(eqx.combine(params, static))(x_train), start.f0_train, start.alpha)
        return lazy_loss_factor(start.alpha) * resolve_loss(kind).mean(f, y_train)

    return loss_of_params


def _outputs_and_ntk(model, filter_spec, x_train, x_eval, start: _Start):
    # filter_spec None: the model's own trained set, so networks take the structured path;
    # K2 is the NTK of f at every α (the K̃2 of f_α's hierarchy)
    (ntk,) = kernel_tower(model, x_train, 2, x_eval, filter_spec=filter_spec, batch_size=x_train.shape[0])
    return lazy_outputs(jax.vmap(model)(x_eval), start.f0_eval, start.alpha), ntk


def _check_descent_inputs(x_train, y_train, lr, steps, save_every, x_eval, loss):
    if not (isinstance(steps, int) and isinstance(save_every, int) and steps >= 0 and save_every >= 1):
        raise ValueError(f"steps must be an integer ≥ 0 and save_every ≥ 1, got {steps}, {save_every}")
    if steps % save_every:
        raise ValueError(f"steps ({steps}) must be a multiple of save_every ({save_every})")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    x_train, y_train = jnp.asarray(x_train), jnp.asarray(y_train)
    x_eval = x_train if x_eval is None else jnp.asarray(x_eval)
    _check_reference_inputs(x_train, y_train, x_eval)
    loss = resolve_loss(loss)
    check_labels(loss, y_train)
    return x_train, y_train, x_eval, loss


def _check_reference_inputs(x_train: Array, y_train: Array, x_eval: Array) -> None:
    if x_train.ndim != 2 or y_train.shape != (x_train.shape[0],):
        raise ValueError(
            f"x_train must have shape (n, d) and y_train (n,), got {x_train.shape} and {y_train.shape}"
        )
    if x_eval.ndim != 2 or x_eval.shape[1] != x_train.shape[1]:
        raise ValueError(f"x_eval must have shape (N_eval, {x_train.shape[1]}), got {x_eval.shape}")


__all__ = ["SOLVERS", "gradient_descent", "gradient_flow", "l2_norm", "loss", "optax_reference"]
