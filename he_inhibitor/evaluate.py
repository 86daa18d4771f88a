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
    p.add_argument("--ranges", action="store_true",
                   help="also count sentences that push a polynomial input beyond its bound B (one pass each)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run)


def range_report(student, tokenizer, sentences: list[str]) -> dict:
    """Per sentence, the largest |input| / B of any non-linearity; how many exceed 1 and the worst.

    Beyond B the polynomial the circuit evaluates is no longer an approximation:
    such sentences get unreliable logits, in plain and encrypted form alike.
    """
    import torch

    from he_inhibitor.vocab import encode

    student.eval()
    worst = []
    with torch.no_grad():
        for s in sentences:
            for _, m in student.nonlinearities():
                m.max_ratio.zero_()
            ids, mask = encode(tokenizer, [s], student.cfg.max_len)
            student(torch.from_numpy(ids), torch.from_numpy(mask))
            worst.append(max(float(m.max_ratio) for _, m in student.nonlinearities()))
    return {"beyond_bound": sum(w > 1.0 for w in worst), "max_input_ratio": max(worst),
            "worst_sentences": sorted(range(len(worst)), key=lambda i: -worst[i])[:5]}


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
    out = {"accuracy": acc, "n": len(sentences), "form": args.form}
    if args.ranges:
        out.update(range_report(student, tokenizer, sentences))
    if args.json:
        print(json.dumps(out))
    else:
        print(f"accuracy {acc:.4f} on {len(sentences)} sentences ({args.form} form, model {args.model})")
        if args.ranges:
            print(f"{out['beyond_bound']} sentences push a polynomial input beyond its bound; "
                  f"largest |x| / B = {out['max_input_ratio']:.3g} (sentences {out['worst_sentences']})")
    return 0
