"""Compiled drivers of batches: one call runs a sweep for every member of a batch, over every core.

A driver is a Numba function, ``parallel=True`` and ``nogil``, whose ``prange`` loop gives each
thread a buffer of its own (``bufs[thread]``, a copy of one bound workspace).  For each member it
writes the member's inputs (and, for JVPs and HVPs, its direction) into that buffer, calls the sweep
and copies what the caller reads into the results, each result leaf a block of ``(batch, size)`` in
one flat array, so that its rows are the members' results in order.

The sweep is called through its native entry point (``kernel_calls``'s way: an address passed at run
time), the interpreter's (``fasttape.sweeps``) or a tape's own kernels (``fasttape.tape_kernels``):
linking the interpreter into the driver by name would compile it again for a minute; through its
address the driver compiles in seconds and runs the very machine code a single call runs, so a batch
gives a loop of single calls' results bit for bit.  A member's sweep that raises (an index out of
range) or whose guard fails must not leave the ``prange`` (Numba turns that into a ``SystemError``):
``member`` catches it and the driver records a status per member, 0 done, 1 a guard took another
branch, 2 raised; the caller deals with those members one at a time.

One module is generated per entry point, tier and number of in-place arguments (``REFS``: a tape's
kernel takes views of its buffer as arguments), with a parallel driver and a serial twin of the same
body (``workers=1`` and batches too small to share).  Its source names its cache files, so the next
process loads them from the disk cache.
"""

from __future__ import annotations

import hashlib
import threading

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from .codegen import load_generated
from .jit import jit
from .kernel_calls import call_address

INS, CODE, AUX, BUF = types.int64[:, ::1], types.uint32[::1], types.int64[::1], types.float64[::1]
I64, BOOL = types.int64, types.boolean

# (entry point, tier) -> (the sweep's argument types, the arguments the member passes it).  In the member:
# ``buf`` the thread's buffer, ``tan`` / ``adj2`` / ``plane`` / ``results`` its direction buffers (slices of
# its plane row), ``params`` the integers of the call, ``refs`` the (offset, size) of a kernel's in-place
# arguments, ``fns`` the family kernels' addresses a tape's kernels take.
ENTRIES = {
    ("forward", "interpreter"): ((INS, CODE, AUX, BUF, BOOL), "ins, code, aux, buf, True"),
    ("value_and_grad", "interpreter"): ((INS, CODE, AUX, BUF, I64, BOOL), "ins, code, aux, buf, params[0], True"),
    ("jvp", "interpreter"): ((INS, CODE, AUX, BUF, BUF, I64), "ins, code, aux, buf, tan, 1"),
    ("hvp", "interpreter"): (
        (INS, CODE, AUX, BUF, BUF, BUF, I64, I64, BOOL),
        "ins, code, aux, buf, tan, adj2, 1, params[0], True",
    ),
    ("vjp", "interpreter"): ((INS, CODE, AUX, BUF, BOOL), ""),  # (run_forward; its own member: vjp_source)
    ("forward", "kernel"): ((INS, AUX, BUF, AUX), "ins, aux, buf, fns"),
    ("value_and_grad", "kernel"): ((INS, AUX, BUF, AUX), "ins, aux, buf, fns{refs}"),
    ("jvp", "kernel"): ((INS, AUX, BUF, BUF, I64, BUF, BUF, AUX), "ins, aux, buf, tan, 1, plane, results, fns"),
    ("hvp", "kernel"): ((INS, AUX, BUF, BUF, BUF, AUX), "ins, aux, buf, tan, adj2, fns{refs}"),
}
REF_SOURCES = {"value_and_grad": ("buf",), "hvp": ("buf", "tan")}  # the views each in-place argument passes

# the direction buffers a member's sweep uses, as slices of its thread's plane row: (name, params index of the
# offset, params index of the size)
DIRECTIONS = (("tan", 1, 2), ("adj2", 3, 4), ("plane", 5, 6), ("results", 7, 8))

PARAMS = 9  # out, then (offset, size) of each direction buffer


def _caller(argtypes, restype=BOOL):
    """An intrinsic ``call(address, *args)`` that calls the Numba function at ``address`` (compiled for
    ``argtypes``, returning ``restype``: a boolean, or None) and propagates its exception, if any (caught by
    the member)."""

    def codegen(context, builder, signature, args):
        return call_address(context, builder, argtypes, restype, signature, args)

    def typer(typingctx, address, *given):
        if len(given) != len(argtypes):
            return None
        return restype(types.int64, *given), codegen

    return intrinsic(_varargs(typer, len(argtypes)))


