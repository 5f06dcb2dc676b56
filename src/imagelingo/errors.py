"""User-facing errors: one line that names the input that was wrong and what was expected."""

from imagelingo.inference.errors import ImageLingoError

__all__ = ["ImageLingoError", "QualityGateError"]


class QualityGateError(ImageLingoError):
    """The evaluated model scored below the configured minimum."""
