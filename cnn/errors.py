"""The project's own exception types: each carries a message fit to show a user."""


class CNNError(Exception):
    """Base class: ``str(err)`` is a complete, user-facing sentence."""


class WeightsError(CNNError):
    """Shipped weights are missing, truncated, tampered with or do not fit the model."""


class CalibrationError(WeightsError):
    """A weights card without the temperature and threshold that say "not a digit"."""


class DataError(CNNError):
    """MNIST files are missing, corrupted or cannot be downloaded."""


class InputError(CNNError):
    """An image or drawing that cannot be read (as opposed to a blank one)."""
