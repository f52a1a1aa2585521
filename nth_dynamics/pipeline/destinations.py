"""Where a run writes, checked before anything is computed: a sweep that
could not save its result would lose hours of work at the last step.

A result is written atomically (a temporary name in its directory, then a
rename: :mod:`nth_dynamics._files`), so what must hold is that its directory
exists or can be created, and can be written; a cells directory likewise.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .._files import output_format
from .._schema import ScenarioError


def check_destination(path: str | Path, *, source: str, field: str, directory: bool = False) -> None:
    """Raise a one-line :class:`ScenarioError` unless ``path`` can be written.

    ``directory``: ``path`` is a directory the run writes files into (a cells
    directory), else a result (a .nc file, or a .zarr directory store that
    replaces any old one). ``field`` names the setting in the message
    (``output.path``, ``--cells``).
    """
    path = Path(path).expanduser()
    where = f"{source}: {field}: {str(path)!r}"
    if directory or output_format(path) == "zarr":
        if path.exists() and not path.is_dir():
            kind = "a directory" if directory else "a .zarr directory store"
            raise ScenarioError(f"{where} is an existing file; allowed: {kind}, or a path that does not exist yet")
    elif path.is_dir():
        raise ScenarioError(f"{where} is an existing directory; allowed: a .nc file path (or a .zarr store)")
    target = path if directory else path.parent
    existing = next(parent for parent in (target, *target.parents) if parent.exists())
    if not existing.is_dir():
        raise ScenarioError(
            f"{where}: the directory {target} cannot be created ({existing} is a file); "
            "allowed: a path whose directories can be created"
        )
    try:  # a real write: permission bits alone do not say (root, read-only mounts)
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        created = "" if existing == target else f" (to create {target})"
        raise ScenarioError(
            f"{where}: cannot write in {existing}{created}: {error.strerror or error}; allowed: a writable directory"
        ) from None


__all__ = ["check_destination"]
