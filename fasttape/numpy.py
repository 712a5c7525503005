"""``fasttape.numpy``: the NumPy surface, lowered onto the primitive table.

Every function here accepts tracers and plain arrays alike: with no tracer
among its arguments it simply calls NumPy.  Plain ``import numpy as np`` code
reaches the same functions through ``__array_ufunc__`` / ``__array_function__``
(see :func:`dispatch_ufunc` and :func:`dispatch_function`).  The extras
``sigmoid``, ``softplus``, ``relu``, ``logsumexp``, ``softmax`` and
``log_softmax`` follow ``jax.nn``'s definitions and derivative conventions.
"""

from __future__ import annotations

import builtins
import math
import operator
import sys

import numpy as np

from . import dynamic, scalar_recording, updates
from . import kernels as K
from .errors import TracerMutationError, UnsupportedFunctionError
from .primitives import opcode
from .recorder import concrete, move, normalize_axes, recorder_of
from .tracer import Tracer


def _float(x):
    """Concrete value for arithmetic: booleans count as 0.0 / 1.0."""
    v = concrete(x)
    if isinstance(v, (np.ndarray, np.generic)) and v.dtype == bool:
        return v.astype(np.float64)
    return v


def _check_complex(args):
    for a in args:
        if not isinstance(a, Tracer) and np.iscomplexobj(a):
            raise TypeError(
                "fasttape differentiates real float64 programs; a complex operand was mixed into a traced "
                "computation. Split it into real and imaginary parts."
            )


# --------------------------------------------------------------------------
# elementwise primitives, generated from the table
# --------------------------------------------------------------------------
def _scalar_path(prim) -> bool:
    """Whether 0-d float operands of this elementwise primitive take the short path (scalar_recording)."""
    return prim.kind == "unary" and prim.arity == 1 and not prim.static


def _elementwise(prim):
    op = prim.opcode
    comparison = prim.kind == "comparison"
    scalar = _scalar_path(prim)
    module = "numpy" if prim.numpy else "scipy.special"
    ufunc = getattr(np, prim.numpy[0]) if prim.numpy else None

    def fn(*args):
        nonlocal ufunc
        if ufunc is None:
            from . import scipy_special  # SciPy's own function, never the one put in its place while tracing

            ufunc = scipy_special.INTERCEPTION.original(prim.scipy[0])
        rec = recorder_of(args)
        if rec is None:
            return ufunc(*args)
        if scalar and len(args) == 1:
            out = scalar_recording.unary(rec, op, ufunc, args[0])
            if out is not None:
                return out
        if len(args) != prim.arity:
            raise TypeError(f"{prim.call_name}() takes {prim.arity} arguments, got {len(args)}")
        for k in prim.static:
            if isinstance(args[k], Tracer):
                raise TypeError(
                    f"{module}.{prim.call_name}: operand {k} (an order) must be a constant of the trace, not the "
                    f"traced {args[k]!r}; pass a Python int, or mark the argument it comes from static "
                    "(static_argnums)."
                )
        _check_complex(args)
        vals = [concrete(a) for a in args] if comparison else [_float(a) for a in args]
        with np.errstate(all="ignore"):
            value = ufunc(*vals)
        return rec.elementwise(op, args, value)

    fn.__name__ = prim.call_name
    fn.__doc__ = f"Traced ``{module}.{prim.call_name}``."
    return fn


# name -> function, for the NumPy ufuncs and the scipy.special ufuncs of the declarations
SCIPY_UFUNC_NAMES = []
for _prim in K.PRIMITIVES:
    if _prim.elementwise:
        for _name in _prim.numpy + _prim.scipy:
            globals()[_name] = _elementwise(_prim)
        SCIPY_UFUNC_NAMES += _prim.scipy

_power_primitive = power  # noqa: F821  (generated above)


def power(x, y):
    """``x ** y``; a constant exponent of 2 records ``square`` (as JAX's integer_pow)."""
    if isinstance(x, Tracer) and not isinstance(y, Tracer) and np.ndim(y) == 0 and y == 2:
        return square(x)  # noqa: F821
    return _power_primitive(x, y)


float_power = power


def positive(x):
    return x


def deg2rad(x):
    return multiply(x, math.pi / 180.0)  # noqa: F821


