"""Every file the project writes goes through here, atomically: into a
temporary name in the target's directory, then renamed over the target, so a
crash or an interrupt never leaves a partial file under the final name.

This module sits below everything else (the pipeline, the studies and the
report all write files); it knows netCDF, zarr, figures and text, nothing of
what they hold.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import xarray as xr

FIGURE_FORMATS = ("png", "svg")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file name next to ``path``; on success it is renamed
    over ``path`` (with the permissions of a newly created file), on any
    exception it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(descriptor)
    try:
        yield Path(temporary)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """:func:`atomic_path` for a directory (a zarr store): a directory cannot
    be replaced in one rename, so an existing one is moved aside first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield temporary
        os.chmod(temporary, 0o777 & ~_umask())  # mkdtemp makes it private
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", suffix=".tmp", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(temporary, path)
            shutil.rmtree(old)
        else:
            os.replace(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def output_format(path: str | os.PathLike) -> str:
    """"zarr" for a path ending in .zarr, else "netcdf"."""
    return "zarr" if Path(path).suffix == ".zarr" else "netcdf"


def write_dataset(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write ``ds`` to ``path`` atomically: netCDF (h5netcdf engine, float
    variables compressed) or zarr, from the suffix."""
    path = Path(path)
    if output_format(path) == "zarr":
        with atomic_directory(path) as temporary:
            ds.to_zarr(temporary, mode="w", zarr_format=2)
    else:
        with atomic_path(path) as temporary:
            ds.to_netcdf(temporary, engine="h5netcdf", encoding=_compression(ds))
    return path


def read_dataset(path: str | os.PathLike) -> xr.Dataset:
    """Load a written result fully into memory (and close the file)."""
    path = Path(path)
    engine = "zarr" if output_format(path) == "zarr" else "h5netcdf"
    with xr.open_dataset(path, engine=engine) as ds:
        return ds.load()


def write_text(text: str, path: str | os.PathLike) -> Path:
    with atomic_path(path) as temporary:
        temporary.write_text(text)
    return Path(path)


def save_figure(figure: Any, stem: str | os.PathLike, formats: Sequence[str] = FIGURE_FORMATS, **savefig: Any) -> list[Path]:
    """Write a matplotlib ``figure`` as ``stem.png`` and ``stem.svg`` (or
    ``formats``), each atomically; ``savefig`` goes to ``Figure.savefig``."""
    paths = []
    for suffix in formats:
        path = Path(stem).with_suffix(f".{suffix}")
        with atomic_path(path) as temporary:
            figure.savefig(temporary, format=suffix, **savefig)
        paths.append(path)
    return paths


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _compression(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    return {
        name: {"zlib": True, "complevel": 4}
        for name, variable in ds.data_vars.items()
        if variable.dtype.kind == "f" and variable.size > 1024
    }
