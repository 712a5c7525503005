"""Planted faults: one rule broken on purpose, so that the oracle can show it notices.

``FASTTAPE_FAULT=<primitive>:<kind>`` builds the kernels with a fault switch and plants
that fault; ``FASTTAPE_FAULT=instrument`` builds the switch with nothing planted, and
``plant(site)`` / ``clear()`` change the fault while the process runs, so one build serves
every mutant (``python -m oracle.mutants``).  Kernels built so are never cached and every
call waits for them (no NumPy executor tier), so no planted fault reaches a normal run,
and without ``FASTTAPE_FAULT`` the generated code holds no trace of the switch.

A site is a primitive and a kind:

``value``, ``reverse``, ``tangent``, ``second``, ``reverse-k``
    the family kernel of that sweep, for every primitive: its values, its adjoint
    contributions, its tangents, its forward-over-reverse contributions (HVPs) and the
    k-seed reverse (Jacobians by rows).  The kernel runs as if its output (value or tangent)
    or its incoming adjoints were ``v + 0.01 (|v| + 1)``: off by 1% and by 0.01 more, so a
    contribution that should be zero is wrong too, and no value is left unchanged (an affine
    map such as 1.01 v + 0.01 keeps one: there, -1, the partial of negative).
``formula-value``, ``formula-dx``, ``formula-dy``, ``formula-d2``
    the declaration's formulas of an elementwise primitive (its value, its partial in x
    and in y, its second partials), perturbed the same way wherever they are evaluated:
    family kernels, fused regions and the scalar code.

A site may also name one of the primitive's declared edges (``Primitive.edges``):
``max:reverse@ties`` is wrong only where its operands hold a tie, ``logsumexp:second@huge``
only where one exceeds 1e100, as a rule that is right in general and wrong at its edge
would be (the whole adjoint to the first tie, a sum of exponentials without the max
shift).  For a kernel the edge is looked for among the instruction's first two operands;
for a formula, in its own x and y.

A bare primitive name (``FASTTAPE_FAULT=tanh``) means ``tanh:formula-dx``.  Every planted
fault counts the times it fires (``hits()``), so a fault the run never reached is told
apart from one the oracle missed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numba
import numpy as np
from numba.core import cgutils
from numba.extending import intrinsic

from .layout import C_A, C_B, C_NA, C_NB
from .primitives import EDGES, PRIMITIVE_BY_NAME, PRIMITIVES

KERNEL_KINDS = ("value", "reverse", "tangent", "second", "reverse-k")
FORMULA_KINDS = ("formula-value", "formula-dx", "formula-dy", "formula-d2")
KINDS = KERNEL_KINDS + FORMULA_KINDS
KIND_CODE = {kind: code for code, kind in enumerate(KINDS)}
(VALUE, REVERSE, TANGENT, SECOND, REVERSE_K) = (KIND_CODE[k] for k in KERNEL_KINDS)  # the dispatch's switch
(TIES, ZEROS, HUGE, TINY) = (EDGES.index(e) for e in ("ties", "zeros", "huge", "tiny"))
HUGE_ABOVE, TINY_BELOW = 1e100, 1e-100  # the magnitudes of the huge and tiny edges
INSTRUMENT = "instrument"


@dataclass(frozen=True)
class Site:
    """One place a fault can be planted: a primitive's rule of one kind, everywhere or at one edge."""

    primitive: str
    kind: str
    edge: str = ""

    def __str__(self):
        return f"{self.primitive}:{self.kind}" + (f"@{self.edge}" if self.edge else "")


def kinds_of(prim) -> tuple[str, ...]:
    """The fault kinds a primitive has: every kernel kind, and its formulas when elementwise."""
    if not prim.elementwise:
        return KERNEL_KINDS
    partials = ("formula-dx", "formula-dy")[: prim.arity]
    # a static operand (polygamma's order) is never differentiated: no sweep reads its partial
    formulas = ("formula-value",) + tuple(kind for k, kind in enumerate(partials) if k not in prim.static)
    if any(prim.curvature):  # (second partials that are all structural zeros: no term is ever formed with them)
        formulas += ("formula-d2",)
    return KERNEL_KINDS + formulas


def sites() -> list[Site]:
    """Every site, in the declarations' order: each rule everywhere, then at each of its primitive's edges."""
    return [Site(p.name, kind, edge) for p in PRIMITIVES for edge in ("", *p.edges) for kind in kinds_of(p)]


def parse(text: str) -> Site:
    """A site from ``"<primitive>:<kind>[@<edge>]"`` (a bare name: its first partial, ``formula-dx``, or
    ``formula-dy`` when the first operand is static)."""
    text, _, edge = text.strip().partition("@")
    name, _, kind = text.partition(":")
    prim = PRIMITIVE_BY_NAME.get(name)
    if prim is None:
        raise ValueError(f"fault {text!r}: no primitive named {name!r}; name one of fasttape's primitives, e.g. tanh")
    kind = kind or ("formula-dy" if 0 in prim.static else "formula-dx")
    if kind not in kinds_of(prim):
        raise ValueError(
            f"fault {text!r}: {name} has no {kind!r} rule to break; its kinds are {', '.join(kinds_of(prim))} "
            "(formula-* only for elementwise primitives)"
        )
    if edge and edge not in prim.edges:
        raise ValueError(f"fault {text}@{edge}: {name} declares no edge {edge!r}; its edges are {prim.edges}")
    return Site(name, kind, edge)


