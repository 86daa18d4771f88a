"""Which polynomial costs the accuracy: one exact-phase student, evaluated with other fit degrees.

Loads a distill run's exact-phase checkpoint (``checkpoint-exact.pt``) with
the bounds that run calibrated (``metrics.json``), gives each non-linearity
the Remez degree asked for, and evaluates SST-2 dev in poly form, with no
training in between. This is what a poly phase starts from, so it shows which
fit the student has to be trained around and which it does not.

    python scripts/degree_sweep.py --run runs/concat_b --settings 14,14,14 30,14,14 14,30,14 14,30,30 30,30,30 \
        14,14w,14 14,14w,14w 14,12w,14 --inputs --json docs/distillation/degree_sweep.json

A setting is ``abs,attn_relu,ffn_relu`` degrees (each even: the fits are on
[-1, 1]). A degree followed by ``w`` (``14w``) is a weighted fit
(``he_inhibitor.approx.weighted_fit``), made from 25 random training batches
in call order with the fits before it in place (``train.calibration.refit_weighted``);
it needs the teacher's training cache (``--teacher``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from he_inhibitor.data import default_data_dir, load_sst2
from he_inhibitor.model.nonlinear import PolySpec
from he_inhibitor.model.predict import accuracy
from he_inhibitor.model.student import load_student
from he_inhibitor.train.batches import Batches, training_batches
from he_inhibitor.train.calibration import refit_weighted
from he_inhibitor.vocab import load_tokenizer


Setting = tuple[str, str, str]


def setting(text: str) -> Setting:
    parts = text.split(",")
    ok = lambda p: p.removesuffix("w").isdigit() and int(p.removesuffix("w")) >= 2 and int(p.removesuffix("w")) % 2 == 0  # noqa: E731
    if len(parts) != 3 or not all(ok(p) for p in parts):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected three even degrees abs,attn_relu,ffn_relu, each optionally weighted, e.g. 14,14w,14")
    return parts[0], parts[1], parts[2]


def spec_of(name: str, degrees: Setting) -> PolySpec:
    """The fit for module ``name`` (``layers.i.attn.abs_fn``, ``layers.i.attn.relu_fn``, ``layers.i.ffn.relu_fn``)."""
    text = degrees[0] if name.endswith("abs_fn") else degrees[1] if ".attn." in name else degrees[2]
    return PolySpec(int(text.removesuffix("w")), "weighted" if text.endswith("w") else "remez")


def batches_for(teacher: Path, data_dir: Path, tokenizer, max_len: int) -> Batches:
    """Training batches for weighted fits and ``--inputs``; a clear error without a teacher."""
    if not (teacher / "config.json").is_file():
        raise SystemExit(f"error: --teacher {teacher}: not a teacher directory (weighted fits need its training cache)")
    return training_batches(teacher, data_dir, tokenizer, max_len)


@torch.no_grad()
def input_masses(student, batches: Batches, n_batches: int) -> dict[str, dict[str, float]]:
    """Per non-linearity, the fraction of its inputs t = x / B in a few ranges (exact form, random batches)."""
    mods = student.nonlinearities()
    for _, m in mods:
        m.collect_density(True)
    student.set_form("exact").eval()
    for rows in batches.order(epoch=10_000)[:n_batches]:
        b = batches.collate(rows)
        student(b["ids"], b["mask"])
    out = {}
    for name, m in mods:
        d = m.density.numpy() / float(m.density.sum())
        t = np.linspace(-1.0, 1.0, 2 * d.size + 1)[1::2]
        out[name] = {"|t|<0.1": float(d[np.abs(t) < 0.1].sum()), "|t|>0.5": float(d[np.abs(t) > 0.5].sum()),
                     "t<0": float(d[t < 0].sum())}
        m.collect_density(False)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", type=Path, required=True, help="distill output with checkpoint-exact.pt and metrics.json")
    p.add_argument("--settings", type=setting, nargs="+", required=True)
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--teacher", type=Path, default=Path("../shared/models/minilm-l6-sst2"),
                   help="teacher directory, for the training cache that weighted fits are made from")
    p.add_argument("--inputs", action="store_true",
                   help="also report where each non-linearity's inputs x / B fall (25 random training batches, exact form)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    data_dir = args.data_dir or default_data_dir()
    if data_dir is None:
        raise SystemExit("error: no --data-dir given and no default SST-2 directory found")
    ckpt, metrics = args.run / "checkpoint-exact.pt", args.run / "metrics.json"
    for f in (ckpt, metrics):
        if not f.is_file():
            raise SystemExit(f"error: {f} not found (a finished distill run has both)")
    torch.set_num_threads(1)
    sentences, labels = load_sst2(Path(data_dir), "dev")
    tokenizer = load_tokenizer(args.run)
    bounds = json.loads(metrics.read_text())["bounds"]
    state = torch.load(ckpt, weights_only=True)["model"]
    weights = {k.removeprefix("student."): v for k, v in state.items() if k.startswith("student.")}
    student = load_student(args.run)
    student.load_state_dict(weights)  # the exact-phase weights; the checkpoint predates calibration
    for name, m in student.nonlinearities():
        m.bound.fill_(bounds[name])
    exact = accuracy(student.set_form("exact"), tokenizer, sentences, labels)
    batches = None
    inputs = {}
    if args.inputs:  # where each fit's inputs fall, in exact form: why minimax fits lose and weighted ones do not
        batches = batches_for(args.teacher, Path(data_dir), tokenizer, student.cfg.max_len)
        inputs = input_masses(student, batches, 25)
        for name, row in inputs.items():
            print(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()))
    rows = []
    for degrees in args.settings:
        for name, m in student.nonlinearities():
            m.set_spec(spec_of(name, degrees))
        if any(d.endswith("w") for d in degrees):
            batches = batches or batches_for(args.teacher, Path(data_dir), tokenizer, student.cfg.max_len)
            refit_weighted(student, batches, 25)
        acc = accuracy(student.set_form("poly"), tokenizer, sentences, labels)
        rows.append({"abs": degrees[0], "attn_relu": degrees[1], "ffn_relu": degrees[2], "dev_poly": acc})
        print(f"abs {degrees[0]:>3}  attention ReLU {degrees[1]:>3}  FFN ReLU {degrees[2]:>3}: dev {acc:.4f}", flush=True)
    out = {"run": str(args.run), "dev_exact": exact, "bounds": bounds, "settings": rows, "inputs": inputs}
    print(f"exact form: dev {exact:.4f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
