"""--annotate's drawing: boxes in the file's pixels land on the right pixels, labels stay inside the photo, the input is never overwritten."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ferclient.annotate import CLASS_COLOURS, SKIPPED_COLOUR, SUFFIX, annotate, draw, marks_for, output_path
from ferclient.faces import Face


def _face(box):
    return Face(box, 0.9, np.zeros((5, 2), np.float32))


def _close(pixel, colour, tol=40):
    return all(abs(int(a) - b) <= tol for a, b in zip(pixel, colour))


def test_box_edges_take_the_class_colour_and_the_label_sits_above():
    rgb = np.full((300, 400, 3), 128, np.uint8)
    marks = marks_for([_face((100, 120, 80, 100))], ["happy"], [0.87])
    im = np.asarray(draw(rgb, marks))
    assert im.shape == rgb.shape
    assert _close(im[170, 100], CLASS_COLOURS["happy"]) and _close(im[120, 140], CLASS_COLOURS["happy"])  # left and top edges
    assert _close(im[170, 140], (128, 128, 128), 0)  # inside the box: the photo, untouched
    label = im[:120, 100:180]  # the label's strip above the box holds its colour and its text
    assert (np.abs(label.astype(int) - CLASS_COLOURS["happy"]).sum(-1) < 40).sum() > 200
    assert (label.sum(-1) < 60).sum() > 10  # black text on the light orange label


def test_boxes_are_scaled_to_the_decoded_pixels_and_labels_stay_in_the_photo():
    """load_rgb may decode a large JPEG at a fraction of its size: boxes (file pixels) are divided by that scale."""
    rgb = np.full((200, 200, 3), 128, np.uint8)
    im = np.asarray(draw(rgb, marks_for([_face((200, 0, 120, 120))], ["sad"], [0.5]), scale=2.0))
    assert _close(im[30, 100], CLASS_COLOURS["sad"])  # x 200 in the file is x 100 here
    assert _close(im[1, 130], CLASS_COLOURS["sad"])  # a face at the top edge: its label goes just inside the box


def test_skipped_faces_are_thin_grey_boxes_and_whole_image_answers_frame_the_photo():
    rgb = np.full((100, 100, 3), 200, np.uint8)
    marks = marks_for([None], ["angry"], [0.4], skipped=[_face((60, 60, 20, 20))])
    assert marks[1] == ((60, 60, 20, 20), None, SKIPPED_COLOUR)
    im = np.asarray(draw(rgb, marks))
    assert _close(im[99, 50], CLASS_COLOURS["angry"]) and _close(im[50, 0], CLASS_COLOURS["angry"])
    assert _close(im[70, 80], SKIPPED_COLOUR) and _close(im[70, 70], (200, 200, 200), 0)  # its edge, one pixel wide; no label over it
    assert _close(im[55, 70], (200, 200, 200), 0)


def test_labels_of_a_crowd_do_not_cover_each_other_or_hide_under_skipped_faces():
    """An audit's crowd photos: 60 grey "too small" tags buried the photo and hid classified faces' labels drawn before
    them; neighbours' labels wrote over each other. Skipped faces are thin boxes under everything now, and each label
    goes where it covers no label placed before it: each keeps all of its colour that it has drawn alone."""
    names = list(CLASS_COLOURS)
    rgb = np.full((240, 400, 3), 128, np.uint8)

    def colour_pixels(im, name):
        return int((np.abs(im.astype(int) - CLASS_COLOURS[name]).sum(-1) < 30).sum())

    faces = [_face((20 + 45 * k, 90, 40, 40)) for k in range(len(names))]  # a row of touching faces: each label wider than its face
    skipped = [_face((30 + 45 * k, 95, 16, 16)) for k in range(len(names))]  # a small face in front of each
    crowd = np.asarray(draw(rgb, marks_for(faces, names, [0.9] * len(names), skipped=skipped)))
    for face, name in zip(faces, names):
        alone = np.asarray(draw(rgb, marks_for([face], [name], [0.9])))
        assert colour_pixels(crowd, name) >= 0.9 * colour_pixels(alone, name), name


def test_annotate_writes_a_jpeg_beside_never_onto_its_input(tmp_path):
    src = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), (10, 20, 30)).save(src)
    out = output_path(src.stem, tmp_path / "out")
    assert out == tmp_path / "out" / ("photo" + SUFFIX)
    out.parent.mkdir()
    annotate(src, out, marks_for([_face((8, 8, 30, 30))], ["fear"], [0.6]))
    with Image.open(out) as im:
        assert im.format == "JPEG" and im.size == (64, 48)
    assert output_path(out.stem, out.parent) != out  # an annotated copy sent again gets its own name
