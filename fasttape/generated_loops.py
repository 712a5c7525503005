"""How generated code writes a loop over one block of elements: the reads of one fixed position hoisted
before it (so that LLVM vectorises it), and a long sum added up in chunks and blocks (so that its
rounding error stays near NumPy's pairwise sum), each addition to it a ``sum_add``.  Used by
:mod:`fasttape.tape_source`.
"""

from __future__ import annotations

import re

from numba import types
from numba.extending import intrinsic

CHUNK, CHUNKS = 256, 64  # a long sum in a loop: chunks of this many elements, blocks of this many chunks
_INVARIANT_READ = re.compile(r"^(\w+) = (\w+)\[([^\]]*)\]$")


@intrinsic
def sum_add(typingctx, total, term):
    """``total + term`` as an addition LLVM may reassociate, and nothing else: a loop adding up a sum with it
    is vectorised (partial sums per lane), while every other operation of the loop keeps IEEE order (a
    function compiled with ``fastmath`` reassociates its products too: ``y * (c * y)`` became ``(y * y) * c``
    and overflowed at 1e300)."""
    if total != types.float64 or term != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.fadd(args[0], args[1], flags=("reassoc", "nsz"))

    return types.float64(types.float64, types.float64), codegen


def unsigned_subscripts(line: str) -> str:
    """Every computed subscript of a generated line cast to an unsigned integer: ``buf[unsigned(k + j)]``.

    Numba indexes with a signed integer by first adding the length to a negative one; LLVM cannot prove
    that a chunk loop's ``j0 + jc`` is not negative, so it keeps that select per access, and a loop that
    writes the buffer it reads is then not vectorised at all (its stores' addresses are not affine): a
    fused loop of one exp per element took 7.6 ms for a million instead of 1.5. The kernels' positions
    are never negative, and an unsigned index has no such adjustment. Constant subscripts, slices and
    tuples are left as they are."""
    code, hash_sign, comment = line.partition("#")
    out: list[str] = []
    opened: list[tuple[int, bool]] = []  # per open bracket: its position in out, and whether it subscripts
    for char in code:
        if char == "[":
            before = "".join(out).rstrip()[-1:]
            opened.append((len(out), before.isalnum() or before in "_])"))
        elif char == "]" and opened:
            start, subscript = opened.pop()
            inside = "".join(out[start + 1 :]).strip()
            if subscript and not re.fullmatch(r"-?\d+|", inside) and not any(c in inside for c in ":,"):
                del out[start + 1 :]
                out.append(f"unsigned({inside})")
        out.append(char)
    return "".join(out) + hash_sign + comment


def _summed(line: str, totals, prefix: str = "") -> str:
    """``t += expr`` for a total t: ``{prefix}t = sum_add({prefix}t, expr)``."""
    match = re.match(rf"^({'|'.join(totals)}) \+= (.*)$", line)
    if not match:
        return line
    name = prefix + match.group(1)
    return f"{name} = sum_add({name}, {match.group(2)})"


def copy(target: str, source: str, size: int) -> list[str]:
    """``target = source`` for ``j`` in ``range(size)`` (both indexed by ``j``)."""
    return [f"for j in range({size}):", f"    {target} = {source}"]


def indent(lines: list[str], by: str = "    ") -> list[str]:
    return [by + line for line in lines]


def loop(n: int, body: list[str], totals=(), chunked: bool = True) -> list[str]:
    """``for j in range(n)`` over ``body``, its reads of one fixed position (a scalar operand) before the
    loop: the loop writes the same array, and LLVM vectorises it only when it need not prove that no
    iteration writes what such a read reads (a loop never writes a position it reads whole).  ``totals``:
    the sums the body adds to (``total += ...``), added up in chunks of ``CHUNK`` elements, the chunks'
    sums in blocks of ``CHUNKS``, the blocks' sums into the total: a long sum's rounding error stays
    near that of NumPy's pairwise sum instead of growing with its length (``chunked``; else one flat loop)."""
    hoisted, rest = [], []
    for line in body:
        read = _INVARIANT_READ.match(line)
        if line.endswith(" else zeros"):  # (a JVP's choice of an array: tangents, or zeros for a skipped block)
            hoisted += [] if line in hoisted else [line]
        else:
            (hoisted if read and "j" not in re.findall(r"\w+", read.group(3)) else rest).append(line)
    if totals and (n <= CHUNK or not chunked):
        rest = [_summed(line, totals) for line in rest]
    if not totals or n <= CHUNK or not chunked:
        return hoisted + [f"for j in range({n}):"] + indent(rest)
    rest = [_summed(line, totals, "chunk_") for line in rest]
    # a chunk's loop runs a constant number of times (a bound of min(j0 + CHUNK, n) made LLVM's code of the
    # same loop six times slower); the elements after the last whole chunk are a chunk of their own
    full = n - n % CHUNK
    chunk = [f"chunk_{t} = 0.0" for t in totals] + [f"for jc in range({CHUNK}):", "    j = j0 + jc"]
    chunk += indent(rest) + [f"block_{t} += chunk_{t}" for t in totals]
    block = [f"block_{t} = 0.0" for t in totals]
    block += [f"for j0 in range(j1, min(j1 + {CHUNK * CHUNKS}, {full}), {CHUNK}):"] + indent(chunk)
    block += [f"{t} += block_{t}" for t in totals]
    lines = hoisted + [f"for j1 in range(0, {full}, {CHUNK * CHUNKS}):"] + indent(block)
    if full < n:
        lines += [f"chunk_{t} = 0.0" for t in totals] + [f"for j in range({full}, {n}):"] + indent(rest)
        lines += [f"{t} += chunk_{t}" for t in totals]
    return lines
