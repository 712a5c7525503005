"""Batches of one tape: a sweep for every member in one compiled call, on every core.

``run(tape, entry, args0, inputs, size, ...)`` binds the first member's arguments into a workspace
(so every check of a single call applies), copies that buffer once per thread, and hands the members'
inputs (``inputs``: per batched leaf its ``(size, *leaf.shape)`` C float64 block) to the entry point's
driver (``fasttape.batch_calls``).  The tier is the one a single call would run now: the tape's own
kernel when it is built, else the interpreter, so that a batch's results are a loop of single calls',
bit for bit.  While the interpreter itself is still compiling there is no driver to call, and ``run``
returns None: the caller loops over single calls (the same results by definition).

What comes back is the status per member (``batch_calls``: 0 done, 1 a guard took another branch, 2 a
sweep raised) and one ``(size, *shape)`` array per result leaf, the members' rows in order.

The thread count: ``workers`` (an int; ``-1`` all of Numba's threads), else the ``workers`` option
(``ft.set_options(workers=...)``, ``FASTTAPE_WORKERS``), else all of them: Numba's
``NUMBA_NUM_THREADS``, which defaults to the CPUs this process may run on.  A batch too small to share
(under ``SERIAL_VALUES`` values of work) runs the serial twin on the calling thread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from . import batch_calls, config, tape_kernels, tiers
from . import kernels as K

SERIAL_VALUES = 1 << 15  # values swept by a whole batch below which threads cost more than they save
CHUNKS_PER_THREAD = 8  # a prange's members are dealt out in chunks, taken as threads come free (a busy core
# then holds back one chunk, not half of the batch)
_BLAS_KINDS = {"matmul", "solve", "trisolve", "cholesky", "lu", "qr", "eigh", "svd", "slogdet"}
_INTERPRETER = {"forward": "run_forward", "value_and_grad": "run_value_and_grad", "jvp": "run_jvp", "hvp": "run_hvp"}
ENTRIES = ("forward", "value_and_grad", "jvp", "hvp", "vjp", "value_grad_and_hvp")


def threads(workers=None) -> int:
    """The threads a batch runs on: ``workers`` (``-1``: all), else the ``workers`` option, else all."""
    if workers is None:
        workers = config.workers()
    limit = numba.config.NUMBA_NUM_THREADS
    if workers is None or workers == -1:
        return limit
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int or -1 (every thread), got {workers!r}.")
    if workers > limit:
        raise ValueError(
            f"workers={workers} is more than the {limit} threads Numba was started with (NUMBA_NUM_THREADS, by "
            "default the CPUs this process may use). Ask for at most that, or set NUMBA_NUM_THREADS before "
            "fasttape is imported."
        )
    return workers


@dataclass
class Take:
    """One result leaf: ``size`` values at ``offset`` of ``source`` (0 the buffer, 1 tangents, 2 second-order
    adjoints, 3 a tape kernel's JVP results), ``shape`` per member; ``kind``: "f", "bool" or "int" (an aux
    output), or "const" (``value``, the same for every member)."""

    source: int
    offset: int
    shape: tuple
    kind: str = "f"
    value: object = None

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def _entry_takes(tape, entry: str, tier: str) -> list[Take]:
    """What a caller reads after ``entry``: forward the outputs then the aux; value_and_grad the value,
    the differentiated leaves' adjoints, then the aux; jvp the outputs, the aux, then the outputs'
    tangents; hvp the second-order adjoints of the differentiated leaves, after the value and the gradient
    for value_grad_and_hvp (the interpreter's HVP sweep computes them on its way)."""
    N = tape.n_values

    def read(entries):
        takes = []
        for e in entries:
            if e[0] == "const":
                takes.append(Take(0, 0, np.shape(e[1]), "const", e[1]))
            else:
                takes.append(Take(0, e[0], tuple(e[1]), e[2] if len(e) == 3 else "f"))
        return takes

    diff = [leaf for i in tape._diff_args for leaf in tape._args[i].leaves if leaf.kind != "static"]
    aux = read(tape._aux) if tape.has_aux else []
    if entry == "forward":
        return read(tape._outputs) + aux
    if entry == "vjp":
        return [Take(0, N + leaf.offset, leaf.shape) for leaf in diff]
    if entry == "value_and_grad":
        return [Take(0, tape._out_position, ())] + [Take(0, N + leaf.offset, leaf.shape) for leaf in diff] + aux
    if entry == "jvp":
        if tier == "kernel":  # its results: the outputs' tangents first (tape_kernels.caller_reads)
            tangents, at = [], 0
            for _, shape in tape._outputs:
                tangents.append(Take(3, at, tuple(shape)))
                at += math.prod(shape)
        else:
            tangents = [Take(1, offset, tuple(shape)) for offset, shape in tape._outputs]
        return read(tape._outputs) + aux + tangents
    hvps = [Take(2, leaf.offset, leaf.shape) for leaf in diff]
    if entry == "value_grad_and_hvp":
        return [Take(0, tape._out_position, ())] + [Take(0, N + leaf.offset, leaf.shape) for leaf in diff] + hvps
    return hvps


def _uses_blas(tape) -> bool:
    kinds = tape.__dict__.get("_batch_blas")
    if kinds is None:
        kinds = tape.__dict__["_batch_blas"] = any(
            K.PRIMITIVE_BY_OPCODE[int(op)].kind in _BLAS_KINDS for op in np.unique(tape.ins[:, K.C_OP])
        )
    return kinds


def _tier(tape, entry: str, size: int, buf, interpreted=False):
    """(tier, the sweep's dispatcher, its in-place argument ranges) a single call of ``entry`` would run now,
    counting the batch's calls toward the tape's kernels as single calls count (``interpreted``: the single
    call runs the interpreter whatever the tape's kernels, as a VJP's forward); None while the interpreter is
    compiling (or Numba is off)."""
    kernels = tape._kernels
    if entry == "vjp":  # (Tape.vjp runs the interpreter's sweeps)
        forward, reverse = interpreter("run_forward"), interpreter("run_reverse")
        if forward is None or reverse is None:
            return None
        where = [(tape.n_values, batch_calls.address(reverse, batch_calls.REVERSE))]
        return "interpreter", forward, where + [(offset, math.prod(shape)) for offset, shape in tape._outputs]
    if interpreted:
        kernel = None
    elif entry in ("forward", "value_and_grad"):
        if getattr(kernels, entry) is None:
            kernels.calls += size - 1
            kernels.called(tape, entry, buf)
        kernel = getattr(kernels, entry)
    else:
        kernel = kernels.entry(tape, entry)
    if kernel is not None:
        if not hasattr(kernel, "overloads"):  # Numba off (NUMBA_DISABLE_JIT): no entry point to call
            return None
        return "kernel", kernel, {"value_and_grad": kernels.refs, "hvp": kernels.hvp_refs}.get(entry, [])
    sweep = interpreter(_INTERPRETER[entry])
    return None if sweep is None else ("interpreter", sweep, [])


def interpreter(name: str):
    """The interpreter's compiled entry point ``name`` (``fasttape.tiers``) when a single call would run it now,
    else None: still compiling (the ``compiled`` tier: compiled here, as a single call would wait for it), or
    Numba off (NUMBA_DISABLE_JIT: no entry point to call)."""
    entry = tiers._ENTRIES[name]
    if not hasattr(entry.compiled, "overloads"):
        return None
    if entry.ready() or tiers.mode() == "compiled":  # (batch_calls.address compiles what is missing)
        return entry.compiled
    return None


def _planes(tape, entry: str, tier: str):
    """The direction buffers of a member's sweep, as (offset, size) in its thread's plane row, and the row's
    length: tangents and adjoints for an HVP; tangents, a kernel's plane of two and its results for a JVP."""
    N = tape.n_values
    sizes = {"forward": (0, 0, 0, 0), "value_and_grad": (0, 0, 0, 0)}.get(entry)
    if sizes is None:
        if entry == "hvp":
            sizes = (N, N, 0, 0)
        elif entry == "vjp":  # the cotangents of the outputs, one after another
            sizes = (sum(math.prod(shape) for _, shape in tape._outputs), 0, 0, 0)
        else:
            sizes = (N, 0, 2 * N, tape._kernels.results_size) if tier == "kernel" else (N, 0, 0, 0)
    params, at = [], 0
    for size in sizes:
        params += [at, size]
        at += size
    return params, at


def run(tape, entry: str, args0, inputs, size: int, workers=None, seeds=(), interpreted=False, io=True):
    """``entry`` (one of ``ENTRIES``) of ``tape`` for ``size`` members: the members' arguments are ``args0`` with
    the leaves of ``inputs`` ((argument, leaf index, (size, *leaf.shape) C float64 block)) replaced, and their
    directions ``seeds`` ((offset, (size, n) block) in the tangents: a JVP's or an HVP's at the differentiated
    leaves' offsets, a VJP's cotangents one output after another; ``interpreted``: see ``_tier``; ``io`` False:
    never the tape's io kernel).  Returns ``(status, [(size, *take.shape) array per Take], takes)``, or None
    when no compiled tier is ready."""
    sweep = "hvp" if entry == "value_grad_and_hvp" else entry
    ws = tape._take_workspace()
    try:
        tape._bind(args0, ws)
        chosen = _tier(tape, sweep, size, ws.buf, interpreted)
        if chosen is None:
            return None
        tier, dispatcher, refs = chosen
        if sweep != entry and tier == "kernel":  # the tape's HVP kernel computes H v alone: its value_and_grad follows
            return _kernel_value_grad_and_hvp(tape, args0, inputs, size, workers, seeds)
        T = threads(workers)
        if size * tape.n_values < SERIAL_VALUES:
            T = 1
        params, row = _planes(tape, sweep, tier)
        config.check_memory(8 * T * (2 * tape.n_values + row), f"the batch buffers of the tape of {tape.name!r}")
        bufs = np.empty((T, ws.buf.size))
        bufs[:] = ws.buf
    finally:
        tape._return_workspace(ws)
    takes = _entry_takes(tape, entry, tier)
    status = np.zeros(size, dtype=np.int8)
    if entry == "value_and_grad" and tier == "kernel" and io and _io_fits(tape, args0, inputs):
        results = _run_io(tape, args0, inputs, bufs, status, T)
        return status, results, takes
    planes = np.zeros((T, max(row, 1)))
    params = np.array([tape._out_position, *params, *(x for ref in refs for x in ref)], dtype=np.int64)
    X, put = _pack(tape, inputs, seeds)
    outputs = [t for t in takes if t.kind != "const"]
    Y = np.empty(size * sum(t.size for t in outputs))
    take = np.zeros((len(outputs), 4), dtype=np.int64)
    base = 0
    for s, t in enumerate(outputs):
        take[s] = (t.source, t.offset, base, t.size)
        base += size * t.size
    n_views = len(refs) if sweep in batch_calls.REF_SOURCES else 0  # (a VJP's "refs" are integers of its member)
    address = batch_calls.address(dispatcher, batch_calls.argtypes(sweep, tier, n_views))
    drive = batch_calls.driver(sweep, tier, n_views, T > 1)
    _launch(drive, (address, tape.ins, tape.code, tape.aux, tape_kernels.ADDRESSES, bufs, planes, params, X, put, Y,
                    take, status), T, tape)  # fmt: skip
    return status, _results(takes, Y, size), takes


def _kernel_value_grad_and_hvp(tape, args0, inputs, size, workers, seeds):
    """``value_grad_and_hvp`` as its single call runs it on a tape's own kernels: the HVP kernel, then the
    value_and_grad kernel (not the io kernel) on the same inputs; two batches, a member done when both are."""
    hvps = run(tape, "hvp", args0, inputs, size, workers, seeds)
    firsts = run(tape, "value_and_grad", args0, inputs, size, workers, io=False)
    if hvps is None or firsts is None:
        return None
    status = np.maximum(hvps[0], firsts[0])
    return status, firsts[1] + hvps[1], firsts[2] + hvps[2]


def _io_fits(tape, args0, inputs) -> bool:
    """Whether the members' gradients go through the tape's io kernel, as their single calls would: the
    arguments float64 arrays of the recorded shapes, the shared ones C-contiguous (the kernel's layout)."""
    if tape._kernels.value_and_grad_io is None:
        return False
    from .tape import float64_arrays

    batched = {i for i, _, _ in inputs}
    return float64_arrays(args0, tape._io_shapes) and all(
        args0[i].flags.c_contiguous for i in range(len(args0)) if i not in batched
    )


def _run_io(tape, args0, inputs, bufs, status, T):
    kernels = tape._kernels
    blocks = {i: block for i, _, block in inputs}
    arrays = [blocks.get(i, a) for i, a in enumerate(args0)]
    batched = [i in blocks for i in range(len(args0))]
    size = status.size
    values, G = np.empty(size), np.empty((size, *tape._grad_shape))
    key = ("_batch_io", tuple(batched), T > 1)
    found = tape.__dict__.get(key)
    if found is None:
        diff = tape._diff_args[0]
        argtypes = batch_calls.io_argtypes(tape._io_shapes, diff, kernels.short_io)
        address = batch_calls.address(kernels.value_and_grad_io, argtypes)
        found = tape.__dict__[key] = address, batch_calls.io_driver(tape._io_shapes, diff, batched, kernels.short_io,
                                                                    T > 1)  # fmt: skip
    address, drive = found
    _launch(drive, (address, tape.ins, tape.aux, bufs, kernels.fns, *arrays, G, values, tape._out_position), T, tape,
            status)  # fmt: skip
    return [values, G]


def _launch(drive, call, T, tape, status=None):
    """Run a driver: on the calling thread, or on ``T`` threads taking chunks of members as they come free."""
    if status is not None:
        call = (*call, status)
    status = call[-1]
    if T == 1:
        drive(*call)
        return
    previous_threads = numba.get_num_threads()
    numba.set_num_threads(T)
    previous_chunk = numba.set_parallel_chunksize(max(1, status.size // (CHUNKS_PER_THREAD * T)))
    try:
        if _uses_blas(tape):  # T threads each in a BLAS call of T threads would oversubscribe the cores
            with _blas_one_thread():
                drive(*call)
        else:
            drive(*call)
    finally:
        numba.set_parallel_chunksize(previous_chunk)
        numba.set_num_threads(previous_threads)


def _blas_one_thread():
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


def _pack(tape, inputs, seeds):
    """The members' inputs and directions in one flat array, each leaf a (size, n) block, and where each goes
    in a member's buffers (put rows: (0 buffer / 1 tangents, offset, the block's start, n))."""
    blocks, put, base = [], [], 0
    for i, j, block in inputs:
        leaf = tape._args[i].leaves[j]
        blocks.append(block)
        put.append((0, leaf.offset, base, leaf.size))
        base += block.size
    for offset, block in seeds:
        blocks.append(block)
        put.append((1, offset, base, block.shape[1] if block.ndim > 1 else 1))
        base += block.size
    if len(blocks) == 1 and blocks[0].flags.c_contiguous:
        X = blocks[0].reshape(-1)
    else:
        X = np.concatenate([b.reshape(-1) for b in blocks]) if blocks else np.empty(0)
    return X, np.array(put, dtype=np.int64).reshape(-1, 4)


def _results(takes, Y, size):
    results, base = [], 0
    for t in takes:
        if t.kind == "const":
            value = np.asarray(t.value)
            results.append(np.broadcast_to(value, (size, *value.shape)).copy())
            continue
        block = Y[base : base + size * t.size].reshape((size, *t.shape))
        base += size * t.size
        if t.kind == "bool":
            block = block != 0.0
        elif t.kind == "int":
            block = block.astype(np.int64)
        results.append(block)
    return results
