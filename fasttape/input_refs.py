"""Per-tape kernels: the io form of a gradient kernel, and the arguments it reads where the caller holds them.

A tape of float arrays, one of them differentiated, gets ``value_and_grad_io`` (``io_entries``): the
caller's arrays in, the gradient out, one compiled call.  Copying every argument into the buffer
before the sweep would cost a pass over each, yet a sweep only reads an argument's values: for a
logistic regression of 10⁴ × 100 the copy of X (8 MB) was a third of the call.  An argument read
only by elementwise rows (a loop or a line of the generated code, not an operand that moves with a
period's iterations) and by matrix products is read where it lies instead: the gradient kernel takes
it as an array of its own (``in0``, ``in1``...), its loops read it from there, and its products call
the matmul family's kernels with that array as the operand (``families.matmul.DIRECT``).  Its
adjoint stays in the buffer.  Any other reader (a family kernel, a gather, a guard, the caller) keeps
the copy.
"""

from __future__ import annotations

from .families import FAMILIES, FAMILY_BY_OPCODE, matmul
from .generated_loops import indent
from .kernel_calls import direct_slot
from .kernel_pipeline import DECORATOR
from .layout import C_A, C_B, C_FLAGS, C_OUT, F_GRAD_A, F_GRAD_B, F_INIT_A, F_INIT_B

MATMUL = next(family for family in FAMILIES if family.module is matmul)


def _overlaps(p: int, m: int, start: int, size: int) -> bool:
    return m > 0 and p < start + size and start < p + m


def _inside(p: int, m: int, start: int, size: int) -> bool:
    return start <= p and p + m <= start + size


def by_reference(plan, ins, arguments, caller_reads) -> dict[int, tuple[int, int]]:
    """``{argument: (offset, size)}`` of the ``arguments`` (their (offset, size), in order) that the
    sweeps of ``plan`` read only from elementwise rows (operands that stay put) and matrix products outside
    periods (which call ``families.matmul.DIRECT``), and that no guard and no caller reads."""
    chosen = {}
    for index, (start, size) in enumerate(arguments):
        if any(_overlaps(p, m, start, size) for p, m in caller_reads):
            continue
        if any(start <= p < start + size for p, _ in plan.guards):
            continue
        if all(_read_in_place(plan, ins, i, start, size) for i in range(len(plan.outs))):
            chosen[index] = (start, size)
    return chosen


def _read_in_place(plan, ins, i: int, start: int, size: int) -> bool:
    """Whether row i reads nothing of the argument at ``start`` or reads it as the kernels can in place."""
    if plan.elementwise[i]:
        for k, (p, m) in enumerate(plan.operands[i]):
            if not _overlaps(p, m, start, size):
                continue
            # (a row of a later iteration reads what its body row does, moved or not)
            if not _inside(p, m, start, size) or plan.strided(plan.body(i), k):
                return False
        return True
    read = [(p, m) for p, m in plan.family_reads[i] if _overlaps(p, m, start, size)]
    if not read:
        return True
    matmul_row = FAMILY_BY_OPCODE[plan.ops[i]] is MATMUL and plan.period(i) is None
    return matmul_row and all(_inside(p, m, start, size) for p, m in read)


def reads_reference(refs, i: int, plan) -> bool:
    """Whether family row i reads an argument read in place (``refs``: ``by_reference``'s)."""
    return any(_overlaps(p, m, start, size) for p, m in plan.family_reads[i] for start, size in refs.values())


def _operand(refs, p: int, prefix: str = "in") -> tuple[str, int]:
    """(array, offset in it) of the value at buffer position ``p`` (``prefix``: "in" for the arguments'
    values, "tn" for their tangents)."""
    for index, (start, size) in refs.items():
        if start <= p < start + size:
            return f"{prefix}{index}", p - start
    return "buf", p


def reference(refs, p: int, prefix: str = "in") -> tuple[str, int] | None:
    """(array, offset) of position ``p`` when it is in an argument read in place, else None."""
    array, at = _operand(refs, p, prefix)
    return None if array == "buf" else (array, at)


