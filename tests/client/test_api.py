"""ferclient.Client, the client as a library, against a real ferserver: the answers `ferclient send` gives, from a
path, bytes, a Pillow image or an array, one image or many; faces skipped as too small; what the server runs;
errors as FerError with the command line's one line; no torch."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ferclient import Client, FaceResult, FerError, ServerInfo, SkippedFace
from ferserver.process import ServerProcess, free_port

from ..conftest import run_client
from .test_models import upgraded  # noqa: F401 (the fixture: a server running a model this client does not ship)


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
    # what users try first besides: an open file, io.BytesIO, a bytearray, OpenCV's [H, W, 1] gray
    with open(astronaut, "rb") as f:
        for image in (f, io.BytesIO(astronaut.read_bytes()), bytearray(astronaut.read_bytes())):
            (face,) = client.recognize(image)
            _same(face, path_face)
    assert [f.label for f in client.recognize(np.asarray(im.convert("L"))[..., None])] == ["happy"]


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


def test_what_a_library_user_gets_wrong_is_a_fer_error_too(client, astronaut):
    """Each of these raised something other than FerError (ValueError from Pillow), or was taken silently (detect="no")."""
    closed = Image.open(astronaut)
    closed.close()
    with open(astronaut) as text:
        for call, says in ((lambda: client.recognize(closed), "cannot read the Pillow image (Operation on closed image)"),
                           (lambda: client.recognize(text), "opened in binary mode ('rb')"),
                           (lambda: client.recognize(""), "an empty path"),
                           (lambda: client.recognize(astronaut, detect="no"), "True or False, got 'no'"),
                           (lambda: client.recognize_many(io.BytesIO(b"")), "takes a list of images, got one BytesIO"),
                           (lambda: Client(quality=2.0), "^quality: must be a quality index (a whole number"),
                           (lambda: Client(min_face=30.5), "^min_face: must be a positive whole number of pixels, got 30.5")):
            with pytest.raises(FerError, match=re.escape(says) if not says.startswith("^") else "^" + re.escape(says[1:])):
                call()


def test_bad_settings_and_an_unreachable_server_are_fer_errors(astronaut, tmp_path):
    for kwargs, says in (({"server": "myhost"}, "has no port"), ({"timeout": -1}, "^timeout: must be a positive number"), ({"quality": 99}, "quality 99 out of range"),
                         ({"tls_cert": str(tmp_path / "c.pem")}, "tls_cert= and tls_key= go together"),  # named --tls-cert, --tls-key
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
        with Client(s.address) as c, pytest.raises(FerError) as e:
            c.server_info()
        assert e.value.code == "UNAUTHENTICATED" and str(e.value).startswith("server refused the token")
        assert "give one with token_file= or FERCODEC_TOKEN" in str(e.value)  # it named --token-file


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
    with pytest.raises(FerError, match=r"^detect_threshold: must be between 0 and 1, exclusive, got 2"):
        Client(server.address, detect_threshold=2)
    (tmp_path / "-tok").write_text("t\n")
    with Client(server.address, token_file=str(tmp_path / "-tok")):  # a value starting with "-" is a value
        pass
    (face,) = client.recognize(astronaut, reconstruct=True)
    assert "reconstruction_png" not in repr(face) and len(repr(face)) < 600


def _recognize_calls(server) -> float:
    """Recognize calls the server has answered (its fercodec_requests_total), whatever their status."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in server.metrics().splitlines()
               if line.startswith("fercodec_requests_total{") and 'method="Recognize"' in line)


