"""The bundle of the embedded text-to-image model (:mod:`bench.embedded.t2i`): text conditioning through the
conditioning encoder's per-token states, the empty prompt as the unconditional input of classifier-free guidance,
default sampler 50-step PLMS with guidance (``bundle.extras["default_sampler"]``), pixel space (identity decoder)."""
from __future__ import annotations

from typing import Sequence

import torch

from flexiffusion.errors import UserError

from .bundle import ModelBundle


def _prompt_list(prompts, what: str) -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise UserError(f"empty {what} list: give at least one prompt")
    bad = [p for p in prompts if not isinstance(p, str)]
    if bad:
        raise UserError(f"{what}s must be strings, got {type(bad[0]).__name__}")
    return prompts


def make_encode_prompts(text_encoder):
    """``encode_prompts(prompts, negative=None) -> {"prompt_embeds", "negative_prompt_embeds"}`` (negative default:
    the empty prompt); long prompts are truncated to the context length with a warning, as diffusers does."""
    from bench.embedded.t2i.tokens import tokenize

    @torch.no_grad()
    def encode_prompts(prompts: Sequence[str], negative: Sequence[str] | str | None = None) -> dict:
        prompts = _prompt_list(prompts, "prompt")
        negative = [""] * len(prompts) if negative is None else _prompt_list(negative, "negative prompt")
        if len(negative) == 1 and len(prompts) > 1:
            negative = negative * len(prompts)
        if len(negative) != len(prompts):
            raise UserError(f"{len(negative)} negative prompts for {len(prompts)} prompts: give one or one each")
        device = text_encoder.vocab.device
        pos = text_encoder.hidden_states(tokenize(prompts).to(device))
        neg = text_encoder.hidden_states(tokenize(negative).to(device))
        return {"prompt_embeds": pos, "negative_prompt_embeds": neg}

    return encode_prompts


def t2i_bundle(unet, scheduler_config: dict, text_encoder, weights_id: str = "random",
               extras: dict | None = None) -> ModelBundle:
    from bench.embedded.t2i.unet import DEFAULT_SAMPLER

    c, s = unet.config.in_channels, unet.config.sample_size
    extras = dict(extras or {}, default_sampler=dict(DEFAULT_SAMPLER), text_encoder=text_encoder,
                  modules=[text_encoder])
    return ModelBundle("embedded-t2i", unet, dict(scheduler_config), (c, s, s), conditioning="text",
                       encode_prompts=make_encode_prompts(text_encoder), weights_id=weights_id, extras=extras)


def load_embedded_t2i(path: str | None = None) -> ModelBundle:
    """The shipped model, sha256-verified (``path``: another weights folder, e.g. ``runs/embedded-t2i/weights``)."""
    from bench.embedded.t2i.loader import load_t2i

    model = load_t2i(path, verify=True)
    digest = model.manifest["files"]["unet/diffusion_pytorch_model.safetensors"]
    from bench.embedded.t2i.clip_model import register

    return t2i_bundle(model.unet, model.scheduler_config, model.text_encoder, f"embedded-t2i:{digest[:16]}",
                      extras={"manifest": model.manifest, "clip_weights": model.clip_weights,
                              "scoring_clip": {"model": register(), "pretrained": str(model.clip_weights)}})


def random_t2i_bundle(seed: int = 0) -> ModelBundle:
    """The same architecture with random weights (tests, code paths; nothing loaded)."""
    from bench.embedded.t2i.contrastive import caption_table
    from bench.embedded.t2i.text_encoder import TextEncoder
    from bench.embedded.t2i.unet import SCHEDULER_CONFIG, build_unet

    torch.manual_seed(seed)
    unet = build_unet().eval()
    encoder = TextEncoder(torch.unique(caption_table())).eval().requires_grad_(False)
    return t2i_bundle(unet, SCHEDULER_CONFIG, encoder)
