"""Recording the layout algorithms as a circuit: `Ops` whose values are node ids.

The builder knows every node's level and scale degree as it creates it (the
same `infer` rules as the level pass), so it can

* align levels: an add/sub/mul of operands at different levels mod-switches
  the shallower one down (EVA's waterline), and
* keep a circuit inside a chain of `max_level` levels: before an op that would
  go deeper than the chain, its operand is refreshed through the client.
  `headroom(xs, k)` lets the compiler refresh ciphertexts early and together
  (the residual stream before a stage, the FFN's hidden ciphertexts) rather
  than the many ciphertexts inside a stage, each in a round trip of its own.
"""

from __future__ import annotations

from he_inhibitor.circuit.ir import Circuit, CircuitError, LevelError, Node, OpKind, Plain, infer
from he_inhibitor.circuit.masked import masked_plan_of
from he_inhibitor.circuit.poly import PolyFn


class Builder:
    def __init__(self, n_slots: int, max_level: int | None = None) -> None:
        self.circuit = Circuit(n_slots)
        self.max_level = max_level
        self.stage = ""
        self.lane = 0
        self._level: list[int] = []
        self._degree: list[int] = []
        self._const_ids: dict[int, int] = {}  # id(payload) -> CONST node

    # -- node creation --------------------------------------------------------------
    def _emit(self, op: OpKind, args: tuple[int, ...] = (), arg: int = 0,
              fn: PolyFn | None = None, name: str = "") -> int:
        pinned = op in (OpKind.INPUT, OpKind.REFRESH, OpKind.OUTPUT)  # the client's side: main process
        node = Node(op, args, arg, fn, name, self.stage, 0 if pinned else self.lane)
        cts = [a for a in args if self.circuit.nodes[a].op is not OpKind.CONST]
        level, degree = infer(node, [self._level[a] for a in cts], [self._degree[a] for a in cts])
        if self.max_level is not None and level > self.max_level:
            raise LevelError(f"{op.value} reaches level {level} > {self.max_level}")
        self._level.append(level)
        self._degree.append(degree)
        return self.circuit.add(node)

    def _const(self, p: Plain) -> int:
        key = id(p)  # the circuit keeps every payload alive, so ids stay unique
        if key not in self._const_ids:
            self.circuit.consts.append(p)
            self._const_ids[key] = self._emit(OpKind.CONST, arg=len(self.circuit.consts) - 1)
        return self._const_ids[key]

    def level(self, x: int) -> int:
        return self._level[x]

    def _align(self, x: int, y: int) -> tuple[int, int]:
        lx, ly = self._level[x], self._level[y]
        if lx < ly:
            x = self._emit(OpKind.MOD_SWITCH, (x,), ly - lx)
        elif ly < lx:
            y = self._emit(OpKind.MOD_SWITCH, (y,), lx - ly)
        return x, y

    # -- levels ---------------------------------------------------------------------
    def headroom(self, xs: list[int], k: int) -> list[int]:
        """xs ready for k more levels: those with fewer left below them in the chain refreshed together,
        in one round trip (a plain re-encryption of each), and mod-switched down to where k levels
        remain, so that the ops after the refresh run on the fewest primes."""
        fresh = self._refreshed(xs, k)
        return [x if x not in fresh else self.descend(fresh[x], self.max_level - k) for x in xs]

    def _refreshed(self, xs: list[int], k: int) -> dict[int, int]:
        """{x: its refresh} for those of xs with fewer than k levels left (one round trip for them all)."""
        if self.max_level is None:
            return {}
        # a fresh ciphertext that lacks room would not be helped by a refresh: the ops inside refresh as they must
        short = [x for x in dict.fromkeys(xs) if self._level[x] + k > self.max_level and self._level[x] > 0]
        return dict(zip(short, (self._emit(OpKind.REFRESH, tuple(short), arg=j) for j in range(len(short)))))

    def _room(self, xs: list[int], k: int) -> list[int]:
        """xs, refreshed where an op needing k levels would leave the chain (at the top: more may follow)."""
        fresh = self._refreshed(xs, k)
        return [fresh.get(x, x) for x in xs]

    def client_map(self, xs: list[int], name: str, n_out: int) -> list[int]:
        """The client's public map `name` (arrange.ClientMap, bound per request) of xs, freshly encrypted.

        One REFRESH node per output ciphertext; nodes that refresh the same
        ciphertexts travel in one round trip (ir.refresh_groups)."""
        c = self._const(name)
        return [self._emit(OpKind.REFRESH, (*xs, c), arg=j) for j in range(n_out)]

    def descend(self, x: int, level: int) -> int:
        """x mod-switched down to `level` (when it is above it and the chain is bounded): every later op
        on it runs on fewer primes, cheaper in proportion."""
        if self.max_level is None or self._level[x] >= level:
            return x
        return self._emit(OpKind.MOD_SWITCH, (x,), level - self._level[x])

    def align(self, x: int, like: int) -> int:
        """x mod-switched down to like's level (no-op when x is already as deep)."""
        return self._align(x, like)[0] if self._level[x] < self._level[like] else x

    # -- Ops --------------------------------------------------------------------------
    def set_lane(self, lane: int) -> None:
        self.lane = lane

    def input(self, name: str) -> int:
        return self._emit(OpKind.INPUT, name=name)

    def output(self, x: int, name: str) -> int:
        return self._emit(OpKind.OUTPUT, (x,), name=name)

    def rotate(self, x: int, k: int) -> int:
        return x if k % self.circuit.n_slots == 0 else self._emit(OpKind.ROTATE, (x,), k)

    def add(self, x: int, y: int) -> int:
        return self._emit(OpKind.ADD, self._align(x, y))

    def sub(self, x: int, y: int) -> int:
        return self._emit(OpKind.SUB, self._align(x, y))

    def add_plain(self, x: int, p: Plain) -> int:
        return self._emit(OpKind.ADD_PLAIN, (x, self._const(p)))

    def mul_plain(self, x: int, p: Plain) -> int:
        (x,) = self._room([x], 1)
        return self._emit(OpKind.MUL_PLAIN, (x, self._const(p)))

    def mul(self, x: int, y: int) -> int:
        x, y = self._align(*self._room([x, y], 1))
        return self._emit(OpKind.MUL, (x, y))

    def rescale(self, x: int) -> int:
        return self._emit(OpKind.RESCALE, (x,))

    def poly(self, x: int, fn: PolyFn, mask: Plain | None = None) -> int:
        """fn(x) (times mask): the mask rides in the polynomial's plan when it folds, else costs a level."""
        if fn.depth is None:
            raise CircuitError(f"{fn.name} has no polynomial form: compile the student in poly form")
        if self.max_level is not None and fn.depth > self.max_level:
            raise LevelError(f"{fn.name} needs {fn.depth} levels; the chain has {self.max_level}")
        (x,) = self._room([x], fn.depth)
        if mask is None:
            return self._emit(OpKind.POLY, (x,), fn=fn)
        if masked_plan_of(fn) is not None:
            return self._emit(OpKind.POLY, (x, self._const(mask)), fn=fn)
        return self.rescale(self.mul_plain(self._emit(OpKind.POLY, (x,), fn=fn), mask))
