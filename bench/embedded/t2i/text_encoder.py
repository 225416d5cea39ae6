"""The conditioning text encoder: per-token hidden states for the U-Net's cross-attention (``encoder_hidden_states``),
as Stable Diffusion conditions on CLIP ViT-L/14's text tower while its CLIP score uses another CLIP.

A causal 2-layer transformer of width ``WIDTH`` (pre-norm, GELU, 4 heads, final LayerNorm, learned positions) over
the open_clip BPE tokens.  Its token table holds only the tokens of the training captions (plus start, end and pad);
every other token maps to one shared "unseen" row, so unseen words are one learned noise token (the training
augmentation inserts such tokens).  It is trained contrastively with its own small CNN image tower
(:class:`ImageTower`, dropped after training), its own seed and objective weights, separately from the scoring CLIP.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .tokens import CONTEXT_LENGTH, eot_positions

WIDTH = 64
EMBED_DIM = 64


class TextEncoder(nn.Module):
    def __init__(self, vocab: torch.Tensor, width: int = WIDTH, layers: int = 2, heads: int = 4,
                 context_length: int = CONTEXT_LENGTH, embed_dim: int = EMBED_DIM):
        super().__init__()
        self.register_buffer("vocab", torch.as_tensor(vocab, dtype=torch.long).sort().values)  # known BPE ids
        self.token_embedding = nn.Embedding(len(vocab) + 1, width)  # row 0: unseen token
        self.positional_embedding = nn.Parameter(torch.randn(context_length, width) * 0.01)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.ln_final = nn.LayerNorm(width)
        self.projection = nn.Linear(width, embed_dim, bias=False)  # pooled (end-of-text) -> joint space
        self.register_buffer("causal_mask", torch.triu(torch.full((context_length, context_length), float("-inf")),
                                                       1), persistent=False)

    def compact_ids(self, tokens: torch.Tensor) -> torch.Tensor:
        """BPE ids -> rows of the token table (0 for tokens not in the training vocabulary)."""
        pos = torch.searchsorted(self.vocab, tokens).clamp(max=len(self.vocab) - 1)
        return torch.where(self.vocab[pos] == tokens, pos + 1, torch.zeros_like(pos))

    def hidden_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, L, WIDTH): the per-token states the U-Net cross-attends to."""
        x = self.token_embedding(self.compact_ids(tokens)) + self.positional_embedding[: tokens.shape[1]]
        L = tokens.shape[1]
        x = self.transformer(x, mask=self.causal_mask[:L, :L], is_causal=True)
        return self.ln_final(x)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pooled, projected text embedding (not normalised) for the contrastive objective."""
        h = self.hidden_states(tokens)
        return self.projection(h[torch.arange(h.shape[0]), eot_positions(tokens)])


class ImageTower(nn.Module):
    """The conditioning CLIP's image side: a small CNN on 16x16x1 in [-1, 1] (only used to train the encoder)."""

    def __init__(self, embed_dim: int = EMBED_DIM):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.GELU(), nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GELU(), nn.Flatten(),  # 16 -> 8 -> 4
            nn.Linear(64 * 16, 128), nn.GELU(), nn.Linear(128, embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConditioningCLIP(nn.Module):
    """Text encoder + image tower + temperature: what the contrastive stage trains."""

    def __init__(self, vocab: torch.Tensor):
        super().__init__()
        self.text = TextEncoder(vocab)
        self.image = ImageTower()
        self.logit_scale = nn.Parameter(torch.tensor(2.659))  # log(1 / 0.07), as CLIP

    def encode_image(self, x):
        return self.image(x)

    def encode_text(self, tokens):
        return self.text(tokens)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def normalize(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)
