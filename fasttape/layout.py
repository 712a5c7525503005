"""The tape's flat layout: instruction columns, flag bits, the aux header, opcode groups.

A tape is three flat arrays that the recorder writes and every sweep reads:

* ``ins``  -- int64[n_instructions, ROW]: one row per instruction: opcode, output offset
  and size, up to three operand offsets and sizes, four integer parameters (named by the
  primitive's family, ``fasttape.families``) and an activity bit mask.  Offsets point
  into ``buf``.
* ``aux``  -- int64[...]: a small header (``M_*``), the index pool of gathers, the guard
  table and the runs of adjoints to zero.
* ``buf``  -- float64[2 * n_values]: the forward values (with the families' side stores),
  then their adjoints.

The scalar code and the fused regions add a fourth, derived array, ``code`` (four uint32
per instruction; see ``fasttape.scalar_code`` and ``fasttape.fusion``).
"""

from __future__ import annotations

import numpy as np

from .primitives import N_OPCODES, PRIMITIVES, opcode, opcodes

# --------------------------------------------------------------------------
# opcodes: the declarations' table order (fasttape.primitives).  Code classifies an
# opcode by its group (the boolean tables below) or family, never by a numeric range.
# --------------------------------------------------------------------------
OP_NEGATIVE = opcode("negative")
OP_SQUARE = opcode("square")
OP_ADD = opcode("add")
OP_SUBTRACT = opcode("subtract")
OP_MULTIPLY = opcode("multiply")
OP_LOGADDEXP = opcode("logaddexp")
OP_SUM = opcode("sum")
OP_PROD = opcode("prod")
OP_MAX = opcode("max")
OP_MIN = opcode("min")
OP_LOGSUMEXP = opcode("logsumexp")
OP_CUMSUM = opcode("cumsum")
OPCODE_NAMES = {f"OP_{p.name.upper()}": p.opcode for p in PRIMITIVES}  # every primitive, for tests and tools


def group(predicate) -> np.ndarray:
    """A read-only boolean table over the opcodes: True where ``predicate(declaration)``."""
    table = np.zeros(N_OPCODES, dtype=np.bool_)
    table[list(opcodes(predicate))] = True
    table.setflags(write=False)
    return table


UNARY = group(lambda p: p.kind == "unary")
BINARY = group(lambda p: p.kind in ("binary", "comparison"))  # two operands, elementwise
COMPARISON = group(lambda p: p.kind == "comparison")
REDUCTION = group(lambda p: p.kind == "reduction")  # (pre, r, post) -> (pre, post)
ARITHMETIC = group(lambda p: p.opcode in (OP_ADD, OP_SUBTRACT, OP_MULTIPLY))  # the scalar code's three
# which second partials may be nonzero: [opcode, (xx, xy, yy)] (a unary primitive's f'' is xx).  Where
# one is structurally zero, the second-order sweeps form no term with it -- as JAX, whose zero is
# symbolic -- so an infinite tangent never meets it (0 x inf)
CURVATURE = np.array([p.curvature for p in PRIMITIVES], dtype=np.bool_).reshape(N_OPCODES, 3)
CURVATURE.setflags(write=False)

# --------------------------------------------------------------------------
# instruction row columns
# --------------------------------------------------------------------------
C_OP = 0
C_OUT = 1
C_N = 2
C_A = 3
C_NA = 4
C_B = 5
C_NB = 6
C_C = 7
C_NC = 8
C_P0 = 9  # the four parameter columns: each family names them (fasttape.families)
C_P1 = 10
C_P2 = 11
C_P3 = 12
C_FLAGS = 13
ROW = 14
N_PARAMS = 4


def param_columns(names) -> tuple[int, ...]:
    """The instruction columns of a family's named parameters, in order (``fasttape.families``)."""
    return tuple(C_P0 + j for j in range(len(names)))


