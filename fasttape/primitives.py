"""The primitive declarations: every primitive of the tape, declared once.

A declaration holds a primitive's name, its kind, the NumPy / SciPy names that lower
onto it, its JAX reference (for the oracle), the domain of each operand on which it is
smooth, its facts, and -- for the elementwise kinds -- its math: the value and the first
and second partial derivatives, written as expressions.  Everything else is derived
from this table: opcodes (table order), opcode groups (``UNARY``, ``BINARY``, ...), the
compiled elementwise switches (``codegen``), the NumPy/SciPy dispatch tables
(``fasttape.numpy``), the oracle's tables and samplers, saved-file validation, fusion's
and opcount's sets.

The formulas' variables: ``x`` (and ``y``) the operands, ``z`` the primitive's own
value; in a unary second derivative ``d1`` the first, in a binary one ``dx``, ``dy``
the first partials.  The functions they may call are ``scalar_math.VOCABULARY``.

To add an elementwise primitive, add one entry below: its tests pick it up, and
``python -m fasttape readme`` adds it to the README's list.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from .scalar_math import VOCABULARY

ELEMENTWISE_KINDS = ("unary", "binary", "comparison")
KINDS = ("unary", "binary", "comparison", "select", "reduction", "scan", "broadcast", "gather", "matmul", "solve",
         "slogdet", "cholesky", "trisolve", "eigh", "svd", "qr", "lu", "permute", "take", "scatter", "argsort",
         "argreduce", "searchsorted")  # fmt: skip
ARITY = {"binary": 2, "comparison": 2, "select": 3, "matmul": 2, "solve": 2, "trisolve": 2, "permute": 2, "take": 2,
         "scatter": 3, "searchsorted": 2}  # fmt: skip
DOMAINS = ("real", "positive", "unit", "above_one", "nonzero", "distinct", "off_integers", "off_half_integers",
           "probability", "invertible", "positive_definite", "separated_spectrum", "separated_singular", "index",
           "off_multiples", "divisors", "sorted")  # fmt: skip
# where a rule meets a convention or a numerical hazard, the oracle also draws inputs there (``edges``):
# exact ties, exact zeros, magnitudes near 1e300 and near 1e-300
EDGES = ("ties", "zeros", "huge", "tiny")


@dataclass(frozen=True)
class Primitive:
    """One declaration (see the module docstring).

    ``numpy`` / ``scipy``: the names in ``numpy`` / ``scipy.special`` that lower onto the
    primitive; ``jax``: its reference as an expression over ``jnp``, ``jsp``
    (``jax.scipy.special``) and ``ref`` (the oracle's own rules); ``domains``: per operand,
    where the primitive is smooth; ``differentiable``: False where the derivative is zero
    everywhere it exists; ``linear`` / ``piecewise_linear``: facts for second order and
    opcount; ``vector``: the NumPy function whose SIMD loop computes the value of long runs;
    ``bilinear``: linear in each operand on its own (only the mixed second partial is nonzero);
    ``hot``: gets loops of its own (the opcode a constant, so LLVM can vectorise them);
    ``edges``: the ``EDGES`` where the oracle checks it against JAX too (a tie or a kink, where
    the derivative is a convention both follow, or magnitudes where it must stay finite);
    ``convention``: that convention in words, for a primitive with a tie or a kink among its edges;
    ``static``: the operands that are integer constants of the trace (an order): never traced, never
    differentiated (the oracle holds them fixed).
    """

    name: str
    kind: str
    numpy: tuple[str, ...] = ()
    scipy: tuple[str, ...] = ()
    jax: str = ""
    domains: tuple[str, ...] = ()
    differentiable: bool = True
    linear: bool = False
    piecewise_linear: bool = False
    bilinear: bool = False
    value: str = ""
    d1: tuple[str, ...] = ()
    d2: tuple[str, ...] = ()
    vector: str = ""
    hot: bool = False
    opcode: int = -1
    reads: frozenset = field(default_factory=frozenset)
    edges: tuple[str, ...] = ()
    convention: str = ""
    static: tuple[int, ...] = ()

    @property
    def arity(self) -> int:
        return ARITY.get(self.kind, 1)

    @property
    def domain(self) -> str:
        return self.domains[0] if self.domains else "real"

    @property
    def curvature(self) -> tuple[bool, bool, bool]:
        """Which second partials (xx, xy, yy) may be nonzero; a one-operand primitive's is xx."""
        if self.elementwise:
            pairs = (self.d2[0], "0.0", "0.0") if self.arity == 1 else self.d2
            return tuple(expr != "0.0" for expr in pairs)
        if self.linear or self.piecewise_linear or not self.differentiable:
            return (False, False, False)
        if self.bilinear:
            return (False, True, False)
        return (True, self.arity > 1, self.arity > 1)

    @property
    def elementwise(self) -> bool:
        return self.kind in ELEMENTWISE_KINDS

    @property
    def call_name(self) -> str:
        """The name a user calls it by (``numpy.<name>`` or ``scipy.special.<name>``), '' if none."""
        return (self.numpy or self.scipy or ("",))[0]


_TABLE: list[Primitive] = []


def _declare(name, kind, *, numpy=None, scipy=(), jax=None, domains=None, value="", d1=(), d2=(), **facts):
    arity = ARITY.get(kind, 1)
    if isinstance(d1, str):
        d1 = (d1,)
    if isinstance(d2, str):
        d2 = (d2,)
    if isinstance(domains, str):
        domains = (domains,) * arity
    _TABLE.append(
        Primitive(
            name,
            kind,
            numpy=tuple((name,) if numpy is None else numpy),
            scipy=tuple(scipy),
            jax=f"jnp.{name}" if jax is None else jax,
            domains=tuple(domains or ("real",) * arity),
            value=value,
            d1=tuple(d1),
            d2=tuple(d2),
            **facts,
        )
    )


def unary(name, value, d1="0.0", d2="0.0", **kw):
    _declare(name, "unary", value=value, d1=d1, d2=d2, **kw)


def binary(name, value, d1=("0.0", "0.0"), d2=("0.0", "0.0", "0.0"), **kw):
    _declare(name, "binary", value=value, d1=d1, d2=d2, **kw)


def comparison(name, value):
    # the value is 1.0 or 0.0; no derivative anywhere it exists
    _declare(name, "comparison", value=f"where({value}, 1.0, 0.0)", d1=("0.0", "0.0"), d2=("0.0", "0.0", "0.0"),
             jax=f"ref.comparison(jnp.{name})", differentiable=False)  # fmt: skip


# --------------------------------------------------------------------------
# elementwise unary: value in x; d1 in x, z; d2 in x, z, d1
# --------------------------------------------------------------------------
unary("negative", "-x", d1="-1.0", linear=True, hot=True)
unary("abs", "abs(x)", d1="where(x >= 0.0, 1.0, -1.0)",
      numpy=("abs", "absolute", "fabs"), domains="nonzero", piecewise_linear=True, vector="abs", hot=True,
      edges=("zeros",), convention="abs'(0) = 1, at -0.0 too")  # fmt: skip
unary("sign", "sign(x)", domains="nonzero", differentiable=False)
unary("sqrt", "sqrt(x)", d1="0.5 / z", d2="-0.25 / (x * z)",  # d sqrt = 1/(2 sqrt);  d² = -1/(4 x^(3/2))
      domains="positive", vector="sqrt", hot=True)  # fmt: skip
unary("cbrt", "cbrt(x)", d1="1.0 / (3.0 * z * z)", d2="-2.0 / (9.0 * z**5)",  # d cbrt = 1/(3 cbrt²)
      domains="nonzero", vector="cbrt")  # fmt: skip
unary("square", "x * x", d1="2.0 * x", d2="2.0", hot=True)
unary("reciprocal", "1.0 / x", d1="-z * z", d2="2.0 * z * z * z",  # d 1/x = -1/x²;  d² = 2/x³
      jax="ref.reciprocal", domains="nonzero", vector="reciprocal", hot=True)  # fmt: skip
unary("exp", "exp(x)", d1="z", d2="z", vector="exp", hot=True)
unary("exp2", "exp2(x)", d1="z * LN2", d2="z * LN2 * LN2", vector="exp2")
unary("expm1", "expm1(x)", d1="z + 1.0", d2="z + 1.0", vector="expm1", hot=True, edges=("tiny",))
unary("log", "log(x)", d1="1.0 / x", d2="-d1 * d1", domains="positive", vector="log", hot=True)
unary("log2", "log2(x)", d1="1.0 / (x * LN2)", d2="-d1 * d1 * LN2", domains="positive", vector="log2")
unary("log10", "log10(x)", d1="1.0 / (x * LN10)", d2="-d1 * d1 * LN10", domains="positive", vector="log10")
unary("log1p", "log1p(x)", d1="1.0 / (1.0 + x)", d2="-d1 * d1", domains="positive", vector="log1p", hot=True,
      edges=("tiny",))  # fmt: skip
unary("sin", "sin(x)", d1="cos(x)", d2="-z")
unary("cos", "cos(x)", d1="-sin(x)", d2="-z")
unary("tan", "tan(x)", d1="1.0 + z * z", d2="2.0 * z * (1.0 + z * z)",  # d tan = 1 + tan²
      domains="unit", vector="tan")  # fmt: skip
unary("arcsin", "arcsin(x)", d1="1.0 / sqrt((1.0 - x) * (1.0 + x))", d2="x * d1 * d1 * d1",  # x / (1-x²)^(3/2)
      domains="unit", vector="arcsin")  # fmt: skip
unary("arccos", "arccos(x)", d1="-1.0 / sqrt((1.0 - x) * (1.0 + x))", d2="x * d1 * d1 * d1",
      domains="unit", vector="arccos")  # fmt: skip
unary("arctan", "arctan(x)", d1="1.0 / (1.0 + x * x)", d2="-2.0 * x * d1 * d1", vector="arctan")
unary("sinh", "sinh(x)", d1="cosh(x)", d2="z", vector="sinh")
unary("cosh", "cosh(x)", d1="sinh(x)", d2="z", vector="cosh")
unary("tanh", "tanh(x)", d1="1.0 - z * z", d2="-2.0 * z * (1.0 - z * z)",  # d tanh = 1 - tanh²
      vector="tanh", hot=True)  # fmt: skip
unary("arcsinh", "arcsinh(x)", d1="1.0 / sqrt(x * x + 1.0)", d2="-x * d1 * d1 * d1", vector="arcsinh")
# JAX's rule, 1/sqrt(x² - 1), without its overflow: finite below -1 too (where arccosh itself is NaN)
unary("arccosh", "arccosh(x)", d1="1.0 / (sqrt(abs(x) - 1.0) * sqrt(abs(x) + 1.0))",
      d2="-x * d1 * d1 * d1", domains="above_one")  # fmt: skip
# d² = 2x d1² written as d1 (1/(1-x) - 1/(1+x)): 0 at ±inf, as JAX's (not inf x 0)
unary("arctanh", "arctanh(x)", d1="1.0 / ((1.0 - x) * (1.0 + x))", d2="d1 * (1.0 / (1.0 - x) - 1.0 / (1.0 + x))",
      domains="unit", vector="arctanh")  # fmt: skip
unary("erf", "erf(x)", d1="TWO_OVER_SQRT_PI * exp(-x * x)", d2="-2.0 * x * d1",  # d erf = 2/√π e^(-x²)
      numpy=(), scipy=("erf",), jax="jsp.erf")  # fmt: skip
# d erfc = -2/√π e^(-x²);  d erfcx = 2x erfcx - 2/√π (JAX's rule, as is its cancellation for large x)
unary("erfc", "erfc(x)", d1="-TWO_OVER_SQRT_PI * exp(-x * x)", d2="-2.0 * x * d1", numpy=(), scipy=("erfc",),
      jax="jsp.erfc")  # fmt: skip
unary("erfcx", "erfcx(x)", d1="2.0 * x * z - TWO_OVER_SQRT_PI", d2="2.0 * z + 2.0 * x * d1", numpy=(),
      scipy=("erfcx",), jax="jsp.erfcx")  # fmt: skip
# Φ(x) as Cephes and JAX compute it (1 + erf inside |x| < 1, erfc outside);  d Φ = φ = e^(-x²/2) / √(2π)
unary("ndtr", "0.5 * where(abs(x * SQRT_HALF) < SQRT_HALF, 1.0 + erf(x * SQRT_HALF), "
      "where(x > 0.0, 2.0 - erfc(abs(x * SQRT_HALF)), erfc(abs(x * SQRT_HALF))))",
      d1="INV_SQRT_TWO_PI * exp(-0.5 * x * x)", d2="-x * d1", numpy=(), scipy=("ndtr",), jax="jsp.ndtr")  # fmt: skip
# log Φ without underflow; d log Φ = φ / Φ, from erfcx in the lower tail (NaN at -inf, as JAX's);  d² = -d1 (x + d1)
unary("log_ndtr", "log_ndtr(x)",
      d1="where(x < -1.0, where(x == -inf, nan, 2.0 * INV_SQRT_TWO_PI / erfcx(-x * SQRT_HALF)), "
         "INV_SQRT_TWO_PI * exp(-0.5 * x * x - z))",
      d2="-d1 * (x + d1)", numpy=(), scipy=("log_ndtr",), jax="ref.log_ndtr()")  # fmt: skip
# Φ⁻¹;  d Φ⁻¹ = 1 / φ(z) = √(2π) e^(z²/2);  d² = z d1²
unary("ndtri", "ndtri(x)", d1="SQRT_TWO_PI * exp(0.5 * z * z)", d2="z * d1 * d1", numpy=(), scipy=("ndtri",),
      jax="jsp.ndtri", domains="probability")  # fmt: skip
# entr = -x log x (0 at 0, -inf below);  d = -(1 + log x), d² = -1/x, both 0 below 0 where entr is constant (JAX's
# forward mode; its reverse mode gives NaN there, reading log x through a select)
unary("entr", "where(x < 0.0, -inf, where(x == 0.0, 0.0, -x * log(x)))", d1="where(x < 0.0, 0.0, -1.0 - log(x))",
      d2="where(x < 0.0, 0.0, -1.0 / x)", numpy=(), scipy=("entr",), jax="ref.entr()", domains="positive")  # fmt: skip
unary("floor", "floor(x)", domains="off_integers", differentiable=False)
unary("ceil", "ceil(x)", domains="off_integers", differentiable=False)
unary("round", "rint(x)", numpy=("round", "rint"), domains="off_half_integers", differentiable=False)  # half to even
unary("expit", "1.0 / (1.0 + exp(-x))", d1="z * (1.0 - z)", d2="z * (1.0 - z) * (1.0 - 2.0 * z)",  # σ' = σ(1-σ)
      numpy=(), scipy=("expit",), jax="jsp.expit")  # fmt: skip
# d logit = 1/(x(1-x));  d² = (2x-1)/(x(1-x))²
unary("logit", "log(x) - log1p(-x)", d1="1.0 / (x * (1.0 - x))", d2="(2.0 * x - 1.0) * d1 * d1",
      numpy=(), scipy=("logit",), jax="jsp.logit", domains="probability")  # fmt: skip
unary("gammaln", "lgamma(x)", d1="digamma(x)", d2="trigamma(x)",  # d log Γ = ψ, d ψ = ψ₁
      numpy=(), scipy=("gammaln",), jax="ref.gammaln()", domains="positive")  # fmt: skip
unary("digamma", "digamma(x)", d1="trigamma(x)", d2="tetragamma(x)",
      numpy=(), scipy=("digamma", "psi"), jax="ref.digamma()", domains="positive")  # fmt: skip

# --------------------------------------------------------------------------
# elementwise binary: value in x, y; (dx, dy) in x, y, z; (dxx, dxy, dyy) in x, y, z, dx, dy
# --------------------------------------------------------------------------
binary("add", "x + y", d1=("1.0", "1.0"), linear=True, hot=True)
binary("subtract", "x - y", d1=("1.0", "-1.0"), linear=True, hot=True)
binary("multiply", "x * y", d1=("y", "x"), d2=("0.0", "1.0", "0.0"), hot=True)
binary("divide", "x / y", d1=("1.0 / y", "-x / (y * y)"), d2=("0.0", "-1.0 / (y * y)", "2.0 * x / (y * y * y)"),
       numpy=("divide", "true_divide"), domains=("real", "nonzero"))  # fmt: skip
# d x^y = (y x^(y-1), log(x) x^y); JAX takes log(1) where x == 0
binary("power", "x**y",
       d1=("y * x ** (y - 1.0)", "where(x > 0.0, log(x) * z, where(x == 0.0, 0.0, nan))"),
       d2=("y * (y - 1.0) * x ** (y - 2.0)",
           "where(x > 0.0, x ** (y - 1.0) * (1.0 + y * log(x)), where(x == 0.0, 0.0, nan))",
           "where(x > 0.0, log(x) * log(x) * z, where(x == 0.0, 0.0, nan))"),
       numpy=("power", "float_power"), domains=("positive", "real"), vector="power")  # fmt: skip
# JAX's balanced convention: a tie sends half the adjoint to each side.  Smooth wherever x != y: the
# samplers draw the operands apart (oracle/strategies.py puts them on interleaved grids)
binary("maximum", "maximum(x, y)", d1=("where(x == z, where(y == z, 0.5, 1.0), 0.0)",
                                       "where(y == z, where(x == z, 0.5, 1.0), 0.0)"),
       piecewise_linear=True, edges=("ties",), convention="at x == y each operand gets half")  # fmt: skip
binary("minimum", "minimum(x, y)", d1=("where(x == z, where(y == z, 0.5, 1.0), 0.0)",
                                       "where(y == z, where(x == z, 0.5, 1.0), 0.0)"),
       piecewise_linear=True, edges=("ties",), convention="at x == y each operand gets half")  # fmt: skip
# d atan2(x, y) = (y, -x) / (x² + y²)
binary("arctan2", "arctan2(x, y)", d1=("y / (x * x + y * y)", "-x / (x * x + y * y)"),
       d2=("-2.0 * x * y / ((x * x + y * y) * (x * x + y * y))",
           "(x * x - y * y) / ((x * x + y * y) * (x * x + y * y))",
           "2.0 * x * y / ((x * x + y * y) * (x * x + y * y))"),
       domains="nonzero", vector="arctan2")  # fmt: skip
# d hypot = (x, y) / hypot; (1/2, 1/2) at the origin, JAX's value there (max/min ties).  The second
# partials y²/z³, -xy/z³, x²/z³ written with the first ones, (y/z)²/z ...: z³ would overflow near 1e300
# and underflow near 1e-300 where the partials themselves are finite
binary("hypot", "hypot(x, y)", d1=("where(z == 0.0, 0.5, x / z)", "where(z == 0.0, 0.5, y / z)"),
       d2=("where(z == 0.0, nan, dy * dy / z)", "where(z == 0.0, nan, -dx * dy / z)",
           "where(z == 0.0, nan, dx * dx / z)"),
       jax="ref.smooth_hypot()", domains="nonzero", edges=("huge",))  # fmt: skip
# (not "tiny": near 1e-300 JAX's own second derivative of hypot overflows, so it cannot be the reference)
# d logaddexp = softmax of (x, y) = (σ(x - y), σ(y - x)): not exp(x - z), which gives 1 at x = y = 1e295
# (z rounds to x there; JAX's own rule does this).  Where z is infinite, JAX's rule and its reading of
# +inf as 0: exp(x - z).
binary("logaddexp", "logaddexp(x, y)",
       d1=("where(abs(z) < inf, 1.0 / (1.0 + exp(y - x)), exp(where(x == inf, 0.0, x) - where(z == inf, 0.0, z)))",
           "where(abs(z) < inf, 1.0 / (1.0 + exp(x - y)), exp(where(y == inf, 0.0, y) - where(z == inf, 0.0, z)))"),
       # where z = +inf, JAX's rule differentiated: exp(x - z) with +inf read as 0 has no cross term
       d2=("where(z == inf, where(x == inf, 0.0, dx), dx * dy)", "where(z == inf, 0.0, -dx * dy)",
           "where(z == inf, where(y == inf, 0.0, dy), dx * dy)"),
       jax="ref.accurate_logaddexp()", vector="logaddexp",
       edges=("huge",))  # fmt: skip
# NumPy's floored division (integer index arithmetic, wrap-around): remainder takes the divisor's sign.  JAX's
# derivatives: 1 and -floor(x / y) for the remainder -- written as JAX's rule, -trunc(x / y) from its
# truncated remainder plus 1 where it adds y, so inf and NaN give JAX's values too -- and none for the quotient.
# Both jump where x / y is an integer: smooth for divisors ±1, ±2, ±3 ("divisors") and dividends k + 1/4
# ("off_multiples")
binary("remainder", "floor_mod(x, y)",
       d1=("1.0", "where((fmod(x, y) != 0.0) & ((fmod(x, y) < 0.0) != (y < 0.0)), 1.0, 0.0) "
                  "- sign(x / y) * floor(abs(x / y))"), numpy=("remainder", "mod"),
       domains=("off_multiples", "divisors"), piecewise_linear=True)  # fmt: skip
binary("floor_divide", "floor_quotient(x, y)", domains=("off_multiples", "divisors"), differentiable=False)
# log B(x, y) = log Γ(x) + log Γ(y) - log Γ(x + y);  d = ψ(x) - ψ(x + y), ψ(y) - ψ(x + y)
binary("betaln", "lgamma(x) + lgamma(y) - lgamma(x + y)",
       d1=("digamma(x) - digamma(x + y)", "digamma(y) - digamma(x + y)"),
       d2=("trigamma(x) - trigamma(x + y)", "-trigamma(x + y)", "trigamma(y) - trigamma(x + y)"),
       numpy=(), scipy=("betaln",), jax="ref.betaln", domains="positive")  # fmt: skip
# xlog1py(x, y) = x log(1 + y), 0 where x == 0 (NaN y propagates);  d = (log1p y, x / (1 + y))
binary("xlog1py", "where((x == 0.0) & (y == y), 0.0, x * log1p(y))", d1=("log1p(y)", "x / (1.0 + y)"),
       d2=("0.0", "1.0 / (1.0 + y)", "-x / ((1.0 + y) * (1.0 + y))"), numpy=(), scipy=("xlog1py",), jax="jsp.xlog1py",
       domains=("real", "positive"))  # fmt: skip
# rel_entr(x, y) = x log(x / y) for x, y > 0 (SciPy's formula), 0 at x = 0 <= y, inf elsewhere (NaN too, as JAX);
# d = (log(x / y) + 1, -x / y) where both are positive, 0 elsewhere (JAX's selects)
binary("rel_entr", "where((x > 0.0) & (y > 0.0), x * log(x / y), where((x == 0.0) & (y >= 0.0), 0.0, inf))",
       d1=("where((x > 0.0) & (y > 0.0), log(x / y) + 1.0, 0.0)", "where((x > 0.0) & (y > 0.0), -x / y, 0.0)"),
       d2=("where((x > 0.0) & (y > 0.0), 1.0 / x, 0.0)", "where((x > 0.0) & (y > 0.0), -1.0 / y, 0.0)",
           "where((x > 0.0) & (y > 0.0), x / (y * y), 0.0)"),
       numpy=(), scipy=("rel_entr",), jax="jsp.rel_entr", domains="positive")  # fmt: skip
# ψ⁽ⁿ⁾(y) for a constant integer order x = n;  d = ψ⁽ⁿ⁺¹⁾, d² = ψ⁽ⁿ⁺²⁾
binary("polygamma", "polygamma(x, y)", d1=("0.0", "polygamma(x + 1.0, y)"),
       d2=("0.0", "0.0", "polygamma(x + 2.0, y)"), numpy=(), scipy=("polygamma",), jax="ref.polygamma",
       domains=("real", "positive"), static=(0,))  # fmt: skip
comparison("less", "x < y")
comparison("less_equal", "x <= y")
comparison("greater", "x > y")
comparison("greater_equal", "x >= y")
comparison("equal", "x == y")
comparison("not_equal", "x != y")
# xlogy(x, y) = x log y, 0 where x == 0; JAX's rule: (log y, x / y)
binary("xlogy", "where((x == 0.0) & (y == y), 0.0, x * log(y))", d1=("log(y)", "x / y"),
       d2=("0.0", "1.0 / y", "-x / (y * y)"), numpy=(), scipy=("xlogy",), jax="jsp.xlogy",
       domains=("real", "positive"))  # fmt: skip

# --------------------------------------------------------------------------
# structural primitives: their rules live in their family's module (fasttape/families)
# --------------------------------------------------------------------------
_declare("where", "select", jax="ref.where", linear=True)
_declare("sum", "reduction", jax="ref.reduce(jnp.sum)", linear=True)
_declare("prod", "reduction", jax="ref.prod()", domains=("nonzero",), edges=("zeros",),
         convention="no kink: each factor's partial is the product of the others, exact with one zero "
                    "or more")  # fmt: skip
_declare("max", "reduction", numpy=("max", "amax"), jax="ref.reduce(jnp.max)", domains=("distinct",),
         piecewise_linear=True, edges=("ties",), convention="k tied maxima get 1/k each")  # fmt: skip
_declare("min", "reduction", numpy=("min", "amin"), jax="ref.reduce(jnp.min)", domains=("distinct",),
         piecewise_linear=True, edges=("ties",), convention="k tied minima get 1/k each")  # fmt: skip
_declare("logsumexp", "reduction", numpy=(), jax="ref.reduce(jsp.logsumexp)", edges=("huge",))
_declare("cumsum", "scan", jax="ref.cumsum", linear=True)
_declare("broadcast", "broadcast", numpy=("broadcast_to",), jax="ref.broadcast", linear=True)
_declare("gather", "gather", numpy=(), jax="ref.gather", linear=True)
_declare("matmul", "matmul", jax="ref.matmul", bilinear=True)
# linear algebra (numpy.linalg: solve, inv, slogdet, det): "invertible" matrices are well-conditioned ones
_declare("solve", "solve", numpy=(), jax="ref.solve", domains=("invertible", "real"))
_declare("slogdet", "slogdet", numpy=(), jax="ref.slogdet", domains=("invertible",))
# factorisations (numpy.linalg.cholesky, scipy.linalg's triangular and Cholesky solves): cholesky reads the
# lower triangle of a symmetric positive-definite matrix, trisolve one triangle of a well-conditioned one
_declare("cholesky", "cholesky", numpy=(), jax="ref.cholesky", domains=("positive_definite",))
_declare("trisolve", "trisolve", numpy=(), jax="ref.trisolve", domains=("invertible", "real"))
# eigenvalues (ascending) and eigenvectors of the symmetric matrix held in the lower triangle: differentiable
# where the eigenvalues are distinct ("separated_spectrum": symmetric matrices with eigenvalues apart)
_declare("eigh", "eigh", numpy=(), jax="ref.eigh", domains=("separated_spectrum",))
# singular values (descending) and vectors, and the QR decomposition, both thin, of A (n, m): differentiable
# where the singular values are distinct and nonzero ("separated_singular": any shape, singular values apart)
_declare("svd", "svd", numpy=(), jax="ref.svd", domains=("separated_singular",))
_declare("qr", "qr", numpy=(), jax="ref.qr", domains=("separated_singular",))
# LU factors with partial pivoting (scipy.linalg.lu_factor, lu), and their row interchanges applied to the rows
# of a matrix during the sweep (lu_solve, lu's P): the pivots are data of the sweep, not of the trace
_declare("lu", "lu", numpy=(), jax="ref.lu", domains=("invertible",))
_declare("permute", "permute", numpy=(), jax="ref.permute", domains=("real", "real"), linear=True)
# dynamic indexing: the indices (operand B) are integers computed in the sweep, "index" their domain: in range for
# the axis they index.  take: A[..., B, ...] along one axis (np.take, take_along_axis); scatter: A with C added or
# written at the flat positions B (np.add.at, x[idx] = v)
_declare("take", "take", numpy=(), jax="ref.take", domains=("real", "index"), linear=True)
_declare("scatter", "scatter", numpy=(), jax="ref.scatter", domains=("real", "index", "real"), linear=True)
# sorting and selection: integer results with no derivative (sort is a take along argsort's order)
_declare("argsort", "argsort", numpy=(), jax="ref.argsort", domains=("distinct",), differentiable=False)
_declare("argmax", "argreduce", numpy=(), jax="ref.argreduce(jnp.argmax)", domains=("distinct",),
         differentiable=False)  # fmt: skip
_declare("argmin", "argreduce", numpy=(), jax="ref.argreduce(jnp.argmin)", domains=("distinct",),
         differentiable=False)  # fmt: skip
_declare("searchsorted", "searchsorted", numpy=(), jax="ref.searchsorted", domains=("sorted", "real"),
         differentiable=False)  # fmt: skip


# --------------------------------------------------------------------------
# checks and derived tables
# --------------------------------------------------------------------------
_VARIABLES = {"unary": ({"x"}, {"x", "z"}, {"x", "z", "d1"}), "binary": ({"x", "y"}, {"x", "y", "z"},
              {"x", "y", "z", "dx", "dy"})}  # fmt: skip
_VARIABLES["comparison"] = _VARIABLES["binary"]


def names(expr: str, where: str = "a formula") -> set:
    """The names (variables and functions) a formula uses."""
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as e:
        raise ValueError(f"{where}: {expr!r} is not a Python expression ({e.msg})") from None
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def _checked(p: Primitive, opcode: int) -> Primitive:
    where = f"primitive {p.name!r}"
    if p.kind not in KINDS:
        raise ValueError(f"{where}: unknown kind {p.kind!r}; the kinds are {KINDS}")
    if len(p.domains) != p.arity or any(d not in DOMAINS for d in p.domains):
        raise ValueError(f"{where}: domains {p.domains} must name one of {DOMAINS} per operand ({p.arity})")
    if any(e not in EDGES for e in p.edges):
        raise ValueError(f"{where}: edges {p.edges} must be among {EDGES}")
    if any(not 0 <= k < p.arity for k in p.static):
        raise ValueError(f"{where}: static operands {p.static} must be among its {p.arity} operands")
    if bool(set(p.edges) & {"ties", "zeros"}) != bool(p.convention):
        raise ValueError(f"{where}: a primitive with ties or zeros among its edges states its convention there "
                         "(convention=...), and only such a primitive")  # fmt: skip
    reads = set()
    if p.elementwise:
        counts = (1, p.arity, 1 if p.arity == 1 else 3)
        formulas = ((p.value,), p.d1, p.d2)
        for order, (exprs, count, variables) in enumerate(zip(formulas, counts, _VARIABLES[p.kind])):
            if len(exprs) != count or not all(exprs):
                raise ValueError(f"{where}: derivative order {order} needs {count} formula(s), got {exprs}")
            for expr in exprs:
                used = names(expr, where)
                unknown = used - variables - set(VOCABULARY)
                if unknown:
                    raise ValueError(f"{where}: {expr!r} names {sorted(unknown)}, which is neither a variable "
                                     f"({sorted(variables)}) nor in scalar_math.VOCABULARY")  # fmt: skip
                if order == 1:
                    reads |= used & variables
    return Primitive(**{**p.__dict__, "opcode": opcode, "reads": frozenset(reads)})


PRIMITIVES: tuple[Primitive, ...] = tuple(_checked(p, i) for i, p in enumerate(_TABLE))
PRIMITIVE_BY_NAME: dict[str, Primitive] = {p.name: p for p in PRIMITIVES}
PRIMITIVE_BY_OPCODE: dict[int, Primitive] = {p.opcode: p for p in PRIMITIVES}
if len(PRIMITIVE_BY_NAME) != len(PRIMITIVES):
    raise ValueError("two primitives share a name")
N_OPCODES = len(PRIMITIVES)


def opcodes(predicate) -> tuple[int, ...]:
    """The opcodes of the primitives for which ``predicate(primitive)`` holds."""
    return tuple(p.opcode for p in PRIMITIVES if predicate(p))


def opcode(name: str) -> int:
    return PRIMITIVE_BY_NAME[name].opcode
