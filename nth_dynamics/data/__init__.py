"""Training and test sets of a scenario (docs/theory.md §1: inputs on the unit
sphere S^(d−1), labels O(1)).

Every builder is a pure function of the data spec (a ``data`` section of a
scenario, as a mapping, with a single ``n_train``) and a JAX PRNG key. Points
are drawn one key per point (``fold_in(key, i)``), so the first n training
points of a larger n_train are the n points of a smaller one: sweeping n_train
adds points instead of redrawing them.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..engine.networks import make_network


class Data(NamedTuple):
    """A training set and a (possibly empty) test set."""

    x_train: Float[Array, "n d"]
    y_train: Float[Array, " n"]
    x_test: Float[Array, "n_test d"]
    y_test: Float[Array, " n_test"]

    @property
    def x_eval(self) -> Float[Array, "n_eval d"]:
        """Evaluation points: train ∪ test, training points first."""
        return jnp.concatenate([self.x_train, self.x_test])

    @property
    def y_eval(self) -> Float[Array, " n_eval"]:
        return jnp.concatenate([self.y_train, self.y_test])


def make_data(spec: Mapping[str, Any], key: PRNGKeyArray, dtype=None) -> Data:
    """The dataset of a data spec (``kind`` ∈ sphere, teacher, digits, file).

    Gaussian label noise of standard deviation ``label_noise`` is added to the
    training labels only; test labels stay clean.
    """
    dtype = dtype or jnp.result_type(float)
    builders = {"sphere": sphere_data, "teacher": teacher_data, "digits": digits_data, "file": file_data}
    key_data, key_noise = jax.random.split(key)
    x_train, y_train, x_test, y_test = builders[spec["kind"]](spec, key_data)
    if spec.get("label_noise", 0.0):
        y_train = y_train + spec["label_noise"] * _per_point_normal(key_noise, y_train.shape[0], ())
    cast = functools.partial(jnp.asarray, dtype=dtype)
    return Data(cast(x_train), cast(y_train), cast(x_test), cast(y_test))


def sphere_points(key: PRNGKeyArray, count: int, d: int) -> Float[np.ndarray, "count d"]:
    """``count`` points uniform on S^(d−1), point i drawn from ``fold_in(key, i)``."""
    return _to_sphere(_per_point_normal(key, count, (d,)))


def sphere_data(spec: Mapping[str, Any], key: PRNGKeyArray):
    """x uniform on the sphere, y = sin(π · frequency · ⟨u, x⟩), u a random unit vector."""
    key_train, key_test, key_u = jax.random.split(key, 3)
    x_train, x_test = _train_test_points(spec, key_train, key_test)
    u = sphere_points(key_u, 1, spec["d"])[0]

    def target(x):
        return np.sin(np.pi * spec.get("frequency", 1.0) * (x @ u))

    return x_train, target(x_train), x_test, target(x_test)


def teacher_data(spec: Mapping[str, Any], key: PRNGKeyArray):
    """x uniform on the sphere, y from a random wide network of the project
    (``teacher: network``) or the zonal harmonic P_k(⟨u, x⟩) of degree k
    (``teacher: harmonic``)."""
    key_train, key_test, key_teacher = jax.random.split(key, 3)
    x_train, x_test = _train_test_points(spec, key_train, key_test)
    if spec.get("teacher", "network") == "harmonic":
        u = sphere_points(key_teacher, 1, spec["d"])[0]

        def target(x):
            return gegenbauer(spec.get("degree", 2), spec["d"], x @ u)

    else:
        teacher = make_network(
            spec.get("teacher_architecture", "ffnet"),
            spec["d"],
            spec.get("teacher_width", 512),
            spec.get("teacher_depth", 1),
            key=key_teacher,
            activation=spec.get("teacher_activation", "tanh"),
            dtype=jnp.result_type(float),
        )

        def target(x):
            return np.asarray(jax.vmap(teacher)(jnp.asarray(x))) if x.shape[0] else np.zeros((0,))

    return x_train, target(x_train), x_test, target(x_test)


def gegenbauer(degree: int, d: int, t: Float[ArrayLike, "*shape"]) -> Float[ArrayLike, "*shape"]:
    """The Gegenbauer polynomial P_k of S^(d−1) (index λ = (d−2)/2), normalised
    to P_k(1) = 1: the zonal spherical harmonic of degree k. d = 2 gives cos(k arccos t).
    Works on NumPy and JAX arrays alike."""
    lam = (d - 2) / 2
    if lam == 0:  # Chebyshev: the λ → 0 limit of the normalised polynomials
        previous, current = t * 0 + 1, t
        for _ in range(1, degree):
            previous, current = current, 2 * t * current - previous
        return previous if degree == 0 else current

    def unnormalised(s):
        previous, current = s * 0 + 1, 2 * lam * s
        for k in range(2, degree + 1):
            previous, current = current, (2 * s * (k + lam - 1) * current - (k + 2 * lam - 2) * previous) / k
        return previous if degree == 0 else current

    return unnormalised(t) / unnormalised(1.0)


def digits_data(spec: Mapping[str, Any], key: PRNGKeyArray):
    """Two classes of scikit-learn's bundled 8×8 digits (no download), labels
    +1 (first class) / −1 (second), projected onto the first d principal
    components of the two classes and normalised to the unit sphere. A random
    permutation picks the training points from the front and the test points
    from the back, so the two never overlap."""
    images, labels = _digits()
    first, second = spec.get("classes", (0, 1))
    chosen = np.isin(labels, (first, second))
    x = images[chosen]
    y = np.where(labels[chosen] == first, 1.0, -1.0)
    centred = x - x.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    x = _to_sphere(centred @ components[: spec["d"]].T)
    order = np.asarray(jax.random.permutation(key, x.shape[0]))
    n, n_test = spec["n_train"], spec.get("n_test", 0)
    train, test = order[:n], order[len(order) - n_test :]
    return x[train], y[train], x[test], y[test]


def digits_class_sizes() -> np.ndarray:
    """Number of images of each digit 0–9 in the bundled set."""
    return np.bincount(_digits()[1], minlength=10)


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data.astype(np.float64), bunch.target


def file_data(spec: Mapping[str, Any], key: PRNGKeyArray):
    """The first n_train training and n_test test rows of a user file (see
    :func:`read_file_arrays`), projected onto the sphere if ``normalize``."""
    del key  # a file is deterministic
    x_train, y_train, x_test, y_test = read_file_arrays(Path(spec["path"]))
    n, n_test = spec["n_train"], spec.get("n_test") or 0
    x_train, y_train, x_test, y_test = x_train[:n], y_train[:n], x_test[:n_test], y_test[:n_test]
    if spec.get("normalize", True):
        x_train, x_test = _to_sphere(x_train), _to_sphere(x_test)
    return x_train, y_train, x_test, y_test


def read_file_arrays(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) from a ``.npz`` (arrays x_train,
    y_train and optionally x_test, y_test) or a ``.csv`` (a header row; a
    ``y`` column; an optional ``split`` column of train/test; every other
    column an input coordinate). Raises ValueError naming what is wrong."""
    if path.suffix == ".npz":
        arrays = _read_npz(path)
    elif path.suffix == ".csv":
        arrays = _read_csv(path)
    else:
        raise ValueError(f"unsupported suffix {path.suffix!r}; allowed: .npz or .csv")
    x_train, y_train, x_test, y_test = arrays
    if x_train.ndim != 2 or x_train.shape[0] == 0 or y_train.shape != (x_train.shape[0],):
        raise ValueError(
            f"x_train must be (n, d) with n ≥ 1 and y_train (n,); got {x_train.shape} and {y_train.shape}"
        )
    if x_test.ndim != 2 or x_test.shape[1] != x_train.shape[1] or y_test.shape != (x_test.shape[0],):
        raise ValueError(
            f"x_test must be (n_test, {x_train.shape[1]}) and y_test (n_test,); got {x_test.shape} and {y_test.shape}"
        )
    for name, array in zip(("x_train", "y_train", "x_test", "y_test"), arrays):
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} holds non-finite values; allowed: finite numbers")
    return arrays


