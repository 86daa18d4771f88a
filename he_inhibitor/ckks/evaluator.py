"""Server-side CKKS arithmetic with explicit level and scale management.

Invariants every method keeps, so callers can combine results freely:
- a ciphertext at level l has scale exactly Delta_l (context.level_scales) and
  size 2 (relinearized);
- binary operations first bring the higher-level operand down to the lower
  level with `drop_to`, which keeps the invariant exactly;
- `mul`/`square` relinearize and rescale once: Delta_l^2 / q_l = Delta_{l-1};
- `lin` (a plan's scalar or slot-vector combination of ciphertexts) encodes each
  constant at the scale that lands its one rescale on Delta exactly, and
  `drop_to` multiplies by 1 so encoded.
No scale is ever overwritten, so no approximation enters through scales.
The method names and depth rules match `he_inhibitor.approx.plan.Backend`, so
an evaluation plan runs on ciphertexts as `plan.run(ct, evaluator)`.

The circuit IR rescales explicitly (a product is one node, its rescale
another), so the circuit's SEAL backend (circuit/encrypted.py) also uses the
unrescaled primitives below the plan backend: `encode` at a level and scale,
`plain_scale` (the scale rule above for a plaintext factor), `add_encoded`,
`sub_encoded`, `multiply_encoded`, `multiply` (relinearized) and `rescale`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import tenseal.sealapi as seal

from .context import level_of, level_scales, parms_id_at
from .keys import PublicContext


class CkksEvaluator:
    """mul/square/lin/add/sub/add_const/add_plain/rotate/drop_to on one PublicContext."""

    def __init__(self, public: PublicContext) -> None:
        self.public = public
        self.context = public.context
        self.scales = level_scales(self.context, public.params.scale)
        self.encoder = seal.CKKSEncoder(self.context)
        self._ev = seal.Evaluator(self.context)

    # ---- levels -------------------------------------------------------------
    def level(self, ct: seal.Ciphertext) -> int:
        """Chain index: rescales still available (0 = the last data level)."""
        return level_of(self.context, ct)

    def drop_to(self, ct: seal.Ciphertext, level: int) -> seal.Ciphertext:
        """`ct` at a lower `level`, with that level's scale.

        A bare mod-switch would keep the old scale; instead the ciphertext is
        mod-switched to level + 1 and multiplied by 1 encoded at the scale that
        makes the final rescale land on Delta_level exactly.
        """
        here = self.level(ct)
        if level == here:
            return ct
        if level > here:
            raise ValueError(f"cannot raise a ciphertext from level {here} to {level}")
        src = ct
        if here > level + 1:
            src = seal.Ciphertext()
            self._ev.mod_switch_to(ct, parms_id_at(self.context, level + 1), src)
        return self._scaled_product(src, 1.0, level)

    def prime(self, level: int) -> float:
        """q_level: the prime a rescale at chain index `level` drops."""
        data = self.context.get_context_data(parms_id_at(self.context, level))
        return float(data.parms().coeff_modulus()[-1].value())

    def plain_scale(self, level: int, ct_scale: float) -> float:
        """The scale to encode a plaintext factor of a ciphertext at `level` (scale ct_scale) at, so that
        the product's rescale lands on Delta_{level-1} exactly."""
        return self.scales[level - 1] * self.prime(level) / ct_scale

    def _scaled_product(self, ct: seal.Ciphertext, value: float | Sequence[float], level: int) -> seal.Ciphertext:
        """ct * value, rescaled to `level` = level(ct) - 1 with scale Delta_level."""
        pt_scale = self.plain_scale(level + 1, ct.scale)
        pt = seal.Plaintext()
        self.encoder.encode(value if isinstance(value, float) else list(value), ct.parms_id(), pt_scale, pt)
        out = seal.Ciphertext()
        self._ev.multiply_plain(ct, pt, out)
        self._ev.rescale_to_next_inplace(out)
        out.scale = self.scales[level]  # equal up to float rounding; make it bit-exact
        return out

    def _aligned(self, a: seal.Ciphertext, b: seal.Ciphertext) -> tuple[seal.Ciphertext, seal.Ciphertext]:
        low = min(self.level(a), self.level(b))
        return self.drop_to(a, low), self.drop_to(b, low)

    def _relin_rescale(self, prod: seal.Ciphertext, level: int) -> seal.Ciphertext:
        self._ev.relinearize_inplace(prod, self.public.relin_keys)
        self._ev.rescale_to_next_inplace(prod)
        prod.scale = self.scales[level]
        return prod

    # ---- plan backend (see he_inhibitor.approx.plan) -----------------------
    def mul(self, a: seal.Ciphertext, b: seal.Ciphertext) -> seal.Ciphertext:
        """ct*ct, relinearize, rescale: one level."""
        a, b = self._aligned(a, b)
        out = seal.Ciphertext()
        self._ev.multiply(a, b, out)
        return self._relin_rescale(out, self.level(a) - 1)

    def square(self, a: seal.Ciphertext) -> seal.Ciphertext:
        out = seal.Ciphertext()
        self._ev.square(a, out)
        return self._relin_rescale(out, self.level(a) - 1)

    def lin(self, xs: Sequence[seal.Ciphertext], consts: Sequence[float | np.ndarray], drop: int = 0,
            encode: Callable[[float | np.ndarray, int, float], seal.Plaintext] | None = None) -> seal.Ciphertext:
        """consts[0] + sum consts[i] * xs[i-1] (scalars or slot vectors), `drop` + 1 levels below the
        shallowest x, with one rescale.

        Each x is mod-switched (exact, no rescale) to the level above the
        result and multiplied by its constant encoded at the scale that puts
        every product at Delta_result * q: the products add as they are and
        one rescale lands the sum on Delta_result exactly. `encode(values,
        level, scale)` (default `self.encode`) lets a caller reuse plaintexts.
        """
        encode = encode or self.encode
        level = min(self.level(x) for x in xs) - 1 - drop
        if level < 0:
            raise ValueError(f"lin needs {drop + 1} level(s) below its inputs; the chain has no more")
        target = self.scales[level] * self.prime(level + 1)
        acc: seal.Ciphertext | None = None
        for x, c in zip(xs, consts[1:]):
            src = x
            if self.level(x) > level + 1:
                src = seal.Ciphertext()
                self._ev.mod_switch_to(x, parms_id_at(self.context, level + 1), src)
            prod = seal.Ciphertext()
            self._ev.multiply_plain(src, encode(c, level + 1, target / x.scale), prod)
            prod.scale = target  # x.scale * (target / x.scale), up to float rounding
            if acc is None:
                acc = prod
            else:
                self._ev.add_inplace(acc, prod)
        if acc is None:
            raise ValueError("lin of no terms")
        if np.any(consts[0]):
            self._ev.add_plain_inplace(acc, encode(consts[0], level + 1, target))
        self._ev.rescale_to_next_inplace(acc)
        acc.scale = self.scales[level]
        return acc

    lin_plain = lin  # a masked plan's lin: its constants are slot vectors

    def drop(self, a: seal.Ciphertext, levels: int) -> seal.Ciphertext:
        """`a`, `levels` levels lower (a plan's explicit alignment; see drop_to)."""
        return self.drop_to(a, self.level(a) - levels)

    def add(self, a: seal.Ciphertext, b: seal.Ciphertext) -> seal.Ciphertext:
        a, b = self._aligned(a, b)
        out = seal.Ciphertext()
        self._ev.add(a, b, out)
        return out

    def sub(self, a: seal.Ciphertext, b: seal.Ciphertext) -> seal.Ciphertext:
        a, b = self._aligned(a, b)
        out = seal.Ciphertext()
        self._ev.sub(a, b, out)
        return out

    def add_const(self, a: seal.Ciphertext, c: float) -> seal.Ciphertext:
        pt = seal.Plaintext()
        self.encoder.encode(float(c), a.parms_id(), a.scale, pt)
        out = seal.Ciphertext()
        self._ev.add_plain(a, pt, out)
        return out

    # ---- vectors and rotations ----------------------------------------------
    def add_plain(self, a: seal.Ciphertext, values: Sequence[float]) -> seal.Ciphertext:
        pt = seal.Plaintext()
        self.encoder.encode(list(values), a.parms_id(), a.scale, pt)
        out = seal.Ciphertext()
        self._ev.add_plain(a, pt, out)
        return out

    def rotate(self, a: seal.Ciphertext, step: int) -> seal.Ciphertext:
        """Cyclic left rotation of the slots by `step` (needs its Galois key)."""
        if step not in self.public.rotation_steps:
            raise KeyError(f"no Galois key for step {step}; keys exist for {self.public.rotation_steps}")
        out = seal.Ciphertext()
        self._ev.rotate_vector(a, step, self.public.galois_keys, out)
        return out

    # ---- the circuit's primitives: products await an explicit rescale ------
    def encode(self, values: float | np.ndarray, level: int, scale: float) -> seal.Plaintext:
        """A scalar, or a vector broadcast to every slot, at chain index `level` and `scale`."""
        pt = seal.Plaintext()
        v = values if np.isscalar(values) else np.broadcast_to(values, (self.public.params.slots,)).tolist()
        self.encoder.encode(float(v) if np.isscalar(v) else v, parms_id_at(self.context, level), scale, pt)
        return pt

    def add_encoded(self, a: seal.Ciphertext, pt: seal.Plaintext) -> seal.Ciphertext:
        out = seal.Ciphertext()
        self._ev.add_plain(a, pt, out)
        return out

    def sub_encoded(self, a: seal.Ciphertext, pt: seal.Plaintext) -> seal.Ciphertext:
        out = seal.Ciphertext()
        self._ev.sub_plain(a, pt, out)
        return out

    def multiply_encoded(self, a: seal.Ciphertext, pt: seal.Plaintext) -> seal.Ciphertext:
        """ct * pt, awaiting its rescale (pt encoded at plain_scale for an exact one)."""
        out = seal.Ciphertext()
        self._ev.multiply_plain(a, pt, out)
        return out

    def multiply(self, a: seal.Ciphertext, b: seal.Ciphertext) -> seal.Ciphertext:
        """ct * ct of equal levels, relinearized, awaiting its rescale."""
        out = seal.Ciphertext()
        self._ev.multiply(a, b, out)
        self._ev.relinearize_inplace(out, self.public.relin_keys)
        return out

    def rescale(self, a: seal.Ciphertext) -> seal.Ciphertext:
        """Drop the last prime; the result carries Delta_{level-1} (exact when the factors followed plain_scale)."""
        level = self.level(a)
        out = seal.Ciphertext()
        self._ev.rescale_to_next(a, out)
        out.scale = self.scales[level - 1]  # equal up to float rounding
        return out

    def to_last(self, a: seal.Ciphertext) -> seal.Ciphertext:
        """Mod-switched to the last level: fewer limbs, same message (a reply the client only decrypts)."""
        out = seal.Ciphertext()
        self._ev.mod_switch_to(a, self.context.last_parms_id(), out)
        return out
