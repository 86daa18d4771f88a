"""Encoded weight plaintexts, shared by every evaluation in a process and bounded in bytes.

Encoding a circuit's weights (linear-layer diagonals, biases) is a third of a
sentence's server time when it is done per request (2,063 plaintexts, about
0.8 GB, at T = 32), yet a weight plaintext depends only on its values, the
chain index and scale it is encoded at, and the CKKS parameters: not on a
client's keys, nor on the attention plan (every plan of a bucket uses the same
weights; only the key masks, which are per request, differ). So one store,
keyed by content, serves every key set and every plan a process evaluates
(docs/design.md §6, "Weights"). It is the server's own memory, like a loaded
model, not state a client can make it hold: its bound is fixed at start-up
(`serve --weight-cache`), and past it the least recently used plaintexts are
dropped and encoded again when next used.

Thread-safe: the HTTP server runs evaluations on a small thread pool. Two
threads that miss the same key at once both encode it; one copy is kept.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable

import numpy as np

from he_inhibitor.ckks import Plaintext

# room for the shipped student's weights at every plan of both buckets (two baby-step widths at T = 32)
# and the key masks of the lengths in use
DEFAULT_MAX_BYTES = 4 << 30


def plaintext_bytes(pt: Plaintext) -> int:
    """Memory SEAL holds for a plaintext: one 64-bit word per coefficient and prime of its level."""
    return int(pt.coeff_count()) * 8


def content_digest(*values: np.ndarray | float, tag: str = "") -> bytes:
    """A digest of `tag` and each value's shape and float64 contents: equal arrays, equal digests."""
    h = hashlib.blake2b(tag.encode(), digest_size=16)
    for v in values:
        data = np.ascontiguousarray(v, dtype=np.float64)
        h.update(repr(data.shape).encode())
        h.update(data.tobytes())
    return h.digest()


class WeightStore:
    """A content-addressed LRU of encoded plaintexts holding at most `max_bytes` (None: no bound).

    Keys are whatever the caller makes of `digest(values)` and the encoding
    (the executor uses (digest, kind, chain index, scale)); `get` returns the
    stored plaintext or encodes, stores and returns it.
    """

    def __init__(self, max_bytes: int | None = DEFAULT_MAX_BYTES) -> None:
        if max_bytes is not None and max_bytes < 0:
            raise ValueError(f"a weight cache holds a number of bytes >= 0, not {max_bytes}")
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[Plaintext, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._digests: dict[int, tuple[weakref.ref, bytes]] = {}  # id(array) -> (its weak ref, its digest)
        self.bytes = 0
        self.hits = self.misses = self.evictions = 0

    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._items)

    def digest(self, values: np.ndarray | float) -> bytes:
        """A digest of a constant's shape and float64 values; an array's is remembered for as long as
        the array lives (a circuit's constants are hashed once, however many requests use them)."""
        if not isinstance(values, np.ndarray):
            return content_digest(values)
        key = id(values)
        with self._lock:
            held = self._digests.get(key)
        if held is not None and held[0]() is values:
            return held[1]
        d = content_digest(values)

        def forget(_: weakref.ref, key: int = key) -> None:
            with self._lock:
                self._digests.pop(key, None)

        with self._lock:
            self._digests[key] = (weakref.ref(values, forget), d)
        return d

    def get(self, key: Hashable, encode: Callable[[], Plaintext]) -> Plaintext:
        with self._lock:
            held = self._items.get(key)
            if held is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return held[0]
            self.misses += 1
        pt = encode()
        size = plaintext_bytes(pt)
        if self.max_bytes is not None and size > self.max_bytes:
            return pt  # larger than the whole store: used once, not kept
        with self._lock:
            if key not in self._items:
                self._items[key] = (pt, size)
                self.bytes += size
            while self.max_bytes is not None and self.bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self.bytes -= dropped
                self.evictions += 1
            return self._items[key][0] if key in self._items else pt

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0

    def stats(self) -> dict[str, int | None]:
        with self._lock:
            return {"plaintexts": len(self._items), "bytes": self.bytes, "max_bytes": self.max_bytes,
                    "hits": self.hits, "misses": self.misses, "evictions": self.evictions}
