"""How generated code writes a loop over one block of elements: the reads of one fixed position hoisted
before it (so that LLVM vectorises it), and a long sum added up in chunks and blocks (so that its
rounding error stays near NumPy's pairwise sum).  Used by :mod:`fasttape.tape_source`.
"""

from __future__ import annotations

import re

CHUNK, CHUNKS = 256, 64  # a long sum in a loop: chunks of this many elements, blocks of this many chunks
_INVARIANT_READ = re.compile(r"^(\w+) = (\w+)\[([^\]]*)\]$")


def indent(lines: list[str], by: str = "    ") -> list[str]:
    return [by + line for line in lines]


def loop(n: int, body: list[str], totals=()) -> list[str]:
    """``for j in range(n)`` over ``body``, its reads of one fixed position (a scalar operand) before the
    loop: the loop writes the same array, and LLVM vectorises it only when it need not prove that no
    iteration writes what such a read reads (a loop never writes a position it reads whole).  ``totals``:
    the sums the body adds to (``total += ...``), added up in chunks of ``CHUNK`` elements, the chunks'
    sums in blocks of ``CHUNKS``, the blocks' sums into the total: a long sum's rounding error stays
    near that of NumPy's pairwise sum instead of growing with its length."""
    hoisted, rest = [], []
    for line in body:
        read = _INVARIANT_READ.match(line)
        if line.endswith(" else zeros"):  # (a JVP's choice of an array: tangents, or zeros for a skipped block)
            hoisted += [] if line in hoisted else [line]
        else:
            (hoisted if read and "j" not in re.findall(r"\w+", read.group(3)) else rest).append(line)
    if not totals or n <= CHUNK:
        return hoisted + [f"for j in range({n}):"] + indent(rest)
    rest = [re.sub(rf"^({'|'.join(totals)}) \+= ", r"chunk_\1 += ", line) for line in rest]
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
