"""The real ferserver on a loopback port, the real ferclient, a real photo, real metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from fercodec.v1 import fercodec_pb2 as pb
from fercodec.v1 import fercodec_pb2_grpc as pb_grpc

from ..client.test_faces import ASTRONAUT_FACE, iou
from ..conftest import ServerProcess, encode_faces, free_port, run_client

JSON_KEYS = {"file", "box", "score", "label", "confidence", "probabilities", "bytes", "bpp", "latency_ms", "model"}


def _counter(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def _cpu_synthesis() -> str:
    """What --synthesis-precision auto picks on this CPU."""
    from fermodels.bundle import bf16_native

    return "bf16" if bf16_native() else "fp32"


def test_send_astronaut_finds_the_smiling_face(server, astronaut, tmp_path, card):
    before = server.metrics()
    r = run_client("send", str(astronaut), "--server", server.address, "--json", "--reconstruct", str(tmp_path))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 1
    row = rows[0]
    assert set(row) == JSON_KEYS
    assert iou(row["box"], ASTRONAUT_FACE) >= 0.5 and 0.8 <= row["score"] <= 1
    assert row["label"] == "happy" and row["model"] == card.model_id
    assert set(row["probabilities"]) == set(card.class_names)
    assert abs(sum(row["probabilities"].values()) - 1) < 1e-2
    typical = card.metrics["bytes"][str(card.default_quality)]  # mean over PrivateTest at the default quality
    assert 0.5 * typical <= row["bytes"] <= 1.5 * typical and row["bpp"] == pytest.approx(8 * row["bytes"] / 2304, abs=1e-3)
    with Image.open(tmp_path / "astronaut_face0.png") as im:
        assert im.size == (48, 48) and im.mode == "L"
    after = server.metrics()
    assert _counter(after, "fercodec_requests_total", method="Recognize", code="OK") == _counter(before, "fercodec_requests_total", method="Recognize", code="OK") + 1
    assert _counter(after, "fercodec_predictions_total", label="happy") >= 1
    assert _counter(after, "fercodec_bitstream_bytes_count") > _counter(before, "fercodec_bitstream_bytes_count")
    for stage in ("entropy_decode", "synthesis", "classify"):
        assert _counter(after, "fercodec_stage_duration_seconds_count", stage=stage) > 0
    # torch, the models and grpc are out of the collector's sight (a full collection took ~220 ms under load before)
    assert _counter(after, "fercodec_gc_frozen_objects") > 100_000
    assert _counter(after, "process_resident_memory_bytes") > 50e6 and 'python_gc_collections_total{generation="2"}' in after
    # fercodec_model_info: the image model's classifier in int8, its synthesis in bfloat16 where the CPU has it; the expression layer has neither
    assert 'classifier_precision="int8,-"' in after and f'synthesis_precision="{_cpu_synthesis()},-"' in after


def test_an_image_piped_to_standard_input(server, astronaut, tmp_path):
    """`ferclient send -` reads one image from standard input (read once: --annotate draws on the same bytes), beside
    files; an empty pipe, a terminal and a second - are one line each, and so is a URL given as a file."""
    import subprocess

    from ..conftest import BIN

    def send(*args, stdin=None):
        return subprocess.run([str(BIN / "ferclient"), "send", *args, "--server", server.address], input=stdin, capture_output=True, timeout=60,
                              **({} if stdin is not None else {"stdin": subprocess.DEVNULL}))

    r = send("-", str(astronaut), "--json", "--annotate", str(tmp_path), stdin=astronaut.read_bytes())
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    rows = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert [row["file"] for row in rows] == ["-", str(astronaut)] and [row["label"] for row in rows] == ["happy", "happy"]
    assert rows[0]["box"] == rows[1]["box"] and iou(rows[0]["box"], ASTRONAUT_FACE) >= 0.5
    assert Image.open(tmp_path / "stdin_annotated.jpg").size == Image.open(astronaut).size
    r = send("https://example.com/face.jpg")  # a URL is not fetched: one line saying how to send it
    assert r.returncode == 1 and r.stderr.decode().strip() == ("ferclient: https://example.com/face.jpg: a URL: ferclient reads files; "
                                                              "pipe it in instead (curl -s URL | ferclient send -)")
    r = send("-", stdin=b"")
    assert r.returncode == 1 and r.stderr.decode().strip() == "ferclient: -: empty: no image arrived"
    r = send("-", "-", stdin=astronaut.read_bytes())
    assert r.returncode == 2 and r.stderr.decode().strip() == "ferclient: - (standard input) can be given once"
    import os
    import pty

    try:
        tty, other = pty.openpty()
    except OSError as e:  # a sandbox without pseudo-terminals: the rest is tested
        pytest.skip(f"no pseudo-terminal here ({e}) for the terminal case")
    try:
        r = subprocess.run([str(BIN / "ferclient"), "send", "-", "--server", server.address], stdin=other, capture_output=True, timeout=60)
    finally:
        os.close(tty)
        os.close(other)
    assert r.returncode == 2 and "standard input, which is a terminal" in r.stderr.decode() and len(r.stderr.decode().splitlines()) == 1


def test_a_16_bit_grayscale_photo_is_read_as_its_8_bit_twin(server, astronaut, tmp_path):
    """ferclient send on a 16-bit PNG finds the face and answers as for the same photo in 8 bits."""
    with Image.open(astronaut) as im:
        gray = np.asarray(im.convert("L"))
    Image.fromarray(gray).save(tmp_path / "gray8.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    rows = []
    for name in ("gray8.png", "gray16.png"):
        r = run_client("send", str(tmp_path / name), "--server", server.address, "--json")
        assert r.returncode == 0, r.stderr
        rows.append([json.loads(line) for line in r.stdout.splitlines()])
    assert len(rows[1]) == 1 and iou(rows[1][0]["box"], ASTRONAUT_FACE) >= 0.5
    assert rows[1][0]["box"] == rows[0][0]["box"] and rows[1][0]["label"] == rows[0][0]["label"]
    assert rows[1][0]["probabilities"] == pytest.approx(rows[0][0]["probabilities"], abs=1e-6)


def test_human_output_and_no_detect(server, astronaut, tmp_path):
    crop = tmp_path / "crop.png"
    with Image.open(astronaut) as im:
        im.crop((168, 57, 281, 170)).save(crop)
    r = run_client("send", str(crop), "--no-detect", "--server", server.address, "--quality", "0")
    assert r.returncode == 0, r.stderr
    assert re.match(r".*crop\.png  whole image  \w+ \d\.\d\d  \d+ B  \d\.\d{3} bpp  [\d.]+ ms$", r.stdout.strip())
    # Images that cannot be a face crop are refused, one line each, not labelled (a 1x1 px image and a black one got
    # "sad 0.51"); the crop beside them is answered.
    Image.new("RGB", (10, 10), (90, 60, 40)).save(tmp_path / "tiny.png")
    Image.new("L", (96, 96), 0).save(tmp_path / "black.jpg")
    r = run_client("send", str(tmp_path / "tiny.png"), str(tmp_path / "black.jpg"), str(crop), "--no-detect", "--server", server.address)
    assert r.returncode == 1 and len(r.stdout.splitlines()) == 1 and "crop.png" in r.stdout, r.stdout + r.stderr
    assert r.stderr.splitlines() == [f"ferclient: {tmp_path / 'tiny.png'}: 10x10 px is smaller than the minimum face size, 24 px: too small to classify",
                                     f"ferclient: {tmp_path / 'black.jpg'}: the image is one flat colour: there is no face in it to classify"]


def test_bad_files_fail_alone_with_one_line_each(server, astronaut, tmp_path):
    flat = tmp_path / "flat.png"
    Image.new("L", (200, 200), 128).save(flat)
    notimg = tmp_path / "notes.jpg"
    notimg.write_text("not a picture")
    r = run_client("send", str(tmp_path / "missing.jpg"), str(notimg), str(flat), str(astronaut), "--server", server.address, "--json")
    assert r.returncode == 1
    assert len(r.stdout.splitlines()) == 1 and json.loads(r.stdout)["label"]
    errs = r.stderr.strip().splitlines()
    assert len(errs) == 3 and "Traceback" not in r.stderr
    assert "missing.jpg: no such file" in errs[0]
    assert "notes.jpg: not an image" in errs[1]
    assert "flat.png: no face found" in errs[2]


def test_a_crowd_photo_with_more_faces_than_one_request_takes_is_answered_whole(server, tmp_path):
    """70 faces in one photo, more than ferserver's --max-faces (64): send splits them into requests, every face answered in order."""
    import skimage.data

    from ferclient.cli import FACES_PER_REQUEST

    face = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((160, 160)))
    path = tmp_path / "crowd.jpg"
    Image.fromarray(np.vstack([np.hstack([face] * 10)] * 7)).save(path, quality=95)
    r = run_client("send", str(path), "--server", server.address, "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 70 > 2 * FACES_PER_REQUEST
    assert sum(row["label"] == "happy" for row in rows) >= 65
    centres = {(round((row["box"][0] + row["box"][2] / 2 - 80) / 160), round((row["box"][1] + row["box"][3] / 2 - 80) / 160)) for row in rows}
    assert centres == {(i, j) for i in range(10) for j in range(7)}  # one answer per pasted face


def test_a_server_taking_fewer_faces_per_request_gets_them_in_parts(tmp_path):
    """ferserver --max-faces 4 and a photo of 6 faces (send's requests hold up to 32): the request is refused with the
    limit in its trailing metadata and sent again in parts of 4; a Client then sends its next photo in parts at once.
    Before, every such photo failed with "request has 6 faces; at most 4 per request"."""
    import skimage.data

    from ferclient import Client
    from ferwire import MAX_FACES_METADATA

    face = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((160, 160)))
    path = tmp_path / "six.png"
    Image.fromarray(np.vstack([np.hstack([face] * 3)] * 2)).save(path)
    with ServerProcess("--max-faces", "4") as s:
        def calls() -> dict:
            return {m.group(1): float(m.group(2)) for m in re.finditer(r'fercodec_requests_total\{code="(\w+)",method="Recognize"\} (\S+)', s.metrics())}

        with grpc.insecure_channel(s.address) as ch, pytest.raises(grpc.RpcError) as e:
            pb_grpc.FerCodecStub(ch).Recognize(pb.RecognizeRequest(faces=encode_faces(np.zeros((5, 48, 48), np.uint8), 5)), timeout=30)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and (MAX_FACES_METADATA, "4") in tuple(e.value.trailing_metadata())
        r = run_client("send", str(path), "--server", s.address, "--json", timeout=120)
        assert r.returncode == 0 and r.stderr == "", r.stderr
        rows = [json.loads(line) for line in r.stdout.splitlines()]
        assert len(rows) == 6 and sum(row["label"] == "happy" for row in rows) >= 5
        assert calls() == {"RESOURCE_EXHAUSTED": 2.0, "OK": 2.0}  # the call above and send's request; its 2 parts
        with Client(s.address) as c:
            assert [f.box for f in c.recognize(path)] == [tuple(row["box"]) for row in rows]
            assert calls() == {"RESOURCE_EXHAUSTED": 3.0, "OK": 4.0}
            assert len(c.recognize_many([path, path])) == 2
            assert calls() == {"RESOURCE_EXHAUSTED": 3.0, "OK": 7.0}  # 12 faces in parts of 4, none refused


