"""fermodels: the learned face codec, the expression classifier, training, export, evaluation; the bundled weights.

Kept import-light on purpose: ferwire.card imports it to find the bundled
weights (package data of fermodels.weights), and the edge client must not pay
for torch or CompressAI. The bitstream and its tables are ferwire's.
"""

CLASS_NAMES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FACE_SIZE = 48


def source_commit() -> tuple[str, bool]:
    """(short commit, uncommitted changes to tracked files) of the checkout this code runs from; ("unknown", False) when it
    is not a git checkout (an installed wheel). What runs, exports and measurements record, so a figure can be traced
    to the code that made it."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent

    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(root), *a], capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "--short", "HEAD")
    return (commit, bool(git("status", "--porcelain", "--untracked-files=no"))) if commit else ("unknown", False)


def source_revision() -> str:
    """source_commit() as one string: the commit, with "+changes" when tracked files differ from it."""
    commit, changed = source_commit()
    return commit + ("+changes" if changed else "")


def progress_bar(desc: str, total: int | None = None, unit: str = "face", iterable=None):
    """A tqdm bar on stderr, redrawn at most every 2 s: what fereval's passes, calibration and quantization show."""
    import sys

    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True, mininterval=2, file=sys.stderr)


_OURS = {"ferclient", "ferserver", "ferwire", "fermodels", "fercodec"}


def launch(module: str, command: str, extras: str) -> int:
    """Run `command` (module's main), or say in one line which extra to install: the edge install (`pip install .`)
    puts every command on PATH but has ferclient's packages only, and the others died in a ModuleNotFoundError traceback."""
    import importlib
    import sys

    try:
        return importlib.import_module(module).main()  # torch is imported inside some mains, once their arguments are read
    except ModuleNotFoundError as e:
        missing = (e.name or "").split(".")[0]
        if not missing or missing in _OURS:
            raise
        print(f"{command}: this install lacks {missing} (the plain install is the edge client, ferclient): "
              f"pip install 'fercodec[{extras}]'", file=sys.stderr)
        return 2


def fertrain() -> int:
    return launch("fermodels.train", "fertrain", "server,train")


def ferexport() -> int:
    return launch("fermodels.export", "ferexport", "server,train")


def fereval() -> int:
    return launch("fermodels.evaluation.cli", "fereval", "server,train")
