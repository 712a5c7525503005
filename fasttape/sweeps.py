"""The compiled sweeps over a tape, and the entry points that run them.

Each sweep walks the instruction table in order (forward, tangent) or backwards (reverse,
second order).  It streams runs of the scalar code (``fasttape.scalar_runs``), runs fused
regions tile by tile (``fasttape.regions``), and hands every other instruction to its
family's kernel (``fasttape.dispatch``); the rules themselves live in the families.

Tangents and second-order adjoints live in buffers of their own, direction-major:
direction d of position p is at [d * n_values + p], so each direction is laid out exactly
like the values.  Only active instructions and operands (F_ACTIVE, F_GRAD_*) contribute,
so an input that is not differentiated never turns 0 x inf into NaN.
"""

from __future__ import annotations

import numpy as np

from .dispatch import DISPATCH
from .jit import jit
from .layout import (
    C_FLAGS,
    F_ACTIVE,
    M_GUARDS,
    M_NGUARDS,
    M_NVALS,
    M_NZEROS,
    M_ZEROS,
    S_FUSED,
    S_LOCAL,
    S_SCALAR,
    S_START,
)
from .loops import zero, zero_adjoints
from .regions import region_end, region_forward, region_reverse, region_second, region_tangent
from .scalar_runs import scalar_forward_run, scalar_reverse_run, scalar_second_run, scalar_tangent_run

# The entry points pass their constant flags as reads of this array: typed bool, not Literal[bool], so
# that every call site shares one compiled sweep (each literal combination would compile the sweep and
# its families again, tens of seconds on a cold cache).  Second order's ``second`` stays a literal: the
# HVP and the k-seed reverse are different kernels, each with its branches folded away.
FLAGS = np.array([False, True])

family_forward = DISPATCH.forward
family_reverse = DISPATCH.reverse
family_tangent = DISPATCH.tangent
family_second = DISPATCH.second


@jit
def forward_sweep(ins, code, aux, buf, fused, skip_local):
    """Values of every instruction, in tape order.  With ``fused``, the fused regions run a tile at
    a time and keep their intermediate values in scratch (not for the k-seed reverse, which reads
    every value); with ``skip_local`` too, the regions whose values only the caller reads do not
    run at all (an HVP: its second-order sweep recomputes them)."""
    i = -1
    while i < ins.shape[0] - 1:
        i += 1
        if code[4 * i] & S_SCALAR:
            i = scalar_forward_run(code, buf, i)
        elif fused and code[4 * i] & S_START:
            if skip_local and code[4 * i] & S_LOCAL:
                i = region_end(code, i)
            else:
                i = region_forward(ins, code, buf, i)
        else:
            family_forward(ins, i, aux, buf)


@jit
def guards_hold(aux, buf):
    """True when every recorded branch condition has its traced outcome."""
    start = aux[M_GUARDS]
    for g in range(aux[M_NGUARDS]):
        taken = buf[aux[start + 2 * g]] != 0.0
        if taken != (aux[start + 2 * g + 1] != 0):
            return False
    return True


@jit
def reverse_sweep(ins, code, aux, buf, skipped_local):
    """Accumulate adjoints buf[N + p] in reverse tape order (seeded by the caller).
    ``skipped_local``: the forward skipped the S_LOCAL regions (run_value_and_grad)."""
    N = aux[M_NVALS]
    i = ins.shape[0]
    while i > 0:
        i -= 1
        if code[4 * i] & S_SCALAR:
            i = scalar_reverse_run(code, buf, N, i)
        elif code[4 * i] & S_FUSED:
            i = region_reverse(ins, code, buf, N, i, skipped_local)
        elif ins[i, C_FLAGS] & F_ACTIVE:
            family_reverse(ins, i, aux, buf, N)


@jit
def tangent_sweep(ins, code, aux, buf, tan, k, skip_local):
    """Tangents of every active instruction for k directions (after a forward sweep).  With
    ``skip_local``, the regions whose values only the caller reads (S_LOCAL) are skipped: the second-order
    sweep recomputes their tangents tile by tile, and only a JVP returns the output's tangent."""
    NV = aux[M_NVALS]
    i = -1
    while i < ins.shape[0] - 1:
        i += 1
        if code[4 * i] & S_SCALAR:
            i = scalar_tangent_run(code, buf, tan, NV, k, i)
        elif code[4 * i] & S_START:
            if skip_local and code[4 * i] & S_LOCAL:
                i = region_end(code, i)
            else:
                i = region_tangent(ins, code, buf, tan, NV, k, i)
        elif ins[i, C_FLAGS] & F_ACTIVE:
            family_tangent(ins, i, aux, buf, tan, NV, k)


