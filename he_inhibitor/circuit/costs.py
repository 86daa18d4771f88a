"""Per-primitive, per-level SEAL timings measured on this machine (the simulator's latency model).

A primitive's cost depends on the ring degree and on how many data primes the
ciphertext still carries, not on which chain it came from, so one table per N
(keyed by primes remaining) serves every chain length at that N. `measure`
times each primitive on SEAL (ckks/bench.py: one core, CPU time);
`CostTable.seconds` is what the simulator sums.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from he_inhibitor.ckks.bench import primitive_seconds
from he_inhibitor.paths import COSTS_DIR


@dataclass(frozen=True)
class CostTable:
    n: int
    table: dict[str, dict[int, float]]  # primitive -> primes remaining -> seconds

    def seconds(self, op: str, primes: int) -> float:
        """Cost of one `op` on a ciphertext with `primes` data primes (nearest measured count)."""
        row = self.table.get(op)
        if not row:
            return 0.0
        nearest = min(row, key=lambda p: abs(p - primes))
        return row[nearest]

    def to_json(self) -> str:
        return json.dumps({"n": self.n, "table": {op: {str(p): s for p, s in row.items()}
                                                   for op, row in self.table.items()}}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> CostTable:
        d = json.loads(text)
        return cls(int(d["n"]), {op: {int(p): float(s) for p, s in row.items()} for op, row in d["table"].items()})

    @classmethod
    def load(cls, path: str | Path) -> CostTable:
        return cls.from_json(Path(path).read_text())

    @classmethod
    def shipped(cls, n: int) -> CostTable | None:
        """The table measured on this machine for ring degree n (circuit/data), if there is one."""
        path = shipped_path(n)
        return cls.load(path) if path.is_file() else None


def shipped_path(n: int) -> Path:
    """Where the table for ring degree n ships (`he-inhibitor compile --measure-costs` writes it)."""
    return COSTS_DIR / f"costs_n{n}.json"


def measure(n: int = 16384, levels: int = 11, scale_bits: int = 30, reps: int = 3) -> CostTable:
    """Time every primitive at every level of a [50, scale_bits x levels, 50] chain (ckks/bench.py)."""
    return CostTable(n, primitive_seconds(n, levels, scale_bits, reps))
