"""|x| and ReLU in two forms that share one interface.

``exact`` is the true function. ``poly`` is *the very polynomial the circuit
evaluates*: ``B * p(x / B)`` with ``p`` a fit on [-1, 1] from
``he_inhibitor.approx``. Training the student in ``poly`` form makes the
encrypted model the trained model rather than an approximation of it.

Each module also watches its inputs: the running maximum of ``|x| / B``
(for calibrating ``B`` and for the simulator's range report), two range
penalties that push inputs back inside ``[-(1 - margin) B, (1 - margin) B]``
(``range_stats``: a mean over every element, and one over each sentence's
largest input),
and, on request, a histogram of ``x / B`` from which a ``weighted`` fit is
made (``he_inhibitor.approx.weighted_fit``). A weighted fit depends on data,
not only on its degree, so its coefficients are a buffer saved with the
weights (``poly_coeffs``): the circuit compiles those very coefficients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from he_inhibitor.approx.basis import cheb_to_monomial
from he_inhibitor.approx.fit import DATA_METHODS, DEFAULT_WEIGHT_FLOOR, METHODS, series_fit, weighted_fit
from he_inhibitor.approx.fit import fit as fit_on_interval

FORMS = ("exact", "poly")


DENSITY_BINS = 400  # histogram of x / B over [-1, 1] for weighted fits: 0.005 B per bin


@dataclass(frozen=True)
class PolySpec:
    """Which fit a non-linearity uses in ``poly`` form (the interval is always [-1, 1]).

    ``method``: an ``he_inhibitor.approx`` method, or ``weighted`` (fitted to the
    calibration data's inputs; ``floor`` is its uniform weight relative to the peak).
    """

    degree: int
    method: str = "remez"
    floor: float = DEFAULT_WEIGHT_FLOOR

    def __post_init__(self) -> None:
        # refused here, at config load, not after an exact phase when calibration first needs the fit
        if self.method not in METHODS + DATA_METHODS:
            raise ValueError(f"unknown fit method {self.method!r}; expected one of {METHODS + DATA_METHODS}")
        if int(self.degree) != self.degree or self.degree < 1:
            raise ValueError(f"fit degree must be a positive integer, not {self.degree!r}")
        if not self.floor > 0:
            raise ValueError(f"a weighted fit's floor must be > 0, not {self.floor!r}")

    @property
    def weighted(self) -> bool:
        return self.method in DATA_METHODS


class Nonlinearity(nn.Module):
    """``kind`` in {"abs", "relu"} on the interval [-bound, bound]."""

    def __init__(self, kind: str, bound: float, spec: PolySpec, margin: float = 0.05) -> None:
        super().__init__()
        if kind not in ("abs", "relu"):
            raise ValueError(f"unknown non-linearity {kind!r}; expected 'abs' or 'relu'")
        self.kind = kind
        self.spec = spec
        self.margin = margin
        self.form = "exact"
        # A buffer, so calibration travels with the state dict.
        self.register_buffer("bound", torch.tensor(float(bound)))
        self.register_buffer("max_ratio", torch.zeros(()))
        self.penalties: RangePenalties | None = None  # of the last training forward
        self.density: torch.Tensor | None = None  # histogram of x / B while collecting
        self._fit = None
        self._parts: tuple[list[float], list[float]] | None = None
        if spec.weighted:
            self._add_coeff_buffer()

    def _add_coeff_buffer(self) -> None:
        # all zeros until fit_to_density: poly form refuses to run on an unfitted weighted fit
        self.register_buffer("poly_coeffs", torch.zeros(self.spec.degree + 1, dtype=torch.float64))

    @property
    def fit(self):
        """The approximation-library fit on [-1, 1] (built lazily: exact form never needs it)."""
        if self._fit is None:
            if self.spec.weighted:
                coeffs = self.poly_coeffs.double().tolist()
                if not any(coeffs):
                    raise RuntimeError(f"{self.kind}: its weighted fit is not made yet (calibrate the student first)")
                self._fit = series_fit(self.kind, coeffs, self.spec.method)
            else:
                self._fit = fit_on_interval(self.kind, self.spec.degree, (-1.0, 1.0), self.spec.method)
        return self._fit

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        key = prefix + "poly_coeffs"
        if self.spec.weighted and (key not in state_dict or not state_dict[key].any()):
            # weights from before the fit was made (an exact-phase checkpoint, whose zeros may be of
            # another degree: a degree is only chosen at calibration): stay unfitted, and poly form
            # refuses to run until calibration fits it. A fitted buffer of another degree still fails.
            state_dict[key] = torch.zeros_like(self.poly_coeffs)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._fit, self._parts = None, None  # loaded coefficients replace any cached fit

    def collect_density(self, on: bool) -> None:
        """Start (a zeroed histogram) or stop accumulating the histogram of x / B."""
        self.density = torch.zeros(DENSITY_BINS, dtype=torch.float64) if on else None

    def fit_to_density(self) -> None:
        """Make the weighted fit from the histogram collected since ``collect_density(True)``."""
        if not self.spec.weighted:
            raise ValueError(f"{self.kind}: fit method {self.spec.method!r} is not fitted to data")
        if self.density is None or float(self.density.sum()) == 0:
            raise RuntimeError(f"{self.kind}: no inputs observed to fit to (collect_density first)")
        f = weighted_fit(self.kind, self.spec.degree, self.density.numpy(), self.spec.floor)
        self.poly_coeffs.copy_(torch.tensor(f.coeffs, dtype=self.poly_coeffs.dtype))
        self._fit, self._parts = None, None

    def parity_parts(self) -> tuple[list[float], list[float]]:
        """p(t) = E(t^2) + t O(t^2): monomial coefficients of E and O, lowest first.

        Training evaluates the fit this way, by Horner in t^2: a third of the
        tensor operations of Clenshaw on the full degree, the same polynomial up to
        the monomial basis's rounding on [-1, 1]: 1e-7 at degree 30, far below
        any fit's error (1e-2).
        """
        if self._parts is None:
            f = self.fit
            if f.stages or f.basis != "chebyshev":
                raise ValueError(f"{self.kind}: only single-stage Chebyshev fits have a parity form")
            mono = cheb_to_monomial(f.coeffs, f.interval)
            # trailing zeros dropped here, once: an even fit's odd part is empty, and the evaluation
            # (``parity_eval``, also inside a compiled kernel) has no data-dependent branch
            self._parts = (_trimmed(mono[0::2]) or [0.0], _trimmed(mono[1::2]))
        return self._parts

    def parity_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``parity_parts`` as float32 tensors: the compiled attention kernel takes them as inputs,
        so that new coefficients (another layer, a refit) reuse the compiled code."""
        even, odd = self.parity_parts()
        return torch.tensor(even, dtype=torch.float32), torch.tensor(odd, dtype=torch.float32)

    def poly(self, t: torch.Tensor) -> torch.Tensor:
        """The fit on [-1, 1] at t = x / B."""
        if self.fit.stages:
            return self.fit(t)
        return ParityPoly.apply(t, *self.parity_parts())

    def set_spec(self, spec: PolySpec) -> None:
        """Use another fit in poly form (drops the cached fit and its parity parts).

        A weighted spec starts unfitted: ``fit_to_density`` makes it.
        """
        self.spec, self._fit, self._parts = spec, None, None
        if spec.weighted:
            self._add_coeff_buffer()
        elif "poly_coeffs" in self._buffers:
            del self._buffers["poly_coeffs"]

    def set_form(self, form: str) -> None:
        if form not in FORMS:
            raise ValueError(f"unknown form {form!r}; expected one of {FORMS}")
        self.form = form

    def observe(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """Record the range of ``x`` (and, while training, its range penalties) without evaluating.

        Called by ``forward``, and directly where the exact form computes
        something else (dot-product attention's softmax), so that calibration
        still sees the inputs the polynomial will get. ``valid``: 1 where an
        element belongs to the sentence (not padding), broadcastable to ``x``,
        whose first axis is the sentence (``range_stats``).
        """
        bound = self.bound.to(x.dtype)
        if self.density is not None:
            t = (x.detach() / bound).clamp(-1.0, 1.0).double()
            self.density += torch.histc(t, DENSITY_BINS, -1.0, 1.0)
        self.record(*range_stats(x / bound, 1.0 - self.margin, self.training, valid))

    def record(self, ratio: torch.Tensor, penalties: RangePenalties | None) -> None:
        """Take max |x| / B and the range penalties of one forward (``range_stats``), computed by the caller.

        ``observe`` computes them here; the compiled attention kernel
        (``attention.inhibit_poly``) inside its own pass over the inputs.
        """
        self.max_ratio = torch.maximum(self.max_ratio, ratio.to(self.max_ratio.dtype))
        if self.training:
            self.penalties = penalties

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """x -> |x| or ReLU(x) in this module's form; ``valid`` as in ``observe``."""
        self.observe(x, valid)
        bound = self.bound.to(x.dtype)
        if self.form == "exact":
            return x.abs() if self.kind == "abs" else torch.relu(x)
        t = x / bound
        if self.training:
            # Outside [-1, 1] a degree-14 fit grows like T_14(t): one stray input at 1.2 B gives
            # ~3000 B and the next layers overflow. While training, such inputs are held at the
            # edge (the range penalty pulls them back in); at inference the polynomial runs
            # bare, exactly as the circuit evaluates it.
            t = t.clamp(-1.0, 1.0)
        return bound * self.poly(t)

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind}, form={self.form}, bound={float(self.bound):.4g}, "
            f"degree={self.spec.degree}, method={self.spec.method}"
        )


