"""Printing and plotting benchmark results (the dicts `measure.bench_target` returns)."""

from __future__ import annotations

from pathlib import Path

from he_inhibitor.service.console import megabytes, table

_STAGE_COLS = [("levels", "levels"), ("rotations", "rot"), ("relinearizations", "relin"),
               ("plaintext_multiplications", "mul_pt"), ("rescales", "rescale"), ("refreshes", "refresh")]

# (label, key, format) rows of the summary and of the side-by-side comparison
SUMMARY = [
    ("accuracy (plain, N)", "accuracy", "{:.4f}"),
    ("accuracy, sentences <= T", "accuracy_fitting", "{:.4f}"),
    ("truncated sentences", "truncated", "{}"),
    ("sentences run encrypted (K)", "encrypted_sentences", "{}"),
    ("encrypted accuracy (K)", "encrypted_accuracy", "{:.4f}"),
    ("agreement enc/plain (K)", "agreement", "{:.4f}"),
    ("depth (levels, one chain)", "depth", "{}"),
    ("chain levels / refreshes (T min)", None, None),
    ("median latency s (all K)", "median_seconds", "{:.2f}"),
    ("p95 latency s", "p95_seconds", "{:.2f}"),
    ("round trips per query (1 + refreshes)", "round_trips_per_query", "{}"),
    ("median latency s + RTT per round trip", "median_seconds_with_rtt", "{:.2f}"),
    ("p95 latency s + RTT per round trip", "p95_seconds_with_rtt", "{:.2f}"),
    ("RTT ms assumed", "rtt_ms", "{:.0f}"),
    ("server median s", "server_median_seconds", "{:.2f}"),
    ("CPU median s (all processes)", "cpu_median_seconds", "{:.2f}"),
    ("lanes (1..K-1 on Ray)", "lanes", "{}"),
    ("floor s (op counts x costs, T min)", "floor_seconds", "{:.2f}"),
    ("measured / floor (T min)", "measured_over_floor", "{:.2f}"),
    ("keygen s", "keygen_seconds", "{:.2f}"),
    ("evaluation keys", "eval_key_bytes", "bytes"),
    ("query (inputs)", "query_bytes", "bytes"),
    ("reply", "reply_bytes", "bytes"),
    ("refresh traffic / query", "refresh_bytes", "bytes"),
    ("max |enc - plain| logit", "max_abs_error", "{:.2e}"),
    ("predicted error bound (max)", "predicted_error_bound", "{:.2e}"),
    ("max error / its own bound", "max_error_over_bound", "{:.2f}"),
    ("levels used = predicted depth", "levels_as_predicted", "{}"),
    ("max poly input / B (K)", "max_poly_input_ratio", "{:.2f}"),
]


def _cell(r: dict, key: str | None, fmt: str | None) -> str:
    if key is None:
        return f"{r['chain_levels']} / {r['refreshes']} ({r['refresh_round_trips']} trips)"
    v = r.get(key)
    if v is None:
        return "-"
    if fmt == "bytes":
        return megabytes(v)
    return fmt.format(v)


def stage_lines(r: dict) -> str:
    """Per stage and in total (one bucket): levels, op counts, predicted (floor) and measured seconds."""
    header = ["stage"] + [h for _, h in _STAGE_COLS] + ["floor s", "measured s"]
    rows = [[st] + [str(row[k]) for k, _ in _STAGE_COLS]
            + [f"{row['predicted_seconds']:.3f}", f"{row['measured_seconds']:.3f}"]
            for st, row in list(r["stages"].items()) + [("total", r["totals"])]]
    return table(header, rows)


def summary_lines(results: list[dict]) -> str:
    """One column per result: the summary rows side by side, then each bucket's latency."""
    rows = [[label] + [_cell(r, key, fmt) for r in results] for label, key, fmt in SUMMARY]
    for T in sorted({T for r in results for T in r["buckets"]}, key=int):
        for label, key, fmt in [(f"T={T}: sentences / run encrypted", None, None),
                                (f"T={T}: median latency s", "median_seconds", "{:.2f}"),
                                (f"T={T}: floor s", "floor_seconds", "{:.2f}"),
                                (f"T={T}: measured / floor", "measured_over_floor", "{:.2f}")]:
            rows.append([label] + [_bucket_cell(r, T, key, fmt) for r in results])
    return table([""] + [r["name"] for r in results], rows)


def _bucket_cell(r: dict, T: str, key: str | None, fmt: str | None) -> str:
    b = r["buckets"].get(T)
    if b is None:
        return "-"
    if key is None:
        return f"{b['sentences']} / {b['encrypted_sentences']}"
    return "-" if b[key] is None else fmt.format(b[key])


def save_figure(fig, path: Path) -> Path:
    """Lay out, write (120 dpi, making the folder) and close a matplotlib figure; returns the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_stages(results: list[dict], out_dir: str | Path) -> Path:
    """Per stage, predicted (floor) against measured seconds, one panel per result; returns the PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False, sharey=True)
    for ax, r in zip(axes[0], results):
        stages = list(r["stages"])
        x = np.arange(len(stages))
        ax.bar(x - 0.2, [r["stages"][s]["predicted_seconds"] for s in stages], 0.4, label="floor (predicted)")
        ax.bar(x + 0.2, [r["stages"][s]["measured_seconds"] for s in stages], 0.4, label="measured")
        ax.set_xticks(x, stages, rotation=30, ha="right")
        ax.set_title(f"{r['name']} (T = {r['T']}): depth {r['totals']['levels']}, "
                     f"floor {r['floor_seconds']:.1f} s")
        ax.set_ylabel("seconds per sentence (server)")
        ax.legend()
    path = save_figure(fig, out / "latency_per_stage.png")
    _plot_by_length(results, out / "latency_by_length.png")
    _plot_error_by_bound(results, out / "error_by_bound.png")
    return path


def _plot_error_by_bound(results: list[dict], path: Path) -> None:
    """Every sentence's measured logit error against its predicted bound, log-log, with the line error = bound:
    a calibrated 6-sigma bound leaves every point well under it, not orders of magnitude under."""
    import matplotlib.pyplot as plt

    runs = {r["name"]: [x for x in r.get("runs", []) if "predicted_error_bound" in x] for r in results}
    values = [v for rs in runs.values() for x in rs for v in (x["predicted_error_bound"], x["max_abs_error"])]
    if not values:
        return
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, rs in runs.items():
        ax.scatter([x["predicted_error_bound"] for x in rs], [x["max_abs_error"] for x in rs], s=12, label=name)
    lo, hi = min(values) / 2, max(values) * 2
    ax.plot([lo, hi], [lo, hi], "k-", lw=1, label="error = bound")
    ax.plot([lo, hi], [lo / 6, hi / 6], "k:", lw=1, label="one standard deviation")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("predicted bound (6 sigma), per sentence")
    ax.set_ylabel("measured max |encrypted - plain| logit")
    ax.set_title("encrypted error against the simulator's bound")
    ax.legend()
    save_figure(fig, path)


def _plot_by_length(results: list[dict], path: Path) -> None:
    """Encrypted latency of every sentence against its token count, one series per result."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        runs = r.get("runs", [])
        ax.scatter([x["n_tokens"] for x in runs], [x["seconds"] for x in runs], s=12, label=r["name"])
    ax.set_xlabel("tokens in the sentence")
    ax.set_ylabel("encryption to decryption, s")
    ax.set_title("latency by sentence length")
    ax.legend()
    save_figure(fig, path)
