"""Transformer encoder-decoder (ch. 7): self-attention over the source, cross-attention from the target.

The encoder's blocks give every source position a state z_j (self-attention, then a feedforward layer,
each added to its input; modules/transformer.py has the attention formula and the sinusoidal positions).
Each decoder block then adds, between its causal self-attention and its feedforward layer,
cross-attention: queries from the target positions, keys and values from the encoder's states,
    CrossAttention(Y, Z) = softmax((Y W_Q)(Z W_K)ᵀ / √d_k + M) (Z W_V),
in h heads joined by W_O, where M is −∞ at the source's padding. Pre-norm blocks (x + Sublayer(LN(x))).

Positions. Sources have different lengths n, so a position counted from the start alone does not say
where the mirror image n − 1 − t of target position t lies. Each source token therefore carries its
position from both ends, [P[j]; P[n − 1 − j]], and each target token [P[t]; P[t]] (P the sinusoids of
width d / 2): one query-key match then finds source position t or n − 1 − t.

Training uses PyTorch's fused layers (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, built on
scaled_dot_product_attention); `explicit_decoder_layer` is one decoder block written out with
`explicit_attention` on the same weights, and the tests check they agree, masks included.

Inputs follow the sequence task's layout (pipeline/datasets/_seq2seq.py): the source, then the
separator and the target shifted right; the scores (B, L, K) are for the last L positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modules.seq2seq_rnn import source_mask
from modules.transformer import explicit_attention, sinusoidal_positions
from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.core.supervised import SupervisedModule


def explicit_multi_head(attention: nn.MultiheadAttention, query, key, mask=None, causal=False) -> torch.Tensor:
    """nn.MultiheadAttention's output written out: Q = query W_Q, K = key W_K, V = key W_V in h heads,
    `explicit_attention` in each, heads joined by W_O. query (B, T, d), key (B, S, d), mask (B, S) True
    at keys a query may see."""
    heads, width = attention.num_heads, attention.embed_dim
    w_q, w_k, w_v = attention.in_proj_weight.chunk(3)
    b_q, b_k, b_v = attention.in_proj_bias.chunk(3)
    split = lambda z: z.view(*z.shape[:2], heads, width // heads).transpose(1, 2)  # noqa: E731  (B, h, ·, d_k)
    q, k, v = split(query @ w_q.T + b_q), split(key @ w_k.T + b_k), split(key @ w_v.T + b_v)
    heads_out = explicit_attention(q, k, v, None if mask is None else mask[:, None, None, :], causal)
    return attention.out_proj(heads_out.transpose(1, 2).flatten(2))  # (B, T, d)


def explicit_decoder_layer(layer: nn.TransformerDecoderLayer, y, z, memory_mask=None) -> torch.Tensor:
    """A pre-norm decoder block by its equations: y + SelfAttn(LN y) (causal), + CrossAttn(LN y, z), + FF(LN y)."""
    y = y + explicit_multi_head(layer.self_attn, layer.norm1(y), layer.norm1(y), causal=True)
    y = y + explicit_multi_head(layer.multihead_attn, layer.norm2(y), z, memory_mask)
    return y + layer.linear2(F.gelu(layer.linear1(layer.norm3(y))))


class Seq2SeqTransformer(SupervisedModule):
    """Source tokens -> encoder blocks -> decoder blocks (causal self-attention, cross-attention) -> scores."""

    TASKS = ("sequence",)
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
        encoder_layers: int,  # encoder blocks
        decoder_layers: int,  # decoder blocks
        ff_size: int,  # hidden width of each block's feedforward layer
    ):
        super().__init__(data=data, optimizer=optimizer, scheduler=scheduler)
        self.target_length, self.pad_token = data.target_length, data.pad_token
        source_length = data.input_shape[0] - data.target_length
        self.embed = nn.Embedding(data.vocab_size, width)
        steps = max(source_length, self.target_length)
        self.register_buffer("positions", sinusoidal_positions(steps, width // 2), persistent=False)
        block = dict(d_model=width, nhead=heads, dim_feedforward=ff_size, dropout=0.0, activation="gelu",
                     batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(**block), encoder_layers,
                                             norm=nn.LayerNorm(width), enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(**block), decoder_layers, norm=nn.LayerNorm(width))
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(self.target_length), persistent=False)
        self.head = nn.Linear(width, data.num_outputs)

    @staticmethod
    def check_config(model: dict, data: DataSpec | None = None) -> None:
        for key in ("width", "heads", "encoder_layers", "decoder_layers", "ff_size"):
            if model[key] < 1:
                raise ValueError(f"{key}: must be a positive integer, got {model[key]}")
        if model["width"] % model["heads"] or model["width"] % 4:
            raise ValueError(f"width: must be a multiple of 4 and of heads ({model['heads']}), got {model['width']}")

    @staticmethod
    def small_config(model: dict) -> dict:
        return {**model, "width": 16, "heads": 2, "encoder_layers": 1, "decoder_layers": 1, "ff_size": 16}

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, S + L) -> source (B, S), decoder inputs (B, L): the separator, then the target shifted right."""
        return x[:, : -self.target_length], x[:, -self.target_length :]

    def embed_target(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, L, d): E y_t + [P[t]; P[t]]."""
        p = self.positions[: tokens.shape[1]]
        return self.embed(tokens) + torch.cat([p, p], dim=-1)

    def embed_source(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, S) -> (B, S, d): E x_j + [P[j]; P[n - 1 - j]], n the source's length: its position
        counted from both ends, so target position t can find source position t or n - 1 - t by one match."""
        j = torch.arange(tokens.shape[1], device=tokens.device)
        from_end = (mask.sum(dim=1, keepdim=True) - 1 - j).clamp(min=0)  # (B, S); padding clamped to 0, masked anyway
        p = torch.cat([self.positions[j].expand(len(tokens), -1, -1), self.positions[from_end]], dim=-1)
        return self.embed(tokens) + p

    def encode(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """source (B, S) -> states z (B, S, d) and the mask (B, S), True at the source's own positions."""
        mask = source_mask(source, self.pad_token)
        return self.encoder(self.embed_source(source, mask), src_key_padding_mask=~mask), mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        source, inputs = self.split(x)
        z, mask = self.encode(source)
        y = self.decoder(self.embed_target(inputs), z, tgt_mask=self.causal, tgt_is_causal=True,
                         memory_key_padding_mask=~mask)
        return self.head(y)  # (B, L, K)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The last decoder block's cross-attention weights, averaged over its heads, (B, L, S)."""
        source, inputs = self.split(x)
        z, mask = self.encode(source)
        y = self.embed_target(inputs)
        *earlier, last = self.decoder.layers
        for layer in earlier:
            y = layer(y, z, tgt_mask=self.causal, tgt_is_causal=True, memory_key_padding_mask=~mask)
        y = y + last.self_attn(last.norm1(y), last.norm1(y), last.norm1(y), attn_mask=self.causal, need_weights=False)[0]
        query = last.norm2(y)
        return last.multihead_attn(query, z, z, key_padding_mask=~mask, need_weights=True)[1]


MODEL = Seq2SeqTransformer