def product_call(refs, ins, i: int, sweep: str, first=(True, True), flat: bool = False) -> str:
    """The call of matmul row i's kernel for ``sweep`` ("forward", "reverse", or an HVP's "tangent" and
    "second"), its operands read from where they are (``refs``: ``by_reference``'s; an argument read in place
    has its tangents, the direction, in place too).  ``first``: whether the HVP computes each operand's
    first-order adjoint; ``flat``: the product's second-order adjoint is a structural zero."""
    row = ins[i]
    o, a, b = int(row[C_OUT]), int(row[C_A]), int(row[C_B])
    A, a_at = _operand(refs, a)
    B, b_at = _operand(refs, b)
    flags = int(row[C_FLAGS])

    def ints(*values) -> str:  # (run-time ints, as the kernel was compiled for, not literals)
        return ", ".join(f"r0 + {v}" for v in values)

    def truth(*values) -> str:  # (run-time booleans)
        return ", ".join("r0 == 0" if value else "r0 != 0" for value in values)

    def address(name: str) -> str:
        return f"fns[{direct_slot(name, len(FAMILIES))}]"

    shape = ints(*(int(row[c]) for c in (matmul.P_BATCH, matmul.P_M, matmul.P_K, matmul.P_N)))
    operands = f"{A}, {ints(a_at)}, {B}, {ints(b_at)}"
    grad, init = [bool(flags & flag) for flag in (F_GRAD_A, F_GRAD_B)], [bool(flags & f) for f in (F_INIT_A, F_INIT_B)]
    if sweep == "forward":
        return f"call_product_forward({address('product_forward')}, buf, {ints(o)}, {operands}, {shape})"
    if sweep == "reverse":
        at, switches = ints(o, a, b), truth(*grad, *init)
        return f"call_product_reverse({address('product_reverse')}, buf, N, {at}, {operands}, {shape}, {switches})"
    # the tangents of an operand in the buffer are in the tangent plane; of an argument read in place, tn{k}
    TA, TB = ("tangents" if name == "buf" else "tn" + name[2:] for name in (A, B))
    operands = f"{A}, {TA}, {ints(a_at)}, {B}, {TB}, {ints(b_at)}"
    if sweep == "tangent":
        at, switches = ints(o), truth(*grad)
        return f"call_product_tangent({address('product_tangent')}, tangents, {at}, {operands}, {shape}, {switches})"
    at, switches = ints(o, a, b), truth(*grad, *first, flat, *init)
    arrays = "buf, tangents, adj2, N"
    return f"call_product_second({address('product_second')}, {arrays}, {at}, {operands}, {shape}, {switches})"


def _io_copies(arguments):
    names = [f"x{i}" for i in range(len(arguments))]
    flat = [f"{name}_ = {name}.reshape({size})" for name, (_, size) in zip(names, arguments)]
    copies = [[f"for j in range({size}):", f"    buf[{offset} + j] = {name}_[j]"]
              for name, (offset, size) in zip(names, arguments)]  # fmt: skip
    return names, flat, copies


def gradient_io(io, n_values: int, short: bool, refs) -> list[str]:
    """``value_and_grad_io``: the arguments copied into the buffer (those ``refs`` names passed as they are,
    flat), the gradient copied out to ``g``."""
    arguments, k = io
    names, flat, copies = _io_copies(arguments)
    offset, size = arguments[k]
    signature = ", ".join(([] if short else ["ins", "aux"]) + ["buf"] + ([] if short else ["fns"]) + names + ["g"])
    passed = "".join(f", x{index}_" for index in refs)
    run = f"value_and_grad_body(buf{passed})" if short else f"value_and_grad(ins, aux, buf, fns{passed})"
    copy_out = [f"g_ = g.reshape({size})", f"for j in range({size}):", f"    g_[j] = buf[{n_values + offset} + j]"]
    lines = ["", DECORATOR, f"def value_and_grad_io({signature}):"]
    copied = [line for index, lines_ in enumerate(copies) if index not in refs for line in lines_]
    return lines + indent(flat + copied + [f"ok = {run}"] + copy_out + ["return ok"]) + [""]


def hvp_io(io, hv_refs) -> list[str]:
    """``hvp_io(ins, aux, buf, tangents, adj2, fns, x0, ..., v, hv)``: the arguments copied into the buffer
    (those ``hv_refs`` names passed as they are, with their tangents: the direction v for the differentiated
    one, a view of the tangent plane, which no sweep reads, for the others) and v into the tangent plane,
    H v out to hv."""
    arguments, k = io
    names, flat, copies = _io_copies(arguments)
    offset, size = arguments[k]
    lines = ["", DECORATOR, f"def hvp_io(ins, aux, buf, tangents, adj2, fns, {', '.join(names)}, v, hv):"]
    seed = [f"v_ = v.reshape({size})"]
    if k not in hv_refs:
        seed += [f"for j in range({size}):", f"    tangents[{offset} + j] = v_[j]"]
    copied = [line for index, lines_ in enumerate(copies) if index not in hv_refs for line in lines_]
    passed = "".join(f", x{index}_, " + ("v_" if index == k else f"tangents[{at}:{at + m}]")
                     for index, (at, m) in hv_refs.items())  # fmt: skip
    run = [f"ok = hvp(ins, aux, buf, tangents, adj2, fns{passed})"]
    result = [f"hv_ = hv.reshape({size})", f"for j in range({size}):", f"    hv_[j] = adj2[{offset} + j]"]
    return lines + indent(flat + copied + seed + run + result + ["return ok"]) + [""]
