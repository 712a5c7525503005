"""Saving and loading tapes: ``tape.save(path)`` and ``ft.load_tape(path)``.

The file format (version 2; version 1 files load too) is a NumPy ``.npz`` archive: a zip file whose
members are ``.npy`` arrays, written with ``allow_pickle=False`` and read back
the same way -- a tape file holds numbers and JSON text, never pickled objects
or code.  The members:

``meta``        uint8: UTF-8 JSON -- format name and version, the primitive
                table by opcode, the layout constants (``ROW``, ``HEADER``),
                the function's name, ``argnums``, ``has_aux``, ``n_values``,
                the argument specs (container structure as JSON, leaf kinds,
                names, offsets, shapes, static values), the output and aux
                specs, the output slot ids and the input names.
``ins``         int64[n_instructions, ROW]: the instruction table.
``aux``         int64: header, gather index pool, guard table, zero runs.
``values``      float64[n_values]: the constant values at their offsets (zeros elsewhere).
``slots``       int64[n_slots, 7]: offset, size, ndim, active, dtype (0 float64, 1 bool, 2 int64),
                origin kind (0 input, 1 const, 2 view, 3 instruction), origin reference.
``slot_shapes`` int64: the slots' shapes, concatenated.
``operand_ptr``, ``operands`` int64: each instruction's operand slot ids (CSR).
``sha256``      uint8[32]: SHA-256 over every other member (name, dtype, shape, bytes).

Loading checks, before any compiled sweep sees the arrays: the zip and ``.npy``
headers (member names, dtypes, shapes, declared sizes against the memory
budget), the checksum, the format version, the primitive table and layout,
then every field the sweeps index with -- opcodes, flag bits, every output and
operand run inside the value buffer, size relations per primitive (elementwise
operands of the output's size or scalars, reduction/broadcast/cumsum/matmul
extents multiplying out to the operands' sizes, gather index ranges inside the
index pool and every index inside the buffer), the aux header and its tables
(guard positions and outcomes, zero runs), and the Python-side metadata (input
leaves, outputs, slot table, container structures).  Anything wrong raises
``ValueError`` naming the file and the field.  Container structures are
limited to tuples, lists and dicts (with str or int keys); static arguments to
None, bool, int, str, bytes and integer/boolean NumPy arrays and scalars.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile

import numpy as np
import optree

from . import families
from . import kernels as K
from .config import check_memory
from .errors import TapeFormatError
from .row_log import RowOperands
from .slots import Slot
from .tape import ArgSpec, Leaf, Tape, tape_bytes

FORMAT = "fasttape.tape"
VERSION = 2  # 2: side stores (max/min tie counts) after the values
READABLE = (1, 2)  # version 1 files get their side stores on load
SLOT_COLUMNS = 7
_ORIGINS = ("input", "const", "view", "op")
_KINDS = ("f", "b", "i")  # a slot's dtype column: saved files before integer slots hold 0 or 1
_FLAG_MASK = (
    K.F_ACTIVE | K.F_GRAD_A | K.F_GRAD_B | K.F_GRAD_C | K.F_INIT_A | K.F_INIT_B | K.F_INIT_C | K.F_CONST_ADJOINT
)
_MAX_DEPTH = 64  # nesting of container structures
_MAX_META = 64 * 2**20
_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed zip timestamps: saving is reproducible

# member name -> (dtype, ndim)
_MEMBERS = {
    "meta": (np.dtype(np.uint8), 1),
    "ins": (np.dtype("<i8"), 2),
    "aux": (np.dtype("<i8"), 1),
    "values": (np.dtype("<f8"), 1),
    "slots": (np.dtype("<i8"), 2),
    "slot_shapes": (np.dtype("<i8"), 1),
    "operand_ptr": (np.dtype("<i8"), 1),
    "operands": (np.dtype("<i8"), 1),
}
_CHECKSUM = "sha256"


# ==========================================================================
# saving
# ==========================================================================
class _Mark:
    """Stands for a leaf while a container structure is turned into JSON."""

    __slots__ = ()


_MARK = _Mark()


def _encode_tree(treedef, what):
    """JSON for a container structure: "*" for a leaf, {"tuple"|"list": [...]}, {"dict": [[key, child]...]}."""
    obj = treedef.unflatten([_MARK] * treedef.num_leaves)

    def enc(x, depth):
        if depth > _MAX_DEPTH:
            raise TypeError(f"cannot save {what}: containers nested more than {_MAX_DEPTH} deep.")
        if x is _MARK:
            return "*"
        if type(x) is tuple:
            return {"tuple": [enc(c, depth + 1) for c in x]}
        if type(x) is list:
            return {"list": [enc(c, depth + 1) for c in x]}
        if type(x) is dict:
            items = []
            for k, v in x.items():
                if type(k) is str:
                    key = k
                elif type(k) is int:
                    key = {"int": str(k)}
                else:
                    raise TypeError(f"cannot save {what}: dict key {k!r} is not a str or int.")
                items.append([key, enc(v, depth + 1)])
            return {"dict": items}
        raise TypeError(
            f"cannot save {what}: containers of type {type(x).__name__} cannot be stored in a tape file "
            "(only tuple, list and dict). Pass plain tuples, lists or dicts to ft.trace."
        )

    return enc(obj, 0)


def _encode_static(value, what):
    """JSON for a static leaf value (an argument baked into the tape, or a constant aux value)."""
    if value is None:
        return {"none": None}
    if type(value) is bool:
        return {"bool": value}
    if type(value) is int:
        return {"int": str(value)}
    if type(value) is str:
        return {"str": value}
    if type(value) is bytes:
        return {"bytes": value.hex()}
    if type(value) is float:
        return {"float": value.hex()}
    if isinstance(value, (np.ndarray, np.generic)) and value.dtype.kind in "biu":
        arr = np.asarray(value)
        entry = {"dtype": arr.dtype.str, "shape": list(arr.shape), "data": [int(v) for v in arr.reshape(-1)]}
        return {"ndarray" if isinstance(value, np.ndarray) else "npscalar": entry}
    raise TypeError(
        f"cannot save {what}: a value of type {type(value).__name__} cannot be stored in a tape file (tape files "
        "hold numbers and text, never pickled objects or code). Static arguments must be None, bool, int, str, "
        "bytes or integer/boolean NumPy arrays."
    )


def _meta_of(tape: Tape) -> dict:
    args = []
    for spec in tape._args:
        leaves = []
        for leaf in spec.leaves:
            entry = {"kind": leaf.kind, "name": leaf.name}
            if leaf.kind == "static":
                entry["static"] = _encode_static(leaf.value, f"{leaf.name} (a static argument)")
            else:
                entry.update(offset=leaf.offset, shape=list(leaf.shape))
            leaves.append(entry)
        args.append({"tree": _encode_tree(spec.treedef, "the arguments"), "differentiable": spec.differentiable,
                     "leaves": leaves})  # fmt: skip
    outputs = [{"offset": e[0], "shape": list(e[1])} for e in tape._outputs]
    aux = []
    for e in tape._aux:
        if e[0] == "const":
            aux.append({"const": _encode_static(e[1], "an auxiliary (has_aux) output")})
        else:
            aux.append({"offset": e[0], "shape": list(e[1]), "bool": e[2:] == ("bool",), "int": e[2:] == ("int",)})
    input_names = [s.origin[1] for s in tape._slots if s.origin[0] == "input"]
    argnums = tape.argnums if isinstance(tape.argnums, int) else list(tape.argnums)
    return {
        "format": FORMAT,
        "version": VERSION,
        "primitives": [K.PRIMITIVE_BY_OPCODE[op].name for op in range(K.N_OPCODES)],
        "row": K.ROW,
        "header": K.HEADER,
        "name": str(tape.name),
        "argnums": argnums,
        "has_aux": bool(tape.has_aux),
        "out_kind": tape._out_kind,
        "n_values": int(tape.n_values),
        "args": args,
        "outputs": {"tree": _encode_tree(tape._out_tree, "the outputs"), "entries": outputs},
        "aux": {"tree": _encode_tree(tape._aux_tree, "the auxiliary (has_aux) outputs"), "entries": aux},
        "output_slots": [int(s) for s in tape.output_slots],
        "input_names": input_names,
    }


def _arrays_of(tape: Tape) -> dict:
    slots = tape._slots
    table = np.zeros((len(slots), SLOT_COLUMNS), dtype=np.int64)
    shapes = []
    n_inputs = 0
    for sid, s in enumerate(slots):
        kind = s.origin[0]
        if kind == "input":
            ref = n_inputs
            n_inputs += 1
        elif kind in ("view", "op"):
            ref = s.origin[1]
        else:
            ref = 0
        table[sid] = (s.offset, s.size, len(s.shape), s.active, _KINDS.index(s.kind), _ORIGINS.index(kind), ref)
        shapes.extend(s.shape)
    ptr, operands = tape._row_operands.start, tape._row_operands.slot
    meta = json.dumps(_meta_of(tape), sort_keys=True, separators=(",", ":")).encode("utf-8")
    return {
        "meta": np.frombuffer(meta, dtype=np.uint8),
        "ins": np.ascontiguousarray(tape.ins, dtype="<i8"),
        "aux": np.ascontiguousarray(tape.aux, dtype="<i8"),
        "values": np.ascontiguousarray(tape._template[: tape.n_values], dtype="<f8"),
        "slots": table,
        "slot_shapes": np.array(shapes, dtype=np.int64),
        "operand_ptr": ptr,
        "operands": operands,
    }


def _digest(arrays: dict) -> bytes:
    h = hashlib.sha256()
    for name in _MEMBERS:
        arr = arrays[name]
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.digest()


def _write(arrays: dict, fileobj, compress=True):
    arrays = dict(arrays)
    arrays[_CHECKSUM] = np.frombuffer(_digest(arrays), dtype=np.uint8)
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(fileobj, "w", compression=method) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=_EPOCH)
            info.compress_type = method
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)


def save_tape(tape: Tape, file):
    """Write ``tape`` to ``file`` (a path, used exactly as given, or a binary file object)."""
    arrays = _arrays_of(tape)
    if hasattr(file, "write"):
        _write(arrays, file)
        return
    path = os.fspath(file)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            _write(arrays, f)
        os.replace(tmp, path)  # readers never see a half-written file
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def tape_to_bytes(tape: Tape) -> bytes:
    buf = io.BytesIO()
    _write(_arrays_of(tape), buf, compress=False)
    return buf.getvalue()


# ==========================================================================
# loading
# ==========================================================================
def load_tape(file) -> Tape:
    """Read a tape written by :meth:`Tape.save` (a path or a binary file object).

    Every index, offset, size, opcode and flag is checked before the tape can
    run; a truncated, corrupted or hostile file raises ``ValueError`` and a
    tape larger than the memory budget raises ``MemoryError``.
    """
    if hasattr(file, "read"):
        where = getattr(file, "name", "<file object>")
        return _load(file, str(where))
    path = os.fspath(file)
    with open(path, "rb") as f:
        return _load(f, repr(path))


def tape_from_bytes(data: bytes) -> Tape:
    """Unpickling: the same validated format as a file."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TapeFormatError(f"a pickled tape holds bytes, got {type(data).__name__}")
    return _load(io.BytesIO(bytes(data)), "<pickled tape>")


