"""The tracer object and the recorder that appends primitives to a tape.

A ``Tracer`` stands in for a float64 array while a user's function runs once.
It carries the concrete value (so shapes, dtypes and values come from NumPy
itself) and the id of the tape slot that will hold the value on every replay.
The ``Recorder`` turns each operation into rows of the flat instruction table
defined in :mod:`fasttape.layout`; :meth:`Recorder.finalize` freezes it into
a :class:`fasttape.tape.Tape`.
"""

from __future__ import annotations

import contextlib
import math
import operator
import struct
import sys
import threading
import weakref
from dataclasses import dataclass, field

import numpy as np

from . import families
from . import kernels as K
from .errors import (
    ConcretizationError,
    TracerLeakError,
    TracerMutationError,
    UnsupportedFunctionError,
    UnsupportedMethodError,
)

_CONCRETIZE_FIX = (
    "Inside a function traced by fasttape, values that depend on the inputs stay "
    "traced arrays. Keep computing with NumPy functions on them instead (for example "
    "np.stack / np.concatenate instead of filling an array, np.where instead of "
    "indexing with a computed mask); return the traced value and read the number "
    "from the result of grad/value_and_grad."
)


@dataclass
class Slot:
    """A contiguous run of values in the tape's buffer."""

    offset: int
    shape: tuple
    active: bool  # depends on a differentiated input
    kind: str  # the dtype it stands for: "f" float64, "b" bool, "i" int64 (every value is held as a float64)
    origin: tuple  # ("input", name) | ("const", value) | ("view", parent) | ("op", row)
    size: int = field(init=False)
    level: object = None  # the nesting.Level of the deepest transformation it depends on; None: the trace's own
    ref: object = None  # a weak reference to a tracer of it, for its value (nested transformations)

    def __post_init__(self):
        self.size = math.prod(self.shape)

    @property
    def is_bool(self) -> bool:
        return self.kind == "b"

    @property
    def dtype(self) -> np.dtype:
        return DTYPES[self.kind]


# the dtypes a slot stands for, by kind; integers are held exactly in the float64 buffer up to 2**53
DTYPES = {"f": np.dtype(np.float64), "b": np.dtype(bool), "i": np.dtype(np.int64)}


TYPE_NAMES = {"f": "f64", "b": "bool", "i": "i64"}  # in listings and reprs


def kind_of(dtype) -> str:
    """The slot kind of a NumPy dtype: "b", "i" (any integer) or "f"."""
    kind = np.dtype(dtype).kind
    return "b" if kind == "b" else "i" if kind in "iu" else "f"


