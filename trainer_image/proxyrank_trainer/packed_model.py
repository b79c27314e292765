"""K GPTs of one shape as one module: every parameter gets a leading run dimension, every matmul is batched.

:class:`PackedGPT` computes, for run ``k``, exactly :class:`proxyrank_trainer.model.GPT`'s function with run ``k``'s
weights (``tests/trainer/test_packed_model.py`` pins it against ``model.GPT`` with the same weights): a Linear is one
``baddbmm`` over the K runs, a LayerNorm is the unscaled ``layer_norm`` times each run's gain plus its bias, the token
embedding is one lookup in the K tables laid end to end, attention is ``scaled_dot_product_attention`` over K x batch
sequences, and the tied output head is one ``bmm`` with the K embedding tables.

Why batched matmuls rather than ``torch.func.vmap(functional_call(GPT))``: vmap has no batching rule for the CPU
flash-attention kernel (it falls back to a Python loop over the runs, 1.4x slower than this module in a nano
measurement) and its per-op batching adds dispatch work; the explicit module runs the same kernels a single GPT runs,
once per layer for all K runs, which is what fills a GPU with small proxies. Parameter names equal ``GPT``'s
(``blocks.0.attn.qkv.weight``, shape ``(K, 3d, d)``), so :meth:`PackedGPT.load_runs` stacks K GPT state dicts and
:meth:`PackedGPT.run_state` takes one back out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from proxyrank_trainer.model import GPT
from proxyrank_trainer.presets import ModelShape


class PackedLinear(nn.Module):
    """K ``nn.Linear(d_in, d_out)``: weight ``(K, d_out, d_in)``, bias ``(K, d_out)``; input ``(K, N, d_in)``."""

    def __init__(self, runs: int, d_in: int, d_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(runs, d_out, d_in))
        self.bias = nn.Parameter(torch.zeros(runs, d_out))

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))


class PackedLayerNorm(nn.Module):
    """K ``nn.LayerNorm(d)`` (eps 1e-5, as torch's default); input ``(K, N, d)``."""

    def __init__(self, runs: int, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(runs, d))
        self.bias = nn.Parameter(torch.zeros(runs, d))

    def forward(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.bias.unsqueeze(1), F.layer_norm(x, x.shape[-1:]), self.weight.unsqueeze(1))


class PackedEmbedding(nn.Module):
    """K ``nn.Embedding(n, d)``: weight ``(K, n, d)``."""

    def __init__(self, runs: int, n: int, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(runs, n, d))


class PackedAttention(nn.Module):
    def __init__(self, runs: int, shape: ModelShape) -> None:
        super().__init__()
        self.heads = shape.heads
        self.qkv = PackedLinear(runs, shape.width, 3 * shape.width)
        self.proj = PackedLinear(runs, shape.width, shape.width)

    def forward(self, x: Tensor, batch: int, seq: int) -> Tensor:
        k, _n, d = x.shape
        # (K, B*T, 3d) -> 3 x (K*B, heads, T, head_dim)
        q, kk, v = self.qkv(x).view(k * batch, seq, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, kk, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(k, batch * seq, d))


class PackedMLP(nn.Module):
    def __init__(self, runs: int, shape: ModelShape) -> None:
        super().__init__()
        self.fc = PackedLinear(runs, shape.width, 4 * shape.width)
        self.proj = PackedLinear(runs, 4 * shape.width, shape.width)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class PackedBlock(nn.Module):
    def __init__(self, runs: int, shape: ModelShape) -> None:
        super().__init__()
        self.ln_1 = PackedLayerNorm(runs, shape.width)
        self.attn = PackedAttention(runs, shape)
        self.ln_2 = PackedLayerNorm(runs, shape.width)
        self.mlp = PackedMLP(runs, shape)

    def forward(self, x: Tensor, batch: int, seq: int) -> Tensor:
        x = x + self.attn(self.ln_1(x), batch, seq)
        return x + self.mlp(self.ln_2(x))


class PackedGPT(nn.Module):
    """``forward(idx)`` with ``idx`` of shape ``(K, B, T)`` gives logits ``(K, B, T, vocab)``; ``forward(idx,
    targets)`` gives each run's mean next-token cross-entropy, shape ``(K,)``. Weights are uninitialised until
    :meth:`load_runs` (the trainer initialises each run as a single GPT with the run's seed, then stacks them)."""

    def __init__(self, shape: ModelShape, runs: int) -> None:
        super().__init__()
        if runs < 1:
            raise ValueError(f"runs must be >= 1, got {runs}")
        self.shape = shape
        self.runs = runs
        self.wte = PackedEmbedding(runs, shape.vocab_size, shape.width)
        self.wpe = PackedEmbedding(runs, shape.seq_len, shape.width)
        self.blocks = nn.ModuleList(PackedBlock(runs, shape) for _ in range(shape.layers))
        self.ln_f = PackedLayerNorm(runs, shape.width)

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> Tensor:
        k, b, t = idx.shape
        if k != self.runs:
            raise ValueError(f"input has {k} runs but the pack holds {self.runs}")
        if t > self.shape.seq_len:
            raise ValueError(f"sequence length {t} exceeds the model's context {self.shape.seq_len}")
        wte = self.wte.weight
        offsets = torch.arange(k, device=idx.device).view(k, 1, 1) * self.shape.vocab_size
        x = F.embedding(idx + offsets, wte.reshape(-1, self.shape.width)) + self.wpe.weight[:, None, :t]
        x = x.reshape(k, b * t, self.shape.width)
        for block in self.blocks:
            x = block(x, b, t)
        logits = torch.bmm(self.ln_f(x), wte.transpose(1, 2))  # the head tied to the token embedding
        if targets is None:
            return logits.view(k, b, t, -1)
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), reduction="none")
        return nll.view(k, -1).mean(dim=1)

    @torch.no_grad()
    def load_run(self, k: int, model: GPT) -> None:
        """Copy a single GPT's weights into run ``k`` of the pack."""
        state = model.state_dict()
        for name, param in self.named_parameters():
            param[k].copy_(state[name])

    def load_runs(self, models: Sequence[GPT]) -> None:
        """Copy K single GPTs' weights into the pack (run ``k`` from ``models[k]``)."""
        if len(models) != self.runs:
            raise ValueError(f"need {self.runs} models, got {len(models)}")
        for k, model in enumerate(models):
            self.load_run(k, model)

    @torch.no_grad()
    def run_state(self, k: int) -> dict[str, Tensor]:
        """Run ``k``'s weights as a :class:`~proxyrank_trainer.model.GPT` state dict (with the tied head)."""
        state = {name: p[k].detach().clone() for name, p in self.named_parameters()}
        state["lm_head.weight"] = state["wte.weight"]
        return state

    @torch.no_grad()
    def keep(self, runs: Sequence[int]) -> None:
        """Drop every run not in ``runs`` (in place; the kept runs are renumbered 0.. in the given order)."""
        index = torch.as_tensor(list(runs), dtype=torch.long, device=self.wte.weight.device)
        for module in self.modules():
            for name, param in list(module.named_parameters(recurse=False)):
                setattr(module, name, nn.Parameter(param.index_select(0, index)))
        self.runs = len(runs)

    def decay_parameters(self) -> list[nn.Parameter]:
        """The Linear weight matrices: what AdamW decays (as ``optim.param_groups`` does for a single GPT)."""
        return [m.weight for m in self.modules() if isinstance(m, PackedLinear)]
