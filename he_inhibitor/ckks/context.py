"""SEAL contexts and level bookkeeping for CKKS parameter sets."""

from __future__ import annotations

import tenseal.sealapi as seal

from .params import CkksParams, InsecureParametersError

Ciphertext = seal.Ciphertext  # the SEAL types, for callers that name them without importing SEAL
Plaintext = seal.Plaintext
SEALContext = seal.SEALContext


def make_context(params: CkksParams) -> seal.SEALContext:
    """A SEALContext that SEAL itself also checked at 128-bit security."""
    parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(params.poly_modulus_degree)
    parms.set_coeff_modulus(seal.CoeffModulus.Create(params.poly_modulus_degree, list(params.coeff_bits)))
    context = seal.SEALContext(parms, True, seal.SEC_LEVEL_TYPE.TC128)
    if not context.parameters_set():
        raise InsecureParametersError(f"SEAL rejected the parameters: {context.parameters_error_message()}")
    return context


def parms_id_at(context: seal.SEALContext, level: int) -> list[int]:
    """parms_id of the data level with chain index `level` (depth = highest, 0 = last)."""
    data = context.first_context_data()
    if not 0 <= level <= data.chain_index():
        raise ValueError(f"level {level} outside [0, {data.chain_index()}]")
    while data.chain_index() > level:
        data = data.next_context_data()
    return data.parms_id()


def level_of(context: seal.SEALContext, ct: seal.Ciphertext) -> int:
    """Chain index of a ciphertext: how many rescales it can still take."""
    return context.get_context_data(ct.parms_id()).chain_index()


def galois_elements(context: seal.SEALContext, steps: list[int]) -> list[int]:
    """Galois elements of the given slot-rotation steps.

    sealapi's KeyGenerator.create_galois_keys(list) takes *elements*, not steps
    (pybind picks the uint32 overload), so the conversion must be explicit.
    """
    return list(context.key_context_data().galois_tool().get_elts_from_steps(list(steps)))


def level_scales(context: seal.SEALContext, scale: float) -> dict[int, float]:
    """The scale every ciphertext at each level carries: Delta_top = scale, Delta_{l-1} = Delta_l^2 / q_l.

    With these level-specific scales a product of two ciphertexts at level l,
    rescaled by q_l, lands on exactly Delta_{l-1}: scales never need to be
    overwritten (which would cost a relative error |Delta/q - 1| per product,
    amplified ~n^2-fold by Chebyshev recurrences).  The drift from 2^40 stays
    below 1e-4 relative over 8 levels, irrelevant for precision.
    """
    data = context.first_context_data()
    scales = {data.chain_index(): float(scale)}
    while data.chain_index() > 0:
        q = float(data.parms().coeff_modulus()[-1].value())
        scales[data.chain_index() - 1] = scales[data.chain_index()] ** 2 / q
        data = data.next_context_data()
    return scales
