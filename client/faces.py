"""Find faces in a photo and cut them out the way FER2013 faces are framed: grayscale, 48x48, eyes level.

Detection is YuNet (a 76 k-parameter CNN, shipped as ONNX in fermodels/weights/face-detector and run by
OpenCV's FaceDetectorYN: no torch). Its five landmarks drive a similarity warp onto FER2013_LANDMARKS, the
median landmark positions YuNet reports on FER2013 training faces, so a crop from a photo is framed like the
faces the models were trained on (docs/detector).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

DETECTOR_FILE = "yunet_n_640_640.onnx"
DETECT_THRESHOLD = 0.55  # YuNet score: the best F0.5 on the detection benchmark's tuning half within 0.05 false faces per face-free photo (docs/detector)
NMS_IOU = 0.3
MIN_FACE = 24  # px, the box's longer side in the original photo; smaller faces are skipped, not classified
DECODE_MIN_SIDE = 1600  # px: large JPEGs are decoded at the smallest DCT scale that keeps the longer side at least this
DETECT_MAX_SIDE = 640  # photos are shrunk to this longer side for detection (YuNet's training size; peak RSS), crops come from full resolution

# Where YuNet puts its five landmarks (right eye, left eye, nose tip, right and left mouth corner; x, y in
# pixels of a 48x48 face) on 3,000 FER2013 training faces: the median. Measured by scripts/fer_landmarks.py.
FER2013_LANDMARKS = np.array([[14.73, 18.10], [32.58, 18.10], [23.64, 27.51], [16.08, 35.43], [31.19, 35.37]], np.float32)
# FER2013's frame around YuNet's box: the median box on those faces.
FER2013_BOX = (4.67, 1.00, 37.67, 46.67)


class ImageError(ValueError):
    """The file cannot be read as an image."""


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]  # x, y, w, h in the photo's pixels
    score: float  # detector confidence, 0..1
    landmarks: np.ndarray  # [5, 2] float32: right eye, left eye, nose, right and left mouth corner

    @property
    def size(self) -> int:
        return max(self.box[2], self.box[3])

    def rescaled(self, k: float) -> "Face":
        return self if k == 1.0 else Face(tuple(int(round(v * k)) for v in self.box), self.score, self.landmarks * k)


def load_rgb(path: str | Path) -> tuple[np.ndarray, float]:
    """(uint8 [H, W, 3], scale): a photo's pixels and how many of its own pixels one of them spans.

    A large JPEG is decoded at a reduced size (libjpeg's DCT scaling, Pillow's draft mode), keeping its
    longer side at least DECODE_MIN_SIDE: a 12-megapixel photo then costs a quarter of the memory and
    time, and a face still has more pixels than the 48x48 crop needs. ImageError with a one-line reason."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.exists():
        raise ImageError("no such file")
    if p.is_dir():
        raise ImageError("is a directory, not an image")
    try:
        with Image.open(p) as im:
            full = im.size
            if im.format == "JPEG" and max(full) > DECODE_MIN_SIDE:
                k = DECODE_MIN_SIDE / max(full)
                im.draft("RGB", (max(1, int(full[0] * k)), max(1, int(full[1] * k))))
            im.load()
            return np.asarray(im.convert("RGB")), full[0] / im.size[0]
    except UnidentifiedImageError:
        raise ImageError("not an image Pillow can read") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(f"cannot read image ({e})") from None


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma, as Pillow's convert('L') and FER2013's grayscale."""
    import cv2

    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


class FaceDetector:
    """YuNet through cv2.FaceDetectorYN; one instance serves any number of photos of any size."""

    def __init__(self, threshold: float = DETECT_THRESHOLD, max_side: int = DETECT_MAX_SIDE, model: str | Path | None = None):
        import cv2

        if not 0.0 < threshold < 1.0:
            raise ValueError(f"detect threshold must be between 0 and 1, got {threshold:g}")
        self.max_side = max_side
        from ferwire.card import WEIGHTS

        path = Path(model) if model else WEIGHTS / "face-detector" / DETECTOR_FILE
        if not path.is_file():
            raise OSError(f"face detector weights missing: {path}")
        self._net = cv2.FaceDetectorYN.create(str(path), "", (320, 320), threshold, NMS_IOU, 5000)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces in an RGB (or gray) uint8 photo, largest first."""
        import cv2

        if rgb.ndim == 2:
            rgb = cv2.cvtColor(rgb, cv2.COLOR_GRAY2RGB)
        h, w = rgb.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        small = rgb if scale == 1.0 else cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        self._net.setInputSize((small.shape[1], small.shape[0]))
        _, found = self._net.detect(cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
        faces = []
        for row in [] if found is None else found:
            x, y, bw, bh = (float(v) / scale for v in row[:4])
            x0, y0 = max(0, round(x)), max(0, round(y))
            box = (x0, y0, min(w, round(x + bw)) - x0, min(h, round(y + bh)) - y0)
            if box[2] > 0 and box[3] > 0:
                faces.append(Face(box, float(row[14]), (row[4:14].reshape(5, 2) / scale).astype(np.float32)))
        return sorted(faces, key=lambda f: -f.box[2] * f.box[3])


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 least-squares similarity (rotation, uniform scale, shift) taking src points onto dst (Umeyama, no reflection)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ sign @ vt
    scale = (sig * np.diag(sign)).sum() / s.var(0).sum()
    m = np.zeros((2, 3), np.float64)
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def align(gray: np.ndarray, face: Face, size: int = 48) -> np.ndarray:
    """size x size uint8: the face warped so its landmarks sit where FER2013's do (eyes level, FER2013's scale)."""
    import cv2

    m = _similarity(face.landmarks.astype(np.float64), FER2013_LANDMARKS.astype(np.float64) * (size / 48.0))
    # Warp at 4x and shrink with area averaging, so a large face is low-passed like a resize, not aliased.
    up = 4 if face.size > 2 * size else 1
    m_up = m * up
    big = cv2.warpAffine(gray, m_up, (size * up, size * up), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return big if up == 1 else cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)


def box_crop(gray: np.ndarray, face: Face, size: int = 48) -> np.ndarray:
    """size x size uint8 cut from the detector's box alone (no rotation), framed as FER2013_BOX: the --no-align path."""
    from PIL import Image

    x, y, w, h = face.box
    fx, fy, fw, fh = FER2013_BOX
    side = h * 48.0 / fh
    left = x + w / 2 - side * (fx + fw / 2) / 48.0
    top = y - side * fy / 48.0
    region = Image.fromarray(gray).crop(tuple(int(round(v)) for v in (left, top, left + side, top + side)))
    return np.asarray(region.resize((size, size), Image.Resampling.BOX), dtype=np.uint8)


def whole(gray: np.ndarray, size: int = 48) -> np.ndarray:
    """The whole image resized to size x size: --no-detect, for photos that are already face crops."""
    from PIL import Image

    return np.asarray(Image.fromarray(gray).resize((size, size), Image.Resampling.BOX), dtype=np.uint8)
