"""Jacobians and Hessians of a batch: every member's blocks of directions in one compiled call.

A single call (``fasttape.derivatives``) fills a dense matrix block by block: k unit tangents per tangent
sweep (``jacfwd``), k unit adjoints per reverse sweep after one forward sweep (``jacrev``), k unit directions
per HVP sweep (the Hessian; the values swept with the first block only).  The drivers here run those very
blocks, the same block size in the same order, for every member of a batch, in a ``prange`` over per-thread
buffers as ``fasttape.batch_calls``' drivers do (whose address calls, parallel and serial twins and status
per member they share), so that the matrices are a loop of single calls', bit for bit.

``run(tape, kind, args0, inputs, size, workers)`` returns the status per member and the ``(size, rows,
columns)`` matrices, or None when the single calls would not run these drivers' sweeps: the interpreter
still compiling, or a tape's own HVP kernel in the blocks (one direction per block: huge tapes only).  A
Hessian of one input is the HVP along 1 (``fasttape.batch``'s ``hvp`` entry, the tape's kernel when built).
"""

from __future__ import annotations

import numpy as np

from . import batch, batch_calls, config
from . import derivatives as D
from .tape_kernels import ADDRESSES

INS, CODE, AUX, BUF, I64, BOOL = (batch_calls.INS, batch_calls.CODE, batch_calls.AUX, batch_calls.BUF,
                                  batch_calls.I64, batch_calls.BOOL)  # fmt: skip
KINDS = ("jacfwd", "jacrev", "jacobian", "hessian")  # what run takes (jacobian: the mode its tape chose)

_TEMPLATE = '''\
@jit
def attempt(address, {names}):
    """One sweep: 0 done, 1 a guard failed, 2 it raised (caught here: Numba does not catch what a call raises
    inside a loop of a try block)."""
    try:
        ok = call(address, {names})
    except Exception:
        return 2
    return 0 if ok else 1


@jit
def attempt_reverse(address, ins, code, aux, buf, adj2, k):
    """One reverse sweep of k seeds: 0 done, 2 it raised."""
    try:
        call_vector_reverse(address, ins, code, aux, buf, adj2, k)
    except Exception:
        return 2
    return 0


@jit
def member(address, ins, code, aux, fns, buf, row, params, at, out):
    """One member's matrix, block after block, into ``out`` (rows x columns, row-major): 0 done, 1 a guard
    failed, 2 it raised.  ``at``: the buffer positions of the differentiated inputs, then of the outputs."""
    n_in = params[1]
    k = params[3]
    N = params[4]
{body}
    return 0


def drive(address, ins, code, aux, fns, bufs, planes, params, X, put, Y, at, status):
    """Every member b: its inputs from X, its matrix to Y[b]."""
    m = params[1] * params[2]
    for b in {loop}(status.shape[0]):
        t = {thread}
        buf = bufs[t]
        for s in range(put.shape[0]):
            n = put[s, 3]
            start = put[s, 2] + b * n
            buf[put[s, 1] : put[s, 1] + n] = X[start : start + n]
        status[b] = member(address, ins, code, aux, fns, buf, planes[t], params, at, Y[b * m : (b + 1) * m])
'''

# unit seeds of directions begin .. begin + kb on the inputs (every input position written, as derivatives._seed)
_SEEDS = """\
        for d in range(kb):
            for c in range(n_in):
                tan[d * N + at[c]] = 1.0 if c == begin + d else 0.0"""

