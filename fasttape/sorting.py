"""Sorting and selection on traced arrays: ``sort``, ``argsort``, ``argmax`` / ``argmin``, ``partition``,
``median`` / ``quantile`` / ``percentile``, ``searchsorted`` and ``interp``.

The integer results (``argsort``, ``argmax``, ``argmin``, ``searchsorted``) are primitives of the sorting
family, computed in every sweep; the values are gathered by them with the dynamic ``take``, which carries
the derivatives.  So ``sort`` is ``take_along_axis(x, argsort(x))``: each element's derivative goes to the
position the stable sort moved it to, which is JAX's convention at ties too (its sort is stable).  NaNs
sort last, as in NumPy and JAX.

``partition`` returns the fully sorted array, which is one valid partition (NumPy leaves the order within
each side unspecified; ``jax.numpy`` sorts too).  ``quantile`` and its relatives follow ``jax.numpy``'s
formula: the sorted values at floor and ceil of q (n - 1), weighted by the fraction, NaN where a NaN is
present; ``interp`` is ``jax.numpy.interp``'s, so both have JAX's derivatives where the pieces meet.
"""

from __future__ import annotations

import math
import operator

import numpy as np

from . import kernels as K
from . import numpy as fnp
from .dynamic import take_along_axis
from .errors import UnsupportedFunctionError
from .recorder import concrete, recorder_of
from .tracer import Tracer


def _axis(axis, ndim):
    axis = operator.index(axis)
    if not -ndim <= axis < ndim:
        raise np.exceptions.AxisError(axis, ndim)
    return axis % ndim


def _columns(x, axis):
    """(pre, r, post) of x around ``axis``."""
    shape = x.shape
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1 :])


def _flat_if_none(a, axis):
    return (fnp.ravel(a), 0) if axis is None else (a, _axis(axis, a.ndim))


def _check_kind(kind, stable, name):
    if kind not in (None, "quicksort", "mergesort", "heapsort", "stable") or stable is False:
        raise ValueError(f"{name}: kind={kind!r}, stable={stable!r}; fasttape's sort is always stable")


def argsort(a, axis=-1, kind=None, order=None, *, stable=None):
    """``numpy.argsort``: the stable ascending order along ``axis`` (NaNs last), integers read in the sweep."""
    rec = recorder_of((a,))
    if rec is None:
        return np.argsort(a, axis=axis, kind=kind, order=order, stable=stable)
    _check_kind(kind, stable, "argsort")
    if order is not None:
        raise ValueError("argsort: order= applies to structured arrays, which are not traced")
    a, axis = _flat_if_none(rec.as_tracer(a), axis)
    if a.ndim == 0:
        a, axis = fnp.reshape(a, (1,)), 0
    pre, r, post = _columns(a, axis)
    value = np.argsort(a._value, axis=axis, kind="stable")
    return rec._emit(K.OP_ARGSORT, value.shape, [a._sid], {"pre": pre, "r": r, "post": post}, kind="i",
                     value=value)  # fmt: skip


def sort(a, axis=-1, kind=None, order=None, *, stable=None):
    """``numpy.sort``: the values gathered in argsort's order; each derivative follows its element."""
    if recorder_of((a,)) is None:
        return np.sort(a, axis=axis, kind=kind, order=order, stable=stable)
    a = recorder_of((a,)).as_tracer(a)
    a, axis = _flat_if_none(a, axis)
    if a.ndim == 0:
        raise np.exceptions.AxisError(axis, 0)
    return take_along_axis(a, argsort(a, axis, kind, order, stable=stable), axis)


def _arg_extremum(op, np_fn, name):
    def fn(a, axis=None, out=None, *, keepdims=False):
        rec = recorder_of((a,))
        if rec is None:
            return np_fn(a, axis=axis, out=out, keepdims=keepdims)
        fnp._no_out(name, out, {})
        x = rec.as_tracer(a)
        value = np_fn(x._value, axis=axis, keepdims=keepdims)  # NumPy's errors: an empty sequence, a bad axis
        flat, ax = _flat_if_none(x, axis)
        if flat.ndim == 0:
            flat, ax = fnp.reshape(flat, (1,)), 0
        pre, r, post = _columns(flat, ax)
        out_shape = flat.shape[:ax] + flat.shape[ax + 1 :]
        result = rec._emit(op, out_shape, [flat._sid], {"pre": pre, "r": r, "post": post}, kind="i",
                           value=np.asarray(value).reshape(out_shape))  # fmt: skip
        return fnp.reshape(result, np.shape(value)) if np.shape(value) != out_shape else result

    fn.__name__ = name
    fn.__doc__ = f"``numpy.{name}``: the first extremum's index (the first NaN's if any), read in the sweep."
    return fn


argmax = _arg_extremum(K.OP_ARGMAX, np.argmax, "argmax")
argmin = _arg_extremum(K.OP_ARGMIN, np.argmin, "argmin")


