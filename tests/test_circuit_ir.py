"""IR passes: level and scale side tables, typed errors, builder alignment and refresh."""

import numpy as np
import pytest

from he_inhibitor.approx import fit
from he_inhibitor.circuit.builder import Builder
from he_inhibitor.circuit.ir import (
    Circuit, CircuitError, LevelError, Node, OpKind, ScaleMismatchError, check, depth,
    levels_and_degrees, refresh_round_trips,
)
from he_inhibitor.circuit.poly import EXACT_ABS, FitPoly

ABS8 = FitPoly(fit("abs", 8))  # depth 4


def test_levels_and_scale_degrees():
    b = Builder(8)
    x = b.input("x")
    y = b.mul_plain(x, np.ones(8))
    y = b.rescale(b.rotate(y, 1))
    z = b.poly(y, ABS8)
    w = b.add(z, x)  # x is mod-switched down to z's level
    b.output(w, "out")
    lv, dg = levels_and_degrees(b.circuit)
    assert lv[z] == 1 + ABS8.depth and lv[w] == lv[z] and dg[w] == 1
    assert b.circuit.nodes[b.circuit.nodes[w].args[1]].op is OpKind.MOD_SWITCH
    assert depth(b.circuit) == 5
    assert check(b.circuit, 5)[w] == 5
    with pytest.raises(LevelError):
        check(b.circuit, 4)


def test_typed_errors_for_ill_formed_graphs():
    c = Circuit(8)
    x = c.add(Node(OpKind.INPUT, name="x"))
    p = c.add(Node(OpKind.CONST, arg=0))
    c.consts.append(2.0)
    m = c.add(Node(OpKind.MUL_PLAIN, (x, p)))
    c.add(Node(OpKind.ADD, (m, x)))  # degree 2 + degree 1
    with pytest.raises(ScaleMismatchError):
        levels_and_degrees(c)
    c = Circuit(8)
    x = c.add(Node(OpKind.INPUT, name="x"))
    c.add(Node(OpKind.RESCALE, (x,)))
    with pytest.raises(ScaleMismatchError):
        levels_and_degrees(c)
    c = Circuit(8)
    x = c.add(Node(OpKind.INPUT, name="x"))
    y = c.add(Node(OpKind.MOD_SWITCH, (x,), 1))
    c.add(Node(OpKind.SUB, (x, y)))
    with pytest.raises(LevelError):
        levels_and_degrees(c)
    with pytest.raises(CircuitError):
        Builder(8).poly(0, EXACT_ABS)


def test_refresh_keeps_a_deep_chain_inside_a_short_one():
    b = Builder(8, max_level=5)
    x = b.input("x")
    for _ in range(3):
        x = b.poly(x, ABS8)
    b.output(x, "out")
    c = b.circuit
    assert len(c.of_kind(OpKind.REFRESH)) == 2
    assert refresh_round_trips(c) == 2
    assert depth(c) <= 5 and depth(c, through_refresh=True) == 12
    check(c, 5)
    short = Builder(8, max_level=3)
    with pytest.raises(LevelError):
        short.poly(short.input("x"), ABS8)
