"""``ft.vmap``: a transformation over a batch, JAX's ``in_axes`` / ``out_axes``, as one compiled call.

``ft.vmap(ft.grad(loss), in_axes=(0, None, None))(W, X, y)`` finds the tape of the first member (recording
it if needed) and runs every member's sweep in one call of a batch driver (``fasttape.batch``), on every
core.  The results are those of a Python loop of single calls, bit for bit, stacked along ``out_axes``.

Members whose guards take another branch than the tape's are batched again on the tape of the first of
them (recorded when no cached tape fits), and so on until every member is done: a function with two
branches costs two traces and two batched calls.  A member whose sweep raises (an index out of range) is
run alone, and its error names the member.

What runs how (``vmap(fun).strategy``): ``ft.grad`` and ``ft.value_and_grad`` (a value-and-gradient
sweep per member), ``ft.jvp`` and ``ft.hvp`` (one direction per member), ``ft.vjp`` (a forward, then a
pull-back per member) and Jacobians and Hessians (every block of directions of every member,
``fasttape.batch_blocks``) are ``"sweeps"``, one compiled call; any other callable is ``"loop"``, its
calls stacked.  While the interpreter's sweeps are still compiling a batch runs its single calls (a
matrix's on a pool of threads).  ``ft.grad(f).map(W, X, y)`` is ``vmap`` with the differentiated arguments
mapped on axis 0 and the others shared; ``Tape.value_and_grad_batch`` and ``Tape.forward_batch`` batch a
tape of one branch.
"""

from __future__ import annotations

import functools

import numpy as np
import optree

from . import batch, batch_blocks, nesting
from . import derivatives as D
from .errors import BranchChangedError, InputSignatureError
from .tape import _arg_name


