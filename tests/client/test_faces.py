"""Detection and cropping on a real photo; unreadable inputs give one-line reasons."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ferclient.faces import ImageError, crop, detect, load_gray


def test_detects_the_astronaut(astronaut):
    boxes = detect(np.asarray(load_gray(astronaut)))
    assert len(boxes) == 1
    x, y, w, h = boxes[0]
    assert abs(x - 177) <= 8 and abs(y - 66) <= 8 and abs(w - 95) <= 10


def test_flat_image_has_no_face():
    assert detect(np.full((200, 200), 128, np.uint8)) == []


def test_crop_is_square_48_and_pads_at_the_border(astronaut):
    im = load_gray(astronaut)
    face = crop(im, (177, 66, 95, 95))
    assert face.shape == (48, 48) and face.dtype == np.uint8
    corner = crop(im, (0, 0, 40, 40))  # box at the corner: padded, still 48x48
    assert corner.shape == (48, 48) and corner[0, 0] == 0
    assert crop(im, None).shape == (48, 48)


@pytest.mark.parametrize("make, reason", [(lambda p: None, "no such file"), (lambda p: p.write_text("hello"), "not an image"), (lambda p: p.mkdir(), "directory")])
def test_unreadable_inputs(tmp_path, make, reason):
    p = tmp_path / "x.jpg"
    make(p)
    with pytest.raises(ImageError, match=reason):
        load_gray(p)


def test_color_and_16bit_images_become_gray(tmp_path):
    p = tmp_path / "c.png"
    Image.new("RGB", (60, 60), (200, 10, 10)).save(p)
    assert load_gray(p).mode == "L"
