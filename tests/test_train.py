"""Distillation: layer mappings, teacher cache, and that training steps lower the loss."""

from __future__ import annotations

import functools
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file

from he_inhibitor.data import default_data_dir, load_sst2
from he_inhibitor.model import Student
from he_inhibitor.model.nonlinear import PolySpec
from he_inhibitor.model.student import load_student
from he_inhibitor.paths import SHIPPED_STUDENT
from he_inhibitor.teacher import load_teacher, logits
from he_inhibitor.teacher import load_tokenizer as load_hf_tokenizer
from he_inhibitor.teacher_cache import build_cache
from he_inhibitor.teacher_logits import PRECISION, LogitCache, decode_rows
from he_inhibitor.train.augment import AugmentConfig, TeacherLabeller
from he_inhibitor.train.averaging import WeightAverage
from he_inhibitor.train.batches import Batches
from he_inhibitor.train.calibration import calibrate
from he_inhibitor.train.config import DistillConfig, LossWeights, load_config
from he_inhibitor.train.copy_bank import CopyBank, CopyBankError
from he_inhibitor.train.init import (
    init_embeddings_from_teacher, position_table, student_token_vectors, untie_word_table, word_neighbour_table,
)
from he_inhibitor.train.loop import param_groups, run_phase
from he_inhibitor.train.losses import Distiller, teacher_layers
from he_inhibitor.train.pipeline import build_copies, distill
from he_inhibitor.vocab import load_tokenizer, load_unpadded, make_tokenizer, teacher_to_student_ids, teacher_vocab, trimmed_vocab

TEACHER = Path(__file__).resolve().parents[2] / "shared" / "models" / "minilm-l6-sst2"
needs_teacher = pytest.mark.skipif(not TEACHER.is_dir() or default_data_dir() is None, reason="shared teacher or SST-2 data absent")


@pytest.mark.parametrize(
    "layer_map, expected",
    [("uniform", [3, 6]), ("first", [1, 2]), ("last", [5, 6]), ([2, 4], [2, 4])],
)
def test_layer_maps(layer_map, expected) -> None:
    assert teacher_layers(layer_map, 2, 6) == expected


@pytest.mark.parametrize("bad", ["middle", [0, 6], [1, 2, 3]])
def test_bad_layer_map_refused(bad) -> None:
    with pytest.raises(ValueError, match="layer_map"):
        teacher_layers(bad, 2, 6)


def test_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="bogus"):
        DistillConfig.from_dict({"bogus": 1})
    cfg = DistillConfig.from_dict({"student": {"d_model": 32, "n_heads": 2}, "loss": {"attn": 0.5}})
    assert cfg.student.d_model == 32 and cfg.loss.attn == 0.5 and cfg.augment_poly is None
    cfg = DistillConfig.from_dict({"augment": {"copies": 2, "concat": 0.5}, "augment_poly": {"copies": 1}})
    assert cfg.augment.concat == 0.5 and cfg.augment_poly.copies == 1 and cfg.augment_poly.concat == 0.0
    with pytest.raises(ValueError, match="concat"):
        DistillConfig.from_dict({"augment_poly": {"concat": 2.0}})


def test_defaults_are_the_shipped_recipe() -> None:
    """`he-inhibitor distill` without --config trains the shipped student's recipe: the defaults with the
    shipped seed are the whole config its run wrote (distill_config.json, shipped beside it), and its
    architecture is the shipped config.json (the vocabulary size comes from the training text)."""
    run = json.loads((SHIPPED_STUDENT / "distill_config.json").read_text())
    recipe = json.loads(json.dumps(asdict(DistillConfig(seed=run["seed"]))))
    shipped = json.loads((SHIPPED_STUDENT / "config.json").read_text())
    for cfg in (run["student"], recipe["student"], shipped):
        cfg.pop("vocab_size")
    assert recipe == run
    assert recipe["student"] == shipped


def test_overrides_merge_key_by_key_and_extend(tmp_path) -> None:
    cfg = DistillConfig.from_dict({"student": {"n_layers": 3, "abs_poly": {"degree": 8}}, "augment": {"copies": 6}})
    recipe = DistillConfig()
    assert (cfg.student.n_layers, cfg.student.n_heads, cfg.student.rel_bias) == (3, recipe.student.n_heads, True)
    assert cfg.student.abs_poly == PolySpec(8, recipe.student.abs_poly.method) != recipe.student.abs_poly
    assert cfg.augment.copies == 6 and cfg.augment.concat == recipe.augment.concat
    (tmp_path / "base.json").write_text('{"seed": 7, "student": {"n_heads": 4}}')
    (tmp_path / "child.json").write_text('{"extends": "base.json", "student": {"d_ff": 64}}')
    child = load_config(tmp_path / "child.json")
    assert (child.seed, child.student.n_heads, child.student.d_ff, child.student.key_norm) == (7, 4, 64, recipe.student.key_norm)
    (tmp_path / "base.json").write_text('{"extends": "child.json"}')
    with pytest.raises(ValueError, match="cycle"):
        load_config(tmp_path / "child.json")


