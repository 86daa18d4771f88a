"""The one traversal (circuit/interpret.py): refresh round trips as suspension points, last-use drops, lanes."""

import weakref

import numpy as np

from he_inhibitor.circuit.interpret import Backend, RefreshPoint, answered, interpret, last_uses, relayed
from he_inhibitor.circuit.ir import Circuit, Node, OpKind, refresh_round_trips
from he_inhibitor.circuit.plain import PlainBackend


class _Swap:
    """A public map with two outputs: the input and its reverse."""

    def apply(self, xs):
        return [xs[0], xs[0][::-1]]


def _circuit(lane: int = 0) -> Circuit:
    """x -> 2x (rescaled) -> refreshed, and through the map; the two outputs of one round trip are
    added; a rotation of x sits on `lane`."""
    c = Circuit(4, consts=[2.0, "swap"])
    x = c.add(Node(OpKind.INPUT, name="x"))
    two = c.add(Node(OpKind.CONST, arg=0))
    y = c.add(Node(OpKind.RESCALE, (c.add(Node(OpKind.MUL_PLAIN, (x, two))),)))
    r = c.add(Node(OpKind.ROTATE, (x,), arg=1, lane=lane))
    swap = c.add(Node(OpKind.CONST, arg=1))
    a = c.add(Node(OpKind.REFRESH, (y,)))
    b = c.add(Node(OpKind.REFRESH, (y, swap), arg=1))
    c.add(Node(OpKind.OUTPUT, (c.add(Node(OpKind.ADD, (c.add(Node(OpKind.ADD, (a, b))), r))),), name="out"))
    return c


X = np.array([1.0, 2.0, 3.0, 4.0])
WANT = 2 * X + (2 * X)[::-1] + np.roll(X, -1)


def test_a_refresh_group_is_one_suspension_and_the_walk_resumes_with_its_answer():
    c = _circuit()
    backend = PlainBackend({"swap": _Swap()})
    walk = interpret(c, backend, {"x": X})
    point = next(walk)
    assert isinstance(point, RefreshPoint) and point.maps == {None: 1, "swap": 2}
    np.testing.assert_array_equal(point.values[0], 2 * X)
    try:
        walk.send(backend.refresh(point))
    except StopIteration as stop:
        out = stop.value
    assert refresh_round_trips(c) == 1
    np.testing.assert_array_equal(out["out"], WANT)
    np.testing.assert_array_equal(answered(interpret(c, backend, {"x": X}), backend.refresh)["out"], WANT)


def test_relayed_round_trips_answer_alike():
    c = _circuit()
    backend = PlainBackend({"swap": _Swap()})
    seen = []

    def trip(point):
        got = yield point.nodes  # what a server would send to its client
        seen.append(got)
        return backend.refresh(point)

    gen = relayed(interpret(c, backend, {"x": X}), trip)
    assert next(gen) == (3,)
    try:
        gen.send("client's reply")
    except StopIteration as stop:
        np.testing.assert_array_equal(stop.value["out"], WANT)
    assert seen == ["client's reply"]


class _Counting(PlainBackend):
    """Records the ops it ran."""

    def __init__(self, public):
        super().__init__(public)
        self.ran: list[int] = []

    def op(self, i, node, args):
        self.ran.append(i)
        return super().op(i, node, args)


def test_values_are_dropped_after_their_last_use():
    c = _circuit()
    drops = last_uses(c)
    assert sorted(drops[4]) == [0]  # x's last reader is the rotation
    assert all(a < i for i, ds in enumerate(drops) for a in ds)
    refs, alive = {}, {}

    class Watching(PlainBackend):
        def leave(self, i, node, value):
            refs[i] = weakref.ref(value)
            alive[i] = {j for j, r in refs.items() if r() is not None}

    b = Watching({"swap": _Swap()})
    answered(interpret(c, b, {"x": X.copy()}), b.refresh)
    assert 8 in alive[9] and 8 not in alive[10]  # a sum, dropped once its one reader ran


class _Link:
    """Another lane in the same process: computes its nodes with its own backend when asked."""

    def __init__(self, circuit, backend, inputs):
        self.c, self.backend, self.inputs = circuit, backend, inputs
        self.offered: dict[int, np.ndarray] = {}

    def remote(self, node):
        return self.c.nodes[node].lane != 0

    def offer(self, node, value):
        self.offered[node] = value

    def receive(self, node):
        n = self.c.nodes[node]
        return self.backend.op(node, n, [self.offered[a] for a in n.args])


def test_nodes_of_another_lane_come_through_the_link():
    c = _circuit(lane=1)
    local, remote = _Counting({"swap": _Swap()}), _Counting({"swap": _Swap()})
    link = _Link(c, remote, {"x": X})
    out = answered(interpret(c, local, {"x": X}, link), local.refresh)
    np.testing.assert_array_equal(out["out"], WANT)
    assert remote.ran == [4] and 4 not in local.ran


def test_backend_hooks_see_every_node():
    entered, left = [], []

    class Hooked(PlainBackend):
        def enter(self, i, node):
            entered.append(i)

        def leave(self, i, node, value):
            left.append(i)

    c = _circuit()
    b = Hooked({"swap": _Swap()})
    answered(interpret(c, b, {"x": X}), b.refresh)
    consts = set(c.of_kind(OpKind.CONST))
    assert entered == list(range(len(c.nodes))) and left == [i for i in entered if i not in consts]
    assert issubclass(Hooked, Backend)