def _varargs(typer, n):
    """``typer`` with ``n`` named arguments after the address (Numba's intrinsics take no *args)."""
    names = ", ".join(f"a{i}" for i in range(n))
    namespace = {"typer": typer}
    exec(f"def call(typingctx, address, {names}):\n    return typer(typingctx, address, {names})\n", namespace)
    return namespace["call"]


_TEMPLATE = '''\
@jit
def member(address, ins, code, aux, fns, buf, row, params):
    """One member's sweep on its thread's buffers: 0 done, 1 a guard failed, 2 it raised."""
{slices}
    try:
        ok = call(address, {arguments})
    except Exception:
        return 2
    return 0 if ok else 1


def drive(address, ins, code, aux, fns, bufs, planes, params, X, put, Y, take, status):
    """Every member b: its inputs from X, the sweep, its results to Y; status[b] as member's."""
    for b in {loop}(status.shape[0]):
        t = {thread}
        buf = bufs[t]
        row = planes[t]
        for s in range(put.shape[0]):
            n = put[s, 3]
            start = put[s, 2] + b * n
            target = buf if put[s, 0] == 0 else row[params[1] : params[1] + params[2]]
            target[put[s, 1] : put[s, 1] + n] = X[start : start + n]
        status[b] = member(address, ins, code, aux, fns, buf, row, params)
        if status[b] == 0:
            for s in range(take.shape[0]):
                n = take[s, 3]
                start = take[s, 2] + b * n
                which = take[s, 0]
                if which == 0:
                    source = buf
                elif which == 1:
                    source = row[params[1] : params[1] + params[2]]
                elif which == 2:
                    source = row[params[3] : params[3] + params[4]]
                else:
                    source = row[params[7] : params[7] + params[8]]
                Y[start : start + n] = source[take[s, 1] : take[s, 1] + n]
'''


def source(entry: str, tier: str, n_refs: int, parallel: bool) -> str:
    """The generated module of one driver (readable: ``print(batch_calls.source("value_and_grad",
    "interpreter", 0, True))``)."""
    _, arguments = ENTRIES[entry, tier]
    views = "".join(
        f", {name}[refs[{i}, 0] : refs[{i}, 0] + refs[{i}, 1]]" for i in range(n_refs) for name in REF_SOURCES[entry]
    )
    arguments = arguments.format(refs=views)
    used = arguments.replace(",", " ").split()
    slices = [f"    {name} = row[params[{o}] : params[{o}] + params[{s}]]" for name, o, s in DIRECTIONS if name in used]
    if n_refs:
        slices.append("    refs = params[PARAMS:].reshape(-1, 2)")
    text = _TEMPLATE.format(slices="\n".join(slices) or "    pass", arguments=arguments, **_LATER)
    return _finish(text, parallel)


_VJP_MEMBER = '''\
@jit
def member(address, ins, code, aux, fns, buf, row, params):
    """One member's pull-back: the forward sweep, its cotangent (in its tangent row) seeded on the outputs'
    adjoints, the reverse sweep: 0 done, 1 a guard failed, 2 it raised."""
    cotangents = row[params[1] : params[1] + params[2]]
    n_values = params[PARAMS]
    outputs = params[PARAMS + 2 :].reshape(-1, 2)
    try:
        if not call(address, ins, code, aux, buf, True):
            return 1
        buf[n_values:] = 0.0
        at = 0
        for o in range(outputs.shape[0]):
            start = n_values + outputs[o, 0]
            for e in range(outputs[o, 1]):
                buf[start + e] += cotangents[at + e]
            at += outputs[o, 1]
        call_reverse(params[PARAMS + 1], ins, code, aux, buf)
    except Exception:
        return 2
    return 0
'''
REVERSE = (INS, CODE, AUX, BUF)  # the interpreter's run_reverse
VECTOR_REVERSE = (INS, CODE, AUX, BUF, BUF, I64)  # ... and its run_vector_reverse (fasttape.batch_blocks' jacrev)


def vjp_source(parallel: bool) -> str:
    """The driver of VJPs (the interpreter's forward and reverse sweeps, as ``Tape.vjp``'s pull-back)."""
    drive = _TEMPLATE[_TEMPLATE.index("\n\ndef drive") :]
    return _finish(_VJP_MEMBER + drive, parallel)


_LATER = {"loop": "{loop}", "thread": "{thread}"}  # (placeholders that _finish fills)


def _finish(text: str, parallel: bool) -> str:
    """A template's driver made parallel (a prange, each thread its buffers) or serial (the caller's thread)."""
    header = "@jit(parallel=True)\n" if parallel else "@jit\n"
    text = text.replace("{loop}", "prange" if parallel else "range").replace(
        "{thread}", "get_thread_id()" if parallel else "0"
    )
    return text.replace("\n\ndef drive", "\n\n" + header + "def drive")