def test_set_overrides_after_the_config_file(tmp_path) -> None:
    (tmp_path / "c.json").write_text('{"seed": 7, "student": {"n_layers": 3}}')
    cfg = load_config(tmp_path / "c.json", ["student.n_layers=4", "layer_map=last", "augment.concat=0.5"])
    assert (cfg.seed, cfg.student.n_layers, cfg.layer_map, cfg.augment.concat) == (7, 4, "last", 0.5)
    assert load_config(None, ["seed=2"]).seed == 2 and load_config().seed == DistillConfig().seed
    for bad in ("seed", "=3", "student..n_layers=3"):
        with pytest.raises(ValueError, match="KEY=VALUE"):
            load_config(None, [bad])
    with pytest.raises(ValueError, match="unknown"):
        load_config(None, ["student.bogus=1"])


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.json")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_committed_config_loads(path) -> None:
    load_config(path)


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    sentences, labels = load_sst2(default_data_dir(), "train")
    sentences, labels = sentences[:64], labels[:64]
    cache = build_cache(TEACHER, sentences, labels, tmp_path_factory.mktemp("cache"), max_len=64)
    teacher_tok = load_tokenizer(TEACHER)
    teacher_tok.no_padding()
    teacher_tok.no_truncation()
    tok = make_tokenizer(trimmed_vocab(teacher_tok, sentences))
    return cache, teacher_tok, tok, sentences


@needs_teacher
def test_cache_matches_teacher_tokenization(tiny_setup) -> None:
    cache, teacher_tok, _, sentences = tiny_setup
    first = cache.ids[cache.offsets[0] : cache.offsets[1]].tolist()
    assert first == teacher_tok.encode(sentences[0]).ids
    assert cache.hidden.shape[1:] == (7, 384) and len(cache) == 64


@needs_teacher
@pytest.mark.parametrize("variant", [{}, {"recursive": True}, {"attention": "dot"}])
def test_distillation_steps_lower_the_loss(tiny_setup, cached_student_config, variant) -> None:
    cache, teacher_tok, tok, _ = tiny_setup
    torch.manual_seed(0)
    scfg = cached_student_config(vocab_size=tok.get_vocab_size(), abs_poly=PolySpec(8), relu_poly=PolySpec(8), **variant)
    cfg = DistillConfig(student=scfg, loss=LossWeights(kd=1, ce=0.2, hidden=0.05, emb=0.05, attn=0.1, range=1.0))
    student = Student(scfg)
    tw = load_file(str(TEACHER / "model.safetensors"))
    vocab_ids = np.array([teacher_tok.token_to_id(tok.id_to_token(i)) for i in range(tok.get_vocab_size())])
    basis = init_embeddings_from_teacher(student, tw["bert.embeddings.word_embeddings.weight"].astype(np.float32)[vocab_ids],
                                         tw["bert.embeddings.position_embeddings.weight"].astype(np.float32))
    assert basis.shape == (32, 384)
    dist = Distiller(student, 384, teacher_layers("uniform", 2, 6))
    batches = Batches(cache, teacher_to_student_ids(teacher_tok, tok), 64, 0, need_attn=True)
    batch = batches.collate(batches.order(0)[0])
    opt = torch.optim.AdamW(dist.parameters(), lr=3e-3)
    dist.train()
    losses = []
    for _ in range(15):
        parts = dist.losses(batch, cfg)
        assert {"kd", "ce", "hidden", "emb", "attn", "range"} <= set(parts)
        opt.zero_grad()
        parts["loss"].backward()
        opt.step()
        losses.append(parts["loss"].item())
    assert losses[-1] < 0.8 * losses[0]


def test_mse_distillation_loss_is_the_squared_logit_error(tiny_student_config) -> None:
    torch.manual_seed(0)
    student = Student(tiny_student_config(dropout=0.0)).eval()
    dist = Distiller(student, 12, [1])
    ids, mask = torch.randint(0, 30, (4, 5)), torch.ones(4, 5, dtype=torch.bool)
    batch = {"ids": ids, "mask": mask, "labels": torch.tensor([0, 1, 1, 0]), "t_logits": torch.randn(4, 2) * 3,
             "t_hidden": torch.zeros(4, 5, 2, 12)}
    cfg = DistillConfig(loss=LossWeights(kd=1.0, ce=0.0, hidden=0.0, range=0.0), kd_loss="mse")
    got = dist.losses(batch, cfg)["kd"]
    want = ((student(ids, mask) - batch["t_logits"]) ** 2).sum(-1).mean()
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="kd_loss"):
        DistillConfig.from_dict({"kd_loss": "cosine"})


