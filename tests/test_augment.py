"""Teacher-labelled augmentation: what `perturb` may and may not change, and labelled batches."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from he_inhibitor.augment import AugmentConfig, concatenate, perturb  # noqa: E402

MASK, VOCAB = 103, np.array([1000, 2000, 3000])


@st.composite
def batches(draw):
    b, t = draw(st.integers(1, 6)), draw(st.integers(2, 12))
    lengths = np.array([draw(st.integers(2, t)) for _ in range(b)])
    ids = np.zeros((b, t), np.int64)
    for r, n in enumerate(lengths):
        ids[r, 0], ids[r, n - 1] = 101, 102
        ids[r, 1 : n - 1] = draw(st.lists(st.integers(5, 999), min_size=int(n) - 2, max_size=int(n) - 2))
    return ids, lengths


@settings(max_examples=60, deadline=None)
@given(batches(), st.floats(0, 0.5), st.floats(0, 0.5), st.integers(0, 2**32 - 1))
def test_perturb_keeps_specials_padding_and_shape(batch, p_mask, p_replace, seed):
    ids, lengths = batch
    out = perturb(ids, lengths, AugmentConfig(1, p_mask, p_replace), MASK, VOCAB, np.ones(3) / 3,
                  np.random.default_rng(seed))
    assert out.shape == ids.shape
    pos = np.arange(ids.shape[1])[None]
    frozen = (pos == 0) | (pos >= lengths[:, None] - 1)  # [CLS], [SEP] and padding
    assert (out[frozen] == ids[frozen]).all()
    changed = out != ids
    assert np.isin(out[changed], np.append(VOCAB, MASK)).all()  # only [MASK] or a corpus word


def test_perturb_rates_and_identity():
    ids = np.full((400, 52), 7, np.int64)
    lengths = np.full(400, 52)
    same = perturb(ids, lengths, AugmentConfig(1, 0.0, 0.0), MASK, VOCAB, np.ones(3) / 3, np.random.default_rng(0))
    assert (same == ids).all()
    out = perturb(ids, lengths, AugmentConfig(1, 0.1, 0.2), MASK, VOCAB, np.ones(3) / 3, np.random.default_rng(0))
    inner = out[:, 1:-1]
    assert abs((inner == MASK).mean() - 0.1) < 0.01 and abs(np.isin(inner, VOCAB).mean() - 0.2) < 0.01


@settings(max_examples=60, deadline=None)
@given(batches(), st.floats(0, 1), st.integers(2, 24), st.integers(0, 2**32 - 1))
def test_concatenate_joins_two_rows_within_max_len(batch, fraction, max_len, seed):
    """Every row is itself, or "[CLS] a b [SEP]" for some other row b, cut to max_len with [SEP] last."""
    ids, lengths = batch
    out, new_len = concatenate(ids, lengths, fraction, max_len, np.random.default_rng(seed))
    assert out.shape == (len(ids), new_len.max()) and (new_len <= np.maximum(lengths, max_len)).all()
    pos = np.arange(out.shape[1])[None]
    assert (out[pos >= new_len[:, None]] == 0).all()  # padding
    inner = [ids[r, 1 : n - 1] for r, n in enumerate(lengths)]
    for r, n in enumerate(new_len):
        row = out[r, :n]
        assert row[0] == 101 and row[-1] == 102
        if n == lengths[r] and (row == ids[r, :n]).all():
            continue  # not joined (or joined to an empty partner)
        assert (row[1 : lengths[r] - 1] == inner[r]).all() if n > lengths[r] - 1 else True
        assert any(np.array_equal(row[1:-1], np.concatenate([inner[r], inner[p]])[: n - 2]) for p in range(len(ids)))


def test_concatenate_fraction_zero_is_identity_and_one_joins_all():
    ids = np.array([[101, 5, 6, 102, 0], [101, 7, 102, 0, 0], [101, 8, 9, 10, 102]])
    lengths = np.array([4, 3, 5])
    same, n = concatenate(ids, lengths, 0.0, 64, np.random.default_rng(0))
    assert (same == ids).all() and (n == lengths).all()
    joined, n = concatenate(ids, lengths, 1.0, 64, np.random.default_rng(0))
    assert (n == lengths + lengths[np.random.default_rng(0).permutation(3)] - 2).all()
    cut, n = concatenate(ids, lengths, 1.0, 4, np.random.default_rng(0))
    assert (n <= 4).all() and (cut[np.arange(3), n - 1] == 102).all()


@pytest.mark.parametrize("bad", [dict(copies=-1), dict(p_mask=-0.1), dict(p_mask=0.7, p_replace=0.5), dict(concat=1.5)])
def test_bad_augment_config_refused(bad):
    with pytest.raises(ValueError, match="augment"):
        AugmentConfig(**bad)
