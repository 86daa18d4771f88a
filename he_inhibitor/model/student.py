"""The HE-friendly student: embeddings (client side), L encoder layers, mean pooling.

    x0 = (word[tok] + pos[:T]) * m                       client, in the clear
    per layer:  x = x + Attn(Norm1(x), m)                inhibitor (or dot-product)
                x = x + W2 ReLU(W1 Norm2(x) + b1) + b2
    logits = Wc (sum_i m_i NormF(x_i) / sum_i m_i) + bc

No softmax and no LayerNorm at inference: every norm is a per-feature affine
map whose statistics are frozen after training (``FrozenNorm``), so the
compiler folds it into the next linear layer. The recursive option
(MiniALBERT, arXiv 2210.06425) applies one layer L times with a small
bottleneck adapter per application.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from he_inhibitor.model.attention import DotProductAttention, InhibitorAttention
from he_inhibitor.model.nonlinear import Nonlinearity, PolySpec


@dataclass
class StudentConfig:
    vocab_size: int = 16000
    max_len: int = 64
    d_model: int = 128
    n_heads: int = 4
    d_ff: int = 256
    n_layers: int = 2
    n_labels: int = 2
    attention: str = "inhibitor"  # "inhibitor" | "dot"
    signed: bool = False
    center: bool = False
    key_norm: float = 0.0  # inhibitor only: its sum over keys divided by n^key_norm (n: the sentence's length)
    # inhibitor only: kernel of a depthwise token convolution after each of Q, K, V (attention.TokenConv); 0: none
    qkv_conv: int = 0
    # inhibitor only: a learned bias per head and token offset j - i added to Z (InhibitorAttention.offset)
    rel_bias: bool = False
    # rel_bias only: c > 0 starts a quarter of each layer's heads with b_h(o) = c on keys after the
    # query (o > 0) and a quarter on keys before it, so they see one side from step one (0: all zero)
    rel_bias_init: float = 0.0
    recursive: bool = False
    adapter_dim: int = 16
    dropout: float = 0.1
    # Polynomial forms: degree and method of the fit on [-1, 1] for each non-linearity,
    # and the initial bounds B (recalibrated on training data before the poly phase).
    abs_poly: PolySpec = field(default_factory=lambda: PolySpec(degree=14))
    relu_poly: PolySpec = field(default_factory=lambda: PolySpec(degree=14))
    abs_bound: float = 8.0
    attn_relu_bound: float = 16.0
    ffn_relu_bound: float = 16.0
    margin: float = 0.05

    def __post_init__(self) -> None:
        for name in ("abs_poly", "relu_poly"):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, PolySpec(**value))
        if self.attention not in ("inhibitor", "dot"):
            raise ValueError(f"attention must be 'inhibitor' or 'dot', not {self.attention!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.key_norm and self.attention != "inhibitor":
            raise ValueError("key_norm applies to inhibitor attention only (dot-product's poly form already divides by n)")
        if self.qkv_conv and (self.attention != "inhibitor" or self.qkv_conv % 2 == 0 or self.qkv_conv < 0):
            raise ValueError(f"qkv_conv is an odd kernel size for inhibitor attention, not {self.qkv_conv} with {self.attention!r}")
        if self.rel_bias and self.attention != "inhibitor":
            raise ValueError("rel_bias applies to inhibitor attention only")
        if self.rel_bias_init and not self.rel_bias:
            raise ValueError("rel_bias_init sets the relative bias's start: it needs rel_bias")
        if self.rel_bias_init < 0:
            raise ValueError(f"rel_bias_init inhibits one side, so it is >= 0, not {self.rel_bias_init}")
        if not 0 <= self.key_norm <= 1:
            raise ValueError(f"key_norm is an exponent in [0, 1], not {self.key_norm}")

    @classmethod
    def from_dict(cls, data: dict) -> "StudentConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown student config keys: {sorted(unknown)}")
        return cls(**data)


class FrozenNorm(nn.Module):
    """Per-feature affine normalisation whose statistics freeze after training.

    While training (and not frozen) it normalises with the batch statistics of
    the real tokens and tracks running averages, like BatchNorm; in eval mode,
    or once ``frozen``, it is the fixed affine map ``x * scale + shift`` that
    folds into the next linear layer at no encrypted cost.
    """

    def __init__(self, d: int, momentum: float = 0.05, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d))
        self.register_buffer("running_mean", torch.zeros(d))
        self.register_buffer("running_var", torch.ones(d))
        self.momentum, self.eps = momentum, eps
        self.frozen = False

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) of the frozen map y = x * scale + shift."""
        scale = self.weight / torch.sqrt(self.running_var + self.eps)
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.training and not self.frozen:
            m = mask.unsqueeze(-1).to(x.dtype)  # [B, T, 1]
            n = m.sum().clamp(min=1.0)
            mean = (x * m).sum((0, 1)) / n  # [d]
            var = (((x - mean) ** 2) * m).sum((0, 1)) / n  # [d]
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(var.detach(), self.momentum)
            return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias
        scale, shift = self.affine()
        return x * scale + shift


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, relu_fn: Nonlinearity, dropout: float) -> None:
        super().__init__()
        self.lin1 = nn.Linear(d_model, d_ff)
        self.lin2 = nn.Linear(d_ff, d_model)
        self.relu_fn = relu_fn
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, T, d], mask [B, T] -> [B, T, d]; the mask only tells the range penalty the real tokens."""
        valid = mask.unsqueeze(-1).to(x.dtype)  # [B, T, 1]
        return self.lin2(self.drop(self.relu_fn(self.lin1(x), valid)))  # [B, T, d]


class Adapter(nn.Module):
    """Bottleneck adapter (MiniALBERT): y + up(ReLU(down(y))), one per recursive application."""

    def __init__(self, d_model: int, d_bottleneck: int, relu_fn: Nonlinearity) -> None:
        super().__init__()
        self.down = nn.Linear(d_model, d_bottleneck)
        self.up = nn.Linear(d_bottleneck, d_model)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.relu_fn = relu_fn

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y + self.up(self.relu_fn(self.down(y)))


class EncoderLayer(nn.Module):
    """Attention and FFN sublayers (norms and adapters live in ``Student``: they are per application)."""

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        relu_attn = Nonlinearity("relu", cfg.attn_relu_bound, cfg.relu_poly, cfg.margin)
        relu_ffn = Nonlinearity("relu", cfg.ffn_relu_bound, cfg.relu_poly, cfg.margin)
        if cfg.attention == "inhibitor":
            abs_fn = Nonlinearity("abs", cfg.abs_bound, cfg.abs_poly, cfg.margin)
            self.attn = InhibitorAttention(
                cfg.d_model, cfg.n_heads, abs_fn, relu_attn, signed=cfg.signed, center=cfg.center,
                key_norm=cfg.key_norm, conv=cfg.qkv_conv, rel_offsets=cfg.max_len if cfg.rel_bias else 0,
                rel_init=cfg.rel_bias_init,
            )
        else:
            self.attn = DotProductAttention(cfg.d_model, cfg.n_heads, relu_attn)
        self.ffn = FeedForward(cfg.d_model, cfg.d_ff, relu_ffn, cfg.dropout)


class Student(nn.Module):
    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.word = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.max_len, cfg.d_model)
        n_apps = cfg.n_layers
        n_distinct = 1 if cfg.recursive else n_apps
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(n_distinct))
        self.norms1 = nn.ModuleList(FrozenNorm(cfg.d_model) for _ in range(n_apps))
        self.norms2 = nn.ModuleList(FrozenNorm(cfg.d_model) for _ in range(n_apps))
        if cfg.recursive:
            def adapter() -> Adapter:
                relu = Nonlinearity("relu", cfg.ffn_relu_bound, cfg.relu_poly, cfg.margin)
                return Adapter(cfg.d_model, cfg.adapter_dim, relu)

            self.adapters = nn.ModuleList(
                nn.ModuleList([adapter(), adapter()]) for _ in range(n_apps)
            )
        self.norm_f = FrozenNorm(cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.d_model, cfg.n_labels)

    # --- the pipeline -------------------------------------------------------------
    def embed(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Client-side embedding: tokens, mask [B, T] -> x0 [B, T, d], zero at padding."""
        if tokens.shape[1] > self.cfg.max_len:
            raise ValueError(f"sequence of {tokens.shape[1]} tokens exceeds max_len={self.cfg.max_len}")
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.word(tokens) + self.pos(positions)  # [B, T, d]
        return x * mask.unsqueeze(-1).to(x.dtype)

    def layer(self, i: int) -> EncoderLayer:
        return self.layers[0 if self.cfg.recursive else i]

    def encode(
        self, x: torch.Tensor, mask: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """x0 [B, T, d] -> (x_L, hidden states [x_1 .. x_L], attention weights per layer)."""
        hidden, weights = [], []
        for i in range(self.cfg.n_layers):
            layer = self.layer(i)
            a, w = layer.attn(self.norms1[i](x, mask), mask, need_weights)  # [B, T, d]
            if self.cfg.recursive:
                a = self.adapters[i][0](a)
            x = x + self.drop(a)
            f = layer.ffn(self.norms2[i](x, mask), mask)  # [B, T, d]
            if self.cfg.recursive:
                f = self.adapters[i][1](f)
            x = x + self.drop(f)
            hidden.append(x)
            if w is not None:
                weights.append(w)
        return x, hidden, weights

    def pool(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean of NormF(x) over real tokens: [B, T, d] -> [B, d]."""
        m = mask.unsqueeze(-1).to(x.dtype)  # [B, T, 1]
        return (self.norm_f(x, mask) * m).sum(1) / m.sum(1).clamp(min=1.0)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """tokens, mask [B, T] -> logits [B, n_labels]."""
        x, _, _ = self.encode(self.embed(tokens, mask), mask)
        return self.classifier(self.drop(self.pool(x, mask)))

    # --- forms, calibration, penalties ----------------------------------------------
    def nonlinearities(self) -> list[tuple[str, Nonlinearity]]:
        return [(n, m) for n, m in self.named_modules() if isinstance(m, Nonlinearity)]

    def set_form(self, form: str) -> "Student":
        for _, m in self.nonlinearities():
            m.set_form(form)
        return self

    def fuse(self, on: bool = True) -> "Student":
        """Run inhibitor attention through one compiled kernel, in the form its non-linearities are in.

        Exact form (``attention.inhibit_fused``), for training before
        calibration: the kernel does not record its |x| and ReLU inputs,
        which only calibration and the range penalty need. Poly form
        (``attention.inhibit_poly``), for the poly phase: it records their
        ranges and penalties as the modules do. Signed and centred
        inhibitors, attention maps and histogram collection keep the modules
        (``scripts/bench_fused_attention.py`` times both paths).
        """
        for m in self.modules():
            if isinstance(m, InhibitorAttention):
                m.fused = on
        return self

    def freeze_norms(self, frozen: bool = True) -> None:
        for m in self.modules():
            if isinstance(m, FrozenNorm):
                m.frozen = frozen

    def range_penalty(self, kind: str = "mean") -> torch.Tensor:
        """One of ``RangePenalties``'s kinds ("mean", "row_max") of the last training forward, summed over
        the non-linearities."""
        terms = [getattr(m.penalties, kind) for _, m in self.nonlinearities() if m.penalties is not None]
        return torch.stack(terms).sum() if terms else torch.zeros(())


# --- save / load: safetensors weights + JSON config, no pickle ------------------------
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


def save_student(model: Student, out_dir: str | Path, half: bool = True) -> Path:
    """Write config.json and model.safetensors (weight tensors in float16, scalars and buffers in float32).

    Buffers (bounds, frozen norm statistics, weighted fits' coefficients) stay
    float32: float16's 3 digits would move a fitted polynomial by more than its error.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = {name for name, _ in model.named_parameters()}
    state = {}
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        if t.is_floating_point():
            t = t.to(torch.float16 if half and name in params and t.numel() > 1 else torch.float32)
        state[name] = t
    save_file(state, str(out / WEIGHTS_FILE))
    cfg = asdict(model.cfg)
    (out / CONFIG_FILE).write_text(json.dumps(cfg, indent=2) + "\n")
    return out


def load_student(model_dir: str | Path, dtype: torch.dtype = torch.float32) -> Student:
    """Load a saved student in eval mode, exact form; refuses missing or mismatched files clearly."""
    from safetensors.torch import load_file

    d = Path(model_dir)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (d / name).is_file():
            raise FileNotFoundError(f"{d / name} not found: not a student directory")
    try:
        cfg = StudentConfig.from_dict(json.loads((d / CONFIG_FILE).read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as err:
        raise ValueError(f"{d / CONFIG_FILE}: invalid student config: {err}") from err
    model = Student(cfg)
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in load_file(str(d / WEIGHTS_FILE)).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{d / WEIGHTS_FILE} does not match its config: missing {missing}, unexpected {unexpected}")
    return model.to(dtype).eval()
