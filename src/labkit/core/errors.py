"""Errors that name what is wrong and where, so a user can act on them."""


class LabkitError(Exception):
    """Base class of every error labkit raises on purpose."""


class ParameterError(LabkitError, ValueError):
    """A study parameter, preset or study name is wrong."""


class DataError(LabkitError, ValueError):
    """Input data is malformed. The message names the file, tile or sample."""


class WeightsUnavailableError(LabkitError, OSError):
    """Pretrained weights were asked for and cannot be had."""


class WeightsFileError(LabkitError, FileNotFoundError):
    """A weights file that was named (a path) does not exist or is not a checkpoint.

    Not a :class:`WeightsUnavailableError`: a mistyped path is a mistake to fix before the run, never a
    reason to report a row as *not evaluated*.
    """


class CheckpointMismatchError(LabkitError, ValueError):
    """A checkpoint does not fit the model it is loaded into."""


class NotebookError(LabkitError):
    """A study notebook is malformed (e.g. it has no ``parameters`` cell)."""
