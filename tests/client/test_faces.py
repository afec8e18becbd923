"""Detection, alignment and cropping on real photos (scikit-image's public-domain pictures); unreadable inputs give one-line reasons.

The client runs without OpenCV; OpenCV (a dev dependency) is the reference its detector decoding, area shrink
and warp are checked against, so the detector benchmark measured through cv2.FaceDetectorYN still describes it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from ferclient.faces import (DETECT_THRESHOLD, DETECTOR_FILE, FER2013_LANDMARKS, NMS_IOU, Face, FaceDetector, ImageError, _blur_sharpened, _flat_stretched, _noise_smoothed, _similarity, _unrotate, align,
                             box_crop, load_rgb, shrink, squared, to_gray, turn_boxes, warp, whole)
from ferwire.card import WEIGHTS

ASTRONAUT_FACE = (177, 66, 95, 110)  # x, y, w, h of Eileen Collins' face in skimage.data.astronaut(), hand-measured: brow to chin


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    return ix * iy / (aw * ah + bw * bh - ix * iy)


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


def test_detects_the_astronaut(detector, astronaut):
    faces = detector.detect(load_rgb(astronaut)[0])
    assert len(faces) == 1
    assert iou(faces[0].box, ASTRONAUT_FACE) >= 0.5
    assert 0.8 <= faces[0].score <= 1.0
    eyes = faces[0].landmarks[:2]
    assert eyes[0, 0] < eyes[1, 0]  # the face's right eye is on the image's left


def test_two_faces_are_two_and_in_place(detector):
    a = skimage.data.astronaut()
    pair = np.concatenate([a, a[:, ::-1]], axis=1)  # the photo and its mirror image side by side
    faces = detector.detect(pair)
    assert len(faces) == 2
    x, y, w, h = ASTRONAUT_FACE
    mirrored = (2 * a.shape[1] - x - w, y, w, h)
    assert sorted(max(iou(f.box, t) for t in (ASTRONAUT_FACE, mirrored)) for f in faces)[0] >= 0.5


@pytest.mark.parametrize("name", ["coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry"])
def test_photos_without_a_person_have_no_face(detector, name):
    """Coffee, a cat, a rocket launch, a galaxy field, stained tissue: no human face in any."""
    assert detector.detect(getattr(skimage.data, name)()) == []


def test_flat_and_tiny_images_have_no_face(detector):
    assert detector.detect(np.full((200, 200), 128, np.uint8)) == []
    assert detector.detect(np.full((3, 5, 3), 10, np.uint8)) == []


@pytest.mark.parametrize("side, as_they_are, every_pass", [(48, 185, 190), (640, 140, 185)])
def test_face_crops_and_close_ups_sent_as_photos_are_found_in_a_border(side, as_they_are, every_pass):
    """FER2013's val crops sent without --no-detect, as stored (48x48) and enlarged to 640 px (a close-up): YuNet finds 174
    and 128 of the first 200 as they are; scaled to 144 px and set in a border of their own mean grey, 196 and 190
    (docs/detector, "Face crops and close-ups"). The box comes back in the photo's pixels, and fills most of it."""
    from fermodels.data import load_split

    detector = FaceDetector()
    faces, _ = load_split("val", limit=200)
    photos = [np.asarray(Image.fromarray(f).convert("RGB").resize((side, side), Image.Resampling.BICUBIC)) for f in faces]
    plain = sum(bool(len(detector._pass(p, *detector._shrunk(p)))) for p in photos)
    boxes = [fs[0].box for fs in (detector.detect(p) for p in photos) if fs]
    assert plain <= as_they_are and len(boxes) >= every_pass
    assert all(x >= 0 and y >= 0 and x + w <= side and y + h <= side for x, y, w, h in boxes)
    assert np.median([w * h / side**2 for _, _, w, h in boxes]) >= 0.6  # the face fills the photo


@pytest.mark.parametrize("side", [48, 96, 160])
def test_small_photos_without_a_person_have_no_face(detector, side):
    """The close-up pass that finds face crops invents no face in face-free thumbnails."""
    for name in ("coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry"):
        im = Image.fromarray(getattr(skimage.data, name)())
        k = side / max(im.size)
        assert detector.detect(np.asarray(im.resize((round(im.size[0] * k), round(im.size[1] * k)), Image.Resampling.BOX))) == [], name


def test_large_photos_are_detected_at_reduced_size(astronaut):
    """A 4x upscaled photo is shrunk for detection; the box comes back in the photo's own pixels."""
    big = cv2.resize(skimage.data.astronaut(), (2048, 2048), interpolation=cv2.INTER_LINEAR)
    faces = FaceDetector(max_side=512).detect(big)
    assert len(faces) == 1 and iou(faces[0].box, tuple(4 * v for v in ASTRONAUT_FACE)) >= 0.5


