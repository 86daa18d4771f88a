"""Feature-major packing of T x d activations into CKKS slot vectors (docs/design.md §3.1).

A ciphertext holds S = N/2 slots, cut into blocks of 2T slots. Block b holds the
T token values of one feature in its first half; the second half is zero (after
a linear layer) or a copy of the first half (after `copy_first_half`). This puts
token i of every feature at the same offset i of its block, so

* a rotation by a multiple of 2T moves whole blocks (linear layers),
* a rotation by s < T moves token i+s beside token i inside every block
  (all query/key pairs), and
* a rotation by H*2T*2^i cycles over the blocks of one head when heads are
  interleaved (feature j of head h at block j*H + h).

Tensors with more blocks than one ciphertext holds span several ciphertexts;
block g lives in ciphertext g // blocks_per_ct at local block g % blocks_per_ct.
Rotations follow SEAL's convention: a positive step rotates left,
``rot(v, k)[i] == v[(i + k) % S]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def rot(v: np.ndarray, k: int) -> np.ndarray:
    """Rotate a slot vector left by k (SEAL's positive Galois step)."""
    return np.roll(v, -k, axis=-1)


def head_interleaved_order(d: int, n_heads: int) -> np.ndarray:
    """Block of each feature when feature j of head h (f = h*d_h + j) sits at block j*H + h.

    With this order the blocks of one head are spaced H apart, so rotations by
    H*2T*2^i sum one head's features without touching the other heads.
    """
    if d % n_heads:
        raise ValueError(f"d={d} is not a multiple of n_heads={n_heads}")
    d_h = d // n_heads
    f = np.arange(d)
    return (f % d_h) * n_heads + f // d_h


@dataclass(frozen=True)
class Layout:
    """Where each feature of a T x d tensor lives.

    `block_of[f]` is the global block of feature f; the tensor occupies
    `n_cts` ciphertexts of `n_slots` slots. Blocks that no feature maps to are
    zero (after a linear layer) or hold garbage that is never read.
    """

    T: int
    n_slots: int
    block_of: tuple[int, ...]
    full: bool = False  # tokens fill whole blocks (the attention's arranged layout, arrange.py)

    def __post_init__(self) -> None:
        if self.T < 1 or self.T & (self.T - 1):
            raise ValueError(f"T={self.T} must be a power of two (blocks must tile the slots)")
        if self.n_slots % self.block_size:
            raise ValueError(f"{self.n_slots} slots do not hold whole blocks of {self.block_size}")
        blocks = np.asarray(self.block_of)
        if blocks.size == 0 or blocks.min() < 0 or len(set(self.block_of)) != blocks.size:
            raise ValueError("block_of must map features to distinct non-negative blocks")

    @classmethod
    def natural(cls, T: int, n_slots: int, d: int) -> Layout:
        """Feature f at block f."""
        return cls(T, n_slots, tuple(range(d)))

    @classmethod
    def heads(cls, T: int, n_slots: int, d: int, n_heads: int, full: bool = False) -> Layout:
        """Heads interleaved: feature j of head h at block j*H + h."""
        return cls(T, n_slots, tuple(int(b) for b in head_interleaved_order(d, n_heads)), full)

    @property
    def d(self) -> int:
        return len(self.block_of)

    @property
    def block_size(self) -> int:
        return 2 * self.T

    @property
    def tokens(self) -> int:
        """Token slots per block: the first half, or the whole block when `full`."""
        return self.block_size if self.full else self.T

    @property
    def blocks_per_ct(self) -> int:
        return self.n_slots // self.block_size

    @property
    def n_cts(self) -> int:
        return max(self.block_of) // self.blocks_per_ct + 1

    def slot_index(self) -> np.ndarray:
        """Flat slot (over the concatenated ciphertexts) of element (i, f), shape [tokens, d]."""
        blocks = np.asarray(self.block_of)
        return blocks[None, :] * self.block_size + np.arange(self.tokens)[:, None]

    def pack(self, x: np.ndarray) -> np.ndarray:
        """[tokens, d] -> [n_cts, n_slots]; second halves (unless `full`) and unused blocks are zero."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.tokens, self.d):
            raise ValueError(f"expected shape {(self.tokens, self.d)}, got {x.shape}")
        flat = np.zeros(self.n_cts * self.n_slots)
        flat[self.slot_index()] = x
        return flat.reshape(self.n_cts, self.n_slots)

    def unpack(self, cts: np.ndarray) -> np.ndarray:
        """[n_cts, n_slots] -> [tokens, d]: the token slots of the mapped blocks."""
        cts = np.asarray(cts)
        if cts.shape != (self.n_cts, self.n_slots):
            raise ValueError(f"expected shape {(self.n_cts, self.n_slots)}, got {cts.shape}")
        return cts.reshape(-1)[self.slot_index()]

    def token_vector(self, values: np.ndarray) -> np.ndarray:
        """One slot vector holding values[i] at token slot i of every block."""
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (self.tokens,):
            raise ValueError(f"expected {self.tokens} token values, got shape {values.shape}")
        return np.tile(np.concatenate([values, np.zeros(self.block_size - self.tokens)]), self.blocks_per_ct)


def copy_first_half(v: np.ndarray, T: int) -> np.ndarray:
    """v + rot(v, -T): with zero second halves, every block becomes [x, x] (one rotation)."""
    return v + rot(v, -T)