# activity bits in C_FLAGS: the reverse sweep runs an instruction only when its
# output is active, and writes only into operands that need an adjoint.
F_ACTIVE = 1
F_GRAD_A = 2
F_GRAD_B = 4
F_GRAD_C = 8
# the instruction is the first (in reverse order) to write the operand's whole adjoint:
# it assigns instead of accumulating, so that adjoint needs no zeroing beforehand
F_INIT_A = 16
F_INIT_B = 32
F_INIT_C = 64
# the output's adjoint does not depend on the differentiated inputs (only linear rows, with constant
# coefficients, lie between it and the seeded output): its tangent, the second-order adjoint, is a
# structural zero, and forward-over-reverse forms no product with it (JAX's symbolic zero: no 0 x inf)
F_CONST_ADJOINT = 128


def linear_planes(row, G, G2, T) -> list:
    """The adjoint planes a NumPy rule runs its first-order rule on: G (first order, or None) and the
    k-buffer G2 (or None) -- but not G2 in forward-over-reverse (T given) when the row's output adjoint is
    a constant (``F_CONST_ADJOINT``): its tangent is a structural zero, which forms no product."""
    skip = T is not None and row[C_FLAGS] & F_CONST_ADJOINT
    return [A for A in (G, None if skip else G2) if A is not None]


# aux header
M_NVALS = 0  # number of values; adjoints start at buf[n_values]
M_GUARDS = 1  # start of the guard table in aux: (position, expected 0/1) pairs
M_NGUARDS = 2
M_ZEROS = 3  # start of the (offset, length) runs of adjoints to zero before a reverse sweep
M_NZEROS = 4
HEADER = 8

SMALL_RUN = 16  # runs shorter than this use plain index loops in the k-direction sweeps

# --------------------------------------------------------------------------
# the code array (four uint32 per instruction)
# --------------------------------------------------------------------------
# The scalar code: a compact copy of the one-element add / subtract / multiply instructions -- the
# arithmetic of loops over Python floats -- that the sweeps stream instead of the 112-byte rows, with a
# three-way switch.  Four uint32 per instruction, [word, out, a, b], word = opcode | flags << 8 |
# S_SCALAR; other rows are zero.  A wider switch costs every instruction (with a divide in it, LLVM
# computes the quotient on every row and selects), so the other scalar instructions take the general
# path, where their own cost dominates.
S_SCALAR = 1 << 16
S_FLAGS_SHIFT = 8
S_OPCODE_MASK = 255
INT32_SLOTS = 2**31 - 1  # unsigned slots index without Numba's negative-index check

# Fused regions (fasttape.fusion): region rows of the code are [word, position in the region,
# region position of operand a, of operand b] (NO_SOURCE: read from the buffer).
FUSE_MIN = 8192  # elements: two tiles; from 10^4 elements on, fused sweeps measured as fast or faster
FUSE_TILE = 4096  # elements per tile: a region's scratch (values and adjoints) stays in L1/L2
NO_SOURCE = 0xFFFFFFFF
S_FUSED = 1 << 17
S_START = 1 << 18  # the first row of a region
S_STORE = 1 << 19  # the output is read after the region: the fused forward writes it to the buffer
S_GZERO = 1 << 20  # the output's adjoint is first written (assigned) inside the region: no load, no zeroing
S_RECOMPUTE = 1 << 21  # the first-order reverse reads this value (or one computed from it)
S_LOCAL = 1 << 22  # (first row) only the caller reads the region's values: no instruction, gather or guard
S_TANGENT = 1 << 23  # the second-order reverse reads this tangent (or one computed from it)


def scalar_code(ins: np.ndarray) -> np.ndarray:
    """The scalar code of an instruction table (derived, never saved: rebuilt whenever ``ins`` is)."""
    code = np.zeros((ins.shape[0], 4), dtype=np.uint32)
    op = ins[:, C_OP]
    scalar = (ins[:, C_N] == 1) & ARITHMETIC[op]
    # slots beyond int32 (a tape of more than 16 GB of values) keep the general path
    for column in (C_OUT, C_A, C_B):
        scalar &= ins[:, column] <= INT32_SLOTS
    code[scalar, 0] = op[scalar] | (ins[scalar, C_FLAGS] << S_FLAGS_SHIFT) | S_SCALAR
    code[scalar, 1] = ins[scalar, C_OUT]
    code[scalar, 2] = ins[scalar, C_A]
    code[scalar, 3] = ins[scalar, C_B]
    return code.reshape(-1)  # flat: row i is code[4 i : 4 i + 4]
