"""Dev accuracy by sentence length, one line per `he-inhibitor eval --by-length --json` file.

    python scripts/plot_by_length.py docs/distillation/by_length_teacher.json \
        docs/distillation/by_length_shipped.json ... --out docs/distillation/by_length.png

Each file's name after ``by_length_`` labels its line. Error bars are one
binomial standard error per bucket: with 72-247 sentences a bucket, most
differences between students are inside them, which is the point of drawing them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        buckets = data["by_length"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise SystemExit(f"error: {path}: not an `eval --by-length --json` output ({err})")
    return {"label": path.stem.removeprefix("by_length_"), "accuracy": data["accuracy"], "buckets": buckets}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [load(p) for p in args.files]
    names = [b["tokens"] for b in runs[0]["buckets"]]
    if any([b["tokens"] for b in r["buckets"]] != names for r in runs):
        raise SystemExit("error: the files use different length buckets")
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    x = np.arange(len(names))
    for i, r in enumerate(runs):
        acc = np.array([b["accuracy"] for b in r["buckets"]])
        n = np.array([b["n"] for b in r["buckets"]])
        se = np.sqrt(acc * (1 - acc) / n)
        ax.errorbar(x + (i - (len(runs) - 1) / 2) * 0.06, acc, yerr=se, marker="o", capsize=3,
                    label=f"{r['label']} ({r['accuracy']:.4f})")
    ax.axhline(0.85, color="grey", ls=":", lw=1)
    ax.set_xticks(x, names)
    ax.set_xlabel("sentence length (word pieces, [CLS] and [SEP] included)")
    ax.set_ylabel("SST-2 dev accuracy")
    ax.set_title("Accuracy by length (poly form for students; +-1 standard error)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
