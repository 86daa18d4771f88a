"""CKKS parameter sets, with a 128-bit security check that refuses weaker ones.

The limits are SEAL's (HomomorphicEncryption.org standard, ternary secret,
classical 128-bit security): the total coefficient-modulus bit count may not
exceed 27/54/109/218/438/881 bits at N = 1024 ... 32768.  SEAL itself only
enforces this when the context is built with sec_level TC128; checking it here
first turns a silent "parameters not set" into a typed error that says why.
"""

from __future__ import annotations

from dataclasses import dataclass

# SEAL's CoeffModulus::MaxBitCount(N, sec_level_type::tc128)
MAX_BITS_128: dict[int, int] = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}


class InsecureParametersError(ValueError):
    """The parameter set is below 128-bit security (or malformed)."""


@dataclass(frozen=True)
class CkksParams:
    """N, the coefficient-modulus chain (bit sizes, special prime last) and the scale.

    The first prime holds the final result (it must exceed the scale by the
    output's magnitude), the middle primes are dropped one per rescale (their
    bit size should equal scale_bits so that scales stay put), and the last is
    the special key-switching prime.  `depth` = number of rescales available.
    """

    poly_modulus_degree: int
    coeff_bits: tuple[int, ...]
    scale_bits: int

    def __post_init__(self) -> None:
        check_security(self)

    @property
    def depth(self) -> int:
        return len(self.coeff_bits) - 2

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def scale(self) -> float:
        return float(2**self.scale_bits)

    @property
    def total_bits(self) -> int:
        return sum(self.coeff_bits)

    @classmethod
    def for_depth(cls, depth: int, poly_modulus_degree: int = 16384, scale_bits: int = 40,
                  first_bits: int = 60, special_bits: int = 60) -> "CkksParams":
        """The chain [first, scale_bits x depth, special]; raises if it is not 128-bit secure."""
        return cls(poly_modulus_degree, (first_bits,) + (scale_bits,) * depth + (special_bits,), scale_bits)


def check_security(p: CkksParams) -> None:
    """Raise InsecureParametersError unless `p` is a valid 128-bit-secure CKKS set."""
    n = p.poly_modulus_degree
    if n not in MAX_BITS_128:
        raise InsecureParametersError(f"N = {n} is not one of {sorted(MAX_BITS_128)}")
    if len(p.coeff_bits) < 2:
        raise InsecureParametersError("the coefficient modulus needs at least a data prime and a special prime")
    if any(not 2 <= b <= 60 for b in p.coeff_bits):
        raise InsecureParametersError(f"prime bit sizes must lie in [2, 60] (SEAL), got {p.coeff_bits}")
    if p.total_bits > MAX_BITS_128[n]:
        raise InsecureParametersError(
            f"{p.total_bits} coefficient-modulus bits at N = {n} exceed the 128-bit-security limit "
            f"of {MAX_BITS_128[n]} bits; use fewer/smaller primes or a larger N")
    if not 0 < p.scale_bits < p.coeff_bits[0]:
        raise InsecureParametersError(f"scale 2^{p.scale_bits} must be below the first prime (2^{p.coeff_bits[0]})")
