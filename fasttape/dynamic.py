"""Indexing with indices computed in the sweep: traced integer arrays as keys, ``np.take``,
``np.take_along_axis``, and updates at traced indices.

A key that holds a traced integer array (an ``argmin``, an ``argsort``, integer labels passed as an
argument) is recorded with the dynamic indexing family (``fasttape.families.indexing``), so a new
index array never re-traces:

* one traced key among full slices (``x[k]``, ``x[:, k]``, ``np.take``): one ``take`` along its axis;
* ``x[np.arange(n), k]`` (a row per index, the usual way to pick a label's score or a nearest centre):
  one ``take`` along the next axis, one index per row;
* any other key: each traced key is checked against its axis (a ``take`` from ``arange(n)``: NumPy's
  IndexError, negative indices counted from the end), the flat positions are formed from them and from
  the static part of the key by integer arithmetic, and one ``take`` reads them.

Assignment at traced indices (``x[k] = v``, ``np.add.at``, ``x.at[k].add``) forms the same flat positions
and records one ``scatter``.  A traced boolean mask selects a number of elements that depends on the
inputs: reading ``x[mask]`` is refused (as JAX), writing ``x[mask] = v`` with one value is a ``where``.
"""

from __future__ import annotations

import math
import operator

import numpy as np

from .errors import ConcretizationError
from .recorder import concrete, recorder_of
from .tracer import Tracer

MASK_FIX = (
    "a traced boolean mask selects a number of elements that depends on the inputs, which a tape cannot record "
    "(JAX refuses it too). Select branch-free instead: np.where(mask, x, 0.0), or np.sum(np.where(mask, x, 0.0)) "
    "for a masked sum (np.sum(x, where=mask) works as well)."
)


def traced_key(key) -> bool:
    """Whether an indexing key holds a traced array."""
    return any(isinstance(k, Tracer) for k in (key if isinstance(key, tuple) else (key,)))


def _index_tracer(k, what="arrays used as indices"):
    """A traced key as an integer index, or NumPy's IndexError for a float one."""
    kind = k._rec.slots[k._sid].kind
    if kind == "b":
        raise ConcretizationError(MASK_FIX)
    if kind != "i":
        raise IndexError(
            f"{what} must be of integer (or boolean) type; {k!r} holds floats. Convert it with .astype(int) "
            "(which truncates, as NumPy) or np.round(...).astype(int)."
        )
    return k


def _expanded(x, key) -> list:
    """The key as a list with one entry per axis consumed (Ellipsis expanded into full slices), and None
    entries kept; NumPy's IndexError for too many indices."""
    keys = list(key) if isinstance(key, tuple) else [key]
    consumed = sum(_consumed(k) for k in keys)
    if consumed > x.ndim:
        raise IndexError(f"too many indices for array: array is {x.ndim}-dimensional, but {consumed} were indexed")
    ellipses = [i for i, k in enumerate(keys) if k is Ellipsis]
    if len(ellipses) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if ellipses:
        keys[ellipses[0] : ellipses[0] + 1] = [slice(None)] * (x.ndim - consumed)
    else:
        keys += [slice(None)] * (x.ndim - consumed)
    return keys


def _axes(keys) -> list:
    """The axis of x each entry of an expanded key starts at (None entries consume none)."""
    axes, axis = [], 0
    for k in keys:
        axes.append(axis)
        axis += _consumed(k)
    return axes


def _consumed(k) -> int:
    """How many axes of x an entry of a key indexes: a boolean mask its own rank, None and Ellipsis none."""
    if k is None or k is Ellipsis:
        return 0
    value = concrete(k)
    return np.ndim(value) if np.asarray(value).dtype == bool else 1


def _full(k) -> bool:
    return isinstance(k, slice) and k == slice(None)