class Members:
    """The members of a batch: the positional arguments with JAX's ``in_axes`` (an int, None, or per
    argument a tree prefix of it), each mapped leaf moved to axis 0."""

    def __init__(self, args, in_axes, what="vmap", axis_size=None, n_args=None):
        self.what = what
        self.args = args = tuple(args)
        self.n_args = len(args) if n_args is None else n_args  # the tape's arguments; directions after them
        if isinstance(in_axes, list):
            in_axes = tuple(in_axes)
        if isinstance(in_axes, tuple):
            if len(in_axes) != len(args):  # (JAX's rule: a tuple has one entry per positional argument)
                raise ValueError(
                    f"{what}: in_axes has {len(in_axes)} entries but the call has {len(args)} positional "
                    "arguments. Give one entry per argument: an int, None, or a tree prefix of that argument."
                )
            per_argument = in_axes
        else:
            per_argument = (in_axes,) * len(args)
        self.trees = []  # per argument: (its leaves, its treedef)
        self.blocks = {}  # (argument, leaf) -> the mapped leaf, the batch axis first, C-contiguous
        sizes = {}
        for i, (arg, spec) in enumerate(zip(args, per_argument)):
            if type(arg) is np.ndarray and (spec is None or type(spec) is int):  # the common case, kept cheap
                self.trees.append(([arg], None))
                if spec is not None:
                    sizes[_arg_name(i, ())] = self._map(i, 0, arg, spec, _arg_name(i, ()))
                continue
            paths, leaves, treedef = optree.tree_flatten_with_path(arg, none_is_leaf=True)
            self.trees.append((leaves, treedef))
            try:
                axes = optree.broadcast_prefix(spec, arg, none_is_leaf=True)
            except ValueError as e:
                raise ValueError(
                    f"{what}: in_axes entry {spec!r} for argument {i} is not a tree prefix of it (its structure is "
                    f"{treedef}): {e}"
                ) from None
            for j, (path, leaf, axis) in enumerate(zip(paths, leaves, axes)):
                if axis is None:
                    continue
                name = _arg_name(i, path)
                sizes[name] = self._map(i, j, leaf, axis, name)
        if not sizes:
            if axis_size is None:
                raise ValueError(
                    f"{what}: no argument is mapped (every in_axes is None); map at least one, or give axis_size."
                )
            self.size = axis_size
        else:
            self.size = next(iter(sizes.values()))
            for name, size in sizes.items():
                if size != self.size:
                    first = next(iter(sizes))
                    raise ValueError(
                        f"{what}: mapped sizes differ: {first} has {self.size} members along its mapped axis but "
                        f"{name} has {size}. Every mapped argument must have the same size along its axis."
                    )
            if axis_size is not None and axis_size != self.size:
                raise ValueError(f"{what}: axis_size={axis_size} but the mapped arguments have {self.size} members.")

    def _map(self, i, j, leaf, axis, name) -> int:
        """Keep leaf ``j`` of argument ``i`` (``name``) with its axis ``axis`` first; its number of members."""
        what = self.what
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise TypeError(f"{what}: in_axes for {name} must be an int or None, got {axis!r}.")
        if not isinstance(leaf, (np.ndarray, float, int, np.generic, list)):
            raise ValueError(f"{what}: in_axes maps {name}, a {type(leaf).__name__}; only arrays can be mapped "
                             "(give it in_axes None).")  # fmt: skip
        array = np.asarray(leaf)
        if not -array.ndim <= axis < array.ndim:
            raise ValueError(
                f"{what}: in_axes {axis} for {name}, but it has {array.ndim} dimension(s) (shape {array.shape}); "
                f"a mapped axis must be in [-{array.ndim}, {array.ndim})."
            )
        if axis != 0:
            array = np.moveaxis(array, axis, 0)
        self.blocks[i, j] = np.ascontiguousarray(array)
        return array.shape[0]

    def member(self, b: int) -> tuple:
        """The arguments of member ``b``."""
        return self.rows(b) if self.blocks else self.args

    def rows(self, index) -> tuple:
        """The arguments with every mapped leaf cut to ``index`` along its batch axis (now axis 0): member
        ``b``'s for an int, a sub-batch's (the batch axis first) for a slice or indices."""
        args = []
        for i, (leaves, treedef) in enumerate(self.trees):
            mapped = [j for j in range(len(leaves)) if (i, j) in self.blocks]
            if not mapped:
                args.append(self.args[i])
            elif treedef is None:
                args.append(self.blocks[i, 0][index])
            else:
                leaves = list(leaves)
                for j in mapped:
                    leaves[j] = self.blocks[i, j][index]
                args.append(treedef.unflatten(leaves))
        return tuple(args)

    def subset(self, members) -> Members:
        """The batch of ``members`` (indices) alone."""
        other = object.__new__(Members)
        other.__dict__.update(self.__dict__)
        other.blocks = {key: block[members] for key, block in self.blocks.items()}
        other.size = len(members)
        return other

    def arguments(self, b: int) -> tuple:
        """The tape's arguments of member ``b`` (without its directions)."""
        return self.member(b)[: self.n_args]

    def seeds(self, tape) -> list:
        """(offset, (size, n) block) of every member's direction for each differentiated leaf of ``tape``: the
        arguments after the tape's, one per argument (a shared direction repeated)."""
        seeds = []
        for i in tape._diff_args:
            leaves = self.trees[self.n_args + i][0]
            for j, leaf in enumerate(tape._args[i].leaves):
                if leaf.kind == "static":
                    continue
                block = self.blocks.get((self.n_args + i, j))
                if block is None:
                    block = np.broadcast_to(
                        np.asarray(leaves[j], dtype=np.float64).reshape(1, -1), (self.size, leaf.size)
                    )
                seeds.append((leaf.offset, np.ascontiguousarray(block, dtype=np.float64).reshape(self.size, -1)))
        return seeds

    def cotangents(self, tape) -> list:
        """(offset, (size, n) block) of every member's cotangent for each output of ``tape``: the argument after
        the tape's, structured like the output, every leaf mapped; offsets one output after another."""
        leaves, treedef = self.trees[self.n_args]
        if treedef is not None and treedef != tape._out_tree:
            raise InputSignatureError(
                f"{self.what}: the cotangents have structure {treedef}, but the function's output has structure "
                f"{tape._out_tree}."
            )
        seeds, at = [], 0
        for j, (_, shape) in enumerate(tape._outputs):
            block = self.blocks.get((self.n_args, j))
            if block is None or block.shape[1:] != tuple(shape):
                got = "unmapped" if block is None else f"members of shape {block.shape[1:]}"
                raise InputSignatureError(
                    f"{self.what}: cotangent leaf {j} must hold one cotangent of shape {tuple(shape)} per member "
                    f"on axis 0; got {got}."
                )
            seeds.append((at, np.ascontiguousarray(block, dtype=np.float64).reshape(self.size, -1)))
            at += block[0].size
        return seeds

    def inputs(self, tape) -> list:
        """(argument, leaf, (size, *shape) block) of the mapped leaves the tape reads per call."""
        found = []
        for (i, j), block in self.blocks.items():
            if i >= self.n_args:
                continue
            leaf = tape._args[i].leaves[j]
            if leaf.kind == "static":
                raise ValueError(
                    f"{self.what}: in_axes maps {leaf.name}, but {tape.name!r} holds it as a static value baked "
                    "into the tape (an int, a string, a boolean). Give it in_axes None, or pass a float or integer "
                    "array."
                )
            found.append((i, j, block))
        return found


