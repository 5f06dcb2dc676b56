"""User-facing errors: one line that names the input that was wrong and what was expected."""


class ImageLingoError(Exception):
    """A mistake in the input or configuration. The CLI prints it as one line, no traceback."""


class QualityGateError(ImageLingoError):
    """The evaluated model scored below the configured minimum."""
