"""``he-inhibitor teacher-copies``: build the copy bank a distillation config reads (``train.copy_bank``)."""

from __future__ import annotations

import argparse
import json
import time

import torch

from he_inhibitor.teacher import positive_int
from he_inhibitor.train.cli import config_arguments, resolve
from he_inhibitor.train.copy_bank import CopyBankError
from he_inhibitor.train.pipeline import build_copies


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "teacher-copies", help="label a bank of augmented copies with the logit teacher, once, for distill",
        description="Make the config's cached_copies augmented copies of every SST-2 training row (the "
        "recipe's masking, replacing and joining, one fixed seed for every distillation seed) and cache "
        "the logit_teacher's logits for each, in bfloat16 autocast. Resumable: logits are kept per text "
        "as they are computed. Give the same --config/--set as the distill runs that read the bank.")
    config_arguments(p)
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (%(default)s)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    cfg, data_dir = resolve(args)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    try:
        path = build_copies(cfg, args.teacher, data_dir, args.cache_dir, args.logit_cache)
    except CopyBankError as err:
        raise SystemExit(f"error: {err}")
    except FileNotFoundError as err:
        raise SystemExit(f"error: logit_teacher {cfg.logit_teacher}: {err}")
    print(json.dumps({"bank": str(path), "copies_per_row": cfg.cached_copies, "seconds": round(time.time() - t0, 1)}))
    return 0
