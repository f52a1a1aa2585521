"""The reduced-basis hierarchy (docs/theory.md §8): the projected tower against
the full one contracted with the basis, the projected solve, the POD basis
and the basis-error estimate against the full hierarchy."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

import nth_dynamics as nd
from nth_dynamics.engine.basis import enlarge_basis
from nth_dynamics.engine.kernels import default_batch_size, structured_path, tower_bytes
from nth_dynamics.engine.hierarchy import SUCCESSFUL, SolverError
from nth_dynamics.engine.reduced import BasisError, reduced_hierarchy
from nth_dynamics.engine.reference import loss


def relative_error(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


def contract_trailing(kernel, basis):
    """K(r) with every index from the third on contracted with V, in order."""
    for _ in range(kernel.ndim - 2):
        kernel = jnp.tensordot(kernel, basis, axes=([2], [0]))  # contracts the third axis, appends j last
    return kernel


def sphere(key, count, d=3):
    x = jax.random.normal(key, (count, d))
    return x / jnp.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def basis3(small_problem):
    n = len(small_problem[0])
    q, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(5), (n, 3)))
    return q


MODELS = {  # (model, order, explicit filter_spec: the generic path): the paths and orders to check
    "ffnet structured to K5": (lambda: nd.FFNet(3, 8, 1, key=jax.random.key(1)), 5, False),
    "resnet structured to K4": (lambda: nd.ResNet(3, 12, 2, key=jax.random.key(2)), 4, False),
    "resnet generic to K4": (lambda: nd.ResNet(3, 12, 1, key=jax.random.key(3), branch="one"), 4, True),
    "equinox mlp generic to K4": (
        lambda: eqx.nn.MLP(3, "scalar", 6, 1, activation=jnp.tanh, key=jax.random.key(4)), 4, False
    ),
    "equinox mlp generic to K5": (
        lambda: eqx.nn.MLP(3, "scalar", 6, 1, activation=jnp.tanh, key=jax.random.key(4)), 5, False
    ),
}
SLOW = {"ffnet structured to K5", "equinox mlp generic to K5", "resnet structured to K4"}  # ~20–30 s each


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name for name in MODELS]
)
def test_projected_tower_is_the_full_tower_contracted_with_the_basis(name, basis3, small_problem):
    x_train, _, x_eval = small_problem
    make, order, explicit_filter = MODELS[name]
    model = make()
    spec = model.trained_filter() if explicit_filter else None
    full = nd.kernel_tower(model, x_train, order, x_eval, filter_spec=spec)
    projected = nd.kernel_tower(model, x_train, order, x_eval, basis=basis3, filter_spec=spec)
    n, k = basis3.shape
    for r, (kernel, reduced) in enumerate(zip(full, projected), start=2):
        assert reduced.shape == (len(x_eval), n) + (k,) * (r - 2)
        assert relative_error(reduced, contract_trailing(kernel, basis3)) <= 1e-10


@pytest.mark.parametrize("generic", [False, True])
@pytest.mark.parametrize("batch_size", [1, 2])
def test_projected_chunks_do_not_change_the_tower(basis3, small_problem, batch_size, generic):
    """Chunks of 1 divide k = 3; chunks of 2 do not, and the last is padded
    with a zero direction that must not leak into the tower."""
    x_train, _, x_eval = small_problem
    model = nd.ResNet(3, 12, 2, key=jax.random.key(2))
    spec = model.trained_filter() if generic else None
    whole = nd.kernel_tower(model, x_train, 4, x_eval, basis=basis3, filter_spec=spec)
    chunked = nd.kernel_tower(model, x_train, 4, x_eval, basis=basis3, batch_size=batch_size, filter_spec=spec)
    for a, b in zip(chunked, whole):
        assert a.shape == b.shape
        assert relative_error(a, b) <= 1e-12


@pytest.mark.parametrize("generic", [False, True])
@pytest.mark.parametrize("batch_size", [None, 2])
def test_basis_chunk_is_the_chunk_the_projected_tower_takes(basis3, small_problem, batch_size, generic, monkeypatch):
    """reduced_hierarchy rounds its rank to whole chunks of basis_chunk: it
    must be what kernel_tower passes to the projected levels (it once used a
    memory-only plan while the tower used the speed-aware one)."""
    import nth_dynamics.engine.kernels as kernels

    x_train, _, x_eval = small_problem
    model = nd.ResNet(3, 12, 2, key=jax.random.key(2))
    spec = model.trained_filter() if generic else None
    seen = []
    chunked = kernels._chunked

    def recording(along, directions, chunk):
        seen.append(chunk)
        return chunked(along, directions, chunk)

    monkeypatch.setattr(kernels, "_chunked", recording)
    jax.clear_caches()  # the levels record their chunk while tracing
    nd.kernel_tower(model, x_train, 4, x_eval, basis=basis3, batch_size=batch_size, filter_spec=spec)
    expected = kernels.basis_chunk(model, x_train, 4, basis3.shape[1], x_eval, batch_size=batch_size,
                                   filter_spec=spec)
    assert seen and set(seen) == {expected}
    if batch_size is not None:
        assert expected == min(batch_size, basis3.shape[1])


@pytest.fixture(scope="module")
def softplus_net():
    return nd.FFNet(3, 32, 1, key=jax.random.key(11), activation="softplus")


def test_identity_basis_gives_the_full_tower_and_solve(softplus_net, small_problem):
    x_train, y_train, x_eval = small_problem
    identity = jnp.eye(len(x_train))
    full = nd.kernel_tower(softplus_net, x_train, 4, x_eval)
    reduced = nd.kernel_tower(softplus_net, x_train, 4, x_eval, basis=identity)
    for a, b in zip(reduced, full):
        assert relative_error(a, b) <= 1e-12
    f0 = jax.vmap(softplus_net)(x_eval)
    ts = jnp.linspace(0.0, 5.0, 6)
    options = {"rtol": 1e-12, "atol": 1e-12}
    solution = nd.solve_nth(reduced, f0, y_train, ts, basis=identity, **options)
    reference = nd.solve_nth(full, f0, y_train, ts, **options)
    assert relative_error(solution.f, reference.f) <= 1e-12
    assert relative_error(solution.ntk, reference.ntk) <= 1e-12


def test_projected_identity_along_a_real_gradient_flow(training_problem):
    """dK̂(r)/dt = −(1/n) K̂(r+1)·Vᵀr along the trained network, r = 2, 3, at
    t = 0 and t = 1 of an independent gradient-flow integration, with V the
    POD basis of that flow's residual (so that r(t) lies in its span to tol)."""
    model, x_train, y_train, _, _, _ = training_problem
    n = len(x_train)
    params0, static = eqx.partition(model, model.trained_filter())

    def velocity(p):
        return jax.tree.map(jnp.negative, jax.grad(lambda q: loss(eqx.combine(q, static), x_train, y_train))(p))

    ts = jnp.linspace(0.0, 2.0, 41)
    flow = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, p, args: velocity(p)), diffrax.Tsit5(), 0.0, 2.0, None, params0,
        saveat=diffrax.SaveAt(ts=ts), stepsize_controller=diffrax.PIDController(rtol=1e-12, atol=1e-12),
    )
    residuals = jax.vmap(lambda p: jax.vmap(eqx.combine(p, static))(x_train))(flow.ys) - y_train
    basis = nd.residual_basis(residuals, 1e-10)
    assert basis.shape[1] < n  # a real reduction, not the identity
    for index in (0, 20):  # t = 0 and t = 1
        params = jax.tree.map(lambda leaf, i=index: leaf[i], flow.ys)
        residual = residuals[index]
        tower = nd.kernel_tower(eqx.combine(params, static), x_train, 4, basis=basis, batch_size=n)
        for r in (2, 3):

            def kernel(p, r=r):
                return nd.kernel_tower(eqx.combine(p, static), x_train, r, basis=basis, batch_size=n)[-1]

            _, derivative = jax.jvp(kernel, (params,), (velocity(params),))
            predicted = -(tower[r - 1] @ (basis.T @ residual)) / n
            assert relative_error(derivative, predicted) <= 1e-7


