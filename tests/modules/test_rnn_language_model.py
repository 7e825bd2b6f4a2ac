"""The recurrent family on tokens (ch. 7): a character language model. Causality, generation with the
state carried against recomputation from the whole sequence, sampling, and the generated examples."""

from __future__ import annotations

import pytest
import torch

from modules.rnn import RecurrentNetwork
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.spec import DataSpec

from conftest import fit_batch

ADAM = OptimizerConfig(name="adam", lr=1e-2, weight_decay=0.0, momentum=0.0, nesterov=False)
NO_SCHEDULE = SchedulerConfig(name="none", step_size=1, gamma=1.0, warmup_epochs=0)
STEPS, VOCABULARY = 12, 7
SPEC = DataSpec("sequence", (STEPS,), VOCABULARY, vocab_size=VOCABULARY, target_length=STEPS)


def make_language_model(cell: str = "lstm", **overrides) -> RecurrentNetwork:
    model = {"cell": cell, "hidden_size": 16, "num_layers": 2, "bidirectional": False, "dropout": 0.0, **overrides}
    RecurrentNetwork.check_config(model, SPEC)
    return RecurrentNetwork(data=SPEC, optimizer=ADAM, scheduler=NO_SCHEDULE, **model)


def tokens(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, VOCABULARY, (n, STEPS + 1), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_a_change_at_step_t_leaves_every_earlier_score_unchanged(cell):
    torch.manual_seed(0)
    model = make_language_model(cell).eval()
    x = tokens(3, 0)[:, :STEPS]
    with torch.no_grad():
        before = model(x)
        assert before.shape == (3, STEPS, VOCABULARY)
        for t in range(STEPS):
            changed = x.clone()
            changed[:, t] = (changed[:, t] + 1) % VOCABULARY
            after = model(changed)
            torch.testing.assert_close(before[:, :t], after[:, :t])
            assert not torch.allclose(before[:, t], after[:, t]), t


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_greedy_generation_carrying_the_state_equals_the_argmax_over_the_whole_sequence(cell):
    torch.manual_seed(1)
    model = make_language_model(cell).eval()
    prompt = tokens(4, 1)[:, :3]
    generated = model.generate(prompt, STEPS - 3)
    sequence = torch.cat([prompt, generated], dim=1)
    with torch.no_grad():  # recomputed from the start: each generated token is the argmax given all before it
        expected = model(sequence)[:, 2:-1].argmax(dim=-1)
    torch.testing.assert_close(generated, expected)


def test_sampling_draws_tokens_with_probabilities_softmax_of_scores_over_temperature():
    torch.manual_seed(2)
    model = make_language_model("gru").eval()
    with torch.no_grad():
        model.head[1].weight.mul_(6.0)  # a distribution far from uniform
    prompt = tokens(1, 2)[:, :4].repeat(20_000, 1)
    first = model.generate(prompt, 1, temperature=0.5, generator=torch.Generator().manual_seed(3))[:, 0]
    with torch.no_grad():
        expected = (model(prompt[:1])[0, -1] / 0.5).softmax(-1)
    observed = torch.bincount(first, minlength=VOCABULARY).double() / len(first)
    assert (observed - expected).abs().max() < 0.015  # > 4 standard errors of a frequency from 20 000 draws
    assert expected.max() > 0.2


def test_the_language_model_learns_a_periodic_text():
    torch.manual_seed(4)
    model = make_language_model("lstm")
    period = torch.tensor([0, 1, 2, 3, 4, 5, 6, 3, 1])
    text = period.repeat(10)
    x = torch.stack([text[i : i + STEPS] for i in range(0, 60, 3)])
    y = torch.stack([text[i + 1 : i + STEPS + 1] for i in range(0, 60, 3)])
    fit_batch(model, x, y, steps=200)
    model.eval()
    # after the ambiguous 3 (followed by 4 or 1) has been seen in context, the continuation is determined
    assert (model.generate(text[None, :9], 18) == text[9:27][None]).all()


def test_a_bidirectional_language_model_is_refused():
    model = {"cell": "lstm", "hidden_size": 8, "num_layers": 1, "bidirectional": True, "dropout": 0.0}
    with pytest.raises(ValueError, match="^bidirectional: must be false on token sequences"):
        RecurrentNetwork.check_config(model, SPEC)


def test_examples_show_the_prompt_half_of_a_window_and_its_continuation_as_text():
    model = make_language_model().eval()
    x = tokens(5, 5)
    vocabulary = "abc\n efg"[:VOCABULARY]
    lines = model.examples(x[:, :STEPS], x[:, 1:], {"vocabulary": vocabulary}, count=2).splitlines()
    assert len(lines) == 3 and lines[0] == "prompt | target | greedy | sampled (temperature 1)"
    prompt, target, greedy, _ = lines[1].split(" | ")
    text = lambda row: repr("".join(vocabulary[t] for t in row))  # noqa: E731
    assert prompt == text(x[0, : STEPS // 2].tolist())
    assert target == text(x[0, STEPS // 2 :].tolist())  # to the window's end
    assert greedy == text(model.generate(x[:1, : STEPS // 2], STEPS // 2 + 1)[0].tolist())