class Recorder:
    """Appends instructions while a function runs on tracers."""

    def __init__(self):
        self.rows: list[list[int]] = []
        self.row_operands: list[tuple] = []  # operand slot ids per row
        self.slots_by_row: list[int] = []  # output slot id per row
        self.pool: list[np.ndarray] = []
        self.pool_len = K.HEADER
        self.slots: list[Slot] = []
        self.n_values = 0
        self.constants: list[tuple[int, np.ndarray]] = []
        self._scalar_constants: dict[bytes, int] = {}
        self._array_constants: dict[int, tuple[int, object]] = {}
        self.guards: list[tuple[int, bool]] = []
        self.closed = False
        self.name = "a traced function"  # the trace, in error messages
        # nested transformations (fasttape.nesting): the innermost open level, each slot's value while one
        # is open, and the rows that never pass a derivative (stop_gradient)
        self.level = None
        self.values: dict | None = None
        self.frozen_rows: set[int] = set()

    # -- slots -------------------------------------------------------------
    def _new_slot(self, shape, active, kind, origin, level=None) -> int:
        slot = Slot(self.n_values, tuple(shape), active, kind, origin, level=level)
        self.n_values += slot.size
        self.slots.append(slot)
        return len(self.slots) - 1

    def input(self, value: np.ndarray, active: bool, name: str) -> Tracer:
        """An input slot; ``value``'s dtype is its kind (integer inputs are never differentiated)."""
        sid = self._new_slot(value.shape, active, kind_of(value.dtype), ("input", name))
        return Tracer(self, sid, value)

    def constant(self, value) -> int:
        """Slot id of a constant (deduplicated for scalars and for array objects)."""
        arr = np.asarray(value)
        if arr.dtype.kind == "c":
            raise TypeError(
                f"fasttape differentiates real float64 programs; got a complex constant of dtype {arr.dtype}. "
                "Split it into real and imaginary parts."
            )
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"cannot use a constant of dtype {arr.dtype} in a traced computation; use float arrays.")
        if arr.ndim == 0:
            key = arr.astype(np.float64).tobytes() + kind_of(arr.dtype).encode()  # bits (0.0 and -0.0 apart), kind
            if key in self._scalar_constants:
                return self._scalar_constants[key]
        elif id(value) in self._array_constants and isinstance(value, np.ndarray):
            sid, _keepalive = self._array_constants[id(value)]
            if self.slots[sid].shape == value.shape:
                return sid
        flat = np.ascontiguousarray(arr, dtype=np.float64).reshape(-1).copy()
        sid = self._new_slot(arr.shape, False, kind_of(arr.dtype), ("const", flat))
        self.constants.append((self.slots[sid].offset, flat))
        if arr.ndim == 0:
            self._scalar_constants[key] = sid
        elif isinstance(value, np.ndarray):
            self._array_constants[id(value)] = (sid, value)
        return sid

    def view(self, sid: int, offset: int, shape, value, kind=None) -> Tracer:
        """A new name for values already in the buffer: no instruction, no copy (``kind``: another dtype
        for the same values, as ``astype``)."""
        parent = self.slots[sid]
        kind = kind or parent.kind
        if parent.level is not None and parent.level.closed:
            raise self.leak_error(parent.level)
        if offset == parent.offset and tuple(shape) == parent.shape and kind == parent.kind:
            return Tracer(self, sid, value)
        new = self._new_slot(shape, parent.active, kind, ("view", sid), parent.level)
        self.n_values -= self.slots[new].size  # shares memory with the parent
        self.slots[new].offset = offset
        return Tracer(self, new, value)

    def alias(self, x: Tracer, level) -> Tracer:
        """A second name for ``x``'s values at another nesting level (a transformation's result handed to
        the level that called it): no instruction, no copy."""
        s = self.slots[x._sid]
        new = self._new_slot(s.shape, s.active, s.kind, ("view", x._sid), level)
        self.n_values -= s.size
        self.slots[new].offset = s.offset
        return Tracer(self, new, x._value)

    def as_tracer(self, x) -> Tracer:
        """``x`` itself if traced, else a (constant, inactive) tracer of its value."""
        if isinstance(x, Tracer):
            self.slot_of(x)
            return x
        sid = self.constant(x)
        return Tracer(self, sid, np.asarray(x, dtype=self.slots[sid].dtype))

    def reshape(self, x: Tracer, shape) -> Tracer:
        """Every slot is C-contiguous, so a reshape is always a free view."""
        value = np.reshape(x._value, shape)
        return self.view(x._sid, self.slots[x._sid].offset, value.shape, value)

    def slot_of(self, x) -> int:
        if isinstance(x, Tracer):
            if x._rec is not self:
                raise TracerLeakError(
                    f"a traced value of {x._rec.name} (another trace, or one that has finished) was mixed into "
                    f"{self.name}. Tracers must not outlive the traced function: return them (or pass them as "
                    "has_aux data) instead of storing them in globals."
                )
            return x._sid
        return self.constant(x)

    def where(self) -> str:
        """The current level, in error messages."""
        return self.level.name if self.level is not None else self.name

    def leak_error(self, level) -> TracerLeakError:
        """A tracer of ``level``, a transformation that has returned, used again."""
        return TracerLeakError(
            f"a traced value created inside {level.name} (level {level.depth}) was used after that "
            f"transformation returned, in {self.where()}. A tracer must not outlive the transformation that made "
            "it: return it from the function (or as has_aux data) instead of storing it."
        )

    # -- instructions --------------------------------------------------------
    def _emit(self, op, out_shape, operands, params=None, kind="f", value=None, grads=None, level=None):
        """Append one instruction writing a fresh slot; return its Tracer.  ``params``: the family's
        named parameters; a family's side store is allocated here, after the output.  The slot's level is
        the deepest of its operands' (or ``level``)."""
        if self.closed:
            raise TracerLeakError(
                f"this tracer belongs to {self.name}, a trace that has finished; tracers must not escape the traced "
                "function (return them instead of storing them in globals)."
            )
        prim = K.PRIMITIVE_BY_OPCODE[op]
        slots = [self.slots[s] for s in operands]
        values = self.values
        for s, slot in zip(operands, slots):
            lv = slot.level
            if lv is not None:
                if lv.closed:
                    raise self.leak_error(lv)
                if level is None or lv.serial > level.serial:
                    level = lv
            if values is not None and s not in values:
                value_of_operand = _value_of(slot)
                if value_of_operand is not None:
                    values[s] = value_of_operand
        if grads is None:
            grads = [s.active for s in slots]
        grads = [g and prim.differentiable for g in grads]
        active = any(grads)
        out = self._new_slot(out_shape, active, kind, ("op", len(self.rows)), level)
        o = self.slots[out]
        family = families.of(op)
        named = dict(params or {})
        side = family.side_size(prim, named)
        if side:
            named["side"] = self.n_values
            self.n_values += side  # values no slot names: what the forward keeps for the other sweeps
        row = [op, o.offset, o.size, 0, 0, 0, 0, 0, 0, *family.pack(**named), 0]
        for k, s in enumerate(slots[:3]):
            row[K.C_A + 2 * k] = s.offset
            row[K.C_NA + 2 * k] = s.size
        flags = K.F_ACTIVE if active else 0
        for k, g in enumerate(grads[:3]):
            if g:
                flags |= (K.F_GRAD_A, K.F_GRAD_B, K.F_GRAD_C)[k]
        row[K.C_FLAGS] = flags
        self.rows.append(row)
        self.row_operands.append(tuple(operands))
        self.slots_by_row.append(out)
        return Tracer(self, out, value)

    def elementwise(self, op, args, value) -> Tracer:
        """An elementwise instruction; operands of another size are broadcast explicitly."""
        value = _as_value(value)
        shape = value.shape
        size = value.size
        operands = []
        for a in args:
            sid = self.slot_of(a)
            s = self.slots[sid]
            if s.size != 1 and s.size != size:
                if isinstance(a, Tracer):
                    sid = self.broadcast(a, shape)._sid
                else:
                    sid = self.constant(np.broadcast_to(np.asarray(a, dtype=np.float64), shape))
            operands.append(sid)
        grads = [self.slots[s].active for s in operands]
        if op == K.OP_WHERE:
            grads[0] = False  # the condition is not differentiable
        return self._emit(op, shape, operands, kind=kind_of(value.dtype), value=value, grads=grads)

    def broadcast(self, x: Tracer, shape) -> Tracer:
        """Explicit broadcast; its reverse sweep sums the copies (unbroadcast)."""
        shape = tuple(shape)
        cur = list(np.shape(x._value))
        if len(cur) > len(shape):
            raise ValueError(f"cannot broadcast an array of shape {tuple(cur)} to shape {shape}")
        cur = [1] * (len(shape) - len(cur)) + cur
        for c, t in zip(cur, shape):
            if c != 1 and c != t:
                raise ValueError(f"operands could not be broadcast together: {np.shape(x._value)} to {shape}")
        result = x
        ax = 0
        while ax < len(shape):
            if cur[ax] == 1 and shape[ax] != 1:
                end = ax
                while end < len(shape) and cur[end] == 1 and shape[end] != 1:
                    end += 1
                pre = math.prod(cur[:ax])
                reps = math.prod(shape[ax:end])
                post = math.prod(cur[end:])
                before = tuple(cur)
                cur[ax:end] = shape[ax:end]
                value = np.broadcast_to(np.reshape(result._value, before), tuple(cur))
                result = self._emit(
                    K.OP_BROADCAST,
                    tuple(cur),
                    [result._sid],
                    {"pre": pre, "r": reps, "post": post},
                    kind=self.slots[result._sid].kind,
                    value=np.array(value),
                )
                ax = end
            else:
                ax += 1
        if result is x:
            return self.reshape(x, shape)
        return result

    def reduce(self, op, x: Tracer, axis, keepdims, value, kind="f") -> Tracer:
        """A reduction over ``axis`` (None, int or tuple), lowered to (pre, r, post) form."""
        value = _as_value(value)
        shape = self.slots[x._sid].shape
        axes = normalize_axes(axis, len(shape))
        if not axes:
            return x
        if axes != tuple(range(axes[0], axes[-1] + 1)):  # not adjacent: move them last
            kept = tuple(a for a in range(len(shape)) if a not in axes)
            x = move(np.transpose, [x], kept + axes)
            shape = self.slots[x._sid].shape
            axes = tuple(range(len(kept), len(shape)))
        pre = math.prod(shape[: axes[0]])
        r = math.prod(shape[axes[0] : axes[-1] + 1])
        post = math.prod(shape[axes[-1] + 1 :])
        if op == K.OP_CUMSUM:
            return self._emit(op, shape, [x._sid], {"pre": pre, "r": r, "post": post}, value=value)
        out_shape = tuple(d for a, d in enumerate(shape) if a not in axes)
        extents = {"pre": pre, "r": r, "post": post}
        t = self._emit(op, out_shape, [x._sid], extents, kind=kind, value=value.reshape(out_shape))
        if value.shape != out_shape:
            return self.reshape(t, value.shape)
        return t

    def gather(self, index: np.ndarray, value, sources) -> Tracer:
        """Data movement through absolute buffer positions; contiguous runs become views."""
        value = _as_value(value)
        flat = np.ascontiguousarray(index, dtype=np.int64).reshape(-1)
        n = flat.size
        src_slots = [self.slot_of(s) for s in sources]
        if n > 0 and flat[-1] - flat[0] == n - 1 and (n < 3 or np.all(np.diff(flat) == 1)):
            for parent in src_slots:  # a view must lie inside one slot (activity is per slot)
                s = self.slots[parent]
                if s.offset <= flat[0] and flat[-1] < s.offset + s.size:
                    return self.view(parent, int(flat[0]), value.shape, value)
        start = self.pool_len
        self.pool.append(flat)
        self.pool_len += n
        return self._emit(
            K.OP_GATHER,
            value.shape,
            src_slots,
            {"start": start, "count": n},
            kind=kind_of(value.dtype),
            value=value,
            grads=[any(self.slots[s].active for s in src_slots)],
        )

    def take(self, x, index: Tracer, axis: int, along: bool, value) -> Tracer:
        """``x`` indexed along ``axis`` by the integer tracer ``index``, read in the sweep: ``np.take`` (its
        shape: x's with that axis replaced by index's) or, ``along``, ``np.take_along_axis`` (index already
        of x's shape but for that axis)."""
        value = _as_value(value)
        x = self.as_tracer(x)
        shape = x.shape
        pre, n = math.prod(shape[:axis]), shape[axis]
        params = {"pre": pre, "n": n, "mode": (1 if along else 0) | axis << 1}
        grads = [self.slots[x._sid].active, False]
        return self._emit(K.OP_TAKE, value.shape, [x._sid, index._sid], params, kind=kind_of(value.dtype),
                          value=value, grads=grads)  # fmt: skip

    def scatter(self, x, positions: Tracer, values, add: bool, value) -> Tracer:
        """``x`` (flat) with ``values`` added (``add``) or written at the flat ``positions`` (an integer
        tracer of the same size as ``values``), read in the sweep."""
        value = _as_value(value)
        x, values = self.as_tracer(x), self.as_tracer(values)
        params = {"n": x.size, "mode": 0 if add else 1}
        grads = [self.slots[x._sid].active, False, self.slots[values._sid].active]
        return self._emit(K.OP_SCATTER, value.shape, [x._sid, positions._sid, values._sid], params,
                          kind=kind_of(value.dtype), value=value, grads=grads)  # fmt: skip

    def matmul(self, a, b, value) -> Tracer:
        """Batched matrix product; 1-D operands are promoted as in np.matmul."""
        value = _as_value(value)
        a2, b2 = self.as_tracer(a), self.as_tracer(b)
        if a2.ndim == 1:
            a2 = self.reshape(a2, (1, a2.shape[0]))
        if b2.ndim == 1:
            b2 = self.reshape(b2, (b2.shape[0], 1))
        A2, B2 = a2.shape, b2.shape
        batch = np.broadcast_shapes(A2[:-2], B2[:-2])
        m, k, n = A2[-2], A2[-1], B2[-1]
        if A2[:-2] != batch:
            a2 = self.broadcast(a2, batch + (m, k))
        if B2[:-2] != batch:
            b2 = self.broadcast(b2, batch + (k, n))
        out = self._emit(
            K.OP_MATMUL,
            batch + (m, n),
            [a2._sid, b2._sid],
            {"batch": math.prod(batch), "m": m, "k": k, "n": n},
            value=value.reshape(batch + (m, n)),
        )
        return self.reshape(out, value.shape)

    def linalg(self, op, operands, value, grads=None, **params) -> Tracer:
        """A linear-algebra instruction (the linalg and factor families) on matrices (..., n, n) and
        right-hand sides (..., n, m), their batch axes broadcast; ``value``: its result, shaped (batch, ...);
        ``grads``: which operands are differentiated (by default the active ones); ``params``: the family's
        parameters besides ``batch`` and ``n``."""
        value = _as_value(value)
        tracers = [self.as_tracer(x) for x in operands]
        n = tracers[0].shape[-1]
        batch = np.broadcast_shapes(*(t.shape[:-2] for t in tracers))
        tracers = [t if t.shape[:-2] == batch else self.broadcast(t, batch + t.shape[-2:]) for t in tracers]
        params = {"batch": math.prod(batch), "n": n, "m": 0, **params}
        if grads is not None:
            grads = [g and self.slots[t._sid].active for g, t in zip(grads, tracers)]
        return self._emit(op, value.shape, [t._sid for t in tracers], params, value=value, grads=grads)

    def guard(self, x: Tracer, outcome: bool):
        """Record that the tape is valid only while ``bool(x)`` keeps this outcome."""
        self.guards.append((self.slots[x._sid].offset, bool(outcome)))


