"""Item assignment and scatter updates on traced arrays, recorded as functional updates.

``x[key] = v`` (and so ``x[key] += v``) records one gather that takes each element from x or from v,
by running NumPy's own assignment on the buffer positions: NumPy's broadcasting, its errors and its
rule for repeated indices (the last write wins) come for free.  The Python object ``x`` then names the
updated value, as an ndarray would.  ``np.add.at`` (subtract, multiply, minimum, maximum) and JAX's
``x.at[key].set / add / subtract / multiply / divide / min / max / get`` accumulate repeated indices:
additions are one scatter-add; for the others the contributions to each element are gathered into rows
(the identity where a row has fewer) and reduced.  A key holding traced integer arrays (or a traced mask,
for one value) is recorded with the dynamic indexing family (``fasttape.dynamic``): set, add and subtract.

What a functional update cannot reproduce is NumPy's aliasing: a view taken earlier (``y = x[1:]``,
``x.T``, ``x.reshape(...)``) that is still alive would see the write in NumPy, and writing into a view
writes into its base.  Both raise ``TracerMutationError`` with the fix (a ``.copy()``), instead of
returning a stale value.
"""

from __future__ import annotations

import dis
import sys
import weakref

import numpy as np

from .errors import TracerMutationError
from .recorder import concrete, index_array, recorder_of
from .tracer import Tracer

_ALIAS_FIX = (
    "A functional update cannot reproduce NumPy's shared memory: take a copy (y = x[1:].copy()) where the "
    "two must differ, or write to x before taking the view."
)


def note_view(result, source):
    """Record that ``result`` is a NumPy view of ``source`` (basic slicing, reshape, transpose, ...)."""
    if not (isinstance(result, Tracer) and isinstance(source, Tracer)) or result is source:
        return result
    result._base = (weakref.ref(source),) + source._base
    for ref in result._base:  # every ancestor still alive lists the view (weakly: a dead view is no alias)
        holder = ref()
        if holder is not None:
            holder._views = [v for v in holder._views or () if v() is not None] + [weakref.ref(result)]
    return result


def _check_aliases(x, value):
    for ref in x._base:
        if ref() is not None:
            raise TracerMutationError(
                f"assigning into {x!r}, a view of another traced array that is still in use ({ref()!r}): in NumPy "
                "the write would change that array too. " + _ALIAS_FIX
            )
    for ref in x._views or ():
        view = ref()
        if view is not None and view is not value:
            raise TracerMutationError(
                f"assigning into {x!r} while a view of it taken earlier ({view!r}) is still in use: in NumPy the "
                "view would see the write. " + _ALIAS_FIX
            )


def storing_into_plain_array(depth=2) -> bool:
    """Whether the Python code ``depth`` frames up is storing into a subscript: ``buf[:4] = traced`` with
    ``buf`` a plain ndarray, which asks the traced value for ``__array__``."""
    frame = sys._getframe(depth)
    return frame.f_code.co_code[frame.f_lasti] == dis.opmap["STORE_SUBSCR"]


def subscripting_plain_array(depth=2) -> bool:
    """Whether the Python code ``depth`` frames up is reading a subscript: ``plain[traced]`` asks the traced
    index for ``__array__``."""
    frame = sys._getframe(depth)
    op = frame.f_code.co_code[frame.f_lasti]
    if op == dis.opmap.get("BINARY_SUBSCR"):
        return True
    nb_ops = getattr(dis, "_nb_ops", ())  # Python 3.14: a subscript is BINARY_OP with the operator "[]"
    arg = frame.f_code.co_code[frame.f_lasti + 1]
    return op == dis.opmap.get("BINARY_OP") and arg < len(nb_ops) and nb_ops[arg][1] == "[]"


PLAIN_ARRAY_FIX = (
    "a plain NumPy array cannot receive traced values (buf[...] = traced): the tape would lose them. Create the "
    "array from a traced one so that it is traced too: buf = np.zeros_like(traced) (or np.zeros_like(traced, "
    "shape=...), fasttape.numpy.zeros_like), then assign into it."
)


def _dynamic_only(key, how):
    """Refuse multiply / min / max at traced indices (add and set are recorded as scatters)."""
    from . import dynamic

    if dynamic.traced_key(key):
        raise NotImplementedError(
            f"a '{how}' update (np.{how}.at, x.at[key].{how}) at indices computed from the traced inputs is not "
            "supported; add, subtract and set are, and every update at constant indices. Where the indices do not "
            f"repeat, gather, combine and write back: x.at[k].set(combined(x[k], v))."
        )


def _rebind(x, new):
    x._sid, x._value, x._base, x._views = new._sid, new._value, (), None


def assign(x, key, value, whole=False):
    """``x[key] = value`` on a traced x: x names the updated value afterwards (``whole``: value replaces all
    of x, as an in-place sort does)."""
    _check_aliases(x, value)
    _rebind(x, value if whole else assigned(x, key, value))


def _at_traced(key) -> bool:
    from . import dynamic

    return dynamic.traced_key(key)


