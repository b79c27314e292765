"""A decoder-only GPT whose parameter count is exactly :class:`proxyrank_trainer.presets.ModelShape`'s.

GPT-2's block (Radford et al. 2019, as in nanoGPT): learned absolute positions, pre-norm residual blocks with biased
LayerNorms, fused QKV projection, causal attention through ``scaled_dot_product_attention`` (flash / memory-efficient
kernels where available), a 4x MLP with tanh-approximated GELU (GPT-2's ``gelu_new``), a final LayerNorm and an output
head tied to the token embedding. No dropout: proxies train single-epoch, where dropout only costs. Initialisation is
GPT-2's: N(0, 0.02), residual output projections scaled by 1/sqrt(2 * layers), biases zero.

A shape with ``vocab_multiple`` > 1 pads the embedding / output matrix to ``padded_vocab_size`` rows for faster GPU
matmuls. The padding rows start (and, receiving no gradient and no weight decay, stay) zero, the real rows draw the
same random numbers as an unpadded model's, and the padding logits are cut off before the loss and the returned
logits: a padded model computes exactly what the unpadded one does, with the same seed.

``tests/trainer/test_model.py`` pins logits against Hugging Face ``GPT2LMHeadModel`` with copied weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from proxyrank_trainer.presets import ModelShape

INIT_STD = 0.02


class CausalSelfAttention(nn.Module):
    def __init__(self, shape: ModelShape) -> None:
        super().__init__()
        self.heads = shape.heads
        self.qkv = nn.Linear(shape.width, 3 * shape.width, bias=True)
        self.proj = nn.Linear(shape.width, shape.width, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        # (b, t, d) -> (b, heads, t, head_dim)
        q = q.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        k = k.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        v = v.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).contiguous().view(b, t, d))


class MLP(nn.Module):
    def __init__(self, shape: ModelShape) -> None:
        super().__init__()
        self.fc = nn.Linear(shape.width, 4 * shape.width, bias=True)
        self.proj = nn.Linear(4 * shape.width, shape.width, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, shape: ModelShape) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(shape.width)
        self.attn = CausalSelfAttention(shape)
        self.ln_2 = nn.LayerNorm(shape.width)
        self.mlp = MLP(shape)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """``forward(idx)`` gives logits; ``forward(idx, targets)`` gives the mean next-token cross-entropy."""

    def __init__(self, shape: ModelShape) -> None:
        super().__init__()
        self.shape = shape
        self.wte = self._token_embedding(shape)
        self.wpe = nn.Embedding(shape.seq_len, shape.width)
        self.blocks = nn.ModuleList(Block(shape) for _ in range(shape.layers))
        self.ln_f = nn.LayerNorm(shape.width)
        self.lm_head = nn.Linear(shape.width, shape.vocab_size, bias=False)  # draws as an unpadded model's would
        self.lm_head.weight = self.wte.weight  # tied: the head adds no parameters
        self.lm_head.out_features = shape.padded_vocab_size
        self.apply(self._init_weights)
        for block in self.blocks:  # GPT-2: outputs added to the residual stream start smaller, 1/sqrt(2 * layers)
            assert isinstance(block, Block)
            for proj in (block.attn.proj, block.mlp.proj):
                nn.init.normal_(proj.weight, mean=0.0, std=INIT_STD / math.sqrt(2 * shape.layers))

    @staticmethod
    def _token_embedding(shape: ModelShape) -> nn.Embedding:
        """The token embedding, with zero padding rows: built at the live size first, so the random number stream
        (and with it every other parameter's initial value) is the unpadded model's."""
        live = nn.Embedding(shape.vocab_size, shape.width)
        pad = shape.padded_vocab_size - shape.vocab_size
        if not pad:
            return live
        weight = torch.cat([live.weight.detach(), live.weight.new_zeros(pad, shape.width)])
        return nn.Embedding(shape.padded_vocab_size, shape.width, _weight=weight)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            if module is self.lm_head:
                return  # shares the embedding's tensor, initialised with it
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            live = self.shape.vocab_size if module is self.wte else module.num_embeddings
            nn.init.normal_(module.weight[:live], mean=0.0, std=INIT_STD)  # the same draws as an unpadded model
            nn.init.zeros_(module.weight[live:])
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> Tensor:
        t = idx.shape[1]
        if t > self.shape.seq_len:
            raise ValueError(f"sequence length {t} exceeds the model's context {self.shape.seq_len}")
        pos = torch.arange(t, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        if self.shape.padded_vocab_size != self.shape.vocab_size:
            logits = logits[..., :self.shape.vocab_size]  # padding rows are never tokens: not in the softmax
        if targets is None:
            return logits
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))

    def embedding_parameters(self) -> list[Tensor]:
        return [self.wte.weight, self.wpe.weight]


def count_parameters(model: GPT) -> dict[str, int]:
    """``total`` (tied head counted once) and ``nonEmbedding`` (without token and position embeddings); the
    vocabulary's padding rows are not counted (they stay zero and never reach a result)."""
    padding = (model.shape.padded_vocab_size - model.shape.vocab_size) * model.shape.width
    total = sum(p.numel() for p in model.parameters()) - padding  # parameters() yields a tied tensor once
    embedding = sum(p.numel() for p in model.embedding_parameters()) - padding
    return {"total": total, "nonEmbedding": total - embedding}
