"""CKKS through SEAL (`tenseal.sealapi`): parameters, keys, encryption, evaluation.

Public API:
    CkksParams(poly_modulus_degree, coeff_bits, scale_bits); CkksParams.for_depth(depth, N=16384, ...)
    InsecureParametersError, check_security(params)
    keygen(params, rotation_steps=()) -> ClientKeys
    ClientKeys: encode/encrypt/encrypt_bytes/decrypt/level/public_context(); .secret: SecretKey
    PublicContext: params, relin_keys, galois_keys, rotation_steps, to_bytes()/from_bytes()
    CkksEvaluator(public): mul, square, lin, add, sub, add_const, add_plain, rotate, drop_to,
                           drop, level; for the circuit's explicit rescales: encode,
                           plain_scale, add_encoded, sub_encoded, multiply_encoded, multiply,
                           rescale; to_last (a reply's level)
    Ciphertext, Plaintext, SEALContext: the SEAL types
    serial: to_bytes, load, ciphertext_from_bytes, compression (through temporary files)
    sealio: to_bytes, load, ciphertext, secret_key, relin_keys, galois_keys (through Linux memory files: the service)
"""

from . import sealio, serial
from .context import Ciphertext, Plaintext, SEALContext, galois_elements, level_of, level_scales, make_context, parms_id_at
from .evaluator import CkksEvaluator
from .keys import ClientKeys, PublicContext, SecretKey, keygen
from .params import MAX_BITS_128, CkksParams, InsecureParametersError, check_security

__all__ = [
    "MAX_BITS_128", "Ciphertext", "CkksEvaluator", "CkksParams", "ClientKeys", "InsecureParametersError", "Plaintext", "PublicContext", "SEALContext",
    "SecretKey", "check_security", "galois_elements", "keygen", "level_of", "level_scales", "make_context", "parms_id_at", "sealio", "serial",
]
