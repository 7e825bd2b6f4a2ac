"""Transformers (ch. 7): an encoder over sequences of feature vectors, a causal decoder over tokens.

Attention. With queries Q, keys K and values V (one row per position, width d_k),
    Attention(Q, K, V) = softmax(Q Kᵀ / √d_k + M) V,
where the mask M holds 0 where a position may look and −∞ where it may not (a causal mask hides
every later position; a padding mask hides given keys). Multi-head self-attention projects the
sequence X (T × d) to Q = X W_Q, K = X W_K, V = X W_V, splits them into h heads of width
d_k = d / h, attends in each head and maps the concatenated heads back with W_O.

Positions. Attention alone ignores order, so the inputs get the sinusoidal embedding
    P[t, 2i] = sin(t / 10000^{2i/d}),   P[t, 2i+1] = cos(t / 10000^{2i/d}),
or a learned one: P a parameter (T × d), one row per position (`positions: learned`). Or none, and
instead ALiBi's linear biases on the causal decoder's attention scores (Press et al. 2022; `positions:
alibi`): head h of H adds −m_h (t − s) to the score of query t for key s ≤ t, m_h = 2^{−8h/H}, so
each head starts out looking at the recent characters, over a range of its own.

Initialization. PyTorch's default, or GPT-2's (`init: scaled`; Radford et al. 2019): every weight
matrix and embedding drawn from N(0, 0.02²), biases 0, and the two matrices that write into the
residual stream in each block (W_O and the feedforward's W₂) from N(0, (0.02 / √(2N))²) for N
blocks, so the 2N sublayer outputs added to a position's vector sum to about the variance of one
and the stack starts near the identity.

A block adds attention and a position-wise feedforward layer FF(x) = W₂ GELU(W₁ x) to its input,
with layer normalization after each sum (post-norm, the original transformer) or before each
sublayer (pre-norm: x + Attn(LN(x)), then x + FF(LN(x)), and a final LN).

Training uses PyTorch's fused `scaled_dot_product_attention`; `explicit_attention` is the formula
above written out, and the tests check they agree, masks included.

The family (`Transformer`) is an encoder for sequences of feature vectors and an autoregressive
decoder for token sequences, with generation by greedy decoding or temperature sampling.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from modules._feedforward import feedforward
from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.core.supervised import SupervisedModule, sequence_examples

Norm = Literal["pre", "post"]
Positions = Literal["sinusoidal", "learned", "alibi"]
INIT_STD = 0.02  # GPT-2's standard deviation of the weights (init: scaled)


def sinusoidal_positions(steps: int, width: int) -> torch.Tensor:
    """P (steps, width): P[t, 2i] = sin(t / 10000^{2i/width}), P[t, 2i+1] = cos(t / 10000^{2i/width})."""
    t = torch.arange(steps, dtype=torch.float32)[:, None]
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(0, width, 2, dtype=torch.float32) / width)
    positions = torch.zeros(steps, width)
    positions[:, 0::2] = torch.sin(t * frequencies)
    positions[:, 1::2] = torch.cos(t * frequencies[: width // 2])
    return positions


def alibi_bias(heads: int, steps: int) -> torch.Tensor:
    """B (heads, steps, steps): B[h, t, s] = −m_h (t − s) for s ≤ t and −∞ for s > t, m_h = 2^{−8(h+1)/heads}
    (h counted from 0): ALiBi's biases, causal mask included, added to the attention scores."""
    slopes = 2.0 ** (-8.0 * torch.arange(1, heads + 1, dtype=torch.float32) / heads)
    distance = (torch.arange(steps)[:, None] - torch.arange(steps)[None, :]).float()  # t − s
    return (-slopes[:, None, None] * distance).masked_fill(distance < 0, float("-inf"))


def residual_init_std(layers: int, std: float = INIT_STD) -> float:
    """GPT-2's standard deviation of the matrices that write into the residual stream: std / √(2 N), N blocks."""
    return std / math.sqrt(2 * layers)