def test_the_decode_limit_judges_the_pixels_decoded_not_the_files(tmp_path, monkeypatch):
    """Pillow refused a 200-megapixel phone JPEG as a decompression bomb by its size in the file, though draft mode
    decodes it at 1/8 of a side; the limit (twice Pillow's MAX_IMAGE_PIXELS) now applies to what is decoded. Here
    the limit is lowered to 2 megapixels (4 refused) so that a 12-megapixel photo shows it."""
    from PIL import Image

    from ferclient.faces import load_rgb

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2_000_000)
    big = Image.fromarray(skimage.data.astronaut()).resize((4000, 3000))
    big.save(tmp_path / "big.jpg", quality=85)
    big.save(tmp_path / "big.png", compress_level=1)
    rgb, scale = load_rgb(tmp_path / "big.jpg", warn=lambda note: pytest.fail(note))
    assert rgb.shape == (1500, 2000, 3) and scale == 2.0
    with pytest.raises(ImageError, match=r"4000x3000 pixels \(12 megapixels\) is more than ferclient decodes \(4\)"):
        load_rgb(tmp_path / "big.png")
    assert Image.MAX_IMAGE_PIXELS == 2_000_000  # put back for the rest of the process


def test_small_faces_in_a_large_photo_are_found_by_the_tiled_pass():
    """Five 256 px astronauts (faces about 50 px) in a 3200x2400 photo: shrunk to 640 px for the first pass their
    faces are 10 px and lost; the finer tiled pass finds each, in place, and adds nothing on the background alone."""
    from ferclient.faces import _tiles

    a = cv2.resize(skimage.data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    canvas = cv2.resize(skimage.data.coffee(), (3200, 2400), interpolation=cv2.INTER_LINEAR)
    assert FaceDetector().detect(canvas) == []
    spots = [(100, 100), (1500, 300), (2900, 150), (700, 1900), (2300, 2050)]  # some across tile borders
    truth = []
    for x, y in spots:
        canvas[y : y + 256, x : x + 256] = a
        truth.append((x + ASTRONAUT_FACE[0] // 2, y + ASTRONAUT_FACE[1] // 2, ASTRONAUT_FACE[2] // 2, ASTRONAUT_FACE[3] // 2))
    assert len(FaceDetector(fine_side=0).detect(canvas)) < len(spots)
    faces = FaceDetector().detect(canvas)
    assert len(faces) == len(spots)
    assert all(max(iou(f.box, t) for f in faces) >= 0.5 for t in truth)
    for length, most, overlap in [(1280, 640, 80), (960, 640, 80), (1600, 640, 96), (1200, 640, 96), (641, 640, 50), (5000, 640, 300), (640, 640, 80)]:
        tile, starts = _tiles(length, most, overlap)
        assert starts[0] == 0 and starts[-1] == length - tile and all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))
        assert tile <= most + overlap + 32 and len(starts) == -(-length // most)


def test_a_small_face_in_a_panorama_or_a_strip_is_found(detector, tmp_path):
    """The size budgets (the first pass's 640 px, the tiled pass's 1280, the JPEG decode's 1600) were met by the longer
    side, so in a 6000x1000 panorama a 40 px face shrank to 8 px in every pass and was not found, where the same face in
    a 4000x3000 photo is. They are now met by the area of a 4:3 photo (budget_side): 4:3 photos are treated as before."""
    from PIL import Image

    from ferclient.faces import budget_side, load_rgb

    assert budget_side(3000, 4000) == budget_side(4000, 3000) == 4000 and budget_side(1000, 6000) < 3000
    face = Image.fromarray(skimage.data.astronaut()).resize((220, 220), Image.Resampling.LANCZOS)  # its face about 40 px
    for w, h in ((6000, 1000), (8000, 220), (4000, 3000)):
        im = Image.new("RGB", (w, h), (120, 120, 120))
        im.paste(face, (w // 2 - 110, h // 2 - 110))
        im.save(tmp_path / "p.jpg", quality=92)
        rgb, scale = load_rgb(tmp_path / "p.jpg")
        faces = [f.rescaled(scale) for f in detector.detect(rgb)]
        truth = (w // 2 - 110 + ASTRONAUT_FACE[0] * 220 // 512, h // 2 - 110 + ASTRONAUT_FACE[1] * 220 // 512,
                 ASTRONAUT_FACE[2] * 220 // 512, ASTRONAUT_FACE[3] * 220 // 512)
        assert len(faces) == 1 and iou(faces[0].box, truth) >= 0.5, (w, h, [f.box for f in faces], truth)


def _photos():
    a = skimage.data.astronaut()
    return {"astronaut": a, "pair": np.concatenate([a, a[:, ::-1]], axis=1), "crop": a[50:250, 150:300],
            "odd size": cv2.resize(a, (333, 257), interpolation=cv2.INTER_AREA), "coffee": skimage.data.coffee()}


@pytest.mark.parametrize("name", list(_photos()))
def test_detector_decodes_as_opencv_does(detector, name):
    """ONNX Runtime plus our decoding and NMS give FaceDetectorYN's rows on the same file: the same faces, to 1e-3 px."""
    rgb = _photos()[name]
    ref = cv2.FaceDetectorYN.create(str(WEIGHTS / "face-detector" / DETECTOR_FILE), "", rgb.shape[1::-1], DETECT_THRESHOLD, NMS_IOU, 5000)
    _, want = ref.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    got = detector.raw(rgb)
    want = np.zeros((0, 15), np.float32) if want is None else want
    assert got.shape == want.shape and (len(got) > 0) == (name != "coffee")
    np.testing.assert_allclose(got, want, atol=1e-3)


@pytest.mark.parametrize("size", [(480, 320), (300, 211), (100, 77), (512, 300)])
def test_shrink_is_opencvs_area_resize(size):
    for img in (np.concatenate([skimage.data.astronaut()] * 2, axis=1), skimage.data.camera()):
        d = np.abs(shrink(img, size).astype(int) - cv2.resize(img, size, interpolation=cv2.INTER_AREA))
        assert d.max() <= 1 and d.mean() < 0.05, (size, img.shape, d.max(), d.mean())


def test_align_is_opencvs_warp(detector):
    """The float warp and 4x4 block mean against cv2.warpAffine (replicated edges) and INTER_AREA: at most 1 grey level apart.
    Bilinear for a face at least as large as the crop, Lanczos (INTER_LANCZOS4) for a smaller one."""
    rgb = skimage.data.astronaut()
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    assert np.abs(to_gray(rgb).astype(int) - gray).max() <= 1
    # a large face; one a little larger than the crop; a small one over the corner
    for face in (detector.detect(rgb)[0], Face((0, 0, 60, 60), 0.9, FER2013_LANDMARKS * 1.3 + 2), Face((0, 0, 30, 30), 0.9, FER2013_LANDMARKS * 0.6 - 5)):
        m = _similarity(face.landmarks.astype(np.float64), FER2013_LANDMARKS.astype(np.float64))
        up = 4 if face.size > 96 else 1
        flags = cv2.INTER_LANCZOS4 if np.linalg.det(m[:, :2]) > 1 else cv2.INTER_LINEAR
        big = cv2.warpAffine(gray, m * up, (48 * up, 48 * up), flags=flags, borderMode=cv2.BORDER_REPLICATE)
        want = cv2.resize(big, (48, 48), interpolation=cv2.INTER_AREA)
        d = np.abs(_as_cut(align, gray, face).astype(int) - want)
        assert d.max() <= 1 and d.mean() < 0.2, (face.box, d.max(), d.mean())


def test_a_small_face_is_enlarged_sharper_than_bilinear(detector):
    """A face with fewer pixels than the crop: align's Lanczos enlargement is closer to the crop of the same face
    photographed larger than a bilinear one is (what the classifier gains from it: docs/photos, "Small faces")."""
    rgb = skimage.data.astronaut()
    gray = to_gray(rgb)
    face = detector.detect(rgb)[0]
    truth = align(gray, face).astype(float)
    k = 28 / face.size  # the same photo with the face 28 px across
    small = cv2.resize(gray, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
    tiny = Face(tuple(round(v * k) for v in face.box), face.score, face.landmarks * k)
    m = _similarity(tiny.landmarks.astype(np.float64), FER2013_LANDMARKS.astype(np.float64))
    assert np.linalg.det(m[:, :2]) > 1
    sharp = np.abs(align(small, tiny) - truth).mean()
    bilinear = np.abs(np.clip(np.rint(warp(small, m, 48)), 0, 255) - truth).mean()
    assert sharp < 0.9 * bilinear, (sharp, bilinear)


def test_the_detectors_threads_do_not_spin_between_calls(detector):
    """Spinning doubled the CPU each detection cost a device that pauses between frames (client/faces.py)."""
    opts = detector._net.get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_bad_threshold_is_refused():
    with pytest.raises(ValueError, match="between 0 and 1"):
        FaceDetector(threshold=1.5)


def test_alignment_levels_the_eyes_and_undoes_tilt(detector):
    rgb = skimage.data.astronaut()
    gray = to_gray(rgb)
    face = detector.detect(rgb)[0]
    m = _similarity(face.landmarks.astype(np.float64), FER2013_LANDMARKS.astype(np.float64))
    eyes = face.landmarks[:2] @ m[:, :2].T + m[:, 2]
    assert abs(eyes[0, 1] - eyes[1, 1]) < 0.5 and np.abs(eyes - FER2013_LANDMARKS[:2]).max() < 2.5
    upright = align(gray, face)
    # Tilt the photo 30 degrees about the nose: the aligned crop should look like the upright one, the box crop should not.
    centre = tuple(float(v) for v in face.landmarks[2])
    tilted_rgb = cv2.warpAffine(rgb, cv2.getRotationMatrix2D(centre, 30, 1.0), rgb.shape[1::-1], borderMode=cv2.BORDER_REFLECT)
    tilted = detector.detect(tilted_rgb)[0]
    aligned = align(to_gray(tilted_rgb), tilted)
    unaligned = box_crop(to_gray(tilted_rgb), tilted)
    assert upright.shape == aligned.shape == unaligned.shape == (48, 48) and aligned.dtype == np.uint8

    def corr(a, b):  # over the centre, where the face is
        return np.corrcoef(a[8:40, 8:40].ravel().astype(float), b[8:40, 8:40].ravel().astype(float))[0, 1]

    assert corr(upright, aligned) > corr(upright, unaligned) + 0.2


def _centre_corr(a, b) -> float:
    return float(np.corrcoef(a[8:40, 8:40].ravel().astype(float), b[8:40, 8:40].ravel().astype(float))[0, 1])


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_a_face_on_its_side_or_upside_down_is_cut_upright(detector, turns):
    """YuNet finds the astronaut turned 90, 180 or 270 degrees but puts its landmarks as on an upright face;
    upright() takes them from the quarter turn it scores best, so the aligned crop is the upright face's. The box comes
    from that turn too: YuNet's own box of a face lying down covered part of it (IoU 0.67-0.80 with the face's)."""
    rgb = skimage.data.astronaut()
    upright = align(to_gray(rgb), detector.detect(rgb)[0])
    turned = np.ascontiguousarray(np.rot90(rgb, turns))
    faces = detector.detect(turned)
    assert len(faces) == 1 and iou(faces[0].box, tuple(turn_boxes(np.array([ASTRONAUT_FACE], float), turns, rgb.shape[:2])[0])) >= 0.85  # 0.92-0.95
    assert _centre_corr(upright, align(to_gray(turned), faces[0])) > 0.75  # 0.81-0.88 measured
    as_found = FaceDetector.raw(detector, turned)[0]  # the landmarks before upright()
    lying = align(to_gray(turned), Face(faces[0].box, faces[0].score, as_found[4:14].reshape(5, 2)))
    assert _centre_corr(upright, lying) < 0.4  # -0.32 to 0.18 measured


def test_a_photo_stored_upside_down_is_searched_turned(detector):
    """A small astronaut upside down (no EXIF to say so): the upright pass finds nothing, the turned passes find her."""
    small = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((179, 179), Image.Resampling.LANCZOS))
    turned = np.ascontiguousarray(np.rot90(small, 2))
    assert FaceDetector(turned=False).detect(turned) == []
    faces = detector.detect(turned)
    truth = tuple(turn_boxes(np.array([[round(v * 179 / 512) for v in ASTRONAUT_FACE]], float), 2, small.shape[:2])[0])
    assert len(faces) == 1 and iou(faces[0].box, truth) >= 0.5 and faces[0].score >= 0.85
    assert _centre_corr(align(to_gray(small), detector.detect(small)[0]), align(to_gray(turned), faces[0])) > 0.5  # 0.69 measured (a 31 px face)


def test_a_photo_on_its_side_whose_faces_are_found_weakly_is_searched_turned(detector):
    """Four astronauts in a row, two large and two small, the photo stored on its side: the upright pass finds the two
    large ones weakly (0.58, 0.62) and not the small ones, so the turned passes never ran (an audit's group photo on
    its side: 2 of 5 faces and a hand). With only weak faces, the quarter turns are tried too, and win with more faces."""
    big = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((256, 256)))
    small = np.full((256, 256, 3), 128, np.uint8)
    small[48:208, 48:208] = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((160, 160)))
    photo = np.ascontiguousarray(np.rot90(np.concatenate([big, small, big, small], 1), 3))
    assert len(FaceDetector(turned=False).detect(photo)) == 2
    faces = detector.detect(photo)
    assert len(faces) == 4 and all(f.score >= 0.85 for f in faces)
    assert sorted(f.box[1] // 256 for f in faces) == [0, 1, 2, 3]  # one in each tile
    upright = skimage.data.astronaut()  # an upright photo with a sure face: no turned pass, the same faces
    assert [f.box for f in detector.detect(upright)] == [f.box for f in FaceDetector(turned=False).detect(upright)]


@pytest.mark.parametrize("degrees", [45, 135])
def test_a_tilted_face_is_cut_upright(detector, degrees):
    """The astronaut tilted 45 or 135 degrees: upright() also looks at the patch turned by eighths of a turn, so the
    crop is the upright face's (0.91 and 0.95 measured; 0.27 and -0.02 with quarter turns only)."""
    rgb = skimage.data.astronaut()
    upright = align(to_gray(rgb), detector.detect(rgb)[0])
    tilted = np.asarray(Image.fromarray(rgb).rotate(degrees, Image.Resampling.BILINEAR, expand=True, fillcolor=(90, 90, 90)))
    faces = detector.detect(tilted)
    assert len(faces) == 1 and _centre_corr(upright, align(to_gray(tilted), faces[0])) > 0.8


def test_a_small_face_tilted_60_degrees_is_found_by_the_tilted_passes(detector):
    """A 150 px astronaut tilted 60 degrees: neither the upright pass nor the quarter turns find her; the 45-degree passes do."""
    small = Image.fromarray(skimage.data.astronaut()).resize((150, 150), Image.Resampling.LANCZOS)
    tilted = np.asarray(small.rotate(60, Image.Resampling.BILINEAR, expand=True, fillcolor=(90, 90, 90)))
    assert FaceDetector(turned=False).detect(tilted) == [] and FaceDetector.raw(detector, np.ascontiguousarray(np.rot90(tilted))).size == 0
    faces = detector.detect(tilted)
    x, y, w, h = (v * 150 / 512 for v in ASTRONAUT_FACE)
    centre = _unrotate(np.array([[x + w / 2, y + h / 2]]), -60, (150, 150), tilted.shape[:2])[0]  # where the face's centre went
    assert len(faces) == 1 and faces[0].score >= 0.85
    fx, fy, fw, fh = faces[0].box
    assert np.hypot(fx + fw / 2 - centre[0], fy + fh / 2 - centre[1]) < w / 3 and 0.6 < fw / w < 1.5


@pytest.mark.parametrize("degrees", [-30, 30])
def test_a_tilted_face_is_levelled_further_than_yunets_landmarks_say(detector, monkeypatch, degrees):
    """YuNet's eye line under-reports a tilt (the astronaut tilted 30 degrees: 12-17); found again in its patch turned
    level, the landmarks follow the face further (20-23 measured)."""
    import ferclient.faces as faces

    rgb = skimage.data.astronaut()
    truth = detector.detect(rgb)[0].roll - degrees  # Pillow turns counter-clockwise; Face.roll is clockwise
    tilted = np.asarray(Image.fromarray(rgb).rotate(degrees, Image.Resampling.BILINEAR, expand=True, fillcolor=(90, 90, 90)))
    levelled = detector.detect(tilted)[0]
    monkeypatch.setattr(faces, "LEVEL_MIN_ROLL", 360.0)  # levelled() off
    as_found = detector.detect(tilted)[0]
    assert abs(levelled.roll - truth) < abs(as_found.roll - truth) - 4


@pytest.mark.parametrize("degrees", [45, -45, 90, 135, 180])
def test_unrotate_follows_pillows_rotate(degrees):
    img = np.zeros((30, 50), np.uint8)
    img[5:9, 10:14] = 255  # a dot centred at (12, 7)
    turned = np.asarray(Image.fromarray(img).rotate(degrees, Image.Resampling.BILINEAR, expand=True))
    ys, xs = np.nonzero(turned > 60)
    assert np.abs(_unrotate(np.array([[xs.mean() + 0.5, ys.mean() + 0.5]]), degrees, turned.shape, img.shape)[0] - (12, 7)).max() < 0.6


def test_a_flat_crop_is_stretched_and_a_normal_one_left_alone(detector):
    """A dim, hazy face gets FER2013's typical contrast back on every crop path; a normally lit one is untouched."""
    rgb = skimage.data.astronaut()
    face = detector.detect(rgb)[0]
    normal = align(to_gray(rgb), face)
    assert _flat_stretched(normal) is normal
    hazy = (0.45 + 0.15 * rgb / 255.0) * 255  # contrast x0.15, brighter
    hazy_gray = to_gray(np.clip(np.rint(hazy), 0, 255).astype(np.uint8))
    for crop in (align(hazy_gray, face), box_crop(hazy_gray, face), whole(hazy_gray[40:220, 150:300])):
        centre = crop[8:40, 8:40].astype(float)
        assert crop.dtype == np.uint8 and 35 <= centre.std() <= 50 and 80 <= centre.mean() <= 191
    flat = np.full((48, 48), 3, np.uint8)  # a black square: no division by zero, and it stays flat
    assert _flat_stretched(flat).std() == 0


def _laplacian_var(crop: np.ndarray) -> float:
    f = crop.astype(float)
    return float((f[:-2, 1:-1] + f[2:, 1:-1] + f[1:-1, :-2] + f[1:-1, 2:] - 4 * f[1:-1, 1:-1])[7:39, 7:39].var())


def test_a_blurred_crop_is_sharpened_and_a_sharp_one_left_alone(detector):
    """An out-of-focus face gets an unsharp mask on every crop path; a sharp one is untouched, a flat one stays flat."""
    import cv2

    rgb = skimage.data.astronaut()
    face = detector.detect(rgb)[0]
    sharp = align(to_gray(rgb), face)
    assert _blur_sharpened(sharp) is sharp
    soft = cv2.GaussianBlur(rgb, (0, 0), 6)  # the 48 px crop blurred by about sigma 1.5
    soft_gray = to_gray(soft)
    for cut, args in ((align, (soft_gray, face)), (box_crop, (soft_gray, face)), (whole, (soft_gray[40:220, 150:300],))):
        crop = cut(*args)
        assert crop.dtype == np.uint8 and _laplacian_var(crop) > 2 * _laplacian_var(_as_cut(cut, *args))
    grey = np.full((48, 48), 128, np.uint8)
    assert _blur_sharpened(grey).std() == 0


def _as_cut(cut, *args):
    """cut's crop before it is brought toward FER2013's (no crop counts as noisy, flat or blurred)."""
    import ferclient.faces as faces

    saved = faces.NOISY_SIGMA, faces.FLAT_STD, faces.BLURRED_VAR
    faces.NOISY_SIGMA, faces.FLAT_STD, faces.BLURRED_VAR = float("inf"), 0.0, 0.0
    try:
        return cut(*args)
    finally:
        faces.NOISY_SIGMA, faces.FLAT_STD, faces.BLURRED_VAR = saved


def test_a_noisy_crop_is_smoothed_and_a_clean_one_left_alone(detector):
    """A grainy photo's face is smoothed on every crop path, coming closer to the clean photo's crop; a clean face is
    untouched, and a flat grey square stays flat."""
    from ferclient.faces import NOISY_SIGMA, noise_sigma

    rgb = skimage.data.astronaut()
    face = detector.detect(rgb)[0]
    clean = align(to_gray(rgb), face)
    assert noise_sigma(clean) < NOISY_SIGMA and _noise_smoothed(clean) is clean
    grainy = to_gray(np.clip(np.rint(rgb + np.random.default_rng(0).normal(0, 70, rgb.shape)), 0, 255).astype(np.uint8))
    for cut, args, ref in ((align, (grainy, face), clean), (box_crop, (grainy, face), box_crop(to_gray(rgb), face)),
                           (whole, (grainy[40:220, 135:315],), whole(to_gray(rgb)[40:220, 135:315]))):  # square: whole() pads others
        as_cut, crop = _as_cut(cut, *args), cut(*args)
        assert noise_sigma(as_cut) >= NOISY_SIGMA and crop.dtype == np.uint8 and crop.shape == (48, 48)
        assert noise_sigma(crop) < 0.65 * noise_sigma(as_cut)  # 0.61 for whole()'s 180 px square, under 0.6 for the others
        assert np.abs(crop.astype(float) - ref).mean() < 0.95 * np.abs(as_cut.astype(float) - ref).mean()
    grey = np.full((48, 48), 128, np.uint8)
    assert noise_sigma(grey) == 0 and _noise_smoothed(grey) is grey


def test_sharpening_gives_blurred_val_faces_back_to_the_classifier():
    """600 val faces blurred (sigma 1.5), read by the deployed classifier: 57.7 % as cut, 60.5 % prepared (scripts/hard_faces.py)."""
    import cv2
    import torch

    from fermodels.bundle import load_classifier
    from fermodels.data import load_split, to_tensor
    from ferwire.card import ModelCard

    faces, labels = load_split("val", limit=600)
    clf = load_classifier(ModelCard.load().file("classifier.pt"))
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 1.5) for f in faces])

    def accuracy(crops):
        with torch.inference_mode():
            return 100.0 * float((clf.probabilities(to_tensor(crops)).argmax(1).numpy() == labels).mean())

    assert accuracy(np.stack([_blur_sharpened(f) for f in blurred])) >= accuracy(blurred) + 1.5


def test_smoothing_gives_noisy_val_faces_back_to_the_classifier():
    """600 val faces with Gaussian noise of sigma 12 grey levels, read by the deployed classifier: smoothed, several
    points more than as cut (all of val, its own seed: 60.63 -> 66.62 %, scripts/hard_faces.py)."""
    import torch

    from fermodels.bundle import load_classifier
    from fermodels.data import load_split, to_tensor
    from ferwire.card import ModelCard

    faces, labels = load_split("val", limit=600)
    clf = load_classifier(ModelCard.load().file("classifier.pt"))
    noisy = np.clip(np.rint(faces + np.random.default_rng(12).normal(0, 12, faces.shape)), 0, 255).astype(np.uint8)

    def accuracy(crops):
        with torch.inference_mode():
            return 100.0 * float((clf.probabilities(to_tensor(crops)).argmax(1).numpy() == labels).mean())

    assert accuracy(np.stack([_noise_smoothed(f) for f in noisy])) >= accuracy(noisy) + 3.0


def test_turn_boxes_follows_np_rot90():
    img = np.zeros((30, 50), bool)
    img[5:9, 10:17] = True  # a 7 x 4 box at (10, 5)
    for turns in range(4):
        ys, xs = np.nonzero(np.rot90(img, turns))
        box = turn_boxes(np.array([[10.0, 5.0, 7.0, 4.0]]), turns, img.shape)[0]
        assert tuple(box) == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)


