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


# Reading what a caller sent, for the sentences above.

def echo(value, limit: int = 24) -> str:
    """What the caller sent, quoted in an error sentence, cut short: a sentence, not a mirror."""
    if isinstance(value, int) and abs(value) >= 10 ** limit:  # (repr of a huge int is slow, or refused)
        return f"a {value.bit_length()}-bit number"
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def whole(value, lo: int, hi: int) -> int | None:
    """``value`` as an int from ``lo`` to ``hi`` (a float with no fraction counts; a bool does
    not), or None when it is anything else."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        return None
    return value
