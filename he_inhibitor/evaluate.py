"""``he-inhibitor eval``: accuracy of a student on any ``sentence<TAB>label`` file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from he_inhibitor.data import load_sst2_tsv
from he_inhibitor.model.nonlinear import FORMS

SHIPPED_STUDENT = Path(__file__).parent / "assets" / "student"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="accuracy of a student on a TSV file")
    p.add_argument("--model", type=Path, default=SHIPPED_STUDENT, help="student directory (default: the shipped one)")
    p.add_argument("--data", type=Path, required=True, help="TSV with header sentence<TAB>label")
    p.add_argument("--form", choices=FORMS, default="poly", help="exact non-linearities or the circuit's polynomials")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from he_inhibitor.distill import evaluate
    from he_inhibitor.model.student import load_student
    from he_inhibitor.vocab import load_tokenizer

    try:
        sentences, labels = load_sst2_tsv(args.data)
        student = load_student(args.model).set_form(args.form)
        tokenizer = load_tokenizer(args.model)
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {err}")
    acc = evaluate(student, tokenizer, sentences, labels)
    if args.json:
        print(json.dumps({"accuracy": acc, "n": len(sentences), "form": args.form}))
    else:
        print(f"accuracy {acc:.4f} on {len(sentences)} sentences ({args.form} form, model {args.model})")
    return 0
