"""Find faces in a photo and cut them out the way FER2013 faces are framed: grayscale, 48x48, eyes level.

Detection is YuNet (a 76 k-parameter CNN, shipped as ONNX in fermodels/weights/face-detector, run by ONNX
Runtime and decoded as OpenCV's FaceDetectorYN does: no torch, no OpenCV). Its five landmarks drive a
similarity warp onto FER2013_LANDMARKS, the median landmark positions YuNet reports on FER2013 training
faces, so a crop from a photo is framed like the faces the models were trained on (docs/detector).
"""

from __future__ import annotations

import functools
import io
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

DETECTOR_FILE = "yunet_n_dynamic.onnx"  # YuNet-n with symbolic input size (scripts/yunet_dynamic.py)
DETECT_THRESHOLD = 0.55  # YuNet score: the best F0.5 on the detection benchmark's tuning half within 0.05 false faces per face-free photo (docs/detector)
NMS_IOU = 0.3
MIN_FACE = 24  # px, the box's longer side in the original photo; smaller faces are skipped, not classified
EXIF_ORIENTATION = 0x0112
DECODE_MIN_SIDE = 1600  # px: large JPEGs are decoded at the smallest DCT scale that keeps the longer side (budget_side) at least this, others reduced so
DITHER_BLUR_PX = 1.5  # Gaussian sigma that turns a 1-bit photo's dither back into greys the detector finds a face in
# WebP's decoder holds about 16 bytes a pixel while it decodes (a 108-megapixel WebP peaked at 1.75 GB, the same image as
# PNG at 0.54 GB and as JPEG at 0.19 GB): larger WebPs are refused with one line rather than risk an edge device's memory.
WEBP_MAX_PIXELS = 40_000_000
REDUCIBLE_MODES = ("L", "LA", "RGB", "RGBA", "RGBa", "PA", "La", "I", "F", "CMYK", "YCbCr")  # what Pillow's Image.reduce takes
SHRINK_TAP_BYTES = 4 << 20  # shrink works in column bands whose float32 tap is at most this (peak memory)
DETECT_MAX_SIDE = 640  # photos are shrunk to this longer side (budget_side: a panorama's by its area) for detection (YuNet's training size; peak RSS), crops come from full resolution
# A second, finer pass finds the small faces the shrink loses: the photo at up to this longer side, in tiles of
# DETECT_MAX_SIDE; it keeps only faces under SMALL_FACE px at the first pass's scale, where that pass is weak.
# Small faces are where phantoms are (textures, windows), so that pass asks for FINE_THRESHOLD at least: the threshold the
# benchmark's tuning half picks for small faces (photos shrunk to half, then the tiled pass; docs/detector).
DETECT_FINE_SIDE = 1280
SMALL_FACE = 32
FINE_THRESHOLD = 0.75
# YuNet finds a face lying on its side, upside down or tilted 45 degrees, but puts its landmarks where an upright
# face's would be, so alignment keeps the face as it lies (a smiling face turned 90 degrees was read as sad). Each
# face found is looked at again in a patch around it, turned by each eighth of a turn; the best-scoring turn gives
# the landmarks. The eight turned patches sit side by side in one mosaic: one detector run instead of eight.
UPRIGHT_PATCH = 160  # px: the patch's side, twice the face's (YuNet's strongest sizes)
UPRIGHT_TURNS = tuple(range(0, 360, 45))  # degrees counter-clockwise
UPRIGHT_MARGIN = 0.03  # a turn must beat the face as found by this much, so upright faces keep their landmarks
# Faces found at this score are taken as upright without the look (on the detection benchmark's photos, half of the upright
# faces of --min-face or more and 2 % of those on their side), and so are faces under MIN_FACE, which send skips: a crowd costs less.
UPRIGHT_SURE = 0.9
# A face whose eye line tilts by this much is found again in its patch turned level (levelled()); that run keeps any
# detection of this score near the patch's centre. Neither was searched.
LEVEL_MIN_ROLL = 8.0  # degrees
LEVEL_THRESHOLD = 0.3
# levelled()'s patch, twice the face's side, at upright()'s size. 320 px (the face at about 160 px in it) was tried on
# 2026-12-06 and not taken: on web photos turned 30 degrees the eye line followed the tilt more faithfully, but the
# astronaut turned by quarter turns was cut worse, and accuracy did not move beyond noise (docs/detector, "Alignment").
LEVEL_PATCH = UPRIGHT_PATCH  # px
# A photo in which no other pass finds a face (the first, the tiled and the turned passes) gets one more, for a face
# that fills the frame (a face crop, a close-up): YuNet hardly fires on a face with no head or background around it.
# The photo is scaled to CLOSE_UP_FACE px on its longer side and set in a border of its own mean colour,
# CLOSE_UP_BORDER of that each way: the context scripts/fer_landmarks.py gives FER2013's faces, where 96.5 % are
# found (docs/detector, "Face crops and close-ups").
CLOSE_UP_FACE = 144
CLOSE_UP_BORDER = 2 / 3
# A photo in which no face is found as it stands is searched again turned each quarter turn, then (none found still)
# by 45 degrees each way; those passes ask for this score: on the detection benchmark's 121 face-free photos it adds
# no false face (0.75 added four; docs/detector).
TURNED_THRESHOLD = 0.85
PHOTO_TURNS = (90, 270, 180)  # degrees counter-clockwise, in the order tried
PHOTO_TILTS = (45, -45)

