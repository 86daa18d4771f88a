"""``he-inhibitor distill``: its arguments, the config they resolve to, and the run."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from he_inhibitor.data import default_data_dir
from he_inhibitor.train.config import DistillConfig, load_config
from he_inhibitor.train.copy_bank import CopyBankError
from he_inhibitor.train.pipeline import LogitTeacherError, distill


def config_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments ``distill`` and ``teacher-copies`` share: teacher, data, config, caches."""
    p.add_argument("--teacher", type=Path, required=True, help="teacher directory (he-inhibitor teacher output)")
    p.add_argument("--data-dir", type=Path, default=None, help="directory with SST-2 train.tsv and dev.tsv")
    p.add_argument("--config", type=Path, default=None,
                   help="JSON of overrides of the shipped recipe (any subset of DistillConfig's keys; "
                        "\"extends\": another such file underneath); without it: the shipped recipe")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="one override after --config, dotted key and JSON value, e.g. --set student.n_layers=3 "
                        "(repeatable)")
    p.add_argument("--cache-dir", type=Path, default=Path("runs/cache"), help="where teacher outputs are cached")
    p.add_argument("--logit-cache", type=Path, default=Path("runs/logits"),
                   help="where `he-inhibitor teacher-logits` cached the config's logit_teacher, and where "
                        "`he-inhibitor teacher-copies` keeps its copy banks (%(default)s)")


def resolve(args: argparse.Namespace) -> tuple[DistillConfig, Path]:
    """The config and the data directory the arguments name, or SystemExit saying what is wrong."""
    try:
        cfg = load_config(args.config, args.sets)
    except (OSError, json.JSONDecodeError, TypeError, ValueError) as err:
        raise SystemExit(f"error: --config {args.config} / --set {args.sets}: {err}")
    data_dir = args.data_dir or default_data_dir()
    if data_dir is None:
        raise SystemExit("error: no --data-dir given and no default SST-2 directory found")
    return cfg, Path(data_dir)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distill", help="distil the teacher into the inhibitor student")
    config_arguments(p)
    p.add_argument("--out", type=Path, required=True, help="output directory (checkpoints, log, student)")
    p.add_argument("--init", type=Path, default=None,
                   help="fine-tune this trained student (poly phase only) instead of distilling a new one")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    cfg, data_dir = resolve(args)
    t0 = time.time()
    try:
        state = distill(cfg, args.teacher, data_dir, args.out, args.cache_dir, args.init,
                        command=shlex.join(["he-inhibitor", *sys.argv[1:]]), logit_cache=args.logit_cache)
    except (LogitTeacherError, CopyBankError) as err:
        raise SystemExit(f"error: {err}")
    except (FileNotFoundError, ValueError) as err:
        if args.init is None:
            raise
        raise SystemExit(f"error: --init {args.init}: {err}")
    print(json.dumps({**state, "seconds": round(time.time() - t0, 1)}, indent=2))
    return 0
