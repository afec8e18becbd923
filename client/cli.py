"""ferclient send image.jpg [more.jpg ...]: faces in, expressions out.

Errors are one line on stderr each; the other files still get their results;
the exit status is 1 when anything failed, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from pathlib import Path

from fermodels import argtypes

from . import caused_by_ctrl_c
from . import channel as channel_mod
from .faces import DETECT_THRESHOLD, MIN_FACE
from .models import PULL_TIMEOUT_S

# Refusals every later file would meet as well: no server to reach, a token it does not take. The run stops at the first.
FATAL_CODES = ("UNAVAILABLE", "UNAUTHENTICATED", "PERMISSION_DENIED")
FRACTION = argtypes.checked(float, lambda v: 0.0 < v < 1.0, "between 0 and 1, exclusive")  # --detect-threshold
SMOOTHING = argtypes.checked(float, lambda v: 0.0 < v <= 1.0, "in (0, 1]")  # watch --smooth
SKIP = argtypes.checked(float, lambda v: 0.0 <= v < float("inf"), "0 or more")  # watch --skip-threshold (nan compared as never changed)
QUALITY = argtypes.checked(int, lambda v: True, "a quality index (a whole number: ferclient info lists them)")  # the model checks the range
FPS = argtypes.checked(float, lambda v: 0.0 < v <= 1000.0, "frames per second, above 0 and at most 1000")  # watch --fps (1e308 overflowed mid-run)
HEX64 = argtypes.checked(str, lambda v: len(v) == 64 and all(c in "0123456789abcdefABCDEF" for c in v), "64 hex digits (ferclient models list shows them)")
CAMERA = argtypes.checked(int, lambda v: 0 <= v < 2**31, "a camera index, 0 or more")  # OpenCV crashed on -1, raised on 2**31
IN_FLIGHT = 64  # most requests one send keeps on the wire: a folder of thousands of photos must not trip the server's --max-concurrent-rpcs
BUSY_WAIT_S = 0.05  # a request a busy server refused goes again after this, doubling up to 1 s, within --timeout (_Reply._again)
SKIP_NOTES = 3  # faces under --min-face noted one line each; more in one photo are one line together
FACES_PER_REQUEST = 32  # a crowd photo goes as several requests: ferserver refuses more than --max-faces (64 by default) in one


class _Reply:
    """One file's faces sent as requests of at most FACES_PER_REQUEST, answered as one RecognizeResponse.

    A server started with a lower --max-faces refuses such a request and says its limit (ferwire.MAX_FACES_METADATA):
    that request is sent again in parts of the limit, and later _Replies on the same stub send parts of it at once."""

    def __init__(self, stub, streams: list[bytes], reconstruct: bool, timeout: float):
        from fercodec.v1 import fercodec_pb2 as pb

        self._stub, self._timeout = stub, timeout
        self._requests = _requests(pb.RecognizeRequest, streams, reconstruct, getattr(stub, "fercodec_max_faces", FACES_PER_REQUEST))
        # t0 before the first request goes out: an answer can arrive before the line after .future() runs
        self.t0, self._ends = time.perf_counter(), []  # when each request was answered (callbacks run on gRPC's threads)
        self._futures = [stub.Recognize.future(r, timeout=timeout) for r in self._requests]
        for f in self._futures:
            f.add_done_callback(lambda _: self._ends.append(time.perf_counter()))
        self._replies = None

    def done(self) -> bool:
        return all(f.done() for f in self._futures)

    def result(self):
        """The replies' results in the faces' order (raises the first failed request's grpc.RpcError)."""
        if self._replies is None:
            self._replies = []
        for request, f in list(zip(self._requests, self._futures))[len(self._replies) :]:  # kept as they come: a second
            self._replies.append(self._split(request, f))  # call after a failure does not send the parts again
        return _merged(self._replies)

    def _split(self, request, future):
        """future's reply; where the server refused the request for its number of faces, the request's faces sent
        again in parts it takes, their replies as one."""
        import grpc

        try:
            return future.result()
        except grpc.RpcError as e:
            most = _max_faces(e)
            if most is None and e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                return self._again(request, e)
            if most is None or not 0 < most < len(request.faces):
                raise
        self._stub.fercodec_max_faces = min(most, getattr(self._stub, "fercodec_max_faces", FACES_PER_REQUEST))
        parts = [channel_mod.unary(self._stub.Recognize, r, self._timeout)
                 for r in _requests(type(request), list(request.faces), request.return_reconstruction, most)]
        self._ends.append(time.perf_counter())
        return _merged(parts)

    def _again(self, request, refusal):
        """request, refused by a busy server (RESOURCE_EXHAUSTED: its --max-concurrent-rpcs taken, or its queue too long for
        the deadline), sent again after BUSY_WAIT_S, doubling up to 1 s, until --timeout from the first try has passed;
        then the last refusal is raised. Why: a Client's recognize_many of 127 photos (12 requests at once) against
        --max-concurrent-rpcs 8 failed whole, where a few requests waiting their turn was all it needed."""
        import random

        import grpc

        wait, deadline = BUSY_WAIT_S, self.t0 + self._timeout
        while True:
            left = deadline - time.perf_counter()
            if left <= wait:
                raise refusal
            time.sleep(wait * random.uniform(0.5, 1.0))  # spread: the callers refused together do not come back together
            wait = min(2 * wait, 1.0)
            try:
                reply = channel_mod.unary(self._stub.Recognize, request, deadline - time.perf_counter())
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or _max_faces(e) is not None:
                    raise
                refusal = e
                continue
            self._ends.append(time.perf_counter())
            return reply

    def latency_ms(self) -> float:
        ends = list(self._ends)
        return ((max(ends) if len(ends) >= len(self._futures) else time.perf_counter()) - self.t0) * 1000.0


def _requests(message, streams: list[bytes], reconstruct: bool, most: int) -> list:
    """streams as RecognizeRequests (message) of at most `most` faces each (one, empty, for no faces)."""
    return [message(faces=streams[i : i + most], return_reconstruction=reconstruct) for i in range(0, max(len(streams), 1), most)]


def _merged(replies: list):
    """Replies to consecutive requests as one, their results in order. A lone reply is returned as received; several
    make a new message, so the replies stay as they came and a second call gives the same answer."""
    first, *rest = replies
    if not rest:
        return first
    return type(first)(request_id=first.request_id, model_id=first.model_id, results=[r for reply in replies for r in reply.results])


def _max_faces(e) -> int | None:
    """The faces a server takes in one request, from the trailing metadata of its refusal (None where it said none)."""
    from ferwire import MAX_FACES_METADATA

    for key, value in (e.trailing_metadata() or ()) if hasattr(e, "trailing_metadata") else ():
        if key == MAX_FACES_METADATA:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def parser(error=None) -> argparse.ArgumentParser:
    """ferclient's command line (tests/client/test_cli.py holds README's usage block to it). error: called with argparse's
    message instead of printing usage and exiting (ferclient.api checks a Client's settings with this parser)."""
    cls = _Parser if error is None else type("Parser", (_Parser,), {"error": lambda self, message: error(message)})
    p = cls(prog="ferclient", description="Send faces as learned bitstreams to a fercodec server.")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="{send,watch,info,models}")
    s = sub.add_parser("send", help="detect, encode and send the faces in images")
    s.add_argument("images", nargs="+", metavar="IMAGE", type=_image_arg, help="image files (anything Pillow reads, and HEIC); a directory stands for the images directly inside it; - for one image read from standard input")
    channel_mod.add_arguments(s)
    s.add_argument("--quality", type=QUALITY, default=None, help="codec quality index (default: the model's default)")
    s.add_argument("--no-detect", action="store_true", help="each image is already a face crop")
    s.add_argument("--min-face", type=argtypes.positive("pixels", int), default=MIN_FACE, metavar="PX",
                   help=f"skip faces whose box is smaller than PX on its longer side, with a note (default {MIN_FACE})")
    s.add_argument("--detect-threshold", type=FRACTION, default=DETECT_THRESHOLD, metavar="T",
                   help=f"face detector confidence needed to count as a face, above 0 and below 1 (default {DETECT_THRESHOLD:g})")
    s.add_argument("--no-align", action="store_true", help="crop the detector's box as it is instead of levelling the eyes on FER2013's landmarks")
    s.add_argument("--reconstruct", metavar="DIR", type=argtypes.nonempty, default=None, help="save the server's reconstructions as PNG in DIR")
    s.add_argument("--annotate", metavar="DIR", type=argtypes.nonempty, default=None,
                   help="save each photo with its faces boxed and labelled as DIR/NAME_annotated.jpg")
    s.add_argument("--json", action="store_true", help="one JSON object per face per line")
    s.add_argument("--model", "--model-dir", dest="model_dir", type=argtypes.nonempty, default=os.environ.get("FERCODEC_MODEL") or None, metavar="NAME|DIR|ID",
                   help="model directory or bundled name: fercodec-v1 (default; the image codec) or fercodec-v1-expr "
                        "(the expression layer: fewest bytes, no reconstruction), or the id of a model the server runs (pulled into the cache); "
                        "env FERCODEC_MODEL")
    s.add_argument("--no-pull", action="store_true",
                   help="never download an encoder: by default one the server runs is pulled when --model names it, or when the server "
                        "refuses the faces as encoded for a model it does not run (then the file is re-encoded and sent once more)")
    i = sub.add_parser("info", help="print what the server runs")
    channel_mod.add_arguments(i)
    _watch_parser(sub)
    m = sub.add_parser("models", help="encoders pulled from a server into this user's cache (see ferclient.models)")
    msub = m.add_subparsers(dest="models_command", required=True, metavar="{pull,list,remove}")
    mp = msub.add_parser("pull", help="download the encoder of a model the server runs, verify its SHA-256s, cache it")
    mp.add_argument("model_id", nargs="?", default="", help="model id or model directory name (default: the server's first model)")
    mp.add_argument("--sha256", type=HEX64, default=None, metavar="HEX", help="refuse the bundle unless its SHA-256 is HEX (ferclient models list shows it)")
    channel_mod.add_arguments(mp, timeout=PULL_TIMEOUT_S, timeout_help="seconds for the whole download")  # a bundle, not one request
    ml = msub.add_parser("list", help="the cached encoders, each verified against its manifest")
    ml.add_argument("--json", action="store_true", help="one JSON object per model per line")
    mr = msub.add_parser("remove", help="delete a cached encoder")
    mr.add_argument("model_id", metavar="MODEL_ID", help="a cached model's id (ferclient models list shows them)")
    return p


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """One line and exit 2 (argparse printed its usage block first), naming the environment variable a bad value came
        from where no flag gave it (FERCODEC_TIMEOUT=abc was reported as a --timeout never typed)."""
        self.exit(2, f"{self.prog}: error: {_from_env(self, message)} ({self.prog} --help)\n")