_RECORDING = threading.local()  # the recorders running a function on this thread, innermost last


@contextlib.contextmanager
def recording(rec: Recorder):
    """``rec`` is the trace of this thread while the block runs: a transformation called inside it
    records onto it (fasttape.nesting), whether or not its arguments are traced."""
    stack = getattr(_RECORDING, "stack", None)
    if stack is None:
        stack = _RECORDING.stack = []
    stack.append(rec)
    try:
        yield
    finally:
        stack.pop()


def active_recorder() -> Recorder | None:
    """The innermost trace this thread is recording, or None."""
    stack = getattr(_RECORDING, "stack", None)
    return stack[-1] if stack else None


def _value_of(slot: Slot):
    """The value of a slot from a live tracer of it, or its constant (None if neither exists)."""
    if slot.origin[0] == "const":
        return slot.origin[1].reshape(slot.shape).astype(slot.dtype)
    tracer = slot.ref() if slot.ref is not None else None
    return None if tracer is None else tracer._value


def _as_value(value):
    if isinstance(value, np.ndarray):
        return value
    return np.asarray(value)


def normalize_axes(axis, ndim) -> tuple:
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)):
        axis = (axis,)
    out = []
    for a in axis:
        a = operator.index(a)
        if not -ndim <= a < ndim:
            raise np.exceptions.AxisError(a, ndim)
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"duplicate value in 'axis': {axis}")
    return tuple(sorted(out))