def test_many_images_go_in_few_requests_and_answer_as_one_at_a_time(client, server, astronaut, fer_test):
    """recognize_many: one list per image, in order, as recognize() gives it; 40 faces in 2 requests (of up to 32),
    4 photos in 1, where recognize() made one request per image."""
    crops = list(fer_test[0][:40])
    before = _recognize_calls(server)
    many = client.recognize_many(crops, detect=False)
    assert _recognize_calls(server) - before == 2 and [len(faces) for faces in many] == [1] * 40
    for k in (0, 31, 32, 39):  # either side of the requests' seam
        _same(many[k][0], client.recognize(crops[k], detect=False)[0])
    (alone,) = client.recognize(astronaut)
    before = _recognize_calls(server)
    photos = client.recognize_many(iter([astronaut, np.full((240, 320, 3), 128, np.uint8), str(astronaut), astronaut.read_bytes()]))
    assert _recognize_calls(server) - before == 1 and [len(faces) for faces in photos] == [1, 0, 1, 1]
    for faces in (photos[0], photos[2], photos[3]):
        _same(faces[0], alone)
    before = _recognize_calls(server)
    assert client.recognize_many([]) == [] and client.recognize_many([np.full((64, 64), 9, np.uint8)]) == [[]]
    assert _recognize_calls(server) == before  # nothing to send: no request


def test_a_bad_image_among_many_is_named_before_anything_is_sent(client, server, astronaut):
    before = _recognize_calls(server)
    with pytest.raises(FerError) as e:
        client.recognize_many([astronaut, "/nonexistent/photo.jpg", astronaut])
    assert str(e.value) == "images[1] (/nonexistent/photo.jpg): no such file" and e.value.index == 1 and e.value.code is None
    with pytest.raises(FerError) as e:
        client.recognize_many([astronaut, np.zeros((48, 48), np.float32)])
    assert str(e.value).startswith("images[1] (<ndarray>): an array image must be uint8") and e.value.index == 1
    assert _recognize_calls(server) == before
    for one in (str(astronaut), astronaut.read_bytes(), Image.open(astronaut), np.asarray(Image.open(astronaut))):
        with pytest.raises(FerError, match="recognize_many takes a list of images"):  # not its characters, bytes or rows
            client.recognize_many(one)


def test_faces_under_min_face_are_told_to_a_callback(client, server, astronaut):
    """send's note per skipped face, for the library: on_skipped gets each one, the result is the usual list."""
    (face,) = client.recognize(astronaut)
    with Client(server.address, min_face=face.box[3] + 1) as c:
        seen: list[SkippedFace] = []
        assert c.recognize(astronaut, on_skipped=seen.append) == []
        assert seen == [SkippedFace(box=face.box, score=face.score, size=max(face.box[2:]), image=0)]
        seen.clear()
        assert c.recognize_many([str(astronaut), astronaut], detect=True, on_skipped=seen.append) == [[], []]
        assert [s.image for s in seen] == [0, 1] and c.recognize(astronaut) == []
    assert client.recognize(astronaut, on_skipped=seen.append) and len(seen) == 2  # none under the default min_face


def test_server_info_is_what_ferclient_info_prints(client, server):
    info = client.server_info()
    cli = json.loads(run_client("info", "--server", server.address).stdout)
    assert isinstance(info, ServerInfo) and [m.model_id for m in info.models] == [cli["model_id"]] + [m["model_id"] for m in cli["other_models"]]
    first, expr = info.models
    assert (first.kind, first.model_tag, first.default_quality) == ("image", cli["model_tag"], cli["default_quality"])
    assert first.device == info.device == cli["device"]
    assert [(q.index, q.lambda_, q.mean_bpp) for q in first.qualities] == [(q["index"], q["lambda"], q["mean_bits_per_pixel"]) for q in cli["qualities"]]
    assert (first.classifier_precision, first.synthesis_precision) == (cli["classifier_precision"], cli["synthesis_precision"])
    assert first.class_names == tuple(client.recognize(np.arange(48 * 48, dtype=np.uint8).reshape(48, 48), detect=False)[0].probabilities)
    assert expr.kind == "expression" and expr.classifier_precision is None and info.model(client.model) is first and info.model("x") is None
    with pytest.raises(AttributeError):
        info.models = ()  # frozen: an answer, not a setting