def _from_env(parser: argparse.ArgumentParser, message: str) -> str:
    """message, plus where the value came from when it was an environment variable (the flag's help names it: env VAR)."""
    import re

    flag = re.match(r"argument (--[a-z-]+)", message)
    action = next((a for a in parser._actions if flag and flag.group(1) in a.option_strings), None)
    var = re.search(r"env (FERCODEC_[A-Z_]+)", (action.help or "") if action else "")
    given = flag and any(arg == flag.group(1) or arg.startswith(flag.group(1) + "=") for arg in sys.argv[1:])
    return f"{message} (from ${var.group(1)})" if var and os.environ.get(var.group(1)) and not given else message


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fercodec")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def _image_arg(text: str) -> str:
    """An IMAGE argument: an empty one (an unset "$PHOTO") is Path(".") to pathlib, which would send the whole folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty IMAGE (an unset shell variable?)")
    return text


def _err(msg: str) -> None:
    print(f"ferclient: {msg}", file=sys.stderr)


def _prepare(path: str, args, encoder, detector):
    """(faces, bitstreams, skipped) for one image (ferclient.api.prepare), faces being [None] for --no-detect and skipped
    the faces under --min-face; raises ImageError/ValueError with a one-line reason, such as no face found."""
    from .api import prepare
    from .faces import load_rgb

    rgb, scale = load_rgb(_source(path, args), warn=lambda note: _err(f"{path}: {note}"))
    faces, streams, skipped = prepare(rgb, scale, encoder, detector, args.quality, args.min_face, not args.no_align)
    if len(skipped) <= SKIP_NOTES:
        for f in skipped:
            _err("{}: skipped a face at box=[{},{},{},{}]: {} px is below --min-face {}".format(path, *f.box, f.size, args.min_face))
    else:  # a crowd: one line, not one per face (an audit's 62 photos printed 499 such lines, 60 for one photo)
        sizes = [f.size for f in skipped]
        _err(f"{path}: skipped {len(skipped)} faces of {min(sizes)}-{max(sizes)} px, below --min-face {args.min_face} "
             "(--json gives no row for them; --annotate draws them in grey)")
    if not faces:
        if skipped:
            raise _AllTooSmall(f"no face of at least {args.min_face} px (lower --min-face to classify smaller ones)", skipped)
        raise _NoFace("no face found (pass --no-detect if the image is already a face crop, or lower --detect-threshold)")
    return faces, streams, skipped


class _NoFace(ValueError):
    """No face found: nothing to send; --annotate still writes the photo, without a box, so a folder's annotated copies
    are all there (a photo missing from them was the only sign)."""

    skipped: list = []


class _AllTooSmall(_NoFace):
    """Every face found was under --min-face: nothing to send, but --annotate still shows them, in grey."""

    def __init__(self, msg: str, skipped: list):
        super().__init__(msg)
        self.skipped = skipped


STDIN = "-"  # the IMAGE that stands for one image read from standard input


def _source(path: str, args) -> str | bytes:
    """What faces.load_rgb reads for an IMAGE: its path, or for STDIN the bytes send() read from standard input once
    (the file is read again for --annotate, and when a pulled encoder re-encodes it)."""
    return args.stdin if path == STDIN else path


def _expand(paths: list[str]) -> list[tuple[str, str | None]]:
    """(path, error) per image to send: a directory stands for the image files directly inside it (by extension, sorted),
    or for one error when it has none; anything else is sent as given (and fails alone if it is not an image)."""
    from PIL import Image

    known = set(Image.registered_extensions()) | {".heic", ".heif"}  # HEIF's opener registers on first need (faces.load_rgb)
    out = []
    for path in paths:
        p = Path(path)
        if not p.is_dir():
            url = "://" in path and not p.exists()
            out.append((path, "a URL: ferclient reads files; pipe it in instead (curl -s URL | ferclient send -)" if url else None))
            continue
        try:  # hidden files (macOS's ._IMG_1.jpg beside IMG_1.jpg, .thumbnail.jpg) are not the user's photos
            files = sorted(str(f) for f in p.iterdir() if f.is_file() and f.suffix.lower() in known and not f.name.startswith("."))
        except OSError as e:  # a directory this user may not list: its own error, the other images still go
            out.append((path, f"cannot list the directory ({e.strerror or e})"))
            continue
        out += [(f, None) for f in files] or [(path, "a directory with no image files directly inside it")]
    return out


def send(args) -> int:
    import grpc

    from .faces import FaceDetector

    try:
        encoder = _load_encoder(args)
        encoder.check_quality(args.quality)
        detector = None if args.no_detect else FaceDetector(args.detect_threshold)
    except ConnectionError as e:  # the server holding the --model to pull
        _err(f"cannot pull model {args.model_dir}: {e}")
        return 1
    except (OSError, ValueError) as e:
        _err(str(e))
        return 2
    except grpc.RpcError as e:
        _err(f"cannot pull model {args.model_dir}: {channel_mod.rpc_error_message(e, args)}")
        return 1
    if args.reconstruct and encoder.card.kind == "expression":
        _err(f"model {encoder.card.model_id} is the expression layer: it sends no image, so there is nothing to --reconstruct; use --model fercodec-v1")
        return 2
    for folder in (args.reconstruct, args.annotate):
        if folder:
            if Path(folder).exists() and not Path(folder).is_dir():
                _err(f"{folder} is a file; --reconstruct and --annotate take a directory")
                return 2
            try:
                Path(folder).mkdir(parents=True, exist_ok=True)
            except OSError as e:
                _err(f"cannot create {folder}: {e.strerror or e}")
                return 2
            import tempfile

            try:  # before any face is sent, not once per image after its answer
                tempfile.TemporaryFile(dir=folder).close()
            except OSError as e:
                _err(f"cannot write into {folder}: {e.strerror or e}")
                return 2
    args.stdin = b""
    if STDIN in args.images:
        if args.images.count(STDIN) > 1:
            _err("- (standard input) can be given once")
            return 2
        if sys.stdin is None:
            _err("- reads an image from standard input, which is closed here: pipe one in (ferclient send - < photo.jpg)")
            return 2
        if sys.stdin.isatty():
            _err("- reads an image from standard input, which is a terminal here: pipe one in (ferclient send - < photo.jpg)")
            return 2
        args.stdin = sys.stdin.buffer.read()
    # swap: the server's encoder, pulled when it refuses ours (or why that failed); stems: output names given out so far
    state = {"encoder": encoder, "swap": {}, "stems": {}}
    paths = _expand(args.images)
    with channel_mod.open_channel(args, warn_faces=_err) as channel:
        return _send_paths(paths, args, state, channel, detector)


def _send_paths(paths, args, state, channel, detector) -> int:
    """Send every file's faces over one channel and print the answers; the exit status."""
    from fercodec.v1 import fercodec_pb2_grpc as pb_grpc

    from .faces import ImageError

    progress = Progress(len(paths))
    failed = n = 0
    pending = collections.deque()  # (path, faces, bitstreams, skipped, _Reply), oldest first
    stub = pb_grpc.FerCodecStub(channel)
    try:
        # Requests go on the wire as soon as each file is encoded, up to IN_FLIGHT at once; answers are printed in the
        # files' order as they arrive, so a folder of photos streams results instead of waiting for its last file.
        for n, (path, why) in enumerate(paths, 1):
            progress.clear()  # _prepare may note a skipped face on stderr
            try:
                if why:
                    raise ValueError(why)
                faces, streams, skipped = _prepare(path, args, state["encoder"], detector)
            except (ImageError, ValueError) as e:
                _err(f"{path}: {e}")
                failed += 1
                if isinstance(e, _NoFace) and args.annotate:
                    _annotate(path, _stem(path, state["stems"]), args, [], [], e.skipped)
            else:
                pending.append((path, faces, streams, skipped, _Reply(stub, streams, bool(args.reconstruct), args.timeout)))
            while pending and (pending[0][4].done() or len(pending) >= IN_FLIGHT):
                failed += not _answer(pending.popleft(), args, state, channel, stub, detector)
            progress.show(n)
        while pending:
            progress.clear()
            failed += not _answer(pending.popleft(), args, state, channel, stub, detector)
    except _Stop as e:
        progress.clear()
        left = len(paths) - n + len(pending)  # files not read yet, and those sent and not answered
        _err(f"{e}" + (f"; stopped, {left} more image{'s' if left != 1 else ''} not answered" if left else ""))
        return 1
    progress.clear()
    return 1 if failed else 0


