"""A model as the harness sees it: U-Net, scheduler config, sample shape, conditioning and decoder."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from flexiffusion.denoisers import ClassDenoiser, Denoiser, TextDenoiser
from flexiffusion.errors import UserError

DENOISERS = {"none": Denoiser, "class": ClassDenoiser, "text": TextDenoiser}


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclass
class ModelBundle:
    """Everything needed to sample a model with any plan.

    ``sample_shape`` is the (C, H, W) of what the sampler denoises (pixels or latents); ``decode`` maps it to
    images in [-1, 1].  ``weights_id`` names the weights (used in cache keys and result rows).
    """

    name: str
    unet: torch.nn.Module
    scheduler_config: dict
    sample_shape: tuple[int, int, int]
    conditioning: str = "none"              # "none" | "class" | "text"
    num_classes: int | None = None
    null_class: int | None = None
    decode: Callable[[torch.Tensor], torch.Tensor] = _identity
    encode_prompts: Callable | None = None  # prompts -> {"prompt_embeds", "negative_prompt_embeds"}
    weights_id: str = "random"
    extras: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.conditioning not in DENOISERS:
            raise UserError(f"unknown conditioning {self.conditioning!r}: one of {', '.join(DENOISERS)}")

    def denoiser(self, engine=None, guidance_scale: float | None = None, cfg: str = "batched") -> Denoiser:
        cls = DENOISERS[self.conditioning]
        if cls is ClassDenoiser:
            return cls(self.unet, engine, guidance_scale, cfg, null_class=self.null_class)
        return cls(self.unet, engine, guidance_scale, cfg)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device
