"""ferclient send --annotate DIR: each photo saved with its faces boxed and labelled, for a person to look at.

A group photo answered as JSON lines says which face is which only through boxes; the annotated copy shows it.
Pillow only (no OpenCV, no torch), so the edge install stays as it is.
"""

from __future__ import annotations

from pathlib import Path

# One colour per FER2013 class (matplotlib's tab10, which colour-blind readers tell apart better than a rainbow);
# a class name not here (another model's classes) gets white.
CLASS_COLOURS = {
    "angry": (214, 39, 40),
    "disgust": (44, 160, 44),
    "fear": (148, 103, 189),
    "happy": (255, 127, 14),
    "sad": (31, 119, 180),
    "surprise": (23, 190, 207),
    "neutral": (199, 199, 199),
}
SKIPPED_COLOUR = (110, 110, 110)  # faces below --min-face: found, not classified
SUFFIX = "_annotated.jpg"


def output_path(stem: str, out_dir: str | Path) -> Path:
    """Where the annotated copy of a photo goes, given the stem ferclient chose for it (unique within a run): never
    the photo itself, whose name lacks SUFFIX."""
    return Path(out_dir) / (stem + SUFFIX)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: a scalable font
    except TypeError:
        return ImageFont.load_default()


def draw(rgb, marks, scale: float = 1.0):
    """A Pillow RGB image of rgb (uint8 [H, W, 3]) with each mark drawn: marks are (box, text, colour), box
    (x, y, w, h) in the file's pixels (divided by `scale`, the pixels one of rgb's spans) or None for the whole image;
    text None draws the box alone, thinner (a face skipped for its size).

    The unlabelled boxes go first and every label last, each where it covers no label placed before it: above its
    box, below it, or inside its top or bottom edge (else where it covers least). Why: in a crowd the grey "too small"
    tags of 60 skipped faces buried the photo and hid classified faces' labels drawn before them (an audit of 62
    WIDER FACE photos, 2026-12-08), and neighbours' labels wrote over each other."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(rgb).convert("RGB")
    pen = ImageDraw.Draw(im)
    W, H = im.size
    line = max(2, round(max(W, H) / 400))

    def corners(box):
        if box is None:
            return 0, 0, W - 1, H - 1
        x, y, w, h = (v / scale for v in box)
        return x, y, x + w, y + h

    for box, text, colour in sorted(marks, key=lambda m: m[1] is not None):  # the unlabelled first, under the rest
        pen.rectangle(corners(box), outline=colour, width=line if text is not None else max(1, line // 2))
    placed: list[tuple[float, float, float, float]] = []
    for box, text, colour in marks:
        if text is None:
            continue
        x0, y0, x1, y1 = corners(box)
        font = _font(int(min(max(0.15 * (x1 - x0), 11), max(W, H) / 25)))
        left, top, right, bottom = pen.textbbox((0, 0), text, font=font)
        tw, th = right - left + 2 * line, bottom - top + 2 * line
        tx = min(max(0, x0), max(0, W - tw))
        spots = [(tx, ty) for ty in (y0 - th, y1 + line, y0 + line, y1 - th) if 0 <= ty <= H - th] or [(tx, max(0, min(y0 + line, H - th)))]
        tx, ty = min(spots, key=lambda p: sum(_overlap((p[0], p[1], p[0] + tw, p[1] + th), r) for r in placed))  # the first of the least covering
        placed.append((tx, ty, tx + tw, ty + th))
        pen.rectangle(placed[-1], fill=colour)
        dark = sum(colour) < 380  # white text on a dark label, black on a light one
        pen.text((tx + line - left, ty + line - top), text, fill=(255, 255, 255) if dark else (0, 0, 0), font=font)
    return im


def _overlap(a, b) -> float:
    """The area two rectangles (x0, y0, x1, y1) share."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def annotate(src: str | Path | bytes, out: Path, marks) -> None:
    """Read src (a path, or the bytes read from standard input) again (upright, as ferclient read it), draw marks, save
    out as JPEG. ImageError/OSError on failure."""
    from .faces import load_rgb

    rgb, scale = load_rgb(src)
    draw(rgb, marks, scale).save(out, quality=90)


def marks_for(faces, labels, confidences, skipped=()):
    """(box, text, colour) for each classified face, and (box, None, grey) for each face skipped for its size."""
    marks = [(None if f is None else f.box, f"{lab} {conf:.2f}", CLASS_COLOURS.get(lab, (255, 255, 255)))
             for f, lab, conf in zip(faces, labels, confidences)]
    marks += [(f.box, None, SKIPPED_COLOUR) for f in skipped]  # a thin grey box: a label each buried crowd photos
    return marks