def _stack(results):
    return optree.tree_map(lambda *xs: np.stack(xs), *results, none_is_leaf=False)


def _apply_out_axes(result, out_axes, what):
    if out_axes == 0:
        return result
    paths, leaves, treedef = optree.tree_flatten_with_path(result, none_is_leaf=True)
    try:
        axes = optree.broadcast_prefix(out_axes, result, none_is_leaf=True)
    except ValueError as e:
        raise ValueError(f"{what}: out_axes {out_axes!r} is not a tree prefix of the result ({treedef}): {e}") from None
    moved = []
    for path, leaf, axis in zip(paths, leaves, axes):
        if leaf is None:
            moved.append(None)
            continue
        leaf = np.asarray(leaf)
        if axis is None:
            if not all(np.array_equal(leaf[0], row) for row in leaf[1:]):
                raise ValueError(
                    f"{what}: out_axes None for result{''.join(f'[{p!r}]' for p in path)}, but it differs "
                    "between members; only a result that does not depend on the mapped arguments can be unmapped."
                )
            moved.append(leaf[0])
            continue
        if isinstance(axis, bool) or not isinstance(axis, int) or not -leaf.ndim <= axis < leaf.ndim:
            raise ValueError(f"{what}: out_axes {axis!r} does not fit a result of {leaf.ndim} dimension(s).")
        moved.append(np.moveaxis(leaf, 0, axis))
    return treedef.unflatten(moved)


def run_members(members: Members, entry: str, tape_of, single, workers, what, retrace=True, interpreted=False):
    """``entry`` for every member: on ``tape_of(args)`` of the first pending member, batched, until none is
    left.  Returns (results in the takes' order, the last tape), or None when no compiled tier is ready (the
    caller loops over ``single``).  ``retrace`` False: one tape only, whose branch changes are an error."""
    B = members.size
    pending = np.arange(B)
    out = tape = None
    while pending.size:
        sub = members if pending.size == B else members.subset(pending)
        args0 = sub.arguments(0)
        tape = tape_of(args0)
        seeds = ()
        if entry in ("jvp", "hvp", "value_grad_and_hvp"):
            seeds = sub.seeds(tape)
        elif entry == "vjp":
            seeds = sub.cotangents(tape)
        if entry in batch_blocks.KINDS:
            ran = batch_blocks.run(tape, entry, args0, sub.inputs(tape), sub.size, workers)
        else:
            ran = batch.run(tape, entry, args0, sub.inputs(tape), sub.size, workers, seeds, interpreted)
        if ran is None:
            return None
        status, results, _ = ran
        if out is None and not status.any():
            return results, tape
        if out is None:
            out = [np.empty((B, *r.shape[1:]), r.dtype) for r in results]
        elif [o.shape[1:] for o in out] != [r.shape[1:] for r in results]:
            raise ValueError(f"{what}: members taking different branches return results of different shapes.")
        done = status == 0
        for o, r in zip(out, results):
            o[pending[done]] = r[done]
        raised = np.flatnonzero(status == 2)
        if raised.size:
            _raise_member(single, members, int(pending[raised[0]]))
        failed = status == 1
        if not retrace:
            _branch_changed(tape, pending[failed], B)
        if failed[0]:  # its first member's own tape fails it: the single call says why
            _raise_member(single, members, int(pending[0]))
        pending = pending[failed]
    return out, tape