# Where YuNet puts its five landmarks (right eye, left eye, nose tip, right and left mouth corner; x, y in
# pixels of a 48x48 face) on 3,000 FER2013 training faces: the median. Measured by scripts/fer_landmarks.py.
FER2013_LANDMARKS = np.array([[14.73, 18.10], [32.58, 18.10], [23.64, 27.51], [16.08, 35.43], [31.19, 35.37]], np.float32)
# FER2013's frame around YuNet's box: the median box on those faces.
FER2013_BOX = (4.67, 1.00, 37.67, 46.67)
# Contrast and brightness of FER2013's training faces (the grey levels' standard deviation and mean over the crop's centre,
# the middle two thirds each way): a crop flatter than FLAT_STD (their 2nd percentile) is stretched to TYPICAL_STD (their
# median), its mean clipped to FER2013_MEANS (their 5th to 95th percentiles).
FLAT_STD = 22.0
TYPICAL_STD = 43.0
FER2013_MEANS = (80.0, 191.0)
# Sharpness of FER2013's training faces: the variance of the centre's 4-neighbour Laplacian. A crop under BLURRED_VAR
# (all but 0.24 % of them are sharper; their 1st percentile is 482) is sharpened by an unsharp mask: crop + UNSHARP_AMOUNT * (crop - Gaussian(sigma 1)).
BLURRED_VAR = 300.0
UNSHARP_AMOUNT = 1.5
UNSHARP_TAPS = np.exp(-0.5 * np.arange(-4, 5) ** 2)
UNSHARP_TAPS /= UNSHARP_TAPS.sum()
# Noise of FER2013's training faces, by Immerkaer's estimate (grey levels): median 4.6 (their texture and JPEG
# artefacts, not sensor noise), 98.2 % under NOISY_SIGMA. A noisier crop gets non-local means with patches of
# (2 * NLM_PATCH + 1)^2 pixels, searched NLM_SEARCH pixels each way, at the strength of the noise above that median.
NOISY_SIGMA = 9.0
FER2013_TEXTURE_SIGMA = 4.6
NLM_SEARCH, NLM_PATCH = 5, 1


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

    @property
    def roll(self) -> float:
        """The eye line's tilt in degrees, clockwise as the photo shows it (image y points down): what levelled() turns back."""
        (rx, ry), (lx, ly) = self.landmarks[0], self.landmarks[1]
        return float(np.degrees(np.arctan2(ly - ry, lx - rx)))

    def rescaled(self, k: float) -> "Face":
        return self if k == 1.0 else Face(tuple(int(round(v * k)) for v in self.box), self.score, self.landmarks * k)


def load_rgb(path: str | Path | bytes, warn: Callable[[str], None] | None = None) -> tuple[np.ndarray, float]:
    """(uint8 [H, W, 3], scale): a photo's pixels, upright as its EXIF orientation says, and how many of its own
    pixels one of them spans.

    A large JPEG is decoded at a reduced size (libjpeg's DCT scaling, Pillow's draft mode), keeping its
    longer side at least DECODE_MIN_SIDE: a 12-megapixel photo then costs a quarter of the memory and
    time, and a face still has more pixels than the 48x48 crop needs. Other formats cannot be decoded so; a large one
    is averaged over k x k blocks once decoded (Image.reduce) to a longer side of DECODE_MIN_SIDE up to 2x that, before
    the copies that follow would each hold the whole photo. HEIC/HEIF photos (what iPhones save) are read
    with pi-heif. A truncated file (a download or copy cut short) is read as far as it goes, as a browser shows it,
    the rest filled by the decoder (JPEG grey, PNG black), and `warn` gets one line saying so. ImageError with a
    one-line reason. `path` may be the file's bytes instead (what `ferclient send -` reads from standard input)."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(path, bytes):
        if not path:
            raise ImageError("empty: no image arrived")
        p = _Bytes(path)
    else:
        p = Path(path)
        try:
            if not p.exists():
                raise ImageError("no such file")
            if p.is_dir():
                raise ImageError("is a directory, not an image" if str(path) else "an empty path, not an image")
            if p.is_file() and p.stat().st_size == 0:
                raise ImageError("an empty file (0 bytes): not an image")
        except OSError as e:  # a name too long for the file system, say
            raise ImageError(f"cannot read it ({e.strerror or e})") from None
    heif = p.suffix.lower() in (".heic", ".heif")
    try:
        try:
            return _decoded(p, warn=warn)
        except UnidentifiedImageError:
            if not _heif_opener():
                raise
            return _decoded(p, warn=warn)  # HEIC/HEIF (an iPhone's photos), read with pi-heif's opener in place
        except OSError as e:
            if "truncated" not in str(e):
                raise
            out = _decoded(p, truncated=True)  # its frame count was told on the first try
            if warn:
                warn("the file is truncated: read the part that arrived, the rest is blank")
            return out
    except UnidentifiedImageError:
        if heif and not _heif_opener():
            raise ImageError("HEIC/HEIF photos need the pi-heif package (pip install pi-heif), or convert it to JPEG") from None
        raise ImageError("not an image pi-heif can read as HEIC/HEIF" if heif else "not an image Pillow can read") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(_unreadable(e)) from None


def _unreadable(e: Exception) -> str:
    """One line for a decoder's refusal (some span lines, e.g. libheif's), saying 'truncated or damaged' where the
    decoder's own words would not tell a user that (WebP's 'could not create decoder object', 'decoder error -2')."""
    what = " ".join(str(e).split()) or type(e).__name__
    if any(k in what.lower() for k in ("decoder", "end of file", "unexpected end", "broken data", "image file is truncated")):
        return f"cannot read image: the file is truncated or damaged ({what})"
    return f"cannot read image ({what})"


_PIXEL_LIMIT_LOCK = threading.Lock()


class _Bytes(bytes):
    """An image's bytes where load_rgb expects a path: no file name, so no suffix; opened afresh for each try."""

    suffix = ""

    def open(self) -> io.BytesIO:
        return io.BytesIO(self)


def _decoded(p: Path | _Bytes, truncated: bool = False, warn: Callable[[str], None] | None = None) -> tuple[np.ndarray, float]:
    """load_rgb's work, for a file Pillow can open (`truncated`: decode what there is of a file cut short)."""
    import warnings

    # Pillow warns of a malformed EXIF block in lines of its own (with its source path); the photo's pixels are read
    # as stored then, which is all a user needs to know.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="(?i).*exif", category=UserWarning)
        return _decode(p, truncated, warn)


