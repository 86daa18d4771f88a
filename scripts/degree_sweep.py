"""Which polynomial costs the accuracy: one exact-phase student, evaluated with other fit degrees.

Loads a distill run's exact-phase checkpoint (``checkpoint-exact.pt``) with
the bounds that run calibrated (``metrics.json``), or a saved student
(``--model``, the shipped one by default: its weights and bounds), gives each
non-linearity the degree asked for, and evaluates SST-2 dev in poly form, with
no training in between. This is what a poly phase starts from, so it shows
which fit the student has to be trained around and which it does not.

    python scripts/degree_sweep.py --run runs/concat_b --settings 14,14,14 30,14,14 14,30,14 14,30,30 30,30,30 \
        14,14w,14 14,14w,14w 14,12w,14 --inputs --json docs/distillation/degree_sweep.json

A setting is ``abs,attn_relu,ffn_relu`` degrees (each even: the fits are on
[-1, 1]). A degree followed by ``w`` (``14w``) is a weighted fit
(``he_inhibitor.approx.weighted_fit``), made from 25 random training batches
in call order with the fits before it in place (``train.calibration.refit_weighted``);
it needs the teacher's training cache (``--teacher``), or with ``--model`` and
``--phrases``, only the training phrases themselves (a weighted fit sees the
student's inputs; the teacher's outputs play no part in it):

    python scripts/degree_sweep.py --model he_inhibitor/assets/student --phrases --settings 14w,14w,14w \
        8w,8w,8w 6w,6w,6w --json docs/distillation/degree_sweep_shipped.json
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
from he_inhibitor.recalibrate import even_degree
from he_inhibitor.train.batches import Batches, training_batches
from he_inhibitor.train.calibration import refit_weighted
from he_inhibitor.vocab import load_tokenizer


Setting = tuple[str, str, str]


def setting(text: str) -> Setting:
    parts = text.split(",")

    def ok(part: str) -> bool:
        try:
            even_degree(part.removesuffix("w"))
        except argparse.ArgumentTypeError:
            return False
        return True

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


class PhraseBatches:
    """SST-2 training phrases as the batches weighted fits are made from: ids and mask only (no teacher)."""

    def __init__(self, data_dir: Path, tokenizer, max_len: int, batch_size: int = 64, seed: int = 0) -> None:
        sentences, _ = load_sst2(data_dir, "train")
        self.ids = [e.ids[:max_len] for e in tokenizer.encode_batch(sentences)]
        self.lengths = np.array([len(i) for i in self.ids])
        self.batch_size, self.seed = batch_size, seed

    def order(self, epoch: int, min_length: int = 0) -> list[np.ndarray]:
        idx = np.random.default_rng(self.seed + epoch).permutation(len(self.ids))
        idx = idx[self.lengths[idx] >= min_length]
        return [idx[b:b + self.batch_size] for b in range(0, len(idx), self.batch_size)]

    def longest(self, n_batches: int) -> list[np.ndarray]:
        idx = np.argsort(-self.lengths, kind="stable")[: n_batches * self.batch_size]
        return [idx[b:b + self.batch_size] for b in range(0, len(idx), self.batch_size)]

    def collate(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        t = int(self.lengths[rows].max())
        ids = torch.zeros(len(rows), t, dtype=torch.long)
        mask = torch.zeros(len(rows), t, dtype=torch.bool)
        for r, i in enumerate(rows):
            ids[r, : self.lengths[i]] = torch.tensor(self.ids[i])
            mask[r, : self.lengths[i]] = True
        return {"ids": ids, "mask": mask}


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


def exact_phase(run: Path):
    """(student, tokenizer, bounds) of a distill run: the exact-phase weights with the bounds it calibrated."""
    ckpt, metrics = run / "checkpoint-exact.pt", run / "metrics.json"
    for f in (ckpt, metrics):
        if not f.is_file():
            raise SystemExit(f"error: {f} not found (a finished distill run has both)")
    bounds = json.loads(metrics.read_text())["bounds"]
    state = torch.load(ckpt, weights_only=True)["model"]
    weights = {k.removeprefix("student."): v for k, v in state.items() if k.startswith("student.")}
    student = load_student(run)
    student.load_state_dict(weights)  # the exact-phase weights; the checkpoint predates calibration
    for name, m in student.nonlinearities():
        m.bound.fill_(bounds[name])
    return student, load_tokenizer(run), bounds


def phrases_or_cache(args: argparse.Namespace, data_dir: Path, tokenizer, max_len: int):
    return PhraseBatches(data_dir, tokenizer, max_len) if args.phrases else batches_for(args.teacher, data_dir,
                                                                                        tokenizer, max_len)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, help="distill output with checkpoint-exact.pt and metrics.json")
    src.add_argument("--model", type=Path, help="a saved student directory (its weights and bounds)")
    p.add_argument("--phrases", action="store_true",
                   help="make weighted fits from the training phrases alone (PhraseBatches), not the teacher's cache")
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
    torch.set_num_threads(1)
    sentences, labels = load_sst2(Path(data_dir), "dev")
    if args.model is not None:
        student, tokenizer = load_student(args.model), load_tokenizer(args.model)
        bounds = {name: float(m.bound) for name, m in student.nonlinearities()}
    else:
        student, tokenizer, bounds = exact_phase(args.run)
    exact = accuracy(student.set_form("exact"), tokenizer, sentences, labels)
    batches = None
    inputs = {}
    if args.inputs:  # where each fit's inputs fall, in exact form: why minimax fits lose and weighted ones do not
        batches = phrases_or_cache(args, Path(data_dir), tokenizer, student.cfg.max_len)
        inputs = input_masses(student, batches, 25)
        for name, row in inputs.items():
            print(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()))
    rows = []
    for degrees in args.settings:
        for name, m in student.nonlinearities():
            m.set_spec(spec_of(name, degrees))
        if any(d.endswith("w") for d in degrees):
            batches = batches or phrases_or_cache(args, Path(data_dir), tokenizer, student.cfg.max_len)
            refit_weighted(student, batches, 25)
        acc = accuracy(student.set_form("poly"), tokenizer, sentences, labels)
        rows.append({"abs": degrees[0], "attn_relu": degrees[1], "ffn_relu": degrees[2], "dev_poly": acc})
        print(f"abs {degrees[0]:>3}  attention ReLU {degrees[1]:>3}  FFN ReLU {degrees[2]:>3}: dev {acc:.4f}", flush=True)
    out = {"run": str(args.run or args.model), "dev_exact": exact, "bounds": bounds, "settings": rows, "inputs": inputs}
    print(f"exact form: dev {exact:.4f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
