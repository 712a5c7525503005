"""The generated kernels' copy and constant propagation (fasttape.source_simplify): the lines it removes
and rewrites, what it leaves alone, and random programs that compute the same values bit for bit."""

import math
import struct
import textwrap

from hypothesis import given, settings
from hypothesis import strategies as st

from fasttape.source_simplify import simplify


def simplified(body: str) -> str:
    return simplify("def f(buf):\n" + textwrap.indent(textwrap.dedent(body).strip("\n"), "    "))


def test_copies_and_unit_partials_are_substituted_where_read():
    out = simplified("""
        t4 = buf[0]
        d0_4 = 1.0
        d1_4 = -1.0
        g3 = t4 * d0_4
        g2 = t4 * d1_4
        t3 = g3
        buf[1] = t3 * buf[2]
        buf[3] = g2
    """)
    assert out.split("\n")[1:] == ["    t4 = buf[0]", "    g3 = t4", "    g2 = -t4", "    buf[1] = g3 * buf[2]",
                                   "    buf[3] = g2"]  # fmt: skip


def test_a_sum_of_unit_products_becomes_a_sum_and_a_difference():
    out = simplified("u7 = (1.0) * buf[0] + (-1.0) * buf[1]\nbuf[2] = u7\nbuf[3] = 1e-05 * buf[1] * (-1.0)")
    assert "u7 = buf[0] - buf[1]" in out and "buf[3] = 1e-05 * buf[1] * (-1.0)" in out
    assert simplified("a = buf[0]\nu = 2e-05 * (-1.0)\nbuf[1] = u").split("\n")[2] == "    u = -2e-05"


def test_names_assigned_twice_or_read_outside_their_block_are_left():
    body = """
        a = buf[0]
        b = a
        b = b + 1.0
        for j in range(3):
            c = a
            buf[j] = c
        buf[5] = c
    """
    out = simplified(body)
    assert "b = a" in out and "c = a" in out


def test_a_source_assigned_after_its_copy_is_not_substituted():
    out = simplified("""
        for j in range(3):
            c = a
            buf[j] = c
            a = buf[j + 1]
    """)
    assert "c = a" in out


def test_a_block_left_empty_gets_a_pass():
    out = simplified("""
        x = buf[0]
        if x > 0.0:
            y = x
        buf[1] = x
    """)
    assert "if x > 0.0:\n        pass" in out
    compile(out, "<test>", "exec")


def test_products_that_are_not_whole_terms_are_left():
    for line in (
        "u = a - b * 1.0",
        "u = a ** 1.0",
        "u = a / b * (-1.0)",
        "u = a * b * 1.0",
        "u = a < b * 1.0",
        "u = ae-b * (-1.0)",
        "u = a * -b * 1.0",
    ):
        assert simplified(f"a = buf[0]\nb = buf[1]\n{line}\nbuf[2] = u").split("\n")[3] == f"    {line}"


# random straight-line programs with loops and branches, run before and after
_CONSTANTS = ("1.0", "-1.0", "(1.0)", "(-1.0)", "2.5", "0.0")


@st.composite
def programs(draw):
    names = [f"v{k}" for k in range(6)]
    lines = ["acc = buf[0]"] + [f"{name} = buf[{k + 1}]" for k, name in enumerate(names)]

    def atom():
        return draw(st.sampled_from(names + ["acc", "buf[2]", "buf[j]" if loop else "buf[3]"] + list(_CONSTANTS)))

    def expression():
        kind = draw(st.integers(0, 3))
        if kind == 0:
            return atom()
        if kind == 1:
            return f"{atom()} * {atom()}"
        if kind == 2:
            return f"{atom()} * {atom()} + {atom()} * {atom()}"
        return f"{atom()} - {atom()} * {atom()}"

    indent, loop = "", False
    for _ in range(draw(st.integers(1, 25))):
        choice = draw(st.integers(0, 9))
        if choice == 0 and not indent:
            lines.append("for j in range(3):")
            indent, loop = "    ", True
        elif choice == 1 and not indent:
            lines.append("if acc > 0.0:")
            indent, loop = "    ", False
        elif choice == 2 and indent:
            indent, loop = "", False
        target = draw(st.sampled_from(names + ["acc"]))
        if choice == 3:
            fresh = f"w{len(lines)}"
            lines.append(f"{indent}{fresh} = {atom()}")
            lines.append(f"{indent}{target} = {fresh} * {atom()}")
        elif choice == 4:
            lines.append(f"{indent}buf[{draw(st.integers(4, 6))}] = {expression()}")
        else:
            lines.append(f"{indent}{target} {draw(st.sampled_from(['=', '+=']))} {expression()}")
    lines.append(f"return ({', '.join(names)}, acc, buf[4], buf[5], buf[6])")
    return "def f(buf):\n" + textwrap.indent("\n".join(lines), "    ")


def _run(source, buf):
    namespace = {}
    exec(compile(source, "<program>", "exec"), namespace)
    try:
        # (a NaN's sign may differ: -x flips it where x * -1.0 keeps it)
        return [b"nan" if math.isnan(x) else struct.pack("<d", x) for x in namespace["f"](list(buf))]
    except NameError:  # a name read before any assignment (on this path): both versions must agree on that
        return "NameError"


@settings(deadline=None, max_examples=200)
@given(programs(), st.lists(st.floats(-3.0, 3.0), min_size=8, max_size=8))
def test_random_programs_compute_the_same_values_bit_for_bit(source, buf):
    after = simplify(source)
    assert _run(after, buf) == _run(source, buf)
