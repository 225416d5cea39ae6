"""Loaders for real checkpoints (local diffusers folders or the Hugging Face cache, never the network) and for
the tiny random stand-ins; a registry maps a model kind to its loader.

``load_model("embedded")`` is the shipped default.  ``load_model("ddpm", "/path/or/hub-id")``,
``load_model("ldm", ...)`` and ``load_model("sd", ...)`` load real weights; when they are absent the error names
the files and where they go.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from flexiffusion.errors import UserError

from . import tiny
from .bundle import ModelBundle

LOADERS: dict[str, Callable[..., ModelBundle]] = {}

DEFAULT_IDS = {
    "ddpm": "google/ddpm-cifar10-32",
    "ldm": "CompVis/ldm-celebahq-256",
    "sd": "stable-diffusion-v1-5/stable-diffusion-v1-5",
}

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def register_loader(name: str):
    def deco(fn):
        if name in LOADERS:
            raise ValueError(f"loader {name!r} registered twice")
        LOADERS[name] = fn
        return fn
    return deco


def load_model(kind: str, path: str | None = None, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32) -> ModelBundle:
    """Load a model of ``kind`` (see ``LOADERS``) from ``path`` (a local folder or a hub id in the HF cache)."""
    if kind not in LOADERS:
        raise UserError(f"unknown model {kind!r}: choose one of {', '.join(sorted(LOADERS))}")
    bundle = LOADERS[kind](path)
    for module in [bundle.unet, *bundle.extras.get("modules", [])]:
        if next(module.parameters()).dtype != dtype:  # diffusers warns on a no-op dtype cast
            module.to(dtype=dtype)
        module.to(device=device).eval()
    return bundle


def resolve(kind: str, path: str | None, needed: list[str]) -> Path:
    """A local folder for ``path``: the folder itself, or the HF-cache snapshot of a hub id (no download)."""
    target = path or DEFAULT_IDS[kind]
    folder = Path(target).expanduser()
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(target, local_files_only=True))
        except Exception:
            folder = None
    missing = needed if folder is None else [
        alt for alt in needed if not any((folder / n).exists() for n in alt.split("|"))]
    if missing:
        files = ", ".join(n.replace("|", " or ") for n in missing)
        raise UserError(
            f"weights for model {kind!r} not found at {target!r}: missing {files} "
            f"(no download happens here; on a machine with internet run `huggingface-cli download "
            f"{DEFAULT_IDS[kind]} --local-dir DIR` and pass DIR, or pre-fill the Hugging Face cache)")
    return folder


def _weights(sub: str) -> str:
    return "|".join(f"{sub}/{w}" if sub else w for w in WEIGHT_FILES)


def _unet_and_scheduler(folder: Path):
    from diffusers import UNet2DModel

    if (folder / "unet").is_dir():  # pipeline layout (DDPMPipeline / LDMPipeline)
        unet = UNet2DModel.from_pretrained(folder, subfolder="unet", local_files_only=True)
        config = _read_json(folder / "scheduler" / "scheduler_config.json")
    else:  # bare model layout (google/ddpm-cifar10-32 root)
        unet = UNet2DModel.from_pretrained(folder, local_files_only=True)
        config = _read_json(folder / "scheduler_config.json")
    return unet, config


def _read_json(path: Path) -> dict:
    import json

    if not path.exists():
        raise UserError(f"missing scheduler config {path}: the model folder must contain it")
    return json.loads(path.read_text())


def _class_info(unet) -> dict:
    n = unet.config.get("num_class_embeds")
    return {"conditioning": "class", "num_classes": n, "null_class": None} if n else {}


@register_loader("ddpm")
def load_ddpm(path: str | None = None) -> ModelBundle:
    """DDPM (Ho et al. 2020) pixel-space UNet2DModel, e.g. google/ddpm-cifar10-32 or ddpm-{bedroom,church}-256."""
    folder = resolve("ddpm", path, ["config.json|unet/config.json", _weights("") + "|" + _weights("unet")])
    unet, config = _unet_and_scheduler(folder)
    c, s = unet.config.in_channels, unet.config.sample_size
    return ModelBundle(f"ddpm:{folder.name}", unet, config, (c, s, s), weights_id=str(folder), **_class_info(unet))


@register_loader("ldm")
def load_ldm(path: str | None = None) -> ModelBundle:
    """Latent diffusion (Rombach et al. 2022) in LDMPipeline layout: unet/ (UNet2DModel, optionally with
    num_class_embeds), vqvae/ (VQModel), scheduler/."""
    from diffusers import VQModel

    folder = resolve("ldm", path, ["unet/config.json", _weights("unet"), "vqvae/config.json", _weights("vqvae"),
                                   "scheduler/scheduler_config.json"])
    unet, config = _unet_and_scheduler(folder)
    vqvae = VQModel.from_pretrained(folder, subfolder="vqvae", local_files_only=True).eval()
    c, s = unet.config.in_channels, unet.config.sample_size

    def decode(latents):
        return vqvae.decode(latents).sample

    return ModelBundle(f"ldm:{folder.name}", unet, config, (c, s, s), decode=decode, weights_id=str(folder),
                       extras={"modules": [vqvae]}, **_class_info(unet))


def sd_bundle(pipe, name: str, weights_id: str) -> ModelBundle:
    """Bundle of a StableDiffusionPipeline: latents 4 x H/8 x W/8, text conditioning, VAE decoder."""
    vae, unet = pipe.vae, pipe.unet
    s = unet.config.sample_size

    def decode(latents):
        return vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]

    def encode_prompts(prompts, negative=None):
        pos, neg = pipe.encode_prompt(list(prompts), unet.device, 1, True, negative_prompt=negative)
        return {"prompt_embeds": pos, "negative_prompt_embeds": neg}

    return ModelBundle(name, unet, dict(pipe.scheduler.config), (unet.config.in_channels, s, s),
                       conditioning="text", decode=decode, encode_prompts=encode_prompts, weights_id=weights_id,
                       extras={"pipeline": pipe, "modules": [vae, pipe.text_encoder],
                               # the paper's SD setting (Sec. 5): 50-step PLMS, guidance 7.5
                               "default_sampler": dict(scheduler="plms", steps=50, guidance_scale=7.5,
                                                       cfg="batched")})


@register_loader("sd")
def load_sd(path: str | None = None) -> ModelBundle:
    """Stable Diffusion v1.x pipeline folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)."""
    from diffusers import StableDiffusionPipeline

    folder = resolve("sd", path, ["model_index.json", _weights("unet"), _weights("vae"),
                                  "text_encoder/config.json", "tokenizer/tokenizer_config.json"])
    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, safety_checker=None,
                                                   requires_safety_checker=False)
    return sd_bundle(pipe, f"sd:{folder.name}", str(folder))


@register_loader("embedded")
def load_embedded_bundle(path: str | None = None) -> ModelBundle:
    """The shipped 16x16 digits model (class-conditional with a null class), sha256-verified — see bench/embedded."""
    from bench.embedded.loader import load_embedded, unet_weights_digest

    emb = load_embedded(verify=True)
    unet = emb.unet
    n = unet.config.num_class_embeds
    digest = unet_weights_digest(emb.manifest)  # sha256 of the safetensors, verified against the file on load
    return ModelBundle("embedded", unet, dict(emb.scheduler_config),
                       (unet.config.in_channels,) + (unet.config.sample_size,) * 2, conditioning="class",
                       num_classes=n - 1, null_class=n - 1, weights_id=f"embedded:{digest[:16]}",
                       extras={"classifier": emb.classifier, "manifest": emb.manifest})


@register_loader("embedded-t2i")
def load_embedded_t2i(path: str | None = None) -> ModelBundle:
    """The shipped 16x16 text-to-image digits model, sha256-verified — see bench/embedded/t2i."""
    from .embedded_t2i import load_embedded_t2i as load

    return load(path)


@register_loader("tiny-ddpm")
def load_tiny_ddpm(path: str | None = None) -> ModelBundle:
    """Random 16x16 UNet2DModel (code-path stand-in for DDPM)."""
    return ModelBundle("tiny-ddpm", tiny.tiny_unet2d(), dict(tiny.DDPM_SCHEDULER), (1, 16, 16))


@register_loader("tiny-class")
def load_tiny_class(path: str | None = None) -> ModelBundle:
    """Random class-conditional 16x16 UNet2DModel with 10 classes + a null class (stand-in for LDM-4-G)."""
    return ModelBundle("tiny-class", tiny.tiny_unet2d(num_class_embeds=11), dict(tiny.DDPM_SCHEDULER), (1, 16, 16),
                       conditioning="class", num_classes=10, null_class=10)


@register_loader("tiny-sd")
def load_tiny_sd(path: str | None = None) -> ModelBundle:
    """Random tiny Stable Diffusion pipeline (stand-in for SD v1.5)."""
    return sd_bundle(tiny.tiny_sd_pipeline(), "tiny-sd", "random")
