"""CKKS noise per primitive, and the per-slot error algebra the simulator propagates.

Each primitive's fresh error term is Gaussian-like with a standard deviation
that follows from SEAL's distributions (a coefficient error of variance v
gives a slot error of variance N*v after decoding): secret key uniform
ternary (variance 2/3), error of standard deviation sigma = 3.2.

* encode: rounding the scaled message to integer coefficients, variance 1/12.
* fresh: symmetric (secret-key) encryption, as the client does: one error
  polynomial of variance sigma^2, plus encoding.
* rescale: dividing by a prime rounds: tau0 + tau1*s, variance (1 + 2N/3)/12.
* key switch (rotation, relinearisation): SEAL decomposes the ciphertext into
  one digit per data prime q_i and divides by the special prime P: the digits
  times the key errors give N*sigma*sqrt(sum q_i^2 / 12)/P per slot, plus the
  same rounding as a rescale. With P 2^20 above the largest data prime the
  first term vanishes; with P equal to it (50/50-bit ends) it dominates
  (measured: a rotation then costs ~100x a rescale's rounding, with heavy
  tails), which is why `params.Precision` takes a 60-bit special prime.

`Err` carries two per-slot bounds through the circuit: `wc`, the worst case
(every term at k standard deviations, all aligned: |W| propagated through
linear maps), and `var`, the variance under independent errors (W^2
propagated), whose k-sigma value is the predicted bound. Worst-case bounds
compound by the l1 norm of every weight row and are loose by orders of
magnitude after a few layers; the variance model is the estimate that the
encrypted measurement is checked against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NoiseModel:
    n: int  # ring degree N
    scale_bits: int
    data_bits: tuple[int, ...] = ()  # the data primes' bit sizes (key-switch digits)
    special_bits: int = 60
    sigma: float = 3.2
    k: float = 6.0  # standard deviations in a bound

    @classmethod
    def of(cls, params) -> NoiseModel:
        """The model for a `he_inhibitor.ckks.CkksParams`."""
        bits = tuple(params.coeff_bits)
        return cls(params.poly_modulus_degree, params.scale_bits, bits[:-1], bits[-1])

    @property
    def scale(self) -> float:
        return 2.0 ** self.scale_bits

    @property
    def encode(self) -> float:
        """Standard deviation of a slot after encoding a vector."""
        return math.sqrt(self.n / 12) / self.scale

    @property
    def fresh(self) -> float:
        return math.hypot(self.sigma * math.sqrt(self.n) / self.scale, self.encode)

    @property
    def rounding(self) -> float:
        return math.sqrt(self.n * (1 + 2 * self.n / 3) / 12) / self.scale

    def key_switch(self, degree: int) -> float:
        """Added by a rotation/relinearisation of a ciphertext at scale degree `degree`."""
        digits = math.sqrt(sum(4.0 ** b for b in self.data_bits) / 12) / 2.0 ** self.special_bits
        decomposition = self.n * self.sigma * digits / self.scale
        return math.hypot(self.rounding, decomposition) / self.scale ** (degree - 1)

    @property
    def scalar_encode(self) -> float:
        """A scalar constant is rounded once: at most 1/2 at scale Delta (uniform: sd 1/sqrt(12))."""
        return 1.0 / math.sqrt(12) / self.scale


class Err:
    """Per-slot error: worst-case bound `wc` and variance `var` (vectors or scalars)."""

    __slots__ = ("wc", "var")

    def __init__(self, wc: np.ndarray | float, var: np.ndarray | float) -> None:
        self.wc, self.var = wc, var

    @classmethod
    def fresh(cls, sd: float, k: float, like: np.ndarray | None = None) -> Err:
        wc, var = k * sd, sd * sd
        if like is not None:
            return cls(np.full_like(like, wc), np.full_like(like, var))
        return cls(wc, var)

    def __add__(self, other: Err) -> Err:
        return Err(self.wc + other.wc, self.var + other.var)

    def scaled(self, a: np.ndarray | float) -> Err:
        """The error of a*x, for an exact plaintext factor a."""
        a = np.abs(a)
        return Err(a * self.wc, a * a * self.var)

    def times(self, other: Err, x: np.ndarray, y: np.ndarray) -> Err:
        """The error of x*y with x, y carrying self, other."""
        return self.scaled(y) + other.scaled(x) + Err(self.wc * other.wc, self.var * other.var)

    def rotated(self, k: int) -> Err:
        return Err(np.roll(self.wc, -k), np.roll(self.var, -k))

    def bound(self, k: float) -> np.ndarray:
        """The predicted k-sigma bound."""
        return k * np.sqrt(self.var)
