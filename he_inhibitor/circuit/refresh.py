"""One refresh round trip, both halves (docs/design.md §6, §8.1).

Server: add a uniform mask r in [-R, R] to each ciphertext of a
`RefreshPoint` (interpret.py), hand the masked ciphertexts to the client as a
`Refresh`, take back fresh encryptions of f(x + r) for each public map f
(arrange.py; none: x + r itself) and subtract f(r), which is exact because
every map is linear. Client: decrypt each ciphertext once, apply every map,
encrypt the results afresh at the top of the chain.

The HTTP server and the Ray sentence workers relay the Refresh to a remote
client (evaluation.py); the in-process executor (encrypted.py) answers it
itself. All of them mask with `masked`, so an in-process run is the served
computation, masks included.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from he_inhibitor.ckks import Ciphertext, CkksEvaluator, ClientKeys
from he_inhibitor.circuit.interpret import Answer, RefreshPoint
from he_inhibitor.circuit.plain import resolve


@dataclass(frozen=True)
class Refresh:
    """One refresh round trip: masked ciphertexts for the client, who returns, for each public map in
    `maps` (arrange.MAP_*; None: the ciphertexts themselves), fresh encryptions of its `outputs[k]`
    result ciphertexts, concatenated in that order."""

    cts: list[Ciphertext]
    maps: tuple[str | None, ...]
    outputs: tuple[int, ...]


def mask_bound(q_last: float, scale: float) -> float:
    """Half-width R of the refresh mask for a value at `scale`: half the headroom of the reply's level.

    The reply is mod-switched to the last level, modulus q_0; a value v
    decodes there while |v| * scale < q_0 / 2. R = q_0 / (4 scale) leaves
    the other half to the activation itself (|m| < R, far above any
    activation the polynomial bounds allow), and is as wide as the level
    allows: a slot's m + r is then within total-variation distance
    |m| / (2R) of r alone (with the shipped chain, q_0 ~ 2^40 and scale
    2^30: R ~ 256, distance ~ |m| / 512).
    """
    return q_last / (4.0 * scale)


def masked(point: RefreshPoint, public: dict, ev: CkksEvaluator,
           rng: np.random.Generator) -> Generator[Refresh, list[Ciphertext], Answer]:
    """The server's half: yields the masked Refresh, receives the client's fresh ciphertexts, returns them
    unmasked per map. `rng` draws the masks (OS entropy on a server: the client must not predict them)."""
    cts, maps = point.values, point.maps
    q_last = ev.prime(0)
    slots = ev.public.params.slots
    rs = [rng.uniform(-1.0, 1.0, slots) * mask_bound(q_last, ct.scale) for ct in cts]
    fresh = yield Refresh([ev.add_plain(ct, r) for ct, r in zip(cts, rs)], tuple(maps), tuple(maps.values()))
    if len(fresh) != sum(maps.values()):
        raise ValueError(f"a refresh returns {sum(maps.values())} ciphertexts, not {len(fresh)}")
    out, k = {}, 0
    for name, count in maps.items():
        masks = rs if name is None else resolve(name, public).apply(rs)
        out[name] = [ev.add_plain(c, -r) for c, r in zip(fresh[k:k + count], masks)]
        k += count
    return out


def answer(keys: ClientKeys, request: Refresh, public: dict, level: int) -> list[Ciphertext]:
    """The client's half: each ciphertext decrypted once, every map of the request applied (None: the values
    themselves), the results encrypted afresh at chain index `level`, in the request's order."""
    values = [np.asarray(keys.decrypt(c)) for c in request.cts]
    return [keys.encrypt(v, level) for name in request.maps
            for v in (values if name is None else resolve(name, public).apply(values))]