def test_box_crop_pads_at_the_border_and_whole_is_48():
    gray = to_gray(skimage.data.astronaut())
    corner = box_crop(gray, Face((0, 0, 40, 40), 0.9, np.zeros((5, 2), np.float32)))
    assert corner.shape == (48, 48) and corner[0, 0] == 0
    assert whole(gray).shape == (48, 48)


def test_whole_pads_a_non_square_crop_instead_of_stretching_it():
    """--no-detect on a crop taller than wide: the face keeps its shape, set in its mirrored sides (stretched, val faces
    cut to 3:4 scored 66.3 %, padded 68.9 %: scripts/nonsquare_crops.py)."""
    face = to_gray(skimage.data.astronaut())[60:180, 170:290]  # 120 x 120 about her face
    tall = face[:, 15:105]  # 120 x 90
    assert squared(tall).shape == (120, 120) and (squared(tall)[:, 15:105] == tall).all()
    assert (squared(tall)[:, :15] == tall[:, 14::-1]).all() and (squared(tall)[:, 105:] == tall[:, :-16:-1]).all()
    assert (whole(tall) == whole(squared(tall))).all()
    # the eyes stay where the square crop's are (stretching moved them outwards by a third)
    assert _centre_corr(whole(face), whole(tall)) > 0.9


