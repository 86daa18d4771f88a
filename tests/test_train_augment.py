"""Teacher-labelled augmentation: what `perturb` may and may not change, and labelled batches."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from he_inhibitor.train.augment import AugmentConfig, concatenate, nearest_words, perturb

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


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 5), st.integers(1, 700))
def test_nearest_words_are_the_k_most_similar_other_words(seed, k, chunk):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(40, 6))
    words = rng.random(40) < 0.7
    words[:k + 1] = True  # enough words for k neighbours
    near = nearest_words(vectors, words, k, chunk)
    assert (near[~words] == -1).all()
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for r in np.flatnonzero(words):
        others = [c for c in np.flatnonzero(words) if c != r]
        sims = unit[others] @ unit[r]
        assert set(near[r]) <= set(others) and len(set(near[r])) == k
        assert np.isclose(sorted(unit[near[r]] @ unit[r])[0], np.sort(sims)[-k])  # the k-th best is the worst kept


def test_nearest_words_refuses_too_few_words():
    with pytest.raises(ValueError, match="too few"):
        nearest_words(np.eye(4), np.array([True, True, False, False]), 2)


@settings(max_examples=60, deadline=None)
@given(batches(), st.floats(0, 0.3), st.floats(0, 0.3), st.floats(0, 0.4), st.integers(0, 2**32 - 1))
def test_perturb_draws_neighbours_of_the_word_it_replaces(batch, p_mask, p_replace, p_neighbour, seed):
    """A changed piece is [MASK], a corpus word, or one of the original's neighbours; pieces without any stay."""
    ids, lengths = batch
    neighbours = np.full((1000, 2), -1, np.int64)
    neighbours[::2] = np.stack([np.arange(0, 1000, 2) + 1, np.arange(0, 1000, 2) + 3], 1) % 1000  # even ids only
    cfg = AugmentConfig(1, p_mask, p_replace, p_neighbour=p_neighbour, neighbours=2)
    out = perturb(ids, lengths, cfg, MASK, VOCAB, np.ones(3) / 3, np.random.default_rng(seed), neighbours)
    pos = np.arange(ids.shape[1])[None]
    frozen = (pos == 0) | (pos >= lengths[:, None] - 1)
    assert (out[frozen] == ids[frozen]).all()
    for r, c in zip(*np.nonzero(out != ids)):
        assert out[r, c] in np.append(VOCAB, MASK) or out[r, c] in neighbours[ids[r, c]]


def test_perturb_neighbour_rate():
    ids = np.full((400, 52), 8, np.int64)
    ids[:, 1::2] = 9  # odd positions: a piece without neighbours
    neighbours = np.full((10, 3), -1, np.int64)
    neighbours[8] = [1, 2, 3]
    out = perturb(ids, np.full(400, 52), AugmentConfig(1, 0.0, 0.0, p_neighbour=0.3, neighbours=3), MASK, VOCAB,
                  np.ones(3) / 3, np.random.default_rng(0), neighbours)
    inner, orig = out[:, 1:-1], ids[:, 1:-1]
    assert (inner[orig == 9] == 9).all()
    assert abs(np.isin(inner[orig == 8], [1, 2, 3]).mean() - 0.3) < 0.01
    with pytest.raises(ValueError, match="neighbour table"):
        perturb(ids, np.full(400, 52), AugmentConfig(1, 0.0, 0.0, p_neighbour=0.3), MASK, VOCAB, np.ones(3) / 3,
                np.random.default_rng(0))


@pytest.mark.parametrize("bad", [dict(copies=-1), dict(p_mask=-0.1), dict(p_mask=0.7, p_replace=0.5), dict(concat=1.5),
                                 dict(p_mask=0.5, p_neighbour=0.6), dict(p_neighbour=-0.1), dict(neighbours=0)])
def test_bad_augment_config_refused(bad):
    with pytest.raises(ValueError, match="augment"):
        AugmentConfig(**bad)
