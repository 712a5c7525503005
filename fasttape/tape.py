"""The ``Tape``: a recorded program in flat arrays, replayed by compiled sweeps.

:func:`fasttape.tracing.record` runs a user's function once on tracers and freezes what the
:class:`~fasttape.recorder.Recorder` appended into a ``Tape``.  A ``Tape`` owns
the instruction table, the aux array (header, guards, gather indices), a
template value buffer with the constants filled in, and the maps from the
function's arguments and results to slots.  Calling it binds new inputs into a
buffer and makes exactly one compiled call.
"""

from __future__ import annotations

import collections
import math
import re
import threading
import weakref
from dataclasses import dataclass, field

import numpy as np
import optree

from . import adjoint_plan, families, fusion, tape_kernels, tiers
from . import kernels as K
from .config import check_memory
from .errors import (
    BranchChangedError,
    InputSignatureError,
    InputTypeError,
    NonScalarOutputError,
)
from .recorder import Recorder
from .slots import TYPE_NAMES

_MAX_SPARE_BUFFERS = 4
_SPARE_BYTES = 256 * 2**20  # spare workspaces kept for concurrent calls: up to 32 of them within this, at least 4
_KEEP_DIRECTION_BYTES = 256 * 2**20  # per direction buffer kept with a workspace (a fresh one costs its page faults)
_F64 = np.dtype(np.float64)


# --------------------------------------------------------------------------
# argument and result specs
# --------------------------------------------------------------------------
@dataclass
class Leaf:
    """One leaf of an argument: a dynamic float input or a static value."""

    kind: str  # "array" | "integers" (an integer array: runtime data, never differentiated) | "scalar" | "static"
    name: str
    offset: int = -1
    shape: tuple = ()
    size: int = 0
    value: object = None


@dataclass
class ArgSpec:
    treedef: object
    leaves: list[Leaf]
    differentiable: bool
    simple: bool = field(init=False)  # the argument is one plain array
    sequence: type | None = field(init=False)  # tuple or list when it is one of float arrays, nothing nested

    def __post_init__(self):
        self.simple = self.treedef.num_leaves == 1 and self.treedef.num_nodes == 1 and self.leaves[0].kind == "array"
        flat = self.treedef.num_nodes == self.treedef.num_leaves + 1 and self.treedef.type in (tuple, list)
        arrays = all(leaf.kind == "array" for leaf in self.leaves)
        self.sequence = self.treedef.type if flat and arrays and self.leaves else None


def _flatten(tree):
    return optree.tree_flatten(tree, none_is_leaf=True)


def classify_leaf(leaf):
    """'array' / 'scalar' for float data that changes per call, 'integers' for an integer ndarray (data of
    the sweep too, never differentiated: indices, labels), else 'static' (Python ints, strings, None, booleans,
    NumPy scalars of other types: baked into the tape)."""
    if isinstance(leaf, bool) or leaf is None or isinstance(leaf, (str, bytes, int)):
        return "static"
    if isinstance(leaf, float):
        return "scalar"
    if isinstance(leaf, np.ndarray):
        kind = leaf.dtype.kind
        return "array" if kind == "f" else "integers" if kind in "iu" else "static"
    if isinstance(leaf, np.generic) or hasattr(leaf, "__array__"):
        return "array" if np.asarray(leaf).dtype.kind == "f" else "static"
    return "static"


def float64_arrays(args, shapes) -> bool:
    """Whether ``args`` are float64 arrays of ``shapes`` (what the kernels' io entries take as they are)."""
    if len(args) != len(shapes):
        return False
    for a, shape in zip(args, shapes):
        if type(a) is not np.ndarray or a.dtype is not _F64 or a.shape != shape:
            return False
    return True


def leaf_type_error(leaf, where):
    dtype = getattr(leaf, "dtype", type(leaf).__name__)
    return InputTypeError(
        f"{where} has dtype {dtype}, but only real floating-point inputs can be differentiated. "
        "Convert it with np.asarray(x, dtype=float), or leave it out of argnums (non-float arguments are "
        "treated as constants of the trace)."
    )


