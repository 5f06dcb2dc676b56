"""TorchServe entry point, copied into the MAR as imagelingo_handler.py by `imagelingo package`.

Inside the MAR this package's torch-only modules are named `imagelingo_runtime` (see package.py),
so this file only runs there, not from the installed package.
"""

from imagelingo_runtime.serving.handler import CaptionHandler

_handler = CaptionHandler()


def handle(data, context):
    if not _handler.initialized:
        _handler.initialize(context)
    if data is None:  # TorchServe's warm-up call at model load
        return None
    return _handler.handle(data, context)
