"""Errors that name what is wrong and where, so a user can act on them."""


class LabkitError(Exception):
    """Base class of every error labkit raises on purpose."""


class ParameterError(LabkitError, ValueError):
    """A study parameter, preset or study name is wrong."""


class DataError(LabkitError, ValueError):
    """Input data is malformed. The message names the file, tile or sample."""


class WeightsUnavailableError(LabkitError, OSError):
    """Pretrained weights were asked for and cannot be had."""


class CheckpointMismatchError(LabkitError, ValueError):
    """A checkpoint does not fit the model it is loaded into."""


class NotebookError(LabkitError):
    """A study notebook is malformed (e.g. it has no ``parameters`` cell)."""
