"""Mean token norm of each layer's attention output, by dev sentence length.

    python scripts/attention_norm_by_length.py [--model DIR] [--data FILE.tsv] [--edges 12,20,28,36]

Why: the inhibitor sums over keys, so its output can grow with the number of
keys; the frozen norms after it have one scale for every length. This
measures how much it grows (``key_norm`` in the student config divides it out).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from he_inhibitor.data import load_sst2_tsv
from he_inhibitor.paths import SHIPPED_STUDENT
from he_inhibitor.model.student import load_student
from he_inhibitor.vocab import encode, load_tokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=SHIPPED_STUDENT)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/sst2/dev.tsv"))
    ap.add_argument("--edges", default="12,20,28,36", help="bucket edges in word pieces ([CLS], [SEP] included)")
    args = ap.parse_args()
    edges = [0, *map(int, args.edges.split(",")), 10**9]
    try:
        student, tok = load_student(args.model).eval(), load_tokenizer(args.model)
        sentences, _ = load_sst2_tsv(args.data)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}")
    seen: list[torch.Tensor] = []
    hooks = [student.layer(i).attn.register_forward_hook(lambda _m, _i, out: seen.append(out[0]))
             for i in range(student.cfg.n_layers)]
    lengths, norms = [], []
    with torch.no_grad():
        for s in tqdm(sentences, desc="sentences", unit="sentence"):
            ids, mask = encode(tok, [s], student.cfg.max_len)
            seen.clear()
            student(torch.from_numpy(ids), torch.from_numpy(mask))
            lengths.append(int(mask.sum()))
            norms.append([float(a[0].norm(dim=-1).mean()) for a in seen])  # one sentence, no padding
    for h in hooks:
        h.remove()
    lengths, norms = np.array(lengths), np.array(norms)  # [N], [N, L]
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        k = (lengths >= lo) & (lengths < hi)
        if k.any():
            label = f">={lo}" if hi == 10**9 else f"{lo}-{hi - 1}"
            rows.append({"tokens": label, "n": int(k.sum()), "mean_norm": [round(float(v), 3) for v in norms[k].mean(0)]})
    print(json.dumps({"model": str(args.model), "by_length": rows}))


if __name__ == "__main__":
    main()