def explicit_attention(q, k, v, mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
    """softmax(Q Kᵀ / √d_k + M) V for q (…, T, d_k), k, v (…, S, d_k); `mask` (T, S) or broadcastable, True
    where a query may attend to a key; `causal` hides every key after the query's position."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    allowed = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device)
    if causal:
        allowed = allowed.tril()
    if mask is not None:
        allowed = allowed & mask
    scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.softmax(dim=-1) @ v


class MultiHeadSelfAttention(nn.Module):
    """Q, K, V = X W_Q, X W_K, X W_V in h heads, attention in each (fused kernel), heads joined by W_O. The
    mask is boolean (True where a query may look) or float, added to the scores (ALiBi's biases)."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, d) -> q, k, v each (B, h, T, d / h)."""
        batch, steps, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=-1)
        return tuple(part.view(batch, steps, self.heads, width // self.heads).transpose(1, 2) for part in (q, k, v))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        q, k, v = self.project(x)
        if causal and mask is not None:  # the fused kernel takes one or the other: fold causality into the mask
            mask = mask & torch.ones(x.shape[1], x.shape[1], dtype=torch.bool, device=x.device).tril()
            causal = False
        heads = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(heads.transpose(1, 2).flatten(2))  # (B, T, d)


class Block(nn.Module):
    """Self-attention then a feedforward layer, each added to its input; layer norm after (post) or before (pre)."""

    def __init__(self, width: int, heads: int, ff_size: int, dropout: float, norm: Norm):
        super().__init__()
        self.norm_first = norm == "pre"
        self.attention = MultiHeadSelfAttention(width, heads, dropout)
        self.feedforward = feedforward([width, ff_size, width], "gelu")
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        if self.norm_first:
            x = x + self.drop(self.attention(self.norm1(x), mask, causal))
            return x + self.drop(self.feedforward(self.norm2(x)))
        x = self.norm1(x + self.drop(self.attention(x, mask, causal)))
        return self.norm2(x + self.drop(self.feedforward(x)))


class Stack(nn.Module):
    """Positions (sinusoidal, or learned) added to the embedded inputs, dropout, the blocks, and a final
    layer norm under pre-norm; under ALiBi no positions are added and the causal blocks get alibi_bias."""

    def __init__(self, steps: int, width: int, heads: int, layers: int, ff_size: int, dropout: float, norm: Norm,
                 positions: Positions = "sinusoidal"):
        super().__init__()
        self.alibi = positions == "alibi"
        if positions == "learned":
            self.positions = nn.Parameter(torch.randn(steps, width) * INIT_STD)
        elif self.alibi:
            self.register_buffer("bias", alibi_bias(heads, steps), persistent=False)
        else:
            self.register_buffer("positions", sinusoidal_positions(steps, width), persistent=False)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(width, heads, ff_size, dropout, norm) for _ in range(layers))
        self.final_norm = nn.LayerNorm(width) if norm == "pre" else nn.Identity()

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        if self.alibi:  # the decoder's (check_config): the biases hold the causal mask
            mask, causal = self.bias[:, : h.shape[1], : h.shape[1]], False
            h = self.drop(h)
        else:
            h = self.drop(h + self.positions[: h.shape[1]])
        for block in self.blocks:
            h = block(h, mask, causal)
        return self.final_norm(h)


def gpt2_init(model: nn.Module, layers: int) -> None:
    """GPT-2's initialization in place: weights and embeddings N(0, 0.02²), biases 0, each block's W_O and
    W₂ N(0, residual_init_std(layers)²); layer norms and learned positions kept."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=INIT_STD)
        if isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)
    for block in model.modules():
        if isinstance(block, Block):
            for linear in (block.attention.out, block.feedforward[-1]):
                nn.init.normal_(linear.weight, std=residual_init_std(layers))


class Transformer(SupervisedModule):
    """Two uses of the same blocks, chosen by the data:

    - sequences of feature vectors x (B, T, D) (classification, regression): an encoder. Each step is
      mapped to width d, a learned [CLS] vector goes in front (or the steps are averaged), then the
      blocks, and the [CLS] state (or the mean) gives the scores (B, K).
    - token sequences (the `sequence` task): an autoregressive decoder. Tokens (B, T) are embedded,
      the blocks run under a causal mask, and the last L positions give next-token scores (B, L, K),
      L the target length. p(y_1, …, y_L | prompt) = Π_t p(y_t | prompt, y_<t): the input is the
      prompt then the true target shifted right (teacher forcing), and training minimises the
      cross-entropy of every target token, whose exponential is the perplexity. `generate` extends a
      prompt one token at a time: greedy decoding takes the most probable token; sampling at
      temperature τ draws from softmax(scores / τ) (τ → 0 approaches greedy, τ = 1 is the model's
      distribution, τ > 1 flattens it).
    """

    TASKS = ("regression", "binary", "multiclass", "sequence")
    SEQUENCE_INPUT = True
    CHAPTER = 7

    def __init__(
        self,
        *,
        data: DataSpec,
        optimizer: OptimizerConfig,
        scheduler: SchedulerConfig,
        width: int,  # d, the model width (d / heads per head)
        heads: int,  # h, attention heads
        layers: int,  # blocks
        ff_size: int,  # hidden width of each block's feedforward layer
        dropout: float,  # on attention weights, sublayer outputs and embeddings, in [0, 1)
        norm: Norm,  # pre- or post-norm blocks
        pooling: Literal["cls", "mean"],  # encoder: a learned [CLS] vector's final state, or the mean over the steps
        positions: Positions,  # sinusoidal, or a learned embedding of each position
        init: Literal["default", "scaled"],  # PyTorch's initialization, or GPT-2's (module docstring)
        window_offsets: Literal["fixed", "random"],  # decoder over a text: training windows as prepared, or moved
        # by random offsets each epoch (pipeline.datamodules.OffsetWindows)
    ):
        super().__init__(data=data, optimizer=optimizer, scheduler=scheduler)
        self.causal = data.task == "sequence"
        steps = data.input_shape[0]
        if self.causal:
            self.target_length = data.target_length
            self.embed = nn.Embedding(data.vocab_size, width)
            self.cls = None
        else:
            self.embed = nn.Linear(data.input_shape[1], width)
            self.cls = nn.Parameter(torch.zeros(1, 1, width)) if pooling == "cls" else None
        self.stack = Stack(steps + 1, width, heads, layers, ff_size, dropout, norm, positions)  # + 1: [CLS], or generation's last step
        self.head = nn.Linear(width, data.num_outputs)
        if init == "scaled":
            gpt2_init(self, layers)
        self.random_window_offsets = window_offsets == "random"

    @staticmethod
    def check_config(model: dict, data: DataSpec | None = None) -> None:
        if not 0 <= model["dropout"] < 1:
            raise ValueError(f"dropout: must be in [0, 1), got {model['dropout']}")
        for key in ("width", "heads", "layers", "ff_size"):
            if model[key] < 1:
                raise ValueError(f"{key}: must be a positive integer, got {model[key]}")
        if model["width"] % model["heads"] or model["width"] % 2:
            raise ValueError(f"width: must be even and a multiple of heads ({model['heads']}), got {model['width']}")
        if model["positions"] == "alibi" and data is not None and data.task != "sequence":
            raise ValueError(f"positions: alibi biases a causal decoder's attention (task sequence), not an encoder "
                             f"of {data.task} samples; allowed here: sinusoidal, learned")
        if model["window_offsets"] == "random" and data is not None and data.task != "sequence":
            raise ValueError(f"window_offsets: random moves the windows of a text (task sequence), not {data.task} "
                             "samples; allowed here: fixed")

    @staticmethod
    def small_config(model: dict) -> dict:
        return {**model, "width": 16, "heads": 2, "layers": 1, "ff_size": 16}

    def scores(self, tokens: torch.Tensor) -> torch.Tensor:
        """Decoder: next-token scores at every position, (B, T) -> (B, T, K); position t sees tokens ≤ t only."""
        return self.head(self.stack(self.embed(tokens), causal=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.causal:
            return self.scores(x)[:, -self.target_length :]  # (B, L, K)
        h = self.embed(x)  # (B, T, d)
        if self.cls is not None:
            h = torch.cat([self.cls.expand(len(h), -1, -1), h], dim=1)
        h = self.stack(h)
        return self.head(h[:, 0] if self.cls is not None else h.mean(dim=1))  # (B, K)

    @torch.no_grad()
    def generate(
        self, prompt: torch.Tensor, steps: int, temperature: float = 0.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Decoder: extend prompt (B, P) by `steps` tokens (B, steps), greedily when temperature is 0, else
        sampled from softmax(scores / temperature)."""
        tokens = prompt
        for _ in range(steps):
            last = self.scores(tokens)[:, -1]  # (B, K)
            if temperature == 0:
                token = last.argmax(dim=-1, keepdim=True)
            else:
                token = torch.multinomial((last / temperature).softmax(dim=-1), 1, generator=generator)
            tokens = torch.cat([tokens, token], dim=1)
        return tokens[:, prompt.shape[1] :]

    def examples(self, x: torch.Tensor, y: torch.Tensor, meta: dict, count: int = 8) -> str | None:
        """Decoder: the first test prompts with their targets, greedy outputs and samples (sequence_examples)."""
        return sequence_examples(self.generate, x, y, self.target_length, meta, count) if self.causal else None


MODEL = Transformer
