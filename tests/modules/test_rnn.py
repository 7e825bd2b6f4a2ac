"""Recurrent networks (ch. 7): the explicit Elman, LSTM and GRU recurrences equal PyTorch's fused
layers, stacked and bidirectional; the final state; shapes, config checks and fitting."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modules.rnn import LAYERS, RecurrentNetwork, elman_cell, explicit_forward, gru_cell, lstm_cell
from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig

from conftest import fit_batch

ADAM = OptimizerConfig(name="adam", lr=1e-2, weight_decay=0.0, momentum=0.0, nesterov=False)
NO_SCHEDULE = SchedulerConfig(name="none", step_size=1, gamma=1.0, warmup_epochs=0)
ROWS = DataSpec("multiclass", (8, 8), 10)


def make_network(spec: DataSpec = ROWS, **overrides) -> RecurrentNetwork:
    model = {"cell": "lstm", "hidden_size": 12, "num_layers": 1, "bidirectional": False, "dropout": 0.0}
    model.update(overrides)
    RecurrentNetwork.check_config(model)
    return RecurrentNetwork(data=spec, optimizer=ADAM, scheduler=NO_SCHEDULE, **model)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize(("num_layers", "bidirectional"), [(1, False), (1, True), (3, False), (2, True)])
def test_explicit_recurrence_equals_the_fused_layer(cell, num_layers, bidirectional):
    torch.manual_seed(0)
    layer = LAYERS[cell](5, 7, num_layers=num_layers, batch_first=True, bidirectional=bidirectional).double()
    x = torch.randn(4, 9, 5, dtype=torch.float64)
    with torch.no_grad():
        fused, _ = layer(x)
        explicit = explicit_forward(layer, x)
    assert explicit.shape == fused.shape == (4, 9, 7 * (2 if bidirectional else 1))
    torch.testing.assert_close(explicit, fused, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("cell", "library"), [(elman_cell, nn.RNNCell), (lstm_cell, nn.LSTMCell), (gru_cell, nn.GRUCell)])
def test_one_step_of_each_cell_equals_the_library_cell(cell, library):
    torch.manual_seed(1)
    reference = library(3, 6).double()
    x, h, c = torch.randn(5, 3).double(), torch.randn(5, 6).double(), torch.randn(5, 6).double()
    weights = (reference.weight_ih, reference.weight_hh, reference.bias_ih, reference.bias_hh)
    with torch.no_grad():
        if library is nn.LSTMCell:
            for mine, theirs in zip(cell(x, (h, c), *weights), reference(x, (h, c))):
                torch.testing.assert_close(mine, theirs)
        else:
            torch.testing.assert_close(cell(x, h, *weights), reference(x, h))


def test_lstm_cell_state_follows_the_gate_equations_by_hand():
    """A one-unit LSTM with hand-set weights: every gate value computed on paper."""
    w_ih = torch.tensor([[1.0], [2.0], [0.5], [-1.0]])  # i, f, g, o rows
    w_hh = torch.tensor([[0.0], [0.0], [0.0], [0.0]])
    bias = torch.zeros(4)
    x, h, c = torch.tensor([[1.0]]), torch.tensor([[0.3]]), torch.tensor([[2.0]])
    h_new, c_new = lstm_cell(x, (h, c), w_ih, w_hh, bias, bias)
    sigmoid = lambda v: 1 / (1 + torch.exp(-torch.tensor(v)))  # noqa: E731
    c_expected = sigmoid(2.0) * 2.0 + sigmoid(1.0) * torch.tanh(torch.tensor(0.5))
    torch.testing.assert_close(c_new, c_expected.reshape(1, 1))
    torch.testing.assert_close(h_new, (sigmoid(-1.0) * torch.tanh(c_expected)).reshape(1, 1))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_final_state_is_the_top_layers_last_state_in_each_direction(cell, bidirectional):
    torch.manual_seed(2)
    network = make_network(cell=cell, num_layers=2, bidirectional=bidirectional).eval()
    x = torch.randn(3, 8, 8)
    with torch.no_grad():
        outputs, state = network.recurrent(x)
        h_n = state[0] if cell == "lstm" else state  # (layers · directions, B, H)
        expected = torch.cat(list(h_n[-2:] if bidirectional else h_n[-1:]), dim=-1)
        torch.testing.assert_close(network.final_state(outputs), expected)


@pytest.mark.parametrize(
    ("spec", "overrides"),
    [
        (ROWS, {}),
        (ROWS, {"cell": "gru", "num_layers": 2, "bidirectional": True, "dropout": 0.3}),
        (DataSpec("regression", (16, 1), 0), {"cell": "rnn"}),
        (DataSpec("binary", (5, 3), 2), {"bidirectional": True}),
    ],
)
def test_output_shape_is_the_tasks_number_of_scores(spec, overrides):
    network = make_network(spec, **overrides).eval()
    assert network(torch.randn(6, *spec.input_shape)).shape == (6, spec.num_outputs)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"dropout": 1.0}, "dropout: must be in [0, 1)"), ({"hidden_size": 0}, "hidden_size: must be a positive integer"),
     ({"num_layers": 0}, "num_layers: must be a positive integer")],
)
def test_check_config_names_the_key(overrides, message):
    model = {"cell": "lstm", "hidden_size": 12, "num_layers": 1, "bidirectional": False, "dropout": 0.0, **overrides}
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")):
        RecurrentNetwork.check_config(model)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_each_cell_fits_a_small_batch(cell):
    torch.manual_seed(3)
    network = make_network(cell=cell, hidden_size=32)
    x, y = torch.randn(32, 8, 8), torch.arange(32) % 10
    fit_batch(network, x, y, steps=150)
    network.eval()
    assert (network(x).argmax(-1) == y).float().mean() == 1.0
