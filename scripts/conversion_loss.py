"""Where a student's conversion to polynomials loses accuracy: one non-linearity at a time.

A saved student is evaluated on SST-2 dev with its own fits and bounds
(nothing refitted, unlike ``scripts/degree_sweep.py``): in exact form, in
poly form (the circuit), with each non-linearity alone in poly form (the
others exact: what its own fit costs), and with each alone left exact (the
others in poly form: what the conversion would win back if that fit were
perfect). Accuracy moves in steps of one sentence (0.11 points on 872), so
each row also gives the mean absolute change of the logit difference against
the exact form, which moves with every sentence. The sentences the full
conversion flips are counted by length, and the largest input / B each
non-linearity sees on dev in poly form says whether a bound is left.

    python scripts/conversion_loss.py --model runs/ema2-seed0 --json docs/distillation/conversion_ema2_seed0.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from he_inhibitor.data import default_data_dir, load_sst2
from he_inhibitor.model.student import Student, load_student
from he_inhibitor.vocab import encode, load_tokenizer

LENGTH_EDGES = (12, 20, 28, 36)  # word pieces, [CLS]/[SEP] included, as ``he-inhibitor eval --by-length``


@torch.no_grad()
def margins(student: Student, ids: list[np.ndarray], masks: list[np.ndarray]) -> np.ndarray:
    """Logit of positive minus logit of negative, per sentence, over pre-encoded batches."""
    student.eval()
    out = [student(torch.from_numpy(i), torch.from_numpy(m)) for i, m in zip(ids, masks)]
    logits = torch.cat(out).double().numpy()
    return logits[:, 1] - logits[:, 0]


def with_forms(student: Student, poly: set[str]) -> Student:
    """``student`` with the non-linearities named in ``poly`` in poly form, the rest exact."""
    for name, m in student.nonlinearities():
        m.set_form("poly" if name in poly else "exact")
    return student


def max_ratios(student: Student, ids: list[np.ndarray], masks: list[np.ndarray]) -> dict[str, float]:
    """Per non-linearity, the largest |input| / B over the batches, in the form the student is in."""
    for _, m in student.nonlinearities():
        m.max_ratio.zero_()
    margins(student, ids, masks)
    return {name: round(float(m.max_ratio), 4) for name, m in student.nonlinearities()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, required=True, help="a saved student directory (its weights, fits and bounds)")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    data_dir = args.data_dir or default_data_dir()
    if data_dir is None:
        raise SystemExit("error: no --data-dir given and no default SST-2 directory found")
    torch.set_num_threads(1)
    sentences, labels = load_sst2(Path(data_dir), "dev")
    y = np.asarray(labels)
    try:
        student, tokenizer = load_student(args.model), load_tokenizer(args.model)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: --model {args.model}: {err}")
    order = np.argsort([len(s) for s in sentences], kind="stable")
    ids, masks = [], []
    for b in range(0, len(order), 128):
        i, m = encode(tokenizer, [sentences[j] for j in order[b:b + 128]], student.cfg.max_len, truncate=True)
        ids.append(i)
        masks.append(m)
    lengths = np.concatenate([m.sum(1) for m in masks])
    y = y[order]
    names = [name for name, _ in student.nonlinearities()]
    exact = margins(with_forms(student, set()), ids, masks)

    def row(poly: set[str]) -> tuple[dict, np.ndarray]:
        """Dev accuracy and mean |margin change| against ``exact`` with ``poly`` in poly form; the margins."""
        d = margins(with_forms(student, poly), ids, masks)
        return {"dev": float(((d > 0) == (y == 1)).mean()), "mean_abs_margin_change": float(np.abs(d - exact).mean())}, d

    full, poly = row(set(names))
    out = {"model": str(args.model), "dev_exact": float(((exact > 0) == (y == 1)).mean()), "dev_poly": full["dev"],
           "mean_abs_margin_change": full["mean_abs_margin_change"],
           "bounds": {name: round(float(m.bound), 4) for name, m in student.nonlinearities()},
           "max_dev_input_ratio_poly": max_ratios(with_forms(student, set(names)), ids, masks),
           "alone_poly": {}, "alone_exact": {}}
    print(f"exact {out['dev_exact']:.4f}  poly {out['dev_poly']:.4f}  mean |margin change| {full['mean_abs_margin_change']:.3f}")
    for name in names:
        out["alone_poly"][name] = row({name})[0]
        out["alone_exact"][name] = row(set(names) - {name})[0]
        print(f"{name:24s} alone in poly form: dev {out['alone_poly'][name]['dev']:.4f} "
              f"(|margin change| {out['alone_poly'][name]['mean_abs_margin_change']:.3f});  alone exact: dev "
              f"{out['alone_exact'][name]['dev']:.4f} (|margin change| {out['alone_exact'][name]['mean_abs_margin_change']:.3f});  "
              f"max dev |x|/B {out['max_dev_input_ratio_poly'][name]:.3f}", flush=True)
    right_exact, right_poly = (exact > 0) == (y == 1), (poly > 0) == (y == 1)
    bins = np.digitize(lengths, LENGTH_EDGES)
    out["flips_by_length"] = [
        {"pieces": f"{([0, *LENGTH_EDGES])[k]}-{([*LENGTH_EDGES, 'max'])[k]}", "sentences": int((bins == k).sum()),
         "lost": int((right_exact & ~right_poly & (bins == k)).sum()), "won": int((~right_exact & right_poly & (bins == k)).sum())}
        for k in range(len(LENGTH_EDGES) + 1)]
    for r in out["flips_by_length"]:
        print(f"pieces {r['pieces']:>7}: {r['sentences']:3d} sentences, conversion loses {r['lost']}, wins {r['won']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
