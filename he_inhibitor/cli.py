"""The `he-inhibitor` console script.

Each subcommand lives in the module that owns its feature; that module exposes
``add_parser(subparsers)`` which registers the subcommand and sets
``func=callable(args) -> int``. Only the module of the command given is
imported, by name: the core commands (``approx``, ``predict --mode plain``,
``simulate``, ``serve``, ``query``, ``demo``) then never import torch, an
optional extra (``train``). This is the package's one deliberate lazy
import of its own modules; tests/test_layers.py reads ``COMMANDS`` as the
CLI's imports.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module exposing add_parser(subparsers)
COMMANDS: dict[str, str] = {
    "approx": "he_inhibitor.approx.cli",
    "teacher": "he_inhibitor.teacher",
    "teacher-logits": "he_inhibitor.teacher_logits",
    "teacher-copies": "he_inhibitor.train.copies_cli",
    "distill": "he_inhibitor.train.cli",
    "calibrate": "he_inhibitor.recalibrate",
    "eval": "he_inhibitor.evaluate",
    "compile": "he_inhibitor.circuit.cli",
    "predict": "he_inhibitor.circuit.predict",
    "simulate": "he_inhibitor.circuit.simulate_cli",
    "serve": "he_inhibitor.service.server",
    "query": "he_inhibitor.service.query",
    "demo": "he_inhibitor.service.demo",
    "bench": "he_inhibitor.bench.cli",
    "abuse-bench": "he_inhibitor.service.abuse",
    "bench-lanes": "he_inhibitor.bench.lanes",
    "bench-served": "he_inhibitor.bench.served",
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="he-inhibitor", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = argv[0] if argv and argv[0] in COMMANDS else None
    for name, module in COMMANDS.items():
        if wanted is None or name == wanted:  # lazy: keeps torch optional (module docstring)
            importlib.import_module(module).add_parser(sub)
        else:  # listed in --help without importing its (possibly heavy) module
            sub.add_parser(name, help=f"see `he-inhibitor {name} --help`")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
