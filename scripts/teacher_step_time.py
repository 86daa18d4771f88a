"""Seconds per teacher training step by padded length, and the epoch time they add up to.

    python scripts/teacher_step_time.py [--base mpnet] [--threads 1 2] [--lengths 8 16 32 66] [--reps 2] \
        [--precisions float32 bfloat16] [--json FILE]

Why: a base-size teacher's epoch takes hours on two CPU cores, so it is
estimated before it is started. Each timed step is a real one (forward,
backward, clipping, AdamW) at batch 32 on rows padded to a given length,
after one untimed warm-up step; the epoch estimate sums, over the epoch's
actual batches (``length_batches`` with the base's recipe, dynamic padding),
the time interpolated at each batch's padded length. Each precision
(float32, or forward and backward under bfloat16 autocast as ``--bf16``
trains) is timed in the same run, on the same model, so their ratio holds
even on a shared machine. Other jobs slow both: the JSON records the load
average at the start.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from he_inhibitor.data import load_sst2
from he_inhibitor.teacher import BASE_RECIPES, TeacherConfig, optimizer_and_schedule, init_model, length_batches, token_lengths


def step_seconds(model, optimizer, tokenizer, sentences: list[str], length: int, batch: int, reps: int,
                 bf16: bool) -> float:
    """Median seconds of ``reps`` training steps on ``batch`` rows padded (or cut) to exactly ``length`` tokens."""
    enc = tokenizer(sentences[:batch], padding="max_length", truncation=True, max_length=length, return_tensors="pt")
    labels = torch.zeros(batch, dtype=torch.long)
    times = []
    for r in range(reps + 1):  # the first step warms up allocations and is not counted
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**enc, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if r:
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="mpnet")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--lengths", type=int, nargs="+", default=[8, 16, 32, 66])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--precisions", nargs="+", choices=["float32", "bfloat16"], default=["float32", "bfloat16"])
    ap.add_argument("--data-dir", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    cfg = TeacherConfig(**{**asdict(TeacherConfig()), **BASE_RECIPES.get(args.base, {}), "base": args.base})
    x, _ = load_sst2(args.data_dir, "train")
    model, tok = init_model(cfg.seed, cfg.base)
    model.train()
    optimizer, _ = optimizer_and_schedule(model, cfg, 1000)
    lengths = token_lengths(tok, x)
    batches = length_batches(lengths, cfg.batch_size, cfg.sort_chunk, torch.Generator().manual_seed(cfg.seed))
    padded = np.array([min(max(lengths[i] for i in b), cfg.max_length) for b in batches])
    result = {"base": args.base, "batch_size": cfg.batch_size, "sort_chunk": cfg.sort_chunk,
              "load_average": os.getloadavg(), "steps_per_epoch": len(batches),
              "padded_length": {"median": float(np.median(padded)), "mean": float(padded.mean())}, "threads": {}}
    long_rows = sorted(x, key=len, reverse=True)  # real sentences, long enough to fill every length
    for threads in args.threads:
        torch.set_num_threads(threads)
        for precision in args.precisions:
            per_len = {n: step_seconds(model, optimizer, tok, long_rows, n, cfg.batch_size, args.reps,
                                       precision == "bfloat16") for n in args.lengths}
            epoch_s = float(np.interp(padded, list(per_len), list(per_len.values())).sum())
            result["threads"].setdefault(threads, {})[precision] = {
                "seconds_per_step": per_len, "epoch_hours": epoch_s / 3600, "mean_seconds_per_step": epoch_s / len(batches)}
            print(f"{threads} thread(s), {precision}: " + ", ".join(f"T={n}: {s:.2f} s" for n, s in per_len.items())
                  + f"; epoch of {len(batches)} steps ~ {epoch_s / 3600:.2f} h ({epoch_s / len(batches):.2f} s/step)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