def test_a_hazy_photo_is_read_as_confidently_as_a_clear_one(server, tmp_path):
    """The astronaut at 0.15x contrast: the crop is stretched to FER2013's contrast before encoding (happy at 0.43 before, 0.87 after)."""
    import skimage.data

    path = tmp_path / "hazy.png"
    Image.fromarray(np.clip(np.rint((0.45 + 0.15 * skimage.data.astronaut() / 255.0) * 255), 0, 255).astype(np.uint8)).save(path)
    r = run_client("send", str(path), "--server", server.address, "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 1 and rows[0]["label"] == "happy" and rows[0]["confidence"] >= 0.7


@pytest.mark.parametrize("turns", [1, 2])
def test_a_photo_stored_on_its_side_or_upside_down_still_reads_the_smile(server, tmp_path, turns):
    """No EXIF orientation to say so: the detector's quarter-turn look cuts the face upright (it was read as sad or angry)."""
    import skimage.data

    path = tmp_path / f"turned{turns}.png"
    Image.fromarray(np.ascontiguousarray(np.rot90(skimage.data.astronaut(), turns))).save(path)
    r = run_client("send", str(path), "--server", server.address, "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 1 and rows[0]["label"] == "happy"


def test_a_photo_cut_short_is_read_as_far_as_it_goes(server, astronaut, tmp_path):
    """A JPEG or PNG whose last 40 % never arrived: the face in its top part is answered, with a one-line note that the
    file is truncated; a truncated WebP, which Pillow cannot start to decode, is a one-line error."""
    import io

    with Image.open(astronaut) as im:
        rgb = im.convert("RGB")
    paths = []
    for fmt in ("JPEG", "PNG", "WEBP"):
        buf = io.BytesIO()
        rgb.save(buf, fmt)
        paths.append(tmp_path / f"cut.{fmt.lower()}")
        paths[-1].write_bytes(buf.getvalue()[: int(0.6 * len(buf.getvalue()))])
    r = run_client("send", *map(str, paths), "--server", server.address, "--json")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(row["file"], row["label"]) for row in rows] == [(str(paths[0]), "happy"), (str(paths[1]), "happy")]
    errs = r.stderr.strip().splitlines()
    assert [e.split(": ")[2] for e in errs[:2]] == ["the file is truncated"] * 2
    assert len(errs) == 3 and errs[2].startswith(f"ferclient: {paths[2]}: cannot read image")


def test_a_folder_is_its_images_and_annotate_draws_each_answer(server, astronaut, tmp_path):
    """ferclient send DIR --annotate OUT: the folder's images are sent (an iPhone's HEIC too; other files ignored), a photo without a face
    fails alone (OUT gets it unmarked), an empty folder is one error line, and OUT gets the photo with the face boxed in its class's colour."""
    from ferclient.annotate import CLASS_COLOURS

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "astronaut.png").write_bytes(astronaut.read_bytes())
    import pillow_heif  # a test-only encoder; ferclient reads HEIC with pi-heif

    with Image.open(astronaut) as im:
        pillow_heif.from_pillow(im.convert("RGB")).save(photos / "IMG_0003.HEIC", quality=90)
    Image.new("L", (200, 200), 128).save(photos / "flat.png")
    (photos / "notes.txt").write_text("not sent: not an image's name")
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    r = run_client("send", str(photos), str(tmp_path / "empty"), "--server", server.address, "--json", "--annotate", str(out))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["file"] for row in rows] == [str(photos / "IMG_0003.HEIC"), str(photos / "astronaut.png")]
    assert [row["label"] for row in rows] == ["happy", "happy"]
    errs = r.stderr.strip().splitlines()
    assert len(errs) == 2 and "flat.png: no face found" in errs[0] and "empty: a directory with no image files" in errs[1]
    # the photo without a face is there too, as it is (a missing copy was the only sign of it)
    assert sorted(p.name for p in out.iterdir()) == ["IMG_0003_annotated.jpg", "astronaut_annotated.jpg", "flat_annotated.jpg"]
    with Image.open(out / "flat_annotated.jpg") as im:
        assert np.abs(np.asarray(im.convert("L")).astype(int) - 128).max() <= 2
    with Image.open(out / "astronaut_annotated.jpg") as im, Image.open(astronaut) as src:
        assert im.size == src.size
        drawn = np.asarray(im.convert("RGB")).astype(int)
    x, y, w, h = rows[1]["box"]
    edge = drawn[y + h // 4 : y + 3 * h // 4, x + 1]  # the box's left edge, a line a few px wide
    assert (np.abs(edge - CLASS_COLOURS["happy"]).max(-1) < 45).mean() > 0.9  # JPEG shifts a thin line's colour a little
    r = run_client("send", str(astronaut), "--server", server.address, "--annotate", str(out / "astronaut_annotated.jpg"))
    assert r.returncode == 2 and r.stdout == "" and "is a file; --reconstruct and --annotate take a directory" in r.stderr and "Traceback" not in r.stderr


def test_min_face_and_detect_threshold(server, astronaut, tmp_path):
    r = run_client("send", str(astronaut), "--server", server.address, "--json", "--min-face", "150")
    assert r.returncode == 1 and r.stdout == "" and "Traceback" not in r.stderr
    note, err = r.stderr.strip().splitlines()
    assert "skipped a face at box=[" in note and "below --min-face 150" in note
    assert "no face of at least 150 px" in err
    # --annotate still draws the faces skipped for their size (README: thin grey boxes), though none was sent
    r = run_client("send", str(astronaut), "--server", server.address, "--min-face", "150", "--annotate", str(tmp_path))
    assert r.returncode == 1 and (tmp_path / "astronaut_annotated.jpg").is_file(), r.stderr
    # a crowd's small faces: one line for them all (an audit's crowd photo printed 60 lines)
    from PIL import Image

    with Image.open(astronaut) as im:
        four = Image.new("RGB", (2 * im.width, 2 * im.height))
        for k in range(4):
            four.paste(im.convert("RGB"), ((k % 2) * im.width, (k // 2) * im.height))
    four.save(tmp_path / "four.png")
    r = run_client("send", str(tmp_path / "four.png"), "--server", server.address, "--json", "--min-face", "150")
    assert r.returncode == 1 and re.fullmatch(rf"ferclient: {tmp_path / 'four.png'}: skipped 4 faces of \d+-\d+ px, below --min-face 150 "
                                              r"\(--json gives no row for them; --annotate draws them in grey\)", r.stderr.splitlines()[0]), r.stderr
    r = run_client("send", str(astronaut), "--server", server.address, "--json", "--detect-threshold", "0.99")
    assert r.returncode == 1 and "no face found" in r.stderr and "--detect-threshold" in r.stderr
    r = run_client("send", str(astronaut), "--server", server.address, "--json", "--detect-threshold", "0.5", "--no-align")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["score"] >= 0.5
    for bad in (["--min-face", "0"], ["--detect-threshold", "1.5"], ["--detect-threshold", "x"]):
        r = run_client("send", str(astronaut), *bad)
        assert r.returncode == 2 and "Traceback" not in r.stderr and bad[0] in r.stderr


def test_unreachable_server_and_bad_quality(astronaut):
    r = run_client("send", str(astronaut), "--server", f"127.0.0.1:{free_port()}", "--timeout", "5")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "cannot reach server" in r.stderr and "Traceback" not in r.stderr
    r = run_client("send", str(astronaut), "--quality", "99")
    assert r.returncode == 2 and "quality 99 out of range" in r.stderr and "Traceback" not in r.stderr
    # grpc would wrap port 99999 to 34463 and report a refused connection there; a zero timeout could never be met
    for bad, says in ((["--server", "localhost:99999"], "port 99999 of localhost:99999 is not a TCP port"), (["--server", "localhost:"], "is not host:port"),
                      (["--timeout", "0"], "must be a positive number of seconds"), (["--timeout", "nan"], "must be a positive number of seconds"),
                      # grpc said "Misformatted domain name" of a URL, and tried port 443 for a name without a port
                      (["--server", "http://localhost:50051"], "is a URL: give host:port without http://"),
                      (["--server", "myserver"], "myserver has no port"), (["--server", "localhost:abc"], "port 'abc' of localhost:abc is not a number")):
        r = run_client("send", str(astronaut), *bad)
        assert r.returncode == 2 and says in r.stderr and bad[0] in r.stderr and "Traceback" not in r.stderr, r.stderr
    # an empty IMAGE (an unset "$PHOTO") was pathlib's ".", and sent every image in the working folder
    r = run_client("send", "")
    assert r.returncode == 2 and "an empty IMAGE" in r.stderr and "Traceback" not in r.stderr


def test_unreachable_server_stops_a_folder_at_once(astronaut, tmp_path):
    """A folder of photos and no server: one line for the first file the server could not answer, not one per file."""
    import shutil

    for k in range(4):
        shutil.copy(astronaut, tmp_path / f"photo{k}.png")
    r = run_client("send", str(tmp_path), "--server", f"127.0.0.1:{free_port()}", "--timeout", "5")
    assert r.returncode == 1 and r.stdout == "" and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and "photo0.png: cannot reach server" in r.stderr and "stopped, 3 more images not answered" in r.stderr


def test_a_reconstruction_that_cannot_be_written_fails_that_file_alone(server, astronaut, tmp_path):
    """A full disk or a folder in the way: one line for that file, its row still printed, the next file still answered
    (a traceback ended the run before)."""
    (tmp_path / "astronaut_face0.png").mkdir()
    r = run_client("send", str(astronaut), str(tmp_path / "again.png"), "--server", server.address, "--reconstruct", str(tmp_path))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 2 and "cannot write the reconstruction" in r.stderr and "again.png: no such file" in r.stderr, r.stderr
    assert "happy" in r.stdout


def test_the_client_keeps_to_its_own_settings(server, astronaut):
    """FERCODEC_MODEL_DIR is ferserver's setting (a list of directories): exported on a host for its server, it broke every
    send (or switched the codec) of a client there. ferclient reads FERCODEC_MODEL, and FERCODEC_TIMEOUT as --timeout."""
    import os
    import subprocess

    from ..conftest import BIN

    def send(**env) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "ferclient"), "send", str(astronaut), "--server", server.address, "--json"],
                              capture_output=True, text=True, timeout=60, env={**os.environ, **env})

    r = send(FERCODEC_MODEL_DIR="fercodec-v1,fercodec-v1-expr")
    assert r.returncode == 0 and json.loads(r.stdout)["bytes"] > 100, r.stderr
    r = send(FERCODEC_MODEL="fercodec-v1-expr")
    assert r.returncode == 0 and json.loads(r.stdout)["bytes"] < 100, r.stderr
    r = send(FERCODEC_TIMEOUT="0.0001")
    assert r.returncode == 1 and "within 0.0001s" in r.stderr, r.stderr
    r = send(FERCODEC_TIMEOUT="soon")
    assert r.returncode == 2 and "--timeout: must be a positive number of seconds, got soon" in r.stderr


def test_deadline_exceeded_is_one_line(server, astronaut):
    r = run_client("send", str(astronaut), "--server", server.address, "--timeout", "0.0001")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "deadline exceeded" in r.stderr and "Traceback" not in r.stderr


def test_client_sends_without_torch_or_opencv(server, astronaut):
    """The edge install has neither: with OpenCV made unimportable, send still detects, aligns and encodes."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['cv2'] = None; from ferclient.cli import main; rc = main(sys.argv[1:]); "
            "assert not {'torch', 'compressai'} & set(sys.modules), 'heavy import'; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, "send", str(astronaut), "--server", server.address], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_grpc_api_info_health_reflection_stream(server, card, fer_test):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    streams = encode_faces(fer_test[0][:4], card.default_quality)
    with grpc.insecure_channel(server.address) as ch:
        stub = pb_grpc.FerCodecStub(ch)
        info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
        assert info.model_id == card.model_id and info.model_tag == card.model_tag
        assert (info.input_height, info.input_width) == (48, 48) and len(info.qualities) == card.num_qualities >= 4
        assert list(info.class_names) == list(card.class_names) and info.device == "cpu"
        assert info.temperature == pytest.approx(card.temperature) and info.prior_correction == pytest.approx(card.prior_correction)
        assert list(info.train_prior) == pytest.approx(card.train_prior) and len(info.train_prior) == 7  # the shipped model corrects its prior
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="fercodec.v1.FerCodec"), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for s in next(refl).list_services_response.service}
        assert {"fercodec.v1.FerCodec", "grpc.health.v1.Health"} <= names

        one = stub.Recognize(pb.RecognizeRequest(faces=streams, return_reconstruction=True), timeout=10)
        assert len(one.results) == 4 and all(len(r.probabilities) == 7 and r.reconstruction_png.startswith(b"\x89PNG") for r in one.results)
        reqs = [pb.RecognizeRequest(faces=streams[:2], request_id="a"), pb.RecognizeRequest(faces=[b"\x00garbage"], request_id="b"), pb.RecognizeRequest(faces=streams[2:], request_id="c")]
        replies = list(stub.RecognizeStream(iter(reqs), timeout=20))
        assert [r.request_id for r in replies] == ["a", "b", "c"]
        assert replies[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "face 0" in replies[1].error.message
        assert [r.label for r in [*replies[0].results, *replies[2].results]] == [r.label for r in one.results]
        np.testing.assert_allclose([p for r in replies[2].results for p in r.probabilities], [p for r in one.results[2:] for p in r.probabilities], rtol=1e-5)
    r = run_client("info", "--server", server.address)  # the same, as JSON: every field, zeros included
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["model_id"] == card.model_id and [q["index"] for q in shown["qualities"]] == list(range(card.num_qualities))
    assert [m["default_quality"] for m in shown["other_models"]] == [0]  # the expression layer's one quality


def test_expression_layer_end_to_end(server, astronaut, tmp_path, card, expression_card, fer_test):
    """The same server decodes both models, picked by each bitstream's tag; the expression layer sends no image."""
    r = run_client("send", str(astronaut), "--server", server.address, "--json", "--model", "fercodec-v1-expr")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    assert row["label"] == "happy" and row["model"] == expression_card.model_id
    assert row["bytes"] <= 1.5 * expression_card.metrics["bytes"]["0"]
    r = run_client("send", str(astronaut), "--server", server.address, "--model", "fercodec-v1-expr", "--reconstruct", str(tmp_path))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "nothing to --reconstruct" in r.stderr and "Traceback" not in r.stderr

    from ferclient.encoder import FaceEncoder

    faces = fer_test[0][:3]
    expr = FaceEncoder("fercodec-v1-expr").encode(faces)
    image = encode_faces(faces, card.default_quality)
    with grpc.insecure_channel(server.address) as ch:
        stub = pb_grpc.FerCodecStub(ch)
        info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
        assert info.kind == "image" and [(m.model_id, m.kind, len(m.qualities)) for m in info.other_models] == [(expression_card.model_id, "expression", 1)]
        assert info.classifier_precision == "int8" and info.other_models[0].classifier_precision == ""  # a CPU server's defaults
        assert info.synthesis_precision == _cpu_synthesis() and info.other_models[0].synthesis_precision == ""
        mixed = stub.Recognize(pb.RecognizeRequest(faces=[expr[0], image[0], expr[1], image[1]]), timeout=10)
        assert [x.model_id for x in mixed.results] == [expression_card.model_id, card.model_id] * 2
        assert all(abs(sum(x.probabilities) - 1) < 1e-3 for x in mixed.results)
        with pytest.raises(grpc.RpcError) as e:
            stub.Recognize(pb.RecognizeRequest(faces=[image[2], expr[2]], return_reconstruction=True), timeout=10)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "face 1" in e.value.details() and "no reconstruction" in e.value.details()


@pytest.mark.parametrize(
    "faces, code, text",
    [
        ([], grpc.StatusCode.INVALID_ARGUMENT, "no faces"),
        ([b"\x11"] * 65, grpc.StatusCode.RESOURCE_EXHAUSTED, "at most 64"),
        ([b"\x11\x00"], grpc.StatusCode.INVALID_ARGUMENT, "truncated"),
        # A format-1 stream (8-byte header, face size inside) from a client that predates format 2.
        ([b"\x15\x51\xb6\x30\x30\x00\x00\x00" + bytes(40)], grpc.StatusCode.INVALID_ARGUMENT, "face 0: unsupported bitstream format version 1"),
    ],
)
def test_bad_requests_get_precise_statuses(server, faces, code, text):
    with grpc.insecure_channel(server.address) as ch:
        with pytest.raises(grpc.RpcError) as e:
            pb_grpc.FerCodecStub(ch).Recognize(pb.RecognizeRequest(faces=faces), timeout=10)
    assert e.value.code() == code and text in e.value.details()


def test_bytes_that_are_not_a_request_message_are_invalid_argument(server):
    """grpc's own deserializer raised on them before any servicer ran: UNKNOWN, a traceback in the log per call, and
    nothing counted. Now INVALID_ARGUMENT, counted, and a stream message of them gets its error as any bad message."""
    before = server.metrics()
    garbage = b"\xff\xff\xff not protobuf"
    with grpc.insecure_channel(server.address) as ch:
        for method in ("/fercodec.v1.FerCodec/Recognize", "/fercodec.v1.FerCodec/GetModelInfo", "/fercodec.v1.EncoderRepository/GetEncoder"):
            unary = not method.endswith("GetEncoder")
            call = ch.unary_unary(method) if unary else ch.unary_stream(method)
            with pytest.raises(grpc.RpcError) as e:
                reply = call(garbage, timeout=10)
                list(reply) if not unary else None
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "is not a valid" in e.value.details(), (method, e.value)
        stream = ch.stream_stream("/fercodec.v1.FerCodec/RecognizeStream", response_deserializer=pb.RecognizeResponse.FromString)
        replies = list(stream(iter([garbage, pb.RecognizeRequest(faces=[]).SerializeToString()]), timeout=10))
    assert [r.error.code for r in replies] == [grpc.StatusCode.INVALID_ARGUMENT.value[0]] * 2 and "not a valid" in replies[0].error.message
    after = server.metrics()
    assert _counter(after, "fercodec_requests_total", method="Recognize", code="INVALID_ARGUMENT") == \
        _counter(before, "fercodec_requests_total", method="Recognize", code="INVALID_ARGUMENT") + 1
    assert "Traceback" not in server.output()


def test_oversize_message_is_refused(server):
    with grpc.insecure_channel(server.address) as ch:
        with pytest.raises(grpc.RpcError) as e:
            pb_grpc.FerCodecStub(ch).Recognize(pb.RecognizeRequest(faces=[b"\x11" * (2 << 20)]), timeout=10)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_sigterm_drains_and_exits_zero(card, fer_test):
    s = ServerProcess("--max-wait-ms", "3000")
    streams = encode_faces(fer_test[0][:2], 0)
    with grpc.insecure_channel(s.address) as ch:
        fut = pb_grpc.FerCodecStub(ch).Recognize.future(pb.RecognizeRequest(faces=streams), timeout=20)
        import time

        deadline = time.monotonic() + 10
        while "fercodec_inflight_requests 1.0" not in s.metrics():  # the request is in the server (its batch waits 3 s) when the signal lands
            assert time.monotonic() < deadline, "the request never reached the server"
            time.sleep(0.01)
        rc = s.stop()
        assert len(fut.result().results) == 2
    assert rc == 0
    assert "ready on" in s.ready_line and "stopped" in s.output()
    assert "Warning:" not in s.output(), s.output()  # torch's C++ notices (TORCH_CPP_LOG_LEVEL) stay out of the log


def test_sigterm_ends_open_streams_instead_of_waiting_out_the_grace(card, fer_test):
    """An open RecognizeStream (a `ferclient watch`) held a stopping server for the whole --grace-s, then was cut, with a
    CancelledError traceback in the log after "ferserver stopped". Now it answers what it read and ends, OK."""
    import threading
    import time

    streams = encode_faces(fer_test[0][:1], card.default_quality)
    hold = threading.Event()

    def requests():
        yield pb.RecognizeRequest(faces=streams, request_id="1")
        hold.wait(60)  # the client keeps the stream open, writing nothing more

    s = ServerProcess("--grace-s", "60", "--metrics-port", "-1")
    try:
        with grpc.insecure_channel(s.address) as ch:
            replies = pb_grpc.FerCodecStub(ch).RecognizeStream(requests(), timeout=60)
            assert next(replies).request_id == "1"
            t0 = time.monotonic()
            rc = s.stop(timeout=60)
            assert rc == 0 and time.monotonic() - t0 < 20, s.output()
            assert list(replies) == []  # the stream ended, OK, with nothing more to say
    finally:
        hold.set()
        s.proc.kill()
    assert "ferserver stopped" in s.output() and "Traceback" not in s.output() and "cut" not in s.output(), s.output()


def test_signals_while_the_models_load(tmp_path):
    """SIGHUP (a credential rotation sent early) killed a loading server (exit 129); SIGTERM (an orchestrator scaling
    down) ended it without a word. Now SIGHUP is ignored until the server's own handler takes it, and SIGTERM stops it
    with one line, exit 0. The signals go once the process ignores SIGHUP (its SigIgn mask) and before it is ready."""
    import signal
    import subprocess
    import sys
    import time

    log = tmp_path / "log"
    with open(log, "w") as out:
        p = subprocess.Popen([sys.executable, "-m", "ferserver.main", "--port", str(free_port()), "--metrics-port", "-1"], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not int(re.search(r"SigIgn:\s+([0-9a-f]+)", Path(f"/proc/{p.pid}/status").read_text()).group(1), 16) & (1 << (signal.SIGHUP - 1)):
            assert time.monotonic() < deadline and p.poll() is None, log.read_text()
            time.sleep(0.01)
        p.send_signal(signal.SIGHUP)
        time.sleep(0.2)
        assert "ready on" not in log.read_text(), "the server was ready before the signals: nothing tested"
        p.send_signal(signal.SIGTERM)
        assert p.wait(60) == 0, log.read_text()
    finally:
        p.kill()
    assert log.read_text().strip().endswith("ferserver: stopped (SIGTERM) before it was ready") and "Traceback" not in log.read_text()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_at_any_moment_of_loading_is_one_line_at_once(how, tmp_path):
    """Raised as exceptions wherever the main thread was, they surfaced inside grpc's start (a traceback from the server's
    destructor, "invalid state"), inside a model's loading (exit 2: "encoder.onnx does not load"), or (Ctrl-C) only at the
    next await, seconds later, after the models had loaded. Now: one line, exit 130 / 0, within a second; once ready, the
    drain as usual."""
    import signal
    import subprocess
    import sys
    import time

    for delay in (0.3, 1.0, 2.0, 3.0, 4.0):
        log = tmp_path / f"{how}_{delay}.log"
        with open(log, "w") as out:  # Ctrl-C as a terminal sends it (CI's shell ignores SIGINT in background jobs)
            p = subprocess.Popen([sys.executable, "-m", "ferserver.main", "--port", str(free_port()), "--metrics-port", "-1"], stdout=out,
                                 stderr=subprocess.STDOUT, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            time.sleep(delay)
            t0 = time.monotonic()
            p.send_signal(getattr(signal, how))
            rc = p.wait(60)
            took = time.monotonic() - t0
        finally:
            p.kill()
        text = log.read_text()
        assert not any(w in text for w in ("Traceback", "Exception ignored", " ERROR ", "does not load")), text
        if "ready on" in text:  # past loading: the usual stop
            assert rc == 0 and "ferserver stopped" in text, text
        else:
            said = "interrupted" if how == "SIGINT" else "stopped (SIGTERM)"
            assert rc == (130 if how == "SIGINT" else 0) and text.strip().splitlines()[-1] == f"ferserver: {said} before it was ready", text
            assert took < 1.5, f"{took:.1f} s to stop while loading"


def test_overload_gets_resource_exhausted_not_a_queue(card, fer_test):
    """Past --max-concurrent-rpcs a call is refused at once; the admitted ones and later ones still succeed."""
    streams = encode_faces(fer_test[0][:1], card.default_quality)
    with ServerProcess("--max-concurrent-rpcs", "4", "--max-wait-ms", "300") as s, grpc.insecure_channel(s.address) as ch:
        stub = pb_grpc.FerCodecStub(ch)
        futures = [stub.Recognize.future(pb.RecognizeRequest(faces=streams), timeout=20) for _ in range(40)]
        codes = [f.code() for f in futures]
        assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
        assert 1 <= codes.count(grpc.StatusCode.OK) <= 8
        assert len(stub.Recognize(pb.RecognizeRequest(faces=streams), timeout=20).results) == 1


@pytest.mark.slow
def test_damaged_model_files_stop_the_server_with_one_line_naming_the_file(tmp_path):
    """A weights file cut short gave a 45-line traceback from torch's zip reader (tables.npz too, until 2026-12-07); a
    model.json that is not JSON, one line naming no file; and an encoder.onnx cut short started without a word and was
    handed to devices as verified."""
    import shutil

    from ferwire.card import DEFAULT_MODEL_DIR

    def damaged(name: str, write) -> Path:
        d = tmp_path / name.replace(".", "_")
        shutil.copytree(DEFAULT_MODEL_DIR, d)
        write(d / name)
        return d

    cut = lambda f: f.write_bytes(f.read_bytes()[:1000])  # noqa: E731
    most = lambda f: f.write_bytes(f.read_bytes()[:-1000])  # noqa: E731  (a zip's directory is at its end)
    for d, says in ((damaged("codec.pt", cut), "codec.pt is not a torch checkpoint of plain tensors (RuntimeError: PytorchStreamReader"),
                    (damaged("tables.npz", most), "tables.npz is not a model's entropy tables (BadZipFile: "),
                    (damaged("model.json", lambda f: f.write_text('{"model_id": ')), "model.json is not JSON: "),
                    (damaged("encoder.onnx", cut), "encoder.onnx does not load in ONNX Runtime (")):
        with pytest.raises(RuntimeError, match="exited with 2") as e:
            ServerProcess("--model-dir", str(d), "--metrics-port", "-1")
        errors = [line for line in str(e.value).splitlines() if " INFO " not in line and "exited with" not in line]
        assert len(errors) == 1 and errors[0].startswith(f"ferserver: {d}/") and says in errors[0], str(e.value)


@pytest.mark.slow
def test_taken_ports_stop_the_server_with_one_line():
    """A port another process holds, for gRPC, /metrics or health: one line naming the address (and the flags), exit 2, no traceback."""
    import socket
    import subprocess
    import sys

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        for flags, says in ((["--port", str(taken)], f"cannot listen on 127.0.0.1:{taken}"),
                            (["--port", str(free_port()), "--metrics-port", str(taken)], f"cannot serve metrics on 127.0.0.1:{taken} (--metrics-host, --metrics-port)"),
                            (["--port", str(free_port()), "--health-port", str(taken)], f"cannot listen on 127.0.0.1:{taken} (--health-port)")):
            r = subprocess.run([sys.executable, "-m", "ferserver.main", "--host", "127.0.0.1", "--metrics-host", "127.0.0.1", *flags],
                               capture_output=True, text=True, timeout=120)
            errors = [line for line in r.stderr.splitlines() if line.startswith("ferserver:")]
            assert r.returncode == 2 and len(errors) == 1 and says in errors[0] and "Traceback" not in r.stderr, r.stderr[-2000:]
            # Nothing else on stderr: no line of grpc's C core, and none of the models' loading (checked before it).
            assert r.stderr.strip() == errors[0] and "Address already in use" in errors[0], r.stderr[-2000:]
