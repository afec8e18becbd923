"""client/encoder.py: which model a --model name means."""

from __future__ import annotations

import pytest

from ferclient.encoder import FaceEncoder, resolve
from ferwire.card import WEIGHTS


@pytest.mark.parametrize("name", ["fercodec-v1", "fercodec-v1-expr"])
def test_a_bundled_model_is_found_by_its_id_too_without_pulling(name, tmp_path, monkeypatch):
    """--json and `ferclient info` name models by id (fercodec-v1-aa8f); given back with --no-pull it said "no model"."""
    monkeypatch.setenv("FERCODEC_CACHE_DIR", str(tmp_path))  # an empty cache: nothing pulled to fall back on
    model_id = FaceEncoder(name).card.model_id
    assert model_id != name and resolve(model_id) == WEIGHTS / name
    assert FaceEncoder(model_id).card.model_id == model_id
    with pytest.raises(FileNotFoundError, match="no model 'fercodec-v1-0000'"):
        resolve("fercodec-v1-0000")
