"""The evals' inputs read from JSON: each check names the field and what it should be."""

import numpy as np


def field(data, name: str):
    if not isinstance(data, dict):
        raise ValueError(f"the input is a JSON object with field {name!r}, got {type(data).__name__}")
    if name not in data:
        raise ValueError(f"the input has no field {name!r} (it has: {', '.join(sorted(data)) or 'none'})")
    return data[name]


def vector(data, name: str) -> np.ndarray:
    """A field that is a non-empty list of numbers, as a float64 array."""
    return array(data, name, ndim=1)


def array(data, name: str, ndim: int) -> np.ndarray:
    """A field that is a ``ndim``-deep list of numbers (rectangular, non-empty), as a float64 array."""
    value = field(data, name)
    try:
        result = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"field {name!r} should be a {ndim}-d list of numbers ({e})") from None
    if result.ndim != ndim or result.size == 0:
        raise ValueError(f"field {name!r} should be a non-empty {ndim}-d list of numbers, got shape {result.shape}")
    if not np.all(np.isfinite(result)):
        raise ValueError(f"field {name!r} holds a value that is not finite")
    return result


def count(data, name: str, least: int = 1) -> int:
    """A field that is an integer ≥ ``least``."""
    value = field(data, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"field {name!r} should be an integer of at least {least}, got {value!r}")
    return value


def shaped(data, name: str, shape: tuple, context: str = "") -> np.ndarray:
    """A float field of this shape (``None`` in ``shape``: any non-zero length); ``context`` (the sizes that set
    the shape) joins the error."""
    value = array(data, name, ndim=len(shape))
    if any(want is not None and got != want for got, want in zip(value.shape, shape, strict=True)):
        expected = "(" + ", ".join("n" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        raise ValueError(f"field {name!r} should have shape {expected}{context}, got {value.shape}")
    return value


def number(data, name: str) -> float:
    """A field that is a finite number."""
    value = field(data, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise ValueError(f"field {name!r} should be a finite number, got {value!r}")
    return float(value)