class _Stop(Exception):
    """A file's call failed in a way every later file's would (FATAL_CODES): the run stops with this one line."""


def _answer(entry, args, state, channel, stub, detector) -> bool:
    """Wait for one file's reply and print a row per face (and write --reconstruct / --annotate files); False when
    the file failed (one line on stderr). A refusal for an unknown model pulls the server's and sends the file again."""
    import grpc

    path, faces, streams, skipped, sent = entry
    try:
        reply = sent.result()
    except grpc.RpcError as e:
        if args.no_pull or not _unknown_model(e):
            if e.code().name in FATAL_CODES:
                raise _Stop(f"{path}: {channel_mod.rpc_error_message(e, args)}") from None
            _err(f"{path}: {channel_mod.rpc_error_message(e, args)}")
            return False
        try:
            state["encoder"], (faces, streams, skipped), sent = _resend(args, state["swap"], state["encoder"], channel, stub,
                                                                        lambda enc: _prepare(path, args, enc, detector), bool(args.reconstruct))
            reply = sent.result()
        except (grpc.RpcError, ValueError, OSError) as e2:
            _err(f"{path}: {channel_mod.rpc_error_message(e2, args) if isinstance(e2, grpc.RpcError) else e2}")
            return False
    from .api import FaceResult

    card = state["encoder"].card
    stem = _stem(path, state["stems"]) if args.reconstruct or args.annotate else None
    latency_ms, ok = sent.latency_ms(), True
    for k, (face, stream, r) in enumerate(zip(faces, streams, reply.results)):
        box = None if face is None else face.box
        row = {"file": path, **FaceResult.of(face, stream, r, card).row(), "latency_ms": round(latency_ms, 2), "model": r.model_id}
        if args.reconstruct:
            out = Path(args.reconstruct) / f"{stem}_face{k}.png"
            try:
                out.write_bytes(r.reconstruction_png)
            except OSError as e:  # a full disk, a folder in the way: this file failed, the others go on
                _err(f"{path}: cannot write the reconstruction {out}: {e.strerror or e}")
                ok = False
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            box_s = "whole image" if box is None else "box=[{},{},{},{}] face {:.2f}".format(*box, face.score)
            print(f"{path}  {box_s}  {r.label} {r.confidence:.2f}  {row['bytes']} B  {row['bpp']:.3f} bpp  {latency_ms:.1f} ms", flush=True)
    return (_annotate(path, stem, args, faces, reply.results, skipped) if args.annotate else True) and ok


