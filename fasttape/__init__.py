"""fasttape: reverse-mode automatic differentiation for NumPy code.

Trace once, replay compiled: a function is run once on tracers, its primitives
are recorded on a flat-array tape, and every later call is one Numba-compiled
sweep over that tape.

>>> import numpy as np, fasttape as ft
>>> ft.grad(lambda x: np.sum(np.tanh(x) ** 2))(np.ones(3)).round(6)
array([0.839949, 0.839949, 0.839949])
"""

from . import arrays as arrays
from . import einsum as einsum
from . import linalg as linalg
from . import numpy
from . import sorting as sorting
from ._version import __version__ as __version__
from .api import (
    grad,
    hessian,
    hvp,
    jacfwd,
    jacobian,
    jacrev,
    jvp,
    trace,
    value_and_grad,
    value_grad_and_hvp,
    vjp,
)
from .batching import vmap
from .config import get_options, options, set_options
from .custom import custom_jvp, custom_vjp, stop_gradient
from .errors import (
    BranchChangedError,
    ConcretizationError,
    InputSignatureError,
    InputTypeError,
    NonScalarOutputError,
    TapeFormatError,
    TracerLeakError,
    TracerMutationError,
    UnsupportedFunctionError,
    UnsupportedMethodError,
)
from .optimize import scipy_objective
from .primitives import PRIMITIVES
from .storage import load_tape
from .tape import Tape

__all__ = [
    "grad",
    "value_and_grad",
    "vjp",
    "jvp",
    "hvp",
    "jacobian",
    "jacfwd",
    "jacrev",
    "hessian",
    "trace",
    "vmap",
    "custom_jvp",
    "custom_vjp",
    "stop_gradient",
    "load_tape",
    "set_options",
    "get_options",
    "options",
    "value_grad_and_hvp",
    "scipy_objective",
    "Tape",
    "numpy",
    "PRIMITIVES",
    "BranchChangedError",
    "ConcretizationError",
    "InputSignatureError",
    "InputTypeError",
    "NonScalarOutputError",
    "TapeFormatError",
    "TracerLeakError",
    "TracerMutationError",
    "UnsupportedFunctionError",
    "UnsupportedMethodError",
]


def __getattr__(name):
    # ``ft.dask`` without ``import fasttape.dask`` (Dask is an optional extra: imported only when asked for)
    if name == "dask":
        import importlib

        return importlib.import_module(".dask", __name__)
    raise AttributeError(f"module 'fasttape' has no attribute {name!r}")
