"""Dataset builders: shapes, the unit sphere, determinism, and the file formats."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from nth_dynamics.data import gegenbauer, make_data, read_file_arrays

KEY = jax.random.key(3)


def spec(kind="sphere", **fields):
    return {"kind": kind, "n_train": 6, "n_test": 3, "d": 4, "label_noise": 0.0, **fields}


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"kind": "teacher", "teacher": "network", "teacher_width": 32},
        {"kind": "teacher", "teacher": "harmonic", "degree": 3},
        {"kind": "digits", "classes": (3, 8)},
    ],
    ids=["sphere", "teacher-network", "teacher-harmonic", "digits"],
)
def test_every_kind_gives_points_on_the_unit_sphere_and_finite_labels(fields):
    data = make_data(spec(**fields), KEY)
    assert data.x_train.shape == (6, 4) and data.y_train.shape == (6,)
    assert data.x_test.shape == (3, 4) and data.y_test.shape == (3,)
    assert np.allclose(jnp.linalg.norm(data.x_eval, axis=1), 1.0)
    assert bool(jnp.all(jnp.isfinite(data.y_eval)))
    assert data.x_train.dtype == jnp.float64


def test_data_is_a_pure_function_of_spec_and_key():
    a, b = make_data(spec(), KEY), make_data(spec(), KEY)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    c = make_data(spec(), jax.random.key(4))
    assert not np.array_equal(a.x_train, c.x_train)


def test_more_training_points_extend_the_smaller_set():
    small, large = make_data(spec(n_train=4), KEY), make_data(spec(n_train=9), KEY)
    assert np.array_equal(small.x_train, large.x_train[:4])
    assert np.array_equal(small.x_test, large.x_test)


def test_label_noise_touches_training_labels_only():
    clean, noisy = make_data(spec(), KEY), make_data(spec(label_noise=0.5), KEY)
    assert not np.allclose(clean.y_train, noisy.y_train)
    assert np.array_equal(clean.y_test, noisy.y_test)
    assert np.array_equal(clean.x_train, noisy.x_train)


def test_digits_labels_are_plus_minus_one_and_test_images_are_new():
    data = make_data(spec("digits", n_train=20, n_test=20, d=10, classes=(3, 8)), KEY)
    assert set(np.unique(data.y_eval)) == {-1.0, 1.0}
    distances = np.linalg.norm(data.x_train[:, None] - data.x_test[None], axis=-1)
    assert distances.min() > 0


def test_float32_precision():
    assert make_data(spec(), KEY, jnp.float32).x_train.dtype == jnp.float32


@pytest.mark.parametrize("d", [2, 3, 5])
def test_the_harmonic_teacher_is_the_normalised_gegenbauer_polynomial(d):
    t = np.linspace(-1, 1, 7)
    lam = (d - 2) / 2
    for degree in range(0, 5):
        if lam == 0:
            expected = np.cos(degree * np.arccos(t))
        else:
            expected = scipy.special.eval_gegenbauer(degree, lam, t) / scipy.special.eval_gegenbauer(degree, lam, 1.0)
        assert np.allclose(gegenbauer(degree, d, jnp.asarray(t)), expected, atol=1e-12)


def test_npz_files(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "points.npz"
    np.savez(path, x_train=rng.normal(size=(5, 3)), y_train=rng.normal(size=5),
             x_test=rng.normal(size=(2, 3)), y_test=rng.normal(size=2))
    data = make_data({"kind": "file", "path": str(path), "n_train": 4, "n_test": 2}, KEY)
    assert data.x_train.shape == (4, 3) and data.x_test.shape == (2, 3)
    assert np.allclose(jnp.linalg.norm(data.x_eval, axis=1), 1.0)
    np.savez(path, x_train=rng.normal(size=(5, 3)), y_train=rng.normal(size=5))
    assert read_file_arrays(path)[2].shape == (0, 3)


def test_csv_files_split_rows_by_the_split_column(tmp_path):
    path = tmp_path / "points.csv"
    path.write_text("a,b,y,split\n1,0,0.5,train\n0,2,-1,test\n3,4,2,train\n")
    x_train, y_train, x_test, y_test = read_file_arrays(path)
    assert np.array_equal(x_train, [[1, 0], [3, 4]]) and np.array_equal(y_train, [0.5, 2])
    assert np.array_equal(x_test, [[0, 2]]) and np.array_equal(y_test, [-1])
    data = make_data({"kind": "file", "path": str(path), "n_train": 2, "n_test": 1, "normalize": True}, KEY)
    assert np.allclose(data.x_train[1], [0.6, 0.8])


@pytest.mark.parametrize(
    "content, problem",
    [
        ("a,b\n1,2\n", "no 'y' column"),
        ("a,y\n1,x\n", "not a number"),
        ("a,y,split\n1,2,validation\n", "allowed: train or test"),
        ("a,y\n1,2,3\n", "fields"),
    ],
)
def test_bad_csv_files_are_explained(tmp_path, content, problem):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=problem):
        read_file_arrays(path)


def test_bad_npz_files_are_explained(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="missing array"):
        read_file_arrays(path)
    np.savez(path, x_train=np.zeros((3, 2)), y_train=np.zeros(4))
    with pytest.raises(ValueError, match="y_train"):
        read_file_arrays(path)
