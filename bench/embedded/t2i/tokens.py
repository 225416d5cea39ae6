"""Tokens of prompts: open_clip's bundled CLIP BPE (no network), ``CONTEXT_LENGTH`` tokens per prompt.

A prompt longer than the context is truncated (its end-of-text token kept) and a warning names the dropped part, as
diffusers' ``encode_prompt`` does.  :func:`insert_random_tokens` is the training-time augmentation of both encoders:
random BPE tokens inserted at random positions, so that words never seen in training (the held-out prompts'
distractors) act as noise the encoders learned to ignore.
"""
from __future__ import annotations

import functools
import logging

import torch

CONTEXT_LENGTH = 20
VOCAB_SIZE = 49408  # open_clip's CLIP BPE: 49406 = <start_of_text>, 49407 = <end_of_text>, 0 pads
logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def tokenizer():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=CONTEXT_LENGTH)


def tokenize(prompts, warn: bool = True) -> torch.Tensor:
    """(N, CONTEXT_LENGTH) int64 token ids; long prompts are truncated with a warning."""
    tok = tokenizer()
    prompts = list(prompts)
    if warn:
        for p in prompts:
            ids = tok.encode(p)
            if len(ids) > CONTEXT_LENGTH - 2:
                dropped = tok.decode(ids[CONTEXT_LENGTH - 2:]).strip()
                logger.warning("The following part of your input was truncated because the embedded text encoders "
                               "can only handle sequences up to %d tokens: %s", CONTEXT_LENGTH, dropped)
    return tok(prompts)


def eot_positions(tokens: torch.Tensor) -> torch.Tensor:
    """Index of the end-of-text token of each row (CLIP pools there)."""
    return (tokens == tokenizer().eot_token_id).int().argmax(-1)


def insert_random_tokens(tokens: torch.Tensor, generator: torch.Generator, prob: float = 0.3,
                         max_inserts: int = 2) -> torch.Tensor:
    """Each row, with probability ``prob``, gets 1..``max_inserts`` random BPE ids inserted before its end-of-text
    token at uniform positions after the start token (rows that would overflow the context are left alone)."""
    out = tokens.clone()
    n, ctx = tokens.shape
    pos_range = torch.arange(ctx).expand(n, ctx)
    for _ in range(max_inserts):
        eot = eot_positions(out)
        do = (torch.rand(n, generator=generator) < prob) & (eot < ctx - 1)
        at = 1 + (torch.rand(n, generator=generator) * eot.float()).long()  # 1 .. eot
        new = torch.randint(0, VOCAB_SIZE - 2, (n,), generator=generator)
        src = torch.where(pos_range > at[:, None], pos_range - 1, pos_range)
        shifted = out.gather(1, src)
        shifted[pos_range == at[:, None]] = new
        out = torch.where(do[:, None], shifted, out)
        prob = prob / 2  # a second insertion is rarer
    return out
