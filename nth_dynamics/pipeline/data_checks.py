"""Checks of a scenario's data section against the data itself: the sizes
of the bundled digits, a user file (its path resolved, its shape read), and
the labels a loss needs (the logistic loss: ±1)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from .._schema import fail
from ..data import digits_problem, read_file_arrays
from ..engine.losses import AbstractLoss
from .schema import DigitsData, FileData, _DataBase


def check_digits(data: DigitsData, source: str) -> None:
    """The digits data section against the bundled digits (the rule is
    :func:`nth_dynamics.data.digits_problem`, shared with the depth study)."""
    n_train = data.n_train if isinstance(data.n_train, int) else max(data.n_train)
    problem = digits_problem(data.d, data.classes, n_train, data.n_test)
    if problem is not None:
        fail(source, f"data.{problem[0]}", problem[1])


def resolve_file_data(data: FileData, source: str, base_dir: Path) -> FileData:
    """``data`` with the file's absolute path, and n_train, n_test and d from the file unless given (and then checked)."""
    path = Path(data.path).expanduser()
    path = path if path.is_absolute() else (base_dir / path)
    if path.suffix not in (".npz", ".csv"):
        fail(source, "data.path", f"got {data.path!r}, allowed: a .npz or .csv file")
    if not path.is_file():
        fail(
            source,
            "data.path",
            f"{str(path)!r}: no such file; allowed: an existing .npz or .csv file (relative to the scenario file)",
        )
    try:
        x_train, _, x_test, _ = read_file_arrays(path)
    except ValueError as error:
        fail(source, "data.path", f"{path.name}: {error}")
    updates: dict[str, Any] = {"path": str(path.resolve())}
    d = x_train.shape[1]
    if data.d is not None and data.d != d:
        fail(source, "data.d", f"got {data.d} but the file's inputs have {d} columns; allowed: {d} (or omit d)")
    updates["d"] = d
    n_file, n_test_file = x_train.shape[0], x_test.shape[0]
    n_train = data.n_train or (n_file,)
    if max(n_train) > n_file:
        fail(source, "data.n_train", f"got {max(n_train)}, allowed: at most the file's {n_file} training rows")
    updates["n_train"] = n_train
    n_test = n_test_file if data.n_test is None else data.n_test
    if n_test > n_test_file:
        fail(source, "data.n_test", f"got {n_test}, allowed: at most the file's {n_test_file} test rows")
    updates["n_test"] = n_test
    return data.model_copy(update=updates)


def check_labels(data: _DataBase, loss: AbstractLoss, source: str) -> None:
    """The labels of ``data`` against what ``loss`` needs: any for a
    regression loss (mse); for a classification loss (logistic) labels ±1,
    which digits give and a file may (its rows the cells use are read).
    Sphere and teacher labels, and label noise, are real numbers."""
    if not loss.classification:
        return
    if data.label_noise:
        fail(source, "data.label_noise", f"got {data.label_noise:g}, allowed: 0 with loss {loss.name} "
             "(noise makes the labels real numbers)")
    if isinstance(data, FileData):
        _, y_train, _, y_test = read_file_arrays(Path(data.path))
        for name, labels in (("y_train", y_train[: max(data.n_train)]), ("y_test", y_test[: data.n_test])):
            problem = loss.label_problem(labels)
            if problem is not None:
                fail(source, "data.path", f"{Path(data.path).name}: {name}: {problem}; allowed with loss "
                     f"{loss.name}: a file whose labels are +1 and −1")
    elif not isinstance(data, DigitsData):
        fail(source, "data.kind", f"got {data.kind!r}, whose labels are real numbers; allowed with loss "
             f"{loss.name}: digits, or a file of labels +1 and −1")


def file_digest(path: str) -> str:
    """sha256 of a data file's contents (a cell id holds it instead of the path)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


__all__ = ["check_digits", "check_labels", "file_digest", "resolve_file_data"]
