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

`Err` carries two things per slot through the circuit: `wc`, the worst case
(every term at k standard deviations, all aligned: |W| propagated through
linear maps), rigorous and loose by orders of magnitude after a few layers
(it compounds by the l1 norm of every weight row); and the error itself as a
Monte Carlo estimate, from which the **predicted bound** (k times its
standard deviation) follows, the figure the encrypted measurement is checked
against. The estimate keeps every correlation the circuit makes: the same
error copied into several slots by a client map, or reaching a sum along two
paths (a residual add x + f(x), two linear layers in a row). A variance
propagated as if every error were independent missed those, and fell short
of SEAL's error by up to 2.75x per slot (docs/log.md, "the noise model's
sums"). It is held in two parts:

* `v`, the per-slot variance of the fresh terms (encoding, rounding, key
  switching) added since the value's error was last shared: independent
  across slots and of every other live value, so variances add exactly and
  no draw is needed;
* `s`, `draws` joint draws of the rest ([draws, slots], or [draws, 1] for an
  error that every slot shares, such as a scalar constant's encoding), in
  float32: they estimate a spread, not a value.

Where a value's error would be shared (a node read twice, a client map that
copies slots), `Sampler.shared` draws its `v` into `s`: from then on each
draw carries one realisation of it to every place it goes, so sums over
copies add coherently. The estimate is first order in the noise except for
products of two ciphertexts (kept to second order) and linear through each
polynomial (its slope at the plain input; design §9).
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
    draws: int = 32  # joint draws of the error (Err, Sampler)

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
    """Per-slot error: worst-case bound `wc`, draws `s` and independent per-slot variance `v` (module docstring).

    Each may be a scalar where it is the same in every slot (0.0: none); the
    approximation error carries `wc` alone.
    """

    __slots__ = ("wc", "s", "v")

    def __init__(self, wc: np.ndarray | float, s: np.ndarray | float = 0.0, v: np.ndarray | float = 0.0) -> None:
        self.wc, self.s, self.v = wc, s, v

    @classmethod
    def fresh(cls, sd: float, k: float, like: np.ndarray | None = None) -> Err:
        """A fresh term of standard deviation ``sd``, independent per slot (of ``like``'s shape)."""
        if like is not None:
            return cls(np.full_like(like, k * sd), 0.0, np.full_like(like, sd * sd))
        return cls(k * sd, 0.0, sd * sd)

    def __add__(self, other: Err) -> Err:
        return Err(self.wc + other.wc, self.s + other.s, self.v + other.v)

    def scaled(self, a: np.ndarray | float) -> Err:
        """The error of a*x, for an exact plaintext factor a (signed: draws keep their correlations)."""
        return Err(np.abs(a) * self.wc, _drawn(self.s, a), self.v * np.square(a))

    def times(self, other: Err, x: np.ndarray, y: np.ndarray) -> Err:
        """The error of x*y with x, y carrying self, other (their `v` parts independent, by construction).

        The second-order term of two drawn parts is drawn; one with an independent part is itself
        independent of everything else (the fresh factor has mean zero), so its variance joins `v`.
        """
        return Err(np.abs(y) * self.wc + np.abs(x) * other.wc + self.wc * other.wc,
                   _drawn(self.s, y) + _drawn(other.s, x) + _drawn(self.s, other.s),
                   self.v * np.square(y) + other.v * np.square(x)
                   + (self.v + _mean_square(self.s)) * other.v + _mean_square(other.s) * self.v)

    def rotated(self, k: int) -> Err:
        return Err(_roll(self.wc, k), _roll(self.s, k), _roll(self.v, k))

    def variance(self) -> np.ndarray | float:
        """Per slot: the estimated variance of the error (the draws' mean square plus the independent part)."""
        return _mean_square(self.s) + self.v

    def bound(self, k: float) -> np.ndarray:
        """The predicted k-sigma bound, per slot."""
        return k * np.sqrt(self.variance())


def _drawn(s: np.ndarray | float, a: np.ndarray | float) -> np.ndarray | float:
    """Draws ``s`` times ``a``: no draws (0.0) stay none, whatever the other's shape."""
    if (np.ndim(s) == 0 and s == 0) or (np.ndim(a) == 0 and a == 0):
        return 0.0
    return s * (a.astype(np.float32) if isinstance(a, np.ndarray) else a)


def _mean_square(s: np.ndarray | float) -> np.ndarray | float:
    """Per slot, the draws' mean square (0.0 without draws)."""
    return np.einsum("ij,ij->j", s, s) / len(s) if np.ndim(s) == 2 else 0.0


def _roll(a: np.ndarray | float, k: int) -> np.ndarray | float:
    """Slot i of the result is slot i + k of ``a`` (a rotation left by k); scalars and [draws, 1] stay."""
    return a if np.ndim(a) == 0 or np.shape(a)[-1] == 1 else np.roll(a, -k, axis=-1)


class Sampler:
    """The draws of one simulation: shared scalar errors, and a value's independent part made joint.

    Each term is drawn as a random sign times its standard deviation
    (Rademacher, as in Hutchinson's trace estimator): only second moments
    are estimated, signs have the least kurtosis and so the most precise
    estimate of them, and they are five times cheaper to draw than normals.
    A slot's estimated standard deviation is then within about
    1/sqrt(2 draws) of the true one, or closer (exactly right for a single
    term). Seeded, so that a simulation is reproducible.
    """

    def __init__(self, draws: int, slots: int, seed: int = 0) -> None:
        if draws < 2:
            raise ValueError(f"the noise estimate needs at least 2 draws, not {draws}")
        self.draws, self.slots, self.rng = draws, slots, np.random.default_rng(seed)

    def scalar(self, sd: float, k: float) -> Err:
        """A scalar constant's encoding error: one value in every slot, drawn."""
        return Err(k * sd, np.float32(sd) * self._signs(1))

    def shared(self, e: Err) -> Err:
        """``e`` with its independent part drawn into the joint draws: safe to read in several places.

        The independent part is per slot even where it is held as one number (a term added alike to
        every slot), so each slot gets a draw of its own.
        """
        if not np.any(e.v):
            return e
        sd = np.sqrt(np.broadcast_to(e.v, (self.slots,))).astype(np.float32)
        return Err(e.wc, e.s + self._signs(self.slots) * sd, 0.0)

    def _signs(self, slots: int) -> np.ndarray:
        """[draws, slots] random signs, float32."""
        return (self.rng.integers(0, 2, (self.draws, slots), dtype=np.int8) * 2 - 1).astype(np.float32)