def test_tied_word_table_starts_equal_and_moves_unseen_words(tiny_student_config) -> None:
    """R + E P equals the PCA table at first; a step on one word's row moves every word through P."""
    rows = np.random.default_rng(0).normal(size=(30, 12)).astype(np.float32)
    students = []
    for tied in (False, True):
        torch.manual_seed(0)
        students.append(Student(tiny_student_config()))
        init_embeddings_from_teacher(students[-1], rows, np.zeros((64, 12), np.float32), tied=tied)
    before, student = students[0].word.weight.detach().clone(), students[1]
    torch.testing.assert_close(student.word.weight, before, atol=1e-5, rtol=0)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    student.word(torch.tensor([3])).sum().backward()
    opt.step()
    moved = (student.word.weight.detach() - before).abs().sum(1)
    assert (moved[[0, 1, 2, 4]] > 0).all()  # words never looked up moved with the shared projection
    untie_word_table(student)
    assert set(dict(student.named_parameters())) >= {"word.weight"} and not hasattr(student.word, "parametrizations")


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 20), st.integers(3, 24), st.integers(0, 20), st.floats(0.05, 5.0), st.integers(0, 2**16))
def test_position_table_keeps_the_teacher_geometry(n_pos, d_teacher, extra, norm, seed) -> None:
    """Own-basis PCA into at least the rows' rank: pairwise distances are the teacher's up to one scale,
    and the mean row norm is the one asked for."""
    teacher = np.random.default_rng(seed).normal(size=(n_pos, d_teacher))
    d = min(n_pos - 1, d_teacher) + extra
    table = position_table(teacher, d, norm)
    assert table.shape == (n_pos, d)
    np.testing.assert_allclose(np.linalg.norm(table, axis=1).mean(), norm, rtol=1e-9)
    dist = lambda x: np.linalg.norm(x[:, None] - x[None], axis=-1)  # noqa: E731
    ratio = dist(table) / np.maximum(dist(teacher), 1e-12)
    off = ~np.eye(n_pos, dtype=bool)
    np.testing.assert_allclose(ratio[off], ratio[off][0], rtol=1e-6)


def test_position_norm_sets_the_ratio_to_the_word_rows(tiny_student_config) -> None:
    rng = np.random.default_rng(2)
    student = Student(tiny_student_config(vocab_size=40, d_model=16, max_len=12))
    init_embeddings_from_teacher(student, rng.normal(size=(40, 24)), rng.normal(size=(20, 24)), position_norm=0.34)
    with torch.no_grad():
        ratio = student.pos.weight.norm(dim=1).mean() / student.word.weight.norm(dim=1).mean()
    assert abs(float(ratio) - 0.34) < 1e-5
    with pytest.raises(ValueError, match="position_norm"):
        DistillConfig.from_dict({"position_norm": -1.0})


def test_frozen_residual_keeps_the_table_in_the_teacher_span(tiny_student_config) -> None:
    """embedding_residual=False: after a step the table is still exactly E P', P' the moved projection."""
    rows = np.random.default_rng(1).normal(size=(30, 12)).astype(np.float32)
    student = Student(tiny_student_config())
    init_embeddings_from_teacher(student, rows, np.zeros((64, 12), np.float32), tied=True, residual=False)
    span = student.word.parametrizations.weight
    assert not span.original.requires_grad
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=0.1)
    student.word(torch.tensor([3, 7])).pow(2).sum().backward()
    opt.step()
    assert span.original.abs().max() == 0  # R never left zero
    torch.testing.assert_close(student.word.weight, span[0].rows @ span[0].proj)
    with pytest.raises(ValueError, match="embedding_tied"):
        DistillConfig.from_dict({"embedding_residual": False})
    with pytest.raises(ValueError, match="vocabulary"):
        DistillConfig.from_dict({"vocabulary": "dev"})


@needs_teacher
@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["unmesmerizing", "café", "self-conscious", "!!", "Ä", "wow", "13th", "'s", "zqxj",
                                 "over-the-top", "naïveté", "schmaltzy", "un-", "..."]), min_size=1, max_size=12)
       | st.text(alphabet=st.characters(codec="ascii"), min_size=1, max_size=60))
def test_teacher_vocabulary_tokenizes_as_the_teacher(words) -> None:
    """Every ASCII token but [unused...]: any text splits exactly as the teacher splits it."""
    text = words if isinstance(words, str) else " ".join(words)
    teacher_tok, vocab, student_tok = _teacher_vocabulary()
    assert vocab[:4] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] and len(set(vocab)) == len(vocab)
    assert not any(t.startswith("[unused") for t in vocab)
    assert student_tok.encode(text).tokens == teacher_tok.encode(text).tokens


@functools.cache
def _teacher_vocabulary():
    teacher_tok = load_unpadded(TEACHER)
    vocab = teacher_vocab(teacher_tok)
    return teacher_tok, vocab, make_tokenizer(vocab)


