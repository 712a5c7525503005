"""The oracle's hypothesis strategies draw what they promise: operands inside each primitive's
smooth domain, mutually broadcastable shapes, tie-free max/min operands, valid reduction axes."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from oracle.cases import NP
from oracle.strategies import DRAWN, domain_arrays, primitive_examples

INSIDE = {
    "real": lambda x: np.all(np.abs(x) <= 3.0),
    "positive": lambda x: np.all(x >= 0.2),
    "unit": lambda x: np.all(np.abs(x) <= 0.9),
    "above_one": lambda x: np.all(x >= 1.1),
    "nonzero": lambda x: np.all(np.abs(x) >= 0.2),
    "off_integers": lambda x: np.all((x - np.floor(x) >= 0.1 - 1e-12) & (x - np.floor(x) <= 0.9 + 1e-12)),
    "off_half_integers": lambda x: np.all(np.abs(x - np.round(x)) <= 0.4),
    "distinct": lambda x: len(np.unique(x)) == x.size,
    "off_multiples": lambda x: np.all(np.abs(x - np.floor(x) - 0.25) <= 0.03 + 1e-12),
    "divisors": lambda x: np.all(np.isin(np.abs(x), [1.0, 2.0, 3.0])),
}


@given(st.sampled_from(sorted(INSIDE)).flatmap(lambda d: st.tuples(st.just(d), domain_arrays(d, (3, 2)))))
def test_domain_arrays_stay_inside(drawn):
    domain, x = drawn
    assert x.dtype == np.float64 and x.shape == (3, 2)
    assert INSIDE[domain](x), (domain, x)


@given(st.data())
def test_primitive_examples_are_well_formed(data):
    prim = data.draw(st.sampled_from(DRAWN))
    example = data.draw(primitive_examples(prim))
    args = example.args
    assert example.case.name.split("-")[0] == prim.name
    assert [a.shape for a in args] == list(example.case.shapes)
    if prim.kind in ("binary", "comparison"):
        np.broadcast_shapes(*(a.shape for a in args))  # raises if not broadcastable
    if prim.kind == "binary" and "ties" in prim.edges:  # maximum, minimum: operands kept apart
        x, y = np.broadcast_arrays(*args)
        assert np.all(np.abs(x - y) >= 0.5)
    for domain, a in zip(example.case.domains, args):
        if domain in INSIDE:
            assert INSIDE[domain](a), (prim.name, domain, a)
    with np.errstate(all="raise", under="ignore"):  # smooth domains: finite values, no warnings (a tiny
        # draw such as 5e-291 may underflow to 0 when squared: that is still smooth)
        out = np.asarray(example.case.fn(NP, *args))
    assert np.all(np.isfinite(out))
