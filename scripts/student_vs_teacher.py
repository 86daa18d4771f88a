"""Where a student and its teacher disagree on dev: counts, and the sentences only the teacher gets right.

    python scripts/student_vs_teacher.py [--model DIR] [--teacher DIR] [--data FILE.tsv] [--form poly|exact]
        [--show 20] [--json FILE]

Why: accuracy alone does not say what the student lacks. The sentences the
teacher classifies correctly and the student does not are what distillation
has failed to transfer; reading them says whether the gap is polynomial
error, truncation or the student's capacity.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from he_inhibitor.data import load_sst2_tsv
from he_inhibitor.evaluate import predictions
from he_inhibitor.paths import SHIPPED_STUDENT


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=SHIPPED_STUDENT)
    ap.add_argument("--teacher", type=Path, default=Path("../shared/models/minilm-l6-sst2"))
    ap.add_argument("--data", type=Path, default=Path("../shared/data/sst2/dev.tsv"))
    ap.add_argument("--form", choices=("poly", "exact"), default="poly")
    ap.add_argument("--show", type=int, default=20, help="sentences to print, drawn with seed 0")
    ap.add_argument("--json", type=Path, help="write the counts and every teacher-only sentence here")
    args = ap.parse_args()
    try:
        sentences, labels = load_sst2_tsv(args.data)
        with torch.no_grad():
            s_pred, _ = predictions(args.model, args.form, sentences)
            t_pred, _ = predictions(args.teacher, args.form, sentences)
    except (FileNotFoundError, ValueError, OSError) as err:
        raise SystemExit(f"error: {err}")
    y = np.asarray(labels)
    teacher_only = np.flatnonzero((t_pred == y) & (s_pred != y))
    out = {
        "n": len(y), "student_accuracy": float((s_pred == y).mean()), "teacher_accuracy": float((t_pred == y).mean()),
        "agreement": float((s_pred == t_pred).mean()), "teacher_only_right": len(teacher_only),
        "student_only_right": int(((s_pred == y) & (t_pred != y)).sum()), "form": args.form,
        "teacher_only": [{"label": int(y[i]), "sentence": sentences[i]} for i in teacher_only],
    }
    print(json.dumps({k: v for k, v in out.items() if k != "teacher_only"}))
    rng = np.random.default_rng(0)
    for i in rng.permutation(teacher_only)[: args.show]:
        print(f"{y[i]}  {sentences[i]}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