@pytest.mark.parametrize("name, make, reason", [("x.jpg", lambda p: None, "no such file"), ("x.jpg", lambda p: p.write_text("hello"), "not an image"),
                                                ("x.jpg", lambda p: p.mkdir(), "directory"),
                                                ("IMG_0001.HEIC", lambda p: p.write_bytes(b"\0\0\0\x18ftypheic" + bytes(16)), "not an image")])
def test_unreadable_inputs(tmp_path, name, make, reason):
    p = tmp_path / name
    make(p)
    with pytest.raises(ImageError, match=reason):
        load_rgb(p)


def test_an_iphone_heic_photo_is_read(tmp_path):
    """HEIC, what iPhones save by default: read through pi-heif (written here with pillow-heif, a test-only encoder)."""
    import pillow_heif

    pillow_heif.from_pillow(Image.fromarray(skimage.data.astronaut())).save(tmp_path / "IMG_0001.HEIC", quality=90)
    rgb, scale = load_rgb(tmp_path / "IMG_0001.HEIC")
    assert rgb.shape == (512, 512, 3) and scale == 1.0
    assert np.abs(rgb.astype(int) - skimage.data.astronaut()).mean() < 3  # lossy, but the same photo (1.3 measured)


def test_heic_without_pi_heif_says_what_to_install(tmp_path):
    """A client installed without pi-heif (a fresh process: Pillow keeps an opener once registered)."""
    import subprocess
    import sys

    (tmp_path / "IMG_0002.HEIC").write_bytes(b"\0\0\0\x18ftypheic" + bytes(16))
    code = ("import sys; sys.modules['pi_heif'] = None\n"  # import pi_heif now raises ImportError
            "from ferclient.faces import ImageError, load_rgb\n"
            f"try: load_rgb({str(tmp_path / 'IMG_0002.HEIC')!r})\n"
            "except ImageError as e: print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "pip install pi-heif" in out


@pytest.mark.parametrize("orientation, stored", [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270), (3, Image.Transpose.ROTATE_180)])
def test_a_phone_photo_is_turned_upright_by_its_exif_orientation(detector, tmp_path, orientation, stored):
    """Phones store the sensor's pixels plus an orientation tag; the face is found where a viewer sees it."""
    upright = Image.fromarray(skimage.data.astronaut())
    exif = Image.Exif()
    exif[0x0112] = orientation
    upright.transpose(stored).save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    rgb, scale = load_rgb(tmp_path / "phone.jpg")
    assert rgb.shape == (512, 512, 3) and scale == 1.0
    assert np.abs(rgb.astype(int) - np.asarray(upright)).mean() < 3  # upright again, up to JPEG's loss
    faces = detector.detect(rgb)
    assert len(faces) == 1 and iou(faces[0].box, ASTRONAUT_FACE) >= 0.5


