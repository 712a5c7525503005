"""Per-tape kernels, the tier: a hot tape gets compiled sweeps of its own, built in the background.

Every tape starts in the compiled interpreter (``fasttape.sweeps``, or the NumPy executor while
that loads).  When it has been called ``HOT_CALLS`` times (``forward``, ``jvp``, ``value_and_grad``
and one-direction ``hvp`` calls together), a background thread plans and writes the tape's
``forward`` and ``value_and_grad`` (``fasttape.tape_plan``, ``fasttape.tape_source``) and compiles
them with Numba, the one whose calls made the tape hot first; ``jvp`` and ``hvp``, a module of their
own, are planned, written and compiled when first asked for (or right after the gradient when their
calls made the tape hot).  The calls after that run them.
Nothing waits for the build, and the switch is invisible: the same buffers, the same guards, the
same errors, the same results to rounding (a fused loop may add a gradient's contributions in
another order).

The kernels are cached on disk beside the interpreter's (``fasttape.cache``), named by a hash of
their source, which is a function of the tape's structure and not of its values: the next process
that records the same tape loads them when the tape gets hot (milliseconds) instead of compiling.

A cost model declines a tape whose straight-line code would take long to compile (more than
``MAX_ROWS`` rows, about 6 ms of LLVM time each), and, once the kernels are built, one on which they are
slower than the interpreter: the builder times a ``value_and_grad`` of each on the tape's last inputs,
in turns (``race``; fused loops can lose to the interpreter's family kernels on large arrays).
``ft.set_options(tape_kernels=...)`` (or ``FASTTAPE_TAPE_KERNELS``) chooses: ``"auto"`` (the default,
as above), ``"always"`` (build at a tape's first call, wait for it and use it, whatever the race would
say: tests and benchmarks) or ``"never"`` (interpreter only).
"""

from __future__ import annotations

import hashlib
import logging
import math
import queue
import threading
import time

import numpy as np
from numba import types

from . import adjoint_plan, config, faults, kernel_calls, scalar_math, tiers, vector_math
from .codegen import load_generated
from .families import FAMILIES
from .jit import jit
from .kernel_calls import address, slot
from .tape_modules import gradient_source, tangent_source
from .tape_plan import plan_tape
from .tape_source import HELPERS

HOT_CALLS = 16  # calls of one entry point before a tape's kernels are built
RACE_TURNS = 5  # timed turns of each tier (the fastest counts)
RACE_TURN_SECONDS = 1e-3  # a turn repeats the call until it lasts about this long
MAX_ROWS = 1500  # rows of one tape's generated code (compile time grows with it: ~6 ms per row)
_INS, _AUX, _BUF, _FNS = types.int64[:, ::1], types.int64[::1], types.float64[::1], types.int64[::1]
SIGNATURES = {
    "forward": (_INS, _AUX, _BUF, _FNS),  # (ins, aux, buf, fns)
    # (ins, aux, buf, tangents, k, plane, results, fns): results, the tangents the caller reads (the outputs,
    # then the aux outputs not constant) of each direction in turn
    "jvp": (_INS, _AUX, _BUF, _BUF, types.int64, _BUF, _BUF, _FNS),
    "value_and_grad": (_INS, _AUX, _BUF, _FNS),
    "hvp": (_INS, _AUX, _BUF, _BUF, _BUF, _FNS),  # (ins, aux, buf, tan, adj2, fns): one direction
}
EAGER = ("forward", "value_and_grad")  # compiled when a tape gets hot; "jvp" and "hvp" when first asked for
LAZY = ("jvp", "hvp")  # (or, when their calls made the tape hot, right after the gradient)
LOG = logging.getLogger("fasttape")


_NAMESPACE = {**scalar_math.VOCABULARY, **vector_math.KERNEL_FUNCTIONS, **HELPERS, "jit": jit, "np": np}
_CALLS = (*kernel_calls.SWEEPS, *kernel_calls.DIRECT)
_NAMESPACE.update({f"call_{name}": getattr(kernel_calls, f"call_{name}") for name in _CALLS})
# the family kernels' native entry points, filled in as tapes need them (fasttape.kernel_calls)
ADDRESSES = np.zeros(len(kernel_calls.SWEEPS) * len(FAMILIES) + len(kernel_calls.DIRECT), dtype=np.int64)


