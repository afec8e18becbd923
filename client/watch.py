"""ferclient watch: expression timelines per tracked face, from a video file or a camera, over one RecognizeStream.

Frames are sampled at --fps, faces detected, aligned and tracked (client.tracking).
Each face's latent is compared with the last one sent for its track: below
--skip-threshold (relative L2 change) nothing is sent and the track's last
answer carries forward, so a still face costs no bytes. Sent faces of one frame
travel as one request on the stream; answers come back in order.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Relative L2 change of the latent below which a track's face is not sent. Chosen as the largest tried whose labels
# agree with sending every face on >= 99.5 % of the long video's face-frames (docs/video). With the ensemble classifier
# 0.1 and 0.2 agree on 99.25 % and only 0.05 passes, but 0.05 sends every frame of a face holding still (detector
# jitter alone moves the latent that much), which defeats the point; so 0.2 stays, 0.25 points under the rule.
SKIP_THRESHOLD = 0.2
DEFAULT_FPS = 5.0
TRACK_TIMEOUT_S = 1.0  # a track unseen this long ends
# Frames sent and not answered yet, at most: beyond it sampling waits for answers, so a slow or stalled server does not
# make the client queue frames without end (ferserver also caps a stream's unanswered messages, and sheds the excess).
MAX_UNANSWERED = 16
# Consecutive frames OpenCV cannot decode that are skipped before the video is taken to end there: a damaged frame
# mid-video stopped the run, silently, though the frames after it decode (a truncated file fails on every frame left).
MAX_BAD_FRAMES = 30


class SourceError(ValueError):
    """The video or camera cannot be opened or read."""


def _cv2():
    """OpenCV, its own log silenced: a camera that cannot be opened printed two lines of OpenCV's (a WARN and an ERROR)
    before ferclient's one line saying so, and a video it cannot decode may print more."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's own log (AV_LOG_QUIET), read when it first decodes
    import cv2

    # Where OpenCV keeps it moved: cv2.utils.logging in 4.14 (no cv2.setLogLevel), cv2.setLogLevel in 4.11 (no utils.logging).
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is not None:
        logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    else:
        cv2.setLogLevel(0)  # silent
    return cv2


def open_camera(index: int):
    """The camera's cv2.VideoCapture (a function of its own, so tests can put a fake source in its place)."""
    return _cv2().VideoCapture(index)


def is_stream_url(video: str) -> bool:
    """rtsp://, http(s)://, udp:// and the like: what FFmpeg opens over a network (an IP camera, a video on a server)."""
    scheme, sep, _ = video.partition("://")
    return bool(sep) and scheme.isalpha()


