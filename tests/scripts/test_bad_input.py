"""The research scripts on bad input: argparse's one line (or `script: message`) and exit 2, naming the flag or path, never a
traceback, and refused before any measuring starts. Each runs from a scratch folder, not the checkout: a default that
was relative to the working directory named a path the user never gave."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"

# (script, arguments with {tmp} for the scratch folder, what the line must name)
CASES = [
    ("entropy_stats", "--faces 0", "--faces"),
    ("entropy_stats", "--faces -3", "--faces"),
    ("entropy_stats", "--model notamodel", "notamodel"),
    ("rangecoder_bench", "--faces 0", "--faces"),
    ("rangecoder_bench", "--repeats 0", "--repeats"),
    ("yunet_dynamic", "{tmp}/missing.onnx {tmp}/out.onnx", "missing.onnx"),
    ("yunet_dynamic", "{tmp}/text.onnx {tmp}/out.onnx", "text.onnx"),
    ("yunet_dynamic", "{tmp}/text.onnx {tmp}/nofolder/out.onnx", "nofolder"),
    ("classifier_val_views", "{tmp}/missing.pt", "missing.pt"),
    ("classifier_val_views", "{tmp}/text.onnx --decoded notamodel", "notamodel"),
    ("classifier_val_views", "{tmp}/text.onnx", "text.onnx"),  # --decoded's default found from here: the classifier is what fails
    ("classifier_val_views", "{tmp}/text.onnx --seed -1", "--seed"),
    ("sweep_table", "--epoch 1 {tmp}/missing_run", "missing_run"),
    ("sweep_table", "--epoch 1 {tmp}/classifier_run", "classifier_run"),
    ("sweep_table", "--epoch 0 {tmp}/classifier_run", "--epoch"),
    ("transform_ceiling", "--model-dir notamodel", "notamodel"),
    ("transform_ceiling", "--threads -1", "--threads"),
    ("ferplus_votes", "{tmp}/missing.csv {tmp} --out {tmp}/votes.npz", "missing.csv"),
    ("ferplus_votes", "{tmp}/text.onnx {tmp}/missing_images --out {tmp}/votes.npz", "missing_images"),
    ("ferplus_votes", "{tmp}/text.onnx {tmp} --out {tmp}/nofolder/votes.npz", "nofolder"),
    ("hard_faces", "--limit -1", "--limit"),
    ("nonsquare_crops", "--limit -1", "--limit"),
    ("nonsquare_crops", "--model-dir notamodel", "notamodel"),
    ("small_faces", "--limit -1", "--limit"),
    ("small_faces", "--sides 24,0", "--sides"),
    ("tilted_faces", "--limit -1", "--limit"),
    ("tilted_faces", "--sides 90-64", "--sides"),
    ("tilted_faces", "--scale 0", "--scale"),
    ("tilted_faces", "--folder {tmp}/missing_photos", "missing_photos"),
    ("tilted_faces", "--also big:NO_SUCH_SETTING=1", "NO_SUCH_SETTING"),
    ("fer_landmarks", "--faces 0", "--faces"),
    ("face_crops", "{tmp}/crops --limit -5", "--limit"),
    ("face_crops", "{tmp}/crops --side -1", "--side"),
    ("face_crops", "{tmp}/crops --photos {tmp}/missing_photos", "missing_photos"),
    ("video_bench", "--long-seconds -5", "--long-seconds"),
    ("bench", "--seconds -1", "--seconds"),
    ("bench", "--levels 1,0", "--levels"),
    ("bench", "--quality 99", "--quality"),
    ("bench_ab", "--before HEAD --rounds 0", "--rounds"),
    ("openmp_threads", "--faces 0", "--faces"),
    ("openmp_threads", "--gaps-ms 5,-1", "--gaps-ms"),
    ("synthesis_compare", "notamodel", "notamodel"),
    ("gpu_check", "--batches 1,0", "--batches"),
    ("muxspace_subset", "{tmp} {tmp}/subset --per-class 0", "--per-class"),
    ("bench_baselines", "jpeg --max-batch 0", "--max-batch"),
    ("fer_package_baseline", "{tmp}/missing_folder", "missing_folder"),
]


@pytest.fixture
def scratch(tmp_path):
    (tmp_path / "text.onnx").write_text("not a model\n")
    run = tmp_path / "classifier_run"  # what fertrain classifier logs: no per-quality rates or accuracies
    run.mkdir()
    (run / "log.jsonl").write_text(json.dumps({"epoch": 1, "seconds": 2.8, "lr": 1e-3, "train_loss": 2.1, "train_acc": 0.2, "val_acc": 0.1}) + "\n")
    return tmp_path


def refused(script: str, args: list[str], cwd: Path) -> str:
    """The one line a script refuses with (argparse's usage block dropped), asserting exit 2 and no traceback."""
    r = subprocess.run([sys.executable, str(SCRIPTS / f"{script}.py"), *args], capture_output=True, text=True, timeout=60, cwd=cwd)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = r.stderr.splitlines()
    if lines and lines[0].startswith("usage:"):  # argparse: usage (continued on indented lines), then its error line
        lines = [line for line in lines[1:] if not line.startswith(" ")]
    assert len(lines) == 1 and lines[0].startswith((f"{script}.py: error: ", f"{script}: ")), r.stderr
    return lines[0]


@pytest.mark.parametrize("script, args, names", CASES, ids=[f"{s} {a}" for s, a, _ in CASES])
def test_bad_input_is_one_line_and_exit_2(script, args, names, scratch):
    line = refused(script, args.format(tmp=scratch).split(), scratch)
    assert names in line, line
    assert not (scratch / "crops").exists()  # face_crops --limit -5 once wrote every crop of the split


@pytest.mark.skipif(importlib.util.find_spec("fer") is not None, reason="the `fer` package is installed here")
def test_fer_package_baseline_without_fer_says_where_to_run_it(scratch):
    (scratch / "faces" / "happy").mkdir(parents=True)
    (scratch / "faces" / "happy" / "a.png").write_bytes(b"")
    line = refused("fer_package_baseline", [str(scratch / "faces")], scratch)
    assert "`fer` package" in line and "separate environment" in line, line