class RangePenalties(NamedTuple):
    """The two range penalties of one input t = x / B (``range_stats``); ``LossWeights`` weighs each."""

    mean: torch.Tensor  # mean(relu(|t| - edge)^2) over every element
    row_max: torch.Tensor  # mean over sentences of relu(max |t| - edge)^2, the max over the sentence's own elements


def range_stats(t: torch.Tensor, edge: float, training: bool,
                valid: torch.Tensor | None = None) -> tuple[torch.Tensor, RangePenalties | None]:
    """max |t| (no gradient) and, while training, the range penalties of t = x / B.

    The mean penalty is spread over every element, so one input far outside
    among a sentence's thousands of pairs barely registers; yet one input
    beyond B is enough to spoil a sentence (the polynomial runs bare in the
    circuit). The row penalty sees exactly that: each sentence's largest
    input (t's first axis is the sentence; ``valid``, broadcastable to t, is
    0 at padding, whose garbage the circuit zeroes and need not stay in
    range). Both are passes over the whole input: evaluation does not pay
    for them.
    """
    ratio = t.detach().abs().amax() if t.numel() else t.new_zeros(())
    if not training:
        return ratio, None
    a = t.abs()
    excess = torch.relu(a - edge)
    rows = (a if valid is None else a * valid).reshape(a.shape[0] if a.dim() else 1, -1)  # [B, everything else]
    worst = rows.amax(1) if rows.numel() else rows.new_zeros(rows.shape[0])  # [B]
    return ratio, RangePenalties((excess * excess).mean(), torch.relu(worst - edge).square().mean())


