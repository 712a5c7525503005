"""The primitive declarations and what is derived from them: checks on the formulas, the
generated elementwise code, the SciPy functions, and the kernel cache and its command line."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import subprocess
import sys
import types

import numpy as np
import pytest
import scipy.special

import fasttape as ft
import fasttape.numpy as fnp
from fasttape import __main__, cache, codegen, faults, primitives, readme, scalar_math, warm
from fasttape import kernels as K
from oracle.cases import PRIMITIVE_CASES, sample

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- the declarations ------------------------------------------------------------
def _declaration(**fields):
    base = dict(name="twice", kind="unary", domains=("real",), value="2.0 * x", d1=("2.0",), d2=("0.0",))
    return primitives.Primitive(**{**base, **fields})


def test_a_well_formed_declaration_passes_and_records_what_its_partials_read():
    checked = primitives._checked(_declaration(d1=("2.0 * z / x",)), 99)
    assert checked.opcode == 99
    assert checked.reads == {"x", "z"}


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(value="2.0 * q"), r"names \['q'\]"),
        (dict(d1=("frobnicate(x)",)), r"names \['frobnicate'\]"),
        (dict(d2=("d1 * dx",)), r"names \['dx'\]"),  # dx is a binary second derivative's variable
        (dict(d1=("2.0", "1.0")), "needs 1 formula"),
        (dict(value="2.0 *"), "not a Python expression"),
        (dict(kind="ternary"), "unknown kind"),
        (dict(domains=("everywhere",)), "domains"),
        (dict(edges=("cliffs",)), r"edges \('cliffs',\) must be among"),
        (dict(edges=("ties",)), "states its convention"),  # a tie needs its convention in words
        (dict(edges=("huge",), convention="none"), "states its convention"),  # and only a tie or a kink
    ],
)
def test_a_malformed_declaration_is_rejected_naming_the_primitive(fields, message):
    with pytest.raises(ValueError, match=message) as info:
        primitives._checked(_declaration(**fields), 0)
    assert "'twice'" in str(info.value)


def test_every_declared_edge_has_a_sampler_and_an_oracle_case():
    """Each edge a declaration names is drawn (in range, hitting what it promises) and checked by a case."""
    rng = np.random.default_rng(0)
    drawn = {edge: sample(edge, (200,), rng) for edge in primitives.EDGES}
    assert len(np.unique(drawn["ties"])) < 10
    assert np.sum(drawn["zeros"] == 0.0) > 20 and np.any(np.signbit(drawn["zeros"][drawn["zeros"] == 0.0]))
    with np.errstate(over="ignore"):
        assert np.all(np.abs(drawn["huge"]) >= 1e295) and np.isinf(np.exp(drawn["huge"])).any()
    assert np.all((np.abs(drawn["tiny"]) <= 1e-295) & (drawn["tiny"] != 0.0))
    names = {c.name for c in PRIMITIVE_CASES}
    expected = {f"{p.name}-edge-{edge}" for p in ft.PRIMITIVES for edge in p.edges}
    assert expected <= names and len(expected) >= 10
    assert {edge for p in ft.PRIMITIVES for edge in p.edges} == set(primitives.EDGES)
    assert not any(c.smooth for c in PRIMITIVE_CASES if c.name in expected)  # JAX alone: no differences at kinks


def test_opcodes_follow_the_table_and_groups_are_derived():
    assert [p.opcode for p in ft.PRIMITIVES] == list(range(len(ft.PRIMITIVES)))
    assert K.N_OPCODES == len(ft.PRIMITIVES)
    for p in ft.PRIMITIVES:
        assert getattr(K, f"OP_{p.name.upper()}") == p.opcode
        assert bool(K.VECTOR_UNARY[p.opcode] or K.VECTOR_BINARY[p.opcode]) == bool(p.vector)


def test_the_generated_source_has_a_branch_for_every_elementwise_primitive():
    source = codegen.elementwise_source()
    for p in ft.PRIMITIVES:
        count = source.count(f"if op == {p.opcode}:  # {p.name}\n")
        if p.kind == "unary":
            assert count == 3 + 2 * p.hot, p.name  # value, partial, second (+ the two run loops)
        elif p.elementwise:
            assert count == 3, p.name
        else:
            assert count == 0, p.name


def test_an_opcode_outside_the_elementwise_groups_raises():
    unary_value = codegen.ELEMENTWISE.unary_value
    assert unary_value(K.OP_TANH, 0.5) == np.tanh(0.5)
    with pytest.raises(ValueError, match="not an elementwise opcode"):
        unary_value(K.OP_MATMUL, 0.5)


def test_the_readme_lists_every_primitive():
    """The elementwise list is generated (and current); the structural lines, prose, name the others."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    assert readme.updated(text) == text, "the README's primitive list is out of date: run `python -m fasttape readme`"
    assert f"one table of {len(ft.PRIMITIVES)} primitives" in readme.primitive_list()
    section = text[text.index(readme.END) : text.index("Non-smooth points")]
    structural = [p.name for p in ft.PRIMITIVES if p.kind not in readme.LISTED_KINDS]
    missing = [name for name in structural if not re.search(rf"\b{name}\b", section)]
    assert not missing, f"README's primitive list lacks {missing}"


