"""User-facing errors: one line that names the input that was wrong and what was expected.

Defined here, inside the torch-only inference package, so that the MAR's copy of the package
raises the same class the CLI prints; imagelingo.errors re-exports it.
"""


class ImageLingoError(Exception):
    """A mistake in the input or configuration. The CLI prints it as one line, no traceback."""