def reraise_as(error: Exception, text: str):
    """Raise ``error`` again with the message ``text`` (its own type and traceback; as it was when its type
    takes other arguments)."""
    try:
        renamed = type(error)(text)
    except Exception:
        raise error from None
    raise renamed.with_traceback(error.__traceback__) from None


def listed(members) -> str:
    """``[5, 6, 10, ...]``: the first members of ``members`` (indices), for an error message."""
    return "[" + ", ".join(str(int(b)) for b in members[:8]) + (", ..." if len(members) > 8 else "") + "]"


def _raise_member(single, members, b):
    try:
        single(*members.member(b))
    except Exception as e:
        reraise_as(e, f"batch member {b}: {e}")
    raise RuntimeError(f"batch member {b} raised in the compiled batch but not when run alone; please report it.")


def _branch_changed(tape, failed, B):
    raise BranchChangedError(
        f"batch members {listed(failed)} ({failed.size} of {B}) take a different branch of a Python if/while on a "
        f"traced value than the one recorded in this tape of {tape.name!r}. Use ft.vmap(ft.grad(f)) or "
        "ft.grad(f).map(...), which re-trace for the members of each branch, or ft.trace(f, *their_args)."
    )


def _grads_structure(tape, results):
    """The differentiated arguments' structure of their leaves' results (and the results after them)."""
    blocks = []
    for i in tape._diff_args:
        spec = tape._args[i]
        n = sum(leaf.kind != "static" for leaf in spec.leaves)
        leaves, results = results[:n], results[n:]
        blocks.append(leaves[0] if spec.simple else spec.treedef.unflatten(leaves))
    return tape._grad_structure(blocks), results


def value_and_grad_structure(tape, results):
    """``(values, grads, aux)`` of a batch from its results (``batch``'s takes of value_and_grad)."""
    grads, rest = _grads_structure(tape, results[1:])
    aux = tape._aux_tree.unflatten(rest) if tape.has_aux else None
    return results[0], grads, aux


def forward_structure(tape, results):
    n = len(tape._outputs)
    out = results[0] if tape._single_out else tape._out_tree.unflatten(results[:n])
    return (out, tape._aux_tree.unflatten(results[n:])) if tape.has_aux else out


def default_axes(n_args: int, argnums) -> tuple:
    """The differentiated arguments mapped on axis 0, the others shared (``.map`` and the Tape's batches)."""
    mapped = {argnums} if isinstance(argnums, int) else set(argnums)
    return tuple(0 if i in mapped else None for i in range(n_args))