def recorder_of(args) -> Recorder | None:
    for a in args:
        if isinstance(a, Tracer):
            return a._rec
        if isinstance(a, (list, tuple)):
            rec = recorder_of(a)
            if rec is not None:
                return rec
    return None


def index_array(rec: Recorder, x):
    """Absolute buffer positions of ``x``'s elements, shaped like ``x``."""
    sid = rec.slot_of(x)
    s = rec.slots[sid]
    return np.arange(s.offset, s.offset + s.size, dtype=np.int64).reshape(s.shape)


def concrete(x):
    """The concrete value of a tracer, or the argument itself."""
    return x._value if isinstance(x, Tracer) else x


def move(fn, operands, *args, **kwargs) -> Tracer:
    """Record a pure data-movement function by running it on index arrays.

    ``fn`` is any NumPy function that only rearranges, repeats or selects
    elements (transpose, concatenate, tile, diagonal, ...).  Applied to the
    concrete values it gives the result; applied to the operands' buffer
    positions it gives the gather indices.  NumPy's own semantics, for free.
    """
    rec = recorder_of(operands)
    seq = isinstance(operands, list) and kwargs.pop("_sequence", False)
    if seq:
        value = fn([concrete(o) for o in operands], *args, **kwargs)
        index = fn([index_array(rec, o) for o in operands], *args, **kwargs)
    else:
        value = fn(*[concrete(o) for o in operands], *args, **kwargs)
        index = fn(*[index_array(rec, o) for o in operands], *args, **kwargs)
    return rec.gather(np.asarray(index), value, list(operands))


