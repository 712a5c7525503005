"""Copy and constant propagation over the generated kernels' source, before Numba compiles it.

The writer (``fasttape.tape_source``) names every partial derivative and every adjoint of a row, so a
reverse sweep is full of ``d0_27 = 1.0``, ``t26 = g26`` and ``t27 * d0_27``: in Lorenz's gradient kernel
they were as many as the statements that compute.  LLVM removes them, but Numba types and lowers each
one first, and those passes, not LLVM's, take most of a kernel's compile time.  This pass rewrites the
lines before that, with exact identities only, so that a kernel computes bit for bit what it computed
before:

* ``name = other`` and ``name = constant``, where ``name`` is assigned once and read only after it in its
  own block, and ``other`` is assigned once, before it, are removed and ``name`` is replaced where read;
* a product by one is its factor (``x * 1.0``, ``(1.0) * x``) and a product by minus one a negation,
  where the product is a whole right-hand side or a whole term of a sum (``-x`` is ``x * -1.0`` exactly,
  and ``a + -b`` is ``a - b``).
"""

from __future__ import annotations

import re

_ASSIGN = re.compile(r"^\s*(\w+(?:, \w+)*) (?:=|\+=|-=|\*=|/=) ")
_FOR = re.compile(r"^\s*for (\w+) in ")
_ALIAS = re.compile(r"^(\s*)(\w+) = (\w+|\(?-?\d+\.\d+\)?)$")
_NAME = re.compile(r"^[A-Za-z_]\w*$")
_WORDS = re.compile(r"(?<![\w.])[A-Za-z_]\w*")
_STATEMENT = re.compile(r"^(\s*)(\S.*?) (=|\+=) (.*)$")
_ONE, _MINUS_ONE = {"1.0", "(1.0)"}, {"-1.0", "(-1.0)"}
_EXPONENT = re.compile(r"(?<![\w.])\d+(?:\.\d*)?[eE]$")


def simplify(source: str) -> str:
    """``source`` (a generated module: top-level functions and constants) with every function simplified."""
    lines = source.split("\n")
    out: list[str] = []
    start = 0
    for n in range(len(lines) + 1):
        if n == len(lines) or (lines[n].startswith("def ") and n > start):
            chunk = lines[start:n]
            out += propagate(chunk) if chunk and any(line.startswith("def ") for line in chunk) else chunk
            start = n
    return "\n".join(out)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _code(line: str) -> str:
    return line.split("#", 1)[0]


def propagate(lines: list[str]) -> list[str]:
    """One function's lines with its single-assignment copies and constants substituted where read, and its
    products by one and minus one simplified."""
    lines = list(lines)
    defs: dict[str, list[int]] = {}
    reads: dict[str, set[int]] = {}  # every line where a name occurs (as a target too)
    for n, line in enumerate(lines):
        code = _code(line)
        m = _ASSIGN.match(code) or _FOR.match(code)
        if m:
            for name in m.group(1).split(", "):
                defs.setdefault(name, []).append(n)
        for name in _WORDS.findall(code):
            reads.setdefault(name, set()).add(n)
    removed: set[int] = set()
    for n, line in enumerate(lines):
        m = _ALIAS.match(line)
        if not m or len(defs.get(m.group(2), ())) != 1:
            continue
        name, value = m.group(2), m.group(3)
        if _NAME.match(value):
            if len(defs.get(value, ())) != 1 or defs[value][0] >= n:
                continue
        elif value.startswith("-"):
            value = f"({value})"
        end = _block_end(lines, n)
        used = reads[name] - {n}
        if any(not n < k < end for k in used):
            continue  # read outside the rest of its block: left as it is
        word = re.compile(rf"(?<![\w.]){name}(?!\w)")
        for k in used:
            code, sep, comment = lines[k].partition("#")
            lines[k] = word.sub(value, code) + sep + comment
            if _NAME.match(value):
                reads[value].add(k)
        removed.add(n)
    kept = [_unit_products(line) for n, line in enumerate(lines) if n not in removed]
    return _fill_empty_blocks(kept)


def _block_end(lines: list[str], n: int) -> int:
    """The index after the last line of the block that line ``n`` belongs to."""
    depth = _indent(lines[n])
    end = n + 1
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) >= depth):
        end += 1
    return end


def _fill_empty_blocks(lines: list[str]) -> list[str]:
    """A ``pass`` in every block left empty."""
    out = []
    for n, line in enumerate(lines):
        out.append(line)
        if _code(line).rstrip().endswith(":"):
            following = next((x for x in lines[n + 1 :] if x.strip()), None)
            if following is None or _indent(following) <= _indent(line):
                out.append(" " * (_indent(line) + 4) + "pass")
    return out


def _split(expression: str, separator: str) -> tuple[list[str], bool]:
    """``expression``'s parts between the ``separator``s outside brackets, and whether another operator
    stands outside brackets (not counting a leading sign or an exponent's)."""
    parts, depth, start, k, mixed = [], 0, 0, 0, False
    while k < len(expression):
        c = expression[k]
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        elif depth == 0 and expression.startswith(separator, k):
            parts.append(expression[start:k].strip())
            k = start = k + len(separator)
            continue
        elif depth == 0 and k > 0 and c in "+-*/%<>=!&|^@":
            mixed = mixed or not (c in "+-" and _EXPONENT.search(expression[:k]))
        k += 1
    parts.append(expression[start:].strip())
    return parts, mixed


def _signed_factor(term: str) -> tuple[str, int]:
    """``(factor, sign)``: a product of one factor by 1 or -1 as the factor and its sign, else ``(term, 1)``."""
    parts, mixed = _split(term, " * ")
    if not mixed and len(parts) == 2:
        for const, other in (parts, parts[::-1]):
            if const in _ONE:
                return other, 1
            if const in _MINUS_ONE:
                return other, -1
    return term, 1


def _unit_products(line: str) -> str:
    """``line`` with each term of its right-hand side that is a product by 1 or -1 simplified."""
    m = _STATEMENT.match(line)
    if not m or "#" in line:
        return line
    indent, target, op, expression = m.groups()
    terms = _split(expression, " + ")[0]
    signed = [_signed_factor(term) for term in terms]
    if all(s == (t, 1) for s, t in zip(signed, terms)):
        return line
    text = signed[0][0] if signed[0][1] > 0 else f"-{signed[0][0]}"
    for factor, sign in signed[1:]:
        text += f" + {factor}" if sign > 0 else f" - {factor}"
    return f"{indent}{target} {op} {text}"
