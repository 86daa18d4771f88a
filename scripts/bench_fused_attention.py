"""Training-step time of inhibitor attention, eager modules against ``Student.fuse``, in each form.

    python scripts/bench_fused_attention.py [--batch 64] [--lengths 16,32,64] [--heads 16] \
        [--forms exact,poly] [--degree 6] [--json FILE]

Why: in eager PyTorch the inhibitor materialises two [B, H, T, T, d_h]
tensors and their gradients, and in poly form evaluates each polynomial as a
dozen passes over them; both distillation phases spend most of their time
there. This times one attention layer's forward and backward both ways in
the same process (ratios, not absolute seconds, are what carries across
machines), after a warm-up that includes the one-off compile. Poly form
runs in training mode, with the clamp and the range penalty the poly phase
has, and the bounds at 3 (about where Q - K and V - Z of unit-variance
inputs fall).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from he_inhibitor.model.attention import InhibitorAttention
from he_inhibitor.model.nonlinear import Nonlinearity, PolySpec


def step_seconds(attn: InhibitorAttention, x: torch.Tensor, mask: torch.Tensor, repeats: int) -> float:
    """Median seconds of forward + backward over ``repeats`` steps, after two warm-up steps."""
    times = []
    for i in range(repeats + 2):
        t0 = time.perf_counter()
        out, _ = attn(x, mask)
        out.square().mean().backward()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lengths", default="16,32,64", help="sequence lengths T to time")
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--forms", default="exact,poly", help="forms to time: exact, poly or both")
    ap.add_argument("--degree", type=int, default=6, help="the poly form's fit degree (Remez: no calibration needed)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    attn = InhibitorAttention(args.d_model, args.heads, Nonlinearity("abs", 3.0, PolySpec(args.degree)),
                              Nonlinearity("relu", 3.0, PolySpec(args.degree)), key_norm=0.5).train()
    rows = []
    for form in args.forms.split(","):
        attn.abs_fn.set_form(form), attn.relu_fn.set_form(form)
        for t in (int(v) for v in args.lengths.split(",")):
            x = torch.randn(args.batch, t, args.d_model, requires_grad=True)
            mask = torch.ones(args.batch, t, dtype=torch.bool)
            attn.fused = False
            eager = step_seconds(attn, x, mask, args.repeats)
            attn.fused = True
            fused = step_seconds(attn, x, mask, args.repeats)
            rows.append({"form": form, "T": t, "eager_s": round(eager, 4), "fused_s": round(fused, 4),
                         "speedup": round(eager / fused, 2)})
            print(f"{form:5s} B={args.batch} T={t:3d} H={args.heads} d={args.d_model}: eager {eager * 1e3:7.1f} ms, "
                  f"fused {fused * 1e3:7.1f} ms, {eager / fused:.2f}x")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"batch": args.batch, "heads": args.heads, "d_model": args.d_model,
                                         "degree": args.degree, "threads": args.threads, "torch": torch.__version__,
                                         "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