def _trimmed(coeffs) -> list[float]:
    """Coefficients as floats without trailing zeros (empty if all are zero)."""
    out = [float(c) for c in coeffs]
    while out and out[-1] == 0.0:
        out.pop()
    return out


def _horner(coeffs: Sequence[float] | torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """sum_k c_k u^k for >= 1 coefficients, lowest first (floats, or a 1-D tensor whose loop unrolls
    when compiled)."""
    if len(coeffs) == 1:
        return 0.0 * u + coeffs[0]
    acc = coeffs[-1] * u + coeffs[-2]
    for i in range(len(coeffs) - 3, -1, -1):
        acc = acc * u + coeffs[i]
    return acc


def parity_eval(even: Sequence[float] | torch.Tensor, odd: Sequence[float] | torch.Tensor,
                t: torch.Tensor) -> torch.Tensor:
    """E(t^2) + t O(t^2) (``Nonlinearity.parity_parts``: ``even`` non-empty, an empty ``odd`` skipped)."""
    u = t * t
    out = _horner(even, u)
    if len(odd):
        out = out + t * _horner(odd, u)
    return out


class ParityPoly(torch.autograd.Function):
    """p(t) = E(t^2) + t O(t^2) with an analytic derivative.

    Autograd through Horner would keep every intermediate of the
    [B, H, T, T, d_h] attention tensors; this keeps only t and evaluates
    p'(t) = 2t E'(t^2) + O(t^2) + 2t^2 O'(t^2) in the backward pass.
    """

    @staticmethod
    def forward(ctx, t: torch.Tensor, even: list[float], odd: list[float]) -> torch.Tensor:
        ctx.save_for_backward(t)
        ctx.parts = (even, odd)
        return parity_eval(even, odd, t)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (t,) = ctx.saved_tensors
        even, odd = ctx.parts
        d_even = [2.0 * j * c for j, c in enumerate(even)][1:]  # d/dt E(t^2) = t * sum 2j e_j t^(2j-2)
        d_odd = [(2.0 * j + 1.0) * c for j, c in enumerate(odd)]  # d/dt t O(t^2) = sum (2j+1) o_j t^(2j)
        deriv = parity_eval(d_odd or [0.0], d_even, t)
        return grad * deriv, None, None