_IO_TEMPLATE = '''\
@jit
def member(address, ins, aux, buf, fns, {inputs}, g, values, out, b):
    """One member's gradient through the tape's io kernel: 0 done, 1 a guard failed, 2 it raised."""
    try:
        ok = call(address, {arguments})
    except Exception:
        return 2
    if not ok:
        return 1
    values[b] = buf[out]
    return 0


def drive(address, ins, aux, bufs, fns, {inputs}, G, values, out, status):
    """Every member b: the io kernel reads its arguments where they are and writes its gradient row."""
    for b in {loop}(status.shape[0]):
        buf = bufs[{thread}]
        status[b] = member(address, ins, aux, buf, fns, {members}, G[b], values, out, b)
'''


def io_source(batched: tuple[bool, ...], short: bool, parallel: bool) -> str:
    """The driver of a tape's ``value_and_grad_io`` (``fasttape.tape_kernels``): one argument per array
    argument of the tape, ``batched`` ones indexed by the member (``short``: the kernel takes ``(buf, *args,
    g)``, else ``(ins, aux, buf, fns, *args, g)``)."""
    names = [f"x{i}" for i in range(len(batched))]
    prefix = "buf" if short else "ins, aux, buf, fns"
    text = _IO_TEMPLATE.format(
        inputs=", ".join(names),
        arguments=f"{prefix}, {', '.join(names)}, g",
        members=", ".join(f"{n}[b]" if m else n for n, m in zip(names, batched)),
        **_LATER,
    )
    return _finish(text, parallel)


_MODULES: dict = {}
_LOCK = threading.Lock()


def _load(text: str, argtypes):
    """The module of a driver's source (this module's templates, or ``fasttape.batch_blocks``'), its call
    compiled for ``argtypes`` (which its first line names: a source and its cache files are one per types)."""
    text = f"# calls ({', '.join(map(str, argtypes))})\n{text}"
    with _LOCK:
        module = _MODULES.get(text)
        if module is None:
            digest = hashlib.sha256(text.encode()).hexdigest()[:24]
            namespace = {"jit": jit, "prange": numba.prange, "get_thread_id": numba.get_thread_id, "np": np,
                         "call": _caller(argtypes), "call_reverse": _caller(REVERSE, types.none),
                         "call_vector_reverse": _caller(VECTOR_REVERSE, types.none), "PARAMS": PARAMS}  # fmt: skip
            module = load_generated(f"fasttape.batch_{digest}", text, namespace, filename=f"batch_{digest}.py")
            _MODULES[text] = module
    return module.drive


def driver(entry: str, tier: str, n_refs: int, parallel: bool):
    """The compiled driver (generated and loaded once per process; its machine code from the disk cache
    after the first process)."""
    key = (entry, tier, n_refs, parallel)
    drive = _DRIVERS.get(key)
    if drive is None:
        text = vjp_source(parallel) if entry == "vjp" else source(*key)
        drive = _DRIVERS[key] = _load(text, argtypes(entry, tier, n_refs))
    return drive


def argtypes(entry: str, tier: str, n_refs: int) -> tuple:
    """The types of the sweep a driver calls: the entry point's, then its in-place arguments' views."""
    return ENTRIES[entry, tier][0] + (BUF,) * (n_refs * len(REF_SOURCES.get(entry, ())))


def io_driver(shapes, diff: int, batched, short: bool, parallel: bool):
    """The driver of a tape's ``value_and_grad_io`` for arguments of ``shapes`` (float64 C arrays), the
    gradient shaped like argument ``diff``."""
    key = ("io", tuple(len(shape) for shape in shapes), diff, tuple(batched), short, parallel)
    drive = _DRIVERS.get(key)
    if drive is None:
        text = io_source(tuple(batched), short, parallel)
        drive = _DRIVERS[key] = _load(text, io_argtypes(shapes, diff, short))
    return drive


def io_argtypes(shapes, diff: int, short: bool) -> tuple:
    arrays = tuple(types.Array(types.float64, len(shape), "C") for shape in shapes)
    return ((BUF,) if short else (INS, AUX, BUF, AUX)) + arrays + (arrays[diff],)


_DRIVERS: dict = {}
_ADDRESSES: dict = {}


def address(dispatcher, argtypes) -> int:
    """The native entry point of ``dispatcher`` compiled for ``argtypes`` (compiled, or loaded from the
    disk cache, first)."""
    key = (dispatcher, argtypes)
    found = _ADDRESSES.get(key)
    if found is None:
        result = dispatcher.overloads.get(argtypes)
        if result is None:
            dispatcher.compile(argtypes)
            result = dispatcher.overloads[argtypes]
        found = _ADDRESSES[key] = result.library.get_pointer_to_function(result.fndesc.llvm_func_name)
    return found