def _stem(path: str, stems: dict) -> str:
    """The name a file's --reconstruct and --annotate outputs start with: its stem, or stem-2, stem-3, ... for a later
    file of the same stem in this run (photos/a.jpg and more/a.png must not overwrite each other)."""
    stem = "stdin" if path == STDIN else Path(path).stem
    taken = stems.setdefault(stem, [])
    if path not in taken:
        taken.append(path)
    k = taken.index(path)
    return stem if k == 0 else f"{stem}-{k + 1}"


class Progress:
    """'ferclient: 12/340 images' on stderr, redrawn in place, while a run of several files works; only on a terminal
    (a pipe or a log file gets no control characters). Cleared before any other line is printed."""

    def __init__(self, total: int, stream=None):
        self.total, self.stream, self.shown = total, stream or sys.stderr, False
        self.on = total > 1 and self.stream.isatty()

    def show(self, n: int) -> None:
        if self.on and n < self.total:
            self.stream.write(f"\rferclient: {n}/{self.total} images\x1b[K")
            self.stream.flush()
            self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


def _annotate(path, stem, args, faces, results, skipped) -> bool:
    """Write path's annotated copy into --annotate; False (after one line on stderr) when that fails."""
    from .annotate import annotate, marks_for, output_path
    from .faces import ImageError

    try:
        out = output_path(stem, args.annotate)
        annotate(_source(path, args), out, marks_for(faces, [r.label for r in results], [r.confidence for r in results], skipped))
    except (ImageError, OSError, ValueError) as e:
        _err(f"{path}: cannot write the annotated copy: {e}")
        return False
    return True