class Vmapped:
    """``fun`` mapped over a batch (see the module docstring); ``compiled``: whether its calls run as batched
    sweeps (else as a loop of single calls)."""

    def __init__(self, fun, in_axes=0, out_axes=0, workers=None, axis_size=None):
        if not callable(fun):
            raise TypeError(f"vmap expects a callable, got {type(fun).__name__}.")
        self.fun = fun
        self.in_axes = in_axes
        self.out_axes = out_axes
        self.workers = workers
        self.axis_size = axis_size
        functools.update_wrapper(self, fun, updated=())
        from .api import Grad, Hessian, Jacobian, ValueAndGrad

        self._matrices = isinstance(fun, (Jacobian, Hessian))
        self._directional = _directional_kind(fun)
        self.compiled = self._matrices or self._directional is not None or isinstance(fun, (Grad, ValueAndGrad))
        self.strategy = "sweeps" if self.compiled else "loop"

    def __call__(self, *args):
        if nesting.inside_trace(args):
            raise TypeError(
                "vmap was called on traced values (inside a function being traced); fasttape batches tapes from "
                "outside. Apply vmap outside the traced function, or write the batch with array operations."
            )
        found = self._directional
        if found is not None and found[0] == "vjp":
            return _vjp_batch(*found[1:], args, self.in_axes, self.out_axes, self.axis_size, self.workers)
        if found is not None:
            result = _directions_batch(*_directional(found, args, self.in_axes), self.axis_size, self.workers)
            return _apply_out_axes(result, self.out_axes, "vmap")
        members = Members(args, self.in_axes, "vmap", self.axis_size)
        result = None
        if self._matrices:
            result = _matrices(self.fun, members, self.workers)
            if result is None:  # (sweeps these drivers do not run: the single calls themselves, on every core)
                result = _threaded(self.fun, members, self.workers)
        elif self.compiled:
            result = self._batched(members)
        if result is None:
            result = _stack([self.fun(*members.member(b)) for b in range(members.size)])
        return _apply_out_axes(result, self.out_axes, "vmap")

    def _batched(self, members):
        fun = self.fun
        ran = run_members(members, "value_and_grad", lambda a: fun.tape(*a), fun, self.workers, "vmap")
        if ran is None:
            return None
        results, tape = ran
        values, grads, aux = value_and_grad_structure(tape, results)
        from .api import Grad

        if isinstance(fun, Grad):
            return (grads, aux) if tape.has_aux else grads
        return ((values, aux), grads) if tape.has_aux else (values, grads)


def _directional_kind(fun):
    """("jvp", "hvp", "value_grad_and_hvp" or "vjp", the function they differentiate or None, has_aux) for those
    transformations of ``fasttape`` themselves or their partials with f and / or ``has_aux`` (jvp and vjp); None
    for anything else."""
    from . import api

    kinds = {api.jvp: "jvp", api.hvp: "hvp", api.vjp: "vjp", api.value_grad_and_hvp: "value_grad_and_hvp"}
    if isinstance(fun, functools.partial) and fun.func in kinds and len(fun.args) <= 1:
        kind = kinds[fun.func]
        allowed = {"has_aux"} if kind in ("jvp", "vjp") else set()
        if set(fun.keywords) <= allowed:
            return kind, (fun.args[0] if fun.args else None), bool(fun.keywords.get("has_aux", False))
        return None
    if fun in kinds:
        return kinds[fun], None, False
    return None


def _directional(found, args, in_axes):
    """(kind, f, has_aux, primals, tangents, primal axes, tangent axes) of a vmap of ``ft.jvp`` / ``ft.hvp`` /
    ``ft.value_grad_and_hvp`` (``found``: its ``_directional_kind``), called with ``(f, primals, tangents)``, f's
    in_axes None, or as their partial with f with ``(primals, tangents)``."""
    kind, f, has_aux = found
    expected = 2 if f is not None else 3
    if len(args) != expected:
        raise TypeError(f"vmap of {kind}: call it with {'(primals, tangents)' if f else '(f, primals, tangents)'}.")
    if isinstance(in_axes, list):
        in_axes = tuple(in_axes)
    axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * expected
    if len(axes) != expected:
        raise ValueError(f"vmap of {kind}: in_axes has {len(axes)} entries for {expected} arguments.")
    if f is None:
        f, args = args[0], args[1:]
        if axes[0] is not None:
            raise ValueError(f"vmap of {kind}: the function (argument 0) cannot be mapped; give it in_axes None.")
        axes = axes[1:]
    primals, tangents = (tuple(a) if isinstance(a, (tuple, list)) else a for a in args)
    if not isinstance(primals, tuple) or not isinstance(tangents, tuple) or len(primals) != len(tangents):
        raise TypeError(f"vmap of {kind}: primals and tangents must be tuples with one tangent per primal.")

    def per_primal(axis, what):
        if isinstance(axis, (tuple, list)):
            if len(axis) != len(primals):
                raise ValueError(f"vmap of {kind}: in_axes for the {what} has {len(axis)} entries for "
                                 f"{len(primals)} primals.")  # fmt: skip
            return tuple(axis)
        return (axis,) * len(primals)

    return kind, f, has_aux, primals, tangents, per_primal(axes[0], "primals"), per_primal(axes[1], "tangents")


