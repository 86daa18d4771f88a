"""`he-inhibitor simulate --data FILE.tsv`: real sentences through the simulator, polynomial ranges checked.

Each polynomial's bound B was calibrated on training data with a margin; this
reports, per polynomial (stage and fit), how close real inputs come to the
interval edge, max |x| / B, over the slots the model reads and, separately,
over the garbage slots (second halves), which must stay inside too: a
polynomial far outside its interval can exceed the modulus and wreck every
slot. Any input outside fails the command (exit 1) naming the polynomial and
the sentence. It also reports the largest predicted noise bound and how often
the circuit's label matches the data's.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from he_inhibitor.circuit.bundle import SHIPPED_BUNDLE, load_bundle
from he_inhibitor.circuit.client_bundle import ClientBundle
from he_inhibitor.circuit.executors import Mode, make_executor
from he_inhibitor.data import load_sst2_tsv
from he_inhibitor.vocab import SentenceTooLongError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="run real sentences through the simulator; check polynomial ranges")
    p.add_argument("--circuit", type=Path, default=SHIPPED_BUNDLE, help=f"bundle directory (default {SHIPPED_BUNDLE})")
    p.add_argument("--data", type=Path, required=True, help="TSV with header sentence<TAB>label")
    p.add_argument("--limit", type=int, default=None, help="first N sentences only")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


@dataclass
class Worst:
    """The largest input seen by one polynomial, and where."""

    ratio: float = 0.0
    ratio_sentence: int = -1
    garbage: float = 0.0
    garbage_sentence: int = -1

    def update(self, ratio: float, garbage: float, sentence: int) -> None:
        if ratio > self.ratio:
            self.ratio, self.ratio_sentence = ratio, sentence
        if garbage > self.garbage:
            self.garbage, self.garbage_sentence = garbage, sentence

    @property
    def inside(self) -> bool:
        return self.ratio <= 1.0 and self.garbage <= 1.0


def check(bundle: Path, sentences: list[str], labels: list[int]) -> dict:
    """Simulate every sentence; per-polynomial worst ranges, noise bounds, label agreement."""
    client = ClientBundle.load(bundle)
    worst: dict[str, Worst] = {}
    bounds, correct, skipped = [], 0, []
    for idx, (text, label) in enumerate(zip(sentences, labels)):
        try:
            prep = client.prepare(text)
        except SentenceTooLongError:
            skipped.append(idx)
            continue
        plan = load_bundle(bundle, prep.T, prep.n_tokens)  # the circuit of this length's plan (cached)
        sim = make_executor(Mode.SIMULATE, plan.compiled, plan.params, strict=False).run(prep.x0, prep.m)
        for r in sim.ranges:
            worst.setdefault(f"{r.stage} {r.name}", Worst()).update(r.ratio, r.garbage_ratio, idx)
        bounds.append(sim.noise_bound)
        correct += int(np.argmax(sim.logits) == label)
    n = len(bounds)
    return {"sentences": n, "skipped_too_long": skipped, "label_agreement": correct / n if n else None,
            "max_noise_bound": max(bounds, default=None),
            "polynomials": {k: vars(w) | {"inside": w.inside} for k, w in worst.items()}}


def run(args: argparse.Namespace) -> int:
    sentences, labels = load_sst2_tsv(args.data)
    if args.limit is not None:
        sentences, labels = sentences[:args.limit], labels[:args.limit]
    rep = check(args.circuit, sentences, labels)
    outside = {k: p for k, p in rep["polynomials"].items() if not p["inside"]}
    if args.json:
        print(json.dumps(rep))
    else:
        print(f"{rep['sentences']} sentences ({len(rep['skipped_too_long'])} too long, skipped); "
              f"label agreement with the data {rep['label_agreement']:.3f}; "
              f"largest predicted noise bound {rep['max_noise_bound']:.3g}")
        print(f"{'polynomial':58s} {'max|x|/B':>9s} {'(sentence)':>10s} {'garbage':>9s} {'(sentence)':>10s}")
        for k, p in rep["polynomials"].items():
            print(f"{k:58s} {p['ratio']:9.3f} {p['ratio_sentence']:10d} "
                  f"{p['garbage']:9.3f} {p['garbage_sentence']:10d}")
    for k, p in outside.items():
        which = ("read slots", p["ratio_sentence"]) if p["ratio"] > 1 else ("garbage slots", p["garbage_sentence"])
        print(f"OUT OF RANGE: {k}: input leaves its interval in the {which[0]} of sentence {which[1]} "
              f"({sentences[which[1]][:80]!r})", flush=True)
    return 1 if outside else 0
