"""``scipy.special``'s array functions on traced arrays: ``logsumexp`` (``axis``, ``keepdims``, ``b``),
``softmax`` and ``log_softmax`` (SciPy's default ``axis=None``: over every element), ``polygamma``.

SciPy's ufuncs (``expit``, ``gammaln``, ``xlogy``, ...) reach fasttape through NumPy's protocols; these
four are Python functions that convert their input with ``np.asarray``, so while a function is traced
they are replaced on the ``scipy.special`` module (``fasttape.interception``), as ``scipy.linalg``'s are.
Each is ``fasttape.numpy``'s, the stable forms JAX uses: its gradient is the softmax.
"""

from __future__ import annotations

from . import numpy as fnp
from .errors import UnsupportedFunctionError
from .interception import Interception
from .recorder import recorder_of


def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False):
    """``scipy.special.logsumexp``: log Σ b exp(a), stably; ``b`` (weights, ≥ 0) enters as a + log b."""
    if recorder_of((a, b)) is None:
        return _original("logsumexp")(a, axis=axis, b=b, keepdims=keepdims, return_sign=return_sign)
    if return_sign:
        raise UnsupportedFunctionError(
            "scipy.special.logsumexp(..., return_sign=True) is not supported on traced arrays; with weights b "
            "of both signs, split them: logsumexp(a, b=max(b, 0)) and logsumexp(a, b=max(-b, 0))."
        )
    if b is not None:
        a = fnp.add(a, fnp.log(b))  # a zero weight drops its term: exp(-inf) = 0
    return fnp.logsumexp(a, axis=axis, keepdims=keepdims)


def softmax(x, axis=None):
    """``scipy.special.softmax``: exp(x - logsumexp(x, axis)), over every element when ``axis`` is None."""
    if recorder_of((x,)) is None:
        return _original("softmax")(x, axis=axis)
    return fnp.exp(log_softmax(x, axis=axis))


def log_softmax(x, axis=None):
    """``scipy.special.log_softmax``: x - logsumexp(x, axis)."""
    if recorder_of((x,)) is None:
        return _original("log_softmax")(x, axis=axis)
    return fnp.subtract(x, fnp.logsumexp(x, axis=axis, keepdims=True))


def polygamma(n, x):
    """``scipy.special.polygamma``: ψ⁽ⁿ⁾(x) for a constant integer order n (one primitive per element)."""
    if recorder_of((n, x)) is None:
        return _original("polygamma")(n, x)
    return fnp.polygamma(n, x)  # noqa  (generated from the declaration)


FUNCTIONS = {"logsumexp": logsumexp, "softmax": softmax, "log_softmax": log_softmax, "polygamma": polygamma}
INTERCEPTION = Interception("scipy.special", FUNCTIONS)
intercepting = INTERCEPTION.active  # while a function is traced, scipy.special's functions above are these
_original = INTERCEPTION.original