def assigned(x, key, value):
    """The value of ``x`` after ``x[key] = value``, as a new tracer (``x`` is left as it was)."""
    rec = recorder_of((x, value))
    x = rec.as_tracer(x)
    if rec.slots[x._sid].kind != "f":
        raise TracerMutationError(
            f"assigning into the {x.dtype} traced array {x!r}: build it with np.where instead, or assign into a "
            "float array (x.astype(float))."
        )
    if _at_traced(key):
        from . import dynamic

        return dynamic.updated(x, key, value, add=False)
    new_value = np.array(x._value, dtype=np.float64)
    new_value[key] = concrete(value)  # NumPy's errors: shapes that do not broadcast, indices out of range
    v = rec.as_tracer(value)
    positions = index_array(rec, x).copy()
    positions[key] = index_array(rec, v)  # NumPy's broadcasting, and its last-write-wins for repeated indices
    return rec.gather(positions, new_value, [x, v])


_IDENTITY = {"multiply": 1.0, "min": np.inf, "max": -np.inf}  # additions are one scatter-add instead


def scattered(x, key, value, how):
    """x with every element of ``value`` (broadcast to ``x[key]``) combined into its target by ``how``
    (add, multiply, min, max), repeated targets accumulating, as ``np.add.at`` and JAX's ``x.at[key].add``."""
    from . import dynamic
    from . import numpy as fnp

    if how == "add":  # one scatter-add, at constant or traced positions
        return dynamic.updated(x, key, value, add=True)
    _dynamic_only(key, how)
    rec = recorder_of((x, value))
    x = rec.as_tracer(x)
    shape = np.shape(x._value)
    targets = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)[key]  # NumPy's IndexError
    v = fnp.ravel(fnp.broadcast_to(value, targets.shape))  # NumPy's error for a value that does not fit
    flat = targets.ravel()
    if flat.size == 0:
        return assigned(x, (), x)
    # one row per target that receives something: its contributions, then the identity up to the widest row
    rows, row_of = np.unique(flat, return_inverse=True)
    order = np.argsort(row_of, kind="stable")
    counts = np.bincount(row_of)
    rank = np.arange(flat.size) - np.repeat(np.cumsum(counts) - counts, counts)
    table = np.full((rows.size, counts.max()), flat.size, dtype=np.int64)
    table[row_of[order], rank] = order
    contributions = fnp.concatenate([v, np.array([_IDENTITY[how]])])[table]
    reduce = {"multiply": fnp.prod, "min": fnp.min, "max": fnp.max}[how]
    combined = reduce(contributions, axis=1)
    combine = {"multiply": fnp.multiply, "min": fnp.minimum, "max": fnp.maximum}[how]
    flat_x = fnp.ravel(x)
    updated = combine(flat_x[rows], combined)
    return fnp.reshape(assigned(flat_x, rows, updated), shape)


def ufunc_at(ufunc, x, key, value):
    """``np.add.at(x, key, value)`` (subtract, multiply, minimum, maximum): in place on a traced x."""
    from . import numpy as fnp

    how = {np.add: "add", np.subtract: "add", np.multiply: "multiply", np.minimum: "min", np.maximum: "max"}.get(ufunc)
    if how is None:
        return NotImplemented
    if not isinstance(x, Tracer):
        raise TracerMutationError(
            f"numpy.{ufunc.__name__}.at writes traced values into a plain NumPy array, which a tape cannot record. "
            "Create the array from a traced one (np.zeros_like(traced), fasttape.numpy.zeros_like) so that it is "
            "traced too."
        )
    _check_aliases(x, value)
    _rebind(x, scattered(x, key, fnp.negative(value) if ufunc is np.subtract else value, how))


class _At:
    """``x.at[key]``: JAX's functional updates (each returns a new array; x is unchanged)."""

    __slots__ = ("_x", "_key")

    def __init__(self, x, key):
        self._x, self._key = x, key

    def get(self, **kwargs):
        return self._x[self._key]

    def set(self, value, **kwargs):
        return assigned(self._x, self._key, value)

    def add(self, value, **kwargs):
        return scattered(self._x, self._key, value, "add")

    def subtract(self, value, **kwargs):
        from . import numpy as fnp

        return scattered(self._x, self._key, fnp.negative(value), "add")

    def multiply(self, value, **kwargs):
        return scattered(self._x, self._key, value, "multiply")

    def divide(self, value, **kwargs):
        from . import numpy as fnp

        return scattered(self._x, self._key, fnp.reciprocal(value), "multiply")

    def min(self, value, **kwargs):
        return scattered(self._x, self._key, value, "min")

    def max(self, value, **kwargs):
        return scattered(self._x, self._key, value, "max")


class AtIndexer:
    """What ``x.at`` returns: ``x.at[key]`` gives the update methods."""

    __slots__ = ("_x",)

    def __init__(self, x):
        self._x = x

    def __getitem__(self, key):
        return _At(self._x, key)
