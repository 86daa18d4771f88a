"""The circuit IR: a straight-line graph over a small op set, with side tables from passes.

Like EVA, the graph holds only what the server computes; levels and scales are
*derived* by passes into side tables (one entry per node), and checker passes
raise typed errors instead of letting SEAL fail deep inside an evaluation.

Level convention: the number of rescales a ciphertext has undergone (0 when
fresh); a chain of `max_level` mid primes allows levels 0..max_level.
Scale convention (EVA's fixed-point view): a ciphertext is at scale degree 1
(scale ~ Delta, ready to use) or 2 (a product awaiting its rescale). Plaintexts
for `mul_plain` are encoded at the prime the next rescale drops, so
mul_plain + rescale returns to Delta; additions need equal degrees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from he_inhibitor.circuit.poly import PolyFn


class CircuitError(Exception):
    """A circuit that SEAL could not (or should not) evaluate."""


class LevelError(CircuitError):
    """Operands at different levels, or a level beyond the modulus chain."""


class ScaleMismatchError(CircuitError):
    """Operands at different scale degrees, or a rescale of a ciphertext with nothing to drop."""


class RangeError(CircuitError):
    """A polynomial's input left its interval (the approximation no longer holds)."""


Plain = np.ndarray | float | str
"""A plaintext: a slot vector, a scalar, or the name of a public plaintext bound per
request (the key masks and pooling weights depend on the sentence length)."""


class OpKind(str, Enum):
    INPUT = "input"
    CONST = "const"
    ADD = "add"
    SUB = "sub"
    ADD_PLAIN = "add_plain"
    MUL_PLAIN = "mul_plain"
    MUL = "mul"  # ciphertext x ciphertext, relinearised
    ROTATE = "rotate"
    POLY = "poly"
    RESCALE = "rescale"
    MOD_SWITCH = "mod_switch"
    REFRESH = "refresh"  # client-aided: server masks, client re-encrypts (output `arg` of a public map), server unmasks
    OUTPUT = "output"


@dataclass(frozen=True)
class Node:
    """One operation. `arg` is the rotation step, the levels a mod_switch drops,
    or the index of a CONST's payload; `fn` is a POLY's polynomial. A POLY with
    a second (CONST) argument computes mask * fn(x), the mask folded into the
    polynomial's plan at no level (masked.py). `lane` 0 is the main process; a
    node on lane k > 0 belongs to independent work (half the attention shifts)
    that a parallel executor may run in worker process k."""

    op: OpKind
    args: tuple[int, ...] = ()
    arg: int = 0
    fn: PolyFn | None = None
    name: str = ""
    stage: str = ""  # e.g. "layer0.attn", for per-stage reports
    lane: int = 0


@dataclass
class Circuit:
    n_slots: int
    nodes: list[Node] = field(default_factory=list)
    consts: list[Plain] = field(default_factory=list)

    def add(self, node: Node) -> int:
        self.nodes.append(node)
        return len(self.nodes) - 1

    def of_kind(self, op: OpKind) -> list[int]:
        return [i for i, n in enumerate(self.nodes) if n.op is op]

    @property
    def inputs(self) -> dict[str, int]:
        return {self.nodes[i].name: i for i in self.of_kind(OpKind.INPUT)}

    @property
    def outputs(self) -> dict[str, int]:
        return {self.nodes[i].name: i for i in self.of_kind(OpKind.OUTPUT)}

    def rotation_steps(self) -> set[int]:
        """The Galois steps the circuit uses: exactly the keys the client must send."""
        return {self.nodes[i].arg for i in self.of_kind(OpKind.ROTATE)}


