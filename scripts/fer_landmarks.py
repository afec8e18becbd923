"""Where the face detector puts its five landmarks and its box on FER2013 training faces.

The medians are ferclient.faces.FER2013_LANDMARKS and FER2013_BOX: the frame that alignment warps a
photo's face onto, so crops from photos look like the faces the models were trained on.

    python scripts/fer_landmarks.py [--faces 3000]

Each face is upscaled 3x (bicubic) and padded with its own mean gray, since YuNet does not fire on a
face that fills the whole image; coordinates are mapped back to the 48x48 frame.
"""

from __future__ import annotations

import argparse

import numpy as np

from fermodels import argtypes


def measure(faces: np.ndarray, scale: int = 3, pad: int = 96):
    """(landmarks [n,5,2], boxes [n,4]) in 48x48 coordinates for the faces the detector finds, and the number missed."""
    import cv2

    from ferclient.faces import FaceDetector

    det = FaceDetector(threshold=0.5)
    side = faces.shape[1] * scale
    lms, boxes, missed = [], [], 0
    for face in faces:
        up = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
        canvas = cv2.copyMakeBorder(up, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=int(face.mean()))
        found = det.detect(canvas)
        if not found:
            missed += 1
            continue
        f = max(found, key=lambda f: f.score)
        lms.append((f.landmarks - pad) / scale)
        boxes.append((np.array(f.box, np.float32) - [pad, pad, 0, 0]) / scale)
    return np.array(lms), np.array(boxes), missed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--faces", type=argtypes.count, default=3000, help="random training faces to measure (default 3000; at most all of them)")
    p.add_argument("--seed", type=argtypes.checked(int, lambda v: v >= 0, "0 or more"), default=0, help="seeds the draw of faces")
    args = p.parse_args(argv)

    from fermodels.data import load_split

    x, _ = load_split("train")
    if args.faces > len(x):
        p.error(f"argument --faces: FER2013 has {len(x)} training faces, got {args.faces}")
    idx = np.random.default_rng(args.seed).choice(len(x), args.faces, replace=False)
    lms, boxes, missed = measure(x[idx])
    names = ("right eye", "left eye", "nose tip", "right mouth corner", "left mouth corner")
    print(f"{len(lms)} of {args.faces} FER2013 training faces detected ({missed} missed); medians in the 48x48 frame:")
    for n, (x_, y_) in zip(names, np.median(lms, 0)):
        print(f"  {n:<19} x {x_:5.2f}  y {y_:5.2f}")
    bx = np.median(boxes, 0)
    print(f"  box                 x {bx[0]:5.2f}  y {bx[1]:5.2f}  w {bx[2]:5.2f}  h {bx[3]:5.2f}")
    eye = np.linalg.norm(lms[:, 1] - lms[:, 0], axis=1)
    print(f"  eye distance: median {np.median(eye):.2f} px, interquartile {np.percentile(eye, 25):.2f} to {np.percentile(eye, 75):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
