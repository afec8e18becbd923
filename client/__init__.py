"""ferclient: the edge side. Detect faces, encode them with the exported encoder, send.

Never imports torch or CompressAI: ONNX Runtime runs the analysis transform and
ferwire.bitstream (numpy + constriction, or ferwire.rangecoder where constriction has no wheel) entropy-codes it.

As a library: `from ferclient import Client` (ferclient.api).
"""

__all__ = ["Client", "FaceResult", "FerError", "Quality", "ServedModel", "ServerInfo", "SkippedFace"]


def command() -> int:
    """The ferclient command. Ctrl-C while its modules import (numpy, the first tenth of a second) or its flags are
    read is one line and exit 130, as later, not Python's traceback."""
    import sys

    try:
        from .cli import main

        return main()
    except KeyboardInterrupt:
        print("ferclient: interrupted", file=sys.stderr)
        return 130


def __getattr__(name: str):
    """The library's names, imported on first use: `ferclient send` starts without them."""
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
