"""ferclient: the edge side. Detect faces, encode them with the exported encoder, send.

Never imports torch or CompressAI: ONNX Runtime runs the analysis transform and
ferwire.bitstream (numpy + constriction, or ferwire.rangecoder where constriction has no wheel) entropy-codes it.

As a library: `from ferclient import Client` (ferclient.api).
"""

__all__ = ["Client", "FaceResult", "FerError", "Quality", "ServedModel", "ServerInfo", "SkippedFace"]


def command() -> int:
    """The ferclient command. Ctrl-C at any moment is one line and exit 130, not a traceback or a hang."""
    import signal
    import sys

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where it is ignored (nohup, a CI shell)
        signal.signal(signal.SIGINT, _ctrl_c)
        if hasattr(signal, "setitimer"):
            signal.signal(signal.SIGALRM, _ctrl_c)
    try:
        from .cli import main

        return main()
    except Exception as e:
        if not caused_by_ctrl_c(e):
            raise
    except KeyboardInterrupt:
        pass
    finally:
        if hasattr(signal, "setitimer"):
            signal.setitimer(signal.ITIMER_REAL, 0)  # no deferred Ctrl-C goes off after the command's end
    print("ferclient: interrupted", file=sys.stderr)
    return 130


_ctrl_c_pressed = False  # ever, in this process: caused_by_ctrl_c
_ctrl_c_deferred = False  # noted inside an import, raised once it is done


def _ctrl_c(signum, frame):
    """Python's own Ctrl-C handler, except inside an import: a module being imported (numpy's, onnxruntime's,
    OpenCV's extension) turns a KeyboardInterrupt into an ImportError of its own, or prints it and goes on, so it is
    deferred and checked again 20 ms later (SIGALRM), then raised as SIGINT to whatever handler is current then (a
    channel being closed holds it). A second Ctrl-C during the import is raised at once."""
    import signal

    global _ctrl_c_pressed, _ctrl_c_deferred
    if signum != signal.SIGINT:  # SIGALRM: the check of a deferred Ctrl-C, or someone else's alarm
        if _ctrl_c_deferred:
            _ctrl_c_deferred = False
            signal.raise_signal(signal.SIGINT)
        return
    _ctrl_c_pressed = True
    if not _ctrl_c_deferred and hasattr(signal, "setitimer"):
        f = frame
        while f is not None:
            if f.f_code.co_filename.startswith("<frozen importlib"):
                _ctrl_c_deferred = True
                signal.setitimer(signal.ITIMER_REAL, 0.02)
                return
            f = f.f_back
    _ctrl_c_deferred = False
    raise KeyboardInterrupt


def caused_by_ctrl_c(e: BaseException) -> bool:
    """Whether Ctrl-C is behind an exception: a library whose import it interrupts raises ImportError (numpy's "you
    should not try to import numpy from its source directory", onnxruntime's "initialization failed", OpenCV's), which
    would read as a broken install, with a traceback. Where ferclient's command runs, any exception after Ctrl-C is.
    (The command defers Ctrl-C past imports; a library using the package has Python's own handler.)"""
    if _ctrl_c_pressed:
        return True
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def __getattr__(name: str):
    """The library's names, imported on first use: `ferclient send` starts without them."""
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