def test_gray_palette_and_high_bit_depth_images_load_as_their_8_bit_pixels(detector, tmp_path):
    """A 16-bit grayscale PNG, a 32-bit integer TIFF holding 16-bit values and float TIFFs (0..1 and 0..255) load as
    the 8-bit photo they hold (Pillow's own convert clips them: white or black, and no face), and the face is found;
    in a dithered 1-bit PNG too."""
    gray = np.asarray(Image.fromarray(skimage.data.astronaut()).convert("L"))
    images = {"L.png": Image.fromarray(gray), "P.png": Image.fromarray(gray).convert("P"), "I16.png": Image.fromarray(gray.astype(np.uint16) * 257),
              "I32.tiff": Image.fromarray(gray.astype(np.int32) * 257), "F1.tiff": Image.fromarray(gray.astype(np.float32) / 255),
              "F255.tiff": Image.fromarray(gray.astype(np.float32))}
    over = gray.astype(np.float32) / 255
    over[0, 0] = 1.02  # one resampling overshoot: the whole image was read as 0..255, black, and no face found
    images["F1over.tiff"] = Image.fromarray(over)
    images["Fhdr.tiff"] = Image.fromarray(gray.astype(np.float32) / 255 * 4)  # high dynamic range, 0..4: shown stretched
    images["1.png"] = Image.fromarray(gray).convert("1")  # dithered black and white, blurred back into greys
    for name, im in images.items():
        im.save(tmp_path / name)
        rgb, scale = load_rgb(tmp_path / name)
        assert rgb.shape == (512, 512, 3) and rgb.dtype == np.uint8 and scale == 1.0
        if name == "1.png":  # only the shape of the photo comes back from its dots
            assert np.abs(rgb.astype(int) - gray[..., None]).mean() < 40, name
        elif name == "F1over.tiff":
            assert np.abs(rgb[..., 0].astype(int) - gray).ravel()[1:].max() <= 1, name
        elif name == "Fhdr.tiff":  # stretched to its 99.9th percentile
            assert np.abs(rgb.astype(int) - gray[..., None]).mean() < 4, name
        elif name != "P.png":  # a palette of 256 grays may merge a few levels
            assert np.abs(rgb.astype(int) - gray[..., None]).max() <= 1, name
        faces = detector.detect(rgb)
        assert len(faces) == 1 and iou(faces[0].box, ASTRONAUT_FACE) >= 0.5, name
    with Image.open(tmp_path / "I16.png") as im:
        assert im.mode.startswith("I;16")  # what the test is about: Pillow opens it as 16-bit


