"""Teacher-labelled augmentation: what `perturb` may and may not change, and labelled batches."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from he_inhibitor.augment import AugmentConfig, perturb  # noqa: E402

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


@pytest.mark.parametrize("bad", [dict(copies=-1), dict(p_mask=-0.1), dict(p_mask=0.7, p_replace=0.5)])
def test_bad_augment_config_refused(bad):
    with pytest.raises(ValueError, match="augment"):
        AugmentConfig(**bad)
