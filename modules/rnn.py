"""Recurrent networks (ch. 7): the Elman RNN, the LSTM and the GRU, stacked and bidirectional.

A recurrent layer reads x_1, …, x_T and carries a hidden state h_t (h_0 = 0):

Elman RNN   h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)

LSTM        i_t = σ(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)        input gate
            f_t = σ(W_if x_t + b_if + W_hf h_{t-1} + b_hf)        forget gate
            g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)     candidate cell
            o_t = σ(W_io x_t + b_io + W_ho h_{t-1} + b_ho)        output gate
            c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t,   h_t = o_t ⊙ tanh(c_t)   (c_0 = 0)

GRU         r_t = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)        reset gate
            z_t = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)        update gate
            n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn))
            h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}

Stacking feeds layer ℓ's states h_1, …, h_T to layer ℓ + 1 as its inputs. A bidirectional layer
runs a second recurrence from x_T back to x_1 and concatenates the two states at each step.

Training uses PyTorch's fused layers (nn.RNN, nn.LSTM, nn.GRU); `elman_cell`, `lstm_cell`,
`gru_cell` and `explicit_forward` are the equations above written out, step by step, on the same
weights (PyTorch stacks the gates' matrices in the orders i, f, g, o and r, z, n), and the tests
check that they give the fused layers' outputs.

The network: the recurrent stack over the sequence, then the final state of the top layer (its
forward state after x_T and, if bidirectional, its backward state after x_1), dropout and an
affine layer to the task's scores.

On token data (the `sequence` task) it is a language model (a char-RNN): tokens enter one-hot, and
the state after x_t gives the scores of x_{t+1}, p(x_{t+1} | x_1, …, x_t) = softmax(W h_t + b), at the
input's last L positions (L the target length); training minimises the cross-entropy of every target
token, whose exponential is the perplexity. `generate` carries the state forward one token at a time
(greedy, or sampled from softmax(scores / τ)). Only a forward recurrence may read the tokens: a
bidirectional one would see the tokens it predicts.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.core.supervised import SupervisedModule, sequence_examples

Cell = Literal["rnn", "lstm", "gru"]
LAYERS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def elman_cell(x, h, w_ih, w_hh, b_ih, b_hh):
    """h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh); x (B, D), h (B, H)."""
    return torch.tanh(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)


def lstm_cell(x, state, w_ih, w_hh, b_ih, b_hh):
    """One LSTM step: (h_{t-1}, c_{t-1}) -> (h_t, c_t) by the gate equations above."""
    h, c = state
    w_ii, w_if, w_ig, w_io = w_ih.chunk(4)
    w_hi, w_hf, w_hg, w_ho = w_hh.chunk(4)
    b_ii, b_if, b_ig, b_io = b_ih.chunk(4)
    b_hi, b_hf, b_hg, b_ho = b_hh.chunk(4)
    i = torch.sigmoid(x @ w_ii.T + b_ii + h @ w_hi.T + b_hi)
    f = torch.sigmoid(x @ w_if.T + b_if + h @ w_hf.T + b_hf)
    g = torch.tanh(x @ w_ig.T + b_ig + h @ w_hg.T + b_hg)
    o = torch.sigmoid(x @ w_io.T + b_io + h @ w_ho.T + b_ho)
    c = f * c + i * g
    return o * torch.tanh(c), c


def gru_cell(x, h, w_ih, w_hh, b_ih, b_hh):
    """One GRU step: h_{t-1} -> h_t by the gate equations above."""
    w_ir, w_iz, w_in = w_ih.chunk(3)
    w_hr, w_hz, w_hn = w_hh.chunk(3)
    b_ir, b_iz, b_in = b_ih.chunk(3)
    b_hr, b_hz, b_hn = b_hh.chunk(3)
    r = torch.sigmoid(x @ w_ir.T + b_ir + h @ w_hr.T + b_hr)
    z = torch.sigmoid(x @ w_iz.T + b_iz + h @ w_hz.T + b_hz)
    n = torch.tanh(x @ w_in.T + b_in + r * (h @ w_hn.T + b_hn))
    return (1 - z) * n + z * h


def explicit_forward(layer: nn.RNNBase, x: torch.Tensor) -> torch.Tensor:
    """The outputs (B, T, H · directions) of a batch-first nn.RNN/nn.LSTM/nn.GRU (tanh, biases, no
    dropout), computed one time step at a time with the cells above and the layer's own weights."""
    batch, steps, _ = x.shape
    kind = "lstm" if isinstance(layer, nn.LSTM) else "gru" if isinstance(layer, nn.GRU) else "rnn"
    cell = {"rnn": elman_cell, "lstm": lstm_cell, "gru": gru_cell}[kind]
    inputs = x
    for depth in range(layer.num_layers):
        outputs = []
        for direction in range(2 if layer.bidirectional else 1):
            suffix = f"l{depth}" + ("_reverse" if direction else "")
            weights = [getattr(layer, f"{name}_{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            h = x.new_zeros(batch, layer.hidden_size)
            state = (h, h) if kind == "lstm" else h
            states = [None] * steps
            for t in reversed(range(steps)) if direction else range(steps):
                state = cell(inputs[:, t], state, *weights)
                states[t] = state[0] if kind == "lstm" else state
            outputs.append(torch.stack(states, dim=1))
        inputs = torch.cat(outputs, dim=-1)
    return inputs


class RecurrentNetwork(SupervisedModule):
    """x (B, T, D) -> recurrent stack -> final state of the top layer -> dropout -> affine -> (B, K);
    tokens (B, T) -> one-hot -> recurrent stack -> each of the last L states -> dropout -> affine -> (B, L, K)."""

    TASKS = ("regression", "binary", "multiclass", "sequence")
    SEQUENCE_INPUT = True
    CHAPTER = 7

    def __init__(
        self,
        *,
        data: DataSpec,
        optimizer: OptimizerConfig,
        scheduler: SchedulerConfig,
        cell: Cell,  # rnn (Elman), lstm or gru
        hidden_size: int,  # H, the state's width in each direction
        num_layers: int,  # stacked recurrent layers
        bidirectional: bool,  # a second recurrence from the end of the sequence back to its start
        dropout: float,  # between stacked layers and before the affine head, in [0, 1)
    ):
        super().__init__(data=data, optimizer=optimizer, scheduler=scheduler)
        self.tokens = data.task == "sequence"
        features = data.vocab_size if self.tokens else data.input_shape[1]
        self.target_length = data.target_length
        self.hidden_size = hidden_size
        self.recurrent = LAYERS[cell](
            features, hidden_size, num_layers=num_layers, batch_first=True, bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        directions = 2 if bidirectional else 1
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(directions * hidden_size, data.num_outputs))

    @staticmethod
    def check_config(model: dict, data: DataSpec | None = None) -> None:
        if not 0 <= model["dropout"] < 1:
            raise ValueError(f"dropout: must be in [0, 1), got {model['dropout']}")
        for key in ("hidden_size", "num_layers"):
            if model[key] < 1:
                raise ValueError(f"{key}: must be a positive integer, got {model[key]}")
        if model["bidirectional"] and data is not None and data.task == "sequence":
            raise ValueError("bidirectional: must be false on token sequences (a language model may not read the tokens it predicts)")

    @staticmethod
    def small_config(model: dict) -> dict:
        return {**model, "hidden_size": 8, "num_layers": 1}

    def final_state(self, outputs: torch.Tensor) -> torch.Tensor:
        """(B, T, H · directions) -> (B, H · directions): forward state after x_T, backward state after x_1."""
        forward = outputs[:, -1, : self.hidden_size]
        if not self.recurrent.bidirectional:
            return forward
        return torch.cat([forward, outputs[:, 0, self.hidden_size :]], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tokens:
            outputs, _ = self.recurrent(F.one_hot(x, self.recurrent.input_size).float())  # (B, T, H)
            return self.head(outputs[:, -self.target_length :])  # (B, L, K)
        outputs, _ = self.recurrent(x)  # (B, T, H · directions)
        return self.head(self.final_state(outputs))  # (B, K)

    @torch.no_grad()
    def generate(
        self, prompt: torch.Tensor, steps: int, temperature: float = 0.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Tokens: extend prompt (B, P) by `steps` tokens (B, steps), the state carried from step to step;
        greedily when temperature is 0, else sampled from softmax(scores / temperature)."""
        one_hot = lambda tokens: F.one_hot(tokens, self.recurrent.input_size).float()  # noqa: E731
        outputs, state = self.recurrent(one_hot(prompt))
        generated = []
        for _ in range(steps):
            last = self.head(outputs[:, -1])  # (B, K)
            if temperature == 0:
                token = last.argmax(dim=-1, keepdim=True)
            else:
                token = torch.multinomial((last / temperature).softmax(dim=-1), 1, generator=generator)
            generated.append(token)
            outputs, state = self.recurrent(one_hot(token), state)
        return torch.cat(generated, dim=1)

    def examples(self, x: torch.Tensor, y: torch.Tensor, meta: dict, count: int = 8) -> str | None:
        """Tokens: the first test prompts with their targets, greedy continuations and samples (sequence_examples)."""
        return sequence_examples(self.generate, x, y, self.target_length, meta, count) if self.tokens else None


MODEL = RecurrentNetwork