def partition(a, kth, axis=-1, kind="introselect", order=None):
    """``numpy.partition``: the sorted array, which is a valid partition for every ``kth``."""
    if recorder_of((a,)) is None:
        return np.partition(a, kth, axis=axis, kind=kind, order=order)
    np.partition(np.zeros(np.shape(concrete(a))), kth, axis=axis)  # NumPy's errors: kth out of range
    return sort(a, axis)


def argpartition(a, kth, axis=-1, kind="introselect", order=None):
    """``numpy.argpartition``: the stable sorting order, a valid partition's for every ``kth``."""
    if recorder_of((a,)) is None:
        return np.argpartition(a, kth, axis=axis, kind=kind, order=order)
    np.argpartition(np.zeros(np.shape(concrete(a))), kth, axis=axis)
    return argsort(a, axis)


_METHODS = ("linear", "lower", "higher", "midpoint", "nearest")


def quantile(a, q, axis=None, out=None, overwrite_input=False, method="linear", keepdims=False, *, weights=None,
             interpolation=None):  # fmt: skip
    """``numpy.quantile`` (methods linear, lower, higher, midpoint, nearest): jax.numpy's formula, q traced or
    not."""
    rec = recorder_of((a, q))
    if rec is None:
        return np.quantile(a, q, axis=axis, out=out, overwrite_input=overwrite_input, method=method,
                           keepdims=keepdims, weights=weights)  # fmt: skip
    fnp._no_out("quantile", out, {})
    method = interpolation or method
    if method not in _METHODS or weights is not None:
        raise UnsupportedFunctionError(
            f"numpy.quantile with method={method!r}" + (" and weights" if weights is not None else "")
            + f" is not supported on traced arrays; the methods are {_METHODS}, without weights."
        )  # fmt: skip
    x = rec.as_tracer(a)
    q_value = concrete(q)
    expected = np.quantile(np.zeros(x.shape), np.clip(np.asarray(q_value, dtype=float), 0, 1), axis=axis,
                           keepdims=keepdims, method=method)  # NumPy's errors and result shape  # fmt: skip
    if not isinstance(q, Tracer) and not np.all((0 <= np.asarray(q_value)) & (np.asarray(q_value) <= 1)):
        raise ValueError("Quantiles must be in the range [0, 1]")
    axes = tuple(range(x.ndim)) if axis is None else tuple(sorted({_axis(ax, x.ndim) for ax in np.atleast_1d(axis)}))
    kept = tuple(d for d in range(x.ndim) if d not in axes)
    moved = fnp.transpose(x, kept + axes) if kept + axes != tuple(range(x.ndim)) else x
    moved = fnp.reshape(moved, tuple(x.shape[d] for d in kept) + (-1,))  # the reduced axes last, as one
    n = moved.shape[-1]
    s = sort(moved, -1)
    q_col = fnp.reshape(q, np.shape(q_value) + (1,) * len(kept)) if np.ndim(q_value) else q
    position = fnp.multiply(q_col, n - 1) if isinstance(q, Tracer) else np.asarray(q_value) * (n - 1)
    if np.ndim(q_value) and not isinstance(q, Tracer):
        position = position.reshape(np.shape(q_value) + (1,) * len(kept))
    low, high = fnp.floor(position), fnp.ceil(position)
    high_weight = fnp.subtract(position, low)
    low_weight = fnp.subtract(1.0, high_weight)
    q_shape = np.shape(q_value)
    low_value, high_value = _at_positions(s, low, n, q_shape), _at_positions(s, high, n, q_shape)
    if method == "linear":
        result = fnp.add(fnp.multiply(low_value, low_weight), fnp.multiply(high_value, high_weight))
    elif method == "lower":
        result = low_value
    elif method == "higher":
        result = high_value
    elif method == "midpoint":
        result = fnp.multiply(fnp.add(low_value, high_value), 0.5)
    else:  # nearest: jax.numpy's rule (the lower value up to a fraction of one half)
        result = fnp.where(fnp.less_equal(high_weight, 0.5), low_value, high_value)
    result = fnp.where(fnp.isnan(s[..., -1]), np.nan, result)  # a NaN anywhere sorts last
    return fnp.reshape(result, np.shape(expected))


def _at_positions(s, positions, n, q_shape):
    """The sorted values ``s`` (..., n) at the positions (shaped q_shape + (1, ...), or a scalar) clipped to
    [0, n - 1], shaped q_shape + s.shape[:-1]: a static gather for constant positions, a take for traced ones."""
    count = math.prod(q_shape)
    if not isinstance(positions, Tracer):
        index = np.clip(np.asarray(positions), 0, n - 1).astype(np.int64).reshape(-1)
        picked = s[..., index]  # s.shape[:-1] + (count,)
        return fnp.reshape(fnp.moveaxis(picked, -1, 0), q_shape + s.shape[:-1])
    index = fnp.reshape(fnp.clip(positions, 0, n - 1).astype(np.int64), (count,) + (1,) * s.ndim)
    rows = fnp.broadcast_to(fnp.reshape(s, (1,) + s.shape), (count,) + s.shape)
    index = fnp.broadcast_to(index, (count,) + s.shape[:-1] + (1,))
    return fnp.reshape(take_along_axis(rows, index, -1), q_shape + s.shape[:-1])


