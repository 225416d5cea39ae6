"""The model vocabulary: every name a command's ``--model`` takes, with its loader, its paper resolution, the cost
preset that prices it and its quality reference (real data, feature extractor, CLIP, prompts).

One list for ``run``, ``experiment``, ``search``, ``sample``, ``latency``, ``macs`` and ``ablation``: the names of
the experiment specs.  The loaders (:data:`bench.models.loading.LOADERS`: ``ddpm``, ``ldm``, ``sd``, ...) are how a
model is read, not names a user gives; ``--model ddpm`` says which models that loader serves.

Quality references follow the paper (Sec. 5, "following DeepCache"): the paper's models use standard FID features
(``inception-v3-compat``, from a local weights file) against their real data, which nobody ships, so it has no
default (``--real DIR`` or a statistics file ``--real FILE.npz``); text models take their prompts from a file
(Parti-Prompts / COCO captions as the user supplies them) and the CLIP score from local CLIP weights (DeepCache
scores SD with open_clip ViT-g-14 ``laion2b_s34b_b88k``).  The shipped models carry everything they need.
"""
from __future__ import annotations

from dataclasses import dataclass

from flexiffusion.errors import UserError


@dataclass(frozen=True)
class ModelEntry:
    """One model of the vocabulary."""

    name: str
    loader: str                          # bench.models.LOADERS kind
    cost_preset: str | None              # bench.presets name: its real architecture with random weights (None: none)
    dataset: str
    resolution: tuple[int, int, int]     # the paper's generated images (C, H, W)
    shipped: bool = False                # weights ship with the suite (nothing to download, no --weights)
    default_weights: str | None = None   # hub id looked up in the Hugging Face cache (never downloaded)
    weights_hint: str = ""               # what --weights must point at
    real: str | None = None              # default real data (a named source); None: the user gives --real
    extractor: str = "inception-v3-compat"
    text: bool = False                   # text-to-image: prompts and the CLIP score
    prompts: str | None = None           # default prompts (a named set); None for a text model: --prompts FILE
    clip_model: str | None = None        # CLIP score model (text models); None: the model's own scoring CLIP
    clip_pretrained: str | None = None   # its weights: an open_clip tag in the HF cache or a file
    stand_in: str = ""                   # tiny stand-ins: the paper model whose code path they exercise

    @property
    def needs_weights(self) -> bool:
        return not self.shipped and self.default_weights is None

    def describe(self) -> str:
        c, h, w = self.resolution
        where = "shipped" if self.shipped else (self.weights_hint or "--weights DIR")
        return f"{self.name:13s} {self.dataset} {h}x{w}, loader {self.loader}; {where}"


_INCEPTION = "inception-v3-compat"
MODELS: dict[str, ModelEntry] = {m.name: m for m in (
    ModelEntry("embedded", "embedded", "embedded", "sklearn digits", (1, 16, 16), shipped=True, real="digits-all",
               extractor="digits-cnn"),
    ModelEntry("embedded-t2i", "embedded-t2i", "embedded-t2i", "sklearn digits + captions", (1, 16, 16),
               shipped=True, real="digits-all", extractor="digits-cnn", text=True, prompts="digit-captions"),
    ModelEntry("ddpm-cifar10", "ddpm", "ddpm-cifar10", "CIFAR-10", (3, 32, 32), default_weights="google/ddpm-cifar10-32",
               weights_hint="a google/ddpm-cifar10-32 folder (config.json, diffusion_pytorch_model.safetensors, "
                            "scheduler_config.json)"),
    ModelEntry("ddpm-bedroom", "ddpm", "ddpm-bedroom", "LSUN Bedroom", (3, 256, 256),
               default_weights="google/ddpm-bedroom-256", weights_hint="a google/ddpm-bedroom-256 folder"),
    ModelEntry("ddpm-church", "ddpm", "ddpm-church", "LSUN Church", (3, 256, 256),
               default_weights="google/ddpm-church-256", weights_hint="a google/ddpm-church-256 folder"),
    ModelEntry("ldm-4-g", "ldm", "ldm-4-g", "ImageNet", (3, 256, 256),
               weights_hint="a diffusers folder of LDM-4-G cin256-v2 (unet/, vqvae/, class_embedder/, scheduler/; "
                            "see bench.models.loading)"),
    ModelEntry("sd-v1.5", "sd", "sd-v1.5", "Parti-Prompts / MS-COCO", (3, 512, 512),
               default_weights="stable-diffusion-v1-5/stable-diffusion-v1-5",
               weights_hint="a stable-diffusion-v1-5 pipeline folder (model_index.json, unet/, vae/, text_encoder/, "
                            "tokenizer/, scheduler/)",
               text=True, clip_model="ViT-g-14", clip_pretrained="laion2b_s34b_b88k"),
    ModelEntry("tiny-ddpm", "tiny-ddpm", None, "random (code path)", (1, 16, 16), shipped=True,
               real="digits-all", extractor="digits-cnn", stand_in="ddpm-cifar10"),
    ModelEntry("tiny-class", "tiny-class", None, "random (code path)", (1, 16, 16), shipped=True,
               real="digits-all", extractor="digits-cnn", stand_in="ldm-4-g"),
    ModelEntry("tiny-sd", "tiny-sd", None, "random (code path)", (3, 32, 32), shipped=True,
               real=None, extractor="digits-cnn", text=True, prompts="digit-captions", stand_in="sd-v1.5"),
)}

PAPER_MODELS = tuple(m for m, e in MODELS.items() if not e.shipped)


def get_model(name: str) -> ModelEntry:
    """The entry of ``name``; an unknown name (a loader kind included) is one line listing the vocabulary."""
    if name in MODELS:
        return MODELS[name]
    served = [m.name for m in MODELS.values() if m.loader == name]
    hint = f" ({name!r} is a loader: name the model, {' or '.join(served)})" if served and name not in MODELS else ""
    raise UserError(f"unknown model {name!r}{hint}: choose one of {', '.join(MODELS)}")


def model_names() -> list[str]:
    return list(MODELS)
