"""Transformer encoder (ch. 7): explicit softmax(QKᵀ/√d)V against the fused kernel and against
nn.MultiheadAttention, masks included; blocks against nn.TransformerEncoderLayer; positions; fitting."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modules.transformer import (
    Block,
    MultiHeadSelfAttention,
    Transformer,
    explicit_attention,
    sinusoidal_positions,
)
from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig

from conftest import fit_batch

ADAM = OptimizerConfig(name="adam", lr=3e-3, weight_decay=0.0, momentum=0.0, nesterov=False)
NO_SCHEDULE = SchedulerConfig(name="none", step_size=1, gamma=1.0, warmup_epochs=0)
ROWS = DataSpec("multiclass", (8, 8), 10)
MODEL = {"width": 16, "heads": 4, "layers": 2, "ff_size": 32, "dropout": 0.0, "norm": "pre", "pooling": "cls",
         "positions": "sinusoidal", "init": "default", "window_offsets": "fixed"}


def make_encoder(spec: DataSpec = ROWS, **overrides) -> Transformer:
    model = {**MODEL, **overrides}
    Transformer.check_config(model)
    return Transformer(data=spec, optimizer=ADAM, scheduler=NO_SCHEDULE, **model)


def padding_mask(batch: int, steps: int) -> torch.Tensor:
    """(B, 1, 1, S), True for real keys: sample b has its last b keys padded."""
    lengths = torch.tensor([steps - b % (steps - 1) for b in range(batch)])
    return (torch.arange(steps)[None, :] < lengths[:, None])[:, None, None, :]


def test_sinusoidal_positions_follow_the_formula_entry_by_entry():
    positions = sinusoidal_positions(11, 6)
    for t in range(11):
        for i in range(3):
            angle = t / 10000 ** (2 * i / 6)
            assert positions[t, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert positions[t, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


@pytest.mark.parametrize("mask_kind", ["none", "causal", "padding", "causal+padding"])
def test_explicit_attention_equals_the_fused_kernel(mask_kind):
    torch.manual_seed(0)
    q, k, v = (torch.randn(4, 2, 7, 5, dtype=torch.float64) for _ in range(3))
    causal = "causal" in mask_kind
    mask = padding_mask(4, 7) if "padding" in mask_kind else None
    explicit = explicit_attention(q, k, v, mask, causal)
    fused_mask = mask
    if causal and mask is not None:
        fused_mask = mask & torch.ones(7, 7, dtype=torch.bool).tril()
    fused = F.scaled_dot_product_attention(q, k, v, attn_mask=fused_mask, is_causal=causal and mask is None)
    torch.testing.assert_close(explicit, fused)


def test_explicit_attention_is_a_weighted_mean_of_the_allowed_values_only():
    torch.manual_seed(1)
    q, k, v = torch.randn(1, 3, 4), torch.randn(1, 5, 4), torch.randn(1, 5, 2)
    allowed = torch.tensor([True, False, True, True, False])
    out = explicit_attention(q, k, v, allowed[None, :])
    weights = torch.softmax((q @ k.transpose(1, 2))[..., allowed] / 2.0, dim=-1)  # √d_k = 2
    torch.testing.assert_close(out, weights @ v[:, allowed])


def reference_attention(attention: MultiHeadSelfAttention, width: int) -> nn.MultiheadAttention:
    reference = nn.MultiheadAttention(width, attention.heads, batch_first=True).double()
    with torch.no_grad():
        reference.in_proj_weight.copy_(attention.qkv.weight)
        reference.in_proj_bias.copy_(attention.qkv.bias)
        reference.out_proj.weight.copy_(attention.out.weight)
        reference.out_proj.bias.copy_(attention.out.bias)
    return reference


@pytest.mark.parametrize("mask_kind", ["none", "causal", "padding", "causal+padding"])
def test_multi_head_attention_equals_explicit_heads_and_nn_multiheadattention(mask_kind):
    torch.manual_seed(2)
    width, heads, steps = 12, 3, 6
    attention = MultiHeadSelfAttention(width, heads, dropout=0.0).double().eval()
    x = torch.randn(5, steps, width, dtype=torch.float64)
    causal = "causal" in mask_kind
    mask = padding_mask(5, steps) if "padding" in mask_kind else None
    with torch.no_grad():
        ours = attention(x, mask, causal)
        # the formula, head by head
        q, k, v = attention.project(x)
        heads_out = explicit_attention(q, k, v, mask, causal)
        explicit = attention.out(heads_out.transpose(1, 2).flatten(2))
        # PyTorch's own multi-head attention on the same weights (its boolean masks mark what is hidden)
        hidden = torch.zeros(steps, steps, dtype=torch.bool)
        if causal:
            hidden = ~torch.ones(steps, steps, dtype=torch.bool).tril()
        key_padding = None if mask is None else ~mask[:, 0, 0, :]
        theirs, _ = reference_attention(attention, width)(x, x, x, attn_mask=hidden, key_padding_mask=key_padding,
                                                          need_weights=False)
    torch.testing.assert_close(ours, explicit)
    torch.testing.assert_close(ours, theirs)


def test_causal_attention_output_at_t_ignores_later_positions():
    torch.manual_seed(3)
    attention = MultiHeadSelfAttention(8, 2, dropout=0.0).eval()
    x = torch.randn(2, 7, 8)
    changed = x.clone()
    changed[:, 4:] = torch.randn(2, 3, 8)
    with torch.no_grad():
        before, after = attention(x, causal=True), attention(changed, causal=True)
    torch.testing.assert_close(before[:, :4], after[:, :4])
    assert not torch.allclose(before[:, 4:], after[:, 4:])


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_block_equals_nn_transformer_encoder_layer(norm):
    torch.manual_seed(4)
    width, heads, ff = 16, 4, 24
    block = Block(width, heads, ff, dropout=0.0, norm=norm).double().eval()
    reference = nn.TransformerEncoderLayer(width, heads, ff, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=norm == "pre").double().eval()
    with torch.no_grad():
        reference.self_attn.in_proj_weight.copy_(block.attention.qkv.weight)
        reference.self_attn.in_proj_bias.copy_(block.attention.qkv.bias)
        reference.self_attn.out_proj.weight.copy_(block.attention.out.weight)
        reference.self_attn.out_proj.bias.copy_(block.attention.out.bias)
        for mine, theirs in ((block.feedforward[0], reference.linear1), (block.feedforward[2], reference.linear2),
                             (block.norm1, reference.norm1), (block.norm2, reference.norm2)):
            theirs.weight.copy_(mine.weight)
            theirs.bias.copy_(mine.bias)
        x = torch.randn(3, 5, width, dtype=torch.float64)
        torch.testing.assert_close(block(x), reference(x))
        causal = nn.Transformer.generate_square_subsequent_mask(5, dtype=torch.float64)
        torch.testing.assert_close(block(x, causal=True), reference(x, src_mask=causal, is_causal=True))


def test_without_positions_mean_pooling_would_not_see_order_but_the_encoder_does():
    torch.manual_seed(5)
    encoder = make_encoder(pooling="mean").eval()
    x = torch.randn(2, 8, 8)
    reversed_x = x.flip(1)
    with torch.no_grad():
        assert not torch.allclose(encoder(x), encoder(reversed_x), atol=1e-5)
        encoder.stack.positions.zero_()  # attention and mean pooling alone are permutation invariant
        torch.testing.assert_close(encoder(x), encoder(reversed_x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("spec", "overrides"),
    [(ROWS, {}), (ROWS, {"norm": "post", "pooling": "mean"}), (DataSpec("regression", (16, 1), 0), {"layers": 1}),
     (DataSpec("binary", (5, 3), 2), {"heads": 2, "dropout": 0.2})],
)
def test_encoder_output_shape_is_the_tasks_number_of_scores(spec, overrides):
    encoder = make_encoder(spec, **overrides).eval()
    assert encoder(torch.randn(6, *spec.input_shape)).shape == (6, spec.num_outputs)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"width": 18}, r"width: must be even and a multiple of heads \(4\)"), ({"heads": 0}, "heads: must be a positive"),
     ({"dropout": -0.1}, r"dropout: must be in \[0, 1\)"), ({"ff_size": 0}, "ff_size: must be a positive")],
)
def test_check_config_names_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        Transformer.check_config({**MODEL, **overrides})


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_encoder_fits_a_small_batch(norm):
    torch.manual_seed(6)
    encoder = make_encoder(norm=norm, width=32)
    x, y = torch.randn(32, 8, 8), torch.arange(32) % 10
    fit_batch(encoder, x, y, steps=150)
    encoder.eval()
    assert (encoder(x).argmax(-1) == y).float().mean() == 1.0
