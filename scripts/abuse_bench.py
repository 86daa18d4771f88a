"""The abuse mix against the shipped circuit: honest latency, refusals by kind, peak RSS.

    python scripts/abuse_bench.py [--honest 2] [--attackers 6] [--memory-budget 3G] [--json FILE]

Starts `he-inhibitor serve` on 127.0.0.1 (a free port, loopback only) in a
subprocess, registers an attacker key set, then runs honest clients (fresh
keys, one sentence each, one of them longer than 32 tokens so both buckets
serve) while attacker threads loop over every attack of
he_inhibitor/service/abuse.py until the honest clients are done. Prints the
report (and writes it with --json); exits 1 if an honest sentence failed or
anything answered 5xx other than 503. The pytest tests/test_service_abuse.py
runs the same mix on a toy circuit in CI.
"""

from __future__ import annotations

import argparse
import sys

from he_inhibitor.service.abuse import add_arguments, run

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
