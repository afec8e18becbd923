"""Face detectors on a public benchmark, in one run: the old Haar cascade against YuNet.

    python scripts/detector_bench.py BENCH_DIR [--out docs/detector]

BENCH_DIR holds manifest.json (photos with ground-truth face boxes, and photos with no face; see
docs/detector/README.md for how the one we measure on is assembled) and the images it names. For
each detector: AP at IoU 0.5 (all-point interpolated, as PASCAL VOC), precision and recall at its
operating threshold, false faces per face-free photo, and milliseconds per photo on this machine.
Ground-truth faces marked 'ignore' by the benchmark, and in the ">= N px" rows faces smaller than N
px, neither count as misses nor make a detection on them a false face.

YuNet's threshold is chosen on the even-numbered photos (the tuning half): the highest F0.5 (precision
weighted over recall: a phantom face gets a confident label, a missed face only costs an answer) at
faces >= MIN_FACE px, subject to at most 0.05 false faces per face-free photo; the odd half is reported
separately so the choice is not graded on the photos it was made on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]  # the checkout: --out's default works from any working directory

IOU = 0.5
FP_BUDGET = 0.05  # false faces per face-free photo
BETA = 0.5  # F-beta for the threshold choice
HAAR = dict(scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))  # what ferclient ran before YuNet
HALF = 208  # px: --fine's simulated large photos, the benchmark's 416 px photos shrunk to half for the first pass


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a [n,4] against every box in b [m,4], boxes as x, y, w, h."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    ax2, ay2, bx2, by2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2) - np.maximum(a[:, None, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2) - np.maximum(a[:, None, 1], b[:, 1]), 0, None)
    inter = iw * ih
    return inter / (a[:, None, 2] * a[:, None, 3] + b[:, 2] * b[:, 3] - inter)


def match(dets: list[tuple[np.ndarray, np.ndarray]], truth: list[tuple[np.ndarray, np.ndarray]], min_size: int = 0):
    """(scores, is_true_positive) over all photos' detections, and the number of faces to find.

    dets: per photo (boxes [n,4], scores [n]); truth: per photo (boxes [m,4], ignore [m] bool). Greedy
    matching by score, as VOC. A detection on an ignored face (or one under min_size) is dropped."""
    all_s, all_tp, n_pos = [], [], 0
    for (db, ds), (gb, gi) in zip(dets, truth):
        gi = gi | (np.maximum(gb[:, 2], gb[:, 3]) < min_size) if len(gb) else gi
        keep = np.maximum(db[:, 2], db[:, 3]) >= min_size if len(db) else np.zeros(0, bool)
        db, ds = db[keep], ds[keep]
        n_pos += int((~gi).sum())
        order = np.argsort(-ds)
        ious = iou_matrix(db[order], gb)
        used = np.zeros(len(gb), bool)
        for k, j in enumerate(order):
            cand = np.where(ious[k] >= IOU)[0] if len(gb) else []
            free = [c for c in cand if not used[c] and not gi[c]]
            if free:
                best = max(free, key=lambda c: ious[k, c])
                used[best] = True
                all_s.append(ds[j]), all_tp.append(True)
            elif any(gi[c] for c in cand):
                continue  # on an ignored face: neither right nor wrong
            else:
                all_s.append(ds[j]), all_tp.append(False)
    return np.array(all_s, float), np.array(all_tp, bool), n_pos


def average_precision(scores: np.ndarray, tp: np.ndarray, n_pos: int) -> float:
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    tp = tp[order]
    ctp, cfp = np.cumsum(tp), np.cumsum(~tp)
    recall = ctp / n_pos
    precision = ctp / np.maximum(ctp + cfp, 1)
    r = np.concatenate([[0.0], recall, [recall[-1] if len(recall) else 0.0]])
    p = np.concatenate([[1.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    return float(np.sum((r[1:] - r[:-1]) * p[1:]))


def at_threshold(scores, tp, n_pos, t):
    sel = scores >= t
    k = int(tp[sel].sum())
    return k / max(int(sel.sum()), 1), k / max(n_pos, 1)


def f_beta(precision: float, recall: float, beta: float = BETA) -> float:
    b2 = beta * beta
    return (1 + b2) * precision * recall / max(b2 * precision + recall, 1e-9)


class Haar:
    name = "Haar cascade (OpenCV frontalface_default)"

    def __init__(self):
        import cv2

        self.cv2 = cv2
        self.net = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"))

    def __call__(self, rgb):
        gray = self.cv2.cvtColor(rgb, self.cv2.COLOR_RGB2GRAY)
        boxes, _, weights = self.net.detectMultiScale3(gray, outputRejectLevels=True, **HAAR)
        boxes = np.array(boxes, float).reshape(-1, 4)
        return boxes, np.array(weights, float).reshape(-1)


class YuNet:
    def __init__(self, model: str, max_side: int, fine_side: int = 0, floor: float = 0.3):
        import tempfile

        from ferclient.faces import FaceDetector
        from yunet_dynamic import make_dynamic  # upstream files declare 640x640; ferclient runs each photo at its size

        fine = f", small faces again at up to {fine_side} px in tiles" if fine_side else ""
        self.name = f"YuNet-{Path(model).stem.split('_')[1]} ({Path(model).name}), photos shrunk to {max_side} px{fine}"
        with tempfile.TemporaryDirectory() as tmp:
            make_dynamic(Path(model), Path(tmp) / "yunet.onnx")
            self.det = FaceDetector(threshold=floor, max_side=max_side, model=Path(tmp) / "yunet.onnx", fine_side=fine_side)

    def __call__(self, rgb):
        faces = self.det.detect(rgb)
        return np.array([f.box for f in faces], float).reshape(-1, 4), np.array([f.score for f in faces], float)


def run(detector, photos: list[np.ndarray]):
    out, t0 = [], time.perf_counter()
    for rgb in photos:
        out.append(detector(rgb))
    return out, 1000 * (time.perf_counter() - t0) / max(len(photos), 1)


def load(bench: Path):
    from PIL import Image

    m = json.loads((bench / "manifest.json").read_text())

    def rgb(f):
        with Image.open(bench / f) as im:
            return np.asarray(im.convert("RGB"))

    faces = [(rgb(e["file"]), np.array(e["boxes"], float).reshape(-1, 4), np.array(e.get("ignore", []), float).reshape(-1, 4)) for e in m["faces"]]
    nofaces = [rgb(e["file"]) for e in m["nofaces"]]
    return m, faces, nofaces


def main(argv=None) -> int:
    from tqdm import tqdm

    from ferclient.faces import DETECT_FINE_SIDE, DETECT_MAX_SIDE, DETECT_THRESHOLD, DETECTOR_FILE, MIN_FACE
    from ferwire.card import WEIGHTS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bench", type=Path, help="folder with manifest.json and the images")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "detector", help="folder for the tables written (default: the checkout's docs/detector)")
    p.add_argument("--models", default=None, help="folder with yunet_*.onnx to compare (default: the shipped one only)")
    p.add_argument("--turned", action="store_true",
                   help="instead: ferclient's detector as shipped, without and with its turned passes (a photo with no face upright is searched "
                        "turned each quarter turn), on the face-free photos, the face photos and the face photos stored turned; writes turned.md")
    p.add_argument("--fine", action="store_true",
                   help="also the finer tiled pass for small faces: at the shipped settings, and on photos shrunk to half size without and with it")
    args = p.parse_args(argv)
    if not (args.bench / "manifest.json").is_file():
        print(f"detector_bench: no manifest.json in {args.bench}", file=sys.stderr)
        return 2
    manifest, faces, nofaces = load(args.bench)
    photos = [f[0] for f in faces]
    truth = [(np.concatenate([g, i]), np.r_[np.zeros(len(g), bool), np.ones(len(i), bool)]) for _, g, i in faces]
    if args.turned:
        return turned_bench(args, photos, truth, nofaces, argv)

    models = sorted(Path(args.models).glob("yunet_*.onnx")) if args.models else [WEIGHTS / "face-detector" / DETECTOR_FILE]
    detectors = [Haar()] + [YuNet(str(m), DETECT_MAX_SIDE) for m in models]
    if args.fine:
        # The shipped settings; then photos twice the detector's input (as a phone's photo is many times it),
        # shrunk to half the benchmark's 416 px, with and without the finer tiled pass.
        shipped = WEIGHTS / "face-detector" / DETECTOR_FILE
        detectors += [YuNet(str(shipped), DETECT_MAX_SIDE, DETECT_FINE_SIDE), YuNet(str(shipped), HALF), YuNet(str(shipped), HALF, 2 * HALF)]
    rows, halves = [], {"all": slice(None), "tuning (even)": slice(0, None, 2), "held out (odd)": slice(1, None, 2)}
    for det in tqdm(detectors, desc="detectors", unit="detector"):
        dets, ms = run(det, photos)
        empty, ms_empty = run(det, nofaces)
        is_haar = isinstance(det, Haar)
        # Operating threshold: Haar has none (what detectMultiScale returns); YuNet's is chosen on the tuning half.
        s_tune, tp_tune, n_tune = match(dets[::2], truth[::2], MIN_FACE)
        empty_tune = np.concatenate([s for _, s in empty[::2]] + [np.zeros(0)])
        cands = [-np.inf] if is_haar else [t for t in np.round(np.arange(0.3, 0.96, 0.05), 2) if (empty_tune >= t).sum() / max(len(empty[::2]), 1) <= FP_BUDGET]
        fb = {t: f_beta(*at_threshold(s_tune, tp_tune, n_tune, t)) for t in cands}
        chosen = max(fb, key=lambda t: (round(fb[t], 4), t)) if fb else 0.95  # ties: the stricter threshold
        for half, sl in halves.items():
            for min_size in (0, MIN_FACE):
                s, tp, n = match(dets[sl], truth[sl], min_size)
                prec, rec = at_threshold(s, tp, n, chosen)
                e = empty[sl]
                fp_free = sum(int((sc >= chosen).sum()) for _, sc in e) / max(len(e), 1)
                rows.append({"detector": det.name, "photos": half, "faces": "all" if not min_size else f">= {min_size} px", "threshold": None if is_haar else chosen,
                             "ap": average_precision(s, tp, n), "precision": prec, "recall": rec, "n_faces": n,
                             "false_faces_per_face_free_photo": fp_free, "face_free_photos": len(e), "ms_per_photo": ms,
                             "ms_per_face_free_photo": ms_empty})
    shipped = DETECT_THRESHOLD
    text = markdown(rows, manifest, shipped, " ".join(["python", "scripts/detector_bench.py", *(argv if argv is not None else sys.argv[1:])]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps({"rows": rows, "sources": manifest.get("sources", []), "machine": platform.processor() or platform.machine()}, indent=1))
    (args.out / "bench.md").write_text(text)
    print(text)
    return 0


def turned_bench(args, photos, truth, nofaces, argv) -> int:
    """--turned: what the turned passes cost (false faces, time) and buy (faces found in photos stored turned)."""
    from ferclient.faces import DETECT_THRESHOLD, MIN_FACE, TURNED_THRESHOLD, UPRIGHT_SURE, FaceDetector, turn_boxes

    # Each face photo turned by one quarter turn: 90, 270 and 180 degrees in turn.
    turns = [(1, 3, 2)[i % 3] for i in range(len(photos))]
    turned = [np.ascontiguousarray(np.rot90(p, t)) for p, t in zip(photos, turns)]
    turned_truth = [(turn_boxes(b, t, p.shape[:2]), ig) for (b, ig), p, t in zip(truth, photos, turns)]
    rows = []
    for on in (False, True):
        det = FaceDetector(turned=on)

        def boxes(rgb):
            found = [f for f in det.detect(rgb) if f.size >= MIN_FACE]
            return np.array([f.box for f in found], float).reshape(-1, 4), np.array([f.score for f in found], float)

        row = {"turned_passes": on}
        for name, imgs, gt in (("face_free", nofaces, None), ("upright", photos, truth), ("stored_turned", turned, turned_truth)):
            dets, ms = run(boxes, imgs)
            row[name] = {"photos": len(imgs), "ms_per_photo": ms, "photos_with_no_face": sum(not len(b) for b, _ in dets)}
            scores = np.concatenate([s for _, s in dets] + [np.zeros(0)])
            row[name]["share_at_upright_sure"] = float((scores >= UPRIGHT_SURE).mean()) if len(scores) else None
            if gt is None:
                row[name]["false_faces_per_photo"] = sum(len(b) for b, _ in dets) / len(imgs)
            else:
                s, tp, n = match(dets, gt, MIN_FACE)
                row[name].update(dict(zip(("precision", "recall"), at_threshold(s, tp, n, 0.0)), faces=n))
        rows.append(row)
    # The turned passes' threshold: face-free photos on which they would find a face, at each candidate (they run only on
    # photos in which the upright pass found none).
    det = FaceDetector(turned=False)
    searched = [det._shrunk(rgb) for rgb in nofaces if not det.detect(rgb)]
    sweep = {t: sum(bool(len(r) and (np.maximum(r[:, 2], r[:, 3]) >= MIN_FACE).any()) for r in (det._turned(sm, sc, t) for sm, sc in searched))
             for t in (0.55, 0.65, 0.75, 0.85)}
    command = " ".join(["python", "scripts/detector_bench.py", *(argv if argv is not None else sys.argv[1:])])
    lines = [
        "# Photos stored turned: ferclient's detector without and with its turned passes",
        "",
        f"Command: `{command}`. Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores. "
        f"ferclient's detector as shipped (threshold {DETECT_THRESHOLD:g}, the turned passes at {TURNED_THRESHOLD:g}); faces of at "
        f"least --min-face {MIN_FACE} px; IoU {IOU}. 'stored turned': each face photo turned by 90, 270 or 180 degrees in turn, as a "
        "photo whose EXIF orientation was lost.",
        "",
        "| turned passes | face-free photos: false faces per photo | ms | face photos: precision | recall | ms | stored turned: precision | recall | photos with no face | ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f, u, t = r["face_free"], r["upright"], r["stored_turned"]
        lines.append(f"| {'yes' if r['turned_passes'] else 'no'} | {f['false_faces_per_photo']:.3f} ({f['photos']}) | {f['ms_per_photo']:.0f} | "
                     f"{u['precision']:.3f} | {u['recall']:.3f} ({u['faces']}) | {u['ms_per_photo']:.0f} | {t['precision']:.3f} | {t['recall']:.3f} | "
                     f"{t['photos_with_no_face']} of {t['photos']} | {t['ms_per_photo']:.0f} |")
    off = rows[0]
    lines += [
        "",
        f"Faces found as they stand that score {UPRIGHT_SURE:g} or more (upright() takes them as upright without a look): "
        f"{100 * off['upright']['share_at_upright_sure']:.0f} % in the face photos, {100 * off['stored_turned']['share_at_upright_sure']:.0f} % "
        "in the photos stored turned (faces of --min-face or more).",
        "",
        f"The turned passes' threshold: of the {len(searched)} face-free photos with no face found as they stand, those on which the "
        "turned passes would find one: " + ", ".join(f"{n} at {t:g}" for t, n in sweep.items()) + ".",
    ]
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "turned.json").write_text(json.dumps({"command": command, "rows": rows, "threshold_sweep": sweep}, indent=1))
    (args.out / "turned.md").write_text(text)
    print(text)
    return 0


def markdown(rows, manifest, shipped, command) -> str:
    n_faces = sum(len(e["boxes"]) for e in manifest["faces"])
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")), platform.machine()) if Path("/proc/cpuinfo").is_file() else platform.machine()
    lines = [
        "# Face detection benchmark",
        "",
        f"Command: `{command}`. Machine: {cpu}. {len(manifest['faces'])} photos with {n_faces} annotated faces, "
        f"{len(manifest['nofaces'])} photos without a face; sources in README.md. IoU {IOU}. "
        f"ferclient ships threshold {shipped:g}.",
        "",
        "Rows: every photo, all faces and faces of at least ferclient's --min-face; then the held-out half alone. The tuning half is in bench.json.",
        "",
        "| detector | photos | faces | threshold | AP | precision | recall | false faces per face-free photo | ms per photo (face-free) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["photos"] == "tuning (even)" or (r["photos"] != "all" and r["faces"] == "all"):
            continue  # in bench.json
        t = "-" if r["threshold"] is None else f"{r['threshold']:.2f}"
        lines.append(f"| {r['detector']} | {r['photos']} | {r['faces']} ({r['n_faces']}) | {t} | {r['ap']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} | "
                     f"{r['false_faces_per_face_free_photo']:.3f} ({r['face_free_photos']} photos) | {r['ms_per_photo']:.0f} ({r['ms_per_face_free_photo']:.0f}) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