# (the body's statements, at 4 spaces) per (kind, tier).  params: 0 the output's position, 1 inputs, 2 rows,
# 3 block size, 4 values, 5 the second address (jacrev) or the kernel's results per direction (jacfwd).
_BODIES = {
    # columns begin .. begin + kb: a tangent sweep of kb unit seeds (derivatives._forward_block)
    ("jacfwd", "interpreter"): f"""\
    n_out = params[2]
    for begin in range(0, n_in, k):
        kb = min(k, n_in - begin)
        tan = row[: kb * N]
{_SEEDS}
        failed = attempt(address, ins, code, aux, buf, tan, kb)
        if failed:
            return failed
        for r in range(n_out):
            for d in range(kb):
                out[r * n_in + begin + d] = tan[d * N + at[n_in + r]]""",
    ("jacfwd", "kernel"): f"""\
    n_out = params[2]
    R = params[5]
    plane = row[k * N : k * N + 2 * N]
    for begin in range(0, n_in, k):
        kb = min(k, n_in - begin)
        tan = row[: kb * N]
        results = row[k * N + 2 * N : k * N + 2 * N + kb * R]
{_SEEDS}
        failed = attempt(address, ins, aux, buf, tan, kb, plane, results, fns)
        if failed:
            return failed
        for r in range(n_out):
            for d in range(kb):
                out[r * n_in + begin + d] = results[d * R + r]""",
    # one forward sweep keeping every value, then rows begin .. begin + kb: a reverse sweep of kb unit seeds on
    # the outputs (derivatives._reverse_block)
    ("jacrev", "interpreter"): """\
    n_out = params[2]
    failed = attempt(address, ins, code, aux, buf, False)
    if failed:
        return failed
    for begin in range(0, n_out, k):
        kb = min(k, n_out - begin)
        adj2 = row[: kb * N]
        adj2[:] = 0.0
        for d in range(kb):
            adj2[d * N + at[n_in + begin + d]] += 1.0
        if attempt_reverse(params[5], ins, code, aux, buf, adj2, kb):
            return 2
        for d in range(kb):
            for c in range(n_in):
                out[(begin + d) * n_in + c] = adj2[d * N + at[c]]""",
    # columns begin .. begin + kb: H v for kb unit directions, the values swept with the first block only
    # (derivatives.hessian_matrix)
    ("hessian", "interpreter"): f"""\
    for begin in range(0, n_in, k):
        kb = min(k, n_in - begin)
        tan = row[: kb * N]
        adj2 = row[k * N : k * N + kb * N]
{_SEEDS}
        failed = attempt(address, ins, code, aux, buf, tan, adj2, kb, params[0], begin == 0)
        if failed:
            return failed
        for c in range(n_in):
            for d in range(kb):
                out[c * n_in + begin + d] = adj2[d * N + at[c]]""",
}

# the sweep each body calls (its argument types); the interpreter's by name in fasttape.sweeps
_ARGTYPES = {
    ("jacfwd", "interpreter"): (INS, CODE, AUX, BUF, BUF, I64),
    ("jacfwd", "kernel"): (INS, AUX, BUF, BUF, I64, BUF, BUF, AUX),
    ("jacrev", "interpreter"): (INS, CODE, AUX, BUF, BOOL),
    ("hessian", "interpreter"): (INS, CODE, AUX, BUF, BUF, BUF, I64, I64, BOOL),
}
_SWEEPS = {"jacfwd": "run_jvp", "jacrev": "run_forward", "hessian": "run_hvp"}


def source(kind: str, tier: str, parallel: bool) -> str:
    """The generated module of one driver (readable: ``print(batch_blocks.source("jacrev", "interpreter",
    True))``)."""
    names = ", ".join(f"a{i}" for i in range(len(_ARGTYPES[kind, tier])))
    text = _TEMPLATE.format(names=names, body=_BODIES[kind, tier], loop="{loop}", thread="{thread}")
    return batch_calls._finish(text, parallel)


_DRIVERS: dict = {}


def driver(kind: str, tier: str, parallel: bool):
    """The compiled driver (generated and loaded once per process by ``batch_calls``, its machine code from the
    disk cache after the first process)."""
    key = (kind, tier, parallel)
    drive = _DRIVERS.get(key)
    if drive is None:
        drive = _DRIVERS[key] = batch_calls._load(source(kind, tier, parallel), _ARGTYPES[kind, tier])
    return drive