def infer(node: Node, arg_levels: list[int], arg_degrees: list[int]) -> tuple[int, int]:
    """(level, scale degree) of a node from its arguments; raises on an ill-formed op.

    CONST nodes get (-1, 0): they take the level of their use.
    """
    op = node.op
    if op is OpKind.CONST:
        return -1, 0
    if op is OpKind.INPUT:
        return 0, 1
    if op is OpKind.REFRESH:
        return 0, 1
    lvl, deg = arg_levels[0], arg_degrees[0]
    if op in (OpKind.ADD, OpKind.SUB, OpKind.MUL):
        if arg_levels[1] != lvl:
            raise LevelError(f"{op.value} of operands at levels {lvl} and {arg_levels[1]}")
        if arg_degrees[1] != deg:
            raise ScaleMismatchError(f"{op.value} of operands at scale degrees {deg} and {arg_degrees[1]}")
    if op in (OpKind.MUL, OpKind.MUL_PLAIN):
        if deg != 1:
            raise ScaleMismatchError(f"{op.value} of an operand awaiting its rescale")
        return lvl, 2
    if op is OpKind.RESCALE:
        if deg != 2:
            raise ScaleMismatchError("rescale of a ciphertext at scale Delta (nothing to drop)")
        return lvl + 1, 1
    if op is OpKind.POLY:
        if deg != 1:
            raise ScaleMismatchError("polynomial of an operand awaiting its rescale")
        if node.fn is None or node.fn.depth is None:
            raise CircuitError(f"poly node with no encrypted form: {getattr(node.fn, 'name', None)}")
        return lvl + node.fn.depth, 1
    if op is OpKind.MOD_SWITCH:
        if node.arg < 1:
            raise LevelError("mod_switch must drop at least one level")
        return lvl + node.arg, deg
    if op is OpKind.OUTPUT and deg != 1:
        raise ScaleMismatchError("output awaiting its rescale")
    return lvl, deg  # ADD, SUB, ADD_PLAIN, ROTATE, OUTPUT


def levels_and_degrees(circuit: Circuit) -> tuple[np.ndarray, np.ndarray]:
    """Level pass: the (level, scale degree) side tables, checking every op on the way."""
    lv = np.empty(len(circuit.nodes), dtype=np.int64)
    dg = np.empty(len(circuit.nodes), dtype=np.int64)
    for i, node in enumerate(circuit.nodes):
        if any(a >= i for a in node.args):
            raise CircuitError(f"node {i} uses a later node: the graph must be in topological order")
        cts = [a for a in node.args if circuit.nodes[a].op is not OpKind.CONST]
        lv[i], dg[i] = infer(node, [int(lv[a]) for a in cts], [int(dg[a]) for a in cts])
    return lv, dg


def consumed_levels(circuit: Circuit) -> np.ndarray:
    """Rescales along the deepest path to each node, counting through refreshes.

    Equal to the level table when there are neither refreshes nor deliberate
    drops (mod-switches); with them, it is the depth the circuit would need on
    one unbroken chain.
    """
    lv, _ = levels_and_degrees(circuit)
    used = np.zeros(len(circuit.nodes), dtype=np.int64)
    for i, node in enumerate(circuit.nodes):
        cts = [a for a in node.args if circuit.nodes[a].op is not OpKind.CONST]
        if not cts:
            continue
        deepest = max(cts, key=lambda a: used[a])
        step = 0 if node.op in (OpKind.REFRESH, OpKind.MOD_SWITCH) else int(lv[i] - max(lv[a] for a in cts))
        used[i] = used[deepest] + step
    return used


def check(circuit: Circuit, max_level: int) -> np.ndarray:
    """Checker pass: well-formed levels and scales within a chain of max_level; returns levels."""
    lv, _ = levels_and_degrees(circuit)
    if lv.size and lv.max() > max_level:
        worst = int(np.argmax(lv))
        raise LevelError(f"node {worst} ({circuit.nodes[worst].op.value}) reaches level {lv[worst]} "
                         f"> {max_level} levels in the chain")
    return lv


def depth(circuit: Circuit, through_refresh: bool = False) -> int:
    """Levels of the deepest output (on one unbroken chain when through_refresh)."""
    lv = consumed_levels(circuit) if through_refresh else levels_and_degrees(circuit)[0]
    return int(max(lv[i] for i in circuit.of_kind(OpKind.OUTPUT)))


def refresh_groups(circuit: Circuit) -> dict[tuple[int, ...], list[int]]:
    """REFRESH nodes by the ciphertexts they refresh, in circuit order: one round trip each.

    The client gets those ciphertexts (masked) once and returns every output of
    every map the group's nodes name (a REFRESH node's arguments: the
    ciphertexts, then optionally the CONST naming a public map)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i in circuit.of_kind(OpKind.REFRESH):
        cts = tuple(a for a in circuit.nodes[i].args if circuit.nodes[a].op is not OpKind.CONST)
        groups.setdefault(cts, []).append(i)
    return groups


def refresh_round_trips(circuit: Circuit) -> int:
    """Refresh round trips one evaluation makes (refresh_groups)."""
    return len(refresh_groups(circuit))
