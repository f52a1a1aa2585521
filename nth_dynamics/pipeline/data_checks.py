"""Checks of a scenario's data section against the data itself: the sizes
of the bundled digits, and a user file (its path resolved, its shape read)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from .._schema import fail
from ..data import digits_problem, read_file_arrays
from .schema import DigitsData, FileData


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


def file_digest(path: str) -> str:
    """sha256 of a data file's contents (a cell id holds it instead of the path)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


__all__ = ["check_digits", "file_digest", "resolve_file_data"]