@needs_teacher
def test_teacher_labels_perturbed_copies(tiny_setup) -> None:
    """Unperturbed, the live teacher reproduces the cache; perturbed, it labels what it sees."""
    cache, teacher_tok, tok, _ = tiny_setup
    id_map = teacher_to_student_ids(teacher_tok, tok)
    batches = Batches(cache, id_map, 16, 0, need_attn=False)
    batch = batches.collate(batches.order(0)[0])
    teacher = load_teacher(TEACHER)
    same = TeacherLabeller(teacher, teacher_tok, AugmentConfig(1, 0.0, 0.0), np.asarray(cache.ids), id_map, False)
    (out,) = same.label(batch, np.random.default_rng(0), 1)
    assert torch.equal(out["ids"], batch["ids"]) and torch.equal(out["mask"], batch["mask"])
    torch.testing.assert_close(out["t_logits"], batch["t_logits"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["t_hidden"] * batch["mask"][..., None, None], batch["t_hidden"], atol=2e-2, rtol=1e-2)
    noisy = TeacherLabeller(teacher, teacher_tok, AugmentConfig(1, 0.3, 0.3), np.asarray(cache.ids), id_map, False)
    (out,) = noisy.label(batch, np.random.default_rng(0), 1)
    assert (out["t_ids"] != batch["t_ids"]).any() and out["t_hidden"].shape == batch["t_hidden"].shape
    assert torch.equal(out["labels"], out["t_logits"].argmax(-1))
    assert (out["ids"] == id_map[teacher_tok.token_to_id("[MASK]")]).any()  # [MASK] is [UNK] to the student


@needs_teacher
def test_neighbour_table_and_labeller(tiny_setup) -> None:
    """Whole words get student words as neighbours, other pieces none; a labelled copy only swaps in neighbours."""
    cache, teacher_tok, tok, _ = tiny_setup
    table = word_neighbour_table(teacher_tok, tok, student_token_vectors(TEACHER, teacher_tok, tok), 4)
    assert table.shape == (teacher_tok.get_vocab_size(), 4)
    for token in tok.get_vocab():
        row = table[teacher_tok.token_to_id(token)]
        if token.isalpha():
            assert all(teacher_tok.id_to_token(int(i)).isalpha() and tok.token_to_id(teacher_tok.id_to_token(int(i))) is not None
                       for i in row) and teacher_tok.token_to_id(token) not in row
        else:
            assert (row == -1).all()
    id_map = teacher_to_student_ids(teacher_tok, tok)
    batches = Batches(cache, id_map, 16, 0, need_attn=False)
    batch = batches.collate(batches.order(0)[0])
    teacher = load_teacher(TEACHER)
    cfg = AugmentConfig(1, 0.0, 0.0, p_neighbour=0.5, neighbours=4)
    (out,) = TeacherLabeller(teacher, teacher_tok, cfg, np.asarray(cache.ids), id_map, False, neighbours=table).label(
        batch, np.random.default_rng(0), 1)
    old, new = batch["t_ids"].numpy(), out["t_ids"].numpy()
    assert (old != new).any()
    assert all(new[r, c] in table[old[r, c]] for r, c in zip(*np.nonzero(old != new)))
    with pytest.raises(ValueError, match="neighbour table"):
        TeacherLabeller(teacher, teacher_tok, cfg, np.asarray(cache.ids), id_map, False)


@needs_teacher
@pytest.mark.parametrize("recursive,relu_method,attention", [(False, "remez", "inhibitor"), (True, "remez", "inhibitor"),
                                                          (False, "weighted", "inhibitor"), (False, "weighted", "dot")])
def test_poly_calibration_covers_what_the_polynomials_see(tiny_setup, cached_student_config, recursive, relu_method,
                                                          attention) -> None:
    """After calibration in poly form, every input the poly student feeds a fit lies inside its interval
    (weighted fits: made during calibration, at the final bounds; dot-product attention's ReLU too, which
    in exact form only observes its scores)."""
    cache, teacher_tok, tok, _ = tiny_setup
    torch.manual_seed(1)
    student = Student(cached_student_config(vocab_size=tok.get_vocab_size(), n_layers=2, abs_poly=PolySpec(4),
                                            relu_poly=PolySpec(4, relu_method), recursive=recursive,
                                            attention=attention))
    with torch.no_grad():  # large embeddings: activations far from the exact-form ones after a crude fit
        student.word.weight.mul_(4.0)
    batches = Batches(cache, teacher_to_student_ids(teacher_tok, tok), 16, 0, need_attn=False)
    bounds = calibrate(student, batches, 4, 0.1, poly_batches=4)
    student.set_form("poly")
    for rows in batches.order(epoch=10_000)[:4]:
        b = batches.collate(rows)
        student(b["ids"], b["mask"])
    ratios = {n: float(m.max_ratio) for n, m in student.nonlinearities()}
    assert max(ratios.values()) <= (1 + 1e-3) / 1.1, ratios  # the margin, up to float32 and the last sweep
    assert set(bounds) == set(ratios)
    weighted = [m for _, m in student.nonlinearities() if m.spec.weighted]
    assert len(weighted) == (4 if relu_method == "weighted" else 0)  # two attention and two FFN ReLUs either way
    assert all(m.fit.method == "weighted" and m.density is None for m in weighted)


@needs_teacher
def test_longest_batches_and_calibration_on_them(tiny_setup, cached_student_config) -> None:
    """`longest` batches hold the longest rows, longest first; bounds calibrated there cover them."""
    cache, teacher_tok, tok, _ = tiny_setup
    batches = Batches(cache, teacher_to_student_ids(teacher_tok, tok), 8, 0, need_attn=False)
    rows = np.concatenate(batches.longest(2))
    lengths = batches.lengths
    assert len(rows) == 16 and (np.diff(lengths[rows]) <= 0).all() and lengths[rows].min() >= np.sort(lengths)[-16]
    torch.manual_seed(0)
    student = Student(cached_student_config(vocab_size=tok.get_vocab_size(), abs_poly=PolySpec(6), relu_poly=PolySpec(6)))
    calibrate(student, batches, 2, 0.1, poly_batches=2, longest=True)
    student.set_form("poly").eval()
    for part in batches.longest(2):
        b = batches.collate(part)
        student(b["ids"], b["mask"])
    assert max(float(m.max_ratio) for _, m in student.nonlinearities()) <= (1 + 1e-3) / 1.1


@needs_teacher
def test_calibration_on_sentence_length_rows_sees_only_them(tiny_setup, cached_student_config) -> None:
    """`order(epoch, min_length)` is the epoch's shuffle restricted to rows of at least min_length pieces
    (0: the training order itself); calibration with min_length forwards only those rows, and its bounds
    cover them in poly form."""
    cache, teacher_tok, tok, _ = tiny_setup
    batches = Batches(cache, teacher_to_student_ids(teacher_tok, tok), 8, 0, need_attn=False)
    lengths = batches.lengths
    cut = int(np.median(lengths)) + 1
    assert all(np.array_equal(a, b) for a, b in zip(batches.order(3, 0), batches.order(3)))
    long_rows = np.concatenate(batches.order(3, cut))
    assert np.array_equal(np.sort(long_rows), np.flatnonzero(lengths >= cut))
    torch.manual_seed(0)
    student = Student(cached_student_config(vocab_size=tok.get_vocab_size(), abs_poly=PolySpec(6),
                                            relu_poly=PolySpec(6, "weighted")))
    seen: list[int] = []
    hook = student.register_forward_pre_hook(lambda _, args: seen.extend(args[1].sum(1).tolist()))
    n = len(batches.order(10_000, cut))
    calibrate(student, batches, n, 0.1, poly_batches=n, min_length=cut)
    hook.remove()
    assert seen and min(seen) >= cut
    student.set_form("poly").eval()
    for part in batches.order(10_000, cut):
        b = batches.collate(part)
        student(b["ids"], b["mask"])
    assert max(float(m.max_ratio) for _, m in student.nonlinearities()) <= (1 + 1e-3) / 1.1
    with pytest.raises(ValueError, match="calibration_min_length"):
        DistillConfig.from_dict({"calibration_min_length": 65})


@needs_teacher
def test_fits_from_long_rows_bounds_from_every_row(tiny_setup, cached_student_config) -> None:
    """With ``fit_min_length``, the forwards that collect the weighted fits' histograms see only rows of
    at least that many pieces, the others (the bounds') rows of every length, and the bounds cover every
    row in poly form."""
    cache, teacher_tok, tok, _ = tiny_setup
    batches = Batches(cache, teacher_to_student_ids(teacher_tok, tok), 8, 0, need_attn=False)
    cut = int(np.median(batches.lengths)) + 1
    torch.manual_seed(0)
    student = Student(cached_student_config(vocab_size=tok.get_vocab_size(), abs_poly=PolySpec(6),
                                            relu_poly=PolySpec(6, "weighted")))
    weighted = [m for _, m in student.nonlinearities() if m.spec.weighted]
    fitting: list[int] = []
    bounding: list[int] = []

    def record(_, args) -> None:
        lengths = args[1].sum(1).tolist()
        (fitting if any(m.density is not None for m in weighted) else bounding).extend(lengths)

    hook = student.register_forward_pre_hook(record)
    n = len(batches.order(10_000, cut))
    calibrate(student, batches, n, 0.1, poly_batches=n, fit_min_length=cut)
    hook.remove()
    assert fitting and min(fitting) >= cut
    assert bounding and min(bounding) < cut
    student.set_form("poly").eval()
    for part in batches.order(10_000)[:n]:
        b = batches.collate(part)
        student(b["ids"], b["mask"])
    assert max(float(m.max_ratio) for _, m in student.nonlinearities()) <= (1 + 1e-3) / 1.1
    with pytest.raises(ValueError, match="calibration_fit_min_length"):
        DistillConfig.from_dict({"calibration_fit_min_length": -1})
    with pytest.raises(ValueError, match="calibration_min_length"):
        DistillConfig.from_dict({"calibration_min_length": None})


@needs_teacher
def test_distill_then_finetune_a_trained_student(tmp_path, pre_recipe_config) -> None:
    """`distill` end to end on a tiny config; `init` then runs only the poly phase and keeps vocabulary and bounds."""
    common = {"limit": 64, "batch_size": 32, "threads": 1}
    cfg = pre_recipe_config({
        **common, "student": {"d_model": 32, "n_heads": 2, "d_ff": 48, "abs_poly": {"degree": 6}, "relu_poly": {"degree": 6}},
        "embedding_init": "table", "embedding_tied": True, "epochs_exact": 1, "epochs_poly": 0.5, "calibration_batches": 2,
        "poly_calibration_batches": 1, "augment_poly": {"copies": 1, "p_mask": 0.2, "p_replace": 0.0}})
    first = distill(cfg, TEACHER, default_data_dir(), tmp_path / "a", tmp_path / "cache")
    ft = pre_recipe_config({**common, "epochs_poly": 1,
                            "augment": {"copies": 1, "concat": 1.0, "p_neighbour": 0.3, "neighbours": 3}})
    second = distill(ft, TEACHER, default_data_dir(), tmp_path / "b", tmp_path / "cache", init=tmp_path / "a")
    with pytest.raises(ValueError, match="embedding_tied"):
        distill(pre_recipe_config({**common, "embedding_tied": True}), TEACHER, default_data_dir(),
                tmp_path / "c", tmp_path / "cache", init=tmp_path / "a")

    phases = {json.loads(line)["phase"] for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()}
    assert phases == {"poly"} and second["init"] == str(tmp_path / "a") and "bounds" not in second
    assert second["dev_poly_before_finetune"] == first["dev_poly_float16"]  # it started from the saved student
    a, b = load_student(tmp_path / "a"), load_student(tmp_path / "b")
    assert (tmp_path / "a" / "tokenizer.json").read_text() == (tmp_path / "b" / "tokenizer.json").read_text()
    assert a.cfg == b.cfg
    assert [float(m.bound) for _, m in a.nonlinearities()] == [float(m.bound) for _, m in b.nonlinearities()]
    assert not torch.equal(a.layers[0].ffn.lin1.weight, b.layers[0].ffn.lin1.weight)


def test_param_groups_scale_the_relative_bias_only(tiny_student_config) -> None:
    """Every trainable parameter is in exactly one group; the relative biases get the multiplier and no decay."""
    student = Student(tiny_student_config(n_heads=4, n_layers=2, rel_bias=True))
    groups = param_groups(student, 5.0)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in student.parameters() if p.requires_grad)
    rel = [g for g in groups if g["lr_scale"] == 5.0]
    assert len(rel) == 1 and rel[0]["weight_decay"] == 0.0
    assert {id(p) for p in rel[0]["params"]} == {id(layer.attn.rel_bias) for layer in student.layers}
    assert len(param_groups(Student(tiny_student_config()), 5.0)) == 1
    with pytest.raises(ValueError, match="rel_bias_lr"):
        DistillConfig.from_dict({"rel_bias_lr": -1.0})


