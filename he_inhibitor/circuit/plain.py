"""The plain backend: the circuit's ops on float64 slot vectors (interpret.py walks the nodes).

Rescales and mod-switches are identities on the message, a refresh returns
its ciphertexts' values (through a client map: that public linear map), so
this is exact maths on exactly the operation sequence the server runs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from he_inhibitor.circuit.interpret import Answer, Backend, RefreshPoint, answered, interpret
from he_inhibitor.circuit.ir import Circuit, Node, OpKind, Plain
from he_inhibitor.circuit.layout import rot
from he_inhibitor.circuit.poly import PolyFn


def resolve(p: Plain, bound: dict[str, np.ndarray]) -> np.ndarray | float:
    """A CONST payload's value: itself, or the public plaintext its name is bound to for this request."""
    if isinstance(p, str):
        if p not in bound:
            raise KeyError(f"public plaintext {p!r} not bound for this request")
        return bound[p]
    return p


def evaluate(node: Node, args: list, substitute: Callable[[PolyFn], PolyFn] | None = None) -> np.ndarray:
    """The message-level meaning of one server op (a POLY's function optionally substituted)."""
    op = node.op
    if op in (OpKind.ADD, OpKind.ADD_PLAIN):
        return args[0] + args[1]
    if op is OpKind.SUB:
        return args[0] - args[1]
    if op in (OpKind.MUL_PLAIN, OpKind.MUL):
        return args[0] * args[1]
    if op is OpKind.ROTATE:
        return rot(args[0], node.arg)
    if op is OpKind.POLY:
        y = (node.fn if substitute is None else substitute(node.fn))(args[0])
        return y if len(args) == 1 else y * args[1]  # a folded mask
    if op in (OpKind.RESCALE, OpKind.MOD_SWITCH):
        return args[0]
    raise ValueError(f"no message semantics for {op.value}")


def refreshed(point: RefreshPoint, public: dict[str, np.ndarray]) -> Answer:
    """A refresh's messages: each map applied to the values (None: the values themselves)."""
    return {name: list(point.values) if name is None else resolve(name, public).apply(point.values)
            for name in point.maps}


class PlainBackend(Backend):
    """Float64 vectors; CONST payloads resolved against the request's public plaintexts.

    substitute replaces each POLY's function (the simulator swaps in the exact
    forms to measure the polynomials' approximation error).
    """

    def __init__(self, public: dict[str, np.ndarray], substitute: Callable[[PolyFn], PolyFn] | None = None) -> None:
        self.public, self.substitute = public, substitute

    def const(self, index: int, payload: Plain) -> np.ndarray | float:
        return resolve(payload, self.public)

    def op(self, i: int, node: Node, args: list) -> np.ndarray:
        return evaluate(node, args, self.substitute)

    def refresh(self, point: RefreshPoint) -> Answer:
        return refreshed(point, self.public)


def run(circuit: Circuit, inputs: dict[str, np.ndarray], public: dict[str, np.ndarray],
        substitute: Callable[[PolyFn], PolyFn] | None = None) -> dict[str, np.ndarray]:
    """Every output of the circuit on these inputs (rows of a batch broadcast through every op)."""
    backend = PlainBackend(public, substitute)
    walk = interpret(circuit, backend, {k: np.asarray(v, dtype=np.float64) for k, v in inputs.items()})
    return answered(walk, backend.refresh)