def test_the_readme_list_is_regenerated_from_a_new_declaration(monkeypatch, tmp_path):
    """A declaration the README does not list yet is added by the command, and only the block changes."""
    old = f"intro\n\n{readme.BEGIN}\nstale\n{readme.END}\n* **reductions** ...\n"
    path = tmp_path / "README.md"
    path.write_text(old, encoding="utf-8")
    extra = dataclasses.replace(ft.PRIMITIVES[0], name="brand_new_unary")
    monkeypatch.setattr(readme, "PRIMITIVES", (*ft.PRIMITIVES, extra))
    assert __main__.main(["readme", str(path)]) == 0
    new = path.read_text(encoding="utf-8")
    assert new.startswith(f"intro\n\n{readme.BEGIN}\n") and new.endswith(f"{readme.END}\n* **reductions** ...\n")
    assert "brand_new_unary" in new and "stale" not in new
    assert f"one table of {len(ft.PRIMITIVES) + 1} primitives" in new
    assert readme.rewrite(str(path)) is False  # already current
    path.write_text("no markers", encoding="utf-8")
    with pytest.raises(ValueError, match="needs exactly one"):
        readme.rewrite(str(path))


# -- the SciPy functions ---------------------------------------------------------
@pytest.mark.parametrize(
    "ours, order",
    [(scalar_math.digamma, 0), (scalar_math.trigamma, 1), (scalar_math.tetragamma, 2)],
    ids=["digamma", "trigamma", "tetragamma"],
)
def test_polygamma_functions_match_scipy(ours, order):
    positive = np.geomspace(1e-4, 1e4, 97)
    negative = -np.linspace(0.05, 6.95, 70)
    negative = negative[np.abs(negative - np.round(negative)) > 0.04]
    for xs, rtol in ((positive, 1e-13), (negative, 1e-11)):  # absolute 1e-15 near the root of ψ (1.4616)
        got = np.array([ours(x) for x in xs])
        expected = scipy.special.polygamma(order, xs)
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=1e-15)
    # at the poles: NaN, but ψ₁ tends to +inf from both sides; at -inf (the poles pile up) NaN; at +inf the limit
    at_poles = np.array([ours(0.0), ours(-3.0)])
    assert np.all(at_poles == np.inf) if order == 1 else np.all(np.isnan(at_poles))
    assert np.isnan(ours(np.nan)) and np.isnan(ours(-np.inf))
    assert ours(np.inf) == (np.inf if order == 0 else 0.0)


def test_scipy_ufuncs_on_tracers_record_their_primitives():
    def f(x, y):
        return np.sum(scipy.special.expit(x) * scipy.special.gammaln(y) + scipy.special.xlogy(x, y))

    tape = ft.trace(f, np.array([0.3, -1.0]), np.array([0.7, 2.5]), argnums=(0, 1))
    recorded = {ft.PRIMITIVES[op].name for op in tape.ins[:, K.C_OP]}
    assert {"expit", "gammaln", "xlogy"} <= recorded
    assert fnp.psi is not None and scipy.special.psi(0.7) == fnp.digamma(0.7)


def test_scipy_special_functions_without_a_rule_name_their_module():
    x = np.array([0.3, 0.6])
    with pytest.raises(ft.UnsupportedFunctionError, match=r"^scipy\.special\.erfinv is not supported"):
        ft.grad(lambda v: np.sum(scipy.special.erfinv(v)))(x)


def test_scipy_logsumexp_softmax_and_log_softmax_record_and_an_early_import_names_the_fix():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    x = np.array([[0.3, 0.6, -1.2], [2.0, -0.5, 0.1]])
    weights = np.array([0.5, 0.0, 2.0])

    def f(x, sp=scipy.special, lse=None):
        lse = lse or sp.logsumexp
        return (np.sum(lse(x, axis=1)) + np.sum(lse(x, b=weights, axis=1)) + np.sum(sp.softmax(x) ** 2)
                + np.sum(sp.log_softmax(x, axis=0)[0]))  # fmt: skip

    def jax_f(x):
        jnp, jsp = jax.numpy, jax.scipy.special
        return (jnp.sum(jsp.logsumexp(x, axis=1)) + jnp.sum(jsp.logsumexp(x, b=weights, axis=1))
                + jnp.sum(jax.nn.softmax(x, axis=None) ** 2) + jnp.sum(jax.nn.log_softmax(x, axis=0)[0]))  # fmt: skip

    value, grad = ft.value_and_grad(f)(x)
    assert value == pytest.approx(f(x), rel=1e-13)  # SciPy's own outside the trace
    np.testing.assert_allclose(grad, jax.grad(jax_f)(x), rtol=1e-12)
    early = scipy.special.logsumexp  # as `from scipy.special import logsumexp` before the trace
    with pytest.raises(
        ft.UnsupportedFunctionError, match=r"from scipy\.special import logsumexp.*fasttape\.scipy_special\.logsumexp"
    ):
        ft.grad(lambda v: early(v))(x)
    with pytest.raises(ft.UnsupportedFunctionError, match=r"return_sign=True.*split"):
        ft.grad(lambda v: scipy.special.logsumexp(v, b=weights, return_sign=True)[0])(x)
    assert scipy.special.logsumexp is early  # SciPy's again after the trace


