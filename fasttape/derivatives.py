"""Forward mode, Jacobians and second order on a recorded :class:`~fasttape.tape.Tape`.

Everything here drives the k-direction sweeps of :mod:`fasttape.sweeps`:

* JVP: a tangent sweep after the forward sweep (``run_jvp``);
* HVP: forward-over-reverse, ``H(x) v`` without forming ``H`` (``run_hvp``),
  for k directions in one sweep;
* Jacobians: k tangent seeds (forward) or k adjoint seeds (reverse) per sweep,
  whichever needs fewer sweeps;
* Hessians: HVPs along blocks of unit vectors.

Directions are stored direction-major: direction ``d`` of buffer position ``p``
is at ``[d * n_values + p]``.
"""

from __future__ import annotations

import math
import time

import numpy as np
import optree

from . import tape_kernels, tiers
from .errors import BranchChangedError, InputSignatureError, NonScalarOutputError
from .tape import _F64, Tape, _Workspace, float64_arrays, leaf_type_error

MAX_BLOCK = 64  # directions per sweep for Jacobians and Hessians
BLOCK_BYTES = 256 * 2**20  # ... and at most this much tangent + adjoint memory


def block_size(tape: Tape, n: int) -> int:
    """Directions per sweep: as many as fit, so that n columns take ⌈n/k⌉ sweeps."""
    per_direction = 2 * 8 * max(tape.n_values, 1)
    return max(1, min(n, MAX_BLOCK, BLOCK_BYTES // per_direction))


def _diff_leaves(tape: Tape):
    """(argument index, leaf) for every differentiated input leaf, in argnums order."""
    return [(i, leaf) for i in tape._diff_args for leaf in tape._args[i].leaves]


def _bound_workspace(tape: Tape, args) -> _Workspace:
    """A workspace of its own (kept by the caller) with ``args`` bound."""
    ws = tape._new_workspace()
    tape._bind(args, ws)
    return ws


def _out_leaves(tape: Tape):
    return [(offset, shape, math.prod(shape)) for offset, shape in tape._outputs]


# --------------------------------------------------------------------------
# directions in, directions out
# --------------------------------------------------------------------------
def _split_directions(tape: Tape, v, what="v"):
    """Flatten ``v`` (structured like the differentiated arguments, optionally with
    a trailing axis of k directions) into one (k, n_in) array."""
    if tape._single_grad and type(v) is np.ndarray:  # one plain array argument
        leaf = tape._args[tape._diff_args[0]].leaves[0]
        if v.shape == leaf.shape and v.dtype.kind == "f":
            return v.reshape(1, leaf.size), False
        if v.shape[:-1] == leaf.shape and v.ndim and v.shape[-1] and v.dtype.kind == "f":
            return v.reshape(leaf.size, v.shape[-1]).T, True
    parts = v if isinstance(tape.argnums, tuple) else (v,)
    if isinstance(tape.argnums, tuple) and not (isinstance(v, (tuple, list)) and len(v) == len(tape.argnums)):
        raise InputSignatureError(
            f"{what} must be a tuple with one entry per differentiated argument ({len(tape.argnums)}), "
            f"got {type(v).__name__}."
        )
    columns = []
    k = None
    for i, part in zip(tape._diff_args, parts):
        spec = tape._args[i]
        leaves, treedef = optree.tree_flatten(part, none_is_leaf=True)
        if treedef != spec.treedef:
            raise InputSignatureError(
                f"{what} for argument {i} has structure {treedef}, but the argument has structure {spec.treedef}."
            )
        for value, leaf in zip(leaves, spec.leaves):
            arr = np.asarray(value)
            if arr.dtype.kind not in "fiu":
                raise leaf_type_error(value, f"{what} for {leaf.name}")
            if arr.shape == leaf.shape:
                kk = 0
            elif arr.shape[:-1] == leaf.shape:
                kk = arr.shape[-1]
            else:
                raise InputSignatureError(
                    f"{what} for {leaf.name} has shape {arr.shape}; expected {leaf.shape} (one direction) or "
                    f"{leaf.shape + ('k',)} (k directions)."
                )
            if k is None:
                k = kk
            elif k != kk:
                raise InputSignatureError(f"all parts of {what} must carry the same number of directions.")
            columns.append(arr.reshape(leaf.size, max(kk, 1)).astype(np.float64))
    matrix = np.concatenate(columns, axis=0).T if columns else np.zeros((1, 0))
    return matrix, k != 0


def _by_argument(tape: Tape, piece):
    """Walk the differentiated leaves in column order; ``piece(col, leaf)`` gives each
    leaf's result.  Returns them in the arguments' structure (a tuple for tuple argnums)."""
    blocks = []
    col = 0
    for i in tape._diff_args:
        spec = tape._args[i]
        leaves = []
        for leaf in spec.leaves:
            arr = piece(col, leaf)
            leaves.append(np.float64(arr) if isinstance(arr, np.ndarray) and arr.ndim == 0 else arr)
            col += leaf.size
        blocks.append(spec.treedef.unflatten(leaves))
    return tape._grad_structure(blocks)


def _join_directions(tape: Tape, matrix, multi):
    """Inverse of :func:`_split_directions`: (k, n_in) back to the arguments' structure."""
    k = matrix.shape[0]

    def piece(col, leaf):
        block = matrix[:, col : col + leaf.size]
        return block.T.reshape(leaf.shape + (k,)) if multi else block[0].reshape(leaf.shape)

    return _by_argument(tape, piece)


def _seed(tape: Tape, target, matrix):
    """Write the (k, n_in) directions into the input positions of a k-direction buffer."""
    N = tape.n_values
    view = target.reshape(-1, N)
    col = 0
    for _, leaf in _diff_leaves(tape):
        view[:, leaf.offset : leaf.offset + leaf.size] = matrix[:, col : col + leaf.size]
        col += leaf.size


def _read_inputs(tape: Tape, source, k):
    N = tape.n_values
    view = source.reshape(-1, N)[:k]
    leaves = _diff_leaves(tape)
    if len(leaves) == 1:
        leaf = leaves[0][1]
        return view[:, leaf.offset : leaf.offset + leaf.size].copy()
    return np.concatenate([view[:, leaf.offset : leaf.offset + leaf.size] for _, leaf in _diff_leaves(tape)], axis=1)


def _read_outputs(tape: Tape, source, k):
    N = tape.n_values
    view = source.reshape(-1, N)[:k]
    return np.concatenate([view[:, off : off + size] for off, _, size in _out_leaves(tape)], axis=1)


def _n_inputs(tape: Tape) -> int:
    return sum(leaf.size for _, leaf in _diff_leaves(tape))


def _n_outputs(tape: Tape) -> int:
    return sum(size for _, _, size in _out_leaves(tape))


def _require_scalar(tape: Tape, what):
    if not tape._scalar_out:
        shapes = [shape for _, shape in tape._outputs]
        raise NonScalarOutputError(
            f"{what} needs a function with a scalar output (shape ()), but {tape.name!r} returned "
            f"{shapes[0] if len(shapes) == 1 else f'{len(shapes)} arrays'}. Use ft.jacobian for vector-valued "
            "functions, or reduce the output inside the function."
        )


# --------------------------------------------------------------------------
# JVP
# --------------------------------------------------------------------------
def jvp(tape: Tape, args, tangents):
    """``(f(args), J v)`` with ``tangents`` structured like the differentiated arguments."""
    matrix, multi = _split_directions(tape, tangents, "tangents")
    k = matrix.shape[0]
    N = tape.n_values
    ws = tape._take_workspace()
    try:
        tape._bind(args, ws)
        tan = ws.tangents(k, N)
        _seed(tape, tan, matrix)
        tangents_out = _run_jvp(tape, ws, tan, k)
        if tangents_out is None:
            raise tape._branch_error()
        out = tape._outputs_of(ws.buf)
        leaves, q = [], 0
        for _, shape, size in _out_leaves(tape):
            block = tangents_out[:, q : q + size]
            q += size
            arr = block.T.reshape(shape + (k,)).copy() if multi else block[0].reshape(shape).copy()
            leaves.append(arr if arr.ndim else np.float64(arr))
        aux = tape._aux_of(ws.buf) if tape.has_aux else None
    finally:
        tape._return_workspace(ws)
    tangent_out = tape._out_tree.unflatten(leaves)
    if tape.has_aux:
        return out, tangent_out, aux
    return out, tangent_out


def _run_jvp(tape: Tape, ws: _Workspace, tan, k):
    """The forward and k tangent sweeps from the seeds in ``tan``: the tape's own kernel once it is built
    (``fasttape.tape_kernels``: the directions one after another in one plane of tangents), else the
    interpreter's.  The outputs' tangents, (k, n_out) (views of a workspace buffer), or None when a guard
    fails."""
    kernels = tape._kernels
    run = kernels.entry(tape, "jvp")
    if run is not None:
        read = kernels.results_size
        results = ws.results(k, read)
        if not run(tape.ins, tape.aux, ws.buf, tan, k, ws.plane(tape.n_values), results, kernels.fns):
            return None
        return results.reshape(k, read)[:, : _n_outputs(tape)]
    if not tiers.run_jvp(tape.ins, tape.code, tape.aux, ws.buf, tan, k):
        return None
    return _read_outputs(tape, tan, k)


# --------------------------------------------------------------------------
# HVP
# --------------------------------------------------------------------------
def _hvp_matrix(tape: Tape, ws: _Workspace, matrix, with_values, gradient=False):
    k = matrix.shape[0]
    N = tape.n_values
    tan, adj2 = ws.direction_buffers(k, N)
    _seed(tape, tan, matrix)
    if not _run_hvp(tape, ws.buf, tan, adj2, k, with_values, gradient):
        raise tape._branch_error()
    return _read_inputs(tape, adj2, k)


def _run_hvp(tape: Tape, buf, tan, adj2, k, with_values=True, gradient=False) -> bool:
    """The HVP sweep: the tape's own kernel for one direction at a new point once it is built
    (``fasttape.tape_kernels``), else the interpreter's; False when a guard fails.  ``gradient``: the
    value and the gradient left in ``buf`` too (the interpreter's sweep computes them on its way; the
    kernel computes H v alone, and the tape's value_and_grad kernel follows)."""
    if k == 1 and with_values:
        kernels = tape._kernels
        if kernels.entry(tape, "hvp") is not None:
            ok = tape_kernels.run_hvp(kernels, tape.ins, tape.aux, buf, tan, adj2)
            return ok and (not gradient or tape_kernels.run_value_and_grad(kernels, tape.ins, tape.aux, buf))
    return tiers.run_hvp(tape.ins, tape.code, tape.aux, buf, tan, adj2, k, tape._out_position, with_values)


def hvp(tape: Tape, args, v):
    """``H(x) v`` for v structured like the differentiated arguments (plus an optional
    trailing axis of k directions, all done in one sweep)."""
    _require_scalar(tape, "hvp")
    if tape._single_grad and type(v) is np.ndarray and v.dtype is _F64:
        result = _hvp_one_array(tape, args, v)
        if result is not None:
            return result
    matrix, multi = _split_directions(tape, v)
    ws = tape._take_workspace()
    try:
        tape._bind(args, ws)
        return _join_directions(tape, _hvp_matrix(tape, ws, matrix, True), multi)
    finally:
        tape._return_workspace(ws)


def value_grad_and_hvp(tape: Tape, args, v):
    """``(f(x), ∇f(x), H(x) v)``: the interpreter's HVP sweep computes the first-order adjoints on its
    way, so the gradient costs nothing more than the HVP; a tape's own HVP kernel computes H v alone (its
    caller reads nothing else), and its value_and_grad kernel follows on the same inputs."""
    _require_scalar(tape, "value_grad_and_hvp")
    matrix, multi = _split_directions(tape, v)
    ws = tape._take_workspace()
    try:
        tape._bind(args, ws)
        hv = _join_directions(tape, _hvp_matrix(tape, ws, matrix, True, gradient=True), multi)
        return ws.buf[tape._out_position], tape._grad_structure(tape._grads_of(ws)), hv
    finally:
        tape._return_workspace(ws)


def _hvp_one_array(tape: Tape, args, v):
    """The common case without containers: one array argument, v of its shape (+ k)."""
    leaf = tape._args[tape._diff_args[0]].leaves[0]
    if v.shape == leaf.shape:
        k, multi = 1, False
    elif v.ndim == len(leaf.shape) + 1 and v.shape[:-1] == leaf.shape and v.shape[-1]:
        k, multi = v.shape[-1], True
    else:
        return None
    N = tape.n_values
    off, size = leaf.offset, leaf.size
    ws = tape._take_workspace()
    try:
        io = tape._kernels.hvp_io
        # the kernel takes the arguments (copied in or read in place), v, and writes H v
        if io is not None and not multi and v.dtype is _F64 and float64_arrays(args, tape._io_shapes):
            hv = np.empty(leaf.shape)
            tan, adj2 = ws.direction_buffers(1, N)
            try:
                if not io(tape.ins, tape.aux, ws.buf, tan, adj2, tape._kernels.fns, *args, v, hv):
                    raise tape._branch_error()
                return hv
            except TypeError:  # a layout it was not compiled for: the general path
                pass
        tape._bind(args, ws)
        tan, adj2 = ws.direction_buffers(k, N)
        if k == 1:
            tan[off : off + size] = v.reshape(-1)
        else:
            tan.reshape(k, N)[:, off : off + size] = v.reshape(size, k).T
        if not _run_hvp(tape, ws.buf, tan, adj2, k):
            raise tape._branch_error()
        if not multi:  # copies: the buffers are reused by the next call
            return adj2[off : off + size].reshape(leaf.shape).copy() if leaf.shape else np.float64(adj2[off])
        return np.array(adj2.reshape(k, N)[:, off : off + size].T).reshape(leaf.shape + (k,))
    finally:
        tape._return_workspace(ws)


class HVPOperator:
    """``v ↦ H(x) v`` at one fixed point, reusing its forward values for every call.

    Built by :meth:`Tape.hvp_at`; ``.value`` and ``.grad`` hold f and ∇f at the
    point.  Made for the inner loops of Newton-CG and trust-region methods.
    """

    def __init__(self, tape: Tape, args):
        _require_scalar(tape, "hvp")
        self._tape = tape
        self._ws = _bound_workspace(tape, args)
        if not tiers.run_value_and_grad(tape.ins, tape.code, tape.aux, self._ws.buf, tape._out_position, False):
            raise tape._branch_error()
        self.value = self._ws.buf[tape._out_position]
        self.grad = tape._grad_structure(tape._grads_of(self._ws))

    def __call__(self, v):
        matrix, multi = _split_directions(self._tape, v)
        return _join_directions(self._tape, _hvp_matrix(self._tape, self._ws, matrix, False), multi)


# --------------------------------------------------------------------------
# Jacobians and Hessians
# --------------------------------------------------------------------------
CLEAR_CHOICE = 8  # one mode needing this many times the other's directions: no need to measure


def jacobian_matrix(tape: Tape, args, mode="auto"):
    """The dense (n_out, n_in) Jacobian, by forward or reverse sweeps in blocks of directions.

    ``auto`` takes the mode that needs fewer directions when one needs ``CLEAR_CHOICE`` times fewer;
    otherwise it times one block of each on the first call (both count: their columns and rows are
    the Jacobian's) and keeps the cheaper mode with the tape for the calls after (see :func:`_blocks`)."""
    ws = tape._take_workspace()  # (with the direction buffers of earlier calls)
    try:
        tape._bind(args, ws)
        return _jacobian_blocks(tape, ws, mode)
    finally:
        tape._return_workspace(ws)


def _jacobian_blocks(tape: Tape, ws: _Workspace, mode):
    n_in, n_out = _n_inputs(tape), _n_outputs(tape)
    J = np.zeros((n_out, n_in))
    k_fwd, k_rev = block_size(tape, n_in), block_size(tape, n_out)
    done = 0  # columns (forward) or rows (reverse) already in J
    if mode == "auto":
        mode = _known_cheaper(tape, n_in, n_out)
    if mode == "auto":  # measure a block of each, then finish the cheaper
        t0 = time.perf_counter()
        _forward_block(tape, ws, J, 0, min(k_fwd, n_in))
        t1 = time.perf_counter()
        columns = J[:, : min(k_fwd, n_in)].copy()  # (the reverse block's rows overwrite their part)
        _reverse_block(tape, ws, J, 0, min(k_rev, n_out), forward=True)
        t2 = time.perf_counter()
        costs = ((t1 - t0) / min(k_fwd, n_in), (t2 - t1) / min(k_rev, n_out))
        mode = "fwd" if n_in * costs[0] <= n_out * costs[1] else "rev"
        tape._jacobian_mode = mode  # kept, even when kernels were still loading: the same bits call after call
        if mode == "fwd":
            J[:, : columns.shape[1]] = columns  # every entry by the chosen mode, as in the calls after
        done = min(k_fwd, n_in) if mode == "fwd" else min(k_rev, n_out)  # (the later blocks overwrite the rest)
    if mode == "fwd":
        _blocks(tape, ws, J, "fwd", done, n_in, k_fwd)
        return J
    if done == 0 and not tiers.run_forward(tape.ins, tape.code, tape.aux, ws.buf, False):
        raise tape._branch_error()
    _blocks(tape, ws, J, "rev", done, n_out, k_rev)
    return J


def _blocks(tape: Tape, ws: _Workspace, J, mode, start, n, k):
    """Directions ``start`` .. n in blocks of k, as many as the memory bound allows: the block size never
    changes between calls, nor does the mode, so that a tape's Jacobian is the same to the last bit call
    after call (another grouping of the matrix products' directions would round differently)."""
    for begin in range(start, n, k):
        size = min(k, n - begin)
        if mode == "fwd":
            _forward_block(tape, ws, J, begin, size)
        else:
            _reverse_block(tape, ws, J, begin, size, forward=False)


def _known_cheaper(tape: Tape, n_in: int, n_out: int) -> str:
    """'fwd' or 'rev' when the directions alone decide, or the tape holds the mode it measured; else 'auto'."""
    if n_in * CLEAR_CHOICE <= n_out:
        return "fwd"
    if n_out * CLEAR_CHOICE <= n_in:
        return "rev"
    return getattr(tape, "_jacobian_mode", "auto")


def _forward_block(tape: Tape, ws: _Workspace, J, start: int, kb: int):
    """Columns start .. start + kb of J: one tangent sweep of kb unit seeds."""
    n_in, N = J.shape[1], tape.n_values
    seeds = np.zeros((kb, n_in))
    seeds[np.arange(kb), start + np.arange(kb)] = 1.0
    tan = ws.tangents(kb, N)
    _seed(tape, tan, seeds)
    tangents_out = _run_jvp(tape, ws, tan, kb)
    if tangents_out is None:
        raise tape._branch_error()
    J[:, start : start + kb] = tangents_out.T


def _reverse_block(tape: Tape, ws: _Workspace, J, start: int, kb: int, forward: bool):
    """Rows start .. start + kb of J: one reverse sweep of kb unit seeds (after a forward sweep that
    keeps every value, run here when ``forward``)."""
    if forward and not tiers.run_forward(tape.ins, tape.code, tape.aux, ws.buf, False):
        raise tape._branch_error()
    N = tape.n_values
    positions = np.concatenate([off + np.arange(size) for off, _, size in _out_leaves(tape)])
    adj2 = ws.zeroed_adjoints(kb, N)
    view = adj2.reshape(kb, N)
    for d in range(kb):
        view[d, positions[start + d]] += 1.0
    tiers.run_vector_reverse(tape.ins, tape.code, tape.aux, ws.buf, adj2, kb)
    J[start : start + kb, :] = _read_inputs(tape, adj2, kb)


def _arg_blocks(tape: Tape, row_leaf_shape, row_slice, matrix, batch=()):
    """Per differentiated argument, the columns of ``matrix`` shaped like that argument's
    leaves (prefixed by ``row_leaf_shape``) in its own container structure (``batch``: the
    shape of leading axes of matrices, one matrix per member of a batch)."""
    return _by_argument(
        tape,
        lambda col, leaf: matrix[..., row_slice, col : col + leaf.size].reshape(batch + row_leaf_shape + leaf.shape),
    )


def jacobian(tape: Tape, args, mode="auto"):
    """The Jacobian in JAX's layout: for every output leaf, the structure of the
    differentiated arguments with leaves of shape ``out.shape + in.shape``."""
    result = jacobian_structure(tape, jacobian_matrix(tape, args, mode))
    if tape.has_aux:
        ws = _bound_workspace(tape, args)
        tiers.run_forward(tape.ins, tape.code, tape.aux, ws.buf, True)
        return result, tape._aux_of(ws.buf)
    return result


def hessian_matrix(tape: Tape, args):
    """The dense (n_in, n_in) Hessian from HVPs along blocks of unit vectors."""
    _require_scalar(tape, "hessian")
    n = _n_inputs(tape)
    H = np.zeros((n, n))
    k = block_size(tape, n)
    ws = tape._take_workspace()
    try:
        tape._bind(args, ws)
        for start in range(0, n, k):
            kb = min(k, n - start)
            seeds = np.zeros((kb, n))
            seeds[np.arange(kb), start + np.arange(kb)] = 1.0
            H[:, start : start + kb] = _hvp_matrix(tape, ws, seeds, start == 0).T
    finally:
        tape._return_workspace(ws)
    return H


def hessian(tape: Tape, args):
    """The Hessian in JAX's layout: nested blocks, one per pair of differentiated
    arguments (and their container leaves), each of shape ``a.shape + b.shape``."""
    return hessian_structure(tape, hessian_matrix(tape, args))


def jacobian_structure(tape: Tape, J, batch=()):
    """The dense Jacobian ``J`` (``batch`` + (n_out, n_in)) in JAX's layout (see :func:`jacobian`)."""
    leaves = []
    row = 0
    for _, shape, size in _out_leaves(tape):
        leaves.append(_arg_blocks(tape, shape, slice(row, row + size), J, batch))
        row += size
    return tape._out_tree.unflatten(leaves)


def hessian_structure(tape: Tape, H, batch=()):
    """The dense Hessian ``H`` (``batch`` + (n_in, n_in)) in JAX's layout (see :func:`hessian`)."""
    return _by_argument(tape, lambda row, leaf: _arg_blocks(tape, leaf.shape, slice(row, row + leaf.size), H, batch))


def returns_none_on_branch_change(fn):
    """Adapt a tape-level function into a cache runner (None: try another tape)."""

    def runner(tape, args):
        try:
            return fn(tape, args)
        except BranchChangedError:
            return None

    return runner