@pytest.mark.parametrize("mode", ["RGB", "P", "L"])
def test_a_large_photo_in_a_format_without_reduced_decoding_is_reduced_once_read(detector, tmp_path, mode):
    """A large PNG (no DCT scaling to decode it smaller, as a JPEG has) comes back k x k box-averaged, its longer side
    between DECODE_MIN_SIDE and twice that, with the scale that maps its boxes back to the file's pixels; the face is
    found where it is in the file."""
    from ferclient.faces import DECODE_MIN_SIDE

    side = 4 * DECODE_MIN_SIDE + 100
    Image.fromarray(skimage.data.astronaut()).resize((side, side), Image.Resampling.BILINEAR).convert(mode).save(tmp_path / "large.png", compress_level=1)
    rgb, scale = load_rgb(tmp_path / "large.png")
    assert rgb.shape == (1625, 1625, 3) and rgb.dtype == np.uint8 and scale == 4.0
    faces = detector.detect(rgb)
    assert len(faces) == 1 and iou(np.asarray(faces[0].box) * scale, np.array(ASTRONAUT_FACE) * side / 512) >= 0.5


def test_a_fixed_size_detector_file_is_refused_with_the_fix(tmp_path):
    """Upstream YuNet files declare 640x640; run as they are, ONNX Runtime would refuse every other photo size."""
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(WEIGHTS / "face-detector" / DETECTOR_FILE))
    for dim, size in zip(model.graph.input[0].type.tensor_type.shape.dim[2:], (640, 640)):
        dim.dim_value = size
    onnx.save(model, str(tmp_path / "fixed.onnx"))
    with pytest.raises(OSError, match="scripts/yunet_dynamic.py"):
        FaceDetector(model=tmp_path / "fixed.onnx")


