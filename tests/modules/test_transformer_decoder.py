"""Autoregressive decoder (ch. 7): causal masking, generation (greedy and temperature sampling), and
the test metric's exact match equal to greedy generation's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modules.transformer import Transformer
from pipeline.core import metrics
from pipeline.datasets.reverse_digits import SEPARATOR, reverse_task
from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.core.supervised import task_loss

from conftest import fit_batch

ADAM = OptimizerConfig(name="adam", lr=3e-3, weight_decay=0.0, momentum=0.0, nesterov=False)
NO_SCHEDULE = SchedulerConfig(name="none", step_size=1, gamma=1.0, warmup_epochs=0)
LENGTH = 5
SPEC = DataSpec("sequence", (2 * LENGTH,), 10, vocab_size=11, target_length=LENGTH)


def make_decoder(**overrides) -> Transformer:
    model = {"width": 32, "heads": 4, "layers": 2, "ff_size": 64, "dropout": 0.0, "norm": "pre", "pooling": "mean",
             "positions": "sinusoidal", "init": "default", "window_offsets": "fixed", **overrides}
    Transformer.check_config(model)
    return Transformer(data=SPEC, optimizer=ADAM, scheduler=NO_SCHEDULE, **model)


def reverse_batch(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = reverse_task(np.random.default_rng(seed).integers(0, 10, size=(n, LENGTH)))
    return torch.tensor(x), torch.tensor(y)


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_a_change_at_step_t_leaves_every_earlier_output_unchanged(norm):
    torch.manual_seed(0)
    decoder = make_decoder(norm=norm).eval()
    tokens, _ = reverse_batch(4, 0)
    for t in range(tokens.shape[1]):
        changed = tokens.clone()
        changed[:, t] = (changed[:, t] + 1) % 11
        with torch.no_grad():
            before, after = decoder.scores(tokens), decoder.scores(changed)
        torch.testing.assert_close(before[:, :t], after[:, :t])
        assert not torch.allclose(before[:, t], after[:, t]), t  # position t itself does see the change


def test_forward_gives_the_scores_of_the_target_positions():
    decoder = make_decoder().eval()
    x, y = reverse_batch(3, 1)
    with torch.no_grad():
        assert decoder(x).shape == (3, LENGTH, 10)
        # the first target token is predicted at the separator, which ends the source; the last from
        # the input's last position
        assert (x[:, LENGTH] == SEPARATOR).all()
        torch.testing.assert_close(decoder(x), decoder.scores(x)[:, LENGTH:])


def test_greedy_generation_takes_the_most_probable_token_given_its_own_prefix():
    torch.manual_seed(2)
    decoder = make_decoder().eval()
    x, _ = reverse_batch(6, 2)
    prompt = x[:, : LENGTH + 1]
    generated = decoder.generate(prompt, LENGTH)
    with torch.no_grad():
        chained = decoder(torch.cat([prompt, generated[:, :-1]], dim=1)).argmax(-1)
    torch.testing.assert_close(generated, chained)


def test_exact_match_from_teacher_forcing_equals_exact_match_of_greedy_generation():
    """The evaluate stage's exact match (all argmaxes right given the true prefix) counts the same
    samples as decoding greedily and comparing with the target, on a half-trained model where some
    samples come out right and some do not."""
    torch.manual_seed(3)
    decoder = make_decoder()
    x, y = reverse_batch(256, 3)
    fit_batch(decoder, x, y, steps=60)
    decoder.eval()
    test_x, test_y = reverse_batch(400, 4)
    with torch.no_grad():
        probabilities = decoder.predict(test_x)
    generated = decoder.generate(test_x[:, : LENGTH + 1], LENGTH)
    by_generation = (generated == test_y).all(dim=1).float().mean().item()
    measured = metrics.test_metrics("sequence", probabilities, test_y, 10)
    assert 0.02 < by_generation < 0.98, "the check needs some right and some wrong samples"
    assert measured["test/exact_match"] == pytest.approx(by_generation, abs=1e-6)
    assert measured["test/token_accuracy"] == pytest.approx((probabilities.argmax(-1) == test_y).float().mean().item(), abs=1e-6)


def test_perplexity_is_the_exponential_of_the_training_loss():
    torch.manual_seed(5)
    decoder = make_decoder().eval()
    x, y = reverse_batch(50, 5)
    with torch.no_grad():
        loss = task_loss("sequence", decoder(x), y)
        perplexity = metrics.test_metrics("sequence", decoder.predict(x), y, 10)["test/perplexity"]
    assert perplexity == pytest.approx(torch.exp(loss).item(), rel=1e-5)


def test_sampling_at_a_tiny_temperature_is_greedy():
    torch.manual_seed(6)
    decoder = make_decoder().eval()
    prompt = reverse_batch(8, 6)[0][:, : LENGTH + 1]
    sampled = decoder.generate(prompt, LENGTH, temperature=1e-6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sampled, decoder.generate(prompt, LENGTH))


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_sampling_draws_tokens_with_probabilities_softmax_of_scores_over_temperature(temperature):
    torch.manual_seed(7)
    decoder = make_decoder().eval()
    with torch.no_grad():
        decoder.head.weight.mul_(4.0)  # a distribution far from uniform
    prompt = reverse_batch(1, 7)[0][:, : LENGTH + 1].repeat(20_000, 1)
    first = decoder.generate(prompt, 1, temperature=temperature, generator=torch.Generator().manual_seed(1))[:, 0]
    with torch.no_grad():
        expected = (decoder.scores(prompt[:1])[0, -1] / temperature).softmax(-1)
    observed = torch.bincount(first, minlength=10).double() / len(first)
    assert (observed - expected).abs().max() < 0.015  # > 4 standard errors of a frequency from 20 000 draws
    assert expected.max() > 0.2  # not a uniform distribution, which any sampler would match


def test_the_decoder_learns_to_reverse_a_small_batch():
    torch.manual_seed(8)
    decoder = make_decoder()
    x, y = reverse_batch(64, 8)
    fit_batch(decoder, x, y, steps=250)
    decoder.eval()
    assert (decoder.generate(x[:, : LENGTH + 1], LENGTH) == y).all()


def test_examples_show_prompt_target_greedy_and_sampled_outputs():
    decoder = make_decoder().eval()
    x, y = reverse_batch(10, 9)
    lines = decoder.examples(x, y, {}, count=4).splitlines()
    assert len(lines) == 5 and lines[0].startswith("prompt | target | greedy")
    prompt, target, greedy, _ = lines[1].split(" | ")
    assert prompt.split() == [str(t) for t in x[0, : LENGTH + 1].tolist()]
    assert target.split() == [str(t) for t in y[0].tolist()]
    assert greedy.split() == [str(t) for t in decoder.generate(x[:1, : LENGTH + 1], LENGTH)[0].tolist()]


def test_scaled_init_draws_gpt2s_standard_deviations():
    """init: scaled: weights and embeddings N(0, 0.02²), biases 0, each block's W_O and W₂ with standard
    deviation 0.02 / √(2N) (N = 4 blocks: 0.02 / √8), layer norms as PyTorch makes them."""
    from modules.transformer import residual_init_std

    assert residual_init_std(4) == pytest.approx(0.02 / 8**0.5)
    torch.manual_seed(0)
    decoder = make_decoder(width=64, layers=4, ff_size=256, init="scaled")
    blocks = decoder.stack.blocks
    residual = torch.cat([w.flatten() for b in blocks for w in (b.attention.out.weight, b.feedforward[-1].weight)])
    others = torch.cat([decoder.embed.weight.flatten(), decoder.head.weight.flatten()]
                       + [w.flatten() for b in blocks for w in (b.attention.qkv.weight, b.feedforward[0].weight)])
    assert residual.std().item() == pytest.approx(0.02 / 8**0.5, rel=0.03)
    assert others.std().item() == pytest.approx(0.02, rel=0.03)
    assert all((b.attention.out.bias == 0).all() and (b.feedforward[-1].bias == 0).all() for b in blocks)
    assert all((b.norm1.weight == 1).all() and (b.norm1.bias == 0).all() for b in blocks)


def test_learned_positions_are_a_parameter_that_training_moves_and_the_decoder_stays_causal():
    torch.manual_seed(4)
    decoder = make_decoder(positions="learned")
    assert isinstance(decoder.stack.positions, torch.nn.Parameter)
    assert decoder.stack.positions.shape == (2 * LENGTH + 1, 32)
    before = decoder.stack.positions.detach().clone()
    x, y = reverse_batch(16, 4)
    fit_batch(decoder, x, y, steps=3)
    assert not torch.equal(before, decoder.stack.positions.detach())
    decoder.eval()
    changed = x.clone()
    changed[:, 3] = (changed[:, 3] + 1) % 11
    with torch.no_grad():
        torch.testing.assert_close(decoder.scores(x)[:, :3], decoder.scores(changed)[:, :3])
    assert not any("positions" in name for name, _ in make_decoder().named_parameters())  # sinusoidal: a fixed buffer


def test_random_window_offsets_are_the_families_request_to_the_datamodule():
    assert make_decoder(window_offsets="random").random_window_offsets
    assert not make_decoder().random_window_offsets


@pytest.mark.parametrize(("change", "spec", "message"), [
    ({"positions": "rotary"}, SPEC, r"^model\.positions: unknown value 'rotary'; allowed: sinusoidal, learned, alibi$"),
    ({"positions": "alibi"}, DataSpec("multiclass", (8, 8), 10),
     r"^model\.positions: alibi biases a causal decoder's attention \(task sequence\), not an encoder of multiclass "
     r"samples; allowed here: sinusoidal, learned$"),
    ({"init": "xavier"}, SPEC, r"^model\.init: unknown value 'xavier'; allowed: default, scaled$"),
    ({"window_offsets": "shuffled"}, SPEC, r"^model\.window_offsets: unknown value 'shuffled'; allowed: fixed, random$"),
    ({"window_offsets": "random"}, DataSpec("multiclass", (8, 8), 10),
     r"^model\.window_offsets: random moves the windows of a text \(task sequence\), not multiclass samples; allowed here: fixed$"),
])
def test_the_new_options_are_checked_with_one_line_naming_the_key(change, spec, message):
    from pipeline.base import ConfigError
    from pipeline.params import model_kwargs

    model = {"width": 32, "heads": 4, "layers": 2, "ff_size": 64, "dropout": 0.0, "norm": "pre", "pooling": "mean",
             "positions": "sinusoidal", "init": "default", "window_offsets": "fixed"}
    with pytest.raises(ConfigError, match=message):
        model_kwargs(Transformer, {**model, **change}, "model", spec)


def test_alibi_bias_follows_the_formula_entry_by_entry():
    from modules.transformer import alibi_bias

    heads, steps = 4, 6
    bias = alibi_bias(heads, steps)
    for h in range(heads):
        slope = 2.0 ** (-8.0 * (h + 1) / heads)  # 1/4, 1/16, 1/64, 1/256
        for t in range(steps):
            for s in range(steps):
                expected = -slope * (t - s) if s <= t else float("-inf")
                assert bias[h, t, s].item() == pytest.approx(expected), (h, t, s)


def test_alibi_decoder_attends_with_softmax_of_scores_plus_the_biases():
    """One pre-norm block under ALiBi equals attention written out: softmax(Q Kᵀ / √d_k + B_h) V per head, the
    embedded tokens with no positions added; and the decoder stays causal."""
    from modules.transformer import alibi_bias

    torch.manual_seed(5)
    decoder = make_decoder(positions="alibi").eval()
    tokens, _ = reverse_batch(3, 5)
    block = decoder.stack.blocks[0]
    h = decoder.embed(tokens)
    q, k, v = block.attention.project(block.norm1(h))
    scores = q @ k.transpose(-2, -1) / (32 / 4) ** 0.5 + alibi_bias(4, tokens.shape[1])
    heads = scores.softmax(-1) @ v
    expected = h + block.attention.out(heads.transpose(1, 2).flatten(2))
    expected = expected + block.feedforward(block.norm2(expected))
    with torch.no_grad():
        torch.testing.assert_close(block(h, decoder.stack.bias[:, :10, :10]), expected)
        changed = tokens.clone()
        changed[:, 4] = (changed[:, 4] + 1) % 11
        torch.testing.assert_close(decoder.scores(tokens)[:, :4], decoder.scores(changed)[:, :4])
    assert not any("positions" in name for name, _ in decoder.named_buffers())