def _read_npz(path: Path):
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: np.asarray(archive[name], dtype=np.float64) for name in archive.files}
    except (OSError, ValueError) as error:
        raise ValueError(f"not a readable .npz archive ({error})") from None
    missing = {"x_train", "y_train"} - set(arrays)
    if missing:
        raise ValueError(f"missing array(s) {sorted(missing)}; allowed: x_train, y_train and optionally x_test, y_test")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise ValueError("give both x_test and y_test, or neither")
    d = arrays["x_train"].shape[-1] if arrays["x_train"].ndim == 2 else 0
    x_test = arrays.get("x_test", np.zeros((0, d)))
    y_test = arrays.get("y_test", np.zeros((0,)))
    return arrays["x_train"], arrays["y_train"], x_test, y_test


def _read_csv(path: Path):
    with path.open(newline="") as stream:
        rows = list(csv.reader(stream))
    if not rows:
        raise ValueError("the CSV file is empty; allowed: a header row, then one row per point")
    header = [name.strip() for name in rows[0]]
    if "y" not in header:
        raise ValueError(f"no 'y' column in the header {header}; allowed: inputs, a 'y' column, an optional 'split'")
    inputs = [i for i, name in enumerate(header) if name not in ("y", "split")]
    if not inputs:
        raise ValueError("no input columns; allowed: one column per input coordinate besides 'y' and 'split'")
    split_column = header.index("split") if "split" in header else None
    x, y, split = [], [], []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise ValueError(f"line {line} has {len(row)} fields, the header {len(header)}")
        try:
            x.append([float(row[i]) for i in inputs])
            y.append(float(row[header.index("y")]))
        except ValueError:
            raise ValueError(f"line {line}: a value is not a number") from None
        part = row[split_column].strip() if split_column is not None else "train"
        if part not in ("train", "test"):
            raise ValueError(f"line {line}: split {part!r}; allowed: train or test")
        split.append(part)
    x, y, split = np.asarray(x, dtype=np.float64).reshape(-1, len(inputs)), np.asarray(y), np.asarray(split)
    train, test = split == "train", split == "test"
    return x[train], y[train], x[test], y[test]


def _train_test_points(spec: Mapping[str, Any], key_train: PRNGKeyArray, key_test: PRNGKeyArray):
    return (
        sphere_points(key_train, spec["n_train"], spec["d"]),
        sphere_points(key_test, spec.get("n_test", 0), spec["d"]),
    )


def _per_point_normal(key: PRNGKeyArray, count: int, shape: tuple[int, ...]) -> np.ndarray:
    # A loop of two small ops compiled once, the rest in NumPy: compiling a
    # program for every new count would cost more than the loop.
    draws = [np.asarray(jax.random.normal(jax.random.fold_in(key, i), shape)) for i in range(count)]
    return np.stack(draws) if draws else np.zeros((0,) + shape)


def _to_sphere(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


__all__ = ["Data", "digits_class_sizes", "gegenbauer", "make_data", "read_file_arrays", "sphere_points"]