def test_residual_basis_keeps_the_modes_above_tol():
    left, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (30, 4)))
    right, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(1), (8, 4)))
    values = jnp.array([1.0, 1e-3, 1e-7, 1e-14])
    trajectory = (left * values) @ right.T  # (time, n) with known singular values
    assert nd.residual_basis(trajectory, 1e-5).shape == (8, 2)
    basis = nd.residual_basis(trajectory, 1e-12)
    assert basis.shape == (8, 3)
    assert float(jnp.max(jnp.abs(basis.T @ basis - jnp.eye(3)))) <= 1e-12
    # the span is the trajectory's: projecting loses only the discarded mode
    assert float(jnp.max(jnp.abs(trajectory - trajectory @ basis @ basis.T))) <= 1e-13
    assert nd.residual_basis(trajectory, 1e-12, rank=6).shape == (8, 6)
    enlarged = enlarge_basis(basis[:, :1], trajectory, 1e-5)
    assert enlarged.shape == (8, 2) and jnp.allclose(enlarged[:, 0], basis[:, 0])
    assert float(jnp.max(jnp.abs(enlarged.T @ enlarged - jnp.eye(2)))) <= 1e-12


@pytest.mark.parametrize(
    "basis, message",
    [
        (2 * jnp.eye(5)[:, :2], "orthonormal"),
        (jnp.eye(6)[:, :2], "shape"),
        (jnp.ones(5), "shape"),
        (jnp.zeros((5, 0)), "shape"),
    ],
)
def test_a_bad_basis_is_a_clear_error(basis, message, softplus_net, small_problem, without_shape_checks):
    x_train, y_train, x_eval = small_problem
    with pytest.raises(ValueError, match=message):
        nd.kernel_tower(softplus_net, x_train, 3, x_eval, basis=basis)
    tower = (jnp.zeros((8, 5)), jnp.zeros((8, 5, 2)))
    with pytest.raises(ValueError, match=message):
        nd.solve_nth(tower, jnp.zeros(8), y_train, jnp.array([0.0, 1.0]), basis=basis)


