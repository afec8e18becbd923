"""The bitstream format on real faces: round trip, framing size, and every refusal."""

from __future__ import annotations

import numpy as np
import pytest

from fermodels import bitstream as bs


@pytest.fixture(scope="module")
def coded(card, fer_test):
    from ferclient.encoder import FaceEncoder

    enc = FaceEncoder()
    tables = enc.tables
    y = enc.latents(fer_test[0][:40])
    return card, tables, y, [bs.encode(v, card.default_quality, tables, card.model_tag, 48, 48) for v in y]


def test_round_trip_recovers_the_coded_symbols(coded):
    card, tables, y, streams = coded
    for v, s in zip(y, streams):
        header, idx = bs.decode(s, tables, card.model_tag, (48, 48))
        assert header.quality == card.default_quality and (header.height, header.width) == (48, 48)
        np.testing.assert_array_equal(idx, tables.quantize(v, card.default_quality))


def test_framing_is_eight_bytes_at_48x48(coded):
    card, _, _, streams = coded
    assert bs.parse_header(streams[0]).size == 8


def test_every_quality_round_trips_and_rate_rises_with_quality(coded):
    card, tables, y, _ = coded
    sizes = []
    for q in range(tables.num_qualities):
        streams = [bs.encode(v, q, tables, card.model_tag, 48, 48) for v in y]
        for v, s in zip(y, streams):
            np.testing.assert_array_equal(bs.decode(s, tables, card.model_tag, (48, 48))[1], tables.quantize(v, q))
        sizes.append(np.mean([len(s) for s in streams]))
    assert sizes == sorted(sizes), sizes


def _refused(data, card, tables, kind="invalid", match=None):
    with pytest.raises(bs.BitstreamError, match=match) as e:
        bs.decode(data, tables, card.model_tag, (48, 48))
    assert e.value.kind == kind
    return str(e.value)


def test_refusals_say_what_is_wrong(coded):
    card, tables, _, streams = coded
    s = streams[0]
    _refused(b"", card, tables, match="truncated")
    _refused(s[:5], card, tables, match="truncated")
    _refused(bytes([0x20 | s[0] & 0x0F]) + s[1:], card, tables, match="version 2")
    _refused(bytes([0x1F]) + s[1:], card, tables, match="unknown quality 15")
    other = (card.model_tag + 1) & 0xFFFF
    _refused(s[:1] + other.to_bytes(2, "big") + s[3:], card, tables, "precondition", match="model tag")
    huge = s[:3] + bs._varint(100_000) + bs._varint(100_000) + s[5:]
    _refused(huge, card, tables, "exhausted", match="100000x100000")
    _refused(s[:3] + bs._varint(64) + bs._varint(64) + s[5:], card, tables, match="64x64")
    _refused(s[:3] + b"\xff\xff\xff\xff" + s[7:], card, tables, match="malformed size")


def test_checksum_catches_payload_corruption(coded):
    card, tables, y, streams = coded
    rng = np.random.default_rng(0)
    caught = passed_identical = 0
    for s, v in zip(streams, y):
        for _ in range(10):
            b = bytearray(s)
            i = int(rng.integers(8, len(b)))
            b[i] ^= 1 << int(rng.integers(0, 8))
            try:
                _, idx = bs.decode(bytes(b), tables, card.model_tag, (48, 48))
            except bs.BitstreamError as e:
                assert "checksum" in str(e) or "entropy-decoded" in str(e)
                caught += 1
            else:  # a flip the decoder never reads: the symbols must be the true ones
                np.testing.assert_array_equal(idx, tables.quantize(v, card.default_quality))
                passed_identical += 1
    assert caught > 0.9 * (caught + passed_identical)


def test_encoder_refuses_an_unknown_quality(coded):
    card, tables, y, _ = coded
    with pytest.raises(bs.BitstreamError, match="out of range"):
        bs.encode(y[0], tables.num_qualities, tables, card.model_tag, 48, 48)