def _tier(tape, kind: str, k: int, n_in: int):
    """(tier, the sweep's dispatcher, params[5]) the single calls' blocks would run now, or None."""
    if kind == "jacfwd":
        kernel = tape._kernels.entry(tape, "jvp")
        if kernel is not None:
            if not hasattr(kernel, "overloads"):
                return None
            return "kernel", kernel, tape._kernels.results_size
    if kind == "hessian" and k == 1 and n_in > 1 and tape._kernels.entry(tape, "hvp") is not None:
        return None  # (the first block on the tape's kernel, the others on the interpreter: left to single calls)
    dispatcher = batch.interpreter(_SWEEPS[kind])
    if dispatcher is None:
        return None
    if kind != "jacrev":
        return "interpreter", dispatcher, 0
    reverse = batch.interpreter("run_vector_reverse")
    if reverse is None:
        return None
    return "interpreter", dispatcher, batch_calls.address(reverse, batch_calls.VECTOR_REVERSE)


def resolve(tape, kind: str) -> str | None:
    """``jacfwd``, ``jacrev`` or ``hessian`` for a Jacobian (``jacobian``: the mode the tape measured on its first
    call, or the one the directions decide), or None when the tape has not chosen yet."""
    if kind != "jacobian":
        return kind
    mode = D._known_cheaper(tape, D._n_inputs(tape), D._n_outputs(tape))
    return {"fwd": "jacfwd", "rev": "jacrev"}.get(mode)


def run(tape, kind: str, args0, inputs, size: int, workers=None):
    """The matrix of ``kind`` (``jacfwd``, ``jacrev``, ``jacobian`` or ``hessian``) of ``size`` members (arguments
    as ``batch.run``'s).  Returns ``(status, [the (size, rows, columns) matrices], None)`` (``batch.run``'s
    shape, without takes), or None (see the module)."""
    kind = resolve(tape, kind)
    if kind is None:
        return None
    n_in = D._n_inputs(tape)
    if kind == "hessian":
        D._require_scalar(tape, "hessian")
        if n_in == 1:  # H = H·1, the HVP entry as a single call runs it (the tape's kernel when built)
            (leaf,) = [leaf for _, leaf in D._diff_leaves(tape)]
            ran = batch.run(tape, "hvp", args0, inputs, size, workers, [(leaf.offset, np.ones((size, 1)))])
            return None if ran is None else (ran[0], [ran[1][0].reshape(size, 1, 1)], None)
    rows = n_in if kind == "hessian" else D._n_outputs(tape)
    N = tape.n_values
    k = D.block_size(tape, rows if kind == "jacrev" else n_in)
    ws = tape._take_workspace()
    try:
        tape._bind(args0, ws)
        chosen = _tier(tape, kind, k, n_in)
        if chosen is None:
            return None
        tier, dispatcher, extra = chosen
        T = batch.threads(workers)
        if size * N * (rows if kind == "jacrev" else n_in) < batch.SERIAL_VALUES:
            T = 1
        row = k * N  # a member's plane: k directions' tangents (jacfwd) or adjoints (jacrev) ...
        if kind == "hessian":
            row += k * N  # ... tangents then second-order adjoints
        elif tier == "kernel":
            row += 2 * N + k * extra  # ... then the JVP kernel's plane of two and its results
        config.check_memory(8 * (T * (N + row) + size * rows * n_in), f"the batch's matrices of {tape.name!r}")
        bufs = np.empty((T, ws.buf.size))
        bufs[:] = ws.buf
    finally:
        tape._return_workspace(ws)
    inputs_at = [leaf.offset + np.arange(leaf.size) for _, leaf in D._diff_leaves(tape)]
    outputs_at = [offset + np.arange(n) for offset, _, n in D._out_leaves(tape)] if kind != "hessian" else []
    at = np.concatenate(inputs_at + outputs_at).astype(np.int64)
    params = np.array([tape._out_position, n_in, rows, k, N, extra], dtype=np.int64)
    X, put = batch._pack(tape, inputs, ())
    Y = np.empty(size * rows * n_in)
    status = np.zeros(size, dtype=np.int8)
    planes = np.zeros((T, row))
    address = batch_calls.address(dispatcher, _ARGTYPES[kind, tier])
    drive = driver(kind, tier, T > 1)
    batch._launch(drive, (address, tape.ins, tape.code, tape.aux, ADDRESSES, bufs, planes, params, X, put, Y, at,
                          status), T, tape)  # fmt: skip
    return status, [Y.reshape(size, rows, n_in)], None
