"""PackedGPT computes, run by run, exactly model.GPT's function (and gradients) with the same weights."""

from __future__ import annotations

import pytest
import torch

from proxyrank_trainer.model import GPT, count_parameters
from proxyrank_trainer.packed_model import PackedGPT
from proxyrank_trainer.presets import PRESETS, ModelShape

ODD = ModelShape(layers=3, width=48, heads=3, seq_len=40, vocab_size=97)  # no power-of-two sizes to hide a mixup


def _singles(shape: ModelShape, k: int) -> list[GPT]:
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        out.append(GPT(shape))
    return out


@pytest.mark.parametrize("shape", [PRESETS["nano"], ODD], ids=["nano", "odd"])
def test_logits_loss_and_gradients_equal_single_gpts_with_the_same_weights(shape: ModelShape) -> None:
    singles = _singles(shape, 3)
    pack = PackedGPT(shape, 3)
    pack.load_runs(singles)
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, shape.vocab_size, (3, 4, shape.seq_len - 3), generator=gen)
    y = torch.randint(0, shape.vocab_size, (3, 4, shape.seq_len - 3), generator=gen)
    logits = pack(x)
    losses = pack(x, y)
    losses.sum().backward()
    grads = {n: p.grad for n, p in pack.named_parameters()}
    for k, single in enumerate(singles):
        torch.testing.assert_close(logits[k], single(x[k]), rtol=1e-5, atol=1e-5)
        loss = single(x[k], y[k])
        torch.testing.assert_close(losses[k], loss, rtol=1e-5, atol=1e-6)
        loss.backward()
        for n, p in single.named_parameters():  # the tied embedding/head is one tensor in both
            assert p.grad is not None
            torch.testing.assert_close(grads[n][k], p.grad, rtol=1e-4, atol=1e-6, msg=n)
    assert not torch.equal(logits[0], logits[1])  # different weights, different runs


def test_parameter_names_and_counts_are_the_single_models() -> None:
    single = GPT(ODD)
    pack = PackedGPT(ODD, 4)
    shapes = {n: tuple(p.shape) for n, p in pack.named_parameters()}
    assert shapes == {n: (4, *p.shape) for n, p in single.named_parameters()}
    assert sum(p.numel() for p in pack.parameters()) == 4 * count_parameters(single)["total"]


def test_run_state_loads_back_into_a_gpt_and_keep_drops_runs() -> None:
    singles = _singles(PRESETS["nano"], 3)
    pack = PackedGPT(PRESETS["nano"], 3)
    pack.load_runs(singles)
    x = torch.randint(0, 256, (1, 2, 16))
    clone = GPT(PRESETS["nano"])
    clone.load_state_dict(pack.run_state(2))
    assert clone.lm_head.weight is clone.wte.weight
    torch.testing.assert_close(clone(x[0]), singles[2](x[0]))
    pack.keep([2, 0])
    assert pack.runs == 2 and pack.wte.weight.shape[0] == 2
    kept = pack(x.expand(2, -1, -1))
    torch.testing.assert_close(kept[0], singles[2](x[0]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kept[1], singles[0](x[0]), rtol=1e-5, atol=1e-5)


def test_wrong_run_count_or_context_is_refused() -> None:
    pack = PackedGPT(PRESETS["nano"], 2)
    with pytest.raises(ValueError, match="3 runs but the pack holds 2"):
        pack(torch.zeros(3, 1, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="exceeds the model's context"):
        pack(torch.zeros(2, 1, 129, dtype=torch.long))
    with pytest.raises(ValueError, match="need 2 models"):
        pack.load_runs([GPT(PRESETS["nano"])])
