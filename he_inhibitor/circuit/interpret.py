"""The one traversal of a circuit: every executor walks the nodes through `interpret` (design §9.1).

EVA's split between a `ProgramTraversal` and per-op executors: this module
owns everything that is the same whatever a value is (a float64 vector, a
vector with its tracked noise, a SEAL ciphertext), and a `Backend` owns what
one op means on its values.

How a walk goes, node by node in circuit order (the IR is topological):

* CONST nodes are bound through `Backend.const` (the payload, or what the
  backend makes of it: resolved per request, or kept as it is);
  INPUT nodes take the caller's value for their name;
* a REFRESH group (ir.refresh_groups: the REFRESH nodes over the same
  ciphertexts, one client round trip) suspends the walk at its first node: it
  yields a `RefreshPoint` (the ciphertexts' values and the public maps the
  group takes outputs of) and resumes with the answer, every map's outputs;
  each member node then picks its map's output `arg`;
* OUTPUT nodes pass their argument through and are returned by name;
* every other op is `Backend.op`;
* a value is dropped after its last use (`last_uses`), so memory holds the
  live set only;
* with a `LaneLink` (ray_lanes.py) nodes another lane computes are skipped,
  their values arrive through the link when a local node reads them, and
  local values leave through it (`offer`).

Why a generator: the server answers a refresh over HTTP, between two requests
(evaluation.py relays the points), while the plain, simulated and
in-process encrypted executors answer it at once (`answered`); the walk is the
same code either way.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from he_inhibitor.circuit.ir import Circuit, Node, OpKind, Plain, refresh_groups

Answer = dict[str | None, list]
"""A refresh's answer: for each map name of the RefreshPoint (None: the values themselves), its outputs."""

_Y = TypeVar("_Y")
_S = TypeVar("_S")


@dataclass(frozen=True)
class RefreshPoint:
    """Where a walk waits for the client: `values` of the ciphertext nodes `nodes`, and for each public map
    the group takes outputs of (`maps`, in circuit order; None: the values themselves) how many it uses."""

    nodes: tuple[int, ...]
    values: list
    maps: dict[str | None, int]


Traversal = Generator[RefreshPoint, Answer, dict[str, Any]]


class Backend:
    """What ops mean on one kind of value; the hooks default to nothing.

    `enter(i, node)` runs before node i is looked at (also for CONST nodes and
    nodes of another lane: the server checks for a cancelled request there),
    `leave(i, node, value)` after a non-CONST node got its value here (the
    encrypted backend records chain indices and seconds per stage).
    """

    def const(self, index: int, payload: Plain) -> Any:
        """The value of CONST payload `index` (circuit.consts[index])."""
        return payload

    def op(self, i: int, node: Node, args: list) -> Any:
        """Node i (not INPUT, CONST, REFRESH or OUTPUT) on its arguments' values."""
        raise NotImplementedError

    def enter(self, i: int, node: Node) -> None:
        pass

    def leave(self, i: int, node: Node, value: Any) -> None:
        pass


class LaneLink(Protocol):
    """How a walk of one lane exchanges values with the others (ray_lanes.RayLink)."""

    def remote(self, node: int) -> bool:
        """Whether the node is computed on another lane."""

    def receive(self, node: int) -> Any: ...

    def offer(self, node: int, value: Any) -> None:
        """Send the value if another lane consumes it."""


def last_uses(circuit: Circuit) -> list[list[int]]:
    """For each node, the values whose last use it is."""
    last = {}
    for i, node in enumerate(circuit.nodes):
        for a in node.args:
            last[a] = i
    out: list[list[int]] = [[] for _ in circuit.nodes]
    for a, i in last.items():
        out[i].append(a)
    return out


def map_name(circuit: Circuit, node: Node) -> str | None:
    """The public map a REFRESH node takes an output of (None: the refreshed ciphertext itself)."""
    last = circuit.nodes[node.args[-1]]
    return circuit.consts[last.arg] if last.op is OpKind.CONST else None


def refresh_maps(circuit: Circuit, members: list[int]) -> dict[str | None, int]:
    """A round trip's maps in circuit order, each with the number of its outputs the circuit uses."""
    out: dict[str | None, int] = {}
    for i in members:
        node = circuit.nodes[i]
        name = map_name(circuit, node)
        out[name] = max(out.get(name, 0), node.arg + 1)  # a plain refresh (None) returns its one ciphertext
    return out


def interpret(circuit: Circuit, backend: Backend, inputs: Mapping[str, Any], link: LaneLink | None = None
              ) -> Traversal:
    """Walk the circuit (see the module docstring): yields a RefreshPoint per round trip, returns the outputs."""
    drops = last_uses(circuit)
    groups = {i: (cts, members) for cts, members in refresh_groups(circuit).items() for i in members}
    refreshed: dict[tuple[int, ...], Answer] = {}
    values: dict[int, Any] = {}
    outputs: dict[str, Any] = {}
    for i, node in enumerate(circuit.nodes):
        op = node.op
        backend.enter(i, node)
        if link is not None and op is not OpKind.CONST and link.remote(i):
            for j in drops[i]:
                values.pop(j, None)
            continue
        if op is OpKind.CONST:
            values[i] = backend.const(node.arg, circuit.consts[node.arg])
        else:
            if op is OpKind.INPUT:
                if node.name not in inputs:
                    raise KeyError(f"input {node.name!r} missing")
                values[i] = inputs[node.name]
            else:
                if link is not None:
                    for j in node.args:
                        if j not in values:  # computed on another lane
                            values[j] = link.receive(j)
                if op is OpKind.REFRESH:
                    cts, members = groups[i]
                    if cts not in refreshed:
                        refreshed[cts] = yield RefreshPoint(cts, [values[j] for j in cts],
                                                            refresh_maps(circuit, members))
                    values[i] = refreshed[cts][map_name(circuit, node)][node.arg]
                    if i == members[-1]:
                        del refreshed[cts]  # the group's last node: its answer is held in values alone
                elif op is OpKind.OUTPUT:
                    values[i] = outputs[node.name] = values[node.args[0]]
                else:
                    values[i] = backend.op(i, node, [values[j] for j in node.args])
            backend.leave(i, node, values[i])
            if link is not None:
                link.offer(i, values[i])
        for j in drops[i]:
            values.pop(j, None)
    return outputs


def answered(walk: Generator[_Y, _S, Any], answer: Callable[[_Y], _S]) -> Any:
    """Run a walk to its end, answering each point it yields at once (a refresh in one process)."""
    reply = None
    while True:
        try:
            point = walk.send(reply)
        except StopIteration as stop:
            return stop.value
        reply = answer(point)


def relayed(walk: Generator[_Y, _S, Any], answer: Callable[[_Y], Generator[Any, Any, _S]]) -> Generator:
    """A walk whose points are each answered by a generator of their own (a round trip that itself
    yields to a remote client); returns the walk's outputs."""
    reply = None
    while True:
        try:
            point = walk.send(reply)
        except StopIteration as stop:
            return stop.value
        reply = yield from answer(point)