def test_a_tower_of_another_rank_is_refused(small_problem):
    _, y_train, _ = small_problem
    tower = (jnp.zeros((8, 5)), jnp.zeros((8, 5, 3)))
    with pytest.raises(ValueError, match="projected on the same basis"):
        nd.solve_nth(tower, jnp.zeros(8), y_train, jnp.array([0.0, 1.0]), basis=jnp.eye(5)[:, :2])


def test_memory_plan_follows_the_path_the_tower_takes():
    """A filter_spec sends a project network down the generic path: the
    default chunk is planned for that path, not for the structured one."""
    model = nd.FFNet(3, 64, 2, key=jax.random.key(0))
    spec = model.trained_filter()
    assert structured_path(model, None) and not structured_path(model, spec)
    n_params = sum(leaf.size for leaf in jax.tree.leaves(eqx.filter(model, spec)))
    activations = 2 * 64 * 3
    generic = tower_bytes(16, 16, 4, n_params, activations=activations, batch_size=16, structured=False)
    structured = tower_bytes(16, 16, 4, n_params, activations=activations, batch_size=16, structured=True)
    budget = (generic + structured) // 2
    assert structured < budget < generic
    assert default_batch_size(model, None, 16, 16, 4, budget) == 16
    assert default_batch_size(model, spec, 16, 16, 4, budget) < 16


def test_reduced_memory_estimate_shrinks_with_the_rank():
    full = tower_bytes(32, 32, 4, 0, activations=100)
    assert tower_bytes(32, 32, 4, 0, activations=100, rank=32) >= full
    assert tower_bytes(32, 32, 4, 0, rank=8) < full / 10  # outputs: N·n·k² against N·n³
    for structured in (True, False):
        assert tower_bytes(32, 32, 4, 10**5, activations=100, rank=4, structured=structured) < tower_bytes(
            32, 32, 4, 10**5, activations=100, structured=structured
        )


@pytest.fixture(scope="module")
def training_problem():
    """n = 16 training and 4 test points, a tanh FFNet trained by gradient flow to t = 4."""
    key_train, key_test, key_model = jax.random.split(jax.random.key(2026), 3)
    x_train = sphere(key_train, 16)
    x_eval = jnp.concatenate([x_train, sphere(key_test, 4)])
    y_train = jnp.sin(2 * x_train[:, 0]) + x_train[:, 1]
    model = nd.FFNet(3, 64, 1, key=key_model)
    ts = jnp.linspace(0.0, 4.0, 9)
    reference = nd.gradient_flow(model, x_train, y_train, jnp.linspace(0.0, 4.0, 33), x_eval, rtol=1e-12, atol=1e-12)
    return model, x_train, y_train, x_eval, ts, reference