@jit
def zero_runs(aux, buf, adj2, k, second):
    """Zero the adjoints that no instruction initialises (see adjoint_plan.plan_adjoint_initialisation)."""
    N = aux[M_NVALS]
    zeros = aux[M_ZEROS]
    for z in range(aux[M_NZEROS]):
        zero_adjoints(buf, adj2, N, k, aux[zeros + 2 * z], aux[zeros + 2 * z + 1], second)


@jit
def second_order_sweep(ins, code, aux, buf, tan, adj2, k, second):
    """Reverse sweep over k directions of ``adj2``.

    With ``second``: forward-over-reverse.  Accumulates the first-order adjoint in buf[N + p]
    (seeded by the caller; the zero runs of the adjoint initialisation plan zeroed, everything
    else first written by assignment) and, in ``adj2``, its tangent along each direction of
    ``tan``:  for z = f(x, y),
        x̄ += z̄ f_x      x̄' += z̄' f_x + z̄ (f_xx x' + f_xy y').
    Without ``second``: plain reverse mode for k seeds placed in ``adj2`` (``tan`` and the
    first-order adjoint are not used).
    """
    N = aux[M_NVALS]
    i = ins.shape[0]
    while i > 0:
        i -= 1
        if code[4 * i] & S_SCALAR:
            i = scalar_second_run(code, buf, tan, adj2, N, k, second, i)
        elif second and code[4 * i] & S_FUSED:  # (the k-seed reverse runs after a forward keeping every value)
            i = region_second(ins, code, buf, tan, adj2, N, k, i)
        elif ins[i, C_FLAGS] & F_ACTIVE:
            family_second(ins, i, aux, buf, tan, adj2, N, k, second)


# --------------------------------------------------------------------------
# entry points: one compiled call per user call
# --------------------------------------------------------------------------
@jit
def run_forward(ins, code, aux, buf, fused):
    """Forward sweep; returns False when a recorded branch is not taken.  ``fused=False`` keeps every
    value (for the k-direction sweeps that may follow)."""
    forward_sweep(ins, code, aux, buf, fused, FLAGS[0])
    return guards_hold(aux, buf)


@jit
def run_value_and_grad(ins, code, aux, buf, out, fused):
    """Forward sweep, then a reverse sweep seeded with 1 at position ``out`` (``fused`` as in
    run_forward).  Fused, the regions that only the caller reads (S_LOCAL) run once, in the reverse,
    which computes their values tile by tile anyway."""
    forward_sweep(ins, code, aux, buf, fused, fused)
    if not guards_hold(aux, buf):
        return False
    N = aux[M_NVALS]
    zeros = aux[M_ZEROS]
    for z in range(aux[M_NZEROS]):
        zero(buf, N + aux[zeros + 2 * z], aux[zeros + 2 * z + 1])
    buf[N + out] = 1.0
    reverse_sweep(ins, code, aux, buf, fused)
    return True


@jit
def run_reverse(ins, code, aux, buf):
    """Reverse sweep only, on adjoints already seeded by the caller."""
    reverse_sweep(ins, code, aux, buf, FLAGS[0])


@jit
def run_jvp(ins, code, aux, buf, tan, k):
    """Forward sweep, then tangents along k seeded directions."""
    forward_sweep(ins, code, aux, buf, FLAGS[1], FLAGS[0])
    if not guards_hold(aux, buf):
        return False
    tangent_sweep(ins, code, aux, buf, tan, k, FLAGS[0])
    return True


@jit
def run_hvp(ins, code, aux, buf, tan, adj2, k, out, with_values):
    """Hessian-vector products along k seeded directions, forward-over-reverse.

    ``with_values=False`` reuses the values of an earlier forward sweep (many
    HVPs at one point); the tangent and both adjoint sweeps always run.
    """
    N = aux[M_NVALS]
    if with_values:
        forward_sweep(ins, code, aux, buf, FLAGS[1], FLAGS[1])
        if not guards_hold(aux, buf):
            return False
    tangent_sweep(ins, code, aux, buf, tan, k, FLAGS[1])
    zero_runs(aux, buf, adj2, k, FLAGS[1])
    buf[N + out] = 1.0
    second_order_sweep(ins, code, aux, buf, tan, adj2, k, True)
    return True


@jit
def run_vector_reverse(ins, code, aux, buf, adj2, k):
    """Reverse mode for k cotangent seeds already placed in adj2 (values from a forward sweep)."""
    second_order_sweep(ins, code, aux, buf, adj2[:0], adj2, k, False)


ENTRY_POINTS = ("run_forward", "run_value_and_grad", "run_reverse", "run_jvp", "run_hvp", "run_vector_reverse")
