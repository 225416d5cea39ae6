"""A model as the harness sees it: U-Net, scheduler config, sample shape, conditioning and decoder."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from flexiffusion.denoisers import ClassDenoiser, ClassTokenDenoiser, Denoiser, TextDenoiser
from flexiffusion.errors import UserError

# conditioning (or adapter) -> flexiffusion.denoisers adapter.  "class-token" is an adapter, not a conditioning: its
# bundles are "class" models (the condition is a tensor of labels) whose U-Net reads the class as one context token.
DENOISERS = {"none": Denoiser, "class": ClassDenoiser, "class-token": ClassTokenDenoiser, "text": TextDenoiser}
CONDITIONINGS = ("none", "class", "text")


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclass
class ModelBundle:
    """Everything needed to sample a model with any plan.

    ``sample_shape`` is the (C, H, W) of what the sampler denoises (pixels or latents); ``decode`` maps it to
    images in [-1, 1].  ``weights_id`` names the weights (the ``weights`` column of result rows); what they *are*
    (for cache and result keys) is :func:`weights_identity`.

    ``conditioning`` says what the harness hands the denoiser: nothing, class labels (``num_classes`` of them, drawn
    by ``bench.generate.labels_for_seeds``; ``null_class`` for guidance) or prompt embeddings.  ``adapter`` picks the
    :mod:`flexiffusion.denoisers` adapter when it is not the conditioning's own: ``"class-token"`` for a
    ``UNet2DConditionModel`` that reads the class as one context token (LDM-4-G), through ``class_embedder``
    (labels (B,) -> embeddings (B, D)).
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
    adapter: str | None = None              # a DENOISERS key; None: the conditioning's own
    class_embedder: torch.nn.Module | None = None  # "class-token": labels -> context embeddings

    def __post_init__(self):
        if self.conditioning not in CONDITIONINGS:
            raise UserError(f"unknown conditioning {self.conditioning!r}: one of {', '.join(CONDITIONINGS)}")
        if self.adapter is not None and self.adapter not in DENOISERS:
            raise UserError(f"unknown denoiser adapter {self.adapter!r}: one of {', '.join(DENOISERS)}")
        if self.adapter == "class-token" and (self.conditioning != "class" or self.class_embedder is None):
            raise UserError("the class-token adapter needs conditioning 'class' and the model's class embedder")

    def denoiser(self, engine=None, guidance_scale: float | None = None, cfg: str = "batched") -> Denoiser:
        cls = DENOISERS[self.adapter or self.conditioning]
        if cls is ClassTokenDenoiser:
            return cls(self.unet, engine, guidance_scale, cfg, null_class=self.null_class,
                       class_embedder=self.class_embedder)
        if cls is ClassDenoiser:
            return cls(self.unet, engine, guidance_scale, cfg, null_class=self.null_class)
        return cls(self.unet, engine, guidance_scale, cfg)

    def modules(self) -> list[torch.nn.Module]:
        """Every network that makes the images: the U-Net, ``extras["modules"]`` (text encoder, VAE / VQ decoder)
        and the class embedder; what ``load_model`` moves and :func:`weights_identity` hashes."""
        out = [self.unet, *self.extras.get("modules", [])]
        if self.class_embedder is not None and not any(m is self.class_embedder for m in out):
            out.append(self.class_embedder)
        return out

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device


FULL_HASH_MAX_PARAMS = 50_000_000  # up to this size a module's every value is hashed; above, a sample per tensor


def weights_identity(bundle: ModelBundle) -> str:
    """The identity of a bundle's weights, the one definition every key uses (rFID teacher, evaluation setting,
    row): ``weights_id`` plus a hash of the state of every module that makes the images: the U-Net and the bundle's
    other modules (:meth:`ModelBundle.modules`: text encoder, VAE / VQ decoder, class embedder).  Modules up to
    ``FULL_HASH_MAX_PARAMS`` parameters are hashed value by value; bigger ones by the first and last 4096 values of
    each tensor (hashing every byte of SD's 1 B parameters would cost seconds per run)."""
    from bench.cache import module_fingerprint, stable_hash

    parts = []
    for module in bundle.modules():
        n = sum(p.numel() for p in module.parameters())
        sample = None if n <= FULL_HASH_MAX_PARAMS else 4096
        parts.append(f"{type(module).__name__}:{module_fingerprint(module, sample=sample)}")
    return f"{bundle.weights_id}:{stable_hash(parts)}"
