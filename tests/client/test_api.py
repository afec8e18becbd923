"""ferclient.Client, the client as a library, against a real ferserver: the answers `ferclient send` gives, from a
path, bytes, a Pillow image or an array; errors as FerError with the command line's one line; no torch."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ferclient import Client, FaceResult, FerError
from ferserver.process import ServerProcess, free_port

from ..conftest import run_client


@pytest.fixture(scope="module")
def client(server):
    with Client(server.address) as c:
        yield c


def _same(a: FaceResult, b: FaceResult) -> None:
    assert (a.label, a.box, a.bytes, a.model) == (b.label, b.box, b.bytes, b.model)
    assert a.probabilities == pytest.approx(b.probabilities, abs=1e-6) and a.score == pytest.approx(b.score)


def test_a_photo_gets_what_ferclient_send_prints(client, server, astronaut):
    faces = client.recognize(str(astronaut))
    cli = [json.loads(line) for line in run_client("send", str(astronaut), "--json", "--server", server.address).stdout.splitlines()]
    assert len(faces) == len(cli) == 1 and faces[0].label == "happy"
    row = faces[0].row()
    assert row == {k: cli[0][k] for k in row}  # box, score, label, confidence, probabilities, bytes, bpp: the same bits
    assert faces[0].model == cli[0]["model"] == client.model and faces[0].reconstruction_png is None


def test_bytes_pillow_images_and_arrays_are_read_as_the_file_is(client, astronaut):
    (path_face,) = client.recognize(astronaut)
    im = Image.open(astronaut)
    for image in (astronaut.read_bytes(), im, np.asarray(im), np.asarray(im.convert("RGBA"))):
        (face,) = client.recognize(image)
        _same(face, path_face)
    gray = client.recognize(np.asarray(im.convert("L")))
    assert [f.label for f in gray] == ["happy"]


def test_a_face_crop_without_detection_and_its_reconstruction(client, fer_test):
    (face,) = client.recognize(fer_test[0][0], detect=False, reconstruct=True)
    assert face.box is None and face.score is None and sum(face.probabilities.values()) == pytest.approx(1, abs=1e-3)
    assert Image.open(io.BytesIO(face.reconstruction_png)).size == (48, 48)


def test_no_face_is_an_empty_list(client):
    assert client.recognize(np.full((240, 320, 3), 128, np.uint8)) == []


def test_the_expression_layer(server, astronaut):
    with Client(server.address, model="fercodec-v1-expr") as c:
        (face,) = c.recognize(astronaut)
        assert face.label == "happy" and face.bytes < 64 and c.model.startswith("fercodec-v1-expr")
        with pytest.raises(FerError, match="expression layer: it sends no image"):
            c.recognize(astronaut, reconstruct=True)


@pytest.mark.parametrize("image, says", [
    ("/nonexistent/photo.jpg", "/nonexistent/photo.jpg: no such file"),
    (b"not an image", "not an image Pillow can read"),
    (np.zeros((48, 48), np.float32), "must be uint8, got float32"),
    (np.zeros((4, 48, 48), np.uint8), "got shape [4, 48, 48]"),
    (42, "cannot read an object of type int as an image"),
])
def test_what_is_not_an_image_is_one_line(client, image, says):
    with pytest.raises(FerError) as e:
        client.recognize(image)
    assert says in str(e.value) and "\n" not in str(e.value) and e.value.code is None


def test_bad_settings_and_an_unreachable_server_are_fer_errors(astronaut, tmp_path):
    for kwargs, says in (({"server": "myhost"}, "has no port"), ({"timeout": -1}, "^timeout=: must be a positive number"), ({"quality": 99}, "quality 99 out of range"),
                         ({"tls_cert": str(tmp_path / "c.pem")}, "--tls-cert and --tls-key go together"),
                         ({"model": str(tmp_path)}, "model.json")):
        with pytest.raises(FerError, match=says):
            Client(**{"server": "127.0.0.1:1", **kwargs})
    with Client(f"127.0.0.1:{free_port()}", timeout=2) as c, pytest.raises(FerError) as e:
        c.recognize(astronaut)
    assert e.value.code == "UNAVAILABLE" and "cannot reach" in str(e.value)


def test_a_token_given_directly(tmp_path, astronaut):
    (tmp_path / "tokens").write_text("s3cret\n")
    with ServerProcess("--auth-token-file", str(tmp_path / "tokens"), "--metrics-port", "-1") as s:
        with Client(s.address, token="s3cret") as c:
            assert [f.label for f in c.recognize(astronaut)] == ["happy"]
        with Client(s.address, token="wrong") as c, pytest.raises(FerError) as e:
            c.recognize(astronaut)
        assert e.value.code == "UNAUTHENTICATED"


def test_the_library_imports_neither_torch_nor_the_library_for_the_command_line():
    code = ("import sys, ferclient.cli; assert 'ferclient.api' not in sys.modules; "
            "from ferclient import Client; assert not {'torch', 'compressai'} & set(sys.modules), 'heavy import'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_what_a_library_user_met_first(client, server, astronaut, tmp_path):
    """The first audit of the library: Pillow's pixel limit left off by two threads, empty and unnamable images, use
    after close, a token with a newline, errors naming flags instead of keywords, a PNG's bytes in a result's repr."""
    import threading

    limit = Image.MAX_IMAGE_PIXELS
    threads = [threading.Thread(target=lambda: [client.recognize(astronaut) for _ in range(3)]) for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert Image.MAX_IMAGE_PIXELS == limit
    for image, says in ((np.zeros((0, 0, 3), np.uint8), "empty"), (Image.new("L", (0, 0)), "empty"), ("x" * 300, "cannot read it")):
        with pytest.raises(FerError, match=says):
            client.recognize(image)
    with Client(server.address) as c:
        pass
    with pytest.raises(FerError, match="closed"):
        c.recognize(astronaut)
    c.close()  # twice: nothing to say
    with pytest.raises(FerError, match="token= holds"):
        Client(server.address, token="s3cret\n")
    with pytest.raises(FerError, match=r"^detect_threshold=: must be between 0 and 1, got 2"):
        Client(server.address, detect_threshold=2)
    (tmp_path / "-tok").write_text("t\n")
    with Client(server.address, token_file=str(tmp_path / "-tok")):  # a value starting with "-" is a value
        pass
    (face,) = client.recognize(astronaut, reconstruct=True)
    assert "reconstruction_png" not in repr(face) and len(repr(face)) < 600
