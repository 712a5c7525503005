"""Batches of gradients on a Dask cluster: each worker holds the tape, the client splits the batch into chunks.

    import fasttape as ft
    import fasttape.dask                  # (needs the extra: pip install "fasttape[dask]")
    from distributed import Client

    client = Client("tcp://scheduler:8786")
    batch = ft.dask.map(ft.grad(loss), W_chunks, X, y, client=client)   # the tape ships once per worker
    G = batch.result()                    # every chunk's gradients, concatenated in order

``map`` records the tape on the client (from the batch's first member), checks that every worker imports the
same version of fasttape (``check_workers``), and registers a ``TapePlugin`` holding the tape's saved bytes:
the scheduler keeps it and sets it up on every worker, on those that join later and on those a nanny restarts,
so a tape crosses the network once per worker, not once per task.  The shared arguments (``X``, ``y``) are
scattered to every worker once.  Each chunk is a task that runs the tape's batch on its worker
(``fasttape.batching.tape_value_and_grad_partial``, on ``threads_per_task`` threads); members whose Python
branches differ from the tape's come back unfinished and ``result()`` computes them on the client, which can
re-trace the function.

A chunk's result depends on the tape, the chunk and the tier alone, never on the worker that ran it: the
worker pins the tier before the tape's first batch, the tape's own kernels (``fasttape.tape_kernels``,
compiled or loaded from the disk cache there) unless the client's ``tape_kernels`` option is ``"never"``
(then the interpreter).  So when a worker is lost mid-run the scheduler runs its chunks again elsewhere, its
finished results included, and ``result()`` holds the same bits as if it had not been.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import threading
import uuid
import weakref

import numpy as np
import optree

try:
    import dask.array
    import distributed
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError as e:  # pragma: no cover  (the extra is missing)
    raise ImportError(f'fasttape.dask needs Dask and distributed ({e}): pip install "fasttape[dask]"') from e

from . import config, tape_kernels, tiers
from ._version import __version__
from .api import Grad, ValueAndGrad, _normalize_argnums
from .batching import Members, default_axes, listed, reraise_as, tape_value_and_grad_partial
from .errors import BranchChangedError
from .storage import load_tape
from .tape import Tape

__all__ = ["map", "compute", "Batch", "TapePlugin", "check_workers"]

CHUNKS_PER_THREAD = 4  # default chunking: a few chunks per worker thread (a lost worker's share spreads out)
_SAVED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tape -> its saved (compressed) bytes


# -- on the workers -------------------------------------------------------------------------------------------
class TapePlugin(WorkerPlugin):
    """One tape for every worker: its saved bytes, loaded at ``setup``.  ``tier``: "interpreter" or "kernels"
    (the tape's own, built before its first batch on the worker)."""

    idempotent = True  # registering it again (the next map of the same tape) is a no-op

    def __init__(self, data: bytes, tier: str):
        self.data, self.tier = data, tier
        self.tape = None
        self._ready = False
        self._lock = threading.Lock()

    def __getstate__(self):
        return {"data": self.data, "tier": self.tier}

    def __setstate__(self, state):
        self.__init__(state["data"], state["tier"])

    def setup(self, worker):
        tiers.set_mode("compiled")  # batches wait for the compiled kernels (never the NumPy executor's loop)
        tape = load_tape(io.BytesIO(self.data))
        if self.tier == "interpreter":
            tape_kernels.decline(tape)  # never kernels of its own on this worker, however hot (a fresh tape: cold)
        self.tape = tape

    def teardown(self, worker):
        self.tape = None

    def ready(self, args) -> Tape:
        """The tape, its tier settled before its first batch here: one single call (``args``, a member) loads
        the interpreter's kernels, then the tape's own are built when its tier asks for them."""
        if not self._ready:
            with self._lock:
                if not self._ready:
                    self.tape._value_and_grad(args)  # (whichever branch it takes)
                    if self.tier == "kernels":
                        tape_kernels.request(self.tape, wait=True)
                    self._ready = True
        return self.tape


def _probe() -> str:
    return __version__


def _run_chunk(plugin_name, in_axes, threads, where, *args):
    """A chunk's batch on this worker: ``(result, failed, their arguments)``, the failed members' rows NaN and
    their arguments (the mapped ones, batch axis first; None for a shared one) for the client to finish."""
    worker = distributed.get_worker()
    plugin = worker.plugins.get(plugin_name)
    if plugin is None or plugin.tape is None:
        raise RuntimeError(
            f"fasttape.dask: worker {worker.address} does not hold the tape {plugin_name!r} (its plugin was "
            "unregistered, or did not load: see the worker's log). Call ft.dask.map again: it registers the tape on "
            "every worker."
        )
    try:
        members = Members(args, in_axes, "ft.dask.map")
        tape = plugin.ready(members.member(0))
        result, failed = tape_value_and_grad_partial(tape, args, in_axes, threads)
    except Exception as e:
        chunk, start = where
        member = re.match(r"batch member (\d+): (.*)", str(e), re.S)  # (batching's words for a member that raised)
        if member:
            b, text = int(member.group(1)), member.group(2)
            text = f"batch member {start + b} (member {b} of chunk {chunk}): {text}"
        else:
            text = f"chunk {chunk} (batch members from {start}): {e}"
        reraise_as(e, f"ft.dask.map: {text}")
    unfinished = None
    if failed.size:
        unfinished = members.rows(failed)
        unfinished = tuple(a if spec_mapped else None for a, spec_mapped in zip(unfinished, _mapped(in_axes, args)))
    return result, failed, unfinished


# -- on the client --------------------------------------------------------------------------------------------
def check_workers(client) -> dict:
    """Every worker's fasttape version ({address: version}); ImportError naming each worker that cannot import
    fasttape or has another version than this client's."""
    answers = client.run(_probe, on_error="return")
    problems = []
    for address, answer in sorted(answers.items()):
        if isinstance(answer, BaseException):  # (an error unpickling the probe comes wrapped: its text says which)
            text = str(answer) if type(answer) is Exception else f"{type(answer).__name__}: {answer}"
            problems.append(f"worker {address} cannot import fasttape ({text})")
        elif answer != __version__:
            problems.append(f"worker {address} has fasttape {answer}, this client {__version__}")
    if problems:
        raise ImportError(
            "fasttape.dask: " + "; ".join(problems) + f". Install fasttape {__version__} in every worker's "
            f'environment (pip install "fasttape[dask]=={__version__}") and check its FASTTAPE_* variables, then '
            "restart those workers."
        )
    return answers


def _saved(tape) -> bytes:
    data = _SAVED.get(tape)
    if data is None:
        buffer = io.BytesIO()
        tape.save(buffer)
        data = _SAVED[tape] = buffer.getvalue()
    return data


def _ship(client, tape, tier) -> str:
    """Register ``tape`` on every worker (once per cluster: the scheduler keeps it); the plugin's name."""
    data = _saved(tape)
    name = f"fasttape-{tape.name}-{hashlib.sha256(data).hexdigest()[:24]}-{tier}"
    try:
        client.register_plugin(TapePlugin(data, tier), name=name)
    except Exception as e:
        failed = sorted(address for address, loaded in client.run(_holds, name).items() if not loaded)
        client.unregister_worker_plugin(name)  # (so that the next map registers it afresh)
        raise RuntimeError(
            f"fasttape.dask: worker{'s' * (len(failed) > 1)} {', '.join(failed) or '(unknown)'} could not load the "
            f"tape of {tape.name!r}: "
            f"{type(e).__name__}: {e}"
        ) from e
    return name


def _holds(name, dask_worker=None) -> bool:
    plugin = dask_worker.plugins.get(name)
    return plugin is not None and plugin.tape is not None


def _mapped(in_axes, args) -> list:
    """Per argument: whether ``in_axes`` maps any of it."""
    per_argument = in_axes if isinstance(in_axes, (tuple, list)) else (in_axes,) * len(args)
    return [any(a is not None for a in optree.tree_leaves(spec, none_is_leaf=True)) for spec in per_argument]


def _axes_first(in_axes):
    """``in_axes`` with every mapped axis 0: the arguments once their batch axis is moved first."""
    return optree.tree_map(lambda a: None if a is None else 0, in_axes, none_is_leaf=True)


def _placeholder(x) -> np.ndarray:
    """An array of a Dask array's shape holding no bytes: ``Members`` checks its axes and sizes as any array's."""
    if any(math.isnan(n) for n in x.shape):
        raise ValueError(
            f"ft.dask.map: a Dask array of unknown chunk sizes (shape {x.shape}); call x.compute_chunk_sizes() first."
        )
    return np.empty(x.shape, dtype=np.dtype([]))


class _Chunks:
    """The batch split into chunks: per chunk its arguments (shared ones None: scattered once) and ``in_axes``,
    the members' offsets, the first member (to record the tape) and the shared arguments."""

    def __init__(self, args, in_axes, chunk_size, client):
        self.args = args
        if isinstance(in_axes, tuple) and len(in_axes) != len(args):
            Members(args, in_axes, "ft.dask.map")  # (raises: in_axes does not fit the arguments)
        mapped = _mapped(in_axes, args)
        lists = [i for i, a in enumerate(args) if mapped[i] and type(a) is list]
        arrays = [i for i, a in enumerate(args) if isinstance(a, dask.array.Array)]
        self.shared = {i: a for i, a in enumerate(args) if not mapped[i]}
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise ValueError(f"ft.dask.map: chunk_size must be a positive int, got {chunk_size!r}.")
        if lists:
            if chunk_size is not None:
                raise ValueError("ft.dask.map: chunk_size splits arrays; lists of chunks are already split.")
            self._from_lists(lists, in_axes, mapped)
        else:
            self._split(arrays, in_axes, chunk_size, client, mapped)
        if not self.chunks:
            raise ValueError("ft.dask.map: the batch has no members (every mapped argument is empty).")

    def _from_lists(self, lists, in_axes, mapped):
        args = self.args
        n = len(args[lists[0]])
        for i, a in enumerate(args):
            if mapped[i] and (type(a) is not list or len(a) != n):
                what = f"a list of {len(a)} chunks" if type(a) is list else f"a {type(a).__name__}"
                raise TypeError(
                    f"ft.dask.map: arg{lists[0]} is a list of {n} chunks but arg{i}, also mapped, is {what}. Give "
                    "every mapped argument as a list of the same number of chunks, or none of them (a list at a "
                    "mapped position is always read as chunks: pass a list of parameters as a tuple)."
                )
        self.chunks, self.starts, start = [], [], 0
        for c in range(n):
            chunk = tuple(a[c] if i in lists else a for i, a in enumerate(args))
            members = Members(chunk, in_axes, f"ft.dask.map (chunk {c})")
            if not members.size:
                continue
            if not self.chunks:
                self.member0 = members.member(0)
            self.chunks.append((tuple(None if i in self.shared else a for i, a in enumerate(chunk)), in_axes))
            self.starts.append(start)
            start += members.size
        self.size = start

    def _split(self, arrays, in_axes, chunk_size, client, mapped):
        args = self.args
        for i in arrays:
            if mapped[i] and not isinstance(in_axes[i] if isinstance(in_axes, (tuple, list)) else in_axes, int):
                raise TypeError(
                    f"ft.dask.map: arg{i} is a Dask array; its in_axes must be an int (the batch axis), got "
                    f"{in_axes[i]!r}."
                )
        dask_mapped = [i for i in arrays if mapped[i]]
        probe = tuple(_placeholder(a) if i in dask_mapped else a for i, a in enumerate(args))
        members = Members(probe, in_axes, "ft.dask.map")
        for i in arrays:
            if not mapped[i]:  # a shared Dask array: computed on the cluster, kept there
                self.shared[i] = client.compute(args[i])
        self.size = B = members.size
        axes = [in_axes[i] if isinstance(in_axes, (tuple, list)) else in_axes for i in range(len(args))]
        moved = {i: dask.array.moveaxis(args[i], axes[i], 0) if axes[i] % args[i].ndim else args[i]
                 for i in dask_mapped}  # fmt: skip
        if chunk_size is None and moved:
            sizes = list(moved[dask_mapped[0]].chunks[0])
        else:
            if chunk_size is None:
                threads = sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values()) or 1
                chunk_size = max(1, -(-B // (CHUNKS_PER_THREAD * threads)))
            sizes = [min(chunk_size, B - s) for s in range(0, B, chunk_size)]
        sizes = [s for s in sizes if s]
        self.starts = [int(s) for s in np.cumsum([0, *sizes[:-1]])] if sizes else []
        blocks = {}
        for i, x in moved.items():
            x = x.rechunk({0: tuple(sizes), **{k: -1 for k in range(1, x.ndim)}})
            blocks[i] = client.compute(list(x.to_delayed().ravel()))
        self.chunks = []
        chunk_axes = _axes_first(in_axes)
        for c, (start, size) in enumerate(zip(self.starts, sizes)):
            chunk = members.rows(slice(start, start + size))
            chunk = tuple(blocks[i][c] if i in blocks else None if i in self.shared else a for i, a in enumerate(chunk))
            self.chunks.append((chunk, chunk_axes))
        if self.chunks:
            member0 = list(members.member(0))
            for i, x in moved.items():
                member0[i] = client.compute(x[0]).result()
            self.member0 = tuple(member0)


def _client(client):
    if client is not None:
        return client
    try:
        return distributed.default_client()
    except ValueError:
        raise ValueError(
            "ft.dask.map needs a distributed Client: pass client=Client(...) (a scheduler's address, or a "
            "LocalCluster), or create one first, which becomes the default."
        ) from None


def _tier(tape_kernels_option) -> str:
    choice = config.tape_kernels() if tape_kernels_option is None else tape_kernels_option
    if choice not in config.TAPE_KERNELS:
        raise ValueError(f"ft.dask.map: tape_kernels must be one of {config.TAPE_KERNELS} or None, got {choice!r}.")
    return "interpreter" if choice == "never" else "kernels"


def map(  # noqa: A001  (ft.dask.map, as Client.map)
    transformed, *args, in_axes=None, client=None, chunk_size=None, retries=2, threads_per_task=1, tape_kernels=None
) -> Batch:
    """``transformed`` (``ft.grad(f)``, ``ft.value_and_grad(f)`` or a ``Tape``) over a batch, on a Dask cluster,
    one task per chunk; returns a ``Batch`` of futures, whose ``result()`` is ``transformed.map(*args)``'s
    (a Tape's: ``value_and_grad_batch``'s).

    ``in_axes`` as ``.map``'s: by default the differentiated arguments are mapped on axis 0, the others shared.
    A mapped argument is a NumPy array (or a tree of them), split into chunks of ``chunk_size`` members (by
    default a few chunks per worker thread); a Dask array (a chunk per block along its batch axis, or of
    ``chunk_size``); or a list of chunks, each mapped as ``in_axes`` says.  ``retries``: how often a chunk that
    raised runs again (a lost worker's chunks are run again by the scheduler regardless).
    ``threads_per_task``: the threads of one chunk's batch (Dask's worker threads already share the cores).
    ``tape_kernels``: the workers' tier (``fasttape.config``; by default this process's option): "never" the
    interpreter, "auto" or "always" the tape's own kernels, built before its first chunk on each worker."""
    if not isinstance(transformed, (Grad, ValueAndGrad, Tape)):
        raise TypeError(
            f"ft.dask.map expects ft.grad(f), ft.value_and_grad(f) or a Tape, got {type(transformed).__name__}. "
            "Wrap the function: ft.dask.map(ft.grad(f), ...)."
        )
    if not args:
        raise TypeError("ft.dask.map needs the function's arguments after it.")
    if isinstance(threads_per_task, bool) or not isinstance(threads_per_task, int) or threads_per_task < 1:
        raise ValueError(f"ft.dask.map: threads_per_task must be a positive int, got {threads_per_task!r}.")
    tier = _tier(tape_kernels)
    client = _client(client)
    if in_axes is None:
        argnums = transformed.argnums
        if not isinstance(transformed, Tape):
            argnums = _normalize_argnums(argnums, len(args), transformed.kind)
        in_axes = default_axes(len(args), argnums)
    elif isinstance(in_axes, list):
        in_axes = tuple(in_axes)
    chunks = _Chunks(args, in_axes, chunk_size, client)
    if isinstance(transformed, Tape):
        tape = transformed
        tape.forward(*chunks.member0)  # (arguments that do not fit the tape: its error, here)
    else:
        tape = transformed.tape(*chunks.member0)
    check_workers(client)
    plugin = _ship(client, tape, tier)
    shared = dict(chunks.shared)
    plain = [i for i, a in shared.items() if not isinstance(a, distributed.Future)]
    if plain:  # to every worker, once
        shared.update(zip(plain, client.scatter([shared[i] for i in plain], broadcast=True)))
    token = uuid.uuid4().hex[:8]
    futures = []
    for c, (chunk, chunk_axes) in enumerate(chunks.chunks):
        call_args = tuple(shared[i] if i in shared else a for i, a in enumerate(chunk))
        futures.append(client.submit(
            _run_chunk, plugin, chunk_axes, threads_per_task, (c, chunks.starts[c]), *call_args,
            key=f"fasttape-{tape.name}-{token}-{c}", retries=retries, pure=False,
        ))  # fmt: skip
    return Batch(client, futures, chunks.starts, chunks.size, transformed, tape, chunks.shared, _axes_first(in_axes),
                 plugin)  # fmt: skip


def compute(transformed, *args, **options):
    """``map(transformed, *args, **options).result()``."""
    return map(transformed, *args, **options).result()


class Batch:
    """The chunks of one ``map`` on the cluster: ``futures`` (one per chunk, in order; ``starts``: each chunk's
    first member) and ``result()``, which gathers them.  ``plugin``: the name of the tape's worker plugin
    (``client.unregister_worker_plugin(batch.plugin)`` frees the tape on the workers)."""

    def __init__(self, client, futures, starts, size, transformed, tape, shared, in_axes, plugin):
        self.client, self.futures, self.starts, self.size, self.plugin = client, futures, starts, size, plugin
        self._transformed, self._tape, self._shared, self._in_axes = transformed, tape, shared, in_axes

    def __len__(self):
        return len(self.futures)

    def __iter__(self):
        return iter(self.futures)

    def __getitem__(self, chunk):
        return self.futures[chunk]

    def __repr__(self):
        done = sum(f.done() for f in self.futures)
        return f"<fasttape.dask.Batch: {self.size} members of {self._tape.name!r} in {len(self)} chunks, {done} done>"

    def cancel(self):
        self.client.cancel(self.futures)

    def result(self, timeout=None):
        """Wait for every chunk (at most ``timeout`` seconds: else TimeoutError); their results concatenated in
        order, the members the workers' tape could not run (another branch) computed here."""
        with self.client.as_current():  # (wait's client: this one, not the default)
            distributed.wait(self.futures, timeout=timeout)
        outputs = self.client.gather(self.futures)
        unfinished = {c: (failed, args) for c, (_, failed, args) in enumerate(outputs) if failed.size}
        if unfinished and isinstance(self._transformed, Tape):
            raise self._branch_changed(unfinished)
        local = self._locally(unfinished)
        # (a chunk none of whose members ran there, as only a worker without compiled kernels returns: all local)
        parts = [self._form(result) if result is not None else local[c] for c, (result, _, _) in enumerate(outputs)]
        whole = optree.tree_map(lambda *rows: np.concatenate(rows), *parts)
        for c, (failed, _) in unfinished.items():
            rows = self.starts[c] + failed

            def put(out, part, rows=rows):
                out[rows] = part

            optree.tree_map(put, whole, local[c])
        return whole

    def _form(self, result):
        """A chunk's ``(values, grads)`` (``((values, aux), grads)``) as ``transformed.map`` gives it."""
        if not isinstance(self._transformed, Grad):
            return result
        if self._tape.has_aux:
            (_, aux), grads = result
            return grads, aux
        return result[1]

    def _locally(self, unfinished) -> dict:
        """chunk -> ``transformed.map`` of its unfinished members, here (re-tracing for their branch)."""
        if not unfinished:
            return {}
        shared = {i: a.result() if isinstance(a, distributed.Future) else a for i, a in self._shared.items()}
        local = {}
        for c, (_, args) in unfinished.items():
            args = tuple(shared[i] if a is None else a for i, a in enumerate(args))
            local[c] = self._transformed.map(*args, in_axes=self._in_axes)
        return local

    def _branch_changed(self, unfinished) -> BranchChangedError:
        members = np.concatenate([self.starts[c] + failed for c, (failed, _) in unfinished.items()])
        return BranchChangedError(
            f"ft.dask.map: batch members {listed(members)} ({members.size} of {self.size}) take a different branch "
            f"of a Python if/while on a traced value than the one recorded in this tape of {self._tape.name!r}. Map "
            "ft.grad(f) or ft.value_and_grad(f) instead: the client re-traces for those members."
        )
