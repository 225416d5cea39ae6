"""One denoiser signature in front of every model: ``denoiser(x, t, cond) -> model output`` (epsilon).

Adapters (as in k-diffusion's ``external.py``) differ in one method, :meth:`Denoiser.unet_kwargs`, which turns
the per-batch condition into the U-Net's keyword arguments.  Classifier-free guidance (Ho & Salimans 2022) is
done here, either *batched* (unconditional and conditional inputs concatenated into one U-Net call, as diffusers
pipelines do) or *split* (two calls, each in its own cache context of the step engine).
"""
from __future__ import annotations

import contextlib

import torch

from .engine import StepEngine
from .errors import UserError

CFG_MODES = ("batched", "split")


class Denoiser:
    """Unconditional U-Net: ``unet(x, t).sample``."""

    def __init__(self, unet, engine: StepEngine | None = None, guidance_scale: float | None = None,
                 cfg: str = "batched"):
        if cfg not in CFG_MODES:
            raise UserError(f"unknown guidance mode {cfg!r}: choose one of {', '.join(CFG_MODES)}")
        self.unet, self.engine, self.guidance_scale, self.cfg = unet, engine, guidance_scale, cfg

    # the one method an adapter overrides
    def unet_kwargs(self, cond, x: torch.Tensor, unconditional: bool) -> dict:
        return {}

    @property
    def guided(self) -> bool:
        return self.guidance_scale is not None

    def _context(self, name: str):
        return self.engine.context(name) if self.engine is not None else contextlib.nullcontext()

    def _unet(self, x, t, kwargs):
        return self.unet(x, t, **kwargs, return_dict=False)[0]

    def __call__(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        if not self.guided:
            return self._unet(x, t, self.unet_kwargs(cond, x, unconditional=False))
        if self.cfg == "batched":
            kw_u, kw_c = self.unet_kwargs(cond, x, True), self.unet_kwargs(cond, x, False)
            kwargs = {k: torch.cat([kw_u[k], kw_c[k]]) for k in kw_c}
            eps_u, eps_c = self._unet(torch.cat([x, x]), t, kwargs).chunk(2)
        else:
            with self._context("uncond"):
                eps_u = self._unet(x, t, self.unet_kwargs(cond, x, True))
            with self._context("cond"):
                eps_c = self._unet(x, t, self.unet_kwargs(cond, x, False))
        return eps_u + self.guidance_scale * (eps_c - eps_u)


class ClassDenoiser(Denoiser):
    """Class-conditional ``UNet2DModel`` (``num_class_embeds``); ``cond`` is a tensor of labels, the
    unconditional pass uses ``null_class`` (the label dropped during training)."""

    def __init__(self, unet, engine=None, guidance_scale=None, cfg="batched", null_class: int | None = None):
        super().__init__(unet, engine, guidance_scale, cfg)
        self.null_class = null_class
        if guidance_scale is not None and null_class is None:
            raise UserError("classifier-free guidance needs the model's null class (the label used for dropout)")

    def unet_kwargs(self, cond, x, unconditional):
        batch = x.shape[0]
        if unconditional or cond is None:
            if self.null_class is None:
                raise UserError("unconditional sampling of a class-conditional model needs its null class")
            return {"class_labels": torch.full((batch,), self.null_class, dtype=torch.long, device=x.device)}
        labels = torch.as_tensor(cond, dtype=torch.long).to(x.device)
        if labels.shape != (batch,):
            raise UserError(f"got {tuple(labels.shape)} class labels for a batch of {batch}: give one label per sample")
        return {"class_labels": labels}


class ClassTokenDenoiser(ClassDenoiser):
    """Class-conditional ``UNet2DConditionModel`` that reads the class as ONE cross-attention token, as LDM-4-G
    (cin256-v2) does: LDM's ``ClassEmbedder`` looks the label up in an embedding table and the U-Net attends to
    ``encoder_hidden_states = table[label][:, None, :]``.  ``cond`` is a tensor of labels as for
    :class:`ClassDenoiser`; ``class_embedder`` maps labels (B,) to embeddings (B, D); the unconditional pass uses
    ``null_class`` (cin256-v2: 1000, the extra row of its 1001-row table)."""

    def __init__(self, unet, engine=None, guidance_scale=None, cfg="batched", null_class: int | None = None,
                 class_embedder=None):
        super().__init__(unet, engine, guidance_scale, cfg, null_class=null_class)
        if class_embedder is None:
            raise UserError("a class-token model needs its class embedder (the label -> context token table)")
        self.class_embedder = class_embedder

    def unet_kwargs(self, cond, x, unconditional):
        labels = super().unet_kwargs(cond, x, unconditional)["class_labels"]
        return {"encoder_hidden_states": self.class_embedder(labels)[:, None, :].to(x.dtype)}


class TextDenoiser(Denoiser):
    """Text-conditional ``UNet2DConditionModel``; ``cond`` = ``{"prompt_embeds": ..., "negative_prompt_embeds": ...}``
    as returned by a diffusers pipeline's ``encode_prompt``."""

    def unet_kwargs(self, cond, x, unconditional):
        batch = x.shape[0]
        key = "negative_prompt_embeds" if unconditional else "prompt_embeds"
        if not isinstance(cond, dict) or cond.get(key) is None:
            raise UserError(f"text-conditional sampling needs cond[{key!r}] (from the pipeline's encode_prompt)")
        emb = cond[key]
        if emb.shape[0] != batch:
            raise UserError(f"got {emb.shape[0]} prompt embeddings for a batch of {batch}")
        return {"encoder_hidden_states": emb}