def _directions_batch(kind, f, has_aux, primals, tangents, primal_axes, tangent_axes, axis_size, workers):
    """A JVP (with its aux, if ``has_aux``) or an HVP per member: one direction each, one compiled call (a
    member's directions with a trailing axis of k run as a loop of single calls)."""
    from . import api

    n = len(primals)
    members = Members(primals + tangents, primal_axes + tangent_axes, f"vmap of {kind}", axis_size, n_args=n)

    options = {"has_aux": has_aux} if kind == "jvp" else {}

    def single(*member):
        return getattr(api, kind)(f, member[:n], member[n:], **options)

    argnums = tuple(range(n)) if kind == "jvp" or n > 1 else 0
    transform = api._cached_transform(f, "jvp" if kind == "jvp" else "hvp", argnums, has_aux)
    first = members.member(0)
    tape = transform.tape(*first[:n])  # (the tape of the first member, to check the directions against)
    v = first[n:] if kind == "jvp" or n > 1 else first[n]
    _, multi = D._split_directions(tape, v, "tangents" if kind == "jvp" else "v")  # (checks the directions)
    if kind != "jvp":
        D._require_scalar(tape, kind)
    if multi:
        return _stack([single(*members.member(b)) for b in range(members.size)])
    ran = run_members(members, kind, lambda a: transform.tape(*a), single, workers, f"vmap of {kind}")
    if ran is None:
        return _stack([single(*members.member(b)) for b in range(members.size)])
    results, tape = ran
    if kind == "hvp":
        return _grads_structure(tape, results)[0]
    if kind == "value_grad_and_hvp":
        grads, hvps = _grads_structure(tape, results[1:])
        return results[0], grads, _grads_structure(tape, hvps)[0]
    n_out = len(tape._outputs)
    outs, aux, tangents_out = results[:n_out], results[n_out:-n_out], results[-n_out:]
    pair = tape._out_tree.unflatten(outs), tape._out_tree.unflatten(tangents_out)
    return (*pair, tape._aux_tree.unflatten(aux)) if has_aux else pair


def _matrices(fun, members, workers):
    """A Jacobian or a Hessian of every member, blocks of directions and all, in one compiled call per branch
    (``fasttape.batch_blocks``); None when those drivers cannot run the single calls' sweeps."""
    kind = fun.kind

    def tape_of(args):
        tape = fun.tape(*args)
        if batch_blocks.resolve(tape, kind) is None:
            fun(*args)  # a Jacobian's first call measures a block of each mode and keeps the cheaper with its tape
        return tape

    ran = run_members(members, kind, tape_of, fun, workers, "vmap")
    if ran is None:
        return None
    (matrices,), tape = ran
    size = (members.size,)
    if kind == "hessian":
        return D.hessian_structure(tape, matrices, size)
    result = D.jacobian_structure(tape, matrices, size)
    if not tape.has_aux:
        return result
    ran = run_members(members, "forward", lambda a: fun.tape(*a), fun, workers, "vmap", interpreted=True)
    if ran is None:
        return None
    results, tape = ran
    return result, forward_structure(tape, results)[1]