def _from_environment() -> tuple[bool, Site | None]:
    text = os.environ.get("FASTTAPE_FAULT", "").strip()
    if not text:
        return False, None
    if text == INSTRUMENT:
        return True, None
    try:
        return True, parse(text)
    except ValueError as e:
        raise ValueError(f"FASTTAPE_FAULT: {e}") from None


INSTRUMENTED, _PLANTED_AT_IMPORT = _from_environment()

# the switch the instrumented kernels read: [opcode (-1: none), kind, hits, edge (-1: everywhere)];
# compiled code reaches it by its address (a global array would be frozen into the kernels as a constant)
STATE = np.array([-1, -1, 0, -1], dtype=np.int64)
ADDRESS = STATE.ctypes.data


def plant(site: Site | str) -> Site:
    """Plant ``site``'s fault (instrumented kernels only) and reset the hit count."""
    if not INSTRUMENTED:
        raise RuntimeError("faults are planted only in instrumented kernels: set FASTTAPE_FAULT=instrument first")
    site = parse(site) if isinstance(site, str) else parse(str(site))
    edge = EDGES.index(site.edge) if site.edge else -1
    STATE[:] = (PRIMITIVE_BY_NAME[site.primitive].opcode, KIND_CODE[site.kind], 0, edge)
    return site


def clear() -> None:
    """No fault planted: the instrumented kernels compute the right numbers."""
    STATE[:] = (-1, -1, 0, -1)


def hits() -> int:
    """How many times the planted fault has fired since it was planted."""
    return int(STATE[2])


if _PLANTED_AT_IMPORT is not None:
    plant(_PLANTED_AT_IMPORT)


@intrinsic
def _pointer(typingctx, address):
    """The int64 ``address`` as a raw pointer, for ``numba.carray``."""
    sig = numba.types.voidptr(address)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return sig, codegen


# plain calls, not inlined in Numba's IR: an instrumented build already compiles for minutes
_OPTIONS = {"nogil": True, "error_model": "numpy", "cache": False}


@numba.njit(**_OPTIONS)
def _state():
    return numba.carray(_pointer(ADDRESS), 4, np.int64)


@numba.njit(**_OPTIONS)
def _fire():
    _state()[2] += 1
    return True


@numba.njit(**_OPTIONS)
def _planted(op, kind):
    state = _state()
    return state[0] == op and state[1] == kind


@numba.njit(**_OPTIONS)
def _at_edge(x, y):
    """Whether elements x, y (y NaN for one operand) are on the planted edge (always, with none)."""
    edge = _state()[3]
    if edge == TIES:
        return x == y
    if edge == ZEROS:
        return x == 0.0 or y == 0.0
    if edge == HUGE:
        return abs(x) > HUGE_ABOVE or abs(y) > HUGE_ABOVE
    if edge == TINY:
        return 0.0 < abs(x) < TINY_BELOW or 0.0 < abs(y) < TINY_BELOW
    return True


@numba.njit(**_OPTIONS)
def _operands_at_edge(ins, i, buf):
    """Whether the instruction's first two operands hold an element on the planted edge (a tie: two
    equal elements among them)."""
    if _state()[3] < 0:
        return True
    values = np.concatenate(
        (buf[ins[i, C_A] : ins[i, C_A] + ins[i, C_NA]], buf[ins[i, C_B] : ins[i, C_B] + ins[i, C_NB]])
    )
    if _state()[3] == TIES:
        ordered = np.sort(values)
        return ordered.size > 1 and np.any(ordered[1:] == ordered[:-1])
    for v in values:
        if _at_edge(v, np.nan):
            return True
    return False


@numba.njit(**_OPTIONS)
def armed(op, kind, ins, i, buf):
    """True (and counted) when the planted fault is ``kind`` of opcode ``op`` and instruction i's operands
    are on its edge."""
    return _planted(op, kind) and _operands_at_edge(ins, i, buf) and _fire()


@numba.njit(**_OPTIONS)
def moved(v):
    """The fault's change to a value: 1% of its magnitude and 0.01 more (no value stays put, where an
    affine map such as 1.01 v + 0.01 would leave its fixed point, -1, unchanged)."""
    return v + 0.01 * (abs(v) + 1.0)


@numba.njit(**_OPTIONS)
def perturbed(op, kind, v, x, y):
    """``v`` as the fault makes it (``moved``) where the planted fault is ``kind`` of opcode ``op`` and x, y
    are on its edge (y NaN for one operand), else ``v``."""
    return moved(v) if _planted(op, kind) and _at_edge(x, y) and _fire() else v


@numba.njit(**_OPTIONS)
def perturb_run(x, start, n):
    for j in range(start, start + n):
        x[j] = moved(x[j])


@numba.njit(**_OPTIONS)
def perturb_seeds(buf, adj2, N, o, n, k, first):
    """Perturb an instruction's incoming adjoints (the first-order one when ``first``, and its k
    directions in ``adj2``); returns what they were, for ``restore_seeds``."""
    saved = np.empty(n * (k + 1))
    saved[:n] = buf[N + o : N + o + n]
    for d in range(k):
        saved[(d + 1) * n : (d + 2) * n] = adj2[d * N + o : d * N + o + n]
        perturb_run(adj2, d * N + o, n)
    if first:
        perturb_run(buf, N + o, n)
    return saved


@numba.njit(**_OPTIONS)
def restore_seeds(buf, adj2, N, o, n, k, saved):
    buf[N + o : N + o + n] = saved[:n]
    for d in range(k):
        adj2[d * N + o : d * N + o + n] = saved[(d + 1) * n : (d + 2) * n]
