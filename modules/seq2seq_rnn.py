"""Recurrent encoder-decoder (ch. 7), with or without additive (Bahdanau) attention.

Encoder. A bidirectional GRU or LSTM reads the source x_1, …, x_S (embedded tokens) and gives an
annotation h_j = [→h_j; ←h_j] (width 2H) for every source position j; padding after a source's end
is skipped (packed sequences), so h_j does not depend on how much padding follows.

Decoder. A GRU or LSTM cell with state s_t emits the target y_1, …, y_L:
    s_t = Cell([E y_{t-1}; c_t], s_{t-1}),    p(y_t | y_<t, x) = softmax(W_o [s_t; c_t]),
with y_0 the separator token and s_0 = tanh(W_init c), c = [→h_S; ←h_1] the encoder's final states.

Without attention (Cho et al. 2014) the context is that one fixed vector, c_t = c: the whole source
must pass through 2H numbers, and exact match falls as sources get longer. With additive attention
(Bahdanau et al. 2015) every step looks back at all the annotations:
    e_tj = vᵀ tanh(W s_{t-1} + U h_j),   α_tj = exp(e_tj) / Σ_k exp(e_tk),   c_t = Σ_j α_tj h_j,
the sum over the source's own positions (padding gets α = 0).

Inputs follow the sequence task's layout (pipeline/datasets/_seq2seq.py): the
source, then the separator and the target shifted right (teacher forcing); the scores (B, L, K) are for
the last L positions.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.core.supervised import SupervisedModule

Cell = Literal["gru", "lstm"]
Attention = Literal["none", "additive"]
CELLS: dict[str, tuple[type[nn.RNNBase], type[nn.RNNCellBase]]] = {"gru": (nn.GRU, nn.GRUCell), "lstm": (nn.LSTM, nn.LSTMCell)}


def additive_attention(s_prev, h, u_h, w, v, mask):
    """Bahdanau's attention for one decoder step.

    e_j = vᵀ tanh(W s_{t-1} + U h_j) over the source positions j, α = softmax(e) where `mask` is True
    (α_j = 0 elsewhere), c_t = Σ_j α_j h_j.
    s_prev (B, H_d) the decoder state s_{t-1}; h (B, S, 2H) the annotations; u_h (B, S, A) = U h_j,
    computed once per source; w (A, H_d) = W; v (A,); mask (B, S) bool.
    Returns c_t (B, 2H) and α (B, S)."""
    e = torch.tanh(u_h + (s_prev @ w.T)[:, None, :]) @ v  # (B, S)
    alpha = e.masked_fill(~mask, float("-inf")).softmax(dim=-1)  # (B, S)
    return (alpha[:, :, None] * h).sum(dim=1), alpha


def source_mask(source: torch.Tensor, pad_token: int | None) -> torch.Tensor:
    """(B, S) tokens -> (B, S) bool, True at the source's own positions (before its padding)."""
    return torch.ones_like(source, dtype=torch.bool) if pad_token is None else source != pad_token


class Seq2SeqRNN(SupervisedModule):
    """Source tokens -> bidirectional recurrent encoder -> a recurrent decoder reading a context per step."""

    TASKS = ("sequence",)
    SEQUENCE_INPUT = True
    CHAPTER = 7

    def __init__(
        self,
        *,
        data: DataSpec,
        optimizer: OptimizerConfig,
        scheduler: SchedulerConfig,
        cell: Cell,  # gru or lstm, in the encoder and the decoder
        attention: Attention,  # none: c_t = the encoder's final states; additive: Bahdanau's c_t
        embedding_size: int,  # width of the token embedding E
        hidden_size: int,  # H, the encoder's state width in each direction; the decoder's is 2H
        attention_size: int,  # A, the width of W s and U h in the additive score (unused without attention)
    ):
        super().__init__(data=data, optimizer=optimizer, scheduler=scheduler)
        self.target_length, self.pad_token = data.target_length, data.pad_token
        self.uses_attention = attention == "additive"
        recurrent, decoder_cell = CELLS[cell]
        self.is_lstm = cell == "lstm"
        self.embed = nn.Embedding(data.vocab_size, embedding_size)
        self.encoder = recurrent(embedding_size, hidden_size, batch_first=True, bidirectional=True)
        annotation, state = 2 * hidden_size, 2 * hidden_size
        self.init_state = nn.Linear(annotation, state)  # W_init
        self.decoder = decoder_cell(embedding_size + annotation, state)
        if self.uses_attention:
            self.w = nn.Linear(state, attention_size, bias=False)  # W
            self.u = nn.Linear(annotation, attention_size)  # U (its bias is the score's one bias)
            self.v = nn.Parameter(torch.randn(attention_size) / attention_size**0.5)
        self.head = nn.Linear(state + annotation, data.num_outputs)  # W_o

    @staticmethod
    def check_config(model: dict, data: DataSpec | None = None) -> None:
        if model["cell"] not in CELLS:
            raise ValueError(f"cell: must be one of {', '.join(CELLS)}, got {model['cell']!r}")
        if model["attention"] not in ("none", "additive"):
            raise ValueError(f"attention: must be none or additive, got {model['attention']!r}")
        for key in ("embedding_size", "hidden_size", "attention_size"):
            if model[key] < 1:
                raise ValueError(f"{key}: must be a positive integer, got {model[key]}")

    @staticmethod
    def small_config(model: dict) -> dict:
        return {**model, "embedding_size": 8, "hidden_size": 8, "attention_size": 8}

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, S + L) -> source (B, S), decoder inputs (B, L): the separator, then the target shifted right."""
        return x[:, : -self.target_length], x[:, -self.target_length :]

    def encode(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """source (B, S) -> annotations h (B, S, 2H) (zero on padding), the final states c (B, 2H), the mask (B, S)."""
        mask = source_mask(source, self.pad_token)
        lengths = mask.sum(dim=1).cpu()
        packed = pack_padded_sequence(self.embed(source), lengths, batch_first=True, enforce_sorted=False)
        outputs, final = self.encoder(packed)
        h, _ = pad_packed_sequence(outputs, batch_first=True, total_length=source.shape[1])
        final = final[0] if self.is_lstm else final  # (2, B, H): →h_S, ←h_1
        return h, torch.cat([final[0], final[1]], dim=-1), mask

    def decode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher-forced scores (B, L, K) and the attention weights α (B, L, S) (None without attention)."""
        source, inputs = self.split(x)
        h, c, mask = self.encode(source)
        u_h = self.u(h) if self.uses_attention else None  # (B, S, A): U h_j once per source
        embedded = self.embed(inputs)  # (B, L, E)
        s = torch.tanh(self.init_state(c))
        memory = torch.zeros_like(s) if self.is_lstm else None  # the LSTM's cell state
        scores, alphas = [], []
        for t in range(inputs.shape[1]):
            context = c
            if self.uses_attention:
                context, alpha = additive_attention(s, h, u_h, self.w.weight, self.v, mask)
                alphas.append(alpha)
            step_input = torch.cat([embedded[:, t], context], dim=-1)
            if self.is_lstm:
                s, memory = self.decoder(step_input, (s, memory))
            else:
                s = self.decoder(step_input, s)
            scores.append(self.head(torch.cat([s, context], dim=-1)))
        return torch.stack(scores, dim=1), torch.stack(alphas, dim=1) if alphas else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(x)[0]  # (B, L, K)

    def attention(self, x: torch.Tensor) -> torch.Tensor | None:
        """α (B, L, S): row t is target position t's weights over the source positions."""
        return self.decode(x)[1]


MODEL = Seq2SeqRNN