@needs_teacher
def test_logit_teacher_replaces_the_training_logits(tmp_path, tiny_setup, pre_recipe_config) -> None:
    """A second teacher's cached logits (config logit_teacher) are what the batches carry; distill refuses
    to start, naming the command, while they are not cached."""
    sentences, _ = load_sst2(default_data_dir(), "train")
    cfg = pre_recipe_config({"limit": 64, "batch_size": 32, "threads": 1, "logit_teacher": str(TEACHER)})
    with pytest.raises(ValueError, match="he-inhibitor teacher-logits"):
        distill(cfg, TEACHER, default_data_dir(), tmp_path / "a", tmp_path / "cache", logit_cache=tmp_path / "logits")
    cache = LogitCache(tmp_path / "logits", TEACHER)
    assert cache.add(sentences[:64]) == len(set(sentences[:64]))
    other = cache.get(sentences[:64]).numpy() + 1.0  # any [rows, labels] array stands in for another teacher
    teacher_cache, teacher_tok, tok, _ = tiny_setup
    id_map = teacher_to_student_ids(teacher_tok, tok)
    batches = Batches(teacher_cache, id_map, 16, 0, need_attn=False, logits=other)
    rows = batches.order(0)[0]
    assert torch.equal(batches.collate(rows)["t_logits"], torch.from_numpy(other[rows]))
    with pytest.raises(ValueError, match="teacher logits for"):
        Batches(teacher_cache, id_map, 16, 0, need_attn=False, logits=other[:3])


