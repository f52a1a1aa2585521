"""nth_dynamics: the finite-width dynamics of deep networks through the Neural
Tangent Hierarchy (Huang & Yau 2020).

Float64 is switched on at import (every comparison in the project needs it):
set the environment variable ``NTH_DYNAMICS_X64=0`` before importing to keep
JAX's float32 default, e.g. for speed on a GPU.
"""

import os

import jax

if os.environ.get("NTH_DYNAMICS_X64", "1") != "0":
    jax.config.update("jax_enable_x64", True)

from ._version import __version__  # noqa: E402
from .engine.basis import residual_basis  # noqa: E402
from .engine.function_model import FunctionModel  # noqa: E402
from .engine.hierarchy import SolverError, Trajectory, closed_form_p2, solve_nth  # noqa: E402
from .engine.kernels import kernel_tower, tower_bytes  # noqa: E402
from .engine.laziness import lazy_tower  # noqa: E402
from .engine.losses import AbstractLoss, Logistic, Squared  # noqa: E402
from .engine.networks import FFNet, ResNet, make_ensemble, make_network  # noqa: E402
from .engine.optimizers import make_optimizer  # noqa: E402
from .engine.reduced import BasisError, ReducedHierarchy, reduced_hierarchy  # noqa: E402
from .engine.reference import gradient_descent, gradient_flow, optax_reference  # noqa: E402
from .pipeline.scenario import Scenario, ScenarioError, load_scenario  # noqa: E402
from .pipeline.sweep import simulate  # noqa: E402
from .report import analysis  # noqa: E402
from .theory import depth_study, limits, spectrum  # noqa: E402

__all__ = [
    "AbstractLoss",
    "BasisError",
    "FFNet",
    "FunctionModel",
    "Logistic",
    "ReducedHierarchy",
    "ResNet",
    "Scenario",
    "ScenarioError",
    "SolverError",
    "Squared",
    "Trajectory",
    "__version__",
    "analysis",
    "closed_form_p2",
    "depth_study",
    "gradient_descent",
    "gradient_flow",
    "kernel_tower",
    "lazy_tower",
    "limits",
    "load_scenario",
    "make_ensemble",
    "make_network",
    "make_optimizer",
    "optax_reference",
    "reduced_hierarchy",
    "residual_basis",
    "simulate",
    "solve_nth",
    "spectrum",
    "tower_bytes",
]