def percentile(a, q, axis=None, out=None, overwrite_input=False, method="linear", keepdims=False, *,
               weights=None, interpolation=None):  # fmt: skip
    """``numpy.percentile``: ``quantile`` at q / 100."""
    if recorder_of((a, q)) is None:
        return np.percentile(a, q, axis=axis, out=out, overwrite_input=overwrite_input, method=method,
                             keepdims=keepdims, weights=weights)  # fmt: skip
    q100 = fnp.divide(q, 100.0) if isinstance(q, Tracer) else np.true_divide(q, 100)
    if not isinstance(q, Tracer) and not np.all((0 <= np.asarray(q)) & (np.asarray(q) <= 100)):
        raise ValueError("Percentiles must be in the range [0, 100]")
    return quantile(a, q100, axis, out, overwrite_input, method, keepdims, weights=weights,
                    interpolation=interpolation)  # fmt: skip


def median(a, axis=None, out=None, overwrite_input=False, keepdims=False):
    """``numpy.median``: the 0.5 quantile (the mean of the two middle values for an even count)."""
    if recorder_of((a,)) is None:
        return np.median(a, axis=axis, out=out, overwrite_input=overwrite_input, keepdims=keepdims)
    return quantile(a, 0.5, axis, out, keepdims=keepdims)


def searchsorted(a, v, side="left", sorter=None):
    """``numpy.searchsorted``: insertion points of v in the sorted 1-D a, integers read in the sweep."""
    rec = recorder_of((a, v, sorter))
    if rec is None:
        return np.searchsorted(a, v, side=side, sorter=sorter)
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right' (got {side!r})")
    a = rec.as_tracer(a)
    if a.ndim != 1:
        raise ValueError("object too deep for desired array" if a.ndim > 1 else "object of too small depth for "
                         "desired array")  # fmt: skip
    if sorter is not None:
        a = fnp.take(a, sorter)
    v = rec.as_tracer(v)
    value = np.searchsorted(a._value, v._value, side=side)
    flat = fnp.ravel(v) if v.ndim != 1 else v
    result = rec._emit(K.OP_SEARCHSORTED, (flat.size,), [a._sid, flat._sid], {"mode": 1 if side == "right" else 0},
                       kind="i", value=np.asarray(value).reshape(-1))  # fmt: skip
    return fnp.reshape(result, np.shape(value)) if np.shape(value) != (flat.size,) else result


def interp(x, xp, fp, left=None, right=None, period=None):
    """``numpy.interp``, as ``jax.numpy.interp`` computes it (its derivatives where the pieces meet)."""
    if recorder_of((x, xp, fp, left, right, period)) is None:
        return np.interp(x, xp, fp, left, right, period)
    if period is not None:
        raise UnsupportedFunctionError(
            "numpy.interp with period= is not supported on traced arrays; reduce x modulo the period and extend "
            "xp and fp by one period on each side, then call np.interp without it."
        )
    if np.ndim(concrete(xp)) != 1 or np.shape(concrete(xp)) != np.shape(concrete(fp)):
        raise ValueError("fp and xp are not of the same length." if np.ndim(concrete(xp)) == 1 else "object too deep")
    n = np.shape(concrete(xp))[0]
    if n == 0:
        raise ValueError("array of sample points is empty")
    i = fnp.clip(searchsorted(xp, x, side="right"), 1, max(n - 1, 1))
    xp_lo, fp_lo = _take(xp, i - 1), _take(fp, i - 1)
    df = fnp.subtract(_take(fp, i), fp_lo)
    dx = fnp.subtract(_take(xp, i), xp_lo)
    delta = fnp.subtract(x, xp_lo)
    tiny = fnp.less_equal(fnp.abs(dx), np.spacing(np.finfo(np.float64).eps))  # no NaN derivative where dx ~ 0
    f = fnp.where(tiny, fp_lo, fnp.add(fp_lo, fnp.multiply(fnp.divide(delta, fnp.where(tiny, 1.0, dx)), df)))
    f = fnp.where(fnp.less(x, fnp.getitem(xp, 0)), fnp.getitem(fp, 0) if left is None else left, f)
    f = fnp.where(fnp.greater(x, fnp.getitem(xp, -1)), fnp.getitem(fp, -1) if right is None else right, f)
    return f


def _take(a, index):
    return fnp.take(a, index) if isinstance(index, Tracer) else np.take(a, index)


FUNCTIONS = {
    np.sort: sort,
    np.argsort: argsort,
    np.argmax: argmax,
    np.argmin: argmin,
    np.partition: partition,
    np.argpartition: argpartition,
    np.quantile: quantile,
    np.percentile: percentile,
    np.median: median,
    np.searchsorted: searchsorted,
    np.interp: interp,
}
fnp.FUNCTIONS.update(FUNCTIONS)
