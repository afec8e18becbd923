"""A test video made from a real photo, for ferclient watch: one face panned, zoomed and re-lit, a second entering and leaving.

The first face holds still through the middle 30 % of the video (as faces at a
kiosk or on a call mostly do) while the second one walks in and out; sensor
noise changes every frame, so a still face is never bit-identical.

skimage.data.astronaut() (public domain) is the only face photo shipped inside a
registry package, so the second face is its mirror image, smaller, crossing the
frame from the right. Frame counts and timings are deterministic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIZE = (640, 480)  # w, h
FPS = 25.0
HEAD = (150, 30, 150, 190)  # x, y, w, h of the astronaut's head (hair to chin) in the 512x512 photo


def second_face_span(frames: int) -> tuple[int, int]:
    """[first, last) frames in which the second face is inside the picture."""
    return int(0.3 * frames), int(0.7 * frames)


def expression_schedule(frames: int, faces: int, hold: float = 0.6) -> list[tuple[int, int, float]]:
    """Per frame (face a, face b, mix): each FER2013 face is held, then cross-dissolves into the next."""
    span = frames / faces
    out = []
    for i in range(frames):
        k, r = divmod(i / span, 1.0)
        mix = 0.0 if r < hold else (r - hold) / (1.0 - hold)
        out.append((int(k), min(int(k) + 1, faces - 1), mix))
    return out


def make_video(path: str | Path, frames: int = 100, fps: float = FPS, seed: int = 0, fer_faces: np.ndarray | None = None) -> Path:
    """fer_faces (uint8 [K, 48, 48], e.g. FER2013 PrivateTest faces): a third face at the top right that changes
    expression, each face held and then dissolved into the next, so carried-forward answers can lag behind a change."""
    import cv2
    import skimage.data

    photo = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    x, y, w, h = HEAD
    mirror = cv2.flip(photo[y:y + h, x:x + w], 1)
    W, H = SIZE
    rng = np.random.default_rng(seed)
    background = cv2.GaussianBlur(rng.integers(60, 200, (H // 8, W // 8, 3), dtype=np.uint8), (0, 0), 2)
    background = cv2.resize(background, SIZE, interpolation=cv2.INTER_CUBIC)
    path = Path(path)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, SIZE)
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write {path}")
    enter, leave = second_face_span(frames)
    schedule = expression_schedule(frames, len(fer_faces)) if fer_faces is not None else None
    for i in range(frames):
        u = float(np.interp(i, [0, 0.4 * frames, 0.7 * frames, frames - 1], [0.0, 0.5, 0.5, 1.0]))  # progress; still in the middle
        canvas = background.copy()
        scale = 0.55 + 0.2 * np.sin(np.pi * u)  # zoom in and out
        big = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        ox = int(20 + 120 * u)  # pan to the right
        oy = int(40 + 30 * np.sin(2 * np.pi * u))
        bh, bw = min(big.shape[0], H - oy), min(big.shape[1], W - ox)
        canvas[oy:oy + bh, ox:ox + bw] = big[:bh, :bw]
        if enter <= i < leave:
            v = (i - enter) / max(1, leave - enter - 1)
            small = cv2.resize(mirror, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)
            sh, sw = small.shape[:2]
            sx, sy = W - int((sw + 120) * np.sin(np.pi * v)), H - sh - 20  # walks in from the right edge and back out
            visible = min(sw, W - sx)
            if visible > 0:
                canvas[sy:sy + sh, sx:sx + visible] = small[:, :visible]
        if schedule is not None:
            a, b, mix = schedule[i]
            face = (1 - mix) * fer_faces[a].astype(np.float32) + mix * fer_faces[b].astype(np.float32)
            face = cv2.resize(face, (132, 132), interpolation=cv2.INTER_CUBIC)
            tile = np.full((176, 176), float(np.median(face)), np.float32)  # a plain frame around the crop, so the detector sees a whole face
            tile[22:154, 22:154] = face
            canvas[16:192, W - 196:W - 20] = np.clip(tile, 0, 255).astype(np.uint8)[:, :, None]
        gain = 0.75 + 0.35 * (0.5 + 0.5 * np.sin(3 * np.pi * u))  # re-lit
        noise = rng.normal(0.0, 2.0, canvas.shape)
        writer.write(np.clip(canvas.astype(np.float32) * gain + noise, 0, 255).astype(np.uint8))
    writer.release()
    return path
