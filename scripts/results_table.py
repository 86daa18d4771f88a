"""Distillation results: a markdown table (and optionally JSON) with one row per run directory.

    python scripts/results_table.py runs/ablations/*/ [--json docs/distillation/ablations.json]
    python scripts/results_table.py runs/NEW/ --merge docs/distillation/results.json --json docs/distillation/results.json

``--merge`` keeps the rows of an earlier table whose run directories are gone
(``runs/`` is not committed); a run given on the command line replaces the
row of the same name.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def command(run: Path, metrics: dict) -> str:
    """The command that produced a run, as distill recorded it; for runs older than that record,
    runs/ablations/NAME from configs/ablations/NAME.json, runs/NAME from configs/student_NAME.json
    where that exists, else from configs/student.json."""
    if "command" in metrics:
        return metrics["command"]
    if run.parent.name == "ablations":
        cfg = f"configs/ablations/{run.name}.json"
    else:
        cfg = f"configs/student_{run.name}.json" if Path(f"configs/student_{run.name}.json").is_file() else "configs/student.json"
    return (f"he-inhibitor distill --teacher ../shared/models/minilm-l6-sst2 --data-dir ../shared/data/sst2 "
            f"--out {run.parent.name}/{run.name} --config {cfg}")


def summarize(run: Path) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    cfg = json.loads((run / "distill_config.json").read_text())
    s, loss = cfg["student"], cfg["loss"]
    return {
        "run": run.name,
        "attention": s["attention"] + (" signed" if s["signed"] else "") + (" recursive" if s["recursive"] else "")
                     + (f" / n^{s['key_norm']:g}" if s.get("key_norm") else "")
                     + (" + rel bias" if s.get("rel_bias") else "")
                     + (f" one-sided {s['rel_bias_init']:g}, lr x{cfg.get('rel_bias_lr', 1.0):g}" if s.get("rel_bias_init") else ""),
        "layers": s["n_layers"],
        "heads": s["n_heads"],
        "d_ff": s["d_ff"],
        "losses": "+".join(k for k in ("kd", "ce", "hidden", "emb", "attn", "range", "range_max") if loss.get(k, 0) > 0),
        # whose logits the kd and ce losses see: on the training phrases, and on the augmented copies, which
        # keep the MiniLM teacher's live labels unless they come from a bank (cached_copies)
        "logits": ("MPNet" if cfg.get("logit_teacher") else "MiniLM")
                  + (f", copies too ({cfg['cached_copies']} a row, cached)" if cfg.get("cached_copies") else ""),
        "layer_map": cfg["layer_map"],
        "embedding_init": "(init)" if "init" in m else cfg.get("embedding_init", "table"),
        "augment": augment(cfg.get("augment", {})) + (f"; poly phase {augment(cfg['augment_poly'])}" if cfg.get("augment_poly") else ""),
        "poly_degree": f"{fit_label(s['abs_poly'])}/{fit_label(s['relu_poly'])}",
        "train_rows": cfg["limit"] or 67349,
        "epochs": f"{m['init']} + {cfg['epochs_poly']}" if "init" in m else f"{cfg['epochs_exact']}+{cfg['epochs_poly']}",
        # dev after the exact phase, then in poly form before the poly phase trains (after calibration):
        # the second against the first is what the fits alone cost
        "exact_phase": m.get("dev_exact", "-") if "init" not in m else "-",
        # a phase that ends on an average of its weights: the decay (ema), and dev on its last weights
        "ema": cfg.get("ema") or "-",
        "exact_last": m.get("dev_exact_raw", "-"),
        "poly_start": m.get("dev_poly_before_finetune", "-"),
        "dev_exact": m["dev_exact_float16"],
        "dev_poly": m["dev_poly_float16"],
        "parameters": m["parameters"],
        "command": command(run, m),
    }


def fit_label(spec: dict) -> str:
    """A fit's degree, with "w" for a weighted fit (least squares under the calibration inputs)."""
    return f"{spec['degree']}" + ("w" if spec.get("method") == "weighted" else "")


def augment(a: dict) -> str:
    """Teacher-labelled copies per batch and their mask/replace/neighbour rates, or "-"."""
    if not a.get("copies"):
        return "-"
    near = f" / neighbour {a['p_neighbour']:g}" if a.get("p_neighbour") else ""
    joined = f", {a['concat']:g} joined" if a.get("concat") else ""
    return f"{a['copies']}x, mask {a['p_mask']:g} / replace {a['p_replace']:g}{near}{joined}"


def markdown(rows: list[dict]) -> str:
    cols = ["run", "attention", "layers", "heads", "d_ff", "losses", "logits", "layer_map", "embedding_init", "augment", "poly_degree", "train_rows", "epochs", "ema", "exact_last", "exact_phase", "poly_start", "dev_exact", "dev_poly", "parameters"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [r.get(c, "-") for c in cols]  # rows kept from before a column existed show "-"
        lines.append("| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    ap.add_argument("--merge", type=Path, default=None, help="an earlier --json table whose rows are kept after the new ones")
    args = ap.parse_args()
    rows = [summarize(r) for r in args.runs if (r / "metrics.json").is_file()]
    if args.merge:
        try:
            kept = json.loads(args.merge.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise SystemExit(f"error: --merge {args.merge}: {err}")
        new = {r["run"] for r in rows}
        rows += [r for r in kept if r["run"] not in new]
    print(markdown(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
