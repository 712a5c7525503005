"""Exception types.  Each subclasses the builtin a user would catch anyway."""


class ConcretizationError(TypeError):
    """A traced value was asked for a concrete Python or NumPy value."""


class TracerMutationError(TypeError):
    """Item assignment into a traced array (or a traced value into a NumPy array)."""


class UnsupportedFunctionError(NotImplementedError):
    """A NumPy function or ufunc method that fasttape cannot trace."""


class UnsupportedMethodError(UnsupportedFunctionError, AttributeError):
    """An ndarray method or attribute that traced arrays do not have (an AttributeError too, so
    ``hasattr`` and ``getattr(x, name, default)`` keep working)."""


class NonScalarOutputError(TypeError):
    """``grad`` or ``value_and_grad`` of a function whose output is not a scalar."""


class InputTypeError(TypeError):
    """An argument of a kind that cannot be differentiated (integer, complex, ...)."""


class InputSignatureError(ValueError):
    """Arguments that do not match the signature a Tape was recorded with."""


class BranchChangedError(ValueError):
    """A Tape replayed on inputs that take another branch than the recorded one."""


class TracerLeakError(TypeError):
    """A tracer used after its trace ended, or mixed with another trace."""


class TapeFormatError(ValueError):
    """A saved tape file that is truncated, corrupted, hostile or from an incompatible version."""
