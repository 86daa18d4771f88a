"""Markdown table of distillation runs: one row per run directory (its metrics.json and config)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def row(run: Path) -> str:
    m = json.loads((run / "metrics.json").read_text())
    cfg = json.loads((run / "distill_config.json").read_text())
    s, loss = cfg["student"], cfg["loss"]
    losses = "+".join(k for k in ("kd", "ce", "hidden", "emb", "attn", "range") if loss[k] > 0)
    arch = f"{s['attention']}{' signed' if s['signed'] else ''}{' recursive' if s['recursive'] else ''}"
    return (f"| {run.name} | {arch} | {losses} | {cfg['layer_map']} | {m['dev_exact_float16']:.4f} | "
            f"{m['dev_poly_float16']:.4f} | {m['parameters']:,} |")


def main(runs: list[str]) -> None:
    print("| run | attention | losses | layer map | dev exact | dev poly | parameters |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        if (Path(r) / "metrics.json").is_file():
            print(row(Path(r)))


if __name__ == "__main__":
    main(sys.argv[1:])
