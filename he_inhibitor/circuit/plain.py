"""The `plain` executor: the circuit evaluated on float64 slot vectors.

Rescales, mod-switches and plain refreshes are identities on the message (a
refresh through a client map is that public linear map), so this is exact
maths on exactly the operation sequence the server runs. Values are
dropped after their last use to keep memory to the live set.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from he_inhibitor.circuit.ir import Circuit, Node, OpKind, Plain
from he_inhibitor.circuit.layout import rot
from he_inhibitor.circuit.poly import PolyFn


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


def resolve(p: Plain, bound: dict[str, np.ndarray]) -> np.ndarray | float:
    if isinstance(p, str):
        if p not in bound:
            raise KeyError(f"public plaintext {p!r} not bound for this request")
        return bound[p]
    return p


def evaluate(node: Node, args: list, substitute: Callable[[PolyFn], PolyFn] | None = None) -> np.ndarray:
    """The message-level meaning of one op (a POLY's function optionally substituted)."""
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
    if op is OpKind.REFRESH and len(args) > 1:  # output `arg` of the client's map of the other args
        return args[-1].apply(args[:-1])[node.arg]
    if op in (OpKind.RESCALE, OpKind.MOD_SWITCH, OpKind.REFRESH, OpKind.OUTPUT):
        return args[0]
    raise ValueError(f"no message semantics for {op.value}")


def run(
    circuit: Circuit,
    inputs: dict[str, np.ndarray],
    public: dict[str, np.ndarray],
    visit: Callable[[int, Node, list, np.ndarray], None] | None = None,
    substitute: Callable[[PolyFn], PolyFn] | None = None,
) -> dict[str, np.ndarray]:
    """Evaluate every node in order; `visit(i, node, arg values, value)` sees each ciphertext op.

    substitute replaces each POLY's function (the simulator swaps in the exact
    forms to measure the polynomials' approximation error).
    """
    values: dict[int, object] = {}
    drops = last_uses(circuit)
    outputs = {}
    for i, node in enumerate(circuit.nodes):
        if node.op is OpKind.CONST:
            values[i] = resolve(circuit.consts[node.arg], public)
        elif node.op is OpKind.INPUT:
            if node.name not in inputs:
                raise KeyError(f"input {node.name!r} missing")
            values[i] = np.asarray(inputs[node.name], dtype=np.float64)
        else:
            args = [values[a] for a in node.args]
            values[i] = evaluate(node, args, substitute)
            if visit is not None:
                visit(i, node, args, values[i])
            if node.op is OpKind.OUTPUT:
                outputs[node.name] = values[i]
        for a in drops[i]:
            del values[a]
    return outputs