def rad2deg(x):
    return multiply(x, 180.0 / math.pi)  # noqa: F821


radians = deg2rad
degrees = rad2deg


def isnan(x):
    return not_equal(x, x)  # noqa: F821


def isinf(x):
    return equal(abs(x), np.inf)  # noqa: F821


def isfinite(x):
    return less(abs(x), np.inf)  # noqa: F821


def _bool(x):
    return not_equal(x, 0.0) if not (isinstance(x, Tracer) and x.dtype == bool) else x  # noqa: F821


def logical_not(x):
    return equal(x, 0.0)  # noqa: F821


def logical_and(x, y):
    rec = recorder_of((x, y))
    if rec is None:
        return np.logical_and(x, y)
    x, y = _bool(x), _bool(y)
    return rec.elementwise(K.OP_MULTIPLY, (x, y), np.logical_and(concrete(x), concrete(y)))


def logical_or(x, y):
    rec = recorder_of((x, y))
    if rec is None:
        return np.logical_or(x, y)
    x, y = _bool(x), _bool(y)
    return rec.elementwise(K.OP_MAXIMUM, (x, y), np.logical_or(concrete(x), concrete(y)))


def logical_xor(x, y):
    return not_equal(_bool(x), _bool(y))  # noqa: F821


def where(condition, x=None, y=None):
    """Branch-free selection; the condition is not differentiated."""
    if x is None or y is None:
        if isinstance(condition, Tracer):
            raise UnsupportedFunctionError(
                "numpy.where(condition) with one argument returns indices whose number depends on the traced "
                "values. Use np.where(condition, x, y) to select values instead."
            )
        return np.where(condition)
    rec = recorder_of((condition, x, y))
    if rec is None:
        return np.where(condition, x, y)
    _check_complex((x, y))
    value = np.where(concrete(condition), _float(x), _float(y))
    if value.dtype != bool:
        value = value.astype(np.float64)
    return rec.elementwise(K.OP_WHERE, (condition, x, y), value)


def clip(a, a_min=None, a_max=None, out=None, *, min=None, max=None, **kwargs):
    """``minimum(maximum(a, a_min), a_max)``: ties at the bounds split the adjoint, as JAX."""
    _no_out("clip", out, kwargs)
    lo = a_min if a_min is not None else min
    hi = a_max if a_max is not None else max
    if recorder_of((a, lo, hi)) is None:
        return np.clip(a, lo, hi)
    if lo is not None:
        a = maximum(a, lo)  # noqa: F821
    if hi is not None:
        a = minimum(a, hi)  # noqa: F821
    return a


# --------------------------------------------------------------------------
# reductions
# --------------------------------------------------------------------------
def _no_out(name, out, kwargs):
    if out is not None:
        raise TracerMutationError(
            f"numpy.{name}(..., out=...) writes in place, which a tape cannot record; use the return value."
        )
    for key in ("where", "initial"):
        if key in kwargs:
            raise UnsupportedFunctionError(
                f"numpy.{name}(..., {key}=...) is not supported on traced arrays; "
                "mask with np.where(...) before the reduction instead."
            )


_IDENTITIES = {"sum": 0.0, "prod": 1.0}
_select = where


def _reduction(op, np_fn, name):
    def fn(a, axis=None, dtype=None, out=None, keepdims=False, initial=np._NoValue, where=True, **kwargs):
        rec = recorder_of((a, where, initial))
        if rec is None:
            return np_fn(a, axis=axis, out=out, keepdims=keepdims, initial=initial, where=where, **kwargs)
        _no_out(name, out, kwargs)
        if where is True and initial is np._NoValue:  # the common case: one reduction row
            return rec.reduce(op, rec.as_tracer(a), axis, keepdims, np_fn(_float(a), axis=axis, keepdims=keepdims))
        # NumPy's own errors: a mask that does not broadcast, max or min with a mask and no initial value
        np_fn(_float(a), axis=axis, keepdims=keepdims, initial=concrete(initial), where=concrete(where))
        if where is not True:  # masked-out elements take the identity (max and min: the initial value)
            a = _select(where, a, _IDENTITIES.get(name, initial))
        if recorder_of((a,)) is None:  # a constant reduced, a traced initial value combined below
            reduced = np_fn(_float(a), axis=axis, keepdims=keepdims)
        else:
            reduced = rec.reduce(op, rec.as_tracer(a), axis, keepdims, np_fn(_float(a), axis=axis, keepdims=keepdims))
        if initial is np._NoValue:
            return reduced
        combine = {"sum": add, "prod": multiply, "max": maximum, "min": minimum}[name]  # noqa: F821
        return combine(reduced, initial)

    fn.__name__ = name
    fn.__doc__ = f"Traced ``numpy.{name}`` (``axis`` int or tuple, ``keepdims``, ``initial``, ``where``)."
    return fn