# slot -> (the family kernel whose address it holds, its signature's name)
_KERNEL_AT = {slot(f, sweep): (getattr(f.module, sweep), sweep) for f in FAMILIES for sweep in kernel_calls.SWEEPS}
_KERNEL_AT.update({kernel_calls.direct_slot(name, len(FAMILIES)): (kernel, name)
                   for f in FAMILIES for name, kernel in getattr(f.module, "DIRECT", {}).items()})  # fmt: skip


def _resolve(slots):
    """The addresses at ``slots`` (a generated function's ``ADDRESS_SLOTS``) filled in: compiled, or loaded
    from the disk cache, when first needed (a gradient's families' tangent kernels are never loaded)."""
    for k in slots:
        if not ADDRESSES[k]:
            kernel, name = _KERNEL_AT[k]
            ADDRESSES[k] = address(kernel, name)


def kernel_source(tape) -> str:
    """The source of ``tape``'s own kernels, its gradient's module then its JVP's and HVP's (readable:
    ``print(ft.tape_kernels.kernel_source(tape))``)."""
    return _gradient_source(tape, *_plan(tape)) + "\n\n" + _tangent_source(tape)


def caller_reads(tape) -> list[tuple[int, int]]:
    """(offset, size) of what a caller reads after a sweep: the outputs, then the aux outputs not constant
    (the order of a JVP kernel's ``results``)."""
    return [(e[0], math.prod(e[1])) for e in (*tape._outputs, *tape._aux) if e[0] != "const"]


def _rows(tape):
    """What the plans are made of: per row its operands' (offset, size) and those its reverse writes; what the
    caller reads; the output's position (-1: no gradient)."""
    slots = tape._slots
    ranges = [[(slots[s].offset, slots[s].size) for s in operands] for operands in tape._row_operands]
    differentiated = adjoint_plan.differentiated_operands(tape.ins, slots, tape._row_operands)
    written = [[(slots[s].offset, slots[s].size) for _, s in row] for row in differentiated]
    return ranges, written, caller_reads(tape), tape._out_position if tape._grad_ok else -1


def _plan(tape):
    """The plan of ``tape``'s forward and gradient, the ranges its rows' reverses write, the output's position."""
    ranges, written, caller, out = _rows(tape)
    return plan_tape(tape.ins, tape.aux, ranges, written, caller, out), written, out


def _io(tape):
    """``((offset, size, shape) per argument, k)`` of a tape whose arguments are float arrays, ``k`` the one
    differentiated, with no aux (its kernels get ``value_and_grad_io``); None for any other."""
    if tape._single_grad and not tape.has_aux and tape._grad_ok:
        leaves = [spec.leaves[0] for spec in tape._args]
        return [(leaf.offset, leaf.size, leaf.shape) for leaf in leaves], tape._diff_args[0]
    return None


def _io_ranges(tape):
    io = _io(tape)
    return io and ([argument[:2] for argument in io[0]], io[1])


def _gradient_source(tape, plan, written, out) -> str:
    return gradient_source(plan, tape.ins, tape.aux, tape.n_values, written, out, tape.name, _io_ranges(tape))


def _tangent_source(tape) -> str:
    """The source of ``tape``'s ``jvp`` and ``hvp``, planned afresh (a plan is not kept for them: they may never
    be asked for)."""
    ranges, written, caller, out = _rows(tape)
    plan = plan_tape(tape.ins, tape.aux, ranges, written, caller, out)
    # an HVP's caller reads the second-order adjoints alone: no value, no gradient (the same periods); its
    # long vectorised values are computed again rather than stored and loaded with their tangents
    hv_plan = None
    if out >= 0:
        hv_plan = plan_tape(tape.ins, tape.aux, ranges, written, [], out, plan.periods, recompute=True)
    # a JVP's tangent pass: a library function's long run is a loop row too (its tangent a product by a
    # partial, fused with its neighbours), its value the forward's
    tangent_plan = plan_tape(tape.ins, tape.aux, ranges, written, caller, out, plan.periods, library=False)
    seeds = [(leaf.offset, leaf.size) for i in tape._diff_args for leaf in tape._args[i].leaves]
    return tangent_source(plan, tape.ins, tape.aux, tape.n_values, written, out, tape.name, _io_ranges(tape),
                          seeds, hv_plan, tangent_plan)  # fmt: skip