def test_a_copy_bank_config_is_checked() -> None:
    """cached_copies needs a logit teacher, as many bank copies as a step draws, and one augmentation."""
    with pytest.raises(ValueError, match="logit_teacher"):
        DistillConfig.from_dict({"cached_copies": 2, "logit_teacher": None})
    with pytest.raises(ValueError, match="reuse"):
        DistillConfig.from_dict({"cached_copies": 1})
    with pytest.raises(ValueError, match="augment_poly"):
        DistillConfig.from_dict({"cached_copies": 2, "augment_poly": {"copies": 1}})
    with pytest.raises(ValueError, match=">= 0"):
        DistillConfig.from_dict({"cached_copies": -1})


@needs_teacher
def test_a_copy_bank_holds_the_logit_teachers_live_outputs_and_feeds_distill(tmp_path, pre_recipe_config) -> None:
    """`he-inhibitor teacher-copies` makes the recipe's copies once (one seed for every run) and caches the
    logit teacher's logits for each: they equal the teacher's live logits on the copy's text (bfloat16
    against float32, same labels). A rebuild makes the same bank without running the teacher again;
    a step draws distinct copies of each row; distill refuses to start without the bank, then trains on it.
    The MiniLM teacher stands in for MPNet as the logit teacher."""
    cfg = pre_recipe_config({
        "limit": 64, "batch_size": 32, "threads": 1, "logit_teacher": str(TEACHER), "cached_copies": 2,
        "student": {"d_model": 32, "n_heads": 2, "d_ff": 48, "abs_poly": {"degree": 6}, "relu_poly": {"degree": 6}},
        "augment": {"copies": 2, "p_mask": 0.15, "p_replace": 0.15, "concat": 0.75}, "epochs_exact": 1,
        "epochs_poly": 0, "calibration_batches": 1, "poly_calibration_batches": 1})
    data, cache_dir, logits_dir = default_data_dir(), tmp_path / "cache", tmp_path / "logits"
    LogitCache(logits_dir, TEACHER, precision=PRECISION).add(load_sst2(data, "train")[0][:64])  # the phrases' own
    with pytest.raises(CopyBankError, match="he-inhibitor teacher-copies"):
        distill(cfg, TEACHER, data, tmp_path / "a", cache_dir, logit_cache=logits_dir)

    path = build_copies(cfg, TEACHER, data, cache_dir, logits_dir, progress=False)
    bank = CopyBank(path, 64)
    flat_ids = bank.ids.reshape(128, -1).astype(np.int64)
    texts = decode_rows(load_unpadded(TEACHER), flat_ids, bank.lengths.reshape(-1), "[MASK]")
    assert sum(t in set(load_sst2(data, "train")[0][:64]) for t in texts) < 8  # copies, not the phrases
    live = logits(load_teacher(TEACHER), load_hf_tokenizer(TEACHER), texts)
    cached = torch.from_numpy(bank.logits.reshape(128, -1))
    torch.testing.assert_close(cached, live, atol=0.1, rtol=0.05)
    assert torch.equal(cached.argmax(1)[live.diff(dim=1).abs()[:, 0] > 0.2], live.argmax(1)[live.diff(dim=1).abs()[:, 0] > 0.2])

    path.unlink()
    assert LogitCache(logits_dir, TEACHER, precision=PRECISION).missing(texts) == []  # nothing for the teacher to redo
    again = CopyBank(build_copies(cfg, TEACHER, data, cache_dir, logits_dir, progress=False), 64)
    for a, b in ((bank.ids, again.ids), (bank.lengths, again.lengths), (bank.logits, again.logits)):
        np.testing.assert_array_equal(a, b)

    rows = np.arange(5, 37)
    first, second = bank.draw(rows, np.random.default_rng(3), 2)
    for r, row in enumerate(rows):
        got = {tuple(first[0][r, : first[1][r]]), tuple(second[0][r, : second[1][r]])}
        assert got == {tuple(bank.ids[row, j, : bank.lengths[row, j]]) for j in range(2)}
    with pytest.raises(CopyBankError, match="bank of 2"):
        bank.draw(rows, np.random.default_rng(3), 3)

    state = distill(cfg, TEACHER, data, tmp_path / "a", cache_dir, logit_cache=logits_dir)
    assert 0 < state["dev_poly_float16"] < 1