@pytest.mark.slow
def test_reduced_outputs_match_the_full_hierarchy_and_the_estimate_bounds_the_difference(training_problem):
    model, x_train, y_train, x_eval, ts, reference = training_problem
    n = len(x_train)
    options = {"rtol": 1e-12, "atol": 1e-12}
    result = reduced_hierarchy(
        model, x_train, y_train, ts, (3, 4), x_eval,
        reference=reference.f[:, :n] - y_train, reference_f=reference.f[::4], tol=1e-6, **options,
    )
    assert result.seed_rank < result.rank < n
    full_tower = nd.kernel_tower(model, x_train, 4, x_eval)
    f0 = jax.vmap(model)(x_eval)
    for i, p in enumerate((3, 4)):
        full = nd.solve_nth(full_tower[: p - 1], f0, y_train, ts, **options)
        e_p = float(jnp.max(jnp.linalg.norm(reference.f[::4, :n] - full.f[:, :n], axis=1)) / jnp.sqrt(n))
        difference = float(jnp.max(jnp.abs(result.trajectories[i].f - full.f)))
        assert difference <= 1e-3 * e_p
        assert difference <= float(result.basis_error[i])
        assert float(result.basis_error_ratio[i]) <= 1e-3


@pytest.mark.slow  # ~20 s; the solver-floor refusal below covers the same path by default
def test_an_estimate_above_the_accuracy_asked_is_an_error(training_problem):
    model, x_train, y_train, x_eval, ts, _ = training_problem
    with pytest.raises(BasisError, match="error estimate"):
        reduced_hierarchy(model, x_train, y_train, ts, (3,), x_eval, tol=1e-2, accuracy=1e-14, max_enlargements=0)


def test_the_logistic_reduced_hierarchy_spans_l_prime_and_matches_the_full_one(training_problem):
    """docs/theory.md §9: with another loss every projected index is contracted
    with ℓ′, so the basis is the POD of ℓ′ trajectories. Labels ±1 (the signs
    of the squared-loss problem's), p = 3; the basis must be a real reduction."""
    model, x_train, y_train, x_eval, ts, _ = training_problem
    n = len(x_train)
    signs = jnp.where(y_train >= 0, 1.0, -1.0)
    options = {"rtol": 1e-12, "atol": 1e-12}
    reference = nd.gradient_flow(model, x_train, signs, jnp.linspace(0.0, 4.0, 33), x_eval, loss="logistic", **options)
    logistic = nd.Logistic()
    result = reduced_hierarchy(
        model, x_train, signs, ts, (3,), x_eval, reference=logistic.derivative(reference.f[:, :n], signs),
        reference_f=reference.f[::4], tol=1e-6, loss="logistic", **options,
    )
    assert result.rank < n
    full_tower = nd.kernel_tower(model, x_train, 3, x_eval)
    f0 = jax.vmap(model)(x_eval)
    full = nd.solve_nth(full_tower, f0, signs, ts, loss="logistic", **options)
    e_3 = float(jnp.max(jnp.linalg.norm(reference.f[::4, :n] - full.f[:, :n], axis=1)) / jnp.sqrt(n))
    difference = float(jnp.max(jnp.abs(result.trajectories[0].f - full.f)))
    assert difference <= 1e-3 * e_3
    assert difference <= float(result.basis_error[0])
    # a residual basis (f − y) is not what the logistic hierarchy contracts with: ℓ′ is
    assert not jnp.allclose(logistic.derivative(full.f[:, :n], signs), full.f[:, :n] - signs)


def test_an_estimate_at_the_solver_tolerance_says_to_lower_rtol(training_problem):
    """The estimate is the difference of two solves: with loose solver
    tolerances it is solver error, and a new basis would not help."""
    model, x_train, y_train, x_eval, ts, _ = training_problem
    with pytest.raises(BasisError, match="lower rtol and atol"):
        reduced_hierarchy(
            model, x_train, y_train, ts, (3,), x_eval, accuracy=1e-9, max_enlargements=0, rtol=1e-4, atol=1e-4
        )