def test_odd_but_legitimate_files_read_as_a_viewer_shows_them(detector, tmp_path):
    """From the audit of unusual files (2026-12-07): transparent pixels are shown over white (a fully transparent PNG,
    blank on screen, was labelled); an animated GIF or a multi-page TIFF says only its first frame is read; a malformed
    EXIF block prints no Pillow warning; a huge WebP is refused in one line before its decoder takes gigabytes; a
    truncated file's decoder error is one line saying so."""
    import warnings

    from ferclient import faces as faces_mod

    photo = Image.fromarray(skimage.data.astronaut())
    rgba = photo.convert("RGBA")
    rgba.putalpha(0)
    rgba.save(tmp_path / "clear.png")
    rgb, _ = load_rgb(tmp_path / "clear.png")
    assert (rgb == 255).all() and detector.detect(rgb) == []
    half = photo.convert("RGBA")
    half.putalpha(Image.new("L", photo.size, 255))
    half.save(tmp_path / "opaque.png")
    assert len(detector.detect(load_rgb(tmp_path / "opaque.png")[0])) == 1

    notes = []
    Image.new("RGB", photo.size).save(tmp_path / "anim.gif", save_all=True, append_images=[photo], duration=100)
    load_rgb(tmp_path / "anim.gif", warn=notes.append)
    assert notes == ["2 frames or pages: only the first is read"]
    # A phone's MPO JPEG (a second frame: its preview) is a JPEG: no note, and decoded at a reduced scale as one
    big = photo.resize((4000, 3000))
    big.save(tmp_path / "phone.jpg", save_all=True, append_images=[photo], quality=85, format="MPO")
    with Image.open(tmp_path / "phone.jpg") as im:
        assert (im.format, im.n_frames) == ("MPO", 2)
    rgb, scale = load_rgb(tmp_path / "phone.jpg", warn=notes.append)
    assert rgb.shape == (1500, 2000, 3) and scale == 2.0 and len(notes) == 1

    good = tmp_path / "p.jpg"
    photo.save(good, quality=90)
    b = good.read_bytes()
    seg = b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08" + b"\xff" * 40
    (tmp_path / "bad_exif.jpg").write_bytes(b[:2] + b"\xff\xe1" + (len(seg) + 2).to_bytes(2, "big") + seg + b[2:])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would fail here
        rgb, _ = load_rgb(tmp_path / "bad_exif.jpg")
    assert len(detector.detect(rgb)) == 1

    photo.save(tmp_path / "p.webp", quality=80)
    faces_mod.WEBP_MAX_PIXELS, before = 100_000, faces_mod.WEBP_MAX_PIXELS
    try:
        with pytest.raises(ImageError, match=r"512x512 pixels \(0 megapixels\) is more than ferclient decodes as WebP"):
            load_rgb(tmp_path / "p.webp")
    finally:
        faces_mod.WEBP_MAX_PIXELS = before
    data = (tmp_path / "p.webp").read_bytes()
    (tmp_path / "cut.webp").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as e:
        load_rgb(tmp_path / "cut.webp")
    assert "\n" not in str(e.value) and ("truncated" in str(e.value) or "not an image" in str(e.value)), str(e.value)