def _unknown_model(e) -> bool:
    from . import models

    return models.unknown_model(e)


def _load_encoder(args, note=_err):
    """FaceEncoder for --model; the id of a model neither local nor cached is pulled from --server first (unless --no-pull).
    note: told in one line when a model was pulled (default: stderr)."""
    from ferwire.card import valid_model_id

    from . import models
    from .encoder import FaceEncoder

    try:
        return FaceEncoder(args.model_dir)
    except FileNotFoundError:
        if args.no_pull or not args.model_dir or not valid_model_id(args.model_dir) or Path(args.model_dir).exists():
            raise
    with channel_mod.open_channel(args) as channel:
        channel_mod.wait_ready(channel, args)
        where = models.pull(channel, args.model_dir, max(args.timeout, PULL_TIMEOUT_S), source=args.server)
    note(f"note: pulled model {args.model_dir} from {args.server} into {where}")
    return FaceEncoder(where)


def _resend(args, swap, encoder, channel, stub, encoded, reconstruct: bool, note=_err):
    """The server refused faces as encoded for a model it does not run: pull its model of the same kind (once per run:
    swap holds it, or why that failed), re-encode with it (encoded(encoder) -> (faces, streams, skipped)) and send once
    more. Returns (encoder, (faces, streams, skipped), _Reply); note (default: stderr) is told in one line."""
    import grpc

    from . import models
    from .encoder import FaceEncoder

    if "error" in swap:
        raise models.BundleError(swap["error"])
    if "encoder" not in swap:
        try:
            model_id = models.server_model(channel, encoder.card.kind, args.timeout)
            where, pulled = models.ensure(channel, model_id, max(args.timeout, PULL_TIMEOUT_S), source=args.server)
            swap["encoder"] = FaceEncoder(where)
        except (grpc.RpcError, ValueError, OSError) as e:
            why = channel_mod.rpc_error_message(e, args) if isinstance(e, grpc.RpcError) else str(e)
            swap["error"] = f"the server does not run model {encoder.card.model_id}, and getting the one it runs failed: {why}"
            raise models.BundleError(swap["error"]) from None
        note(f"note: the server does not run model {encoder.card.model_id}; {'pulled' if pulled else 'using the cached'} {model_id} "
             f"({where}), re-encoding and sending again")
    encoder = swap["encoder"]
    prepared = encoded(encoder)
    return encoder, prepared, _Reply(stub, prepared[1], reconstruct, args.timeout)


