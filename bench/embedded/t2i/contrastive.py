"""The CLIP objective (Radford et al. 2021) on (digit image, caption) pairs of the training split, used to train the
scoring CLIP and, separately, the conditioning encoder.

With only ten classes a batch holds many captions of the same digit, so the targets are soft: image ``i``'s target
is uniform over the captions of its digit in the batch (and symmetrically for captions), instead of CLIP's one-hot
diagonal, which would push same-digit pairs apart.  Each step draws images, a training template per image and
token augmentation (:func:`.tokens.insert_random_tokens`) from one seeded generator; images get +-1 pixel shifts.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .captions import TRAIN_TEMPLATES, caption
from .tokens import insert_random_tokens, tokenize


@dataclass(frozen=True)
class ContrastiveConfig:
    steps: int
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 100
    seed: int = 0
    token_noise: float = 0.3


def caption_table() -> torch.Tensor:
    """(len(TRAIN_TEMPLATES), 10, L) token ids of every training caption."""
    return torch.stack([tokenize([caption(d, t) for d in range(10)], warn=False) for t in TRAIN_TEMPLATES])


def draw_captions(table: torch.Tensor, labels: torch.Tensor, gen: torch.Generator, token_noise: float) -> torch.Tensor:
    """Tokens of one random training caption per label, augmented."""
    t = torch.randint(0, table.shape[0], (labels.shape[0],), generator=gen)
    return insert_random_tokens(table[t, labels], gen, prob=token_noise)


def soft_clip_loss(img: torch.Tensor, txt: torch.Tensor, labels: torch.Tensor, logit_scale: torch.Tensor):
    logits = logit_scale.exp().clamp(max=100) * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    same = (labels[:, None] == labels[None, :]).float()
    target = same / same.sum(1, keepdim=True)
    return 0.5 * (torch.sum(-target * logits.log_softmax(1), 1).mean()
                  + torch.sum(-target * logits.T.log_softmax(1), 1).mean())


@torch.enable_grad()
def train_contrastive(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: ContrastiveConfig,
                      prepare: Callable[[torch.Tensor], torch.Tensor], desc: str, progress: bool = True) -> dict:
    """Train ``model`` (``encode_image``, ``encode_text``, ``logit_scale``) in place: AdamW, linear warm-up, cosine
    decay to zero.  ``prepare`` maps augmented [-1, 1] images to the image tower's input.  Returns bookkeeping."""
    import math

    from tqdm.auto import tqdm

    from bench.embedded.classifier import random_shift

    gen = torch.Generator().manual_seed(cfg.seed + 1)
    table = caption_table()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    t0, running, curve = time.perf_counter(), None, []
    for step in tqdm(range(cfg.steps), desc=desc, unit="step", disable=not progress):
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup) * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, images.shape[0], (cfg.batch_size,), generator=gen)
        y = labels[idx]
        x = prepare(random_shift(images[idx], gen))
        tokens = draw_captions(table, y, gen, cfg.token_noise)
        loss = soft_clip_loss(model.encode_image(x), model.encode_text(tokens), y, model.logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if (step + 1) % 50 == 0:
            curve.append((step + 1, round(running, 5)))
    model.eval()
    return dict(steps=cfg.steps, elapsed_s=round(time.perf_counter() - t0, 1), final_loss=running, loss_curve=curve)


@torch.no_grad()
def zero_shot_accuracy(encode_image: Callable, encode_text: Callable, images: torch.Tensor, labels: torch.Tensor,
                       templates) -> float:
    """Share of (image, template) pairs whose own digit's caption scores highest among the ten, over ``templates``."""
    img = F.normalize(encode_image(images), dim=-1)
    hits = 0
    for t in templates:
        txt = F.normalize(encode_text(tokenize([caption(d, t) for d in range(10)], warn=False)), dim=-1)
        hits += ((img @ txt.T).argmax(-1) == labels).sum().item()
    return hits / (len(templates) * len(labels))
