"""`he-inhibitor approx`: report, JSON contract, plot, exit code 2 on bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from he_inhibitor.cli import main


def test_text_report(capsys):
    assert main(["approx", "--fn", "abs", "--degree", "16", "--interval", "-1", "1", "--method", "remez"]) == 0
    out = capsys.readouterr().out
    assert "degree=16" in out and "depth=5" in out and "mults=6" in out and "max_error=0.0174" in out


@pytest.mark.parametrize("basis", ["chebyshev", "monomial"])
def test_json_contract_reproduces_error(capsys, basis):
    argv = ["approx", "--fn", "relu", "--degree", "12", "--interval", "-2", "3", "--json", "--basis", basis]
    assert main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    assert set(d) == {"fn", "method", "interval", "degree", "depth", "mults", "max_error", "basis", "coeffs"}
    assert (d["fn"], d["method"], d["interval"], d["degree"], d["basis"]) == ("relu", "remez", [-2.0, 3.0], 12, basis)
    x = np.linspace(-2.0, 3.0, 100_001)
    if basis == "chebyshev":
        y = np.polynomial.chebyshev.chebval((2 * x - 1.0) / 5.0, d["coeffs"])
    else:
        y = np.polynomial.polynomial.polyval(x, d["coeffs"])
    assert np.max(np.abs(y - np.maximum(x, 0.0))) == pytest.approx(d["max_error"], rel=1e-3)


def test_plot_writes_png(tmp_path, capsys):
    png = tmp_path / "err.png"
    assert main(["approx", "--fn", "sign", "--degree", "27", "--interval", "-1", "1", "--method", "composite",
                 "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "argv",
    [["--fn", "abs", "--degree", "16", "--interval", "1", "-1"],
     ["--fn", "abs", "--degree", "0", "--interval", "-1", "1"],
     ["--fn", "sign", "--degree", "27", "--interval", "-1", "2", "--method", "composite"],
     ["--fn", "sign", "--degree", "16", "--interval", "-1", "1"]],
)
def test_bad_arguments_exit_2_without_traceback(argv, capsys):
    assert main(["approx", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("he-inhibitor approx: error:") and "Traceback" not in err


def test_unparseable_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["approx", "--fn", "abs", "--degree", "x", "--interval", "-1", "1"])
    assert exc.value.code == 2