def _load(fileobj, where: str) -> Tape:
    try:
        arrays = _read_members(fileobj)
        if hashlib.sha256().digest_size != arrays[_CHECKSUM].size or _digest(arrays) != arrays[_CHECKSUM].tobytes():
            raise TapeFormatError("checksum mismatch: the file is corrupted (or was modified after saving)")
        try:
            meta = json.loads(arrays["meta"].tobytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise TapeFormatError(f"meta is not UTF-8 JSON ({e})") from None
        return _build(meta, arrays)
    except MemoryError:
        raise
    except TapeFormatError as e:
        raise TapeFormatError(f"{where} is not a valid fasttape tape file: {e}") from None
    except Exception as e:  # whatever a damaged archive makes zipfile, zlib or NumPy raise
        raise TapeFormatError(f"{where} is not a valid fasttape tape file: {type(e).__name__}: {e}") from e


def _read_members(fileobj) -> dict:
    try:
        zf = zipfile.ZipFile(fileobj)
    except zipfile.BadZipFile as e:
        raise TapeFormatError(f"not a zip (.npz) archive ({e})") from None
    with zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        expected = {n + ".npy" for n in (*_MEMBERS, _CHECKSUM)}
        if len(names) != len(set(names)) or set(names) != expected:
            raise TapeFormatError(f"members {sorted(names)}, expected {sorted(expected)}")
        declared = sum(i.file_size for i in infos)
        check_memory(declared, "loading this tape file")  # before decompressing anything
        arrays = {}
        for info in infos:
            name = info.filename[:-4]
            dtype, ndim = _MEMBERS.get(name, (np.dtype(np.uint8), 1))
            with zf.open(info) as f:
                arrays[name] = _read_npy(f, name, dtype, ndim, info.file_size)
    return arrays


def _read_npy(f, name, dtype, ndim, file_size) -> np.ndarray:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, got = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, got = np.lib.format.read_array_header_2_0(f)
    else:
        raise TapeFormatError(f"member {name!r}: unsupported .npy version {version}")
    if got != dtype or fortran or len(shape) != ndim or any(type(d) is not int or d < 0 for d in shape):
        raise TapeFormatError(f"member {name!r} is {got}{list(shape)}, expected a C-order {ndim}-d {dtype} array")
    nbytes = math.prod(shape) * dtype.itemsize
    if name == "meta" and nbytes > _MAX_META:
        raise TapeFormatError(f"member 'meta' has {nbytes} bytes, more than {_MAX_META}")
    header = f.tell()
    if header + nbytes != file_size:
        raise TapeFormatError(f"member {name!r}: {nbytes} bytes of data declared, {file_size - header} stored")
    data = f.read(nbytes)
    if len(data) != nbytes:
        raise TapeFormatError(f"member {name!r} is truncated")
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()  # owned and writable


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------
def _fail(msg):
    raise TapeFormatError(msg)


def _int(x, what, lo=0, hi=None):
    if type(x) is not int or x < lo or (hi is not None and x > hi):
        _fail(f"{what} is {x!r}, expected an int in [{lo}, {hi if hi is not None else '...'}]")
    return x


def _shape(x, what):
    if type(x) is not list or len(x) > 64:
        _fail(f"{what} is not a shape")
    return tuple(_int(d, what) for d in x)


def _decode_tree(enc, what):
    """A container structure from its JSON (see _encode_tree): (treedef, number of leaves)."""

    def dec(x, depth):
        if depth > _MAX_DEPTH:
            _fail(f"{what}: containers nested too deep")
        if x == "*":
            return _MARK
        if type(x) is not dict or len(x) != 1:
            _fail(f"{what}: bad container node {str(x)[:80]}")
        (kind, body), = x.items()  # fmt: skip
        if kind in ("tuple", "list"):
            if type(body) is not list:
                _fail(f"{what}: bad {kind}")
            children = [dec(c, depth + 1) for c in body]
            return tuple(children) if kind == "tuple" else children
        if kind == "dict":
            if type(body) is not list:
                _fail(f"{what}: bad dict")
            out = {}
            for item in body:
                if type(item) is not list or len(item) != 2:
                    _fail(f"{what}: bad dict item")
                key, child = item
                if type(key) is dict and set(key) == {"int"} and type(key["int"]) is str:
                    key = int(key["int"])
                elif type(key) is not str:
                    _fail(f"{what}: bad dict key")
                if key in out:
                    _fail(f"{what}: duplicate dict key")
                out[key] = dec(child, depth + 1)
            return out
        _fail(f"{what}: unknown container kind {kind!r}")

    obj = dec(enc, 0)
    leaves, treedef = optree.tree_flatten(obj, none_is_leaf=True)
    if any(leaf is not _MARK for leaf in leaves):
        _fail(f"{what}: bad container structure")
    return treedef


def _decode_static(enc, what):
    if type(enc) is not dict or len(enc) != 1:
        _fail(f"{what}: bad static value")
    (kind, body), = enc.items()  # fmt: skip
    if kind == "none" and body is None:
        return None
    if kind == "bool" and type(body) is bool:
        return body
    if kind == "int" and type(body) is str and len(body) <= 4300:
        return int(body)
    if kind == "str" and type(body) is str:
        return body
    if kind == "bytes" and type(body) is str:
        return bytes.fromhex(body)
    if kind == "float" and type(body) is str:
        return float.fromhex(body)
    if kind in ("ndarray", "npscalar") and type(body) is dict and set(body) == {"dtype", "shape", "data"}:
        dtype = np.dtype(body["dtype"]) if type(body["dtype"]) is str and len(body["dtype"]) <= 8 else None
        if dtype is None or dtype.kind not in "biu":
            _fail(f"{what}: bad static array dtype")
        shape = _shape(body["shape"], what)
        data = body["data"]
        if type(data) is not list or len(data) != math.prod(shape) or any(type(v) is not int for v in data):
            _fail(f"{what}: bad static array data")
        info = np.iinfo(dtype) if dtype.kind != "b" else None
        if info is not None and any(v < info.min or v > info.max for v in data):
            _fail(f"{what}: static array values out of range for {dtype}")
        if info is None and any(v not in (0, 1) for v in data):
            _fail(f"{what}: bad boolean static array")
        arr = np.array(data, dtype=dtype).reshape(shape)
        if kind == "npscalar":
            if shape != ():
                _fail(f"{what}: a NumPy scalar must have shape ()")
            return arr[()]
        return arr
    _fail(f"{what}: unknown static value kind {kind!r}")


def _check_run(offset, size, n_values, what):
    if offset < 0 or size < 0 or offset + size > n_values:
        _fail(f"{what} covers [{offset}, {offset + size}), outside the {n_values} values")


def _validate_instructions(ins: np.ndarray, aux: np.ndarray, n_values: int, pool_end: int):
    """Prove every position the sweeps (forward, reverse, tangent, second order) touch is in range:
    the runs of every row here, its sizes and parameters by its family (``Family.validate``)."""
    N = n_values
    for i, row in enumerate(ins.tolist()):
        op, o, n, a, na, b, nb, c, nc = row[: K.C_P0]
        flags = row[K.C_FLAGS]
        where = f"instruction {i}"
        if not 0 <= op < K.N_OPCODES:
            _fail(f"{where}: opcode {op} is not in the primitive table (0..{K.N_OPCODES - 1})")
        if flags & ~_FLAG_MASK or flags < 0:
            _fail(f"{where}: unknown flag bits {flags:#x}")
        prim = K.PRIMITIVE_BY_OPCODE[op]
        where = f"instruction {i} ({prim.name})"
        _check_run(o, n, N, f"{where}: output")
        for x, nx, col in ((a, na, "A"), (b, nb, "B"), (c, nc, "C")):
            _check_run(x, nx, N, f"{where}: operand {col}")
        problem = families.of(op).validate(prim, row, N, pool_end)
        if problem:
            _fail(f"{where}: {problem}")


def _with_side_stores(ins: np.ndarray, aux: np.ndarray, values: np.ndarray, N: int):
    """A version-1 file (before side stores): each instruction that keeps one gets it appended after
    the values, as the recorder allocates it now.  Returns (ins, aux, values, n_values)."""
    rows = []
    for i, row in enumerate(ins.tolist()):
        family = families.of(row[K.C_OP]) if 0 <= row[K.C_OP] < K.N_OPCODES else None
        if family is None or "side" not in family.params:
            continue
        params = family.unpack(row)
        size = family.side_size(K.PRIMITIVE_BY_OPCODE[row[K.C_OP]], params)
        if size > 0:
            rows.append((i, K.C_P0 + family.params.index("side"), size))
    if not rows:
        return ins, aux, values, N
    grown = N + sum(size for _, _, size in rows)
    check_memory(tape_bytes(grown, ins.shape[0], aux.size), "this tape")
    ins = ins.copy()
    at = N
    for i, column, size in rows:
        ins[i, column] = at
        at += size
    aux = aux.copy()
    if aux.size > K.M_NVALS and aux[K.M_NVALS] == N:
        aux[K.M_NVALS] = grown
    return ins, aux, np.concatenate([values, np.zeros(grown - N)]), grown


def _validate_aux(aux: np.ndarray, n_values: int) -> tuple[int, list]:
    """The header and its tables; returns (end of the index pool, guards)."""
    N = n_values
    if aux.size < K.HEADER:
        _fail(f"aux has {aux.size} entries, fewer than its {K.HEADER}-entry header")
    head = aux[: K.HEADER].tolist()
    if head[K.M_NVALS] != N:
        _fail(f"aux header says {head[K.M_NVALS]} values, the tape has {N}")
    gs, ng, zs, nz = head[K.M_GUARDS], head[K.M_NGUARDS], head[K.M_ZEROS], head[K.M_NZEROS]
    if any(head[j] for j in range(K.HEADER) if j not in (K.M_NVALS, K.M_GUARDS, K.M_NGUARDS, K.M_ZEROS, K.M_NZEROS)):
        _fail("aux header has unknown non-zero fields")
    if not (K.HEADER <= gs and ng >= 0 and nz >= 0 and zs == gs + 2 * ng and zs + 2 * nz == aux.size):
        _fail(f"aux tables (guards at {gs} x{ng}, zero runs at {zs} x{nz}) do not tile the {aux.size} entries")
    pool = aux[K.HEADER : gs]
    if pool.size and (pool.min() < 0 or pool.max() >= N):
        _fail(f"a gather index is outside the {N} values")
    guards = aux[gs:zs].reshape(ng, 2)
    if ng and (guards[:, 0].min() < 0 or guards[:, 0].max() >= N or not np.isin(guards[:, 1], (0, 1)).all()):
        _fail("a guard position is outside the values, or its outcome is not 0/1")
    runs = aux[zs:].reshape(nz, 2)
    for offset, length in runs.tolist():
        _check_run(offset, length, N, "a zero run")
    return gs, [(int(p), bool(e)) for p, e in guards.tolist()]


def _remapped(ins: np.ndarray, saved_names: list) -> np.ndarray:
    """The instruction table with the saved opcodes renumbered to this version's, by primitive name
    (opcodes follow the declarations' order, which a new primitive may change)."""
    used = np.unique(ins[:, K.C_OP]).tolist() if ins.size else []
    mapping = {}
    for op in used:
        if not 0 <= op < len(saved_names):
            _fail(f"opcode {op} is not in the primitive table (the file's table has {len(saved_names)} entries)")
        prim = K.PRIMITIVE_BY_NAME.get(saved_names[op])
        if prim is None:
            _fail(f"it uses the primitive {saved_names[op]!r}, which this version of fasttape does not have; "
                  "load it with the version that saved it, or trace the function again and re-save it")  # fmt: skip
        mapping[op] = prim.opcode
    if all(old == new for old, new in mapping.items()):
        return ins
    remapped = ins.copy()
    column = ins[:, K.C_OP]
    for old, new in mapping.items():
        remapped[column == old, K.C_OP] = new
    return remapped


def _build(meta, arrays) -> Tape:
    if type(meta) is not dict:
        _fail("meta is not a JSON object")
    if meta.get("format") != FORMAT:
        _fail(f"format is {meta.get('format')!r}, expected {FORMAT!r}")
    version = meta.get("version")
    if version not in READABLE:
        _fail(f"format version {version!r}; this fasttape reads versions {READABLE}: load the file with the "
              "fasttape that saved it, then trace the function again and save it with this one")  # fmt: skip
    if meta.get("row") != K.ROW or meta.get("header") != K.HEADER:
        _fail("the instruction layout differs from this fasttape's (saved by an incompatible version)")
    prims = meta.get("primitives")
    if type(prims) is not list or any(type(p) is not str for p in prims):
        _fail("bad primitive table")
    ins, aux, values = arrays["ins"], arrays["aux"], arrays["values"]
    N = _int(meta.get("n_values"), "n_values")
    if values.size != N:
        _fail(f"values has {values.size} entries, the tape has {N}")
    if ins.shape[1] != K.ROW:
        _fail(f"ins has {ins.shape[1]} columns, expected {K.ROW}")
    check_memory(tape_bytes(N, ins.shape[0], aux.size), "this tape")
    ins = _remapped(ins, prims)
    if version == 1:
        ins, aux, values, N = _with_side_stores(ins, aux, values, N)
    pool_end, guards = _validate_aux(aux, N)
    _validate_instructions(ins, aux, N, pool_end)

    # -- the Python side ----------------------------------------------------
    tape = Tape.__new__(Tape)
    name = meta.get("name")
    if type(name) is not str:
        _fail("name is not a string")
    has_aux = meta.get("has_aux")
    if type(has_aux) is not bool:
        _fail("has_aux is not a bool")
    raw_args = meta.get("args")
    if type(raw_args) is not list or not raw_args:
        _fail("args is not a non-empty list")
    n_args = len(raw_args)
    argnums = meta.get("argnums")
    nums = [argnums] if type(argnums) is int else argnums
    if type(nums) is not list or not nums or any(type(a) is not int or not 0 <= a < n_args for a in nums):
        _fail(f"argnums {argnums!r} do not name arguments")
    if len(set(nums)) != len(nums):
        _fail("argnums names an argument twice")
    argnums = argnums if type(argnums) is int else tuple(argnums)
    specs = []
    for i, raw in enumerate(raw_args):
        if type(raw) is not dict or type(raw.get("leaves")) is not list:
            _fail(f"argument {i}: bad spec")
        treedef = _decode_tree(raw.get("tree"), f"argument {i}")
        if raw.get("differentiable") is not (i in nums):
            _fail(f"argument {i}: differentiable flag disagrees with argnums")
        if treedef.num_leaves != len(raw["leaves"]):
            _fail(f"argument {i}: {len(raw['leaves'])} leaves for a structure of {treedef.num_leaves}")
        leaves = []
        for j, lf in enumerate(raw["leaves"]):
            what = f"argument {i} leaf {j}"
            if (
                type(lf) is not dict
                or type(lf.get("name")) is not str
                or lf.get("kind") not in ("array", "integers", "scalar", "static")
            ):
                _fail(f"{what}: bad leaf")  # fmt: skip
            if lf["kind"] == "static":
                if i in nums:
                    _fail(f"{what}: a static leaf in a differentiated argument")
                leaves.append(Leaf("static", lf["name"], value=_decode_static(lf.get("static"), what)))
                continue
            shape = _shape(lf.get("shape"), what)
            offset = _int(lf.get("offset"), f"{what} offset")
            size = math.prod(shape)
            _check_run(offset, size, N, what)
            if lf["kind"] == "scalar" and shape != ():
                _fail(f"{what}: a scalar leaf of shape {shape}")
            if lf["kind"] == "integers" and i in nums:
                _fail(f"{what}: an integer leaf in a differentiated argument")
            leaves.append(Leaf(lf["kind"], lf["name"], offset, shape, size))
        specs.append(ArgSpec(treedef, leaves, i in nums))

    def entries(raw, what, allow_const):
        if type(raw) is not dict or type(raw.get("entries")) is not list:
            _fail(f"{what}: bad spec")
        treedef = _decode_tree(raw.get("tree"), what)
        if treedef.num_leaves != len(raw["entries"]):
            _fail(f"{what}: entries do not match the structure")
        out = []
        for e in raw["entries"]:
            if type(e) is not dict:
                _fail(f"{what}: bad entry")
            if "const" in e:
                if not allow_const or len(e) != 1:
                    _fail(f"{what}: bad constant entry")
                out.append(("const", _decode_static(e["const"], what)))
                continue
            shape = _shape(e.get("shape"), what)
            offset = _int(e.get("offset"), f"{what} offset")
            _check_run(offset, math.prod(shape), N, what)
            typed = [kind for kind in ("bool", "int") if e.get(kind, False) is not False]
            if any(type(e.get(kind, False)) is not bool for kind in ("bool", "int")) or len(typed) > 1:
                _fail(f"{what}: bad entry")
            elif typed and allow_const:
                out.append((offset, shape, typed[0]))
            elif not typed:
                out.append((offset, shape))
            else:
                _fail(f"{what}: bad entry")
        return treedef, out

    out_tree, outputs = entries(meta.get("outputs"), "outputs", False)
    aux_tree, aux_entries = entries(meta.get("aux"), "aux outputs", True)
    if not has_aux and (aux_tree.num_leaves != 1 or aux_entries != [("const", None)]):
        _fail("aux outputs without has_aux")
    for offset, shape in outputs:
        if shape == () and offset >= N:  # the reverse sweep is seeded at this position
            _fail("the output position is outside the values")

    slots = _slots_of(arrays, N, ins.shape[0], meta.get("input_names"), values)
    output_slots = meta.get("output_slots")
    if type(output_slots) is not list or len(output_slots) != len(outputs):
        _fail("output_slots do not match the outputs")
    output_slots = [_int(s, "an output slot", 0, len(slots) - 1) for s in output_slots]
    row_operands = _row_operands_of(arrays, ins.shape[0], len(slots))

    template = np.zeros(2 * N, dtype=np.float64)
    template[:N] = values
    out_kind = meta.get("out_kind")
    if out_kind not in ("f", "b", "i"):
        _fail(f"out_kind is {out_kind!r}")
    tape._out_kind = out_kind
    tape.name = name
    tape.argnums = argnums
    tape.has_aux = has_aux
    tape._args = specs
    tape._out_tree, tape._outputs, tape.output_slots = out_tree, outputs, output_slots
    tape._aux_tree, tape._aux = aux_tree, aux_entries
    tape._slots = slots
    tape._row_operands = row_operands
    tape._guards = guards
    tape.n_values = N
    tape.ins = np.ascontiguousarray(ins, dtype=np.int64)
    tape.aux = np.ascontiguousarray(aux, dtype=np.int64)
    tape._template = template
    tape._finish()
    return tape


def _slots_of(arrays, N, n_rows, input_names, values) -> list:
    table, shapes = arrays["slots"], arrays["slot_shapes"]
    if table.shape[1] != SLOT_COLUMNS:
        _fail(f"slots has {table.shape[1]} columns, expected {SLOT_COLUMNS}")
    if type(input_names) is not list or any(type(s) is not str for s in input_names):
        _fail("bad input_names")
    if shapes.size and shapes.min() < 0:
        _fail("a negative slot extent")
    ndims = table[:, 2]
    if table.size and (ndims.min() < 0 or ndims.max() > 64 or int(ndims.sum()) != shapes.size):
        _fail("slot shapes do not match their ranks")
    if not table.size and shapes.size:
        _fail("slot shapes without slots")
    slots = []
    pos = 0
    shapes_list = shapes.tolist()
    for sid, (offset, size, ndim, active, dtype, kind, ref) in enumerate(table.tolist()):
        shape = tuple(shapes_list[pos : pos + ndim])
        pos += ndim
        if math.prod(shape) != size or active not in (0, 1) or not 0 <= dtype < len(_KINDS) or not 0 <= kind < 4:
            _fail(f"slot {sid}: bad entry")
        _check_run(offset, size, N, f"slot {sid}")
        origin_kind = _ORIGINS[kind]
        if origin_kind == "input":
            origin = ("input", input_names[_int(ref, f"slot {sid} input", 0, len(input_names) - 1)])
        elif origin_kind == "const":
            origin = ("const", values[offset : offset + size].copy())
            whole = np.isfinite(origin[1]).all() and (origin[1] == np.rint(origin[1])).all()
            if _KINDS[dtype] in ("i", "b") and not whole:
                _fail(f"slot {sid}: an integer or boolean constant that is not a finite whole number")
        elif origin_kind == "view":
            origin = ("view", _int(ref, f"slot {sid} parent", 0, sid - 1))
        else:
            origin = ("op", _int(ref, f"slot {sid} instruction", 0, n_rows - 1))
        slot = Slot(offset, shape, bool(active), _KINDS[dtype], origin)
        slots.append(slot)
    return slots


def _row_operands_of(arrays, n_rows, n_slots) -> RowOperands:
    ptr, operands = arrays["operand_ptr"], arrays["operands"]
    if ptr.size != n_rows + 1 or ptr[0] != 0 or ptr[-1] != operands.size or (np.diff(ptr) < 0).any():
        _fail("operand_ptr does not index operands")
    if operands.size and (operands.min() < 0 or operands.max() >= n_slots):
        _fail("an operand slot id is out of range")
    return RowOperands(np.array(ptr, dtype=np.int64), np.array(operands, dtype=np.int64))
