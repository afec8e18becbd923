"""Detection, alignment and cropping on real photos (scikit-image's public-domain pictures); unreadable inputs give one-line reasons."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from ferclient.faces import FER2013_LANDMARKS, Face, FaceDetector, ImageError, _similarity, align, box_crop, load_rgb, to_gray, whole

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


def test_large_photos_are_detected_at_reduced_size(astronaut):
    """A 4x upscaled photo is shrunk for detection; the box comes back in the photo's own pixels."""
    big = cv2.resize(skimage.data.astronaut(), (2048, 2048), interpolation=cv2.INTER_LINEAR)
    faces = FaceDetector(max_side=512).detect(big)
    assert len(faces) == 1 and iou(faces[0].box, tuple(4 * v for v in ASTRONAUT_FACE)) >= 0.5


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


def test_box_crop_pads_at_the_border_and_whole_is_48():
    gray = to_gray(skimage.data.astronaut())
    corner = box_crop(gray, Face((0, 0, 40, 40), 0.9, np.zeros((5, 2), np.float32)))
    assert corner.shape == (48, 48) and corner[0, 0] == 0
    assert whole(gray).shape == (48, 48)


@pytest.mark.parametrize("make, reason", [(lambda p: None, "no such file"), (lambda p: p.write_text("hello"), "not an image"), (lambda p: p.mkdir(), "directory")])
def test_unreadable_inputs(tmp_path, make, reason):
    p = tmp_path / "x.jpg"
    make(p)
    with pytest.raises(ImageError, match=reason):
        load_rgb(p)


def test_gray_palette_and_16bit_images_load_as_rgb(tmp_path):
    for mode, size in (("L", (60, 40)), ("P", (30, 20)), ("I;16", (20, 10))):
        p = tmp_path / f"{mode.replace(';', '')}.png"
        Image.new(mode, size).save(p)
        rgb, scale = load_rgb(p)
        assert rgb.shape == (size[1], size[0], 3) and rgb.dtype == np.uint8 and scale == 1.0