sum = _reduction(K.OP_SUM, np.sum, "sum")
prod = _reduction(K.OP_PROD, np.prod, "prod")
max = _reduction(K.OP_MAX, np.max, "max")
min = _reduction(K.OP_MIN, np.min, "min")
amax = max
amin = min


def _reduced_count(shape, axis):
    axes = normalize_axes(axis, len(shape))
    return math.prod(shape[a] for a in axes)


def _count(a, axis, keepdims, mask):
    """How many elements each reduction takes: a number, or a (traced) sum of the mask."""
    if mask is True:
        return _reduced_count(np.shape(concrete(a)), axis)
    return sum(_select(mask, np.ones(np.shape(concrete(a))), 0.0), axis=axis, keepdims=keepdims)


def mean(a, axis=None, dtype=None, out=None, keepdims=False, *, where=True, **kwargs):
    if recorder_of((a, where)) is None:
        return np.mean(a, axis=axis, out=out, keepdims=keepdims, where=where, **kwargs)
    _no_out("mean", out, kwargs)
    n = _count(a, axis, keepdims, where)
    total = sum(a, axis=axis, keepdims=keepdims, where=where)
    if where is True:
        return multiply(total, 1.0 / n if n else math.nan)  # noqa: F821
    return divide(total, n)  # noqa: F821


def var(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=True, **kwargs):
    if recorder_of((a, where)) is None:
        return np.var(a, axis=axis, out=out, ddof=ddof, keepdims=keepdims, where=where, **kwargs)
    _no_out("var", out, kwargs)
    n = _count(a, axis, keepdims, where)
    centred = subtract(a, mean(a, axis=axis, keepdims=True, where=where))  # noqa: F821
    squares = sum(square(centred), axis=axis, keepdims=keepdims, where=where)  # noqa: F821
    if where is True:
        return multiply(squares, 1.0 / (n - ddof) if n - ddof > 0 else math.inf)  # noqa: F821
    return divide(squares, maximum(subtract(n, ddof), 0.0))  # noqa: F821


def std(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=True, **kwargs):
    if recorder_of((a, where)) is None:
        return np.std(a, axis=axis, out=out, ddof=ddof, keepdims=keepdims, where=where, **kwargs)
    return sqrt(var(a, axis=axis, out=out, ddof=ddof, keepdims=keepdims, where=where, **kwargs))  # noqa: F821


