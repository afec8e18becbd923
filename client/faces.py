"""Find faces in a photo and cut them out the way FER2013 faces are cut: grayscale, square, 48x48."""

from __future__ import annotations

from pathlib import Path

import numpy as np

FACE_MARGIN = 0.1  # of the detected box, added on each side: FER2013 crops include a little forehead and chin


class ImageError(ValueError):
    """The file cannot be read as an image."""


def load_gray(path: str | Path):
    """A PIL 'L' image, or ImageError with a one-line reason."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.exists():
        raise ImageError("no such file")
    if p.is_dir():
        raise ImageError("is a directory, not an image")
    try:
        with Image.open(p) as im:
            im.load()
            return im.convert("L")
    except UnidentifiedImageError:
        raise ImageError("not an image Pillow can read") from None
    except OSError as e:
        raise ImageError(f"cannot read image ({e})") from None


def detect(gray: np.ndarray, min_size: int = 24) -> list[tuple[int, int, int, int]]:
    """Face boxes (x, y, w, h), largest first, with OpenCV's bundled frontal Haar cascade."""
    import cv2

    cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"))
    boxes = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_size, min_size))
    return sorted((tuple(int(v) for v in b) for b in boxes), key=lambda b: -b[2] * b[3])


def crop(image, box: tuple[int, int, int, int] | None, size: int = 48, margin: float = FACE_MARGIN) -> np.ndarray:
    """Square crop around box (whole image if None), resized to size x size uint8."""
    from PIL import Image

    if box is None:
        region = image
    else:
        x, y, w, h = box
        side = max(w, h) * (1 + 2 * margin)
        cx, cy = x + w / 2, y + h / 2
        # PIL pads outside the image with black; faces at the border stay square.
        region = image.crop(tuple(int(round(v)) for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)))
    return np.asarray(region.resize((size, size), Image.Resampling.BOX), dtype=np.uint8)