def test_a_basis_of_rank_n_is_the_full_hierarchy_and_has_no_basis_error(training_problem):
    """When the POD keeps every direction the projected hierarchy is the full
    one: its outputs are the full solve's and its basis error is 0, not the
    change from the smaller basis before it (which measured that basis)."""
    model, x_train, y_train, x_eval, ts, reference = training_problem
    n = len(x_train)
    options = {"rtol": 1e-10, "atol": 1e-10}
    result = reduced_hierarchy(
        model, x_train, y_train, ts, (3,), x_eval,
        reference=reference.f[:2, :n] - y_train, reference_f=reference.f[::4], tol=1e-30, **options,
    )  # a seed of two snapshots (rank ≤ 2), enlarged by every direction of the solve's own residuals
    assert result.seed_rank <= 2 and result.rank == n
    assert float(result.basis_error[0]) == 0.0 and float(result.basis_error_ratio[0]) == 0.0
    full = nd.solve_nth(nd.kernel_tower(model, x_train, 3, x_eval), jax.vmap(model)(x_eval), y_train, ts, **options)
    assert float(jnp.max(jnp.abs(result.trajectories[0].f - full.f))) <= 1e-8


def test_a_truncation_that_blows_up_is_returned_and_the_other_orders_still_judged():
    """A width-4 FFNet trained to t = 20 whose p = 3 truncation blows up while
    p = 4 does not (checked on the full hierarchy first). ``throw=False`` (a
    sweep's ``on_failure: record``) returns the failed order, inf from where it
    stopped and without a basis-error estimate, and still estimates and
    returns p = 4 on a basis smaller than n; the default raises."""
    x_train = sphere(jax.random.split(jax.random.key(0), 3)[0], 16)
    y_train = jnp.sin(2 * x_train[:, 0]) + x_train[:, 1]
    model = nd.FFNet(3, 4, 1, key=jax.random.key(2))
    ts = jnp.linspace(0.0, 20.0, 9)
    options = {"rtol": 1e-9, "atol": 1e-9, "max_steps": 4000}
    full_tower, f0 = nd.kernel_tower(model, x_train, 4), jax.vmap(model)(x_train)
    full = {p: nd.solve_nth(full_tower[: p - 1], f0, y_train, ts, throw=False, **options) for p in (3, 4)}
    assert int(full[3].stats["result"]) != SUCCESSFUL and int(full[4].stats["result"]) == SUCCESSFUL
    with pytest.raises(SolverError, match="max"):
        reduced_hierarchy(model, x_train, y_train, ts, (3, 4), tol=1e-6, **options)
    result = reduced_hierarchy(model, x_train, y_train, ts, (3, 4), tol=1e-6, accuracy=None, throw=False, **options)
    p3, p4 = result.trajectories
    assert result.rank < len(x_train)
    assert int(p3.stats["result"]) != SUCCESSFUL and jnp.isinf(p3.f[-1]).all() and jnp.isnan(result.basis_error[0])
    assert int(p4.stats["result"]) == SUCCESSFUL and jnp.isfinite(result.basis_error[1])
    assert float(jnp.max(jnp.abs(p4.f - full[4].f))) <= float(result.basis_error[1])


def test_a_seed_of_rank_n_is_solved_once_without_enlarging(training_problem, monkeypatch):
    """A seed that already spans R^n (the reference's whole trajectory at a
    tiny tol) is the full hierarchy: no enlargement, one projected tower (the
    K2 of the p = 2 seed solve besides), basis error 0, the full solve's outputs."""
    model, x_train, y_train, x_eval, ts, reference = training_problem
    n = len(x_train)
    calls = []
    def counted(*args, **kwargs):
        calls.append(args[2])
        return nd.kernel_tower(*args, **kwargs)
    monkeypatch.setattr("nth_dynamics.engine.reduced.kernel_tower", counted)
    options = {"rtol": 1e-10, "atol": 1e-10}
    result = reduced_hierarchy(
        model, x_train, y_train, ts, (3,), x_eval, reference=reference.f[:, :n] - y_train,
        reference_f=reference.f[::4], tol=1e-30, **options,
    )
    assert result.seed_rank == result.rank == n and calls == [2, 3]
    assert float(result.basis_error[0]) == 0.0 and float(result.basis_error_ratio[0]) == 0.0
    full = nd.solve_nth(nd.kernel_tower(model, x_train, 3, x_eval), jax.vmap(model)(x_eval), y_train, ts, **options)
    assert float(jnp.max(jnp.abs(result.trajectories[0].f - full.f))) <= 1e-8