def _logsumexp_value(v, axis, keepdims):
    m = np.max(v, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    s = np.log(np.sum(np.exp(v - m), axis=axis, keepdims=True)) + m
    return s if keepdims else np.squeeze(s, axis=axis) if axis is not None else s.reshape(())


def logsumexp(a, axis=None, keepdims=False, b=None, return_sign=False):
    """``log(sum(exp(a)))``, stable; its gradient is the softmax."""
    if b is not None or return_sign:
        raise UnsupportedFunctionError("logsumexp(..., b=..., return_sign=True) is not supported; scale a instead.")
    rec = recorder_of((a,))
    axes = normalize_axes(axis, np.ndim(concrete(a)))
    value = _logsumexp_value(np.asarray(_float(a), dtype=np.float64), axes, keepdims)
    if rec is None:
        return value
    return rec.reduce(K.OP_LOGSUMEXP, rec.as_tracer(a), axes, keepdims, value)


def cumsum(a, axis=None, dtype=None, out=None):
    rec = recorder_of((a,))
    if rec is None:
        return np.cumsum(a, axis=axis, out=out)
    _no_out("cumsum", out, {})
    if axis is None:
        a = ravel(a)
        axis = 0
    value = np.cumsum(_float(a), axis=axis)
    return rec.reduce(K.OP_CUMSUM, rec.as_tracer(a), axis, False, value)


def any(a, axis=None, out=None, keepdims=False, **kwargs):
    rec = recorder_of((a,))
    if rec is None:
        return np.any(a, axis=axis, out=out, keepdims=keepdims, **kwargs)
    _no_out("any", out, kwargs)
    nz = _bool(a)
    value = np.any(concrete(nz), axis=axis, keepdims=keepdims)
    return rec.reduce(K.OP_MAX, nz, axis, keepdims, value, kind="b")


def all(a, axis=None, out=None, keepdims=False, **kwargs):
    rec = recorder_of((a,))
    if rec is None:
        return np.all(a, axis=axis, out=out, keepdims=keepdims, **kwargs)
    _no_out("all", out, kwargs)
    nz = _bool(a)
    value = np.all(concrete(nz), axis=axis, keepdims=keepdims)
    return rec.reduce(K.OP_MIN, nz, axis, keepdims, value, kind="b")


# --------------------------------------------------------------------------
# data movement: views where contiguous, otherwise one gather
# --------------------------------------------------------------------------
def reshape(a, shape=None, order="C", *, newshape=None, copy=None):
    rec = recorder_of((a,))
    shape = shape if shape is not None else newshape
    if rec is None:
        return np.reshape(a, shape, order=order)
    if order != "C":
        return move(lambda v: np.reshape(v, shape, order=order), [a])
    return updates.note_view(rec.reshape(rec.as_tracer(a), shape), a)


def ravel(a, order="C"):
    return reshape(a, (-1,), order=order)


def expand_dims(a, axis):
    if recorder_of((a,)) is None:
        return np.expand_dims(a, axis)
    return reshape(a, np.expand_dims(concrete(a), axis).shape)


def squeeze(a, axis=None):
    if recorder_of((a,)) is None:
        return np.squeeze(a, axis=axis)
    return reshape(a, np.squeeze(concrete(a), axis=axis).shape)


def atleast_1d(*arys):
    res = [reshape(a, np.atleast_1d(concrete(a)).shape) if isinstance(a, Tracer) else np.atleast_1d(a) for a in arys]
    return res[0] if len(res) == 1 else res


def atleast_2d(*arys):
    res = [reshape(a, np.atleast_2d(concrete(a)).shape) if isinstance(a, Tracer) else np.atleast_2d(a) for a in arys]
    return res[0] if len(res) == 1 else res


def broadcast_to(array, shape, subok=False):
    rec = recorder_of((array,))
    if rec is None:
        return np.broadcast_to(array, shape)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    np.broadcast_to(concrete(array), shape)  # NumPy's own error for impossible shapes
    return rec.broadcast(array, shape)


def broadcast_arrays(*args):
    shape = np.broadcast_shapes(*[np.shape(concrete(a)) for a in args])
    return [broadcast_to(a, shape) for a in args]


_VIEW_MOVERS = {"transpose", "swapaxes", "moveaxis", "flip", "fliplr", "flipud", "diagonal", "rot90"}


def _mover(np_fn, name):
    def fn(a, *args, **kwargs):
        if recorder_of((a,)) is None:
            return np_fn(a, *args, **kwargs)
        result = move(np_fn, [a], *args, **kwargs)
        return updates.note_view(result, a) if name in _VIEW_MOVERS else result  # NumPy gives a view

    fn.__name__ = name
    fn.__doc__ = f"Traced ``numpy.{name}`` (one gather, or a view when contiguous)."
    return fn


transpose = _mover(np.transpose, "transpose")
swapaxes = _mover(np.swapaxes, "swapaxes")
moveaxis = _mover(np.moveaxis, "moveaxis")
flip = _mover(np.flip, "flip")
fliplr = _mover(np.fliplr, "fliplr")
flipud = _mover(np.flipud, "flipud")
tile = _mover(np.tile, "tile")
repeat = _mover(np.repeat, "repeat")
diagonal = _mover(np.diagonal, "diagonal")
roll = _mover(np.roll, "roll")
_take_static = _mover(np.take, "take")


def take(a, indices, axis=None, out=None, mode=None):
    """Traced ``numpy.take``: one gather for constant indices, one ``take`` read in the sweep for traced ones."""
    if isinstance(indices, Tracer):
        return dynamic.take(a, indices, axis, out, mode)
    return _take_static(a, indices, axis=axis, out=out, mode=mode)


def take_along_axis(arr, indices, axis=-1):
    """Traced ``numpy.take_along_axis``: one gather for constant indices, one ``take`` for traced ones."""
    if recorder_of((arr, indices)) is None:
        return np.take_along_axis(arr, indices, axis)
    if isinstance(indices, Tracer):
        return dynamic.take_along_axis(arr, indices, axis)
    return move(lambda v: np.take_along_axis(v, indices, axis), [arr])


rot90 = _mover(np.rot90, "rot90")


def _triangle(name, m, k, lower):
    if recorder_of((m,)) is None:
        return getattr(np, name)(m, k)
    shape = np.shape(concrete(m))
    rows, cols = shape[-2:] if len(shape) >= 2 else (shape[-1], shape[-1])  # a vector is repeated as rows
    mask = np.tri(rows, cols, operator.index(k), dtype=bool)
    return where(mask if lower else ~np.tri(rows, cols, operator.index(k) - 1, dtype=bool), m, 0.0)


def tril(m, k=0):
    """``numpy.tril``: the elements on and below the k-th diagonal of the last two axes, zeros above (a
    selection by a constant mask)."""
    return _triangle("tril", m, k, True)


def triu(m, k=0):
    """``numpy.triu``: the elements on and above the k-th diagonal, zeros below."""
    return _triangle("triu", m, k, False)


def diag(v, k=0):
    if recorder_of((v,)) is None:
        return np.diag(v, k)
    if np.ndim(concrete(v)) == 2:
        return move(np.diag, [v], k)
    # building a matrix from a vector: off-diagonal zeros come from a constant
    vec = ravel(v)
    n = vec.shape[0] + builtins.abs(k)
    zero = np.zeros(1)
    return move(lambda x, z: _diag_from(x, z, n, k), [vec, zero])


def _diag_from(x, z, n, k):
    out = np.full((n, n), z[0], dtype=x.dtype)
    i = np.arange(x.shape[0])
    out[i + builtins.max(-k, 0), i + builtins.max(k, 0)] = x
    return out


def trace(a, offset=0, axis1=0, axis2=1, dtype=None, out=None):
    if recorder_of((a,)) is None:
        return np.trace(a, offset, axis1, axis2, dtype, out)
    _no_out("trace", out, {})
    return sum(diagonal(a, offset, axis1, axis2), axis=-1)


def _sequence_mover(np_fn, name):
    def fn(arrays, *args, **kwargs):
        arrays = list(arrays)
        if recorder_of(arrays) is None:
            return np_fn(arrays, *args, **kwargs)
        if kwargs.get("out") is not None:
            _no_out(name, kwargs["out"], {})
        kwargs.pop("out", None)
        kwargs.pop("dtype", None)
        kwargs.pop("casting", None)
        return move(np_fn, arrays, *args, _sequence=True, **kwargs)

    fn.__name__ = name
    fn.__doc__ = f"Traced ``numpy.{name}`` (one gather over all operands)."
    return fn


concatenate = _sequence_mover(np.concatenate, "concatenate")
stack = _sequence_mover(np.stack, "stack")
hstack = _sequence_mover(np.hstack, "hstack")
vstack = _sequence_mover(np.vstack, "vstack")
column_stack = _sequence_mover(np.column_stack, "column_stack")


def getitem(x, key):
    """``x[key]``: basic slicing, integer arrays and constant boolean masks (one gather, or a view), and
    traced integer arrays (read in the sweep: ``fasttape.dynamic``)."""
    keys = key if isinstance(key, tuple) else (key,)
    if dynamic.traced_key(keys):
        return dynamic.getitem(x, key)
    result = move(lambda v: v[key], [x])
    basic = builtins.all(k is None or k is Ellipsis or isinstance(k, (int, np.integer, slice)) for k in keys)
    return updates.note_view(result, x) if basic and result.ndim > 0 else result  # NumPy's basic indexing: a view


# --------------------------------------------------------------------------
# linear algebra
# --------------------------------------------------------------------------
def matmul(a, b, out=None, **kwargs):
    rec = recorder_of((a, b))
    if rec is None:
        return np.matmul(a, b, out=out, **kwargs)
    _no_out("matmul", out, kwargs)
    _check_complex((a, b))
    value = np.matmul(_float(a), _float(b))  # NumPy's own shape errors
    return rec.matmul(a, b, value)


def dot(a, b, out=None):
    rec = recorder_of((a, b))
    if rec is None:
        return np.dot(a, b, out=out)
    _no_out("dot", out, {})
    na, nb = np.ndim(concrete(a)), np.ndim(concrete(b))
    if na == 0 or nb == 0:
        return multiply(a, b)  # noqa: F821
    if nb <= 2:
        return matmul(a, b)
    np.dot(_float(a), _float(b))  # NumPy's own shape errors
    bt = moveaxis(b, -2, 0)  # dot contracts a's last axis with b's second-to-last
    rest = bt.shape[1:]
    prod2 = matmul(a, reshape(bt, (bt.shape[0], -1)))
    return reshape(prod2, np.shape(concrete(a))[:-1] + tuple(rest))


def vdot(a, b):
    if recorder_of((a, b)) is None:
        return np.vdot(a, b)
    return matmul(ravel(a), ravel(b))


def inner(a, b):
    if recorder_of((a, b)) is None:
        return np.inner(a, b)
    na, nb = np.ndim(concrete(a)), np.ndim(concrete(b))
    if na == 0 or nb == 0:
        return multiply(a, b)  # noqa: F821
    np.inner(_float(a), _float(b))
    k = np.shape(concrete(b))[-1]
    b2 = transpose(reshape(b, (-1, k)))
    return reshape(matmul(a, b2), np.shape(concrete(a))[:-1] + np.shape(concrete(b))[:-1])


def outer(a, b, out=None):
    if recorder_of((a, b)) is None:
        return np.outer(a, b, out=out)
    _no_out("outer", out, {})
    return matmul(reshape(a, (-1, 1)), reshape(b, (1, -1)))


# --------------------------------------------------------------------------
# jax.nn-style extras
# --------------------------------------------------------------------------
def sigmoid(x):
    """Logistic function ``exp(-softplus(-x))``: never overflows, accurate in both tails."""
    return exp(negative(logaddexp(0.0, negative(x))))  # noqa: F821


def softplus(x):
    """``log(1 + exp(x))`` = ``logaddexp(x, 0)``, as ``jax.nn.softplus``."""
    return logaddexp(x, 0.0)  # noqa: F821


def relu(x):
    """``max(x, 0)`` with derivative 0 at 0 and at NaN, as ``jax.nn.relu``; NaN values propagate."""
    otherwise = where(isnan(x), np.nan, 0.0)  # constants only: no derivative flows through here
    return where(greater(x, 0.0), x, otherwise)  # noqa: F821


def softmax(x, axis=-1):
    return exp(subtract(x, logsumexp(x, axis=axis, keepdims=True)))  # noqa: F821


def log_softmax(x, axis=-1):
    return subtract(x, logsumexp(x, axis=axis, keepdims=True))  # noqa: F821


# --------------------------------------------------------------------------
# dispatch from NumPy's protocols
# --------------------------------------------------------------------------
_UFUNC_NAMES = [n for p in K.PRIMITIVES if p.elementwise for n in p.numpy]
_UFUNC_NAMES += ["positive", "deg2rad", "rad2deg", "radians", "degrees", "isnan", "isinf", "isfinite"]
_UFUNC_NAMES += ["logical_not", "logical_and", "logical_or", "logical_xor", "matmul"]
UFUNCS = {getattr(np, n): globals()[n] for n in _UFUNC_NAMES}
UFUNCS[np.power] = power
UFUNCS[np.float_power] = power

# the ufuncs a 0-d float tracer records by the short path (fasttape.scalar_recording): unary, by opcode
SCALAR_UNARY = {getattr(np, n): p.opcode for p in K.PRIMITIVES if p.elementwise and _scalar_path(p) for n in p.numpy}
SCALAR_ARITHMETIC = {  # and the four arithmetic ufuncs, with the Python operator that computes the value
    np.add: (K.OP_ADD, operator.add),
    np.subtract: (K.OP_SUBTRACT, operator.sub),
    np.multiply: (K.OP_MULTIPLY, operator.mul),
    np.divide: (opcode("divide"), operator.truediv),
}

_REDUCE_METHODS = {np.add: sum, np.multiply: prod, np.maximum: max, np.minimum: min}

_FUNCTION_NAMES = [
    "sum", "prod", "max", "min", "amax", "amin", "mean", "var", "std", "cumsum", "any", "all",
    "reshape", "ravel", "expand_dims", "squeeze", "atleast_1d", "atleast_2d", "broadcast_to", "broadcast_arrays",
    "transpose", "swapaxes", "moveaxis", "flip", "fliplr", "flipud", "tile", "repeat", "diagonal", "roll",
    "take", "take_along_axis", "rot90", "diag", "trace", "tril", "triu", "concatenate", "stack", "hstack", "vstack",
    "column_stack", "dot", "vdot", "inner", "outer", "where", "clip", "round",
]  # fmt: skip
FUNCTIONS = {getattr(np, n): globals()[n] for n in _FUNCTION_NAMES}
FUNCTIONS[np.shape] = lambda a: a.shape
FUNCTIONS[np.ndim] = lambda a: a.ndim
FUNCTIONS[np.size] = lambda a, axis=None: a.size if axis is None else a.shape[axis]
FUNCTIONS[np.result_type] = lambda *args: np.result_type(*[concrete(a) for a in args])


def dispatch_ufunc(ufunc, method, inputs, kwargs):
    out = kwargs.pop("out", None)
    if out is not None and builtins.any(o is not None for o in (out if isinstance(out, tuple) else (out,))):
        raise TracerMutationError(
            f"numpy.{ufunc.__name__}(..., out=...) writes in place, which a tape cannot record; "
            "use the returned array instead."
        )
    module = _ufunc_module(ufunc)
    name = f"{module}.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
    if method == "__call__":
        fn = UFUNCS.get(ufunc) if module == "numpy" else _SCIPY_UFUNCS.get(ufunc.__name__)
        if fn is not None:
            kwargs.pop("dtype", None)
            kwargs.pop("casting", None)
            if kwargs:
                raise UnsupportedFunctionError(
                    f"{name} with keyword arguments {sorted(kwargs)} is not supported on traced arrays; "
                    "call it without them and select the elements you want with np.where(condition, result, other)."
                )
            return fn(*inputs)
    elif method == "reduce" and ufunc in _REDUCE_METHODS:
        axis = kwargs.pop("axis", 0)
        return _REDUCE_METHODS[ufunc](inputs[0], axis=axis, **kwargs)
    elif method == "accumulate" and ufunc is np.add:
        return cumsum(inputs[0], axis=kwargs.get("axis", 0))
    elif method == "accumulate" and ufunc in (np.multiply, np.maximum, np.minimum) and len(inputs) == 1:
        from . import arrays

        return arrays.accumulate(ufunc, inputs[0], kwargs.get("axis", 0))
    elif method == "at" and len(inputs) == 3 and updates.ufunc_at(ufunc, *inputs) is not NotImplemented:
        return None
    elif method == "at":
        raise TracerMutationError(
            f"{name} is not supported on traced arrays (add, subtract, multiply, minimum and maximum are); "
            "build the new array instead."
        )
    raise UnsupportedFunctionError(unsupported_message(name))


_SCIPY_UFUNCS = {n: globals()[n] for n in SCIPY_UFUNC_NAMES}


def _ufunc_module(ufunc) -> str:
    """Where a ufunc lives: ``numpy`` or ``scipy.special`` (which is imported if a user passed one)."""
    name = ufunc.__name__
    if getattr(np, name, None) is ufunc:
        return "numpy"
    special = sys.modules.get("scipy.special")
    if special is not None and getattr(special, name, None) is ufunc:
        return "scipy.special"
    return (getattr(ufunc, "__module__", None) or "numpy").split("._")[0]


def dispatch_function(func, args, kwargs):
    fn = FUNCTIONS.get(func)
    if fn is None:
        module = getattr(func, "__module__", None) or "numpy"
        module = ".".join(part for part in module.split(".") if not part.startswith("_"))  # numpy._core -> numpy
        raise UnsupportedFunctionError(unsupported_message(f"{module}.{func.__name__}"))
    return fn(*args, **kwargs)


def unsupported_message(name, why="no derivative rule is recorded for it"):
    """The error text for a function fasttape cannot trace, with the fasttape function to call where one exists."""
    short = name.rsplit(".", 1)[-1]
    module = name.rsplit(".", 1)[0]
    from . import scipy_linalg, scipy_special

    intercepted = {"scipy.linalg": scipy_linalg.FUNCTIONS, "scipy.special": scipy_special.FUNCTIONS}
    if short in intercepted.get(module, ()):
        hint = (f"fasttape records {name} when it is looked up on the module during the trace "
                f"({name}(...)); a name imported before the trace (from {module} import {short}) "
                f"is SciPy's own: call fasttape.{module.replace('.', '_')}.{short} there.")  # fmt: skip
    elif short in __all__ and not name.startswith("numpy."):
        hint = f"Call fasttape.numpy.{short} instead, which records it on the tape."
    else:
        hint = ("Write it with the supported functions listed in fasttape.numpy.__all__, or compute it outside the "
                "traced function if it does not depend on the differentiated inputs.")  # fmt: skip
    return f"{name} is not supported on arrays traced by fasttape ({why}). {hint}"


def _like(np_fn, name):
    def fn(a, *args, dtype=None, **kwargs):
        """Traced ``numpy.{name}``: a constant (or, for full_like, the traced fill value) of a's shape, traced so
        that item assignment can write traced values into it."""
        rec = recorder_of((a,) + args)
        if rec is None or (dtype is not None and np.dtype(dtype).kind != "f"):
            return np_fn(concrete(a), *[concrete(x) for x in args], dtype=dtype, **kwargs)
        shape = kwargs.get("shape") or np.shape(concrete(a))
        if name == "full_like" and recorder_of(args) is not None:
            return broadcast_to(args[0], shape).copy()
        return rec.as_tracer(np_fn(np.zeros(shape), *args, dtype=np.float64))

    fn.__name__ = name
    return fn


zeros_like = _like(np.zeros_like, "zeros_like")
ones_like = _like(np.ones_like, "ones_like")
empty_like = _like(np.zeros_like, "empty_like")  # zeros: a traced array never holds garbage
full_like = _like(np.full_like, "full_like")


def copy(a, order="K", subok=False):
    """``numpy.copy``: another array of the same values (a later assignment into either leaves the other)."""
    return a.copy() if isinstance(a, Tracer) else np.copy(a, order=order, subok=subok)


def round(a, decimals=0, out=None):  # noqa: A001
    """Round half to even; derivative zero, as JAX."""
    if recorder_of((a,)) is None:
        return np.round(a, decimals=decimals, out=out)
    _no_out("round", out, {})
    if decimals:
        raise UnsupportedFunctionError(
            f"numpy.round with decimals={decimals} is not supported on traced arrays; "
            f"write np.round(x * 10**{decimals}) / 10**{decimals} instead."
        )
    return rint(a)  # noqa: F821


around = round
FUNCTIONS[np.round] = round
FUNCTIONS.update({np.zeros_like: zeros_like, np.ones_like: ones_like, np.empty_like: empty_like})
FUNCTIONS.update({np.full_like: full_like, np.copy: copy})


def __getattr__(name):
    """The functions other modules register (``fasttape.arrays``, ``fasttape.sorting``, ``fasttape.linalg``,
    ...) by their NumPy name: ``fasttape.numpy.sort`` is what ``np.sort`` runs on a traced array,
    ``fasttape.numpy.norm`` what ``np.linalg.norm`` runs."""
    func = getattr(np, name, None) or getattr(np.linalg, name, None)
    if func is not None and func in FUNCTIONS:
        return FUNCTIONS[func]
    raise AttributeError(f"module 'fasttape.numpy' has no attribute {name!r}")


__all__ = sorted(
    set(_UFUNC_NAMES)
    | set(_FUNCTION_NAMES)
    | set(SCIPY_UFUNC_NAMES)
    | {"power", "float_power", "norm", "getitem", "logsumexp", "sigmoid", "softplus", "relu", "softmax"}
    | {"log_softmax", "around", "zeros_like", "ones_like", "empty_like", "full_like", "copy"}
)
