"""``he-inhibitor calibrate``: widen a trained student's intervals to cover the longest training phrases.

``distill`` calibrates each bound B on random training batches. SST-2's
training phrases are short (median 10 tokens) while dev sentences run to 55,
and the inhibitor sums over keys, so later layers see larger inputs on long
sentences: bounds fitted to random batches can leave long dev sentences
beyond a bound, where the polynomial explodes. This command observes the
longest training rows, in exact and then poly form (as ``train.calibration.calibrate``
does), and keeps for each bound the wider of the old and the new. Weights are
unchanged (weighted fits are refitted at the kept bounds, on the same rows);
only training data is looked at.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from he_inhibitor.data import default_data_dir
from he_inhibitor.train.batches import training_batches
from he_inhibitor.train.calibration import calibrate, refit_weighted
from he_inhibitor.model.student import Student, load_student, save_student
from he_inhibitor.vocab import TOKENIZER_FILE, load_tokenizer


def recalibrate(model_dir: Path, teacher_dir: Path, data_dir: Path, out: Path, n_batches: int = 25,
                margin: float = 0.1, cache_dir: Path = Path("runs/cache"), degree: int | None = None
                ) -> dict[str, list[float]]:
    """Save into ``out`` the student of ``model_dir`` with widened bounds; returns {name: [old, new]}.

    ``degree``: also give every fit that degree (weighted fits are refitted at it with the rest), so
    that weights trained around one degree's fits can be compiled at another (design §5).
    """
    student = load_student(model_dir)
    if degree is not None:
        set_degree(student, degree)
    batches = training_batches(teacher_dir, data_dir, load_tokenizer(model_dir), student.cfg.max_len, cache_dir)
    old = {name: float(m.bound) for name, m in student.nonlinearities()}
    new = calibrate(student, batches, n_batches, margin, poly_batches=n_batches, longest=True)
    for name, m in student.nonlinearities():
        m.bound.fill_(max(old[name], new[name]))
    refit_weighted(student, batches, n_batches, longest=True)  # fitted at the bounds just kept
    save_student(student, out)
    if Path(out).resolve() != Path(model_dir).resolve():
        shutil.copy(Path(model_dir) / TOKENIZER_FILE, Path(out) / TOKENIZER_FILE)
    return {name: [round(old[name], 4), round(float(m.bound), 4)] for name, m in student.nonlinearities()}


def set_degree(student: Student, degree: int) -> None:
    """Every non-linearity's fit, and the config saved with the student, at ``degree`` (method and floor kept)."""
    cfg = student.cfg
    student.cfg = replace(cfg, abs_poly=replace(cfg.abs_poly, degree=degree),
                          relu_poly=replace(cfg.relu_poly, degree=degree))
    for _, m in student.nonlinearities():
        m.set_spec(replace(m.spec, degree=degree))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="widen a student's polynomial intervals to cover the longest training phrases")
    p.add_argument("--model", type=Path, required=True, help="trained student directory (distill --out)")
    p.add_argument("--teacher", type=Path, required=True, help="teacher directory (for the training cache)")
    p.add_argument("--data-dir", type=Path, default=None, help="directory with SST-2 train.tsv")
    p.add_argument("--out", type=Path, required=True, help="where to save the recalibrated student")
    p.add_argument("--batches", type=int, default=25, help="batches of 64 of the longest rows")
    p.add_argument("--margin", type=float, default=0.1, help="B = (1 + margin) x the largest input")
    p.add_argument("--cache-dir", type=Path, default=Path("runs/cache"))
    p.add_argument("--degree", type=even_degree, default=None,
                   help="also refit every polynomial at this even degree (e.g. 14: depth 4; 6: depth 3)")
    p.set_defaults(func=_run)


def even_degree(text: str) -> int:
    """An even degree >= 2: the fits are on [-1, 1] with |x| even and ReLU = x/2 + an even part."""
    if not text.isdigit() or int(text) < 2 or int(text) % 2:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an even degree >= 2, e.g. 6 or 14")
    return int(text)


def _run(args: argparse.Namespace) -> int:
    data_dir = args.data_dir or default_data_dir()
    if data_dir is None:
        raise SystemExit("error: no --data-dir given and no default SST-2 directory found")
    if args.batches < 1 or args.margin < 0:
        raise SystemExit("error: --batches must be >= 1 and --margin >= 0")
    torch.set_num_threads(2)
    try:
        bounds = recalibrate(args.model, args.teacher, Path(data_dir), args.out, args.batches, args.margin,
                             args.cache_dir, args.degree)
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {err}")
    print(json.dumps({"bounds_old_new": bounds, "widened": int(np.sum([o < n for o, n in bounds.values()]))}, indent=2))
    return 0
