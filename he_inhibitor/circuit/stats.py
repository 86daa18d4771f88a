"""Static per-stage statistics of a circuit: what every report prints.

Counted from the graph alone (no input needed): rotations, plaintext and
ciphertext multiplications (polynomials expanded into their evaluation
plans), relinearisations, rescales, refreshes, and the levels each stage
consumes on one unbroken chain.
"""

from __future__ import annotations

from collections import Counter

from he_inhibitor.circuit.ir import Circuit, OpKind, consumed_levels
from he_inhibitor.circuit.poly import plan_of


def stage_stats(circuit: Circuit) -> dict[str, dict[str, int]]:
    """{stage: {primitive: count, ..., "levels": levels consumed by the stage}} in circuit order."""
    used = consumed_levels(circuit)
    counts: dict[str, Counter] = {}
    entry: dict[str, int] = {}
    exit_: dict[str, int] = {}
    for i, node in enumerate(circuit.nodes):
        if node.op in (OpKind.CONST, OpKind.INPUT, OpKind.OUTPUT):
            continue
        st = node.stage
        c = counts.setdefault(st, Counter())
        if st not in entry:
            entry[st] = max((int(used[a]) for a in node.args if circuit.nodes[a].op is not OpKind.CONST), default=0)
        exit_[st] = max(exit_.get(st, 0), int(used[i]))
        if node.op is OpKind.POLY:
            plan = plan_of(node.fn)
            pc = plan.counts if plan is not None else {}
            c["poly"] += 1
            c["mul"] += pc.get("mults", 0)
            c["relinearize"] += pc.get("mults", 0)
            c["mul_const"] += pc.get("const_mults", 0)
            c["rescale"] += pc.get("rescales", 0)
        else:
            c[node.op.value] += 1
            if node.op is OpKind.MUL:
                c["relinearize"] += 1
    return {st: {**dict(c), "levels": exit_[st] - entry[st]} for st, c in counts.items()}
