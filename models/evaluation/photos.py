"""The deployed path from whole photos, where the truth is known: fereval --photos.

FER2013 faces are pasted into larger canvases (random size 64-192 px, position, textured background,
tilt), then each canvas goes the way a user's photo goes: ferclient's detector, its crop (aligned or the
detector's box), its ONNX encoder, a real ferserver over gRPC, the label. The same faces sent as their
original 48x48 crops give the ceiling. A face the detector misses counts as wrong.

This is a synthetic check of detection, framing and tilt, not of in-the-wild expressions: the faces
are still FER2013's.
"""

from __future__ import annotations

import math

import numpy as np

TILTS = (0.0, 10.0, 20.0)  # degrees, largest of a uniform range; each canvas draws its own tilt
SIDES = (64, 192)  # px, the pasted 48x48 crop's side: drawn uniformly from this range, ends included


def canvas(face: np.ndarray, rng: np.random.Generator, max_tilt: float, sides: tuple[int, int] = SIDES):
    """(gray canvas uint8, face centre (x, y), face side px) with one FER2013 face pasted and tilted."""
    import cv2

    side = int(rng.integers(sides[0], sides[1] + 1))
    h, w = int(rng.integers(side + 48, side * 3)), int(rng.integers(side + 48, side * 3))
    # Background: smooth noise at a random gray level and contrast (no faces in it, unlike a crowd photo).
    coarse = rng.normal(0, 1, (h // 16 + 2, w // 16 + 2)).astype(np.float32)
    bg = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC) * rng.uniform(10, 50) + rng.uniform(40, 215)
    img = np.clip(bg, 0, 255).astype(np.uint8)
    x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    img[y0 : y0 + side, x0 : x0 + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC if side > 48 else cv2.INTER_AREA)
    centre = (x0 + side / 2, y0 + side / 2)
    angle = float(rng.uniform(-max_tilt, max_tilt))
    if angle:
        m = cv2.getRotationMatrix2D(centre, angle, 1.0)
        img = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return img, centre, side


def _hit(face, centre, side) -> bool:
    """The detection is the pasted face: its box centre lies within a third of the face's side of the true centre."""
    x, y, w, h = face.box
    return math.hypot(x + w / 2 - centre[0], y + h / 2 - centre[1]) < side / 3


def crops(faces: np.ndarray, max_tilt: float, seed: int, threshold: float, bar=None, sides: tuple[int, int] = SIDES):
    """For each face: (found, aligned 48x48, box-cut 48x48), with the ferclient detector on a synthetic photo
    (a face under ferclient send's default --min-face counts as not found, as send skips it)."""
    from ferclient.faces import MIN_FACE, FaceDetector, align, box_crop

    det = FaceDetector(threshold)
    rng = np.random.default_rng(seed)
    found = np.zeros(len(faces), bool)
    aligned = faces.copy()
    boxed = faces.copy()
    for i, face in enumerate(faces):
        img, centre, side = canvas(face, rng, max_tilt, sides)
        hits = [f for f in det.detect(img) if f.size >= MIN_FACE and _hit(f, centre, side)]
        if hits:
            best = max(hits, key=lambda f: f.score)
            found[i] = True
            aligned[i] = align(img, best)
            boxed[i] = box_crop(img, best)
        if bar is not None:
            bar.update(1)
    return found, aligned, boxed


def server_probabilities(address: str, model_dir, faces: np.ndarray, quality: int | None = None, batch: int = 64) -> np.ndarray:
    """Class probabilities [N, 7] from a real ferserver for 48x48 faces encoded by ferclient's encoder."""
    import grpc

    from fercodec.v1 import fercodec_pb2 as pb
    from fercodec.v1 import fercodec_pb2_grpc as pb_grpc
    from ferclient.encoder import FaceEncoder

    enc = FaceEncoder(model_dir)
    out = []
    with grpc.insecure_channel(address) as ch:
        stub = pb_grpc.FerCodecStub(ch)
        for s in range(0, len(faces), batch):
            reply = stub.Recognize(pb.RecognizeRequest(faces=enc.encode(faces[s : s + batch], quality)), timeout=60)
            out += [list(r.probabilities) for r in reply.results]
    return np.array(out, np.float64).reshape(len(faces), -1)


def recognise(address: str, model_dir, faces: np.ndarray, quality: int | None = None) -> np.ndarray:
    """Labels (class indices) from a real ferserver."""
    return server_probabilities(address, model_dir, faces, quality).argmax(1)


def evaluate_photos(address: str, faces: np.ndarray, labels: np.ndarray, model_dirs: dict, seed: int = 0,
                    threshold: float | None = None, tilts=TILTS, sides: tuple[int, int] = SIDES) -> list[dict]:
    """One row per (tilt, model): detection rate and accuracy aligned / box / original crop."""
    from tqdm import tqdm

    from ferclient.faces import DETECT_THRESHOLD

    threshold = DETECT_THRESHOLD if threshold is None else threshold
    ceiling = {name: recognise(address, d, faces, None) == labels for name, d in model_dirs.items()}
    rows = []
    for tilt in tilts:
        with tqdm(total=len(faces), desc=f"photos, tilt up to {tilt:g} deg", unit="photo", leave=False) as bar:
            found, aligned, boxed = crops(faces, tilt, seed, threshold, bar, sides)
        for name, d in model_dirs.items():
            acc_a = ((recognise(address, d, aligned, None) == labels) & found).mean()
            acc_b = ((recognise(address, d, boxed, None) == labels) & found).mean()
            rows.append({"tilt": tilt, "model": name, "faces": int(len(faces)), "sides": list(sides), "detected": float(found.mean()),
                         "aligned": float(acc_a), "box": float(acc_b), "original_crop": float(ceiling[name].mean()),
                         "aligned_of_detected": float(acc_a / max(found.mean(), 1e-9)), "original_of_detected": float(ceiling[name][found].mean())})
    return rows


def markdown(rows: list[dict], command: str, machine: str) -> str:
    lines = [
        "# The deployed path from photos (synthetic canvases)",
        "",
        f"Command: `{command}`. Machine: {machine}.",
        "",
        "Each FER2013 PrivateTest face is pasted into its own canvas ({}-{} px, random place, textured".format(*rows[0].get("sides", SIDES)),
        "background, tilted uniformly up to the given angle), found by ferclient's detector, cut out aligned",
        "(eyes levelled onto FER2013's landmarks) or from the detector's box, encoded by ferclient at the",
        "model's default setting and labelled by a real ferserver. A missed face counts as wrong.",
        "'original crop' sends the dataset's own 48x48 crop: the ceiling for this model. The last two columns",
        "count only the faces the detector found, so they compare framing alone.",
        "",
        "| tilt up to | model | faces | detected | accuracy, aligned | accuracy, box crop | original crop | detected faces: aligned | detected faces: original crop |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['tilt']:g} deg | {r['model']} | {r['faces']} | {100 * r['detected']:.1f} % | {100 * r['aligned']:.2f} % | "
                     f"{100 * r['box']:.2f} % | {100 * r['original_crop']:.2f} % | {100 * r['aligned_of_detected']:.2f} % | {100 * r['original_of_detected']:.2f} % |")
    return "\n".join(lines) + "\n"
