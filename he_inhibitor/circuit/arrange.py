"""Attention whose cost follows the sentence: the n-dependent packing (docs/design.md §4).

The residual stream x lives in the bucket's layout (layout.py): blocks of 2T
slots, token i of feature f at offset i of its block's first half. For the
attention, the client, who knows the token count n anyway, re-packs x into an
*arranged* layout whose tokens fill whole blocks of B >= 2T slots (heads
interleaved as in the bucket layout, `Layout.full`):

* keys and values: slot p of every block holds token p mod n, the sentence
  repeated cyclically over the whole block;
* queries: a regions of n slots, region g holding token (p - g*m) mod n at
  slot p in [g*n, (g+1)*n); the slots from a*n on hold zero.

A rotation by s puts the key (p + s) mod n beside the query at slot p, so in
region g query i meets key (i + s + g*m) mod n. The m shifts s = 0..m-1 visit
the cyclic offsets o = s + g*m in [0, a*m), which covers [0, n): every
(query, key) pair exactly once, offsets from n on masked to zero. The reads
stay inside a block while a*n + m - 1 <= B. A shift thus does a*n useful pairs
in a block of B slots instead of n in 2T, and m = ceil(n/a) shifts replace T.

Q, K and V are projected in the bucket layout (one ciphertext at T = 32,
shared baby steps, at the bottom of the chain where rotations are cheapest)
and re-packed by the client in one round trip; the attention output H leaves
in the arranged layout (query i once per region, each copy holding that
region's offsets) and the client sums the copies back into the bucket layout
at the refresh before the output projection. Every arrangement is a public linear map of slot
vectors (`ClientMap`): the server adds a mask r, the client returns
map(x + r), the server subtracts map(r). The packing costs no level, no
server rotation and no Galois key; it reveals n, which the bucket and the key
mask already reveal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from he_inhibitor.circuit.layout import Layout

MAP_QKV, MAP_QKVX, MAP_H = "map.qkv", "map.qkvx", "map.h"
"""Public map names: Q, K, V arranged (and, after layer 0, x refreshed with its padding zeroed); H folded back."""


@dataclass(frozen=True)
class ShiftPlan:
    """One attention packing: arranged blocks of B slots and m shifts; the circuit depends on nothing else.

    Sentences of different lengths share a plan (and so a circuit) whenever it holds them:
    the regions a = ceil(n/m) follow from n and live only in the public plaintexts and maps.
    """

    B: int
    m: int

    def __post_init__(self) -> None:
        if self.B < 2 or self.B & (self.B - 1):
            raise ValueError(f"block width B={self.B} must be a power of two")
        if not 1 <= self.m <= self.B:
            raise ValueError(f"{self.m} shifts do not fit blocks of {self.B}")

    def regions(self, n: int) -> int:
        """Query regions a for n tokens; ValueError where the plan cannot hold n.

        A plan holds n only if every shift meets a real key (m <= n): a shift is
        never spent on padding alone (and SEAL refuses a product with an all-zero
        mask, which such a shift would need)."""
        if n < 1:
            raise ValueError("a sentence has at least one token")
        if self.m > n:
            raise ValueError(f"plan (B={self.B}, m={self.m}) has shifts that meet no key of a {n}-token sentence")
        a = -(-n // self.m)
        if a * n + self.m - 1 > self.B:
            raise ValueError(f"plan (B={self.B}, m={self.m}) cannot hold {n} tokens: "
                             f"{a} regions of {n} plus {self.m - 1} read-ahead slots exceed the block")
        return a

    def holds(self, n: int) -> bool:
        try:
            self.regions(n)
        except ValueError:
            return False
        return True

    def layout(self, res: Layout, n_heads: int) -> Layout:
        """The arranged layout: the bucket layout's features, blocks of B slots filled with tokens."""
        return Layout.heads(self.B // 2, res.n_slots, res.d, n_heads, full=True)

    def as_json(self) -> list[int]:
        return [self.B, self.m]


def full_plan(T: int) -> ShiftPlan:
    """T shifts over blocks of 2T: the plan of a full bucket (n = T), what a circuit compiled without one uses."""
    return one_region(T, T)


def one_region(T: int, n: int) -> ShiftPlan:
    """n shifts over the bucket's blocks of 2T, one query region: shifts that follow n, no more packing."""
    return ShiftPlan(2 * T, n)


def candidates(n: int, T: int, res: Layout, n_heads: int, max_cts: int = 8) -> list[ShiftPlan]:
    """For each block width B = 2T, 4T, ... (at most max_cts arranged ciphertexts, whole heads per
    ciphertext), the plan with the fewest shifts that holds n tokens."""
    out = []
    B = 2 * T
    while B <= res.n_slots and (res.n_slots // B) % n_heads == 0 and -(-B * res.d // res.n_slots) <= max_cts:
        for a in range(B // n, 0, -1):  # the most regions that fit: the fewest shifts
            plan = ShiftPlan(B, -(-n // a))
            if plan.holds(n):
                out.append(plan)
                break
        B *= 2
    return out


def choose_plans(ns: Sequence[int], T: int, res: Layout, n_heads: int,
                 cost: Callable[[ShiftPlan], float]) -> dict[int, ShiftPlan]:
    """For each token count, the candidate plan of least cost (the simulator's predicted seconds)."""
    memo: dict[ShiftPlan, float] = {}

    def priced(p: ShiftPlan) -> tuple[float, int, int]:
        if p not in memo:
            memo[p] = cost(p)
        return memo[p], p.B, p.m

    return {n: min(candidates(n, T, res, n_heads), key=priced) for n in ns}


@dataclass(frozen=True)
class ClientMap:
    """A public linear map between packed layouts: out[t, f] = sum_g in[idx[g, t], f] (idx -1: nothing).

    Applied by the client to decrypted (masked) slot vectors; the server applies
    it to its mask in the clear. Error bounds and variances map alike (a sum
    of independent terms).
    """

    src: Layout
    dst: Layout
    idx: np.ndarray  # [G, dst.tokens] source token per term, -1 for none

    def apply(self, cts: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The map of src's ciphertexts (slot vectors, optionally with leading batch axes) as dst's."""
        if len(cts) != self.src.n_cts:
            raise ValueError(f"the map takes {self.src.n_cts} ciphertexts, not {len(cts)}")
        flat = np.concatenate([np.asarray(c, dtype=np.float64) for c in cts], axis=-1)
        x = flat[..., self.src.slot_index()]  # [..., src tokens, d]
        x = np.concatenate([x, np.zeros_like(x[..., :1, :])], axis=-2)  # token -1: zero
        y = x[..., self.idx, :].sum(axis=-3)  # [..., dst tokens, d]
        out = np.zeros(flat.shape[:-1] + (self.dst.n_cts * self.dst.n_slots,))
        out[..., self.dst.slot_index()] = y
        return list(np.moveaxis(out.reshape(flat.shape[:-1] + (self.dst.n_cts, self.dst.n_slots)), -2, 0))

    @property
    def n_in(self) -> int:
        return self.src.n_cts

    @property
    def n_out(self) -> int:
        return self.dst.n_cts


def _tokens(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)[None, :]


def x_map(res: Layout, n: int) -> ClientMap:
    """x as it is on the sentence's tokens; padding zeroed (the residual stream carries garbage there)."""
    t = np.arange(res.tokens)
    return ClientMap(res, res, _tokens(np.where(t < n, t, -1)))


def key_map(res: Layout, att: Layout, n: int) -> ClientMap:
    """Keys and values: token p mod n at every slot p of an arranged block."""
    return ClientMap(res, att, _tokens(np.arange(att.tokens) % n))


def query_map(res: Layout, att: Layout, plan: ShiftPlan, n: int) -> ClientMap:
    """Queries: region g (slots g*n .. g*n + n - 1) holds token (p - g*m) mod n at slot p."""
    a = plan.regions(n)
    p = np.arange(att.tokens)
    g = p // n
    return ClientMap(res, att, _tokens(np.where(g < a, (p - g * plan.m) % n, -1)))


def fold_map(att: Layout, res: Layout, plan: ShiftPlan, n: int) -> ClientMap:
    """H back into the bucket layout: token i sums its copy in every region, slot g*n + (i + g*m) mod n."""
    a = plan.regions(n)
    i = np.arange(res.tokens)
    idx = np.stack([np.where(i < n, g * n + (i + g * plan.m) % n, -1) for g in range(a)])
    return ClientMap(att, res, idx)


@dataclass(frozen=True)
class StackedMap:
    """Several maps side by side: the inputs split in their order, the outputs concatenated."""

    parts: tuple[ClientMap, ...]

    def apply(self, cts: Sequence[np.ndarray]) -> list[np.ndarray]:
        if len(cts) != self.n_in:
            raise ValueError(f"the map takes {self.n_in} ciphertexts, not {len(cts)}")
        out, k = [], 0
        for part in self.parts:
            out += part.apply(cts[k:k + part.n_in])
            k += part.n_in
        return out

    @property
    def src(self) -> Layout:
        return self.parts[0].src

    @property
    def n_in(self) -> int:
        return sum(p.n_in for p in self.parts)

    @property
    def n_out(self) -> int:
        return sum(p.n_out for p in self.parts)


def maps(res: Layout, att: Layout, plan: ShiftPlan, n: int) -> dict[str, ClientMap | StackedMap]:
    """The public maps of a sentence of n tokens: Q, K, V (then x) into the arranged layout; H back."""
    qkv = (query_map(res, att, plan, n), key_map(res, att, n), key_map(res, att, n))
    return {MAP_QKV: StackedMap(qkv), MAP_QKVX: StackedMap(qkv + (x_map(res, n),)),
            MAP_H: fold_map(att, res, plan, n)}


def pairs(plan: ShiftPlan, n: int, s: int, B: int) -> tuple[np.ndarray, np.ndarray]:
    """For shift s, per arranged slot p: (query token, key token), -1 where the pair is not counted.

    A slot counts when it holds a query (p < a*n) whose offset s + g*m is below n.
    """
    a = plan.regions(n)
    p = np.arange(B)
    g = p // n
    ok = (g < a) & (s + g * plan.m < n)
    q = np.where(ok, (p - g * plan.m) % n, -1)
    k = np.where(ok, (p + s) % n, -1)
    return q, k


def shift_mask(att: Layout, plan: ShiftPlan, n: int, s: int, scale: float = 1.0) -> np.ndarray:
    """The key mask of shift s: `scale` where a counted pair meets, zero elsewhere."""
    q, _ = pairs(plan, n, s, att.tokens)
    return att.token_vector(np.where(q >= 0, scale, 0.0))


def shift_bias(att: Layout, plan: ShiftPlan, n: int, s: int, n_heads: int, rel_bias: np.ndarray,
               z_offset: float) -> np.ndarray:
    """What shift s adds to Z: z_offset, plus b_h(j - i) at the slots of head h's blocks where query i meets key j.

    rel_bias [H, 2L - 1] holds b_h(o) at index o + L - 1.
    """
    q, k = pairs(plan, n, s, att.tokens)
    centre = (rel_bias.shape[1] - 1) // 2
    cols = np.where(q >= 0, k - q + centre, centre)
    heads = np.arange(att.blocks_per_ct) % n_heads  # local block b holds a feature of head b mod H
    blocks = np.zeros((att.blocks_per_ct, att.block_size))
    blocks[:, :att.tokens] = np.where(q >= 0, rel_bias[heads][:, cols], 0.0)
    return blocks.reshape(-1) + z_offset
