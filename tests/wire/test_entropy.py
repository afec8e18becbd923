"""Context-adaptive entropy tables: what fit() builds, and what the contexts buy on real faces."""

from __future__ import annotations

import numpy as np
import pytest

from ferwire import bitstream as bs
from ferwire import entropy


@pytest.fixture(scope="module")
def latents(fer_test):
    """Analysis outputs of real FER2013 faces: 5,000 train faces to count tables on, 200 test faces to code."""
    from ferclient.encoder import FaceEncoder
    from fermodels.data import load_split

    enc = FaceEncoder(threads=2)
    train, _ = load_split("train", limit=5000)
    return enc, enc.latents(train), enc.latents(fer_test[0][:200])


def test_integer_pmf_sums_exactly_and_keeps_every_bin():
    rng = np.random.default_rng(0)
    w = rng.random((50, 17)) ** 8
    w[:, 3] = 0.0
    p = entropy._integer_pmf(w)
    assert p.dtype == np.uint16 and (p.astype(np.int64).sum(-1) == entropy.PMF_TOTAL).all() and p.min() >= 1
    one_hot = np.zeros((1, 2))
    one_hot[0, 0] = 1.0
    assert entropy._integer_pmf(one_hot).tolist() == [[entropy.PMF_TOTAL - 1, 1]]


def test_shipped_tables_are_well_formed(card):
    t = entropy.EntropyTables.load(card.file("tables.npz"))
    assert t.latent_shape == (t.channels, 6, 6) and t.num_qualities == card.num_qualities
    for q in range(t.num_qualities):
        assert sorted(t.order[q]) == list(range(t.channels))
        assert (np.diff(t.edges[q], axis=-1) >= 0).all()
        for c in range(t.channels):
            rows = t.block(q, c).astype(np.int64)
            assert (rows.sum(-1) == entropy.PMF_TOTAL).all() and rows.min() >= 1
    assert t.pmf_start[-1, -1] + t.block(t.num_qualities - 1, t.channels - 1).size == t.pmf.size  # blocks tile the array


def test_fit_is_deterministic_and_round_trips(card, latents):
    enc, train, test = latents
    a = entropy.EntropyTables.fit(train, enc.tables.gain, enc.tables.medians)
    b = entropy.EntropyTables.fit(train, enc.tables.gain, enc.tables.medians)
    for k, v in a.arrays().items():
        np.testing.assert_array_equal(v, b.arrays()[k], err_msg=k)
    for y in test[:20]:
        s = bs.encode(y, 2, a, card.model_tag)
        np.testing.assert_array_equal(bs.decode(s, a, card.model_tag)[1], a.symbols(y, 2))


def test_contexts_beat_one_table_per_channel(card, latents, monkeypatch):
    """Position and activity contexts must code real test faces in fewer bytes than the same counts pooled per channel."""
    enc, train, test = latents
    q = card.default_quality
    with_context = entropy.EntropyTables.fit(train, enc.tables.gain, enc.tables.medians)
    pooled = entropy.EntropyTables({k: v.copy() for k, v in with_context.arrays().items()})
    for c in range(pooled.channels):  # one table per channel: the histograms summed over positions and contexts
        pooled.block(q, c)[:] = entropy._integer_pmf(with_context.block(q, c).astype(np.float64).sum((0, 1)))
    sizes = {name: np.mean([len(bs.encode(y, q, t, card.model_tag)) for y in test]) for name, t in (("context", with_context), ("pooled", pooled))}
    assert sizes["context"] < 0.98 * sizes["pooled"], sizes


def test_quantization_error_follows_the_per_position_scale(card, latents):
    """Each symbol dequantizes to within half its position's step (1 / scale) of the latent."""
    enc, _, test = latents
    t = enc.tables
    assert t.scale.shape == t.latent_shape[1:] and (t.scale > 0).all()
    assert abs(np.log(t.scale).mean()) < 1e-5  # geometric mean 1: the same average step as a uniform grid
    for q in (0, t.num_qualities - 1):
        err = np.abs(t.dequantize(t.symbols(test, q), q) - test * t.gain[q][:, None, None])
        assert (err <= 0.5 / t.scale + 1e-4).all()


def test_region_scale_is_largest_where_the_classifier_looks():
    from fermodels.export import region_scale

    yy, xx = np.mgrid[:48, :48]
    saliency = np.exp(-((yy - 23.5) ** 2 + (xx - 23.5) ** 2) / 200.0)  # centred between pixels 23 and 24: mirror-symmetric
    saliency /= saliency.mean()
    scale = region_scale(saliency, 8, 0.75)
    assert scale.shape == (6, 6) and abs(np.log(scale).mean()) < 1e-6
    assert scale[2:4, 2:4].min() > scale[0, 0] and np.allclose(scale, scale[:, ::-1])
    np.testing.assert_allclose(region_scale(saliency, 8, 0.0), 1.0)