@needs_teacher
def test_two_runs_building_one_cache_at_once_both_get_it(tmp_path) -> None:
    """Runs started together build the same teacher cache side by side, each in a directory of its own;
    the first to finish publishes it and the other loads that one (no run writes into another's files)."""
    sentences, labels = load_sst2(default_data_dir(), "train")
    sentences, labels = sentences[:24], labels[:24]
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda _: build_cache(TEACHER, sentences, labels, tmp_path, max_len=64), range(2))
    published = list(tmp_path.iterdir())
    assert len(published) == 1 and ".partial" not in published[0].name  # the loser's copy is gone
    np.testing.assert_array_equal(np.asarray(a.hidden), np.asarray(b.hidden))
    np.testing.assert_array_equal(a.logits, b.logits)


def test_set_degree_saves_a_student_that_loads_at_the_new_degree(tmp_path, tiny_student_config) -> None:
    """`he-inhibitor calibrate --degree D`: every fit and the saved config at D, so the student loads again;
    an odd, zero or non-numeric degree is refused by the command line."""
    from he_inhibitor.cli import build_parser
    from he_inhibitor.model.student import save_student
    from he_inhibitor.recalibrate import set_degree

    student = Student(tiny_student_config(abs_poly=PolySpec(14, "weighted"), relu_poly=PolySpec(14, "weighted")))
    set_degree(student, 6)
    assert {m.spec for _, m in student.nonlinearities()} == {PolySpec(6, "weighted")}
    save_student(student, tmp_path)
    loaded = load_student(tmp_path)
    assert (loaded.cfg.abs_poly.degree, loaded.cfg.relu_poly.degree) == (6, 6)
    assert {tuple(m.poly_coeffs.shape) for _, m in loaded.nonlinearities()} == {(7,)}
    for bad in ("7", "0", "six"):
        argv = ["calibrate", "--model", "m", "--teacher", "t", "--out", "o", "--degree", bad]
        with pytest.raises(SystemExit):
            build_parser(argv).parse_args(argv)


def test_an_unfitted_checkpoint_loads_at_any_degree_a_fitted_one_only_at_its_own(tiny_student_config) -> None:
    """An exact-phase checkpoint's coefficients are zeros (degree chosen at calibration), so a run at another
    degree can resume from it; fitted coefficients of another degree are refused, not silently dropped."""
    six = Student(tiny_student_config(abs_poly=PolySpec(6, "weighted"), relu_poly=PolySpec(6, "weighted")))
    fourteen = Student(tiny_student_config(abs_poly=PolySpec(14, "weighted"), relu_poly=PolySpec(6, "weighted")))
    fourteen.load_state_dict(six.state_dict())
    assert all(not m.poly_coeffs.any() for _, m in fourteen.nonlinearities())
    fitted = six.state_dict()
    for k in fitted:
        if k.endswith("abs_fn.poly_coeffs"):
            fitted[k] = torch.ones_like(fitted[k])
    with pytest.raises(RuntimeError, match="size mismatch"):
        fourteen.load_state_dict(fitted)


@needs_teacher
def test_a_piece_after_a_mask_is_decoded_as_a_word_without_its_hashes() -> None:
    """A copy masked inside a word ("un [MASK] ##able") reaches the logit teacher as "un <mask> able",
    not with WordPiece's "##" written out."""
    wp = load_unpadded(TEACHER)
    enc = wp.encode("an unwatchable , overlong mess")
    ids = np.array([enc.ids])
    ids[0, enc.tokens.index("##watch")] = wp.token_to_id("[MASK]")
    assert decode_rows(wp, ids, np.array([len(enc.ids)]), "<mask>") == ["an un <mask> able, overlong mess"]