def encoder_for_server(args, encoder, channel, note=_err):
    """encoder, or where the server does not run its model, the server's model of the same kind (cached, or pulled now),
    with a one-line note: what send does once the server refuses a file's faces, asked before a stream starts (ferclient
    watch was refused at its first frame, with no way on but the server's "update the client's model")."""
    from . import models
    from .encoder import FaceEncoder

    info = models.server_info(channel, args.timeout)
    if encoder.card.model_tag in {m.model_tag for m in [info, *info.other_models]}:
        return encoder
    if args.no_pull:
        raise models.BundleError(f"the server does not run model {encoder.card.model_id} (it runs "
                                 f"{', '.join(m.model_id for m in [info, *info.other_models])}): ferclient models pull --server {args.server} "
                                 "MODEL_ID, then --model MODEL_ID, or leave out --no-pull")
    model_id = models.server_model(channel, encoder.card.kind, info=info)
    where, pulled = models.ensure(channel, model_id, max(args.timeout, PULL_TIMEOUT_S), source=args.server)
    note(f"note: the server does not run model {encoder.card.model_id}; {'pulled' if pulled else 'using the cached'} {model_id} ({where})")
    return FaceEncoder(where)


def models_command(args) -> int:
    """ferclient models pull [MODEL_ID] | list | remove MODEL_ID."""
    from . import models

    if args.models_command == "list":
        cache = models.cache_dir()
        if cache.exists() and not cache.is_dir():  # it said "no models pulled yet"
            _err(f"the model cache {cache} is not a folder (FERCODEC_CACHE_DIR?)")
            return 1
        rows = models.list_models()
        for r in rows:
            if args.json:
                print(json.dumps(r))
            elif r["status"] == "ok":
                print(f"{r['model_id']}  tag {r['model_tag']:#06x}  {r['kind']}  v{r['version']}  {r['bytes'] / 1e6:.1f} MB  "
                      f"sha256 {r['bundle_sha256']}  {r['path']}")
            else:
                print(f"{r['model_id']}  DAMAGED: {r['status']}")
        if not rows and not args.json:
            print(f"no models pulled yet (cache: {models.cache_dir()})")
        return 0 if all(r["status"] == "ok" for r in rows) else 1
    if args.models_command == "remove":
        if not models.remove(args.model_id):
            _err(f"no model {args.model_id} in {models.cache_dir()}")
            return 1
        print(f"removed {args.model_id}")
        return 0
    import grpc

    t0 = time.perf_counter()
    with channel_mod.open_channel(args) as channel:
        try:
            where = models.pull(channel, args.model_id, args.timeout, args.sha256, source=args.server)
        except grpc.RpcError as e:
            what = args.model_id or "the server's first model"
            _err(f"cannot pull {what}: {channel_mod.rpc_error_message(e, args)}")
            return 1
        except (ValueError, OSError) as e:
            _err(str(e))
            return 1
    m = json.loads((where / models.MANIFEST).read_text())
    print(f"{m['model_id']}  tag {m['model_tag']:#06x}  {m['kind']}  {m['total_bytes'] / 1e6:.1f} MB  sha256 {m['bundle_sha256']}  "
          f"verified, in {where} ({time.perf_counter() - t0:.2f} s)")
    return 0


