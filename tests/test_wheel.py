"""The built wheel is self-contained: installed (not editable) into a fresh virtual environment, its
`he-inhibitor predict` finds the shipped circuit and classifies a sentence from another directory.

The venv sees the system site-packages (numpy, tenseal, ...) so nothing is downloaded; the package
itself must come from the wheel, which the test checks before trusting the prediction."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list, cwd: Path, timeout: int = 600) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HE_INHIBITOR_DATA")}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_installed_wheel_predicts_from_another_directory(tmp_path):
    # Build from a copy so the shared checkout gets no build/ or egg-info churn.
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist")
    shutil.copytree(ROOT / "he_inhibitor", src / "he_inhibitor", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)],
         cwd=tmp_path)
    (wheel,) = wheels.glob("he_inhibitor-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], cwd=tmp_path)
    py = venv / "bin" / "python"
    _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", str(wheel)], cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run([str(py), "-c", "import he_inhibitor.paths as p; print(p.SHIPPED_BUNDLE)"], cwd=elsewhere).strip()
    assert Path(where).is_relative_to(venv), f"he_inhibitor imported from {where}, not from the wheel"

    out = _run([str(venv / "bin" / "he-inhibitor"), "predict", "--mode", "plain", "--json", "a fine film"], cwd=elsewhere)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["mode"] == "plain"
    assert result["label"] in ("negative", "positive")
    assert len(result["logits"]) == 2
