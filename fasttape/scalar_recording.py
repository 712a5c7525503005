"""Recording scalar code: the short path for ``+ - * /`` and unary ufuncs on 0-d float tracers, and
for element reads ``A[i, j]``.

A scalar loop (an integrator, a recursion, a Laplace expansion) records one row per Python operation,
so the cost of recording one row is the cost of tracing it.  These functions write the same row, slot
and tracer as the general elementwise path (:meth:`fasttape.recorder.Recorder.elementwise`) with none of
its generality: no broadcasting, no dtype rules, one lookup per constant; an element read is a 0-d view
(no row), one per element.  They return None for anything they do not handle, and the caller takes the
general path (which also raises the errors).

While no nested transformation has opened (``rec.values is None``) no slot has a level: a row's output
is only counted (its slot is made from the row when first read, :class:`fasttape.slots.SlotTable`), and
its :class:`~fasttape.tracer.ScalarTracer` carries what the next row needs (the slot's offset and
activity, the value as a Python float).  Otherwise the levelled variant records the same row as a slot
of that level and keeps the values :mod:`fasttape.nesting` reads.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from . import layout as L
from . import row_log
from .primitives import PRIMITIVES, names, opcode
from .scalar_math import PYTHON_MATH
from .slots import Slot

Tracer = None  # the 0-d tracer class: set by fasttape.tracer, which defines it
ScalarTracer = None  # the class of the tracers this module hands out: also set by fasttape.tracer

_OP_DIVIDE = opcode("divide")
_EXACT_INT = 2**53  # integers the float64 buffer holds exactly
_DOUBLE = struct.Struct("d")

# the record a scalar instruction appends: its row (op, out, 1, a, 1, b, nb, 0, 0, 0, 0, 0, 0, flags), its
# output slot, its number of operands, their slots and its value (fasttape.row_log)
assert (L.C_OP, L.C_OUT, L.C_N, L.C_A, L.C_NA, L.C_B, L.C_NB, L.C_FLAGS, L.ROW) == (0, 1, 2, 3, 4, 5, 6, 13, 14)
assert (row_log.OUT, row_log.COUNT, row_log.FIRST, row_log.VALUE, row_log.WIDTH) == (14, 15, 16, 18, 19)
# (its zero columns are struct's padding, which it writes as zeros: fewer arguments to convert)
_BINARY = struct.Struct("=7q48x5qd").pack  # op, out, 1, a, 1, b, 1, flags, out slot, 2, sx, sy, value
_UNARY = struct.Struct("=5q64x4q8xd").pack  # op, out, 1, a, 1, flags, out slot, 1, sx, value
assert struct.calcsize("=7q48x5qd") == struct.calcsize("=5q64x4q8xd") == row_log.RECORD.size
_RECORD_SIZE = row_log.RECORD.size
_GRAD_A = L.F_GRAD_A | L.F_ACTIVE
_GRAD_B = L.F_GRAD_B | L.F_ACTIVE
_new, _asarray = object.__new__, np.asarray
_ZERO_KEYS = {1.0: "+0.0", -1.0: "-0.0"}  # Recorder._float_constants' keys of the two zeros


def _constant(rec, v) -> int:
    """The slot id of a Python or NumPy scalar constant, or -1 if ``v`` is not one."""
    kind = type(v)
    if kind is float:
        key = v if v != 0.0 else _ZERO_KEYS[math.copysign(1.0, v)]  # (0.0 and -0.0: one dict key otherwise)
        sid = rec._float_constants.get(key, -1)
        if sid >= 0:
            return sid
        sid = rec.constant(v)
        if v == v:  # (NaN is never found again)
            rec._float_constants[key] = sid
        return sid
    if kind is int:
        sid = rec._int_constants.get(v, -1)
        if sid < 0:
            if not -_EXACT_INT <= v <= _EXACT_INT:
                return -1
            sid = rec._int_constants[v] = rec.constant(v)
        return sid
    if kind is np.float64:
        sid = rec._scalar_constants.get(_DOUBLE.pack(v) + b"f")
        return rec.constant(v) if sid is None else sid
    return -1


def arithmetic(rec, op, fn, x, y):
    """Record ``fn(x, y)`` (add, subtract, multiply or divide) for 0-d float tracers and Python numbers;
    None for any other operands."""
    if rec.values is not None or rec.closed:
        return _levelled_arithmetic(rec, op, fn, x, y)
    # (a ScalarTracer operand, the common case, read inline: a helper call costs a tenth of the row)
    if type(x) is ScalarTracer and x._rec is rec:
        sx, a, ax, flags = x._sid, x._kept, x._offset, _GRAD_A if x._active else 0
    else:
        operand = _operand(rec, x)
        if operand is None:
            return None
        sx, a, ax, active = operand
        flags = _GRAD_A if active else 0
    if type(y) is ScalarTracer and y._rec is rec:
        sy, b, by = y._sid, y._kept, y._offset
        if y._active:
            flags |= _GRAD_B
    else:
        operand = _operand(rec, y)
        if operand is None:
            return None
        sy, b, by, active = operand
        if active:
            flags |= _GRAD_B
    if b == 0.0 and op == _OP_DIVIDE:
        return None  # (the general path divides by zero without NumPy's warning, into ±inf or NaN)
    # (Python's float arithmetic: IEEE doubles as NumPy's, silent on overflow)
    value = fn(a, b)
    # _new_row's work, written out (its call costs a twentieth of the row)
    offset = rec.n_values
    rec.n_values = offset + 1
    slots = rec.slots
    out = slots.count
    slots.count = out + 1
    rec.log.table += _BINARY(op, offset, 1, ax, 1, by, 1, flags, out, 2, sx, sy, value)
    result = _new(ScalarTracer)
    result._offset, result._active, result._kept = offset, flags != 0, value
    result._rec = rec
    result._sid = out
    result._base, result._views = (), None
    return result


def _operand(rec, v):
    """(slot id, Python float, offset, active) of an operand of ``rec``'s scalar arithmetic that is not one
    of its ScalarTracers: a 0-d float Tracer or a Python or NumPy number; None for anything else."""
    if type(v) is Tracer or type(v) is ScalarTracer:
        if v._rec is not rec:
            return None
        slot = rec.slots[v._sid]
        if slot.kind != "f":
            return None
        return v._sid, float(v._value), slot.offset, slot.active
    sid = _constant(rec, v)  # (an int constant too: NumPy's result is float64 all the same)
    if sid < 0:
        return None
    slot = rec.slots[sid]
    return sid, float(v), slot.offset, slot.active


def unary(rec, op, ufunc, x):
    """Record ``ufunc(x)`` for a 0-d float tracer; None for anything else."""
    kind = type(x)
    if kind is ScalarTracer:
        if rec.values is not None or rec.closed:
            return _levelled_unary(rec, op, ufunc, x)
        if x._rec is not rec:
            return None
        offset, active, value = x._offset, x._active, x._kept
    elif kind is Tracer:
        if rec.values is not None or rec.closed:
            return _levelled_unary(rec, op, ufunc, x)
        if x._rec is not rec:
            return None
        slot = rec.slots[x._sid]
        if slot.kind != "f":
            return None
        offset, active, value = slot.offset, slot.active, x._value
    else:
        return None
    value = _unary_value(op, ufunc, value)
    if value is None:
        return None
    return _new_row(rec, op, offset, 0, _GRAD_A if active else 0, x._sid, -1, value)


def _python_value(prim):
    """A unary primitive's value formula as a function of a Python float, or None when it names a
    function that only NumPy (or compiled code) has."""
    if not names(prim.value) <= {"x", *PYTHON_MATH}:
        return None
    return eval(f"lambda x: {prim.value}", {"__builtins__": {}, **PYTHON_MATH})  # noqa: S307 (the declarations')


_PYTHON_VALUES = {p.opcode: _python_value(p) for p in PRIMITIVES if p.elementwise and p.kind == "unary"}


def _unary_value(op, ufunc, value):
    """``ufunc(value)`` as a Python float (None if NumPy's result is not a float): from Python's math when
    it has the function and the value is inside its domain (NumPy's errstate costs more than the rest of
    a row), else from NumPy, silently (as the general path: a value outside the domain is NaN)."""
    python = _PYTHON_VALUES.get(op)
    if python is not None:
        try:
            return float(python(float(value)))
        except (ValueError, OverflowError, ZeroDivisionError):
            pass
    with np.errstate(all="ignore"):
        value = np.asarray(ufunc(value))
    return float(value) if value.dtype == np.float64 else None


def _new_row(rec, op, a, b, flags, sx, sy, value, level=None):
    """Append the row ``op`` reading the 0-d operands at offsets ``a`` and ``b``, of slots ``sx`` and ``sy``
    (-1: a unary row), writing a fresh 0-d slot at the end of the buffer; return its tracer, of the float
    ``value``."""
    offset = rec.n_values
    rec.n_values = offset + 1
    slots, table = rec.slots, rec.log.table
    if level is None:
        out = slots.count  # (its slot is made from the row if it is ever read)
        slots.count = out + 1
        result = _new(ScalarTracer)
        result._offset, result._active, result._kept = offset, flags != 0, value
    else:
        out = slots.add(Slot(offset, (), flags != 0, "f", ("op", len(table) // _RECORD_SIZE), level, size=1))
        result = _new(Tracer)
        result._value = _asarray(value)
    if sy >= 0:
        table += _BINARY(op, offset, 1, a, 1, b, 1, flags, out, 2, sx, sy, value)
    else:
        table += _UNARY(op, offset, 1, a, 1, flags, out, 1, sx, value)
    result._rec = rec
    result._sid = out
    result._base, result._views = (), None  # (as Tracer.__init__: no NumPy aliasing)
    if level is not None:
        slots[out].remember(result)  # its value, should a nested transformation read it later
    return result


# -- with nested transformations: levels, and the values they read ------------------------------------
def _levelled_arithmetic(rec, op, fn, x, y):
    if rec.closed:
        return None
    operands, values, level = [], [], None
    for v in (x, y):
        if type(v) in (Tracer, ScalarTracer):
            level = _level(rec, v, level)
            if level is False:
                return None
            operands.append(v._sid)
            values.append(v._value)
        else:
            sid = _constant(rec, v)
            if sid < 0:
                return None
            operands.append(sid)
            values.append(v)
    a, b = float(values[0]), float(values[1])
    if op == _OP_DIVIDE and b == 0.0:
        return None
    return _levelled_row(rec, op, operands, values, fn(a, b), level)


def _levelled_unary(rec, op, ufunc, x):
    if rec.closed:
        return None
    level = _level(rec, x, None)
    if level is False:
        return None
    value = _unary_value(op, ufunc, x._value)
    if value is None:
        return None
    return _levelled_row(rec, op, [x._sid], [x._value], value, level)


def _level(rec, v, level):
    """The deeper of ``level`` and the 0-d float tracer v's level (a nested transformation's), or False
    when v does not qualify for the scalar paths or belongs to a closed level (whose error the general
    path raises)."""
    slot = rec.slots[v._sid]
    if v._rec is not rec or slot.kind != "f":
        return False
    lv = slot.level
    if lv is not None:
        if lv.closed:
            return False
        if level is None or lv.serial > level.serial:
            return lv
    return level


def _levelled_row(rec, op, operands, values, value, level):
    kept = rec.values
    for sid, v in zip(operands, values):  # (a nested transformation reads its operands' values)
        if sid not in kept:
            kept[sid] = np.asarray(v, dtype=np.float64)
    slot_a = rec.slots[operands[0]]
    flags, b, sb = _GRAD_A if slot_a.active else 0, 0, -1
    if len(operands) == 2:
        sb = operands[1]
        slot_b = rec.slots[sb]
        b = slot_b.offset
        flags |= _GRAD_B if slot_b.active else 0
    result = _new_row(rec, op, slot_a.offset, b, flags, operands[0], sb, value, level)
    kept[result._sid] = result._value
    return result


def element(x, key):
    """``x[i, j, ...]`` with one Python int per axis: a 0-d view of that element (no row), the same tracer
    each time the element is read (tracers are immutable; one rebound by ``x[()] = v`` is replaced); None
    for any other key (the general path, which also raises)."""
    rec = x._rec
    if rec.values is not None or rec.closed:
        return None
    kind = type(key)
    if kind is tuple:
        if len(key) == 2:  # (a matrix's element, written out: a loop costs a fifth of the read)
            i, j = key
            if type(i) is not int or type(j) is not int:
                return None
        else:
            for k in key:
                if type(k) is not int:
                    return None
    elif kind is int:
        key = (key,)
    else:
        return None
    elements = rec._elements
    found = elements.get((x._sid, key))
    if found is None:
        slot = rec.slots[x._sid]
        if len(key) != len(slot.shape):
            return None
        for k, n in zip(key, slot.shape):
            if not -n <= k < n:
                return None
        index = tuple(k if k >= 0 else k + n for k, n in zip(key, slot.shape))  # (a[-1] is a[n - 1])
        found = elements.get((x._sid, index))
        if found is None:
            flat = int(np.ravel_multi_index(index, slot.shape)) if index else 0
            sid = rec._view_slot(x._sid, slot.offset + flat, (), slot.kind, None)
            value = np.asarray(x._value[index])  # (values never change)
            rec.slots[sid].hold(value)  # (for nested transformations, should one open later)
            found = elements[(x._sid, index)] = (sid, _element_tracer(rec, sid, value))
        elements[(x._sid, key)] = found
    sid, tracer = found
    if tracer._sid != sid:  # (rebound to another slot by an item assignment, x[()] = v)
        tracer = _element_tracer(rec, sid, rec.slots[sid].value())
        elements[(x._sid, key)] = (sid, tracer)
    return tracer


def _element_tracer(rec, sid, value):
    """A tracer of the element view ``sid``: a ScalarTracer for a float element."""
    slot = rec.slots[sid]
    if slot.kind == "f":
        result = _new(ScalarTracer)
        result._offset, result._active, result._kept = slot.offset, slot.active, float(value)
    else:
        result = _new(Tracer)
        result._value = value
    result._rec = rec
    result._sid = sid
    result._base, result._views = (), None
    return result
