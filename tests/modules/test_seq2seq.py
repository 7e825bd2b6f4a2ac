"""Encoder-decoders (ch. 7): additive attention against a hand-written loop, the fused cross-attention
decoder against its equations, padding masked, greedy decoding against the teacher-forced exact match,
the per-length metrics and the mirrored-attention share, and the families' config errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modules.seq2seq_rnn import Seq2SeqRNN, additive_attention
from modules.seq2seq_transformer import Seq2SeqTransformer, explicit_decoder_layer
from modules.transformer import sinusoidal_positions
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.core import metrics
from pipeline.datasets._seq2seq import PAD, SEPARATOR, layout
from pipeline.datasets.every_other_8_16_32 import every_other
from pipeline.datasets.reverse_8_16_32 import reverse
from pipeline.spec import DataSpec

from conftest import fit_batch

ADAM = OptimizerConfig(name="adam", lr=1e-2, weight_decay=0.0, momentum=0.0, nesterov=False)
NO_SCHEDULE = SchedulerConfig(name="none", step_size=1, gamma=1.0, warmup_epochs=0)
LONGEST = 32  # pipeline/datasets/_seq2seq.py's longest source: layout pads to it
SPEC = DataSpec("sequence", (LONGEST + LONGEST,), 11, vocab_size=12, target_length=LONGEST, pad_token=PAD)
RNN = {"cell": "gru", "attention": "additive", "embedding_size": 8, "hidden_size": 8, "attention_size": 6}
TRANSFORMER = {"width": 16, "heads": 2, "encoder_layers": 1, "decoder_layers": 2, "ff_size": 24}


def make(family, spec=SPEC, **overrides):
    model = {**(RNN if family is Seq2SeqRNN else TRANSFORMER), **overrides}
    family.check_config(model, spec)
    return family(data=spec, optimizer=ADAM, scheduler=NO_SCHEDULE, **model)


def reversal_batch(n: int, lengths, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    sources = [rng.integers(0, 10, size=lengths[i % len(lengths)]) for i in range(n)]
    x, y = layout(sources, [reverse(s[None])[0] for s in sources], LONGEST)
    return torch.tensor(x), torch.tensor(y)


def test_additive_attention_equals_a_loop_over_target_and_source_positions():
    """e_tj = vᵀ tanh(W s_{t-1} + U h_j), α = softmax over the unmasked j, c_t = Σ_j α_tj h_j, by explicit sums."""
    torch.manual_seed(0)
    batch, source, width, state, size = 3, 5, 4, 6, 7
    h, s_prev = torch.randn(batch, source, width), torch.randn(batch, state)
    u, w, v = torch.randn(size, width), torch.randn(size, state), torch.randn(size)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    context, alpha = additive_attention(s_prev, h, h @ u.T, w, v, mask)
    for b in range(batch):
        scores = {}
        for j in range(source):
            if mask[b, j]:
                scores[j] = sum(v[a] * torch.tanh(sum(w[a, k] * s_prev[b, k] for k in range(state))
                                                  + sum(u[a, k] * h[b, j, k] for k in range(width))) for a in range(size))
        total = sum(torch.exp(e) for e in scores.values())
        for j in range(source):
            expected = torch.exp(scores[j]) / total if j in scores else torch.tensor(0.0)
            torch.testing.assert_close(alpha[b, j], expected)
        torch.testing.assert_close(context[b], sum(torch.exp(scores[j]) / total * h[b, j] for j in scores))


@pytest.mark.parametrize("masked", [False, True])
def test_the_fused_decoder_block_equals_its_equations(masked):
    """nn.TransformerDecoderLayer (causal self-attention, cross-attention, feedforward) against
    explicit_decoder_layer on the same weights, with and without padding in the source."""
    torch.manual_seed(1)
    model = make(Seq2SeqTransformer).eval()
    y, z = torch.randn(4, 6, 16), torch.randn(4, 9, 16)
    mask = torch.ones(4, 9, dtype=torch.bool)
    if masked:
        mask[1, 5:], mask[2, 2:] = False, False
    causal = torch.nn.Transformer.generate_square_subsequent_mask(6)
    layer = model.decoder.layers[0]
    with torch.no_grad():
        fused = layer(y, z, tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=~mask)
        torch.testing.assert_close(fused, explicit_decoder_layer(layer, y, z, mask), atol=1e-5, rtol=1e-5)
        if masked:  # what lies in the masked memory positions changes nothing
            changed = z.clone()
            changed[~mask] = torch.randn(int((~mask).sum()), 16)
            torch.testing.assert_close(fused, layer(y, changed, tgt_mask=causal, tgt_is_causal=True,
                                                    memory_key_padding_mask=~mask))


@pytest.mark.parametrize("family", [Seq2SeqRNN, Seq2SeqTransformer])
def test_padding_of_the_source_changes_nothing(family):
    """The same sources laid out with a longer padding give the same scores: padding is masked (and skipped
    by the recurrent encoder), and the attention weights on it are 0."""
    torch.manual_seed(2)
    model = make(family).eval()
    x, _ = reversal_batch(6, (3, 5, 8), 2)
    short_spec = DataSpec("sequence", (16 + LONGEST,), 11, vocab_size=12, target_length=LONGEST, pad_token=PAD)
    short = make(family, short_spec).eval()
    short.load_state_dict(model.state_dict())
    trimmed = torch.cat([x[:, :16], x[:, LONGEST:]], dim=1)  # every source is at most 8 long
    with torch.no_grad():
        torch.testing.assert_close(model(x), short(trimmed), atol=1e-5, rtol=1e-5)
        weights = model.attention(x)
    assert (weights[x[:, None, :LONGEST].expand_as(weights) == PAD] == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:2]))


@pytest.mark.parametrize("family", [Seq2SeqRNN, Seq2SeqTransformer])
def test_a_target_token_changes_only_later_scores(family):
    torch.manual_seed(3)
    model = make(family).eval()
    x, _ = reversal_batch(4, (8,), 3)
    for t in (1, 5, 20):
        changed = x.clone()
        changed[:, LONGEST + t] = (changed[:, LONGEST + t] + 1) % 10
        with torch.no_grad():
            before, after = model(x), model(changed)
        torch.testing.assert_close(before[:, :t], after[:, :t])
        assert not torch.allclose(before[:, t], after[:, t])


@torch.no_grad()
def greedy_decode(model, x: torch.Tensor) -> torch.Tensor:
    """Greedy decoding (B, L), the independent computation: each step reads the previous step's most probable
    token, not the true one. x is the source, then the L decoder inputs (the separator and the target shifted
    right); position t + 1's input is replaced by step t's argmax, in turn."""
    tokens = x.clone()
    start = tokens.shape[1] - model.target_length
    for t in range(model.target_length - 1):
        tokens[:, start + t + 1] = model(tokens)[:, t].argmax(dim=-1)
    return model(tokens).argmax(dim=-1)


@pytest.mark.parametrize("family", [Seq2SeqRNN, Seq2SeqTransformer])
def test_exact_match_from_teacher_forcing_equals_greedy_decoding(family):
    """Half-trained, so some samples come out right and some not: the per-length exact match the evaluate
    stage reports (argmaxes given the true prefix) counts the samples greedy decoding gets right."""
    torch.manual_seed(4)
    spec = DataSpec("sequence", (LONGEST + LONGEST,), 11, vocab_size=12, target_length=LONGEST, pad_token=PAD)
    model = make(family, spec)
    x, y = reversal_batch(256, (1, 2, 3), 4)
    fit_batch(model, x, y, steps=40)
    model.eval()
    test_x, test_y = reversal_batch(300, (1, 2, 3), 5)
    with torch.no_grad():
        probabilities = model.predict(test_x)
    right = (greedy_decode(model, test_x) == test_y).all(dim=1)
    lengths = (test_x[:, :LONGEST] != PAD).sum(dim=1)
    measured = metrics.exact_match_per_length(probabilities, test_y, test_x[:, :LONGEST], PAD)
    assert 0.02 < right.float().mean() < 0.98, "the check needs some right and some wrong samples"
    for n in (1, 2, 3):
        assert measured[f"test/exact_match_{n}"] == pytest.approx(right[lengths == n].float().mean().item(), abs=1e-6)


def test_the_recurrent_encoder_decoder_learns_short_reversal_with_attention():
    torch.manual_seed(5)
    model = make(Seq2SeqRNN, embedding_size=16, hidden_size=16, attention_size=16)
    x, y = reversal_batch(128, (2, 3), 6)
    fit_batch(model, x, y, steps=100)
    with torch.no_grad():
        assert (model(x).argmax(-1) == y).float().mean() > 0.95


def test_the_transformer_numbers_source_positions_from_both_ends():
    """Source position j of a source of n tokens gets [P[j]; P[n - 1 - j]], target position t gets [P[t]; P[t]]
    (P the sinusoids of width d / 2): t matches source position t in the first half, n - 1 - t in the second."""
    model = make(Seq2SeqTransformer)
    lengths = (3, 5, 8)
    x, _ = reversal_batch(3, lengths, 7)
    source, inputs = x[:, :LONGEST], x[:, LONGEST:]
    P = sinusoidal_positions(LONGEST, TRANSFORMER["width"] // 2)
    with torch.no_grad():
        source_positions = model.embed_source(source, source != PAD) - model.embed(source)
        target_positions = model.embed_target(inputs) - model.embed(inputs)
    for b, n in enumerate(lengths):
        for j in range(n):
            torch.testing.assert_close(source_positions[b, j], torch.cat([P[j], P[n - 1 - j]]))
    for t in range(LONGEST):
        torch.testing.assert_close(target_positions[0, t], torch.cat([P[t], P[t]]))


def test_mirrored_attention_counts_rows_whose_argmax_is_the_mirrored_position():
    source = torch.tensor([[1, 2, 3, PAD], [4, 5, PAD, PAD]])
    weights = torch.zeros(2, 4, 4)
    weights[0, 0, 2] = weights[0, 1, 1] = weights[0, 2, 2] = 1.0  # rows 0 and 1 mirrored, row 2 not
    weights[1, 0, 1] = weights[1, 1, 0] = 1.0  # both mirrored
    weights[0, 3, 0] = weights[1, 2, 0] = weights[1, 3, 0] = 1.0  # rows past the source's length: not counted
    assert metrics.mirrored_attention(weights, source, PAD) == pytest.approx(4 / 5)


def test_the_datasets_targets_and_layout():
    assert every_other(np.array([[1, 2, 3, 4, 5, 6]])).tolist() == [[1, 3, 5]]
    assert reverse(np.array([[1, 2, 3]])).tolist() == [[3, 2, 1]]
    x, y = layout([np.array([1, 2, 3])], [np.array([3, 2, 1])], 4)
    assert x.tolist() == [[1, 2, 3] + [PAD] * (LONGEST - 3) + [SEPARATOR, 3, 2, 1]]
    assert y.tolist() == [[3, 2, 1, PAD]]


@pytest.mark.parametrize(
    ("family", "key", "value", "message"),
    [
        (Seq2SeqRNN, "cell", "rnn", "cell: must be one of gru, lstm, got 'rnn'"),
        (Seq2SeqRNN, "attention", "dot", "attention: must be none or additive, got 'dot'"),
        (Seq2SeqRNN, "hidden_size", 0, "hidden_size: must be a positive integer, got 0"),
        (Seq2SeqTransformer, "width", 18, r"width: must be a multiple of 4 and of heads \(2\), got 18"),
        (Seq2SeqTransformer, "decoder_layers", 0, "decoder_layers: must be a positive integer, got 0"),
    ],
)
def test_check_config_names_the_key(family, key, value, message):
    model = {**(RNN if family is Seq2SeqRNN else TRANSFORMER), key: value}
    with pytest.raises(ValueError, match=message):
        family.check_config(model, SPEC)


def test_the_lstm_cell_trains_too():
    torch.manual_seed(6)
    model = make(Seq2SeqRNN, cell="lstm", attention="none")
    x, y = reversal_batch(16, (4,), 7)
    fit_batch(model, x, y, steps=2)
    with torch.no_grad():
        assert model(x).shape == (16, LONGEST, 11) and model.attention(x) is None
