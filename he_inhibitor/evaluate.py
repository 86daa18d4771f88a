"""``he-inhibitor eval``: accuracy of a student (or the teacher) on any ``sentence<TAB>label`` file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from he_inhibitor.data import load_sst2_tsv
from he_inhibitor.model.nonlinear import FORMS
from he_inhibitor.model.predict import predict
from he_inhibitor.model.student import Student, load_student
from he_inhibitor.paths import SHIPPED_STUDENT
from he_inhibitor.teacher import load_teacher, logits
from he_inhibitor.teacher import load_tokenizer as load_teacher_tokenizer
from he_inhibitor.vocab import encode, load_tokenizer


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="accuracy of a student on a TSV file")
    p.add_argument("--model", type=Path, default=SHIPPED_STUDENT,
                   help="student directory (default: the shipped one), or a teacher directory for reference")
    p.add_argument("--data", type=Path, required=True, help="TSV with header sentence<TAB>label")
    p.add_argument("--form", choices=FORMS, default="poly", help="exact non-linearities or the circuit's polynomials")
    p.add_argument("--ranges", action="store_true",
                   help="also count sentences that push a polynomial input beyond its bound B (one pass each)")
    p.add_argument("--by-length", type=_edges, default=None, metavar="EDGES",
                   help="also accuracy per sentence length in word pieces, [CLS]/[SEP] included, "
                        "split at comma-separated EDGES (e.g. 12,20,28,36)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run)


def _edges(text: str) -> list[int]:
    try:
        edges = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"EDGES must be comma-separated integers, not {text!r}") from None
    if not edges or edges != sorted(set(edges)) or edges[0] < 1:
        raise argparse.ArgumentTypeError(f"EDGES must be positive and strictly increasing, not {text!r}")
    return edges


TEACHER_TYPES = ("bert", "mpnet")  # the bases `he-inhibitor teacher` fine-tunes (teacher_base.py)


def is_teacher(model_dir: Path) -> bool:
    """A ``he-inhibitor teacher`` output (a BERT or MPNet classifier), not a student."""
    try:
        return json.loads((model_dir / "config.json").read_text()).get("model_type") in TEACHER_TYPES
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def predictions(model_dir: Path, form: str, sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Predicted labels and lengths in word pieces ([CLS], [SEP] included) of a student or the teacher.

    A sentence longer than the student's positions is cut to them (first
    max_len - 1 pieces and [SEP]), as the service does beyond its largest
    bucket, so one long sentence never stops an evaluation; `truncated_count`
    says how many were.
    """
    if is_teacher(model_dir):
        tok = load_teacher_tokenizer(model_dir)
        labels = logits(load_teacher(model_dir), tok, sentences).argmax(-1).numpy()
        return labels, np.array([len(ids) for ids in tok(sentences)["input_ids"]])
    student, tok = load_student(model_dir).set_form(form), load_tokenizer(model_dir)
    return (predict(student, tok, sentences, truncate=True),
            np.array([len(e.ids) for e in tok.encode_batch(sentences)]))


def truncated_count(model_dir: Path, lengths: np.ndarray) -> int:
    """Sentences longer than a student's max_len (the teacher takes 512: none)."""
    if is_teacher(model_dir):
        return 0
    return int((lengths > load_student(model_dir).cfg.max_len).sum())


def by_length(correct: np.ndarray, lengths: np.ndarray, edges: list[int]) -> list[dict]:
    """Accuracy in each length bin [lo, hi) cut at ``edges``; empty bins are kept with n = 0."""
    bounds = [0, *edges, None]
    rows = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        k = (lengths >= lo) & (lengths < hi if hi is not None else True)
        rows.append({"tokens": f"{lo}-{hi - 1}" if hi is not None else f">={lo}", "n": int(k.sum()),
                     "accuracy": float(correct[k].mean()) if k.any() else None})
    return rows


def range_report(student: Student, tokenizer, sentences: list[str]) -> dict:
    """Per sentence, the largest |input| / B of any non-linearity; how many exceed 1 and the worst.

    Beyond B the polynomial the circuit evaluates is no longer an approximation:
    such sentences get unreliable logits, in plain and encrypted form alike.
    """
    student.eval()
    worst = []
    with torch.no_grad():
        for s in sentences:
            for _, m in student.nonlinearities():
                m.max_ratio.zero_()
            ids, mask = encode(tokenizer, [s], student.cfg.max_len, truncate=True)
            student(torch.from_numpy(ids), torch.from_numpy(mask))
            worst.append(max(float(m.max_ratio) for _, m in student.nonlinearities()))
    return {"beyond_bound": sum(w > 1.0 for w in worst), "max_input_ratio": max(worst),
            "worst_sentences": sorted(range(len(worst)), key=lambda i: -worst[i])[:5]}


def _run(args: argparse.Namespace) -> int:
    teacher = is_teacher(args.model)
    if teacher and args.ranges:
        raise SystemExit("error: --ranges needs a student: the teacher has no polynomial inputs")
    try:
        sentences, labels = load_sst2_tsv(args.data)
        preds, lengths = predictions(args.model, args.form, sentences)
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {err}")
    correct = preds == np.asarray(labels)
    form = "teacher" if teacher else args.form
    out = {"accuracy": float(correct.mean()), "n": len(sentences), "form": form,
           "truncated": truncated_count(args.model, lengths)}
    if args.by_length:
        out["by_length"] = by_length(correct, lengths, args.by_length)
    if args.ranges:
        out.update(range_report(load_student(args.model).set_form(args.form), load_tokenizer(args.model), sentences))
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"accuracy {out['accuracy']:.4f} on {len(sentences)} sentences ({form} form, model {args.model}); "
          f"{out['truncated']} truncated to the model's length")
    for row in out.get("by_length", []):
        acc = "-" if row["accuracy"] is None else f"{row['accuracy']:.4f}"
        print(f"  {row['tokens']:>7} word pieces: {acc} on {row['n']}")
    if args.ranges:
        print(f"{out['beyond_bound']} sentences push a polynomial input beyond its bound; "
              f"largest |x| / B = {out['max_input_ratio']:.3g} (sentences {out['worst_sentences']})")
    return 0