def info(args) -> int:
    import grpc
    from google.protobuf import json_format

    from fercodec.v1 import fercodec_pb2 as pb
    from fercodec.v1 import fercodec_pb2_grpc as pb_grpc

    with channel_mod.open_channel(args) as channel:
        try:
            reply = channel_mod.unary(pb_grpc.FerCodecStub(channel).GetModelInfo, pb.GetModelInfoRequest(), args.timeout)
        except grpc.RpcError as e:
            _err(channel_mod.rpc_error_message(e, args))
            return 1
    # every field, zeros too: quality 0's "index" and the expression layer's "default_quality" were missing
    print(json.dumps(json_format.MessageToDict(reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True), indent=2))
    return 0


def _watch_parser(sub) -> None:
    from .watch import DEFAULT_FPS, SKIP_THRESHOLD

    w = sub.add_parser("watch", help="expression timelines per tracked face from a video file or a camera, over one stream")
    src = w.add_mutually_exclusive_group(required=True)
    src.add_argument("video", nargs="?", default=None, help="video file (anything OpenCV decodes), a stream URL (rtsp://, http://...: an IP camera) or a camera device (/dev/video0)")
    src.add_argument("--camera", type=CAMERA, default=None, metavar="N", help="camera index (0 = the first camera); Ctrl-C stops")
    w.add_argument("--fps", type=FPS, default=DEFAULT_FPS, help=f"frames sampled per second of video (default {DEFAULT_FPS:g})")
    w.add_argument("--max-frames", type=argtypes.positive("frames", int), default=None, metavar="N", help="stop after N sampled frames")
    w.add_argument("--skip-threshold", type=SKIP, default=SKIP_THRESHOLD, metavar="R",
                   help=f"send a tracked face only when its latent changed by at least R (relative L2) since it was last sent; "
                        f"0 sends every face (default {SKIP_THRESHOLD:g})")
    w.add_argument("--smooth", type=SMOOTHING, default=1.0, metavar="A",
                   help="exponential moving average of each track's probabilities: weight A of the newest answer, 0 < A <= 1 (default 1: off)")
    w.add_argument("--quality", type=QUALITY, default=None, help="codec quality index (default: the model's default)")
    w.add_argument("--model", "--model-dir", dest="model_dir", type=argtypes.nonempty, default=os.environ.get("FERCODEC_MODEL") or None, metavar="NAME|DIR|ID",
                   help="model directory, bundled name or pulled model id (env FERCODEC_MODEL, default fercodec-v1)")
    w.add_argument("--no-pull", action="store_true",
                   help="never download an encoder: by default, where the server does not run --model, the model of the same kind "
                        "it runs is pulled (or taken from the cache) before the video starts")
    w.add_argument("--min-face", type=argtypes.positive("pixels", int), default=MIN_FACE, metavar="PX", help=f"ignore faces smaller than PX (default {MIN_FACE})")
    w.add_argument("--detect-threshold", type=FRACTION, default=DETECT_THRESHOLD, metavar="T", help=f"face detector confidence, above 0 and below 1 (default {DETECT_THRESHOLD:g})")
    w.add_argument("--json", action="store_true", help="one JSON object per face per sampled frame")
    w.add_argument("--timeline", metavar="CSV", type=argtypes.nonempty, default=None, help="write every row to CSV (track, frame, t, x, y, w, h, label, confidence, one column per class, bytes, sent)")
    w.add_argument("--plot", metavar="PNG", type=argtypes.nonempty, default=None, help="plot probabilities over time, one panel per track (needs matplotlib)")
    channel_mod.add_arguments(w, timeout_help="seconds to reach the server, and the longest a sent frame waits for its answer before "
                                               "the run stops (a stalled server or network)")


def watch(args) -> int:
    from .watch import run

    return run(args, _err)


def main(argv=None) -> int:
    # grpc's C core logs a failed TLS handshake in lines of its own before ferclient's one line says what failed and
    # what to do; GRPC_VERBOSITY set by the user (DEBUG for a bug report) still wins. Set before grpc is imported.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    args = parser().parse_args(argv)
    try:
        return {"send": send, "info": info, "models": models_command, "watch": watch}[args.command](args)
    except channel_mod.ChannelSettingError as e:
        _err(str(e))
        return 2
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:  # `ferclient ... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:
        if not caused_by_ctrl_c(e):
            raise
        _err("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
