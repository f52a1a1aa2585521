"""What every result carries about how it was made: the package versions, the
git commit of the source, the device and the float precision. The pipeline's
scenario results and the infinite-width studies both start from
:func:`base_attributes`."""

from __future__ import annotations

import datetime
import functools
import importlib.metadata
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import jax

from ._version import __version__

PACKAGES = (
    "nth_dynamics", "jax", "jaxlib", "diffrax", "equinox", "numpy", "scipy", "xarray",
    "h5netcdf", "h5py", "zarr", "pydantic", "scikit-learn",
)  # fmt: skip


def base_attributes(what: str) -> dict[str, Any]:
    """CF-1.10 global attributes common to every result: ``what`` is the call
    that made it, recorded in ``history`` with the UTC time."""
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    return {
        "Conventions": "CF-1.10",
        "source": f"nth_dynamics {__version__}",
        "history": f"{now}: {what}",
        "package_versions": json.dumps(package_versions(), sort_keys=True),
        "git_commit": git_commit(),
        "jax_enable_x64": int(bool(jax.config.jax_enable_x64)),
        "device": describe_device(),
    }


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


@functools.cache
def git_commit() -> str:
    """The commit of the source tree of this package, or "unknown" (not a git
    checkout, or git missing); "+dirty" when it has uncommitted changes.
    Read once per process (simulate reads it before computing): a commit
    made while a long sweep runs is not the code the sweep imported."""
    root = Path(__file__).resolve().parent.parent  # the repository holding nth_dynamics/
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", "nth_dynamics"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}+dirty" if status else commit or "unknown"


def describe_device() -> str:
    device = jax.devices()[0]
    return f"{device.platform}: {getattr(device, 'device_kind', device)} ×{jax.device_count()}"
