"""The `he-inhibitor teacher` command, end to end on a 64-row subset (CPU, well under a minute).

Full-size training takes ~25 minutes, so this checks the machinery instead:
the command trains, saves a float16 model plus tokenizer that load back as
float32, writes metrics.json whose accuracy is the saved model's, and the
training really learns (the loss on its own rows falls).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from he_inhibitor.cli import main
from he_inhibitor.data import default_data_dir, load_sst2_tsv
from he_inhibitor.teacher import (
    RunOptions, TeacherConfig, evaluate, init_model, length_batches, load_teacher, load_tokenizer, logits, train,
)
from he_inhibitor.teacher_logits import LogitCache, decode_rows
from he_inhibitor.vocab import load_unpadded

TRAIN_ROWS = 64
DEV_ROWS = 128  # a dev subset keeps the test fast; the full dev set is 872 rows


@pytest.fixture(scope="module")
def subset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with the first 100 training rows and the first DEV_ROWS dev rows."""
    root = default_data_dir()
    if root is None or not (root / "train.tsv").is_file():
        pytest.skip("SST-2 data not found: set HE_INHIBITOR_DATA or provide ../shared/data/sst2")
    out = tmp_path_factory.mktemp("sst2")
    for name, rows in (("train.tsv", 100), ("dev.tsv", DEV_ROWS)):
        lines = (root / name).read_text(encoding="utf-8").splitlines(keepends=True)
        (out / name).write_text("".join(lines[: rows + 1]), encoding="utf-8")
    return out


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Torch on one thread for this test's own forward passes, restored afterwards.

    On the shared 2-core machine, 2 threads ran 3-5x slower than 1.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_teacher_command_end_to_end(
    subset_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    out = tmp_path / "teacher"
    # 2 epochs of batch 16 = 8 steps (the first is warm-up at lr 0); lr raised so few steps show.
    args = ["teacher", "--data-dir", str(subset_dir), "--out", str(out), "--limit", str(TRAIN_ROWS)]
    args += ["--epochs", "2", "--batch-size", "16", "--lr", "2e-4", "--seed", "0", "--threads", "1"]
    assert main(args) == 0
    assert "dev accuracy:" in capsys.readouterr().out

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == DEV_ROWS and metrics["train_rows"] == TRAIN_ROWS
    assert metrics["steps"] == 8 and 0.0 <= metrics["accuracy"] <= 1.0

    # Stored in float16, loaded as float32, with named labels and its tokenizer.
    with safe_open(out / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    model, tokenizer = load_teacher(out), load_tokenizer(out)
    assert json.loads((out / "config.json").read_text())["dtype"] == "float16"
    assert {p.dtype for p in model.parameters()} == {torch.float32} and not model.training
    assert model.config.id2label == {0: "NEGATIVE", 1: "POSITIVE"}

    # metrics.json reports the saved model, not the float32 one before rounding.
    dev_x, dev_y = load_sst2_tsv(subset_dir / "dev.tsv")
    assert evaluate(model, tokenizer, dev_x, dev_y)["accuracy"] == metrics["accuracy"]

    # Training learned: the loss on its own rows fell from the same seeded starting point.
    train_x, train_y = load_sst2_tsv(subset_dir / "train.tsv")
    train_x, train_y = train_x[:TRAIN_ROWS], train_y[:TRAIN_ROWS]
    before = evaluate(*init_model(seed=0), train_x, train_y)
    after = evaluate(model, tokenizer, train_x, train_y)
    assert after["loss"] < before["loss"] - 0.03, (before, after)  # measured 0.692 -> 0.622


def test_teacher_refuses_malformed_data(tmp_path: Path) -> None:
    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood film\tpositive\n", encoding="utf-8")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nbad film\t0\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"train\.tsv, line 2: label must be 0 or 1"):
        main(["teacher", "--data-dir", str(tmp_path), "--out", str(tmp_path / "out")])


# -- dynamic padding and resume ------------------------------------------------------------------


def test_length_batches_cover_every_row_once_with_little_padding() -> None:
    lengths = [(7 * i) % 23 + 3 for i in range(101)]
    batches = length_batches(lengths, 8, 4, torch.Generator().manual_seed(0))
    assert len(batches) == 13 and sorted(i for b in batches for i in b) == list(range(101))
    assert sum(len(b) < 8 for b in batches) == 1  # only the last chunk ends in a partial batch
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    plain = length_batches(lengths, 8, 1, torch.Generator().manual_seed(0))
    assert padded < 0.8 * sum(len(b) * max(lengths[i] for i in b) for b in plain)
    # sort_chunk 1 is the plain shuffled order: consecutive slices of one permutation
    assert plain == [b.tolist() for b in torch.randperm(101, generator=torch.Generator().manual_seed(0)).split(8)]


@pytest.mark.parametrize("fused_adam,bf16", [(False, False), (True, True)])  # the minilm and the mpnet recipe
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(subset_dir: Path, tmp_path: Path, one_thread: None,
                                                               fused_adam: bool, bf16: bool) -> None:
    """8 steps straight vs. SIGTERM after step 3, a resume that stops at the epoch boundary (step 4), a resume to the end."""
    x, y = load_sst2_tsv(subset_dir / "train.tsv")
    x, y = x[:TRAIN_ROWS], y[:TRAIN_ROWS]
    cfg = TeacherConfig(epochs=2, batch_size=16, lr=2e-4, max_length=24, sort_chunk=2, threads=1, fused_adam=fused_adam,
                        bf16=bf16)
    ckpt = tmp_path / "ckpt"

    def fresh():
        return init_model(seed=cfg.seed)

    straight, tok = fresh()
    assert train(straight, tok, x, y, cfg)["finished"]

    def interrupt() -> float:  # a real SIGTERM, delivered while the step-3 evaluation runs
        os.kill(os.getpid(), signal.SIGTERM)
        return 0.0

    model, tok = fresh()
    first = train(model, tok, x, y, cfg, RunOptions(checkpoint_dir=ckpt, eval_every=3), interrupt)
    assert (first["finished"], first["step"]) == (False, 3)
    with pytest.raises(FileExistsError, match="--resume"):
        train(*fresh(), x, y, cfg, RunOptions(checkpoint_dir=ckpt))
    with pytest.raises(ValueError, match=r"lr: 0.0002 -> 0.001"):
        train(*fresh(), x, y, replace(cfg, lr=1e-3), RunOptions(checkpoint_dir=ckpt, resume=True))
    second = train(*fresh(), x, y, cfg, RunOptions(checkpoint_dir=ckpt, resume=True, stop_after=1))
    assert (second["finished"], second["step"]) == (False, 4)
    model, tok = fresh()
    last = train(model, tok, x, y, cfg, RunOptions(checkpoint_dir=ckpt, resume=True))
    assert (last["finished"], last["step"]) == (True, 8)

    a, b = straight.state_dict(), model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["classifier.weight"], fresh()[0].state_dict()["classifier.weight"])  # it trained


# -- cached logits ---------------------------------------------------------------------------------


def test_cached_logits_equal_live_ones(subset_dir: Path, tmp_path: Path, one_thread: None) -> None:
    """Dev sentences and teacher-perturbed copies of them (as text): cached once, read back equal to a live run."""
    model, tok = init_model(seed=0)
    teacher_dir = tmp_path / "teacher"
    model.save_pretrained(teacher_dir)  # float32: load_teacher returns these very weights
    tok.save_pretrained(teacher_dir)
    x, _ = load_sst2_tsv(subset_dir / "dev.tsv")
    x = x[:24]

    wp = load_unpadded(teacher_dir)
    rows = [e.ids for e in wp.encode_batch(x)]
    lengths = np.array([len(r) for r in rows])
    ids = np.zeros((len(rows), lengths.max()), np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    # copies as the augmentation makes them: inner pieces masked or replaced, [CLS]/[SEP] kept
    pos = np.arange(ids.shape[1])[None, :]
    inner = (pos > 0) & (pos < lengths[:, None] - 1)
    copies = ids.copy()
    copies[inner & (pos % 4 == 1)] = wp.token_to_id("[MASK]")
    copies[inner & (pos % 4 == 3)] = wp.token_to_id("film")
    copy_text = decode_rows(wp, copies, lengths, tok.mask_token)
    masked = (copies == wp.token_to_id("[MASK]")).sum(1)
    assert [t.count(tok.mask_token) for t in copy_text] == masked.tolist() and masked.sum() > 0

    texts = list(dict.fromkeys(x + copy_text))
    cache = LogitCache(tmp_path / "cache", teacher_dir)
    assert cache.add(x + copy_text + x[:5]) == len(texts)  # each distinct text runs once
    live = logits(load_teacher(teacher_dir), load_tokenizer(teacher_dir), texts)
    assert torch.equal(cache.get(texts), live)  # the same batches, so the same bits
    order = list(reversed(texts))
    assert torch.equal(cache.get(order), live.flip(0))

    again = LogitCache(tmp_path / "cache", teacher_dir)  # read back from disk
    assert len(again) == len(texts) and again.add(texts) == 0 and torch.equal(again.get(texts), live)
    with pytest.raises(KeyError, match="1 of 2 texts have no cached logits"):
        again.get([texts[0], "a sentence nobody cached"])
    assert LogitCache(tmp_path / "cache", teacher_dir, max_length=32).dir != cache.dir  # another key, not mixed


def test_command_stops_and_resumes(subset_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   one_thread: None) -> None:
    ckpt = tmp_path / "run"  # the checkpoint directory may hold other files: only the checkpoint goes
    ckpt.mkdir()
    (ckpt / "train.log").write_text("log\n")
    args = ["teacher", "--data-dir", str(subset_dir), "--out", str(tmp_path / "model"), "--limit", "16",
            "--batch-size", "8", "--max-length", "16", "--threads", "1", "--checkpoint-dir", str(ckpt)]
    assert main([*args, "--stop-after", "1"]) == 0
    assert "stopped at step 1/2" in capsys.readouterr().out and (ckpt / "state.pt").is_file()
    assert not (tmp_path / "model").exists()
    with pytest.raises(ValueError, match="need --checkpoint-dir"):
        main([*args[:-2], "--resume"])
    assert main([*args, "--resume"]) == 0
    assert "dev accuracy:" in capsys.readouterr().out
    assert json.loads((tmp_path / "model" / "metrics.json").read_text())["step"] == 2
    assert sorted(p.name for p in ckpt.iterdir()) == ["train.log"]