def open_source(video: str | None, camera: int | None, timeout: float = 10.0):
    """(capture, frames per second, frame count or None, live): live sources (a camera, a device such as /dev/video0,
    a network stream with no frame count) are timed by the clock, files by their frames' timestamps."""
    cv2 = _cv2()

    if video is not None and is_stream_url(video):
        # FFmpeg otherwise waits its own default (minutes, for a host that drops packets) to open and to read
        ms = min(int(timeout * 1000), 2**31 - 1)  # OpenCV takes an int
        t0 = time.monotonic()
        cap = cv2.VideoCapture(video, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
        if not cap.isOpened():
            if time.monotonic() - t0 < 0.9 * timeout:  # refused, not found, or not a video: said at once, not a timeout
                raise SourceError(f"{video}: cannot open the stream (refused, not found, or not a video OpenCV's FFmpeg reads)")
            raise SourceError(f"{video}: cannot open the stream within {timeout:g}s (not reachable, or not a video OpenCV's FFmpeg reads)")
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        total = total if total > 0 else None  # a live stream has none
        live = total is None
    elif video is not None:
        path = Path(video)
        if path.is_dir():
            raise SourceError(f"{video}: is a directory, not a video")
        if not path.exists():
            raise SourceError(f"{video}: no such file")
        live = path.is_char_device()  # /dev/video0: a camera by its device path
        cap = cv2.VideoCapture(video)
        if not cap.isOpened():
            raise SourceError(f"{video}: {'a device OpenCV cannot open as a camera' if live else 'not a video OpenCV can decode'}")
        total = None if live else int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    else:
        cap = open_camera(camera)
        if not cap.isOpened():
            raise SourceError(f"camera {camera} cannot be opened")
        total, live = None, True
    fps = cap.get(cv2.CAP_PROP_FPS)
    return cap, (fps if fps and fps > 0 else 30.0), total, live


@dataclass
class Sample:
    """One sampled frame: its faces, which of them were sent, and (once answered) the server's results."""

    frame: int
    t: float
    tracks: list  # Track per face
    boxes: list
    sent: list[int]  # indices into tracks/boxes of faces sent in this frame's request
    streams: list[bytes]
    results: list = field(default_factory=list)
    waiting_since: float | None = None  # monotonic time its request went out, until its answer came


class _FileClock:
    """A file's frame times from their presentation timestamps, measured from its first frame: a variable-rate file
    (an animated GIF, a phone's video) has frames k / fps misplaced. Where the container gives no usable timestamp
    (none, or not increasing) the next frame is placed 1 / fps after the one before."""

    def __init__(self, cap, fps: float):
        self.cap, self.fps, self.first, self.last = cap, fps, None, None

    def time(self, k: int) -> float:
        ms = self.cap.get(0)  # cv2.CAP_PROP_POS_MSEC of the frame just grabbed
        if self.first is None and ms is not None and math.isfinite(ms) and ms >= 0:
            self.first = ms / 1000.0 - k / self.fps  # a frame before it that could not be decoded still counts
        t = ms / 1000.0 - self.first if self.first is not None and ms is not None and math.isfinite(ms) else None
        if t is None or (self.last is not None and t <= self.last):
            t = k / self.fps if self.last is None else self.last + 1.0 / self.fps
        self.last = t
        return t


def _relative_change(y: np.ndarray, last: np.ndarray | None) -> float:
    if last is None:
        return float("inf")
    return float(np.linalg.norm(y - last) / (np.linalg.norm(last) + 1e-6))


class Watcher:
    """Samples, tracks, decides what to send; then turns answers into rows, carrying skipped faces forward."""

    def __init__(self, args, encoder, detector):
        from .cli import FACES_PER_REQUEST
        from .tracking import IouTracker

        self.args, self.encoder, self.detector = args, encoder, detector
        self.quality = encoder.check_quality(args.quality)
        self.tracker = IouTracker(max_missed=max(1, round(TRACK_TIMEOUT_S * args.fps)))  # samples() sets it for a file's rate
        self.rows: list[dict] = []
        self.frames = self.faces_seen = self.faces_sent = self.bytes_sent = self.faces_refused = self.bytes_refused = 0
        self.faces_waiting = 0  # changed enough to send, but past the max_faces of their frame's request: sent in a later frame
        self.bad_frames, self.stopped_at = 0, None  # frames that could not be decoded; the frame where decoding gave up
        self.source_ended = False  # a live source (camera, stream) gave no more frames
        self.max_faces = FACES_PER_REQUEST  # faces in one frame's request, as send's; lowered when the server takes fewer
        self.names = encoder.card.class_names

    def use(self, encoder) -> None:
        """Encode with this encoder from now on (the server's model, pulled before the first frame)."""
        if encoder is not self.encoder:
            self.quality = encoder.check_quality(self.args.quality)
            self.encoder, self.names = encoder, encoder.card.class_names

    def samples(self, cap, src_fps: float, live: bool, progress=None, total: int | None = None):
        """Sampled frames, in order, with their faces encoded or skipped. total: the file's frame count (None: unknown
        or live), up to which frames that cannot be decoded are skipped (MAX_BAD_FRAMES in a row at most).

        A live source gives the frame of the moment each 1 / --fps s. A file gives, at each mark of the --fps grid on its
        shown time, the frame on screen then (the last one that began at or before it), each frame once at most: a GIF
        frame held for 3 s between two of 0.1 s was never sampled when each mark took the first frame at or after it."""
        step, next_t, k, t_start, bad = 1.0 / self.args.fps, 0.0, -1, time.monotonic(), 0
        clock = None if live else _FileClock(cap, src_fps)
        pending = None  # a file's last frame (k, t, bgr) before the next mark: the one on screen at the mark, if the next frame begins after it
        if not live:  # at most one sample a frame: --fps above the file's rate samples fewer, and 1 s is fewer samples
            self.tracker.max_missed = max(1, round(TRACK_TIMEOUT_S * min(self.args.fps, src_fps)))
        while self.args.max_frames is None or self.frames < self.args.max_frames:
            ok, bgr = cap.read()
            k += 1
            if not ok:  # the end, or a frame that cannot be decoded: those after it may, up to the file's frame count
                if total is not None and k < total and bad < MAX_BAD_FRAMES:
                    bad += 1
                    continue
                if total is not None and total - (k - bad) > max(2, total // 50):  # a frame count estimated from the
                    self.stopped_at = k - bad  # duration can be a frame or two over: not a damaged file
                self.source_ended = live
                # the last frame, shown for about a frame's time (a file gives no end time for it): sampled if a mark falls then
                if pending is not None and pending[1] + 1.0 / src_fps > next_t + 1e-6:
                    yield self._sample(*pending, progress)
                return
            self.bad_frames, bad = self.bad_frames + bad, 0
            if live:
                t = time.monotonic() - t_start
                if t + 1e-9 < next_t:
                    continue
                next_t = max(next_t + step, t)  # past a pause longer than a step, from now on
                yield self._sample(k, t, bgr, progress)
                continue
            t = clock.time(k)
            if pending is not None and t > next_t + 1e-6:  # the mark fell while the pending frame was on screen
                yield self._sample(*pending, progress)
                next_t = step * math.ceil(t / step - 1e-6)  # the first mark at or after this frame
                if self.args.max_frames is not None and self.frames >= self.args.max_frames:
                    return
            pending = None
            if t + 1e-6 >= next_t:  # this frame begins at the mark (or the first frame: at 0)
                next_t = step * (math.floor(t / step + 1e-6) + 1)  # samples stay on the --fps grid
                yield self._sample(k, t, bgr, progress)
            else:
                pending = (k, t, bgr)

    def _sample(self, k: int, t: float, bgr, progress) -> Sample:
        """Frame k at t s: its faces found, tracked, and encoded where they changed enough to be sent."""
        from ferwire.bitstream import encode

        from .faces import align, to_gray

        size = self.encoder.card.face_size[0]
        self.frames += 1
        rgb = bgr[:, :, ::-1]
        found = [f for f in self.detector.detect(rgb) if f.size >= self.args.min_face]
        tracks = self.tracker.update([f.box for f in found])
        sample = Sample(k, t, tracks, [f.box for f in found], [], [])
        if found:
            gray = to_gray(np.ascontiguousarray(rgb))
            latents = self.encoder.latents(np.stack([align(gray, f, size) for f in found]))
            change = [_relative_change(y, track.state.get("sent")) for track, y in zip(tracks, latents)]
            # At most max_faces in one request (a crowd): faces never answered first, then the most changed; the
            # others keep their last sent latent, so they go in a later frame.
            due = sorted((i for i, c in enumerate(change) if c >= self.args.skip_threshold), key=lambda i: ("p" in tracks[i].state, -change[i]))
            self.faces_waiting += len(due[self.max_faces :])
            for i in sorted(due[: self.max_faces]):
                tracks[i].state["sent"] = latents[i]
                sample.sent.append(i)
                sample.streams.append(encode(latents[i], self.quality, self.encoder.tables, self.encoder.card.model_tag))
        self.faces_seen += len(found)
        self.faces_sent += len(sample.sent)
        self.bytes_sent += sum(map(len, sample.streams))
        if progress:
            progress(k)
        return sample

    def refused(self, sample: Sample, most: int) -> None:
        """sample's request was refused (a busy server shed it, or it held more faces than the server takes: most > 0):
        its faces count as not sent and go again in a later frame, in parts the server takes."""
        for i in sample.sent:  # forgotten, not put back: a later frame of the same face may have been refused too
            sample.tracks[i].state.pop("sent", None)
        self.faces_refused += len(sample.sent)  # counted apart: faces_sent is the sampling thread's
        self.bytes_refused += sum(map(len, sample.streams))
        sample.sent, sample.streams = [], []
        if most:
            self.max_faces = min(self.max_faces, most)

    def rows_of(self, sample: Sample) -> list[dict]:
        """One row per face: its own answer if sent, else its track's last answer carried forward."""
        out = []
        for i, (track, box) in enumerate(zip(sample.tracks, sample.boxes)):
            sent = i in sample.sent
            if sent:
                r = sample.results[sample.sent.index(i)]
                track.state["answer"] = np.asarray(r.probabilities, dtype=np.float64)
                nbytes = len(sample.streams[sample.sent.index(i)])
            else:
                nbytes = 0
            if "answer" in track.state:  # smoothed every sampled frame, toward the last answer where none is new: a face
                a, answer = self.args.smooth, track.state["answer"]  # holding still (not sent) reached it, not stuck midway
                track.state["p"] = answer if "p" not in track.state else a * answer + (1 - a) * track.state["p"]
            p = track.state.get("p")
            if p is None:  # skipped before its first answer arrived: cannot happen, a new track always sends
                continue
            j = int(np.argmax(p))
            out.append({
                "track": track.id, "frame": sample.frame, "t": round(sample.t, 3), "box": list(box),
                "label": self.names[j], "confidence": round(float(p[j]), 4),
                "probabilities": {n: round(float(v), 4) for n, v in zip(self.names, p)},
                "bytes": nbytes, "sent": sent,
            })
        return out


def _progress(total: int | None):
    """A one-line progress bar on stderr for files, when stderr is a terminal: called with each sampled frame's index;
    .clear() blanks its line (before rows are printed to the same terminal)."""
    if total is None or not sys.stderr.isatty():
        return None

    def show(k: int) -> None:
        done = min(1.0, (k + 1) / total)
        bar = "#" * int(30 * done)
        print(f"\r[{bar:<30}] {100 * done:5.1f}%  frame {k + 1}/{total}", end="", file=sys.stderr, flush=True)

    show.clear = lambda: print("\r\033[K", end="", file=sys.stderr, flush=True)
    return show


def write_timeline(rows: list[dict], path: str, names) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["track", "frame", "t", "x", "y", "w", "h", "label", "confidence", *names, "bytes", "sent"])
        for r in rows:
            w.writerow([r["track"], r["frame"], r["t"], *r["box"], r["label"], r["confidence"], *(r["probabilities"][n] for n in names), r["bytes"], int(r["sent"])])


PLOT_TRACKS = 40  # panels at most: the longest-seen tracks (263 tracks drew a 990 x 55,033 px image in 3 minutes)


def write_plot(rows: list[dict], path: str, names, note=None) -> None:
    """Expression probabilities over time, one panel per track (the PLOT_TRACKS seen in most frames; note, if given, is
    told in one line how many were left out)."""
    import collections

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seen = collections.Counter(r["track"] for r in rows)
    tracks = sorted(t for t, _ in seen.most_common(PLOT_TRACKS))
    if len(seen) > len(tracks) and note is not None:
        note(f"{path}: the {len(tracks)} tracks seen in most frames of {len(seen)} plotted (all are in the rows and --timeline)")
    fig, axes = plt.subplots(max(1, len(tracks)), 1, figsize=(9, 1.9 * max(1, len(tracks)) + 0.6), sharex=True, squeeze=False)
    for ax, tid in zip(axes[:, 0], tracks):
        mine = [r for r in rows if r["track"] == tid]
        t = [r["t"] for r in mine]
        ax.stackplot(t, *[[r["probabilities"][n] for r in mine] for n in names], labels=names, step="post")
        sent = [r["t"] for r in mine if r["sent"]]
        ax.plot(sent, [1.02] * len(sent), "|", color="k", markersize=5, clip_on=False)
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"track {tid}")
    if tracks:  # no face found: an empty panel, without matplotlib's warning that the legend has nothing to show
        axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    axes[0, 0].set_title("expression probabilities per tracked face (ticks: frames sent; between them the last answer carries forward)", fontsize=9)
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def check_output(path: str, flag: str, formats: set[str] | None = None) -> None:
    """ValueError with one line when `flag`'s file cannot be written: checked before the video runs, not found out after
    it (formats: the suffixes it may have)."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{flag} {path} is a directory; give a file name")
    folder = p.parent
    if not folder.is_dir():
        raise ValueError(f"{flag} {path}: {folder} {'is not a folder' if folder.exists() else 'does not exist'}")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{flag} {path}: cannot write in {folder}")
    if formats is not None and p.suffix.lower().lstrip(".") not in formats:
        raise ValueError(f"{flag} {path}: unknown image format {p.suffix or '(no suffix)'}; use one of {', '.join(sorted(formats))}")


class _Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP during a run: stopped as Ctrl-C stops it (what was answered is written), exit 128 + signal."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _terminate_as_interrupt():
    """SIGTERM and SIGHUP stop the run as Ctrl-C does (they killed it at once, the timeline of a long video lost);
    returns what puts the previous handlers back."""
    import signal

    def raise_terminated(signum, frame):
        raise _Terminated(signum)

    before = {}
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        # an ignored signal stays ignored: `nohup ferclient watch ...` must outlive its terminal
        if sig is not None and threading.current_thread() is threading.main_thread() and signal.getsignal(sig) is not signal.SIG_IGN:
            before[sig] = signal.signal(sig, raise_terminated)
    return lambda: [signal.signal(n, h) for n, h in before.items()]


def _distinct_outputs(args) -> None:
    """ValueError where --timeline or --plot names the video itself, or both name one file: the run overwrote the video
    with its CSV (or the CSV with the plot) without a word."""
    def same(a: str, b: str) -> bool:
        return Path(a).resolve() == Path(b).resolve()

    for flag, path in (("--timeline", args.timeline), ("--plot", args.plot)):
        if path and args.video is not None and same(path, args.video):
            raise ValueError(f"{flag} {path} is the video being watched; give another file name")
    if args.timeline and args.plot and same(args.timeline, args.plot):
        raise ValueError(f"--timeline and --plot name the same file, {args.plot}; give each its own")


def _plot_formats() -> set[str]:
    from matplotlib.backend_bases import FigureCanvasBase

    return set(FigureCanvasBase.get_supported_filetypes()) - {"pgf"}  # pgf needs a LaTeX install: it failed after the run


def run(args, err) -> int:
    """The watch subcommand; err prints one line on stderr."""
    import grpc

    from fercodec.v1 import fercodec_pb2 as pb
    from fercodec.v1 import fercodec_pb2_grpc as pb_grpc

    from .channel import ChannelSettingError, open_channel, rpc_error_message, wait_ready
    from .cli import encoder_for_server
    from . import caused_by_ctrl_c
    from .encoder import FaceEncoder
    from .faces import FaceDetector

    try:
        import cv2  # noqa: F401
    except ImportError as e:
        if caused_by_ctrl_c(e):
            raise
        err("ferclient watch reads video with OpenCV, which this install lacks: pip install 'fercodec[video]'")
        return 2
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError as e:
            if caused_by_ctrl_c(e):
                raise
            err("--plot needs matplotlib: pip install matplotlib")
            return 2
    try:
        if args.timeline:
            check_output(args.timeline, "--timeline")
        if args.plot:
            check_output(args.plot, "--plot", _plot_formats())
        _distinct_outputs(args)
        encoder = FaceEncoder(args.model_dir)
        encoder.check_quality(args.quality)
        # The first pass only, and no turned passes on a frame without a face: a frame's budget is a fifth of a second.
        detector = FaceDetector(args.detect_threshold, fine_side=0, turned=False)
        cap, src_fps, total, live = open_source(args.video, args.camera, args.timeout)
    except (OSError, ValueError) as e:
        err(str(e))
        return 2
    w = Watcher(args, encoder, detector)
    bar = _progress(total)
    pending: deque[Sample] = deque()
    failure: list[BaseException] = []
    lock, stop, finished = threading.Lock(), threading.Event(), threading.Event()
    answered_cv = threading.Condition(lock)  # notified on every answer: sampling waits on it past MAX_UNANSWERED

    def unanswered() -> list[Sample]:
        return [s for s in pending if s.waiting_since is not None]

    def requests():
        """Runs on gRPC's sending thread; it must end before the process does (Ctrl-C sets stop)."""
        unchanged = 0  # faces carried forward since the last message, told to the server with the next one
        try:
            for s in w.samples(cap, src_fps, live=live, progress=bar, total=total):
                if stop.is_set():
                    return
                with lock:
                    while s.sent and len(unanswered()) >= MAX_UNANSWERED and not stop.is_set():
                        answered_cv.wait(0.25)
                    if stop.is_set():
                        return
                    if s.sent:
                        s.waiting_since = time.monotonic()
                    pending.append(s)
                unchanged += len(s.tracks) - len(s.sent)
                if s.sent:
                    yield pb.RecognizeRequest(faces=s.streams, request_id=str(s.frame), unchanged_faces=unchanged)
                    unchanged = 0
        except Exception as e:  # surfaced by the main thread: an exception here would only cancel the stream
            failure.append(e)
        finally:
            finished.set()

    def emit(sample: Sample) -> None:
        if bar is not None:
            bar.clear()  # the bar's line on a terminal, before a row goes to stdout beside it (it is drawn again next frame)
        for row in w.rows_of(sample):
            w.rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                what = f"{row['bytes']} B" if row["sent"] else "unchanged"
                print(f"t={row['t']:7.2f}s  frame {row['frame']:5d}  track {row['track']}  box=[{','.join(map(str, row['box']))}]  "
                      f"{row['label']} {row['confidence']:.2f}  {what}", flush=True)

    def flush(until: str | None) -> None:
        """Emit queued samples in order, up to and including the one answered by request_id `until`."""
        while True:
            with lock:
                if not pending:
                    return
                s = pending[0]
                if s.sent and str(s.frame) != until:
                    return
                pending.popleft()
            emit(s)
            if until is not None and str(s.frame) == until:
                return

    stalled: list[str] = []

    def watchdog() -> None:
        """Ends the stream when a sent frame has waited --timeout for its answer: a server that stopped answering (or a
        network that dropped it) would otherwise leave the run waiting for ever, printing nothing."""
        while not stop.wait(0.25):
            with lock:
                late = [s for s in unanswered() if time.monotonic() - s.waiting_since > args.timeout]
            if late and call is not None:
                stalled.append(f"no answer from {args.server} for frame {late[0].frame} within {args.timeout:g}s: stopped")
                call.cancel()
                return

    status, call, shed, limited, answered_frames, reader_left = 0, None, [], [], 0, False
    t0 = time.perf_counter()
    restore = _terminate_as_interrupt()
    try:
        with open_channel(args, warn_faces=err) as channel:
            wait_ready(channel, args)
            w.use(encoder_for_server(args, w.encoder, channel, err))  # before the first frame is encoded
            call = pb_grpc.FerCodecStub(channel).RecognizeStream(requests())
            threading.Thread(target=watchdog, name="ferclient-watchdog", daemon=True).start()
            for reply in call:
                busy = reply.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
                if reply.HasField("error") and not busy:
                    raise RuntimeError(f"frame {reply.request_id}: server refused it: {reply.error.message}")
                with lock:
                    answered = next(s for s in pending if s.sent and str(s.frame) == reply.request_id)
                    answered.waiting_since = None
                    answered_cv.notify_all()
                    if busy:  # an overloaded server shed the frame, or it held more faces than the server takes: its faces
                        (limited if reply.error.max_faces else shed).append(reply.error.message)  # go again in a later frame
                        w.refused(answered, reply.error.max_faces)
                answered.results = list(reply.results)
                answered_frames += 1
                flush(reply.request_id)
            flush(None)
            with lock:
                left = len(unanswered())
            if left or not finished.is_set():  # the server ended the stream before the video ended: a server shutting down does
                raise RuntimeError("the server ended the stream before the video ended (shutting down?)"
                                   + (f"; {left} frame{'s' if left != 1 else ''} unanswered" if left else ""))
        if failure:
            raise failure[0]
    except KeyboardInterrupt as e:
        stop.set()
        if call is not None:
            call.cancel()
            finished.wait(10)
        err(f"{'terminated' if isinstance(e, _Terminated) else 'interrupted'}" + (": writing what was answered so far" if answered_frames else ""))
        status = 128 + e.signum if isinstance(e, _Terminated) else 130
    except grpc.RpcError as e:
        if stalled:
            err(stalled[0])
        elif e.code() == grpc.StatusCode.UNAVAILABLE and answered_frames:  # it was reached: the hints for a server never reached mislead
            err(f"the stream to {args.server} was lost after {answered_frames} answered frame{'s' if answered_frames != 1 else ''} "
                f"(the server stopped, or the connection was cut: {e.details()})")
        else:
            err(rpc_error_message(e, args))
        status = 1
    except ChannelSettingError:
        raise  # a setting to fix (a certificate, a token): one line and exit 2, as every subcommand
    except BrokenPipeError:  # `ferclient watch ... | head`: the reader left. The run stops there, quietly (exit 0, as send),
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # and what was answered still goes to --timeline
        stop.set()  # and --plot (they were lost: main() ended the run at once)
        reader_left = True
        if call is not None:
            call.cancel()
    except (RuntimeError, OSError, ValueError) as e:
        err(str(e))
        status = 1
    finally:
        restore()
        stop.set()
        if call is not None:
            finished.wait(10)
        cap.release()
        if total is not None and sys.stderr.isatty():
            print(file=sys.stderr)
    if status and not reader_left:  # stopped early: the rows still due, up to the first frame never answered
        flush(None)
    elapsed = time.perf_counter() - t0
    lost = sum(1 for s in pending if s.waiting_since is not None)
    unwritten = len(pending) - lost  # sampled, not sent, behind a frame never answered (Ctrl-C, a lost server): no row
    tracks = len({r["track"] for r in w.rows})
    duration = max((r["t"] for r in w.rows), default=0.0)
    if shed:
        err(f"{len(shed)} frame{'s' if len(shed) != 1 else ''} refused by a busy server, their faces sent again in later frames "
            f"(first: {shed[0]})")
    if limited:
        err(f"the server takes at most {w.max_faces} faces in one request ({limited[0]}): a frame's faces went in turns, "
            f"at most {w.max_faces} a frame")
    if w.bad_frames:
        err(f"{w.bad_frames} frame{'s' if w.bad_frames != 1 else ''} could not be decoded and {'were' if w.bad_frames != 1 else 'was'} skipped")
    if w.source_ended and w.frames and not status:  # said, not ended as a file ends: a camera unplugged, a feed cut
        camera = args.video is None or not is_stream_url(args.video)  # --camera N, or a device such as /dev/video0
        err(f"{f'camera {args.camera}' if args.video is None else args.video} stopped sending frames after {elapsed:.1f} s "
            + ("(unplugged, or taken by another program?)" if camera else f"(the stream ended, or sent nothing for --timeout {args.timeout:g} s)"))
        status = 1 if camera else status  # a camera does not end by itself; a stream may
    if w.stopped_at is not None:
        err(f"{args.video}: no frame from {w.stopped_at} on could be decoded (the file says it has {total}): damaged or cut short, "
            f"stopped there")
    if w.frames:
        sent, nbytes = w.faces_sent - w.faces_refused, w.bytes_sent - w.bytes_refused  # answered; refused ones went again
        err(f"{w.frames} frame{'s' if w.frames != 1 else ''} sampled in {elapsed:.1f} s, {tracks} track{'s' if tracks != 1 else ''}, faces sent {sent} of {w.faces_seen} "
            f"({100.0 * (w.faces_seen - w.faces_sent - w.faces_waiting) / max(1, w.faces_seen):.0f} % unchanged, not sent"
            + (f"; {100.0 * w.faces_waiting / max(1, w.faces_seen):.0f} % waited for a later frame's request" if w.faces_waiting else "")
            + f"), {nbytes} B"
            + (f" ({nbytes / duration / max(1, tracks):.0f} B/s per track)" if duration > 0 else "")
            + (f"; {w.faces_refused} refused, sent again in a later frame" if w.faces_refused else "")
            + (f"; {lost} frame{'s' if lost != 1 else ''} sent {'were' if lost != 1 else 'was'} never answered" if lost else "")
            + (f"; {unwritten} more sampled after {'them' if lost != 1 else 'it'}, not written" if unwritten and lost else ""))
        if not w.faces_seen:
            err(f"no face found in {w.frames} sampled frames (faces under --min-face {args.min_face} px are not counted)")
    if not w.frames and not status:  # nothing decoded: say so, rather than end without a word
        err(f"{args.video}: no frame could be decoded" if args.video is not None else f"camera {args.camera} gave no frame")
        return 1
    for path, write in ((args.timeline, write_timeline), (args.plot, lambda *a: write_plot(*a, note=err))):
        if path:
            try:
                write(w.rows, path, w.names)
            except (OSError, ValueError) as e:  # checked before the run; the folder may have gone since
                err(f"cannot write {path}: {e.strerror if isinstance(e, OSError) and e.strerror else e}")
                status = status or 1
    return status
