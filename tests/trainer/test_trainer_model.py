"""The GPT module: parameter counts equal presets.py's formulas, and it computes exactly GPT-2's function."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from proxyrank_trainer.model import GPT, INIT_STD, count_parameters
from proxyrank_trainer.presets import PRESETS, ModelShape

SMALL = ["nano", "micro", "mini"]
LARGE = [name for name in PRESETS if name not in SMALL]


@pytest.mark.parametrize("name", SMALL)
def test_param_counts_of_built_small_presets_equal_preset_formulas(name: str) -> None:
    shape = PRESETS[name]
    counts = count_parameters(GPT(shape))
    assert counts == {"total": shape.total_params(), "nonEmbedding": shape.non_embedding_params()}


@pytest.mark.parametrize("name", LARGE)
def test_param_counts_of_large_presets_on_meta_device_equal_preset_formulas(name: str) -> None:
    shape = PRESETS[name]
    with torch.device("meta"):  # shapes only: no memory for pythia-1b's weights
        model = GPT(shape)
    assert count_parameters(model) == {"total": shape.total_params(), "nonEmbedding": shape.non_embedding_params()}


def test_gpt2_125m_has_the_published_parameter_count() -> None:
    # GPT-2 small: 124,439,808 parameters with a tied head (Hugging Face's gpt2 checkpoint).
    with torch.device("meta"):
        assert count_parameters(GPT(PRESETS["gpt2-125m"]))["total"] == 124_439_808


def test_output_head_is_tied_to_token_embedding() -> None:
    model = GPT(PRESETS["nano"])
    assert model.lm_head.weight is model.wte.weight


def test_init_is_gpt2_normal_with_residual_projections_scaled_by_depth() -> None:
    torch.manual_seed(0)
    shape = PRESETS["mini"]
    model = GPT(shape)
    block = model.blocks[0]
    scaled = INIT_STD / math.sqrt(2 * shape.layers)
    assert block.attn.qkv.weight.std().item() == pytest.approx(INIT_STD, rel=0.02)
    assert block.mlp.fc.weight.std().item() == pytest.approx(INIT_STD, rel=0.02)
    assert block.attn.proj.weight.std().item() == pytest.approx(scaled, rel=0.02)
    assert block.mlp.proj.weight.std().item() == pytest.approx(scaled, rel=0.02)
    assert model.wte.weight.std().item() == pytest.approx(INIT_STD, rel=0.02)
    assert torch.count_nonzero(block.attn.qkv.bias) == 0
    assert torch.equal(block.ln_1.weight, torch.ones(shape.width))


def test_attention_is_causal_future_tokens_do_not_change_earlier_logits() -> None:
    torch.manual_seed(0)
    model = GPT(PRESETS["nano"]).eval()
    idx = torch.randint(0, 256, (2, 32))
    changed = idx.clone()
    changed[:, 20:] = (changed[:, 20:] + 7) % 256
    with torch.no_grad():
        a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :20], b[:, :20])
    assert not torch.allclose(a[:, 20:], b[:, 20:])


def test_forward_with_targets_is_mean_next_token_cross_entropy() -> None:
    torch.manual_seed(0)
    model = GPT(PRESETS["nano"])
    idx = torch.randint(0, 256, (3, 16))
    targets = torch.randint(0, 256, (3, 16))
    logits = model(idx)
    expect = F.cross_entropy(logits.reshape(-1, 256), targets.reshape(-1))
    torch.testing.assert_close(model(idx, targets), expect)


def test_sequences_longer_than_the_context_are_rejected() -> None:
    model = GPT(ModelShape(layers=1, width=32, heads=2, seq_len=8, vocab_size=256))
    with pytest.raises(ValueError, match="exceeds the model's context 8"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_logits_match_huggingface_gpt2_with_copied_weights() -> None:
    transformers = pytest.importorskip("transformers")
    shape = ModelShape(layers=3, width=96, heads=4, seq_len=48, vocab_size=300)
    torch.manual_seed(1)
    ours = GPT(shape).eval()
    with torch.no_grad():  # make every tensor distinct from its init (LayerNorm gains, biases) so a swap would show
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    config = transformers.GPT2Config(
        vocab_size=shape.vocab_size, n_positions=shape.seq_len, n_embd=shape.width, n_layer=shape.layers,
        n_head=shape.heads, activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        layer_norm_epsilon=1e-5, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        t = hf.transformer
        t.wte.weight.copy_(ours.wte.weight)
        t.wpe.weight.copy_(ours.wpe.weight)
        for mine, theirs in zip(ours.blocks, t.h, strict=True):
            pairs = [(mine.ln_1, theirs.ln_1), (mine.ln_2, theirs.ln_2)]
            for a, b in pairs:
                b.weight.copy_(a.weight)
                b.bias.copy_(a.bias)
            # GPT-2's Conv1D stores (in, out): the transpose of nn.Linear's (out, in).
            for a, b in [(mine.attn.qkv, theirs.attn.c_attn), (mine.attn.proj, theirs.attn.c_proj),
                         (mine.mlp.fc, theirs.mlp.c_fc), (mine.mlp.proj, theirs.mlp.c_proj)]:
                b.weight.copy_(a.weight.T)
                b.bias.copy_(a.bias)
        t.ln_f.weight.copy_(ours.ln_f.weight)
        t.ln_f.bias.copy_(ours.ln_f.bias)
    assert hf.lm_head.weight.data_ptr() == t.wte.weight.data_ptr()
    idx = torch.randint(0, shape.vocab_size, (2, shape.seq_len))
    with torch.no_grad():
        expect = hf(input_ids=idx).logits
        got = ours(idx)
    torch.testing.assert_close(got, expect, atol=1e-4, rtol=1e-4)
