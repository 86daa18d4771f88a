"""How much each model relies on word order: dev accuracy with every sentence's words shuffled.

    python scripts/word_order.py [--models DIR ...] [--data FILE.tsv] [--form poly|exact] [--seeds 3] [--json FILE]

Why: a model that reads word order (negation, "but", concessions) loses
accuracy when the words of each sentence are permuted; a bag-of-words model
does not. The drop measures how much of a model's accuracy comes from order.
Each seed draws one permutation per sentence (the same for every model), and
the JSON keeps each seed's accuracy.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import torch

from he_inhibitor.data import load_sst2_tsv
from he_inhibitor.evaluate import predictions
from he_inhibitor.paths import SHIPPED_STUDENT


def shuffled(sentences: list[str], seed: int) -> list[str]:
    """Each sentence's whitespace-separated words in a random order (one ``random.Random(seed)`` stream)."""
    rng = random.Random(seed)
    out = []
    for s in sentences:
        words = s.split()
        rng.shuffle(words)
        out.append(" ".join(words))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, nargs="+",
                    default=[Path("../shared/models/minilm-l6-sst2"), SHIPPED_STUDENT])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/sst2/dev.tsv"))
    ap.add_argument("--form", choices=("poly", "exact"), default="poly")
    ap.add_argument("--seeds", type=int, default=3, help="permutations per sentence")
    ap.add_argument("--json", type=Path, help="write the accuracies here")
    args = ap.parse_args()
    try:
        sentences, labels = load_sst2_tsv(args.data)
    except (FileNotFoundError, ValueError, OSError) as err:
        raise SystemExit(f"error: {err}")
    y = np.asarray(labels)
    rows = []
    for model in args.models:
        try:
            with torch.no_grad():
                ordered = float((predictions(model, args.form, sentences)[0] == y).mean())
                mixed = [float((predictions(model, args.form, shuffled(sentences, seed))[0] == y).mean())
                         for seed in range(args.seeds)]
        except (FileNotFoundError, ValueError, OSError) as err:
            raise SystemExit(f"error: {model}: {err}")
        rows.append({"model": str(model), "accuracy": ordered, "shuffled": mixed,
                     "shuffled_mean": float(np.mean(mixed)), "drop": ordered - float(np.mean(mixed))})
        print(f"{model}: {ordered:.4f} in order, {np.mean(mixed):.4f} shuffled "
              f"({', '.join(f'{a:.4f}' for a in mixed)}), drop {rows[-1]['drop']:.4f}")
    if args.json:
        args.json.write_text(json.dumps({"data": str(args.data), "form": args.form, "n": len(y), "rows": rows},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