def test_an_unreadable_or_mismatched_bank_is_refused(tmp_path) -> None:
    """A damaged bank file, or one made for another training set, is refused by name, saying what to run."""
    bad = tmp_path / "copies-x.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CopyBankError, match="not a readable copy bank.*teacher-copies"):
        CopyBank(bad, 4)
    np.savez(bad, ids=np.zeros((3, 2, 5), np.uint16), lengths=np.full((3, 2), 5, np.int16),
             logits=np.zeros((3, 2, 2), np.float32))
    with pytest.raises(CopyBankError, match="a bank of 3 rows for 4 training rows"):
        CopyBank(bad, 4)
    np.savez(bad, ids=np.zeros((4, 2, 5), np.uint16))
    with pytest.raises(CopyBankError, match="not a readable copy bank"):
        CopyBank(bad, 4)


@settings(max_examples=40, deadline=None)
@given(st.floats(0.05, 0.999), st.lists(st.lists(st.floats(-10, 10), min_size=3, max_size=3), min_size=1, max_size=30))
def test_weight_average_follows_its_recurrence(decay, values) -> None:
    """Each update moves the shadow by (1 - d_t) towards the parameter, d_t = min(decay, (1 + t) / (10 + t));
    constant weights are their own average, and copy_to_params writes the average into the weights."""
    p = torch.nn.Parameter(torch.tensor(values[0], dtype=torch.float64))
    average = WeightAverage([p], decay)
    expected = np.array(values[0])
    for t, v in enumerate(values):
        with torch.no_grad():
            p.copy_(torch.tensor(v, dtype=torch.float64))
        average.update(t)
        d = min(decay, (1 + t) / (10 + t))
        expected = d * expected + (1 - d) * np.array(v)
    np.testing.assert_allclose(average.shadow[0].numpy(), expected, rtol=1e-9, atol=1e-9)
    still = WeightAverage([p], decay)
    for t in range(5):
        still.update(t)
    assert torch.equal(still.shadow[0], p.detach())
    average.copy_to_params()
    np.testing.assert_allclose(p.detach().numpy(), expected, rtol=1e-9, atol=1e-9)


def test_weight_average_refuses_bad_decay_and_mismatched_shadows() -> None:
    p = torch.nn.Parameter(torch.zeros(3))
    for bad in (0.0, 1.0, -0.5, float("nan")):
        with pytest.raises(ValueError, match="decay"):
            WeightAverage([p], bad)
    with pytest.raises(ValueError, match="does not match"):
        WeightAverage([p], 0.9).load_state_dict([torch.zeros(4)])
    with pytest.raises(ValueError, match="ema"):
        DistillConfig(ema=1.0)


@needs_teacher
def test_an_averaged_phase_resumes_to_the_same_weights_and_ends_on_the_average(tmp_path, tiny_setup, cached_student_config) -> None:
    """A phase with ema, stopped after a checkpoint and resumed, ends on the same weights as one run
    straight through (the average is in the checkpoint); its end replaces the weights by the average
    and records the raw weights' accuracy; an average-free checkpoint is refused."""
    cache, teacher_tok, tok, _ = tiny_setup
    scfg = cached_student_config(vocab_size=tok.get_vocab_size())
    cfg = DistillConfig(student=scfg, augment=AugmentConfig(copies=0), ema=0.8, checkpoint_every=2, seed=0)
    id_map = teacher_to_student_ids(teacher_tok, tok)

    def phase(out: Path, stop_at: int | None = None) -> tuple[Distiller, dict, list[torch.Tensor]]:
        torch.manual_seed(0)
        dist = Distiller(Student(scfg), 384, teacher_layers("uniform", 2, 6))
        batches = Batches(cache, id_map, 16, 0, need_attn=False)
        raw: list[torch.Tensor] = []
        calls = iter(range(10_000))
        collate = batches.collate

        def collate_until(rows):
            if next(calls) == stop_at:
                raise KeyboardInterrupt
            return collate(rows)

        def dev() -> float:
            raw.extend(p.detach().clone() for p in dist.parameters())
            return 0.5

        batches.collate = collate_until
        state: dict = {}
        with open(out / "log.jsonl", "a") as log:
            run_phase("exact", dist, batches, cfg, 1, 1e-2, out, log, state, dev)
        return dist, state, raw

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight, state, raw = phase(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        phase(tmp_path / "b", stop_at=3)
    resumed, _, _ = phase(tmp_path / "b")
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    assert set(state) == {"dev_exact_raw", "dev_exact"}
    moved = [not torch.equal(p, r) for p, r in zip(straight.parameters(), raw[: len(list(straight.parameters()))])]
    assert any(moved)  # the weights at the end are the average, not the last step's
    saved = torch.load(tmp_path / "a" / "checkpoint-exact.pt", weights_only=True)
    for s, p in zip(saved["average"], straight.parameters()):
        assert torch.equal(s, p)
    torch.save({k: v for k, v in saved.items() if k != "average"}, tmp_path / "a" / "checkpoint-exact.pt")
    with pytest.raises(ValueError, match="without a weight average"):
        phase(tmp_path / "a")