def _static_equal(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)
    try:
        return bool(a == b)
    except Exception:
        return a is b


def _arg_name(i, path):
    return f"arg{i}" + "".join(f"[{p!r}]" for p in path)


# --------------------------------------------------------------------------
# the Tape
# --------------------------------------------------------------------------
class Tape:
    """A recorded program: call it, or ask it for gradients and VJPs.

    ``tape(*args)`` replays the forward sweep; ``tape.value_and_grad(*args)``
    and ``tape.grad(*args)`` differentiate with respect to the ``argnums`` the
    tape was recorded with; ``tape.vjp(*args)`` pulls back cotangents.  A tape
    is specialised to the shapes, container structure and static (non-float)
    values it was recorded with.
    """

    # (slots: an instance dictionary of more than 30 keys stops sharing its keys in CPython 3.11, and every
    # attribute read of the call path got slower by a tenth)
    __slots__ = (
        "name", "_out_kind", "argnums", "has_aux", "_args", "_out_tree", "_outputs", "output_slots", "_aux_tree",
        "_aux", "_slots", "_guards", "n_values", "_row_operands", "ins", "aux", "_template", "code", "_spare",
        "_max_spare", "_diff_args", "_all_simple", "_single_grad", "_single_out", "_scalar_out", "_out_position",
        "_grad_ok", "_kernels", "_io_shapes", "_grad_shape", "__dict__", "__weakref__",
    )  # fmt: skip

    def __init__(
        self, rec: Recorder, args: list[ArgSpec], argnums: tuple, outputs, aux_out, has_aux, name, out_kind="f"
    ):
        self.name = name
        self._out_kind = out_kind  # "f", or "b" / "i" when the output is boolean / integer: no gradient
        self.argnums = argnums
        self.has_aux = has_aux
        self._args = args
        self._out_tree, self._outputs, self.output_slots = outputs  # every output is a slot
        self._aux_tree, self._aux, _ = aux_out
        self._slots = rec.slots  # (a SlotTable: the scalar path's output slots made when first read)
        self._guards = rec.guards
        n_values = rec.n_values
        self.n_values = n_values
        check_memory(tape_bytes(n_values, len(rec.log), rec.pool_len + 2 * len(rec.guards)), f"the tape of {name!r}")
        self.ins, self._row_operands, row_out, rec.slots.source = rec.log.frozen()  # (the log is let go)
        graph = adjoint_plan.graph(rec.slots, self._row_operands, self.ins, row_out)
        adjoint_plan.unreached_rows_inactive(graph, self.ins, self.output_slots)
        zero_runs = adjoint_plan.plan_adjoint_initialisation(graph, self.ins, self.output_slots)
        guard_start = rec.pool_len
        zeros_start = guard_start + 2 * len(rec.guards)
        aux = np.zeros(zeros_start + 2 * len(zero_runs), dtype=np.int64)
        aux[K.M_NVALS] = n_values
        aux[K.M_GUARDS] = guard_start
        aux[K.M_NGUARDS] = len(rec.guards)
        aux[K.M_ZEROS] = zeros_start
        aux[K.M_NZEROS] = len(zero_runs)
        aux[zeros_start:] = zero_runs.reshape(-1)
        pos = K.HEADER
        for idx in rec.pool:
            aux[pos : pos + idx.size] = idx
            pos += idx.size
        for g, (offset, outcome) in enumerate(rec.guards):
            aux[guard_start + 2 * g] = offset
            aux[guard_start + 2 * g + 1] = int(outcome)
        self.aux = aux
        template = np.zeros(2 * n_values, dtype=np.float64)
        for offset, flat in rec.constants:
            template[offset : offset + flat.size] = flat
        self._template = template
        self._finish(graph)

    def _finish(self, graph=None):
        """Derived attributes (shared by recording and loading from a file).  ``graph``: the tape's
        :class:`adjoint_plan.Graph`, when the recording already built it."""
        graph = adjoint_plan.graph(self._slots, self._row_operands, self.ins) if graph is None else graph
        adjoint_plan.mark_constant_adjoints(graph, self.ins)
        self.code = K.scalar_code(self.ins)
        read_by_caller = [(e[0], math.prod(e[1])) for e in (*self._outputs, *self._aux) if e[0] != "const"]
        fusion.mark_regions(self.code, self.ins, self.aux, read_by_caller)
        argnums, args = self.argnums, self._args
        self._spare: collections.deque = collections.deque()
        self._max_spare = max(_MAX_SPARE_BUFFERS, min(32, _SPARE_BYTES // max(16 * self.n_values, 1)))
        self._diff_args = list(argnums) if isinstance(argnums, tuple) else [argnums]  # in argnums order
        self._all_simple = all(spec.simple and spec.leaves[0].shape != () for spec in args)
        self._single_grad = self._all_simple and isinstance(argnums, int)
        self._single_out = self._out_tree.num_nodes == 1 and len(self._outputs) == 1
        self._scalar_out = len(self._outputs) == 1 and self._outputs[0][1] == ()
        self._out_position = self._outputs[0][0] if self._scalar_out else -1
        self._grad_ok = self._scalar_out and self._out_kind == "f"
        self._kernels = tape_kernels.Kernels()  # its own compiled sweeps, once it is hot
        # the shapes of a tape of float arrays with one differentiated (the kernels' value_and_grad_io)
        self._io_shapes = tuple(spec.leaves[0].shape for spec in args) if self._single_grad else None
        self._grad_shape = self._io_shapes[self._diff_args[0]] if self._single_grad else None

    # -- buffers -----------------------------------------------------------
    def _new_workspace(self) -> _Workspace:
        return _Workspace(self._template, self._args, self.n_values)

    def _take_workspace(self) -> _Workspace:
        """A spare workspace (or a new one): each call in flight has its own buffers."""
        try:
            return self._spare.pop()  # atomic: two threads never get the same workspace
        except IndexError:
            return self._new_workspace()

    def _return_workspace(self, ws: _Workspace):
        if len(self._spare) < self._max_spare:
            self._spare.append(ws)

    # -- binding inputs ----------------------------------------------------
    def _bind(self, args, ws: _Workspace):
        if self._all_simple and len(args) == len(ws.simple_inputs):
            # the common case: every argument one float64 array of the recorded shape
            for arg, view in zip(args, ws.simple_inputs):
                if type(arg) is not np.ndarray or arg.dtype is not _F64 or arg.shape != view.shape:
                    break
                view[...] = arg
            else:
                return
        specs = self._args
        if len(args) != len(specs):
            raise TypeError(
                f"this tape of {self.name!r} was recorded with {len(specs)} positional arguments, got {len(args)}."
            )
        for i, (arg, spec) in enumerate(zip(args, specs)):
            if spec.simple and type(arg) is np.ndarray and arg.dtype.kind == "f":
                view = ws.inputs[i][0]
                if arg.shape != view.shape:
                    raise self._shape_error(spec.leaves[0], arg.shape)
                view[...] = arg
                continue
            if type(arg) is spec.sequence and len(arg) == len(spec.leaves):  # a tuple or list of float arrays
                for value, leaf, view in zip(arg, spec.leaves, ws.inputs[i]):
                    if type(value) is np.ndarray and value.dtype is _F64 and value.shape == view.shape:
                        view[...] = value
                    else:
                        self._write_leaf(value, leaf, spec.differentiable, view)
                continue
            leaves, treedef = _flatten(arg)
            if treedef != spec.treedef:
                raise InputSignatureError(
                    f"argument {i} of {self.name!r} has structure {treedef}, but the tape was recorded with "
                    f"{spec.treedef}. Pass the same container structure, or use ft.grad / ft.value_and_grad, "
                    "which record a tape per structure."
                )
            for value, leaf, view in zip(leaves, spec.leaves, ws.inputs[i]):
                self._write_leaf(value, leaf, spec.differentiable, view)

    def _shape_error(self, leaf, got):
        return InputSignatureError(
            f"{leaf.name} of {self.name!r} has shape {tuple(got)}, but the tape was recorded with shape "
            f"{leaf.shape}. A tape is specialised to its input shapes: use ft.grad / ft.value_and_grad (which "
            "record one tape per shape) or ft.trace(f, *new_args)."
        )

    def _write_leaf(self, value, leaf, differentiable, view):
        if leaf.kind == "static":
            if not _static_equal(value, leaf.value):
                raise InputSignatureError(
                    f"{leaf.name} of {self.name!r} is a static (non-float) argument recorded as {leaf.value!r}, "
                    f"got {value!r}. Static arguments are baked into a tape; use ft.grad / ft.value_and_grad, "
                    "which record one tape per static value."
                )
            return
        arr = np.asarray(value)
        kind = arr.dtype.kind
        if leaf.kind == "integers" and kind not in "iu":
            raise InputSignatureError(
                f"{leaf.name} of {self.name!r} was recorded as an integer array; got dtype {arr.dtype}. Pass integers "
                "(its values are read as indices and labels), or use ft.grad / ft.value_and_grad, which record one "
                "tape per dtype."
            )
        if kind != "f" and (differentiable or kind not in "biu"):
            raise leaf_type_error(value, leaf.name)
        if arr.shape != leaf.shape:
            raise self._shape_error(leaf, arr.shape)
        view[...] = arr

    # -- reading results ---------------------------------------------------
    def _read(self, buf, entry):
        if entry[0] == "const":
            return entry[1]
        offset, shape = entry[:2]
        if len(entry) == 3:  # a boolean or integer aux value (a traced comparison, an argmax)
            run = buf[offset : offset + math.prod(shape)].reshape(shape)
            return run != 0.0 if entry[2] == "bool" else run.astype(np.int64)
        if shape == ():
            return np.float64(buf[offset])
        return buf[offset : offset + math.prod(shape)].reshape(shape).copy()

    def _outputs_of(self, buf):
        if self._single_out:
            return self._read(buf, self._outputs[0])
        leaves = [self._read(buf, e) for e in self._outputs]
        return self._out_tree.unflatten(leaves)

    def _aux_of(self, buf):
        return self._aux_tree.unflatten([self._read(buf, e) for e in self._aux])

    def _grads_of(self, ws: _Workspace):
        if self._all_simple:
            return [ws.simple_adjoints[i].copy() for i in self._diff_args]
        grads = []
        for i in self._diff_args:
            spec = self._args[i]
            leaves = [view[()] if view.ndim == 0 else view.copy() for view in ws.adjoints[i]]
            grads.append(leaves[0] if spec.simple else spec.treedef.unflatten(leaves))
        return grads

    def _grad_structure(self, grads):
        return grads[0] if isinstance(self.argnums, int) else tuple(grads)

    def _branch_error(self):
        return BranchChangedError(
            f"these inputs take a different branch of a Python if/while on a traced value than the one "
            f"recorded in this tape of {self.name!r} ({len(self._guards)} recorded conditions). "
            "Use ft.grad / ft.value_and_grad, which re-trace for the new branch, or ft.trace(f, *these_args)."
        )

    # -- public replay -----------------------------------------------------
    def forward(self, *args):
        """Replay the forward sweep; returns the function's output (and aux)."""
        ws = self._take_workspace()
        try:
            self._bind(args, ws)
            buf = ws.buf
            kernels = self._kernels
            if kernels.forward is None:
                kernels.called(self, "forward", buf)
            run = kernels.forward
            if run is not None:
                if not run(self.ins, self.aux, buf, kernels.fns):
                    return None
            elif not tiers.run_forward(self.ins, self.code, self.aux, buf, True):
                return None
            out = self._outputs_of(buf)
            return (out, self._aux_of(buf)) if self.has_aux else out
        finally:
            self._return_workspace(ws)

    def __call__(self, *args):
        result = self.forward(*args)
        if result is None:
            raise self._branch_error()
        return result

    def _value_and_grad_io(self, args):
        """``(value, grad)`` of ``args``, float64 arrays of the recorded shapes, through the kernel that copies
        them in and the gradient out; False when a guard fails; None without that kernel or for a layout it
        was not compiled for (non-contiguous): the general path answers."""
        kernels = self._kernels
        io = kernels.value_and_grad_io
        if io is None:
            return None
        ws = self._take_workspace()
        try:
            buf = ws.buf
            g = np.empty(self._grad_shape)
            if len(args) == 1:  # (a star call costs ~0.1 µs)
                ok = io(buf, args[0], g) if kernels.short_io else io(self.ins, self.aux, buf, kernels.fns, args[0], g)
            else:
                ok = io(buf, *args, g) if kernels.short_io else io(self.ins, self.aux, buf, kernels.fns, *args, g)
            return (buf[self._out_position], g) if ok else False
        except TypeError:
            return None
        finally:
            self._return_workspace(ws)

    def _value_and_grad(self, args):
        """(value, grads, aux) or None when a guard fails."""
        if self._kernels.value_and_grad_io is not None and float64_arrays(args, self._io_shapes):
            done = self._value_and_grad_io(args)
            if done is not None:
                return (*done, None) if done else None
        if not self._grad_ok:
            self._raise_non_scalar()
        ws = self._take_workspace()
        try:
            self._bind(args, ws)
            buf = ws.buf
            kernels = self._kernels
            if kernels.value_and_grad is None:
                kernels.called(self, "value_and_grad", buf)
            if kernels.value_and_grad is not None:
                if not tape_kernels.run_value_and_grad(kernels, self.ins, self.aux, buf):
                    return None
            elif not tiers.run_value_and_grad(self.ins, self.code, self.aux, buf, self._out_position, True):
                return None
            if self._single_grad:
                grads = ws.simple_adjoints[self._diff_args[0]].copy()
            else:
                grads = self._grad_structure(self._grads_of(ws))
            return buf[self._out_position], grads, (self._aux_of(buf) if self.has_aux else None)
        finally:
            self._return_workspace(ws)

    def value_and_grad(self, *args):
        """``(value, grad)``, or ``((value, aux), grad)`` for a tape recorded with has_aux."""
        result = self._value_and_grad(args)
        if result is None:
            raise self._branch_error()
        value, grads, aux = result
        return ((value, aux), grads) if self.has_aux else (value, grads)

    def grad(self, *args):
        """The gradient (``(grad, aux)`` for a tape recorded with has_aux)."""
        (value, grads) = self.value_and_grad(*args)
        return (grads, value[1]) if self.has_aux else grads

    def value_and_grad_batch(self, *args, in_axes=None, workers=None):
        """``(values, grads)`` of a batch in one compiled call on every core (``fasttape.batching``): by default
        the differentiated arguments carry the members on axis 0 and the others are shared (``in_axes``, as
        ``ft.vmap``'s, says otherwise); ``workers`` the threads (-1 all)."""
        from . import batching

        return batching.tape_value_and_grad_batch(self, args, in_axes, workers)

    def forward_batch(self, *args, in_axes=None, workers=None):
        """The outputs of a batch (as :meth:`value_and_grad_batch`), stacked on axis 0."""
        from . import batching

        return batching.tape_forward_batch(self, args, in_axes, workers)

    def vjp(self, *args):
        """``(out, vjp_fn)`` (plus aux); ``vjp_fn(cotangent)`` returns one entry per differentiated argument."""
        ws = self._take_workspace()  # kept by vjp_fn, and back to the spares when vjp_fn is gone
        self._bind(args, ws)
        if not tiers.run_forward(self.ins, self.code, self.aux, ws.buf, True):
            self._return_workspace(ws)
            raise self._branch_error()
        out = self._outputs_of(ws.buf)
        vjp_fn = _VJPFunction(self, ws)
        weakref.finalize(vjp_fn, self._return_workspace, ws)  # (a big tape's VJPs reuse one buffer)
        return (out, vjp_fn, self._aux_of(ws.buf)) if self.has_aux else (out, vjp_fn)

    # -- forward mode and second order (fasttape.derivatives) ----------------
    def jvp(self, primals, tangents):
        """``(out, J v)``; ``tangents`` is structured like the differentiated arguments
        (a trailing axis of k directions gives k JVPs from one sweep)."""
        from . import derivatives

        return derivatives.jvp(self, tuple(primals), tangents)

    def hvp(self, *args_and_v):
        """``tape.hvp(*args, v)``: ``H v`` for v structured like the differentiated
        arguments, optionally with a trailing axis of k directions (one sweep)."""
        from . import derivatives

        *args, v = args_and_v
        return derivatives.hvp(self, tuple(args), v)

    def value_grad_and_hvp(self, *args_and_v):
        """``tape.value_grad_and_hvp(*args, v)``: ``(f, ∇f, H v)`` from one forward, one tangent and one
        second-order sweep (the gradient is the first-order adjoint that sweep computes anyway)."""
        from . import derivatives

        *args, v = args_and_v
        return derivatives.value_grad_and_hvp(self, tuple(args), v)

    def hvp_at(self, *args):
        """``v ↦ H v`` at these arguments, reusing one forward sweep for every call."""
        from . import derivatives

        return derivatives.HVPOperator(self, args)

    def jacobian(self, *args, mode="auto"):
        """Dense Jacobian (mode ``"fwd"``, ``"rev"`` or ``"auto"``: fewer sweeps wins)."""
        from . import derivatives

        return derivatives.jacobian(self, args, mode)

    def hessian(self, *args):
        """Dense Hessian, from HVPs along blocks of unit vectors."""
        from . import derivatives

        return derivatives.hessian(self, args)

    def _raise_non_scalar(self):
        if self._scalar_out:  # a boolean or integer scalar, as JAX refuses too
            what = {"b": "a boolean (a comparison or logical value)", "i": "an integer"}.get(self._out_kind, "?")
            raise TypeError(
                f"grad requires a real-valued (float) output, but {self.name!r} returned {what}, which has no "
                "derivative. Return a float expression instead (for example np.where(cond, 1.0, 0.0), or the "
                "quantity the comparison was made on)."
            )
        shapes = [e[1] for e in self._outputs]
        described = shapes[0] if len(shapes) == 1 else f"a container of {len(shapes)} arrays"
        raise NonScalarOutputError(
            f"grad requires a function with a scalar output (shape ()), but {self.name!r} returned "
            f"{'shape ' if len(shapes) == 1 else ''}{described}. For vector-valued functions use ft.vjp "
            "(vector-Jacobian products); to differentiate a sum or mean, reduce inside the function."
        )

    # -- saving -------------------------------------------------------------
    def save(self, file):
        """Write the tape to ``file`` (a path or a binary file object) in fasttape's ``.npz``
        format; read it back with :func:`fasttape.load_tape`.  See :mod:`fasttape.storage`."""
        from . import storage

        storage.save_tape(self, file)

    def __reduce__(self):
        # pickled as the same validated array format as save(): no code, no pickled objects inside
        from . import storage

        return storage.tape_from_bytes, (storage.tape_to_bytes(self),)

    # -- inspection --------------------------------------------------------
    def stats(self) -> dict:
        """Instruction counts by kind and primitive, slot counts and buffer bytes."""
        by_kind = collections.Counter()
        by_primitive = collections.Counter()
        for op in self.ins[:, K.C_OP]:
            prim = K.PRIMITIVE_BY_OPCODE[int(op)]
            by_kind[prim.kind] += 1
            by_primitive[prim.name] += 1
        origins = collections.Counter(s.origin[0] for s in self._slots)
        values_bytes = self._template.nbytes
        return {
            "instructions": int(self.ins.shape[0]),
            "by_kind": dict(by_kind),
            "by_primitive": dict(by_primitive),
            "active_instructions": int(np.count_nonzero(self.ins[:, K.C_FLAGS] & K.F_ACTIVE)),
            "slots": len(self._slots),
            "inputs": origins["input"],
            "constants": origins["const"],
            "views": origins["view"],
            "guards": len(self._guards),
            "values": self.n_values,
            "bytes": {
                "values_and_adjoints": values_bytes,
                "instructions": self.ins.nbytes + self.code.nbytes,
                "aux_and_indices": self.aux.nbytes,
                "total": values_bytes + self.ins.nbytes + self.code.nbytes + self.aux.nbytes,
            },
            "memory": "O(tape): the reverse sweep keeps every forward value; each concurrent call holds one buffer",
        }

    def index_error(self, error: IndexError) -> IndexError:
        """An IndexError from a sweep (which names the instruction) with the argument its index comes from:
        ``index 7 is out of bounds for axis 0 with size 5 (indexing with arg2, instruction 12)``."""
        found = re.search(r" \(instruction (\d+)\)$", str(error))
        if found is None or int(found.group(1)) >= len(self._row_operands):
            return error
        row = int(found.group(1))
        sid = self._row_operands[row][1]  # take's and scatter's indices: operand B
        while self._slots[sid].origin[0] == "view":
            sid = self._slots[sid].origin[1]
        origin = self._slots[sid].origin
        if origin[0] == "input":
            source = f"the argument {origin[1]}"
        elif origin[0] == "op":
            producer = K.PRIMITIVE_BY_OPCODE[int(self.ins[origin[1], K.C_OP])].name
            source = f"indices computed from the inputs (by {producer}, instruction {origin[1]})"
        else:
            source = "constant indices"
        message = str(error)[: found.start()]
        return IndexError(f"{message} in {self.name!r}: the indices come from {source} (instruction {row})")

    def listing(self) -> str:
        """A readable listing, one line per slot: ``%7 = multiply %3 %5   f64[40]``."""
        lines = [f"tape of {self.name!r}: {self.ins.shape[0]} instructions, {self.n_values} values"]
        for sid, s in enumerate(self._slots):
            typ = f"{TYPE_NAMES[s.kind]}[{','.join(map(str, s.shape))}]"
            origin = s.origin
            if origin[0] == "input":
                text = f"input {origin[1]}"
            elif origin[0] == "const":
                flat = origin[1]
                number = int(flat[0]) if s.kind == "i" else float(flat[0])
                text = f"const {number!r}" if flat.size == 1 else f"const <{flat.size} values>"
            elif origin[0] == "view":
                parent = self._slots[origin[1]]
                text = f"view %{origin[1]} +{s.offset - parent.offset}"
            else:
                row = self.ins[origin[1]]
                prim = K.PRIMITIVE_BY_OPCODE[int(row[K.C_OP])]
                operands = " ".join(f"%{o}" for o in self._row_operands[origin[1]])
                text = f"{prim.name}{families.describe(prim.opcode, row.tolist())} {operands}"
            lines.append(f"%{sid} = {text:<32} {typ}")
        for offset, outcome in self._guards:
            lines.append(f"guard value@{offset} is {outcome}")
        outs = ", ".join(_describe_output(self._slots, e) for e in self._outputs)
        lines.append(f"return {outs}")
        return "\n".join(lines)

    def __str__(self):
        return self.listing()

    def __repr__(self):
        return f"<fasttape.Tape of {self.name!r}: {self.ins.shape[0]} instructions, {self.n_values} values>"


def tape_bytes(n_values: int, n_instructions: int, n_aux: int) -> int:
    """Bytes of a tape's buffers: values and adjoints, instruction table and scalar code, aux array."""
    return 16 * n_values + (8 * K.ROW + 16) * n_instructions + 8 * n_aux


def _describe_output(slots, entry):
    offset, shape = entry
    for sid in range(len(slots) - 1, -1, -1):
        if slots[sid].offset == offset and slots[sid].shape == shape:
            return f"%{sid}"
    return f"value@{offset}"


class _Workspace:
    """One value+adjoint buffer, with views of it for every input leaf."""

    __slots__ = ("buf", "inputs", "adjoints", "simple_inputs", "simple_adjoints", "_directions")

    def __init__(self, template, args: list[ArgSpec], n_values):
        self.buf = buf = template.copy()
        self.inputs = []
        self.adjoints = []
        for spec in args:
            ins, adjs = [], []
            for leaf in spec.leaves:
                if leaf.kind == "static":
                    ins.append(None)
                    continue
                end = leaf.offset + leaf.size
                ins.append(buf[leaf.offset : end].reshape(leaf.shape))
                adjs.append(buf[n_values + leaf.offset : n_values + end].reshape(leaf.shape))
            self.inputs.append(ins)
            self.adjoints.append(adjs)
        self.simple_inputs = [ins[0] for ins in self.inputs if len(ins) == 1]
        self.simple_adjoints = [adjs[0] for adjs in self.adjoints if len(adjs) == 1]
        self._directions: dict = {}

    def direction_buffers(self, k, n_values):
        """(tangents, second-order adjoints) for k directions: see :meth:`tangents`."""
        return self.tangents(k, n_values), self.second_adjoints(k, n_values)

    def tangents(self, k, n_values):
        """A k-direction tangent buffer, kept for the next call with k directions when it is not huge.

        Reuse is safe: a tangent sweep rewrites every active position and leaves the others at zero."""
        return self._kept(0, k, n_values)

    def plane(self, n_values):
        """A plane of tangents in which a tape's own JVP kernel runs one direction after another, and a
        plane of zeros that it reads for the tangents of what a direction does not reach (kept like
        :meth:`tangents`; nothing writes the second half)."""
        return self._kept(2, 2, n_values)

    def results(self, k, n_read):
        """Where a tape's own JVP kernel writes the tangents the caller reads, k rows of ``n_read`` (kept
        like :meth:`tangents`; every call rewrites all of it)."""
        return self._kept(3, k, n_read)

    def second_adjoints(self, k, n_values):
        """A k-direction adjoint buffer (kept like :meth:`tangents`): the HVP sweep zeroes what it
        accumulates into; the k-seed reverse needs it zeroed by the caller (:meth:`zeroed_adjoints`)."""
        return self._kept(1, k, n_values)

    def zeroed_adjoints(self, k, n_values):
        key = (1, k)
        if key not in self._directions:
            return self._kept(1, k, n_values)  # fresh: zero
        adj2 = self._directions[key]
        adj2.fill(0.0)  # (rewriting warm pages costs less than faulting in fresh ones)
        return adj2

    def _kept(self, which, k, n_values):
        buffer = self._directions.get((which, k))
        if buffer is None:
            buffer = np.zeros(k * n_values)
            if 8 * k * n_values <= _KEEP_DIRECTION_BYTES:
                buffer.fill(0.0)  # its pages now, not in the first sweep (which a Jacobian may be timing)
                self._directions[(which, k)] = buffer
        return buffer


class _VJPFunction:
    """Pulls cotangents back through a forward sweep that has already run."""

    def __init__(self, tape: Tape, ws: _Workspace):
        self._tape = tape
        self._ws = ws
        self._lock = threading.Lock()

    def __call__(self, cotangent):
        tape = self._tape
        leaves, treedef = _flatten(cotangent)
        if treedef != tape._out_tree:
            raise InputSignatureError(
                f"the cotangent has structure {treedef}, but the function's output has structure {tape._out_tree}."
            )
        with self._lock:
            return self._pull_back(leaves)

    def _pull_back(self, leaves):
        tape = self._tape
        buf = self._ws.buf
        N = tape.n_values
        buf[N:] = 0.0
        for ct, entry in zip(leaves, tape._outputs):
            ct = np.asarray(ct)
            if ct.dtype.kind not in "fiu":
                raise leaf_type_error(ct, "the cotangent")
            offset, shape = entry
            if ct.shape != shape:
                raise InputSignatureError(
                    f"the cotangent has shape {ct.shape}, but the output it pairs with has shape {shape}."
                )
            buf[N + offset : N + offset + ct.size] += ct.reshape(-1)
        tiers.run_reverse(tape.ins, tape.code, tape.aux, buf)
        return tuple(tape._grads_of(self._ws))
