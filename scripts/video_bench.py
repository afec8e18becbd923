"""What `ferclient watch` costs on the wire, against sending every face or whole frames: python scripts/video_bench.py [--out docs/video].

For the 100-frame test video and a 60 s one (fermodels.evaluation.video; the
long one adds a third face that changes expression: 12 FER2013 PublicTest faces,
each held 3 s then dissolved into the next over 2 s), for the image codec and the
expression layer at each --skip-threshold: faces/s end to end (ferclient watch
against a real ferserver, from its first frame to its last answer), bytes per
second per tracked face, and top-1 agreement with sending every face. Baselines from the same sampled frames and the same
detector: every aligned face as WebP at the quality that matches the image
codec's accuracy on FER2013 PrivateTest (docs/results), and every whole frame
as JPEG q75. Writes bench.md, bench.json and timeline.png (the 60 s video's, at
the default threshold).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fermodels import argtypes

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
THRESHOLDS = (0.0, 0.05, 0.1, 0.2)
JPEG_FRAME_QUALITY = 75
SAMPLE_FPS = 5.0


def webp_quality_matching_codec() -> tuple[int, float, float]:
    """(WebP quality, its accuracy, the codec's accuracy at its default quality) from docs/results."""
    d = json.loads((ROOT / "docs/results/results.json").read_text())
    q = d["default_quality"] if isinstance(d["default_quality"], int) else d["model"]["default_quality"]
    ours = next(p["accuracy"] for p in d["points"] if p["codec"] == "fercodec" and p["setting"] == q)
    webp = sorted((p["setting"], p["accuracy"]) for p in d["points"] if p["codec"] == "webp")
    setting, acc = next(((s, a) for s, a in webp if a >= ours), webp[-1])
    return setting, acc, ours


def watch(video: Path, address: str, threshold: float, extra=()) -> tuple[list[dict], float]:
    """(rows, seconds from stream start to last answer, as ferclient watch reports it)."""
    r = subprocess.run([str(BIN / "ferclient"), "watch", str(video), "--server", address, "--json", "--fps", str(SAMPLE_FPS),
                        "--skip-threshold", str(threshold), *extra], capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise SystemExit(f"ferclient watch failed: {r.stderr}")
    summary = r.stderr.strip().splitlines()[-1]  # "ferclient: N frames sampled in S s, ..."
    return [json.loads(line) for line in r.stdout.splitlines()], float(summary.split(" sampled in ")[1].split(" s,")[0])


def face_seconds(rows: list[dict]) -> float:
    """Seconds of video in which some tracked face was visible, summed over faces (the denominator of bytes/s per face)."""
    return len(rows) / SAMPLE_FPS


def baselines(video: Path, webp_q: int) -> dict:
    """Bytes of the sampled frames' faces as WebP (aligned 48x48 crops) and of the frames themselves as JPEG."""
    import cv2
    from PIL import Image

    from ferclient.faces import FaceDetector, align, to_gray

    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    det, k, next_t = FaceDetector(turned=False), -1, 0.0  # as ferclient watch: no turned passes on faceless frames
    webp = jpeg = faces = frames = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        k += 1
        if k / fps + 1e-9 < next_t:
            continue
        next_t += 1 / SAMPLE_FPS
        frames += 1
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        gray = to_gray(rgb)
        for f in det.detect(rgb):
            if f.size < 24:
                continue
            buf = io.BytesIO()
            Image.fromarray(align(gray, f)).save(buf, format="WEBP", quality=webp_q, method=6)
            webp += buf.tell()
            faces += 1
        ok, enc = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_FRAME_QUALITY])
        jpeg += len(enc)
    return {"webp_bytes": webp, "jpeg_frame_bytes": jpeg, "faces": faces, "frames": frames}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "docs/video"), help="folder for bench.md, bench.json, timeline.png")
    p.add_argument("--long-seconds", type=argtypes.checked(float, lambda v: 1 <= v < math.inf, "a number of seconds, at least 1"), default=60.0,
                   help="length of the long synthetic video (at least 1 s: a few sampled frames)")
    args = p.parse_args(argv)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        p.error(f"--out {args.out}: a file, not a folder")

    from ferclient.watch import SKIP_THRESHOLD, write_plot
    from fermodels.data import load_split
    from fermodels.evaluation.video import FPS, make_video
    from ferserver.process import ServerProcess
    from ferwire.card import ModelCard

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    webp_q, webp_acc, ours_acc = webp_quality_matching_codec()
    work = Path(tempfile.mkdtemp(prefix="fercodec-video-"))
    changing = load_split("val", limit=12)[0]
    videos = {"test video (100 frames, 4 s)": make_video(work / "short.mp4", frames=100),
              f"long video ({args.long_seconds:.0f} s, a face changing expression)": make_video(work / "long.mp4", frames=int(args.long_seconds * FPS), seed=1, fer_faces=changing)}
    names = ModelCard.load().class_names
    results = []
    with ServerProcess() as server:
        for vname, video in videos.items():
            base = baselines(video, webp_q)
            for model, th in [("fercodec-v1", t) for t in THRESHOLDS] + [("fercodec-v1-expr", t) for t in (0.0, 0.1)]:
                rows, wall = watch(video, server.address, th, ("--model", model))
                if th == 0.0:
                    every = {(r["frame"], r["track"]): r["label"] for r in rows}
                secs = face_seconds(rows)
                agree = sum(every[(r["frame"], r["track"])] == r["label"] for r in rows) / max(1, len(rows))
                row = {"video": vname, "model": model, "threshold": th, "face_frames": len(rows), "sent": sum(r["sent"] for r in rows),
                       "tracks": len({r["track"] for r in rows}), "bytes": sum(r["bytes"] for r in rows),
                       "bytes_per_face_second": sum(r["bytes"] for r in rows) / secs, "faces_per_s": len(rows) / wall,
                       "agreement": agree}
                results.append(row)
                print(f"{vname}  {model} skip {th:g}: {row['sent']}/{row['face_frames']} sent, {row['bytes_per_face_second']:.0f} B/s per face, "
                      f"{row['faces_per_s']:.1f} faces/s, agreement {agree:.3f}", file=sys.stderr)
                if th == SKIP_THRESHOLD and model == "fercodec-v1" and vname.startswith("long"):
                    write_plot(rows, str(out / "timeline.png"), names)
            results.append({"video": vname, "baseline": f"WebP q{webp_q} per face", "bytes_per_face_second": base["webp_bytes"] / (base["faces"] / SAMPLE_FPS)})
            results.append({"video": vname, "baseline": f"JPEG q{JPEG_FRAME_QUALITY} whole frames", "bytes_per_face_second": base["jpeg_frame_bytes"] / (base["faces"] / SAMPLE_FPS)})
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    meta = {"command": "python scripts/video_bench.py", "date": time.strftime("%Y-%m-%d"), "commit": commit,
            "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, no GPU", "sample_fps": SAMPLE_FPS,
            "webp_quality": webp_q, "webp_accuracy": webp_acc, "codec_accuracy": ours_acc}
    (out / "bench.json").write_text(json.dumps({**meta, "results": results}, indent=2) + "\n")
    lines = ["# ferclient watch on the wire\n", f"`{meta['command']}` on {meta['date']} (commit {commit}; {meta['machine']}). "
             f"Faces sampled at {SAMPLE_FPS:g} per second of video; one ferserver on loopback; the image codec at its default quality.\n",
             f"WebP q{webp_q} is the lowest WebP quality whose FER2013 PrivateTest accuracy ({100 * webp_acc:.1f} %) reaches the image codec's "
             f"at its default quality ({100 * ours_acc:.1f} %), same classifier (docs/results). Whole frames are 640x480 JPEG q{JPEG_FRAME_QUALITY}.\n"]
    for vname in videos:
        lines += [f"\n## {vname}\n", "| what is sent | faces sent / seen | B/s per tracked face | vs every face | faces/s end to end | labels as when sending every face |",
                  "|---|---|---|---|---|---|"]
        mine = [r for r in results if r["video"] == vname]
        full = next(r for r in mine if r.get("threshold") == 0.0 and r["model"] == "fercodec-v1")["bytes_per_face_second"]
        for r in mine:
            if "baseline" in r:
                lines.append(f"| {r['baseline']} | – | {r['bytes_per_face_second']:.0f} | {r['bytes_per_face_second'] / full:.2f}x | – | – |")
            else:
                kind = "image codec" if r["model"] == "fercodec-v1" else "expression layer"
                what = f"{kind}, every face" if r["threshold"] == 0 else f"{kind}, --skip-threshold {r['threshold']:g}"
                lines.append(f"| {what} | {r['sent']} / {r['face_frames']} | {r['bytes_per_face_second']:.0f} | {r['bytes_per_face_second'] / full:.2f}x "
                             f"| {r['faces_per_s']:.1f} | {100 * r['agreement']:.1f} % |")
    (out / "bench.md").write_text("\n".join(lines) + "\n")
    print((out / "bench.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