def test_np_asarray_on_a_tracer_still_says_what_to_do():
    with pytest.raises(ft.ConcretizationError, match="np.asarray"):
        ft.grad(lambda v: np.sum(np.asarray(v)))(np.ones(2))


# -- the kernel cache ------------------------------------------------------------
def test_the_cache_key_covers_the_generated_code(monkeypatch):
    key = cache.source_key()
    assert key == cache.KEY
    monkeypatch.setattr(codegen, "SOURCE", codegen.SOURCE + "\n# an edited declaration\n")
    assert cache.source_key() != key


def test_the_cache_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTTAPE_CACHE_DIR", str(tmp_path / "kernels"))
    assert cache.cache_root() == str(tmp_path / "kernels")
    monkeypatch.delenv("FASTTAPE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.cache_root() == str(tmp_path / "fasttape")


def test_a_new_key_prunes_other_keys_unused_for_a_month(tmp_path):
    old, recent, other = tmp_path / "kernels-0.0.9-aaaa", tmp_path / "kernels-0.1.0-bbbb", tmp_path / "notes"
    for d in (old, recent, other):
        d.mkdir()
        (d / "x.nbi").write_text("")
    month_ago = os.path.getmtime(recent) - cache.STALE_SECONDS - 60
    os.utime(old, (month_ago, month_ago))
    os.utime(other, (month_ago, month_ago))
    assert cache._writable(str(tmp_path / "kernels-0.1.0-cccc"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kernels-0.1.0-bbbb", "kernels-0.1.0-cccc", "notes"]


def test_kernels_are_cached_in_the_keyed_directory_when_the_environment_allows():
    wanted = os.environ.get("FASTTAPE_NO_CACHE", "").strip().lower() in ("", "0", "false", "no")
    assert cache.ENABLED == (wanted and not faults.INSTRUMENTED and cache._writable(cache.DIRECTORY))
    if cache.ENABLED:  # compiled by the session's warm-up: here, not beside the source
        assert os.path.basename(cache.DIRECTORY).endswith(cache.KEY[:16])
        assert cache.is_built()
        assert K.run_value_and_grad._cache._cache_path == cache.DIRECTORY
    else:
        # compiled in memory (Numba's null cache), or not compiled at all (NUMBA_DISABLE_JIT)
        assert type(getattr(K.run_value_and_grad, "_cache", None)).__name__ in ("NullCache", "NoneType")


def _python(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env},
                          cwd=ROOT, timeout=600)  # fmt: skip


def test_an_unwritable_cache_directory_turns_caching_off_without_failing(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = _python("import fasttape.cache as c; print(c.ENABLED)", FASTTAPE_CACHE_DIR=str(blocker / "below"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_the_first_compilation_says_so_once(caplog):
    """The listener on Numba's compile events logs one line for the first fasttape kernel, none for others."""
    from numba.core import event

    assert cache.NOTICE in event._registered["numba:compile"]

    def compiling(module, args=()):
        function = types.SimpleNamespace(__module__=module)
        return types.SimpleNamespace(data={"dispatcher": types.SimpleNamespace(py_func=function), "args": args})

    saved = type(cache.NOTICE).announced
    type(cache.NOTICE).announced = False
    try:
        with caplog.at_level(logging.WARNING, logger="fasttape"):
            cache.NOTICE.on_start(compiling("someone.else"))
            # an object-mode block lifted at its first run (cached kernels loading) is no compilation
            cache.NOTICE.on_start(compiling("fasttape.runs", ("ffi_forced_object",) * 3))
            assert not caplog.records
            cache.NOTICE.on_start(compiling("fasttape.kernels"))
            cache.NOTICE.on_start(compiling("fasttape.kernels"))
    finally:
        type(cache.NOTICE).announced = saved
    notices = [r for r in caplog.records if "compiling kernels for first use" in r.getMessage()]
    assert len(notices) == 1
    assert "python -m fasttape warm" in notices[0].getMessage()


def test_the_command_line_reports_and_warms_the_cache():
    result = subprocess.run([sys.executable, "-m", "fasttape", "cache"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert f"directory: {cache.DIRECTORY}" in result.stdout
    result = subprocess.run([sys.executable, "-m", "fasttape", "warm"], capture_output=True, text=True, cwd=ROOT,
                            timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stderr
    steps = len(warm._steps())
    assert f"{steps}/{steps} done" in result.stderr
