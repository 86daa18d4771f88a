"""A teacher's logits in float32 and under bfloat16 autocast: texts per second and how far they differ.

    python scripts/teacher_precision.py [--teacher runs/teacher-mpnet/model] [--texts 600] [--threads 2] [--json FILE]

Why: `he-inhibitor teacher-copies` labels over a hundred thousand augmented
copies with the MPNet teacher, so its throughput is the cost of the bank;
bfloat16 autocast is only worth it if the labels stay the teacher's. The
texts are what the bank labels: pairs of SST-2 training phrases joined (three
in four of the bank's copies are), drawn with a fixed seed, plus the dev
sentences' agreement as a second sample. Other jobs slow both precisions
alike: the JSON records the load average at the start.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import torch

from he_inhibitor.data import default_data_dir, load_sst2
from he_inhibitor.teacher import load_teacher, load_tokenizer, logits


def timed(model, tokenizer, texts: list[str], bf16: bool) -> tuple[torch.Tensor, float]:
    """Logits and texts per second, under bfloat16 autocast or not."""
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        z = logits(model, tokenizer, texts)
    return z.float(), len(texts) / (time.perf_counter() - start)


def compare(z32: torch.Tensor, z16: torch.Tensor) -> dict:
    return {"label_agreement": float((z32.argmax(1) == z16.argmax(1)).float().mean()),
            "max_abs_logit_difference": float((z32 - z16).abs().max()),
            "mean_abs_logit_difference": float((z32 - z16).abs().mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", type=Path, default=Path("runs/teacher-mpnet/model"))
    ap.add_argument("--texts", type=int, default=600, help="joined training phrases to time (%(default)s)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = default_data_dir()
    train, _ = load_sst2(data, "train")
    dev, _ = load_sst2(data, "dev")
    rng = random.Random(0)
    joined = [f"{rng.choice(train)} {rng.choice(train)}" for _ in range(args.texts)]
    model, tokenizer = load_teacher(args.teacher), load_tokenizer(args.teacher)
    load = os.getloadavg()[0]
    timed(model, tokenizer, joined[:64], False)  # warm-up, untimed
    z32, tps32 = timed(model, tokenizer, joined, False)
    z16, tps16 = timed(model, tokenizer, joined, True)
    d32, _ = timed(model, tokenizer, dev, False)
    d16, _ = timed(model, tokenizer, dev, True)
    out = {"teacher": str(args.teacher), "threads": args.threads, "load_average_at_start": load,
           "joined_texts": len(joined), "texts_per_second_float32": round(tps32, 1),
           "texts_per_second_bfloat16": round(tps16, 1), "speedup": round(tps16 / tps32, 2),
           "joined": compare(z32, z16), "dev": compare(d32, d16)}
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