def getitem(x, key):
    """``x[key]`` where the key holds a traced array."""
    from . import numpy as fnp

    rec = recorder_of((x, key if isinstance(key, tuple) else (key,)))
    x = rec.as_tracer(x)
    keys = _expanded(x, key)
    for k in keys:
        if isinstance(k, Tracer):
            _index_tracer(k)
    value = x._value[tuple(concrete(k) for k in keys)]  # NumPy's shape, and its errors at the traced values
    traced = [i for i, k in enumerate(keys) if isinstance(k, Tracer)]
    axes = _axes(keys)
    if len(traced) == 1 and all(_full(k) for i, k in enumerate(keys) if i != traced[0]):
        t = traced[0]  # x[k], x[:, k]: np.take along one axis
        return rec.take(x, keys[t], axes[t], False, value)
    if len(traced) == 1 and traced[0] > 0 and not any(k is None for k in keys):
        t = traced[0]
        rows, k = keys[t - 1], keys[t]
        n = x.shape[axes[t - 1]]
        if (isinstance(rows, np.ndarray) and rows.shape == (n,) and k.shape == (n,)
                and np.array_equal(rows, np.arange(n))
                and all(_full(e) for i, e in enumerate(keys) if i not in (t - 1, t))):  # fmt: skip
            # x[..., np.arange(n), k, ...]: one index per row, np.take_along_axis
            axis = axes[t]
            pre, post = math.prod(x.shape[:axis]), math.prod(x.shape[axis + 1 :])
            index = fnp.broadcast_to(fnp.reshape(k, (1, n, 1)), (pre // n, n, post)) if pre != n or post != 1 else k
            return rec.take(x, index, axis, True, value)
    positions = flat_positions(x, keys)
    return rec.take(fnp.ravel(x), positions, 0, False, value)


def flat_positions(x, keys) -> Tracer:
    """The flat positions in x of the elements ``x[keys]`` selects (an integer tracer of that shape): the
    static part of the key by NumPy on positions, each traced key checked against its axis and scaled by
    its stride."""
    from . import numpy as fnp

    rec = x._rec
    axes = _axes(keys)
    traced = [i for i, k in enumerate(keys) if isinstance(k, Tracer)]
    zeroed = [np.zeros(k.shape, dtype=np.int64) if i in traced else concrete(k) for i, k in enumerate(keys)]
    base = np.arange(x.size, dtype=np.int64).reshape(x.shape)[tuple(zeroed)]  # the static positions
    strides = [math.prod(x.shape[a + 1 :]) for a in range(x.ndim)]
    total = rec.as_tracer(base) if base.any() else None
    for i in traced:
        k, axis = keys[i], axes[i]
        extent = x.shape[axis]
        checked = rec.take(np.arange(extent), k, 0, False, np.take(np.arange(extent), k._value))
        # where each element of the result reads this key: NumPy's indexing on a stand-in whose axis counts it
        stand_in_shape = x.shape[:axis] + (max(k.size, 1),) + x.shape[axis + 1 :]
        counter = np.arange(max(k.size, 1)).reshape((1,) * axis + (-1,) + (1,) * (x.ndim - axis - 1))
        stand_in = np.broadcast_to(counter, stand_in_shape)
        probe = list(zeroed)
        probe[i] = np.arange(k.size, dtype=np.int64).reshape(k.shape)
        reads = stand_in[tuple(probe)]
        spread = fnp.getitem(fnp.ravel(checked), reads)
        term = fnp.multiply(spread, strides[axis]) if strides[axis] != 1 else spread
        total = term if total is None else fnp.add(total, term)
    return rec.as_tracer(base) if total is None else total


def take(a, indices, axis=None, out=None, mode=None):
    """``np.take`` with traced indices."""
    from . import numpy as fnp

    if out is not None or mode not in (None, "raise"):
        raise NotImplementedError(
            "numpy.take with out= or mode='wrap'/'clip' is not supported with traced indices; wrap or clip the "
            "indices first (np.clip(k, 0, n - 1))."
        )
    rec = recorder_of((a, indices))
    a = rec.as_tracer(a)
    if axis is None:
        a, axis = fnp.ravel(a), 0
    axis = operator.index(axis)
    if not -a.ndim <= axis < a.ndim:
        raise np.exceptions.AxisError(axis, a.ndim)
    axis %= a.ndim
    k = _index_tracer(indices, "indices of numpy.take")
    return rec.take(a, k, axis, False, np.take(a._value, k._value, axis=axis))


def take_along_axis(arr, indices, axis=-1):
    """``np.take_along_axis`` with traced indices (or a traced array and static ones)."""
    from . import numpy as fnp

    rec = recorder_of((arr, indices))
    arr = rec.as_tracer(arr)
    if not isinstance(indices, Tracer):
        indices = rec.as_tracer(np.asarray(indices))
    k = _index_tracer(indices, "indices of numpy.take_along_axis")
    if axis is None:
        if k.ndim != 1:
            raise ValueError("when axis=None, `indices` must have a single dimension.")
        arr, axis = fnp.ravel(arr), 0
    if k.ndim != arr.ndim:
        raise ValueError("`indices` and `arr` must have the same number of dimensions")
    axis = operator.index(axis)
    if not -arr.ndim <= axis < arr.ndim:
        raise np.exceptions.AxisError(axis, arr.ndim)
    axis %= arr.ndim
    value = np.take_along_axis(arr._value, k._value, axis)  # NumPy's shape and errors
    shape = value.shape
    arr_shape = shape[:axis] + (arr.shape[axis],) + shape[axis + 1 :]
    if arr.shape != arr_shape:
        arr = fnp.broadcast_to(arr, arr_shape)
    if k.shape != shape:
        k = fnp.broadcast_to(k, shape)
    return rec.take(arr, k, axis, True, value)


# --------------------------------------------------------------------------
# updates at traced indices
# --------------------------------------------------------------------------
def updated(x, key, value, add: bool):
    """x with ``value`` (broadcast to ``x[key]``) written at (or, ``add``, added to) the elements the traced
    key selects: the last write wins, additions accumulate."""
    from . import numpy as fnp

    rec = recorder_of((x, value, key if isinstance(key, tuple) else (key,)))
    x = rec.as_tracer(x)
    keys = _expanded(x, key)
    mask = [k for k in keys if isinstance(k, Tracer) and k._rec.slots[k._sid].kind == "b"]
    if mask:
        return _masked_update(x, keys, mask[0], value, add)
    for k in keys:
        if isinstance(k, Tracer):
            _index_tracer(k)
    selected = x._value[tuple(concrete(k) for k in keys)]
    v = fnp.broadcast_to(value, selected.shape)  # NumPy's error for a value that does not fit
    positions = fnp.ravel(flat_positions(x, keys))
    flat_v = fnp.ravel(v)
    result = np.array(x._value, dtype=np.float64).reshape(-1)
    where = positions._value.astype(np.int64)
    if add:
        np.add.at(result, where, concrete(flat_v))
    else:
        result[where] = concrete(flat_v)
    out = rec.scatter(fnp.ravel(x), positions, flat_v, add, result)
    return fnp.reshape(out, x.shape)


def _masked_update(x, keys, mask, value, add):
    """``x[mask] = v`` (``+= v``) with a traced mask of x's shape and one value: a ``where``."""
    from . import numpy as fnp

    if len([k for k in keys if not _full(k)]) != 1 or mask.shape != x.shape or np.size(concrete(value)) != 1:
        raise ConcretizationError(
            "x[mask] = v with a traced mask is recorded as np.where(mask, v, x), which needs a mask of x's shape "
            "and a single value v. " + MASK_FIX
        )
    v = fnp.reshape(value, ()) if np.ndim(concrete(value)) else value
    return fnp.where(mask, fnp.add(x, v) if add else v, x)