def _load(source: str):
    """The module of a generated source: loaded once per process (a tape of the same structure shares it)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:24]
    name = f"fasttape.tape_{digest}"
    with _COMPILE_LOCK:
        module = _MODULES.get(name)
        if module is None:
            # the file name names the Numba cache entries (fasttape.cache's locator claims fasttape.* modules)
            module = load_generated(name, source, _NAMESPACE, filename=f"tape_{digest}.py")
            _MODULES[name] = module
    return module


def worth_building(plan) -> bool:
    """The cost model: rows written out (a period's body once) few enough to compile in seconds."""
    rows = len(plan.outs) - sum((p.count - 1) * p.length for p in plan.periods)
    return 0 < rows <= MAX_ROWS


class Kernels:
    """One tape's kernels: ``forward``, ``jvp``, ``value_and_grad`` and ``hvp`` (one direction) once built
    (None before), and the build."""

    def __init__(self):
        self.fns = ADDRESSES  # an argument of every kernel
        self.forward = None
        self.jvp = None  # k directions (seeds direction-major, as the interpreter's; results apart)
        self.value_and_grad = None
        self.hvp = None
        self.value_and_grad_io = None  # (a tape of array arguments, one differentiated) them in, its gradient out
        self.short_io = False  # value_and_grad_io takes (buf, x0, ..., g) (else ins, aux, buf, fns, x0, ..., g)
        self.results_size = 0  # the tangents per direction that jvp writes to its results (caller_reads)
        self.hvp_io = None  # (the same, of one argument) x and a direction in, H v out
        self.module = None  # the generated module of forward and value_and_grad, once loaded
        self.tangent_module = None  # that of jvp and hvp, once one of them is asked for
        self.refs = []  # (offset, size) of the arguments value_and_grad reads in place (fasttape.input_refs)
        self.hvp_refs = []  # (offset, size) of the argument whose values and tangents hvp reads in place
        self.io = None  # ((offset, size, shape) per argument, the differentiated one) of such a tape (see _io)
        self.asked: set = set()  # the lazy entry points asked for
        self.calls = 0
        self.hot = "value_and_grad"  # the entry point whose calls made the tape hot
        self.inputs = None  # a copy of the buffer of that call, inputs bound (for the race)
        self.state = "cold"  # "queued", "ready", "declined" or "failed"
        self.race: tuple[float, float] | None = None  # seconds of a value_and_grad: (interpreter, kernels)
        self.done = threading.Event()
        self.error: BaseException | None = None

    def called(self, tape, entry: str = "value_and_grad", buf=None):
        """Count a call of the interpreter for ``tape`` (of ``entry``, ``buf`` its buffer with the inputs
        bound); start the build when it gets hot."""
        self.calls += 1
        if self.state == "cold" and (self.calls >= HOT_CALLS or config.tape_kernels() == "always"):
            self.hot = entry
            # the race's inputs: a caller in a loop holds the tape's one spare workspace all but between calls
            self.inputs = buf.copy() if buf is not None else None
            request(tape, wait=config.tape_kernels() == "always")

    def entry(self, tape, name: str):
        """The compiled ``jvp`` or ``hvp`` (compiled when first asked for, in the background, once the
        tape's kernels are built: a tape made hot by its gradients does not wait for them), or None:
        the interpreter runs this call."""
        function = getattr(self, name)
        if function is None:
            if self.state == "cold":
                self.called(tape, name)
            if self.state == "ready" and name not in self.asked:
                self.asked.add(name)
                request_entry(tape, name, wait=config.tape_kernels() == "always")
            function = getattr(self, name)
        return function


def _views(refs, *arrays) -> list:
    """The runs ``refs`` (offset, size) of each of ``arrays`` in turn: the arguments a kernel reads in place
    (fasttape.input_refs), where the general path has bound them."""
    return [a[offset : offset + size] for offset, size in refs for a in arrays]


def run_value_and_grad(kernels, ins, aux, buf) -> bool:
    """The compiled ``value_and_grad`` on a buffer with the arguments bound (those it reads in place passed
    as views of it); False when a guard fails."""
    if kernels.refs:
        return kernels.value_and_grad(ins, aux, buf, kernels.fns, *_views(kernels.refs, buf))
    return kernels.value_and_grad(ins, aux, buf, kernels.fns)


def run_hvp(kernels, ins, aux, buf, tangents, adj2) -> bool:
    """The compiled ``hvp`` (one direction) on buffers with the arguments and the direction bound (those it
    reads in place passed as views of them); False when a guard fails."""
    if kernels.hvp_refs:
        return kernels.hvp(ins, aux, buf, tangents, adj2, kernels.fns, *_views(kernels.hvp_refs, buf, tangents))
    return kernels.hvp(ins, aux, buf, tangents, adj2, kernels.fns)


def enabled() -> bool:
    """Whether tapes may get kernels of their own now: the option allows it, no fault is planted (faults
    live in the interpreter's kernels) and the interpreter's kernels are compiled (the tape's call them)."""
    choice = config.tape_kernels()
    if choice == "never" or faults.INSTRUMENTED or tiers.mode() == "executor":
        return False
    return choice == "always" or tiers.status()["run_value_and_grad"] == "compiled"


_MODULES: dict = {}  # the kernels built in this process, by the name their source's hash gives them
_QUEUE: queue.SimpleQueue = queue.SimpleQueue()
_WORKER: list = []
_LOCK = threading.Lock()
_PENDING = [0]  # builds queued or running
_SETTLED = threading.Condition()


def _enqueue(item) -> None:
    with _SETTLED:
        _PENDING[0] += 1
    _QUEUE.put(item)
    _start_worker()


def settle(timeout=None) -> bool:
    """Block until every background build asked for so far is done; True when none is left (``timeout``:
    seconds at most)."""
    with _SETTLED:
        return _SETTLED.wait_for(lambda: _PENDING[0] == 0, timeout)


def request(tape, wait: bool = False):
    """Build ``tape``'s kernels in the background (``wait``: here, now)."""
    kernels = tape._kernels
    with _LOCK:
        if kernels.state != "cold":
            return
        if not enabled():
            kernels.calls = 0  # ask again after another HOT_CALLS calls (the interpreter may be loading)
            return
        kernels.state = "queued"
    if wait:
        _build(tape, race=False)
        return
    _enqueue(tape)


def decline(tape) -> bool:
    """Keep ``tape`` on the interpreter however hot it gets: no kernels of its own will be built, so its results
    never change tier (``fasttape.dask`` pins a worker's tier so).  False when they are built or being built
    already (they stay)."""
    kernels = tape._kernels
    with _LOCK:
        if kernels.state not in ("cold", "declined"):
            return False
        kernels.state = "declined"
    return True


def request_entry(tape, name: str, wait: bool = False):
    """Compile an entry point of ``tape``'s built kernels that is not in ``EAGER`` (``jvp``, ``hvp``) in the
    background (``wait``: here, now)."""
    if wait:
        _compile_entry(tape, name)
        return
    _enqueue((tape, name))


def _start_worker():
    if not _WORKER:
        worker = threading.Thread(target=_work, name="fasttape-tape-kernels", daemon=True)
        _WORKER.append(worker)
        worker.start()


def _work():
    while True:
        item = _QUEUE.get()
        try:
            if isinstance(item, tuple):
                _compile_entry(*item)
            else:
                _build(item)
        finally:
            with _SETTLED:
                _PENDING[0] -= 1
                _SETTLED.notify_all()


_COMPILE_LOCK = threading.RLock()


def _compile(module, entry: str, io):
    """Compile one entry point of a generated module (with its io form for a tape of array arguments,
    which never compiles again: another layout takes the general path), once per module, the family
    kernels it calls resolved first."""
    with _COMPILE_LOCK:
        done = module.__dict__.setdefault("_compiled", set())
        function = getattr(module, entry, None)
        if entry in done or function is None:
            return
        _resolve(module.ADDRESS_SLOTS[entry])
        refs = {"value_and_grad": len(getattr(module, "REFS", ())), "hvp": 2 * len(getattr(module, "HVP_REFS", ()))}
        function.compile(SIGNATURES[entry] + refs.get(entry, 0) * (_BUF,))  # (or loads it from the disk cache)
        function = getattr(module, f"{entry}_io", None) if io is not None else None
        if function is not None:
            arrays = tuple(types.Array(types.float64, len(shape), "C") for _, _, shape in io[0])
            if entry == "value_and_grad":
                gradient = arrays[io[1]]
                function.compile(((_BUF,) if module.SHORT_IO else SIGNATURES[entry]) + arrays + (gradient,))
            else:
                function.compile((*SIGNATURES[entry], *arrays, arrays[io[1]], arrays[io[1]]))
            function.disable_compile()
        done.add(entry)


def _tangent_module(tape):
    """``tape``'s module of ``jvp`` and ``hvp``: planned, written and loaded when one of them is first asked for."""
    kernels = tape._kernels
    with _COMPILE_LOCK:
        if kernels.tangent_module is None:
            module = _load(_tangent_source(tape))
            kernels.results_size, kernels.hvp_refs = module.RESULTS, module.HVP_REFS  # (before the functions)
            kernels.tangent_module = module
    return kernels.tangent_module


def _compile_entry(tape, name: str):
    kernels = tape._kernels
    try:
        module = _tangent_module(tape)
        _compile(module, name, kernels.io)
        if kernels.io is not None and name == "hvp":
            kernels.hvp_io = getattr(module, "hvp_io", None)
        setattr(kernels, name, getattr(module, name, None))
    except Exception as e:  # noqa: BLE001  (the interpreter keeps serving these calls; say why once)
        LOG.warning("fasttape: the %s kernel of the tape of %r could not be built (%s); it stays interpreted.",
                    name, tape.name, e)  # fmt: skip


def _build(tape, race=True):
    """Plan, write and compile ``tape``'s kernels (``race``: keep them only if they beat the interpreter)."""
    kernels = tape._kernels
    try:
        plan, written, out = _plan(tape)
        if not worth_building(plan):
            kernels.state = "declined"
            return
        module = _load(_gradient_source(tape, plan, written, out))
        del plan, written
        io = _io(tape)
        # the gradient first, when its calls made the tape hot: they switch as soon as it is compiled (and has
        # won the race), and the forward follows (a GMM's gradient 1.5 s, its forward 1 s more)
        gradient_first = kernels.hot != "forward" and getattr(module, "value_and_grad", None) is not None
        for entry in ("value_and_grad",) if gradient_first else EAGER:
            _compile(module, entry, io)
        if race:
            kernels.race = _race(tape, module)
            if kernels.race is not None and kernels.race[1] > kernels.race[0]:
                kernels.state = "declined"
                LOG.info("fasttape: the tape of %r stays interpreted: its kernels took %.3g s per gradient, the "
                         "interpreter %.3g s.", tape.name, kernels.race[1], kernels.race[0])  # fmt: skip
                return
        kernels.module, kernels.io = module, io
        kernels.short_io = module.SHORT_IO  # (set before the functions that callers test for)
        kernels.refs = module.REFS
        kernels.value_and_grad = getattr(module, "value_and_grad", None)
        kernels.value_and_grad_io = getattr(module, "value_and_grad_io", None) if io is not None else None
        kernels.state = "ready"
        if kernels.hot in LAZY:  # a JVP's or an HVP's calls made the tape hot: that entry point before the forward
            kernels.asked.add(kernels.hot)
            _compile_entry(tape, kernels.hot)
        _compile(module, "forward", io)
        kernels.forward = module.forward
    except Exception as e:  # noqa: BLE001  (the interpreter keeps serving the tape; say why once)
        kernels.state = "failed"
        kernels.value_and_grad = kernels.value_and_grad_io = kernels.forward = None
        kernels.error = e
        LOG.warning("fasttape: the kernels of the tape of %r could not be built (%s); it stays interpreted.",
                    tape.name, e)  # fmt: skip
    finally:
        kernels.inputs = None  # (the race's copy of a buffer, when no race took it)
        kernels.done.set()


def _race(tape, module) -> tuple[float, float] | None:
    """Seconds of one ``value_and_grad`` of ``tape`` by the interpreter and by ``module``'s kernel, on a
    copy of the buffer of the call that made it hot (or of its last call): the fastest of ``RACE_TURNS``
    turns each, taken in turns (the machine's other load falls on both).  None when there is nothing to
    time: no gradient, no finished call, or a guard that fails on those inputs."""
    kernel = getattr(module, "value_and_grad", None)
    if kernel is None or not tape._grad_ok:
        return None
    buf, tape._kernels.inputs = tape._kernels.inputs, None
    if buf is None:
        try:
            ws = tape._spare.pop()  # (the last call's, its inputs bound; atomic)
        except IndexError:
            return None
        buf = ws.buf.copy()
        tape._return_workspace(ws)
    ins, aux, code, out = tape.ins, tape.aux, tape.code, tape._out_position

    def interpreted():
        return tiers.run_value_and_grad(ins, code, aux, buf, out, True)

    views = _views(module.REFS, buf)

    def compiled():
        return kernel(ins, aux, buf, ADDRESSES, *views)

    start = time.perf_counter()
    if not (interpreted() and compiled()):
        return None
    repeats = max(1, round(RACE_TURN_SECONDS / max(time.perf_counter() - start, 1e-9)))
    best = [math.inf, math.inf]
    for _ in range(RACE_TURNS):
        for k, run in enumerate((interpreted, compiled)):
            start = time.perf_counter()
            for _ in range(repeats):
                run()
            best[k] = min(best[k], (time.perf_counter() - start) / repeats)
    return best[0], best[1]