_DOUBLE = struct.Struct("d")  # native bytes of a float64 and the kind: the key of Recorder._scalar_constants
_KIND_BYTES = {int: b"i", float: b"f", np.float64: b"f"}
_SCALAR_CONSTANTS = (float, int, np.float64)
_EXACT_INT = 2**53


def scalar_arithmetic(rec, op, fn, x, y):
    """Record ``fn(x, y)`` (add, subtract or multiply) for scalar code -- 0-d float tracers and Python
    numbers -- without the general elementwise path: the same instruction, slots and value, at a
    fraction of the cost per operation.  Returns None for any other operands (the caller then takes
    the general path, which also raises the errors).  ``rec``: the recorder of the tracer operand."""
    if rec.closed or rec.values is not None:  # (inside a nested transformation: the general path keeps levels)
        return None
    slots = rec.slots
    operands = []
    values = []
    for v in (x, y):
        kind = type(v)
        if kind is Tracer:
            if v._rec is not rec or slots[v._sid].kind != "f":
                return None
            operands.append(v._sid)
            values.append(v._value)
        elif kind in _SCALAR_CONSTANTS:
            if kind is int and not -_EXACT_INT <= v <= _EXACT_INT:
                return None
            sid = rec._scalar_constants.get(_DOUBLE.pack(v) + _KIND_BYTES[kind])
            operands.append(rec.constant(v) if sid is None else sid)
            values.append(v)
        else:
            return None
    value = np.asarray(fn(values[0], values[1]))
    sa, sb = slots[operands[0]], slots[operands[1]]
    flags = (K.F_GRAD_A if sa.active else 0) | (K.F_GRAD_B if sb.active else 0)
    if flags:
        flags |= K.F_ACTIVE
    out = rec._new_slot((), flags != 0, "f", ("op", len(rec.rows)))
    rec.rows.append([op, slots[out].offset, 1, sa.offset, 1, sb.offset, 1, 0, 0, 0, 0, 0, 0, flags])
    rec.row_operands.append((operands[0], operands[1]))
    rec.slots_by_row.append(out)
    result = object.__new__(Tracer)
    result._rec = rec
    result._sid = out
    result._value = value
    slots[out].ref = weakref.ref(result)  # its value, should a nested transformation read it later
    return result


def _in_place(method, fix):
    raise TracerMutationError(
        f"traced arrays are immutable: x.{method}() changes the array in place and cannot be recorded. {fix}"
    )


