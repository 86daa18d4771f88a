"""Calibration of the polynomial intervals: each bound B from the inputs its non-linearity sees on training data.

A polynomial approximates |x| or ReLU only inside [-B, B]; beyond it, it
explodes. Calibration observes fixed training batches, sets B a margin above
the largest input, and makes the weighted fits from the histogram of each
non-linearity's inputs, first in exact form and then in poly form, one
non-linearity at a time in evaluation order, so that each sees what the
polynomials before it (and the circuit) will feed it.
"""

from __future__ import annotations

import math

import torch
from tqdm import tqdm

from he_inhibitor.model.nonlinear import Nonlinearity
from he_inhibitor.model.student import Student
from he_inhibitor.train.batches import Batches


@torch.no_grad()
def _observe(student: Student, batches: Batches, n_batches: int, longest: bool, min_length: int = 0) -> None:
    """Forward ``n_batches`` fixed training batches (random rows of at least ``min_length`` word pieces, or the
    longest rows) with every max_ratio reset first."""
    for _, m in student.nonlinearities():
        m.max_ratio.zero_()
    for rows in batches.longest(n_batches) if longest else batches.order(10_000, min_length)[:n_batches]:
        b = batches.collate(rows)
        student(b["ids"], b["mask"])


@torch.no_grad()
def _call_order(student: Student, batches: Batches, n_batches: int, longest: bool, min_length: int = 0) -> list:
    """The non-linearities in the order they first see inputs, observed (``_observe``) in the current form.

    Watched at ``Nonlinearity.observe``, not at forward: dot-product
    attention's ReLU substitute only observes its scores in exact form (the
    softmax computes the output), and must be fitted all the same.
    """
    order: list = []

    def watch(m: Nonlinearity) -> None:
        observe = m.observe

        def first_seen(x: torch.Tensor, valid: torch.Tensor | None = None) -> None:
            if m not in order:
                order.append(m)
            observe(x, valid)

        m.observe = first_seen  # an instance attribute over the method, removed below

    modules = [m for _, m in student.nonlinearities()]
    for m in modules:
        watch(m)
    try:
        _observe(student, batches, n_batches, longest, min_length)
    finally:
        for m in modules:
            del m.observe
    return order


@torch.no_grad()
def refit_weighted(student: Student, batches: Batches, n_batches: int, longest: bool = False,
                   min_length: int = 0) -> int:
    """Refit every weighted non-linearity at its current bound, in call order, in poly form; returns how many.

    Each sees its inputs with the polynomials before it already refitted, as
    in the circuit. Run after bounds move (``he-inhibitor calibrate``).
    """
    student.eval()
    student.set_form("exact")
    order = _call_order(student, batches, 1, longest, min_length)
    try:
        for m in tqdm(order, desc="refit weighted fits", unit="non-linearity", leave=False):  # those before m in poly form, m and those after it still exact
            if m.spec.weighted:
                _fit_densities(student, batches, n_batches, longest, [m], min_length)
            m.set_form("poly")
    finally:
        student.set_form("exact")
    return sum(m.spec.weighted for m in order)


@torch.no_grad()
def _fit_densities(student: Student, batches: Batches, n_batches: int, longest: bool, modules: list,
                   min_length: int = 0) -> None:
    """Refit each weighted non-linearity in ``modules`` to the histogram of its inputs over ``n_batches``."""
    if not modules:
        return
    for m in modules:
        m.collect_density(True)
    try:
        _observe(student, batches, n_batches, longest, min_length)
        for m in modules:
            m.fit_to_density()
    finally:
        for m in modules:
            m.collect_density(False)


@torch.no_grad()
def calibrate(student: Student, batches: Batches, n_batches: int, margin: float, poly_batches: int = 0,
              longest: bool = False, min_length: int = 0, fit_min_length: int | None = None) -> dict[str, float]:
    """Set each bound B to (1 + margin) x the largest input seen on training data; returns the bounds.

    ``longest``: observe the longest training rows instead of random batches
    (the inhibitor sums over keys, so ranges grow with sentence length).
    ``min_length``: random batches of the rows of at least that many word
    pieces. Training rows are phrases (median 10 pieces) while the circuit
    serves sentences (dev: median 25), and a weighted fit spends its degree
    where its calibration inputs fall, so sentence-length rows put it where
    the sentences' inputs are (docs/log.md, "a fresh machine").

    Weighted fits (``PolySpec.method == "weighted"``) are made here too, from
    the histogram of each one's inputs at its final bound, over random rows
    of at least ``fit_min_length`` pieces (None: ``min_length``'s rows).
    Decoupled because the two ask different things of the rows: a bound must
    cover every input, so it wants every kind of row, while a fit should spend
    its degree where the sentences' inputs are; bounds from long rows alone
    came out tighter than some dev sentences (design §5; docs/log.md,
    "bounds from every row").

    First in exact form. Then, with ``poly_batches``, in poly form one
    non-linearity at a time in evaluation order: the polynomials before it
    are final, so what it sees is what the poly phase (and the circuit) will
    feed it; its bound only widens. Low-degree fits change activations
    enough that exact-form bounds alone let later inputs leave their
    intervals, where the polynomials explode. A recursive student calls its
    shared modules once per application, so it repeats the sweep until no
    bound moves (at most twice per application; the last sweep's widening is
    then a small fraction of the margin).
    """
    fit_min_length = min_length if fit_min_length is None else fit_min_length
    student.eval()
    student.set_form("exact")
    names = {m: n for n, m in student.nonlinearities()}
    nl = [(names[m], m) for m in _call_order(student, batches, n_batches, longest, min_length)]

    def widen(name: str, m, floor: float) -> None:
        new = max(floor, float(m.max_ratio * m.bound) * (1 + margin))
        if not math.isfinite(new) or new <= 0:
            raise RuntimeError(f"calibration: {name} saw no finite non-zero input (largest |x| = {new})")
        m.bound.fill_(new)

    for name, m in nl:
        widen(name, m, 0.0)
    # weighted fits, first from exact-form inputs (so that poly form can run), then refitted
    # in the sweep below to the inputs the polynomials before them actually feed them
    _fit_densities(student, batches, n_batches, longest, [m for _, m in nl if m.spec.weighted], fit_min_length)
    if poly_batches > 0:
        student.set_form("poly")
        for _ in range(2 * student.cfg.n_layers if student.cfg.recursive else 1):
            before = [float(m.bound) for _, m in nl]
            for name, m in tqdm(nl, desc="calibrate in poly form", unit="non-linearity", leave=False):
                _observe(student, batches, poly_batches, longest, min_length)
                widen(name, m, float(m.bound))
                if m.spec.weighted:
                    _fit_densities(student, batches, poly_batches, longest, [m], fit_min_length)
            if before == [float(m.bound) for _, m in nl]:
                break
        student.set_form("exact")
    for _, m in nl:
        m.max_ratio.zero_()
    return {name: round(float(m.bound), 4) for name, m in nl}
