"""Model shapes and parameter counting, shared by the trainer and the operator's planner.

Pure Python on purpose: the operator image has no torch, yet the planner must resolve ``tokensPerParam`` budgets and
FLOP estimates with exactly the counts the trainer's model has. ``tests/trainer/test_trainer_model.py`` pins that the
counts here equal ``sum(p.numel())`` of the real module.

The architecture is GPT-2 style: learned absolute positions, pre-norm blocks (LayerNorm with bias), fused QKV, a 4x
GELU MLP, a final LayerNorm and an output head tied to the token embedding. The Pythia presets reuse Pythia's
published width/depth/heads/context/vocab, not its parallel-attention + rotary block, so a "pythia-1b" here is a GPT of
Pythia-1B's shape (documented in docs/trainer.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ModelShape:
    layers: int
    width: int
    heads: int
    seq_len: int
    vocab_size: int
    # The trainer's embedding and output layer get ``padded_vocab_size`` rows, a multiple of this (GPU matmuls are
    # faster on multiples of 64 / 128). The extra rows are never looked up, their logits are cut off before the loss
    # and they stay zero, so padding changes no result; the counts below are of the live vocabulary only.
    vocab_multiple: int = 1

    def __post_init__(self) -> None:
        for name in ("layers", "width", "heads", "seq_len", "vocab_size", "vocab_multiple"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be divisible by heads ({self.heads})")

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the trainer's embedding / output layer: ``vocab_size`` rounded up to ``vocab_multiple``."""
        return -(-self.vocab_size // self.vocab_multiple) * self.vocab_multiple

    def non_embedding_params(self) -> int:
        """Parameters outside the token and position embeddings (Kaplan et al.'s N)."""
        d = self.width
        per_layer = 12 * d * d + 13 * d  # qkv 3d^2+3d, proj d^2+d, fc 4d^2+4d, fc_proj 4d^2+d, two LayerNorms 4d
        return self.layers * per_layer + 2 * d  # + final LayerNorm

    def embedding_params(self) -> int:
        return (self.vocab_size + self.seq_len) * self.width

    def total_params(self) -> int:
        """All trainable parameters (the output head is tied to the token embedding, so it adds none)."""
        return self.non_embedding_params() + self.embedding_params()

    def flops_per_token(self) -> int:
        """Training FLOPs per token: 6 x (non-embedding params + the tied output projection), the usual estimate.

        Attention's sequence-length term is left out, as in the 6ND rule the planner reports.
        """
        return 6 * (self.non_embedding_params() + self.vocab_size * self.width)

    def to_dict(self) -> dict[str, int]:
        d = asdict(self)
        return {"layers": d["layers"], "width": d["width"], "heads": d["heads"], "seqLen": d["seq_len"],
                "vocabSize": d["vocab_size"]}


# Byte-level presets (vocab 256) for CPU work, then the published shapes used by the paper's proxies and targets.
PRESETS: dict[str, ModelShape] = {
    "nano": ModelShape(layers=2, width=64, heads=2, seq_len=128, vocab_size=256),  # ~0.10M non-embedding
    "micro": ModelShape(layers=4, width=128, heads=4, seq_len=128, vocab_size=256),  # ~0.79M
    "mini": ModelShape(layers=6, width=384, heads=6, seq_len=256, vocab_size=256),  # ~10.6M
    # GPT-2's 50,257 tokens padded to 50,304 = 393 x 128 rows (nanoGPT's trick; results unchanged, see vocab_multiple)
    "gpt2-125m": ModelShape(layers=12, width=768, heads=12, seq_len=1024, vocab_size=50257, vocab_multiple=128),
    "pythia-70m": ModelShape(layers=6, width=512, heads=8, seq_len=2048, vocab_size=50304),
    "pythia-160m": ModelShape(layers=12, width=768, heads=12, seq_len=2048, vocab_size=50304),
    "pythia-410m": ModelShape(layers=24, width=1024, heads=16, seq_len=2048, vocab_size=50304),
    "pythia-1b": ModelShape(layers=16, width=2048, heads=8, seq_len=2048, vocab_size=50304),
}


def resolve_shape(model: str | dict[str, int] | ModelShape) -> ModelShape:
    """A preset name, an explicit shape dict (camelCase keys as in the API) or a ModelShape."""
    if isinstance(model, ModelShape):
        return model
    if isinstance(model, str):
        try:
            return PRESETS[model]
        except KeyError:
            raise ValueError(f"unknown model preset {model!r}; known presets: {', '.join(PRESETS)}") from None
    return ModelShape(
        layers=int(model["layers"]),
        width=int(model["width"]),
        heads=int(model["heads"]),
        seq_len=int(model.get("seqLen", model.get("seq_len", 0))),
        vocab_size=int(model.get("vocabSize", model.get("vocab_size", 0))),
    )