def _numpy_caller() -> str | None:
    """The NumPy function (``take``) whose Python code asked for this tracer as an array, or None."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("numpy."):
        if frame.f_code.co_name in ("take",):
            return frame.f_code.co_name
        frame = frame.f_back
    return None


def _library_caller() -> str | None:
    """The public name of the SciPy function that asked for this tracer as an array
    (``scipy.special.logsumexp``), or None when the call came from elsewhere."""
    frame = sys._getframe(2)
    found = None
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module == "scipy" or module.startswith("scipy."):
            name = frame.f_code.co_name
            if found is None or name != "wrapper":  # SciPy's batching decorator: the name is the inner one's
                found = (module, name)
        elif found is not None:
            break
        frame = frame.f_back
    if found is None:
        return None
    public = ".".join(part for part in found[0].split(".") if not part.startswith("_"))
    return f"{public}.{found[1]}"


# ndarray methods a traced array has but refuses, with the fix: they need a concrete value or mutate in place
REFUSED_METHODS = ("fill", "resize", "put", "itemset", "item", "tolist")


class Tracer:
    """A traced float64 (or boolean or integer) array: NumPy code runs on it unchanged."""

    __slots__ = ("_rec", "_sid", "_value", "_base", "_views", "__weakref__")
    __array_priority__ = 1000.0

    def __new__(cls, rec: Recorder, sid: int, value):
        # 0-d tracers are not sequences: NumPy then asks them for float() (and gets a
        # clear error) instead of trying to unpack them in `array[i] = tracer`
        return object.__new__(ArrayTracer if rec.slots[sid].shape else Tracer)

    def __init__(self, rec: Recorder, sid: int, value):
        self._rec = rec
        self._sid = sid
        self._value = value
        self._base, self._views = (), None  # NumPy aliasing, for item assignment (fasttape.updates)
        slot = rec.slots[sid]
        ref = slot.ref
        if ref is None or ref() is None:
            slot.ref = weakref.ref(self)
        if rec.values is not None:
            rec.values[sid] = value

    # -- properties ----------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self._rec.slots[self._sid].shape

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return self._rec.slots[self._sid].size

    @property
    def dtype(self):
        return self._rec.slots[self._sid].dtype

    @property
    def T(self):
        return fnp.transpose(self)

    @property
    def mT(self):
        return fnp.swapaxes(self, -1, -2)

    def __repr__(self):
        return f"Tracer<{TYPE_NAMES[self._rec.slots[self._sid].kind]}{list(self.shape)} %{self._sid}>"

    # -- concretization: refused with a fix ----------------------------------
    def __array__(self, dtype=None, copy=None):
        if updates.storing_into_plain_array():
            raise TracerMutationError(f"{self!r}: " + updates.PLAIN_ARRAY_FIX)
        plain_index = updates.subscripting_plain_array() or _numpy_caller() == "take"
        if plain_index and self._rec.slots[self._sid].is_bool:
            raise ConcretizationError(
                f"a plain NumPy array was indexed by the traced mask {self!r}: {dynamic.MASK_FIX}"
            )
        if plain_index:
            raise ConcretizationError(
                f"a plain NumPy array was indexed by the traced array {self!r}: NumPy converts the index to a "
                "constant, which would detach it from the tape. Index through fasttape, which records it: "
                "fasttape.numpy.take(a, k, axis=0) for a[k], np.take_along_axis(a, k, axis) for a row per index."
            )
        library = _library_caller()
        if library is not None:
            raise UnsupportedFunctionError(fnp.unsupported_message(library, "it converts its input with np.asarray"))
        raise ConcretizationError(
            f"np.asarray / np.array was called on a traced array {self!r}, which would silently detach it "
            "from the tape (and give a wrong derivative). " + _CONCRETIZE_FIX
        )

    def _concretize(self, what):
        static = ""
        if self._rec.slots[self._sid].kind == "i":
            static = (" An integer array argument is data of the tape (a new one never re-traces); where it sets "
                      "a size, a loop bound or a Python index, mark it static: ft.grad(f, static_argnums=i) "
                      "(one tape per value, as JAX's).")  # fmt: skip
        raise ConcretizationError(
            f"{what} of a traced array {self!r} needs a concrete value that changes with the inputs. "
            "A Python `if`/`while` on a traced comparison is fine (fasttape records a guard); "
            "float()/int()/.item() are not." + static + " " + _CONCRETIZE_FIX
        )

    def __float__(self):
        self._concretize("float()")

    def __int__(self):
        self._concretize("int()")

    def __complex__(self):
        self._concretize("complex()")

    def __index__(self):
        self._concretize("Using as an index or range() bound")

    def item(self, *args):
        self._concretize(".item()")

    def tolist(self):
        self._concretize(".tolist()")

    def __bool__(self):
        if self.size != 1:
            raise ValueError(
                f"The truth value of a traced array with {self.size} elements is ambiguous. Use np.any() or np.all()."
            )
        outcome = bool(np.asarray(self._value).reshape(-1)[0])
        self._rec.guard(self, outcome)
        return outcome

    def __setitem__(self, key, value):
        updates.assign(self, key, value)

    @property
    def at(self):
        """JAX's functional updates: ``x.at[key].set(v)``, ``.add``, ``.multiply``, ``.min``, ``.max``, ``.get``."""
        return updates.AtIndexer(self)

    # ndarray's in-place methods: sort and partition are functional updates (x names the sorted values
    # afterwards); the others cannot be recorded
    def sort(self, axis=-1, kind=None, order=None, *, stable=None):
        updates.assign(self, Ellipsis, fnp.sort(self, axis, kind, order, stable=stable), whole=True)

    def partition(self, kth, axis=-1, kind="introselect", order=None):
        updates.assign(self, Ellipsis, fnp.partition(self, kth, axis, kind, order), whole=True)

    def fill(self, value):
        _in_place("fill", "Build the new array instead, e.g. np.full(x.shape, value) or np.where(mask, value, x).")

    def resize(self, *args, **kwargs):
        _in_place("resize", "Build the new array instead: x.reshape(shape) keeps the size, np.concatenate grows it.")

    def put(self, *args, **kwargs):
        _in_place("put", "Build the new array instead, e.g. np.where(mask, v, x) or np.concatenate.")

    def itemset(self, *args):
        _in_place("itemset", "Build the new array instead, e.g. np.where(mask, v, x).")

    def __getattr__(self, name):
        # only reached when normal lookup fails: private names and names ndarray lacks stay plain
        if name.startswith("_") or not hasattr(np.ndarray, name):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        raise UnsupportedMethodError(
            f"ndarray.{name} is not supported on arrays traced by fasttape (no derivative rule is recorded "
            "for it). Write it with the supported functions listed in fasttape.numpy.__all__, or compute it "
            "outside the traced function if it does not depend on the differentiated inputs."
        )

    # -- NumPy protocols -----------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return fnp.dispatch_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return fnp.dispatch_function(func, args, kwargs)

    # -- operators -------------------------------------------------------------
    def __add__(self, other):
        out = scalar_arithmetic(self._rec, K.OP_ADD, operator.add, self, other)
        return fnp.add(self, other) if out is None else out

    def __radd__(self, other):
        out = scalar_arithmetic(self._rec, K.OP_ADD, operator.add, other, self)
        return fnp.add(other, self) if out is None else out

    def __sub__(self, other):
        out = scalar_arithmetic(self._rec, K.OP_SUBTRACT, operator.sub, self, other)
        return fnp.subtract(self, other) if out is None else out

    def __rsub__(self, other):
        out = scalar_arithmetic(self._rec, K.OP_SUBTRACT, operator.sub, other, self)
        return fnp.subtract(other, self) if out is None else out

    def __mul__(self, other):
        out = scalar_arithmetic(self._rec, K.OP_MULTIPLY, operator.mul, self, other)
        return fnp.multiply(self, other) if out is None else out

    def __rmul__(self, other):
        out = scalar_arithmetic(self._rec, K.OP_MULTIPLY, operator.mul, other, self)
        return fnp.multiply(other, self) if out is None else out

    def __truediv__(self, other):
        return fnp.divide(self, other)

    def __rtruediv__(self, other):
        return fnp.divide(other, self)

    def __mod__(self, other):
        return fnp.remainder(self, other)

    def __rmod__(self, other):
        return fnp.remainder(other, self)

    def __floordiv__(self, other):
        return fnp.floor_divide(self, other)

    def __rfloordiv__(self, other):
        return fnp.floor_divide(other, self)

    def __divmod__(self, other):
        return fnp.floor_divide(self, other), fnp.remainder(self, other)

    def __pow__(self, other):
        return fnp.power(self, other)

    def __rpow__(self, other):
        return fnp.power(other, self)

    def __matmul__(self, other):
        return fnp.matmul(self, other)

    def __rmatmul__(self, other):
        return fnp.matmul(other, self)

    def __neg__(self):
        return fnp.negative(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return fnp.abs(self)

    def __round__(self, ndigits=None):
        if ndigits:
            raise NotImplementedError("round(x, ndigits) with ndigits != 0 is not supported on traced arrays.")
        return fnp.round(self)

    def __lt__(self, other):
        return fnp.less(self, other)

    def __le__(self, other):
        return fnp.less_equal(self, other)

    def __gt__(self, other):
        return fnp.greater(self, other)

    def __ge__(self, other):
        return fnp.greater_equal(self, other)

    def __eq__(self, other):
        if isinstance(other, (str, bytes, type(None))):
            return NotImplemented  # as NumPy: compares unequal
        return fnp.equal(self, other)

    def __ne__(self, other):
        if isinstance(other, (str, bytes, type(None))):
            return NotImplemented
        return fnp.not_equal(self, other)

    def __invert__(self):
        return fnp.logical_not(self)

    def __and__(self, other):
        return fnp.logical_and(self, other)

    __rand__ = __and__

    def __or__(self, other):
        return fnp.logical_or(self, other)

    __ror__ = __or__

    __hash__ = None

    # -- array methods ---------------------------------------------------------
    def sum(self, axis=None, keepdims=False, **kw):
        return fnp.sum(self, axis=axis, keepdims=keepdims, **kw)

    def mean(self, axis=None, keepdims=False, **kw):
        return fnp.mean(self, axis=axis, keepdims=keepdims, **kw)

    def var(self, axis=None, ddof=0, keepdims=False, **kw):
        return fnp.var(self, axis=axis, ddof=ddof, keepdims=keepdims, **kw)

    def std(self, axis=None, ddof=0, keepdims=False, **kw):
        return fnp.std(self, axis=axis, ddof=ddof, keepdims=keepdims, **kw)

    def prod(self, axis=None, keepdims=False, **kw):
        return fnp.prod(self, axis=axis, keepdims=keepdims, **kw)

    def max(self, axis=None, keepdims=False, **kw):
        return fnp.max(self, axis=axis, keepdims=keepdims, **kw)

    def min(self, axis=None, keepdims=False, **kw):
        return fnp.min(self, axis=axis, keepdims=keepdims, **kw)

    def cumsum(self, axis=None, **kw):
        return fnp.cumsum(self, axis=axis, **kw)

    def any(self, axis=None, keepdims=False):
        return fnp.any(self, axis=axis, keepdims=keepdims)

    def all(self, axis=None, keepdims=False):
        return fnp.all(self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape, order="C"):
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = shape[0]
        return fnp.reshape(self, shape, order=order)

    def ravel(self, order="C"):
        return fnp.ravel(self, order=order)

    def flatten(self, order="C"):
        return fnp.ravel(self, order=order)

    def transpose(self, *axes):
        if len(axes) == 1 and (axes[0] is None or not isinstance(axes[0], (int, np.integer))):
            axes = axes[0]
        return fnp.transpose(self, axes or None)

    def swapaxes(self, a, b):
        return fnp.swapaxes(self, a, b)

    def squeeze(self, axis=None):
        return fnp.squeeze(self, axis=axis)

    def dot(self, other):
        return fnp.dot(self, other)

    def clip(self, min=None, max=None):
        return fnp.clip(self, min, max)

    def diagonal(self, offset=0, axis1=0, axis2=1):
        return fnp.diagonal(self, offset, axis1, axis2)

    def trace(self, offset=0, axis1=0, axis2=1):
        return fnp.trace(self, offset, axis1, axis2)

    def repeat(self, repeats, axis=None):
        return fnp.repeat(self, repeats, axis=axis)

    def astype(self, dtype, copy=True):
        """Another dtype for the same values: float (a new name, no instruction), bool (``!= 0``), or integer
        (truncated toward zero, as NumPy; no derivative)."""
        kind = kind_of(dtype)
        own = self._rec.slots[self._sid].kind
        if np.dtype(dtype).kind not in "biuf":
            raise TypeError(f"x.astype({np.dtype(dtype)}): a traced array holds real numbers; use float, int or bool.")
        if kind == own:
            return self.copy() if copy else self
        if kind == "b":
            return fnp.not_equal(self, 0)
        x = self
        if kind == "i" and own == "f":
            x = fnp.where(fnp.less(self, 0.0), fnp.ceil(self), fnp.floor(self))  # toward zero
        with np.errstate(invalid="ignore"):
            value = self._value.astype(DTYPES[kind])
        return self._rec.view(x._sid, self._rec.slots[x._sid].offset, self.shape, value, kind=kind)

    def argsort(self, axis=-1, kind=None, order=None, *, stable=None):
        return fnp.argsort(self, axis, kind, order, stable=stable)

    def argmax(self, axis=None, out=None, *, keepdims=False):
        return fnp.argmax(self, axis, out, keepdims=keepdims)

    def argmin(self, axis=None, out=None, *, keepdims=False):
        return fnp.argmin(self, axis, out, keepdims=keepdims)

    def searchsorted(self, v, side="left", sorter=None):
        return fnp.searchsorted(self, v, side, sorter)

    def copy(self):
        return Tracer(self._rec, self._sid, self._value)  # another object: a later x[...] = v leaves it alone


class ArrayTracer(Tracer):
    """A traced array of one or more dimensions: also a sequence of its rows."""

    __slots__ = ()

    def __len__(self):
        return self.shape[0]

    def __iter__(self):
        for i in range(self.shape[0]):
            yield self[i]

    def __getitem__(self, key):
        return fnp.getitem(self, key)


from . import dynamic, updates  # noqa: E402
from . import numpy as fnp  # noqa: E402  (the NumPy surface needs Tracer)