def _threaded(fun, members, workers):
    """``fun`` (a Jacobian or a Hessian whose blocks the drivers cannot run yet) of every member, the first
    alone (it records the tape and fixes the Jacobian's mode and blocks), the others on a pool of threads,
    each call on a workspace of its own (the sweeps release the GIL): the single calls themselves."""
    first = fun(*members.member(0))
    T = min(batch.threads(workers), members.size - 1)
    if T <= 1:
        return _stack([first] + [fun(*members.member(b)) for b in range(1, members.size)])
    from concurrent.futures import ThreadPoolExecutor

    with batch._blas_one_thread(), ThreadPoolExecutor(T, thread_name_prefix="fasttape-vmap") as pool:
        rest = list(pool.map(lambda b: fun(*members.member(b)), range(1, members.size)))
    return _stack([first] + rest)


def _vjp_batch(f, has_aux, args, in_axes, out_axes, axis_size, workers):
    """``(outputs, vjp_fn)`` (and the aux with ``has_aux``) of a batch of ``ft.vjp`` (called as ``ft.vjp(f,
    *primals)``, or its partial with f): ``vjp_fn(cotangents)``, one cotangent per member on axis 0, pulls
    every member back in one compiled call.  It runs each member's forward sweep again rather than keeping a
    buffer per member (memory for the threads, not for the batch): the same values, so the same bits as the
    single calls' pull-backs."""
    from . import api

    if f is None:
        if not args:
            raise TypeError("vmap of vjp: call it with (f, *primals).")
        f, args = args[0], args[1:]
        if isinstance(in_axes, (tuple, list)):
            if len(in_axes) != len(args) + 1 or in_axes[0] is not None:
                raise ValueError("vmap of vjp: in_axes needs one entry per argument, None for the function.")
            in_axes = tuple(in_axes[1:])
    members = Members(args, in_axes, "vmap of vjp", axis_size)
    n = len(args)
    transform = api._cached_transform(f, "vjp", tuple(range(n)), has_aux)

    def forward(*primals):
        found = api.vjp(f, *primals, has_aux=has_aux)
        return (found[0], found[2]) if has_aux else found[0]

    ran = run_members(members, "forward", lambda a: transform.tape(*a), forward, workers, "vmap of vjp",
                      interpreted=True)  # (Tape.vjp's forward is the interpreter's)  # fmt: skip
    if ran is None:
        outputs = _stack([forward(*members.member(b)) for b in range(members.size)])
    else:
        outputs = forward_structure(ran[1], ran[0])
    pull_back = BatchVJP(f, has_aux, transform, members, workers)
    if has_aux:
        outputs, aux = outputs
        return _apply_out_axes(outputs, out_axes, "vmap"), pull_back, aux
    return _apply_out_axes(outputs, out_axes, "vmap"), pull_back


class BatchVJP:
    """The pull-back of a batch of VJPs: ``vjp_fn(cotangents)`` with one cotangent per member on axis 0 (structured
    like the function's output) returns, per primal, the members' VJPs stacked on axis 0."""

    def __init__(self, f, has_aux, transform, members, workers):
        self._f, self._has_aux, self._transform, self._members, self._workers = f, has_aux, transform, members, workers

    def __call__(self, cotangents):
        from . import api

        members, n = self._members, self._members.n_args
        mapped = Members.__new__(Members)
        mapped.__dict__.update(members.__dict__)
        mapped.what = "vmap of vjp"
        leaves, treedef = optree.tree_flatten(cotangents, none_is_leaf=True)
        mapped.args = members.args + (cotangents,)
        mapped.trees = members.trees + [(leaves, treedef)]
        mapped.blocks = dict(members.blocks)
        for j, leaf in enumerate(leaves):
            block = np.asarray(leaf)
            if block.ndim == 0 or block.shape[0] != members.size:
                raise ValueError(
                    f"vmap of vjp: cotangent leaf {j} must hold one cotangent per member on axis 0 ({members.size} "
                    f"members); got shape {block.shape}."
                )
            mapped.blocks[n, j] = np.ascontiguousarray(block)

        def single(*member):
            return api.vjp(self._f, *member[:n], has_aux=self._has_aux)[1](member[n])

        transform = self._transform
        ran = run_members(mapped, "vjp", lambda a: transform.tape(*a), single, self._workers, "vmap of vjp")
        if ran is None:
            return _stack([single(*mapped.member(b)) for b in range(mapped.size)])
        return _grads_structure(ran[1], ran[0])[0]