def _decode(p: Path | _Bytes, truncated: bool, warn: Callable[[str], None] | None) -> tuple[np.ndarray, float]:
    from PIL import Image, ImageFile, ImageFilter, ImageOps

    # Pillow's limit (and its warning) judge the file's size: set aside while it opens, and checked below on the pixels
    # actually decoded (a 200 MP phone JPEG decodes at 1/8 of a side). It is one global: under a lock, or two threads
    # (a ferclient.Client per thread) could leave it off for the whole process.
    with _PIXEL_LIMIT_LOCK:
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            im = Image.open(p.open() if isinstance(p, _Bytes) else p)
        finally:
            Image.MAX_IMAGE_PIXELS = limit
    with im:
        frames = getattr(im, "n_frames", 1)
        # An animated GIF, PNG or WebP, a multi-page TIFF: `ferclient watch` reads moving images. Not a phone's MPO
        # JPEG, whose second frame is a preview or depth map of the same shot.
        if frames > 1 and warn and im.format != "MPO":
            warn(f"{frames} frames or pages: only the first is read")
        if im.format == "WEBP" and im.size[0] * im.size[1] > WEBP_MAX_PIXELS:
            raise Image.DecompressionBombError(f"{im.size[0]}x{im.size[1]} pixels ({im.size[0] * im.size[1] / 1e6:.0f} megapixels) is more than "
                                               f"ferclient decodes as WebP ({WEBP_MAX_PIXELS / 1e6:.0f}; decoding WebP takes about 16 bytes a pixel): "
                                               "shrink it or save it as JPEG")
        full = im.size
        if im.format in ("JPEG", "MPO") and budget_side(full[1], full[0]) > DECODE_MIN_SIDE:  # MPO: a phone's JPEG with a preview
            k = DECODE_MIN_SIDE / budget_side(full[1], full[0])
            im.draft("RGB", (max(1, int(full[0] * k)), max(1, int(full[1] * k))))
        if limit and im.size[0] * im.size[1] > 2 * limit:
            # Pillow's own refusal (twice its warning size, 179 megapixels) judged the file's size, so a 200-megapixel
            # phone JPEG was refused that draft decodes at 1/8 of a side; what is refused now is a decode that large.
            raise Image.DecompressionBombError(f"{full[0]}x{full[1]} pixels ({full[0] * full[1] / 1e6:.0f} megapixels) is more "
                                               f"than ferclient decodes ({2 * limit / 1e6:.0f}) in this format: shrink it or save it as JPEG")
        before = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = before or truncated
        try:  # Pillow reads this module-wide flag only here; the client decodes one file at a time
            im.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = before
        if im.mode == "1":  # a dithered black-and-white photo: in pure black and white dots the detector found no face
            im = im.convert("L").filter(ImageFilter.GaussianBlur(DITHER_BLUR_PX))
        k = int(budget_side(im.size[1], im.size[0]) // DECODE_MIN_SIDE)
        if k >= 2 and im.mode == "P":  # a mode Image.reduce refuses; _rgb8 would make it RGB anyway
            im = im.convert("RGB")
        if k >= 2 and im.mode in REDUCIBLE_MODES:  # any other large photo: k x k box averages, as libjpeg's scaling gives
            im = im.reduce(k)
        scale = full[0] / im.size[0]
        try:  # a phone's photo stores the sensor's pixels and how to turn them upright; faces are found upright
            if im.getexif().get(EXIF_ORIENTATION, 1) != 1:
                im = ImageOps.exif_transpose(im)
        except Exception:  # a malformed EXIF block (Pillow raises several kinds): the pixels as stored
            pass
        return _rgb8(im), scale


@functools.cache
def _heif_opener() -> bool:
    """Whether pi-heif's HEIF opener is registered with Pillow: done the first time a file is not otherwise readable,
    not at import, since it costs 40 ms that a JPEG never needs. False when pi-heif is not installed."""
    try:
        from pi_heif import register_heif_opener
    except ImportError as e:
        from . import caused_by_ctrl_c

        if caused_by_ctrl_c(e):
            raise
        return False
    register_heif_opener()
    return True


def _rgb8(im) -> np.ndarray:
    """uint8 [H, W, 3] of a Pillow image of any mode.

    Why not im.convert('RGB') alone: Pillow clips single-channel images of more than 8 bits instead of scaling
    them, so a 16-bit grayscale PNG came out almost white and a float TIFF black, and no face was found.
    16-bit samples (modes I;16*, and I holding values above 255) are scaled by 255/65535; float ones (F) as
    _float_white says. Transparent pixels are shown over white, as viewers show them."""
    if im.mode.startswith("I") or im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        if im.mode == "F":
            a = a * (255.0 / _float_white(a))
        elif im.mode.startswith("I;16") or (a.size and a.max() > 255):
            a = a / 257.0
        g = np.clip(np.rint(np.nan_to_num(a)), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=-1)
    if im.mode in ("RGBA", "LA", "La", "RGBa", "PA") or (im.mode == "P" and "transparency" in im.info):
        # Transparent pixels are shown over a background, white in most viewers; converted as they were, their hidden
        # colours came back (a fully transparent PNG, blank on screen, was labelled "happy 0.88").
        from PIL import Image

        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        white.alpha_composite(rgba)
        return np.asarray(white.convert("RGB"))
    return np.asarray(im.convert("RGB"))


def _float_white(a: np.ndarray) -> float:
    """The value a float image's white has: 1 when its samples (but for the odd overshoot: the 99.9th percentile) stay
    within 0..1, 255 when they reach past that up to 255, else their 99.9th percentile itself (a high-dynamic-range image,
    shown stretched). Why not its maximum: one resampling overshoot of 1.02 made a 0..1 image read as 0..255, all black."""
    finite = a[np.isfinite(a)]
    if not finite.size:
        return 1.0
    top = float(np.percentile(finite, 99.9))
    if top <= 1.0 + 1e-6:
        return 1.0
    if 16.0 <= top <= 255.0 + 1e-6:
        return 255.0
    return max(top, 1e-6)


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma, as Pillow's convert('L') and FER2013's grayscale."""
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).convert("L"))


def _area_axis0(img: np.ndarray, n: int) -> np.ndarray:
    """img's axis 0 shrunk to n by exact area averaging, in float32: output i is the mean of input [i*k, (i+1)*k),
    k = len/n, edge lines weighted by their overlap. Summed tap by tap: tap t gathers line floor(i*k) + t for every
    output at once, about len + 2n gathered lines in all, with no running sum over the photo."""
    length = img.shape[0]
    k = length / n
    lo = np.arange(n) * k
    hi = np.minimum(lo + k, length)
    first = np.floor(lo).astype(np.intp)
    out = np.zeros((n, *img.shape[1:]), np.float32)
    for t in range(int(np.ceil(k)) + 1):
        line = first + t
        weight = np.clip(np.minimum(hi, line + 1) - np.maximum(lo, line), 0, None) / k
        if weight.any():
            tap = img[np.minimum(line, length - 1)].astype(np.float32)
            tap *= weight.astype(np.float32).reshape(-1, *[1] * (img.ndim - 1))
            out += tap
    return out


def shrink(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 img shrunk to size (w, h) by area averaging, as cv2.resize with INTER_AREA: a low-pass, not an aliased subsample."""
    w, h = size
    if w > img.shape[1] or h > img.shape[0]:
        raise ValueError(f"shrink cannot enlarge {img.shape[1]}x{img.shape[0]} to {w}x{h}")
    if h == img.shape[0]:
        out = img.astype(np.float32)
    else:  # in bands of columns, so that one tap of a 12-megapixel photo stays a few MB (peak memory)
        band = max(1, SHRINK_TAP_BYTES // (4 * h * (img[0, 0].size)))
        out = np.empty((h, *img.shape[1:]), np.float32)
        for j in range(0, img.shape[1], band):
            out[:, j : j + band] = _area_axis0(img[:, j : j + band], h)
    out = _area_axis0(np.ascontiguousarray(out.swapaxes(0, 1)), w).swapaxes(0, 1) if w != img.shape[1] else out
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _nms(boxes: np.ndarray, order: np.ndarray, iou: float) -> list[int]:
    """Greedy non-maximum suppression over boxes [N, 4] (x, y, w, h) visited in order: the kept indices."""
    x0, y0 = boxes[:, 0], boxes[:, 1]
    x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
    area = boxes[:, 2] * boxes[:, 3]
    keep: list[int] = []
    for i in order:
        if keep:
            k = np.array(keep)
            iw = np.clip(np.minimum(x1[i], x1[k]) - np.maximum(x0[i], x0[k]), 0, None)
            inter = iw * np.clip(np.minimum(y1[i], y1[k]) - np.maximum(y0[i], y0[k]), 0, None)
            if (inter / np.maximum(area[i] + area[k] - inter, 1e-9) > iou).any():
                continue
        keep.append(int(i))
    return keep


class FaceDetector:
    """YuNet run by ONNX Runtime, decoded as OpenCV's FaceDetectorYN decodes it; one instance serves any number of photos of any size."""

    STRIDES = (8, 16, 32)

    def __init__(self, threshold: float = DETECT_THRESHOLD, max_side: int = DETECT_MAX_SIDE, model: str | Path | None = None,
                 fine_side: int = DETECT_FINE_SIDE, turned: bool = True):
        import onnxruntime as ort

        if not 0.0 < threshold < 1.0:
            raise ValueError(f"detect threshold must be between 0 and 1, got {threshold:g}")
        self.threshold, self.max_side, self.fine_side, self.turned = threshold, max_side, fine_side, turned
        from ferwire.card import WEIGHTS

        path = Path(model) if model else WEIGHTS / "face-detector" / DETECTOR_FILE
        if not path.is_file():
            raise OSError(f"face detector weights missing: {path}")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # ONNX Runtime's threads spin after each run by default, taking the cores that decoding, encoding and a local
        # server need between detections: `ferclient watch` ran a quarter faster without (docs/detector, "Its threads do not spin").
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._net = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        if any(isinstance(d, int) for d in self._net.get_inputs()[0].shape[2:]):
            raise OSError(f"{path}: declares a fixed input size; make it symbolic with scripts/yunet_dynamic.py")
        self._outputs = [o.name for o in self._net.get_outputs()]

    def raw(self, rgb: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """[N, 15] float32 rows (x, y, w, h, five landmarks' x, y, score) in rgb's pixels, after NMS, best first:
        FaceDetectorYN.detect's rows, scoring above threshold (default the detector's). The photo is zero-padded to a
        multiple of 32, fed as BGR 0..255."""
        h, w = rgb.shape[:2]
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        x = np.zeros((1, 3, ph, pw), np.float32)
        x[0, :, :h, :w] = rgb[:, :, ::-1].transpose(2, 0, 1)
        out = dict(zip(self._outputs, self._net.run(None, {"input": x})))
        rows = []
        for s in self.STRIDES:
            r, c = np.divmod(np.arange((ph // s) * (pw // s)), pw // s)
            score = np.sqrt(np.clip(out[f"cls_{s}"][0, :, 0], 0, 1) * np.clip(out[f"obj_{s}"][0, :, 0], 0, 1))
            bb, kp = out[f"bbox_{s}"][0], out[f"kps_{s}"][0].reshape(-1, 5, 2)
            bw, bh = np.exp(bb[:, 2]) * s, np.exp(bb[:, 3]) * s
            box = np.column_stack([(c + bb[:, 0]) * s - bw / 2, (r + bb[:, 1]) * s - bh / 2, bw, bh])
            marks = np.stack([(kp[..., 0] + c[:, None]) * s, (kp[..., 1] + r[:, None]) * s], -1).reshape(-1, 10)
            rows.append(np.column_stack([box, marks, score]).astype(np.float32))
        found = np.concatenate(rows)
        found = found[found[:, 14] > (self.threshold if threshold is None else threshold)]
        order = np.argsort(-found[:, 14], kind="stable")
        return found[_nms(np.floor(found[:, :4]), order, NMS_IOU)]  # integer boxes for NMS, as FaceDetectorYN

    def _fine(self, rgb: np.ndarray, coarse: float) -> np.ndarray:
        """raw() rows, in rgb's pixels, of the faces under SMALL_FACE px at scale `coarse`, found on rgb at up to
        fine_side in the fewest tiles of about max_side that overlap by more than such a face, so each lies whole in one tile."""
        h, w = rgb.shape[:2]
        fine = min(1.0, self.fine_side / budget_side(h, w))
        if fine < 1.5 * coarse:  # not enough more pixels to find anything the first pass missed
            return np.zeros((0, 15), np.float32)
        img = rgb if fine == 1.0 else _box_resize(rgb, fine)
        small = SMALL_FACE * fine / coarse  # px at the fine scale
        overlap = int(np.ceil(small)) + 16
        most = max(self.max_side, 4 * overlap)  # a tiny max_side still gets tiles that hold a small face
        (th, ys), (tw, xs) = _tiles(img.shape[0], most, overlap), _tiles(img.shape[1], most, overlap)
        rows = []
        for y0 in ys:
            for x0 in xs:
                r = self.raw(img[y0 : y0 + th, x0 : x0 + tw])
                r = r[(np.maximum(r[:, 2], r[:, 3]) < small) & (r[:, 14] >= FINE_THRESHOLD)]
                r[:, [0, 4, 6, 8, 10, 12]] += x0  # x of the box and the landmarks; w, h stay
                r[:, [1, 5, 7, 9, 11, 13]] += y0
                rows.append(r)
        found = np.concatenate(rows)
        found[:, :14] /= fine
        return found

    def upright(self, rgb: np.ndarray, face: Face, force: bool = False) -> Face:
        """face with its landmarks from the turn (UPRIGHT_TURNS: every 45 degrees) in which YuNet scores it best
        (faces at UPRIGHT_SURE or under MIN_FACE as they are).

        A patch of twice the face's side around its box, at UPRIGHT_PATCH px, is turned each way; the turns are laid
        side by side in one mosaic and found in one run, each turn's best detection near its cell's centre giving
        its score. Where that is a quarter turn, the box comes from it too, turned back (YuNet's box of a face lying on
        its side covers part of it: the astronaut turned 90 / 180 / 270 degrees, IoU 0.80 / 0.69 / 0.67 with her face's
        box, 0.95 / 0.92 / 0.95 from the turn, tests/client/test_faces.py; docs/detector/turned.md); an eighth of a turn keeps YuNet's box, which levelled() cuts its patch around (taken from the turn, the
        astronaut at 45 degrees was levelled worse). The score stays the face's own. force: look even at UPRIGHT_SURE (a
        face a quarter turn of the photo found, which may still lie at an eighth of a turn: detect())."""
        from PIL import Image

        if (face.score >= UPRIGHT_SURE and not force) or face.size < MIN_FACE:
            return face
        im, back = _patch(rgb, face)
        n, cell = len(UPRIGHT_TURNS), UPRIGHT_PATCH
        cols = (n + 1) // 2
        mosaic = np.zeros((2 * cell, cols * cell, 3), np.uint8)
        for i, deg in enumerate(UPRIGHT_TURNS):
            mosaic[(i // cols) * cell : (i // cols + 1) * cell, (i % cols) * cell : (i % cols + 1) * cell] = im.rotate(deg, Image.Resampling.BILINEAR)
        rows = self.raw(mosaic)
        centre = rows[:, :2] + rows[:, 2:4] / 2
        at = np.floor(centre / cell).astype(int)
        near = np.hypot(*(centre - (at + 0.5) * cell).T) < cell / 4
        best, marks, box = face.score + UPRIGHT_MARGIN, None, None
        for i, deg in enumerate(UPRIGHT_TURNS):  # rows are best first: each cell's first row near its centre is its best
            mine = np.flatnonzero(near & (at[:, 1] * cols + at[:, 0] == i) & (at[:, 1] < 2) & (at[:, 0] < cols))
            if not len(mine):
                continue
            r = rows[mine[0]]
            if deg == 0:
                best = max(best, float(r[14]) + UPRIGHT_MARGIN)  # the upright patch's own score, on the same footing
            elif r[14] > best:
                origin = np.array([(i % cols) * cell, (i // cols) * cell], np.float32)  # the cell's corner in the mosaic
                best, marks = float(r[14]), _unrotate(r[4:14].reshape(5, 2) - origin, deg, (cell, cell), (cell, cell))
                box = _turned_box(r[:2] - origin, r[:2] - origin + r[2:4], deg, cell) if deg % 90 == 0 else None
        return face if marks is None else back(marks, box)

    def levelled(self, rgb: np.ndarray, face: Face) -> Face:
        """face with its landmarks found again in its patch turned so its eyes are level, when they tilt by
        LEVEL_MIN_ROLL or more (faces under MIN_FACE as they are).

        Why: YuNet places the landmarks of a tilted face nearer to an upright face's than they are (the astronaut
        tilted 30 degrees: eye line 16), so alignment levelled about half of a tilt; found again with the face about
        level, they follow it. On val faces in canvases tilted 0 to 60 degrees, 0 to 2 points (scripts/tilted_faces.py)."""
        from PIL import Image

        roll = face.roll
        if abs(roll) < LEVEL_MIN_ROLL or face.size < MIN_FACE:
            return face
        im, back = _patch(rgb, face, LEVEL_PATCH)
        rows = self.raw(np.asarray(im.rotate(roll, Image.Resampling.BILINEAR)), LEVEL_THRESHOLD)
        centre = rows[:, :2] + rows[:, 2:4] / 2
        rows = rows[np.hypot(*(centre - LEVEL_PATCH / 2).T) < LEVEL_PATCH / 4]
        if not len(rows):
            return face
        return back(_unrotate(rows[0, 4:14].reshape(5, 2), roll, (LEVEL_PATCH,) * 2, (LEVEL_PATCH,) * 2))

    def _pass(self, rgb: np.ndarray, small: np.ndarray, scale: float) -> np.ndarray:
        """raw() rows in rgb's pixels: small (rgb shrunk by scale to max_side), then the tiled pass for small faces, merged."""
        rows = self.raw(small)
        rows[:, :14] /= scale
        if self.fine_side and scale < 1.0:
            rows = np.concatenate([rows, self._fine(rgb, scale)])
            order = np.argsort(-rows[:, 14], kind="stable")
            rows = rows[_nms(np.floor(rows[:, :4]), order, NMS_IOU)]
        return rows

    def _shrunk(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        """(rgb shrunk to max_side on its longer side, the scale) : what the first pass and the turned passes run on."""
        h, w = rgb.shape[:2]
        scale = min(1.0, self.max_side / budget_side(h, w))
        return (rgb if scale == 1.0 else shrink(rgb, (max(1, round(w * scale)), max(1, round(h * scale))))), scale

    def _close_up(self, rgb: np.ndarray) -> np.ndarray:
        """raw() rows, in rgb's pixels, of rgb scaled to CLOSE_UP_FACE px on its longer side and set in a border of its
        mean colour: the context a face that fills the frame lacks."""
        from PIL import Image

        h, w = rgb.shape[:2]
        k = CLOSE_UP_FACE / max(h, w)
        face = np.asarray(Image.fromarray(rgb).resize((max(1, round(w * k)), max(1, round(h * k))), Image.Resampling.BICUBIC))
        pad = round(CLOSE_UP_BORDER * CLOSE_UP_FACE)
        canvas = np.empty((face.shape[0] + 2 * pad, face.shape[1] + 2 * pad, 3), np.uint8)
        canvas[:] = rgb.reshape(-1, 3).mean(0).round().astype(np.uint8)
        canvas[pad : pad + face.shape[0], pad : pad + face.shape[1]] = face
        rows = self.raw(canvas)
        sx, sy = w / face.shape[1], h / face.shape[0]
        rows[:, :14] = (rows[:, :14] - np.array([pad, pad, 0, 0] + [pad] * 10, np.float32)) * np.array([sx, sy] * 7, np.float32)
        return rows

    def _turned(self, small: np.ndarray, scale: float, threshold: float | None = None, tilts: bool = True) -> np.ndarray:
        """The photo as if stored on its side or upside down, or tilted: raw() rows of the turn of small (the photo
        shrunk by scale) whose best face scores highest, at TURNED_THRESHOLD at least, in the photo's pixels (none when
        no turn finds one; threshold: the benchmark's sweep). The quarter turns (PHOTO_TURNS) first, the 45-degree
        tilts (PHOTO_TILTS) only when they find none. No tiled pass: it would make a face-free photo cost four times as much."""
        from PIL import Image

        im = Image.fromarray(small)
        best = np.zeros((0, 15), np.float32)
        for turns in (PHOTO_TURNS, PHOTO_TILTS) if tilts else (PHOTO_TURNS,):
            for deg in turns:
                turned = np.asarray(im.rotate(deg, Image.Resampling.BILINEAR, expand=True))  # a quarter turn is exact
                rows = self.raw(turned, max(self.threshold, TURNED_THRESHOLD) if threshold is None else threshold)
                if len(rows) and (not len(best) or rows[:, 14].max() > best[:, 14].max()):
                    # a tilted face's box: its own size about its centre, as a box the photo's way up
                    centres = _unrotate(rows[:, :2] + rows[:, 2:4] / 2, deg, turned.shape[:2], small.shape[:2])
                    size = rows[:, 2:4] if deg % 180 == 0 else rows[:, 3:1:-1] if deg % 90 == 0 else rows[:, 2:4].mean(1, keepdims=True).repeat(2, 1)
                    marks = _unrotate(rows[:, 4:14].reshape(-1, 2), deg, turned.shape[:2], small.shape[:2]).reshape(-1, 10)
                    best = np.column_stack([(centres - size / 2) / scale, size / scale, marks / scale, rows[:, 14]]).astype(np.float32)
            if len(best):
                break
        return best

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces in an RGB (or gray) uint8 photo, largest first, each with its landmarks as it stands (upright()).

        A photo in which no face is found as it is gets searched turned by each quarter turn (a photo stored on its
        side without an EXIF orientation), then tilted 45 degrees each way, unless the detector was made with turned=False;
        one in which none of these finds a face, as a close-up (_close_up)."""
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[:, :, None], 3, axis=2)
        h, w = rgb.shape[:2]
        small, scale = self._shrunk(rgb)
        rows, switched = self._pass(rgb, small, scale), False
        if self.turned and not len(rows):
            rows = self._turned(small, scale)
        elif self.turned and rows[:, 14].max() < TURNED_THRESHOLD:  # only weak faces: perhaps a photo on its side, some of
            turned = self._turned(small, scale, tilts=False)  # its faces found anyway (2 of 5 in an audit's, and a hand)
            if len(turned) >= len(rows):  # as many faces or more, each surer than any found as it stands: that is its way up
                rows, switched = turned, True  # each looked at by upright() whatever its score: a face tilted 135 degrees
                # is found at 0.90 a quarter turn on, lying at an eighth of a turn there, its landmarks an upright face's
        if not len(rows):
            rows = self._close_up(small)
            rows[:, :14] /= scale
        faces = []
        for row in rows:
            x, y, bw, bh = (float(v) for v in row[:4])
            x0, y0 = max(0, round(x)), max(0, round(y))
            box = (x0, y0, min(w, round(x + bw)) - x0, min(h, round(y + bh)) - y0)
            if box[2] > 0 and box[3] > 0:
                faces.append(self.levelled(rgb, self.upright(rgb, Face(box, float(row[14]), row[4:14].reshape(5, 2).astype(np.float32)), switched)))
        return sorted(faces, key=lambda f: -f.box[2] * f.box[3])


def _patch(rgb: np.ndarray, face: Face, size: int = UPRIGHT_PATCH):
    """(Pillow image `size` px square, the face with landmarks given in the patch's pixels as a Face in the photo's):
    the square of twice the face's side about its box, zero-padded where it leaves the photo; what upright() and
    levelled() look at. The face keeps its box and score (what was found, where)."""
    from PIL import Image

    x, y, w, h = face.box
    side = 2 * max(w, h)
    x0, y0 = int(round(x + w / 2 - side / 2)), int(round(y + h / 2 - side / 2))
    patch = np.zeros((side, side, 3), np.uint8)
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(rgb.shape[1], x0 + side), min(rgb.shape[0], y0 + side)
    patch[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
    resample = Image.Resampling.BOX if side > size else Image.Resampling.BILINEAR

    def back(marks: np.ndarray, box: np.ndarray | None = None) -> Face:
        """marks (and box, x0 y0 x1 y1), given in the patch's pixels, as a Face in the photo's."""
        if box is None:
            out = face.box
        else:
            (bx0, by0), (bx1, by1) = np.clip(box.reshape(2, 2) * (side / size) + [x0, y0], 0, [rgb.shape[1], rgb.shape[0]])
            out = (int(round(bx0)), int(round(by0)), max(1, int(round(bx1 - bx0))), max(1, int(round(by1 - by0))))
        return Face(out, face.score, (marks * (side / size) + [x0, y0]).astype(np.float32))

    return Image.fromarray(patch).resize((size, size), resample), back


def _turned_box(p0: np.ndarray, p1: np.ndarray, deg: float, cell: int) -> np.ndarray:
    """The box (x0, y0, x1, y1) in an unturned cell of a face boxed p0..p1 in the cell turned by a quarter turn deg."""
    corners = _unrotate(np.array([p0, p1], np.float64), deg, (cell, cell), (cell, cell))
    return np.concatenate([corners.min(0), corners.max(0)])


def _unrotate(points: np.ndarray, deg: float, turned: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """Points [n, 2] (x, y) in an image of shape `turned` (h, w) that is an image of `shape` rotated by deg
    counter-clockwise about its centre (Pillow's rotate, with or without expand) -> the same points in that image."""
    c, s = round(float(np.cos(np.radians(deg))), 12), round(float(np.sin(np.radians(deg))), 12)  # quarter turns exact
    u, v = points[:, 0] - turned[1] / 2, points[:, 1] - turned[0] / 2
    return np.stack([u * c - v * s + shape[1] / 2, u * s + v * c + shape[0] / 2], -1)


def turn_boxes(boxes: np.ndarray, turns: int, shape: tuple[int, int]) -> np.ndarray:
    """Boxes [n, 4] (x, y, w, h) in an image of `shape` (h, w) -> the same boxes in np.rot90(image, turns)."""
    turned = shape if turns % 2 == 0 else shape[::-1]
    a, b = _unrotate(boxes[:, :2], -90 * turns, shape, turned), _unrotate(boxes[:, :2] + boxes[:, 2:4], -90 * turns, shape, turned)
    return np.column_stack([np.minimum(a, b), np.abs(b - a)])


def budget_side(h: int, w: int) -> float:
    """The longer side by which a photo's size budgets (DETECT_MAX_SIDE, DETECT_FINE_SIDE, DECODE_MIN_SIDE) are met:
    the longer side of a 4:3 photo of the same area, or its own where shorter. A 4:3 (or 3:4) photo is budgeted by its
    longer side as ever; a panorama or a strip by its area, since budgeting a 6000x1000 panorama by its 6000 px shrank
    a 40 px face to 8 px in every pass, and none was found where the same face in a 4000x3000 photo is."""
    return min(float(max(h, w)), float(np.sqrt(h * w * 4.0 / 3.0)))


def _box_resize(rgb: np.ndarray, scale: float) -> np.ndarray:
    """rgb shrunk by `scale` with Pillow's box filter: the tiled pass's image. Ten times faster than shrink() on a
    12-megapixel photo's decode; its pixels differ from OpenCV's area resize at edges, which finding a face does not mind."""
    from PIL import Image

    h, w = rgb.shape[:2]
    return np.asarray(Image.fromarray(rgb).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BOX))


def _tiles(length: int, most: int, overlap: int) -> tuple[int, list[int]]:
    """(tile, starts) along an axis of `length` px: the fewest tiles of about `most` px (a multiple of 32, as YuNet pads)
    whose neighbours overlap by at least `overlap`. Fewer, slightly larger tiles than a fixed size: less area to run."""
    m = -(-length // most)
    if m == 1:
        return length, [0]
    tile = min(length, -(-(length + (m - 1) * overlap) // (32 * m)) * 32)
    return tile, sorted({int(np.floor(i * (length - tile) / (m - 1))) for i in range(m)})


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


LANCZOS_A = 4  # taps each side of a Lanczos sample, as OpenCV's INTER_LANCZOS4


def warp(gray: np.ndarray, m: np.ndarray, size: int, lanczos: bool = False) -> np.ndarray:
    """size x size float32: gray under the 2x3 affine m (source -> output pixels), edges repeated: bilinear
    (cv2.warpAffine with INTER_LINEAR and BORDER_REPLICATE, in floating point) or, with `lanczos`, 8x8 Lanczos taps
    (as INTER_LANCZOS4; may overshoot 0..255)."""
    inv = np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))[:2]
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    sx, sy = inv[0, 0] * u + inv[0, 1] * v + inv[0, 2], inv[1, 0] * u + inv[1, 1] * v + inv[1, 2]
    g = gray.astype(np.float32)
    if lanczos:  # each tap repeats the edge, as OpenCV's border does
        (xs, wx), (ys, wy) = _lanczos_taps(sx, gray.shape[1]), _lanczos_taps(sy, gray.shape[0])
        return np.einsum("uvk,uvl,uvkl->uv", wy, wx, g[ys[..., :, None], xs[..., None, :]]).astype(np.float32)
    sx, sy = np.clip(sx, 0, gray.shape[1] - 1), np.clip(sy, 0, gray.shape[0] - 1)
    x0, y0 = np.minimum(sx.astype(np.intp), gray.shape[1] - 2).clip(0), np.minimum(sy.astype(np.intp), gray.shape[0] - 2).clip(0)
    x1, y1 = np.minimum(x0 + 1, gray.shape[1] - 1), np.minimum(y0 + 1, gray.shape[0] - 1)
    fx, fy = sx - x0, sy - y0
    top = g[y0, x0] * (1 - fx) + g[y0, x1] * fx
    bottom = g[y1, x0] * (1 - fx) + g[y1, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def _lanczos_taps(pos: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, weights) [..., 2 * LANCZOS_A] of the source pixels a Lanczos sample at `pos` reads, edges repeated."""
    base = np.floor(pos)
    k = np.arange(1 - LANCZOS_A, LANCZOS_A + 1)
    d = (pos - base)[..., None] - k
    w = np.sinc(d) * np.sinc(d / LANCZOS_A)
    return np.clip(base.astype(np.intp)[..., None] + k, 0, length - 1), (w / w.sum(-1, keepdims=True)).astype(np.float32)


def align(gray: np.ndarray, face: Face, size: int = 48) -> np.ndarray:
    """size x size uint8: the face warped so its landmarks sit where FER2013's do (eyes level, FER2013's scale)."""
    m = _similarity(face.landmarks.astype(np.float64), FER2013_LANDMARKS.astype(np.float64) * (size / 48.0))
    # Warp at 4x and average 4x4 blocks, so a large face is low-passed like a resize, not aliased. A face with
    # fewer pixels than the crop is enlarged with Lanczos taps: sharper than bilinear, and on val faces shrunk
    # to 24-40 px it gives the classifier back 0.7-1.7 points (docs/photos, "Small faces").
    up = 4 if face.size > 2 * size else 1
    enlarged = abs(np.linalg.det(m[:, :2])) > 1.0
    big = warp(gray, m * up, size * up, lanczos=enlarged)
    if up > 1:
        big = big.reshape(size, up, size, up).mean(axis=(1, 3))
    return _typical(np.clip(np.rint(big), 0, 255).astype(np.uint8))


def box_crop(gray: np.ndarray, face: Face, size: int = 48) -> np.ndarray:
    """size x size uint8 cut from the detector's box alone (no rotation), framed as FER2013_BOX: the --no-align path."""
    from PIL import Image

    x, y, w, h = face.box
    fx, fy, fw, fh = FER2013_BOX
    side = h * 48.0 / fh
    left = x + w / 2 - side * (fx + fw / 2) / 48.0
    top = y - side * fy / 48.0
    return _typical(_resized(Image.fromarray(gray).crop(tuple(int(round(v)) for v in (left, top, left + side, top + side))), size))


def whole(gray: np.ndarray, size: int = 48) -> np.ndarray:
    """The whole image, padded to a square with its own sides mirrored, resized to size x size: --no-detect, for photos
    that are already face crops.

    Why the padding: a non-square crop was stretched, which widens or narrows the face. 1,500 FER2013 val faces cut
    by 12 or 24 of 96 px off the sides or off top and bottom scored 60.1-69.7 % stretched, 63.1-70.1 % cut to their
    centre square, 66.9-70.5 % padded (edge pixels repeated: 67.1-70.7 %, but a noisy crop's repeated edge reads as
    streaks, not noise); 70.7 % as they were (scripts/nonsquare_crops.py)."""
    from PIL import Image

    return _typical(_resized(Image.fromarray(squared(gray)), size))


def squared(gray: np.ndarray) -> np.ndarray:
    """gray padded to a square by mirroring its sides, centred (as it is when square)."""
    h, w = gray.shape
    s = max(h, w)
    return np.pad(gray, (((s - h) // 2, s - h - (s - h) // 2), ((s - w) // 2, s - w - (s - w) // 2)), mode="symmetric")


def _typical(face: np.ndarray) -> np.ndarray:
    """A crop brought toward what the classifier learned from: noisy crops smoothed, flat crops stretched, then
    blurred crops sharpened."""
    return _blur_sharpened(_flat_stretched(_noise_smoothed(face)))


def noise_sigma(face: np.ndarray) -> float:
    """The standard deviation of a crop's noise in grey levels (Immerkaer, "Fast noise variance estimation", 1996: the
    mean absolute response to the difference of two Laplacians, which cancels smooth shading and most edges)."""
    f = face.astype(np.float64)
    k = (f[:-2, :-2] + f[:-2, 2:] + f[2:, :-2] + f[2:, 2:] - 2.0 * (f[:-2, 1:-1] + f[1:-1, :-2] + f[1:-1, 2:] + f[2:, 1:-1])
         + 4.0 * f[1:-1, 1:-1])
    return float(np.sqrt(np.pi / 2.0) * np.abs(k).mean() / 6.0)


def _noise_smoothed(face: np.ndarray) -> np.ndarray:
    """A crop noisier than almost any FER2013 face (a dim photo's sensor noise, a small face in a grainy frame) given
    non-local means: each pixel becomes the average of the pixels nearby whose 3x3 neighbourhoods look like its own,
    so noise is averaged away and the edges of mouth and brows are kept; any other crop as it is.

    Why: FER2013's faces are clean, and the classifier reads noise as texture. On FER2013 val faces with Gaussian noise
    of sigma 12 / 16 grey levels, uncompressed, 60.63 / 55.67 % as cut, 66.62 / 65.14 % smoothed; through the image
    codec 64.53 / 59.93 -> 66.37 / 65.70 % (scripts/hard_faces.py, docs/photos "Noisy faces")."""
    sigma = noise_sigma(face)
    if sigma < NOISY_SIGMA:
        return face
    h2 = max(sigma * sigma - FER2013_TEXTURE_SIGMA**2, 1.0)  # the noise's own variance: the rest is the face's texture
    f = face.astype(np.float64)
    rows, cols = face.shape
    r, k = NLM_SEARCH, 2 * NLM_PATCH + 1
    p = np.pad(f, r, mode="reflect")
    num, den = np.zeros_like(f), np.zeros_like(f)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            g = p[dy : dy + rows, dx : dx + cols]
            d = np.pad((g - f) ** 2, NLM_PATCH, mode="reflect")
            c = np.pad(d, ((1, 0), (1, 0))).cumsum(0).cumsum(1)  # box sums of the squared differences over each patch
            w = np.exp(-(c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k * h2))
            num += w * g
            den += w
    return np.clip(np.rint(num / den), 0, 255).astype(np.uint8)


def _flat_stretched(face: np.ndarray) -> np.ndarray:
    """A crop whose centre has less contrast than almost any FER2013 face (a backlit, dim or hazy face) stretched
    to a typical FER2013 face's contrast, its brightness brought into FER2013's range; any other crop as it is.

    Why: the classifier learned from FER2013's faces, and the codec spends its bits on contrast. On FER2013 val
    faces at 0.3x contrast the classifier scored 61.3 %, stretched 68.8 %; darkened (gamma 3.5, x0.4) 45.8 %,
    stretched 57.8 %; the untouched val faces 69.74 -> 69.80 % (docs/photos, "Dim and flat faces")."""
    h, w = face.shape
    centre = face[h // 6 : h - h // 6, w // 6 : w - w // 6].astype(np.float64)
    mean, std = centre.mean(), centre.std()
    if std >= FLAT_STD:
        return face
    out = (face - mean) * (TYPICAL_STD / max(std, 1.0)) + np.clip(mean, *FER2013_MEANS)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _blur_sharpened(face: np.ndarray) -> np.ndarray:
    """A crop blurrier than almost any FER2013 face (out of focus, moving, or enlarged from a few pixels) given an
    unsharp mask; any other crop as it is.

    Why: FER2013's faces are sharp, and a blurred face loses the edges of mouth and brows the classifier reads. On
    FER2013 val faces blurred by a Gaussian of sigma 1 / 1.5 / 2, through the image codec, 63.3 / 56.2 / 47.6 %
    as cut, 65.9 / 59.7 / 51.7 % sharpened; the untouched val faces 68.21 -> 68.24 % (docs/photos, "Blurred faces")."""
    f = face.astype(np.float32)
    p = np.pad(f, 1, mode="reflect")
    lap = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4.0 * f
    h, w = face.shape
    if lap[h // 6 : h - h // 6, w // 6 : w - w // 6].var() >= BLURRED_VAR:
        return face
    r = len(UNSHARP_TAPS) // 2
    p = np.pad(f, r, mode="reflect")
    rows = sum(t * p[i : i + h, :] for i, t in enumerate(UNSHARP_TAPS))
    smooth = sum(t * rows[:, i : i + w] for i, t in enumerate(UNSHARP_TAPS))
    return np.clip(np.rint(f + UNSHARP_AMOUNT * (f - smooth)), 0, 255).astype(np.uint8)


def _resized(im, size: int) -> np.ndarray:
    """A Pillow image as size x size uint8: area-averaged when it shrinks, Lanczos when it grows (align's reasons)."""
    from PIL import Image

    grow = im.width < size or im.height < size
    return np.asarray(im.resize((size, size), Image.Resampling.LANCZOS if grow else Image.Resampling.BOX), dtype=np.uint8)
