"""A toy student for fast end-to-end runs (tests, the small notebook settings).

Random weights, 12 words, one layer, degree-2 fits: it compiles at N = 8192
into a circuit that runs encrypted in about a second, exercising every
stage (packing, attention shifts, refreshes, pooling) of the real one.
"""

from __future__ import annotations

from pathlib import Path

import torch

from he_inhibitor.model.nonlinear import PolySpec
from he_inhibitor.model.student import Student, StudentConfig, save_student
from he_inhibitor.vocab import SPECIALS, make_tokenizer

TOY_WORDS = ["a", "good", "bad", "movie", "film", "great", "awful", "not", "very", "fun", "dull", "plot"]


def toy_student(directory: str | Path, attention: str = "inhibitor", seed: int = 0) -> Path:
    """Write a random toy student (config, weights, tokenizer) into ``directory``."""
    torch.manual_seed(seed)
    vocab = list(SPECIALS) + TOY_WORDS
    cfg = StudentConfig(vocab_size=len(vocab), max_len=16, d_model=16, n_heads=4, d_ff=32, n_layers=1,
                        dropout=0.0, attention=attention, abs_poly=PolySpec(2), relu_poly=PolySpec(2))
    out = Path(directory)
    save_student(Student(cfg).eval(), out, half=False)
    make_tokenizer(vocab).save(str(out / "tokenizer.json"))
    return out