def test_server_info_errors_are_ferclient_infos_line():
    address = f"127.0.0.1:{free_port()}"
    with Client(address, timeout=2) as c, pytest.raises(FerError) as e:
        c.server_info()
    r = run_client("info", "--server", address, "--timeout", "2")
    assert r.returncode == 1 and r.stderr == f"ferclient: {e.value}\n" and e.value.code == "UNAVAILABLE"
    c.close()
    with pytest.raises(FerError, match="closed"):
        c.server_info()


@pytest.mark.slow
def test_many_images_after_a_server_upgrade_are_encoded_again_for_its_model(upgraded, fer_test, tmp_path, monkeypatch):
    """Refused as encoded for a model the server does not run: its encoder is pulled once, the faces sent again, and
    a later group of faces (encoded before the pull) is encoded again before it goes."""
    from ferclient import cli

    monkeypatch.setenv("FERCODEC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cli, "IN_FLIGHT", 1)  # groups of 32 faces: 40 faces are two groups
    copy, server = upgraded
    with Client(server.address) as c:
        many = c.recognize_many(list(fer_test[0][:40]), detect=False)
        assert c.model == copy.model_id and [faces[0].model for faces in many] == [copy.model_id] * 40
        assert _recognize_calls(server) == 3  # the first group refused, then sent again; the second sent once
        _same(many[39][0], c.recognize(fer_test[0][39], detect=False)[0])


def test_an_image_that_cannot_be_a_face_crop_is_refused_not_labelled(server):
    """detect=False on a 10x10 px image or a flat one: a FerError (send's line), not a confident label about nothing."""
    from ferclient import Client, FerError

    with Client(server.address) as client:
        for image, says in ((np.zeros((10, 10), np.uint8), "10x10 px is smaller than the minimum face size, 24 px"),
                            (np.full((48, 48), 99, np.uint8), "one flat colour")):
            with pytest.raises(FerError, match=says):
                client.recognize(image, detect=False)


def test_one_client_shared_by_threads_answers_as_one_thread_does(client, astronaut, fer_test):
    """README says a Client may be shared by threads (it said one per thread, though nothing in it is per-call state
    but ONNX Runtime's sessions, whose runs are thread-safe): 8 threads get exactly the answers of one."""
    import concurrent.futures as cf

    faces = list(fer_test[0][:24])
    work = [(astronaut, True)] * 4 + [(f, False) for f in faces]

    def answer(item):
        image, detect = item
        return [(f.label, round(f.confidence, 4), f.box, f.bytes) for f in client.recognize(image, detect=detect)]

    alone = [answer(item) for item in work]
    with cf.ThreadPoolExecutor(8) as pool:
        assert list(pool.map(answer, work * 3)) == alone * 3


def test_close_from_another_thread_ends_calls_with_fer_errors(server, fer_test):
    """close() while other threads' calls were on the wire raised grpc's ValueError ("Cannot invoke RPC: Channel
    closed!") or a FerError saying the *server* refused (CANCELLED: Channel closed!): an audit, 2026-12-08."""
    import threading
    import time

    c, errors, faces = Client(server.address), [], list(fer_test[0][:8])

    def loop():
        try:
            while True:
                c.recognize_many(faces, detect=False)
        except Exception as e:  # what the test is about: anything but FerError fails it below
            errors.append(e)

    threads = [threading.Thread(target=loop) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    c.close()
    for t in threads:
        t.join(30)
    assert len(errors) == 8 and all(isinstance(e, FerError) for e in errors), [repr(e) for e in errors]
    assert all(re.search(r"this Client (is closed|was closed before the answer came)", str(e)) for e in errors), [str(e) for e in errors]


def test_a_busy_server_refusal_is_sent_again(fer_test):
    """recognize_many's requests go out at once: against --max-concurrent-rpcs 1, all but one were refused
    (RESOURCE_EXHAUSTED) and the call failed whole. Refused requests now go again, waiting 50 ms and more."""
    faces = list(fer_test[0][:128])  # 4 requests of 32 faces, sent at once
    with ServerProcess("--max-concurrent-rpcs", "1", "--metrics-port", "-1") as s, Client(s.address) as c:
        out = c.recognize_many(faces, detect=False)
    assert [len(r) for r in out] == [1] * len(faces)