def vmap(fun, in_axes=0, out_axes=0, *, workers=None, axis_size=None) -> Vmapped:
    """``fun`` over a batch, as ``jax.vmap``: ``in_axes`` an int, None, or a tuple with per positional argument
    an int, None or a tree prefix of it; ``out_axes`` the same for the result.  ``workers``: the threads (``-1``
    all; by default the ``workers`` option, else all)."""
    return Vmapped(fun, in_axes, out_axes, workers, axis_size)


def tape_value_and_grad_batch(tape, args, in_axes, workers):
    """``Tape.value_and_grad_batch``: the tape's value and gradient for every member; a member on another branch
    is an error (a Tape cannot re-trace)."""
    if in_axes is None:
        in_axes = default_axes(len(args), tape.argnums)
    members = Members(args, in_axes, "value_and_grad_batch")
    ran = run_members(members, "value_and_grad", lambda a: tape, tape.value_and_grad, workers, "value_and_grad_batch",
                      retrace=False)  # fmt: skip
    if ran is None:
        return _stack([tape.value_and_grad(*members.member(b)) for b in range(members.size)])
    values, grads, aux = value_and_grad_structure(tape, ran[0])
    return ((values, aux), grads) if tape.has_aux else (values, grads)


def tape_forward_batch(tape, args, in_axes, workers):
    """``Tape.forward_batch``: the tape's outputs for every member."""
    if in_axes is None:
        in_axes = default_axes(len(args), tape.argnums)
    members = Members(args, in_axes, "forward_batch")
    ran = run_members(members, "forward", lambda a: tape, tape, workers, "forward_batch", retrace=False)
    if ran is None:
        return _stack([tape(*members.member(b)) for b in range(members.size)])
    return forward_structure(tape, ran[0])


def tape_value_and_grad_partial(tape, args, in_axes=None, workers=None):
    """``Tape.value_and_grad_batch`` for a process that holds the tape and not its function (a Dask worker):
    ``(result, failed)``, ``failed`` the indices of the members whose guards take another branch (their rows
    of ``result`` are NaN: the caller, which can re-trace, computes them)."""
    if in_axes is None:
        in_axes = default_axes(len(args), tape.argnums)
    members = Members(args, in_axes, "value_and_grad_batch")
    args0 = members.member(0)
    ran = batch.run(tape, "value_and_grad", args0, members.inputs(tape), members.size, workers)
    if ran is None:  # the interpreter is still compiling: single calls
        status = np.zeros(members.size, dtype=np.int8)
        rows = []
        for b in range(members.size):
            result = tape._value_and_grad(members.member(b))
            status[b] = result is None
            rows.append(result)
        good = next((r for r in rows if r is not None), None)
        if good is None:
            return None, np.arange(members.size)
        rows = [r if r is not None else optree.tree_map(lambda x: np.full_like(x, np.nan, dtype=float), good)
                for r in rows]  # fmt: skip
        values, grads, aux = _stack(rows)
    else:
        status, results, _ = ran
        raised = np.flatnonzero(status == 2)
        if raised.size:
            _raise_member(tape.value_and_grad, members, int(raised[0]))
        for r in results:
            if r.dtype.kind == "f":
                r[status == 1] = np.nan
        values, grads, aux = value_and_grad_structure(tape, results)
    result = ((values, aux), grads) if tape.has_aux else (values, grads)
    return result, np.flatnonzero(status == 1)
