"""Loaders for real checkpoints (local diffusers folders or the Hugging Face cache, never the network) and for
the tiny random stand-ins; a registry maps a model kind to its loader.

``load_model("embedded")`` is the shipped default.  ``load_model("ddpm", "/path/or/hub-id")``,
``load_model("ldm", ...)`` and ``load_model("sd", ...)`` load real weights; when they are absent the error names
the files and where they go.  :func:`inspect_folder` is the one place that checks a folder's files and layout, from
its JSON configs only (nothing loaded): the loaders call it first, and so do the commands before loading anything.

Folder layouts (``*.safetensors`` or ``*.bin`` weights beside each ``config.json``):

* ``ddpm`` -- a bare ``UNet2DModel`` folder as google/ddpm-cifar10-32 and google/ddpm-{bedroom,church}-256
  (``config.json``, ``diffusion_pytorch_model.safetensors``, ``scheduler_config.json``), or a DDPMPipeline folder
  (``unet/``, ``scheduler/``).
* ``ldm`` -- latent diffusion (Rombach et al. 2022), either
  - an LDMPipeline folder as CompVis/ldm-celebahq-256: ``unet/`` (``UNet2DModel``, unconditional or with
    ``num_class_embeds``), ``vqvae/`` (``VQModel``), ``scheduler/``; or
  - LDM-4-G (cin256-v2, the paper's ImageNet model), which has no diffusers release; the layout defined here:
    ``unet/`` = ``UNet2DConditionModel`` with ``cross_attention_dim`` 512 (the architecture of
    ``bench.presets.LDM_CIN256_UNET``), ``vqvae/`` = ``VQModel`` (VQ-f4), ``scheduler/``, and ``class_embedder/``
    = LDM's ``ClassEmbedder`` table (:class:`ClassEmbedder`): ``config.json`` ``{"num_classes": 1000,
    "embedding_dim": 512, "null_class": 1000}`` and ``diffusion_pytorch_model.safetensors`` with the one key
    ``embedding.weight`` of shape (1001, 512): the 1000 ImageNet classes and the unconditional class 1000 that
    cin256-v2 uses for classifier-free guidance (LDM's ``cond_stage_model.embedding.weight``).  The U-Net reads
    the class as one context token, ``encoder_hidden_states = table[label][:, None, :]``
    (:class:`flexiffusion.denoisers.ClassTokenDenoiser`).
  The U-Net class is read from ``unet/config.json``'s ``_class_name``.
* ``sd`` -- a Stable Diffusion v1.x ``StableDiffusionPipeline.save_pretrained`` folder: ``model_index.json``,
  ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/`` (no safety checker needed).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
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
TEXT_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


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
    for module in bundle.modules():
        if next(module.parameters()).dtype != dtype:  # diffusers warns on a no-op dtype cast
            module.to(dtype=dtype)
        module.to(device=device).eval()
    return bundle


# ---- locating and inspecting a folder (configs only) -------------------------------------------------------------

def _locate(target: str) -> Path | None:
    """The folder itself, or the HF-cache snapshot of a hub id (no download); None when neither exists."""
    folder = Path(target).expanduser()
    if folder.is_dir():
        return folder
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(target, local_files_only=True))
    except Exception:
        return None


_WHERE = {
    "ddpm": "on a machine with internet run `huggingface-cli download {id} --local-dir DIR` and pass DIR, or "
            "pre-fill the Hugging Face cache",
    "ldm": "LDM-4-G (cin256-v2) has no diffusers release: convert its CompVis checkpoint into unet/, vqvae/, "
           "class_embedder/, scheduler/ (see bench.models.loading), or download an LDMPipeline folder such as {id} "
           "on a machine with internet (`huggingface-cli download {id} --local-dir DIR`) and pass DIR",
    "sd": "on a machine with internet run `huggingface-cli download {id} --local-dir DIR` and pass DIR, or "
          "pre-fill the Hugging Face cache",
}


def _missing_error(kind: str, target: str, missing: list[str]) -> UserError:
    files = ", ".join(n.replace("|", " or ") for n in missing)
    where = _WHERE.get(kind, _WHERE["ddpm"]).format(id=DEFAULT_IDS.get(kind, "MODEL-ID"))
    return UserError(f"weights for model {kind!r} not found at {target!r}: missing {files} "
                     f"(no download happens here; {where})")


def _absent(folder: Path | None, needed: list[str]) -> list[str]:
    if folder is None:
        return list(needed)
    return [alt for alt in needed if not any((folder / n).exists() for n in alt.split("|"))]


def resolve(kind: str, path: str | None, needed: list[str]) -> Path:
    """A local folder for ``path``: the folder itself, or the HF-cache snapshot of a hub id (no download); every
    entry of ``needed`` ("a|b": either file) must exist in it, else one :class:`UserError` line names them."""
    target = path or DEFAULT_IDS[kind]
    folder = _locate(target)
    missing = _absent(folder, needed)
    if missing:
        raise _missing_error(kind, target, missing)
    return folder


def _weights(sub: str, files=WEIGHT_FILES) -> str:
    return "|".join(f"{sub}/{w}" if sub else w for w in files)


# What each loader needs (a|b: either), and how its layout is described in an error.
NEEDED = {
    "ddpm": ["config.json|unet/config.json", _weights("") + "|" + _weights("unet"),
             "scheduler_config.json|scheduler/scheduler_config.json"],
    "ldm": ["unet/config.json", _weights("unet"), "vqvae/config.json", _weights("vqvae"),
            "scheduler/scheduler_config.json"],
    "sd": ["model_index.json", "unet/config.json", _weights("unet"), "vae/config.json", _weights("vae"),
           "text_encoder/config.json", _weights("text_encoder", TEXT_WEIGHT_FILES), "tokenizer/tokenizer_config.json",
           "scheduler/scheduler_config.json"],
}
EXPECTED = {
    "ddpm": "a DDPM folder (a UNet2DModel's config.json, diffusion_pytorch_model.safetensors and "
            "scheduler_config.json at the root, as google/ddpm-cifar10-32; or unet/ and scheduler/)",
    "ldm": "an LDM folder (unet/, vqvae/, scheduler/; LDM-4-G also class_embedder/)",
    "sd": "a Stable Diffusion pipeline folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)",
}
_SERVES = {"ddpm": "ddpm-cifar10, ddpm-bedroom, ddpm-church", "ldm": "ldm-4-g", "sd": "sd-v1.5"}


@dataclass(frozen=True)
class FolderInfo:
    """What a checkpoint folder holds, read from its JSON configs only (:func:`inspect_folder`)."""

    kind: str                              # the loader: "ddpm" | "ldm" | "sd"
    folder: Path                           # the local folder (a hub id resolved to its HF-cache snapshot)
    layout: str                            # "model" (bare U-Net at the root) | "pipeline" (unet/ subfolder)
    unet_class: str                        # "UNet2DModel" | "UNet2DConditionModel"
    sample_shape: tuple[int, int, int]     # (C, H, W) of what is denoised (pixels or latents)
    image_shape: tuple[int, int, int]      # (C, H, W) of the decoded images
    conditioning: str = "none"             # "none" | "class" | "text" (ModelBundle.conditioning)
    num_classes: int | None = None
    null_class: int | None = None
    adapter: str | None = None             # ModelBundle.adapter ("class-token" for LDM-4-G)
    unet_subfolder: str | None = None      # "unet", or None at the root
    scheduler_config: Path | None = None   # the scheduler's JSON

    def summary(self) -> str:
        c, h, w = self.image_shape
        cond = self.conditioning + (f" ({self.num_classes} classes)" if self.num_classes else "")
        return (f"{self.kind} {self.layout} folder {self.folder}: {self.unet_class}, denoises "
                f"{'x'.join(map(str, self.sample_shape))}, makes {c}x{h}x{w} images, conditioning {cond}")


def _config(folder: Path, name: str) -> dict:
    path = folder / name
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {type(e).__name__}: {e} (a diffusers config.json is expected)") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a diffusers config (a JSON object is expected)")
    return data


def _class_name(config: dict, default: str) -> str:
    return str(config.get("_class_name") or default)


def _what_is(folder: Path) -> tuple[str | None, str]:
    """``(loader kind or None, description)`` of what ``folder`` holds, from file names and ``_class_name``s."""
    if (folder / "model_index.json").is_file():
        cls = _class_name(_config(folder, "model_index.json"), "DiffusionPipeline")
        if "StableDiffusion" in cls:
            return "sd", f"a {cls} folder"
        if cls == "LDMPipeline":
            return "ldm", "an LDMPipeline folder"
        if cls in ("DDPMPipeline", "DDIMPipeline"):
            return "ddpm", f"a {cls} folder"
        return None, f"a {cls} folder (model_index.json)"
    if (folder / "vae").is_dir() or (folder / "text_encoder").is_dir():
        return "sd", "a Stable Diffusion pipeline folder (vae/, text_encoder/)"
    if (folder / "vqvae").is_dir() or (folder / "class_embedder").is_dir():
        return "ldm", "an LDM folder (vqvae/)"
    if (folder / "unet" / "config.json").is_file():
        cls = _class_name(_config(folder, "unet/config.json"), "UNet2DModel")
        return ("ddpm" if cls == "UNet2DModel" else None), f"a pipeline folder with a {cls} in unet/"
    if (folder / "config.json").is_file():
        cls = _class_name(_config(folder, "config.json"), "UNet2DModel")
        if cls == "UNet2DModel":
            return "ddpm", "a bare UNet2DModel folder (config.json at the root, DDPM layout)"
        return None, f"a bare {cls} folder (config.json at the root: one component, not a whole model)"
    return None, "no model files"


def _layout_error(kind: str, folder: Path, what: str, fix: str) -> UserError:
    return UserError(f"{folder} holds {what}, not {EXPECTED[kind]}: {fix}")


def _check_layout(kind: str, folder: Path) -> None:
    other, what = _what_is(folder)
    if other is not None and other != kind:
        raise _layout_error(kind, folder, what, f"load it with the {other!r} loader (models {_SERVES[other]})")
    if other is None and what != "no model files":
        root = "the pipeline's root folder" if kind == "sd" else "the model's root folder"
        raise _layout_error(kind, folder, what, f"pass {root}")


def _hw(sample_size, where: str) -> tuple[int, int]:
    if isinstance(sample_size, int):
        return sample_size, sample_size
    if isinstance(sample_size, (list, tuple)) and len(sample_size) == 2 and all(isinstance(v, int)
                                                                                 for v in sample_size):
        return int(sample_size[0]), int(sample_size[1])
    raise UserError(f"{where}: sample_size {sample_size!r} is not an int or [height, width]; set it in the config")


def _decoder_factor(config: dict) -> int:
    """Upsampling of a diffusers VAE / VQ decoder: 2 per level after the first."""
    return 2 ** (len(config.get("block_out_channels") or (64,)) - 1)


def _expect_class(kind: str, folder: Path, name: str, config: dict, allowed: tuple[str, ...], default: str) -> str:
    cls = _class_name(config, default)
    if cls not in allowed:
        raise _layout_error(kind, folder, f"a {cls} in {name}", f"{name} must hold a {' or '.join(allowed)} "
                                                                  f"(check that folder's config.json _class_name)")
    return cls


def inspect_folder(kind: str, path: str | None = None) -> FolderInfo:
    """Check a ``kind`` ("ddpm" | "ldm" | "sd") checkpoint folder (a local folder, or a hub id already in the HF
    cache; ``None``: the kind's default id) from its JSON configs and file names only, no weights read.  A missing
    file, or a folder in another layout, is one :class:`UserError` line naming the folder, the expected layout and
    the fix."""
    if kind not in _INSPECT:
        raise UserError(f"no folder layout for model kind {kind!r}: checkpoint folders are {', '.join(_INSPECT)}")
    target = path or DEFAULT_IDS[kind]
    folder = _locate(target)
    if folder is None:
        raise _missing_error(kind, target, NEEDED[kind])
    _check_layout(kind, folder)
    missing = _absent(folder, NEEDED[kind])
    if missing:
        raise _missing_error(kind, target, missing)
    return _INSPECT[kind](folder)


def _inspect_ddpm(folder: Path) -> FolderInfo:
    sub = "unet" if (folder / "unet" / "config.json").is_file() else None
    name = f"{sub}/config.json" if sub else "config.json"
    cfg = _config(folder, name)
    cls = _expect_class("ddpm", folder, name, cfg, ("UNet2DModel",), "UNet2DModel")
    sched = folder / ("scheduler/scheduler_config.json" if sub else "scheduler_config.json")
    if not sched.is_file():  # the other layout's place
        sched = folder / ("scheduler_config.json" if sub else "scheduler/scheduler_config.json")
    h, w = _hw(cfg.get("sample_size"), str(folder / name))
    shape = (int(cfg.get("in_channels", 3)), h, w)
    n = cfg.get("num_class_embeds")
    return FolderInfo("ddpm", folder, "pipeline" if sub else "model", cls, shape, shape,
                      "class" if n else "none", n or None, None, None, sub, sched)


def _inspect_ldm(folder: Path) -> FolderInfo:
    cfg = _config(folder, "unet/config.json")
    cls = _expect_class("ldm", folder, "unet/", cfg, ("UNet2DModel", "UNet2DConditionModel"), "UNet2DModel")
    vq = _config(folder, "vqvae/config.json")
    _expect_class("ldm", folder, "vqvae/", vq, ("VQModel",), "VQModel")
    h, w = _hw(cfg.get("sample_size"), str(folder / "unet/config.json"))
    c = int(cfg.get("in_channels", 3))
    latent = int(vq.get("vq_embed_dim") or vq.get("latent_channels", 3))
    if latent != c:
        raise UserError(f"{folder}: unet/ denoises {c} channels but vqvae/ decodes {latent}: the two must come "
                        "from one model")
    f = _decoder_factor(vq)
    image = (int(vq.get("out_channels", 3)), h * f, w * f)
    if cls == "UNet2DModel":
        n = cfg.get("num_class_embeds")
        return FolderInfo("ldm", folder, "pipeline", cls, (c, h, w), image, "class" if n else "none", n or None,
                          None, None, "unet", folder / "scheduler/scheduler_config.json")
    missing = _absent(folder, ["class_embedder/config.json", _weights("class_embedder")])
    if missing:
        raise _layout_error("ldm", folder, "a UNet2DConditionModel in unet/ without its class table",
                            f"add class_embedder/ ({', '.join(m.replace('|', ' or ') for m in missing)}; "
                            "see bench.models.loading)")
    emb = ClassEmbedder.check_config(_config(folder, "class_embedder/config.json"), folder / "class_embedder")
    if int(cfg.get("cross_attention_dim") or 0) != emb["embedding_dim"]:
        raise UserError(f"{folder}: unet/ cross_attention_dim {cfg.get('cross_attention_dim')} differs from "
                        f"class_embedder/ embedding_dim {emb['embedding_dim']}: the two must come from one model")
    return FolderInfo("ldm", folder, "pipeline", cls, (c, h, w), image, "class", emb["num_classes"],
                      emb["null_class"], "class-token", "unet", folder / "scheduler/scheduler_config.json")


def _inspect_sd(folder: Path) -> FolderInfo:
    index = _config(folder, "model_index.json")
    pipe = _class_name(index, "StableDiffusionPipeline")
    if pipe != "StableDiffusionPipeline":
        raise _layout_error("sd", folder, f"a {pipe} folder", "the sd loader reads StableDiffusionPipeline folders "
                                                              "(Stable Diffusion v1.x)")
    cfg = _config(folder, "unet/config.json")
    cls = _expect_class("sd", folder, "unet/", cfg, ("UNet2DConditionModel",), "UNet2DConditionModel")
    vae = _config(folder, "vae/config.json")
    _expect_class("sd", folder, "vae/", vae, ("AutoencoderKL",), "AutoencoderKL")
    h, w = _hw(cfg.get("sample_size"), str(folder / "unet/config.json"))
    f = _decoder_factor(vae)
    return FolderInfo("sd", folder, "pipeline", cls, (int(cfg.get("in_channels", 4)), h, w),
                      (int(vae.get("out_channels", 3)), h * f, w * f), "text", None, None, None, "unet",
                      folder / "scheduler/scheduler_config.json")


_INSPECT = {"ddpm": _inspect_ddpm, "ldm": _inspect_ldm, "sd": _inspect_sd}


# ---- LDM's class embedder ------------------------------------------------------------------------------------------

class ClassEmbedder(torch.nn.Module):
    """LDM's ``ClassEmbedder`` (latent-diffusion ``ldm/modules/encoders/modules.py``): one learned row per class,
    ``embedding.weight`` of shape (rows, embedding_dim); rows = ``num_classes`` plus one when ``null_class`` (the
    unconditional label of classifier-free guidance, = ``num_classes``) is set.  Stored in ``class_embedder/`` as
    ``config.json`` and ``diffusion_pytorch_model.safetensors``."""

    CONFIG = "config.json"
    WEIGHTS = "diffusion_pytorch_model.safetensors"

    def __init__(self, num_classes: int, embedding_dim: int, null_class: int | None = None):
        super().__init__()
        self.num_classes, self.embedding_dim, self.null_class = num_classes, embedding_dim, null_class
        self.embedding = torch.nn.Embedding(num_classes + (null_class is not None), embedding_dim)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.embedding(labels)

    def config(self) -> dict:
        return {"_class_name": "ClassEmbedder", "num_classes": self.num_classes, "embedding_dim": self.embedding_dim,
                "null_class": self.null_class}

    @staticmethod
    def check_config(config: dict, folder: Path) -> dict:
        """The validated ``num_classes``, ``embedding_dim``, ``null_class`` of a ``class_embedder/config.json``."""
        n, d, null = config.get("num_classes"), config.get("embedding_dim"), config.get("null_class")
        if not (isinstance(n, int) and n > 0 and isinstance(d, int) and d > 0):
            raise UserError(f"{folder / 'config.json'}: needs positive integers num_classes and embedding_dim "
                            f"(got {n!r}, {d!r}; LDM-4-G: 1000 and 512)")
        if null is not None and null != n:
            raise UserError(f"{folder / 'config.json'}: null_class must be num_classes ({n}), the extra last row of "
                            f"the table, or null (got {null!r})")
        return {"num_classes": n, "embedding_dim": d, "null_class": null}

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({"embedding.weight": self.embedding.weight.detach().contiguous().cpu()}, str(folder / self.WEIGHTS))
        (folder / self.CONFIG).write_text(json.dumps(self.config(), indent=2) + "\n")
        return folder

    @classmethod
    def from_folder(cls, folder: str | Path) -> "ClassEmbedder":
        from safetensors.torch import load_file

        folder = Path(folder)
        cfg = cls.check_config(_config(folder, cls.CONFIG), folder)
        path = folder / cls.WEIGHTS
        if path.is_file():
            tensors = load_file(str(path))
        else:
            tensors = torch.load(folder / "diffusion_pytorch_model.bin", map_location="cpu", weights_only=True)
        module = cls(cfg["num_classes"], cfg["embedding_dim"], cfg["null_class"])
        weight = tensors.get("embedding.weight")
        want = tuple(module.embedding.weight.shape)
        if weight is None or tuple(weight.shape) != want or set(tensors) != {"embedding.weight"}:
            got = {k: tuple(v.shape) for k, v in tensors.items()}
            raise UserError(f"{folder}: expected exactly one tensor embedding.weight of shape {want} (from "
                            f"config.json), found {got}")
        with torch.no_grad():
            module.embedding.weight.copy_(weight)
        return module.eval()


# ---- loaders ---------------------------------------------------------------------------------------------------------

def _unet(info: FolderInfo):
    import diffusers

    cls = getattr(diffusers, info.unet_class)
    kwargs = {"subfolder": info.unet_subfolder} if info.unet_subfolder else {}
    return cls.from_pretrained(info.folder, local_files_only=True, **kwargs)


def _scheduler_config(info: FolderInfo) -> dict:
    if info.scheduler_config is None or not info.scheduler_config.is_file():
        raise UserError(f"missing scheduler config in {info.folder}: the model folder must contain it")
    return json.loads(info.scheduler_config.read_text())


@register_loader("ddpm")
def load_ddpm(path: str | None = None) -> ModelBundle:
    """DDPM (Ho et al. 2020) pixel-space UNet2DModel, e.g. google/ddpm-cifar10-32 or ddpm-{bedroom,church}-256."""
    info = inspect_folder("ddpm", path)
    return ModelBundle(f"ddpm:{info.folder.name}", _unet(info), _scheduler_config(info), info.sample_shape,
                       conditioning=info.conditioning, num_classes=info.num_classes, null_class=info.null_class,
                       weights_id=str(info.folder))


# LDM-4-G as DeepCache samples it (its LDM research code): 250 DDIM steps, eta 0, classifier-free guidance 1.5
LDM_CLASS_TOKEN_SAMPLER = dict(scheduler="ddim", steps=250, guidance_scale=1.5, cfg="batched")


@register_loader("ldm")
def load_ldm(path: str | None = None) -> ModelBundle:
    """Latent diffusion (Rombach et al. 2022): an LDMPipeline folder (unet/ UNet2DModel, vqvae/, scheduler/) or
    LDM-4-G (unet/ UNet2DConditionModel, vqvae/, scheduler/, class_embedder/); see the module docstring."""
    from diffusers import VQModel

    info = inspect_folder("ldm", path)
    unet = _unet(info)
    vqvae = VQModel.from_pretrained(info.folder, subfolder="vqvae", local_files_only=True).eval()

    def decode(latents):
        return vqvae.decode(latents).sample

    extras: dict = {"modules": [vqvae]}
    embedder = None
    if info.adapter == "class-token":
        embedder = ClassEmbedder.from_folder(info.folder / "class_embedder")
        extras["modules"].append(embedder)
        if embedder.null_class is not None:
            extras["default_sampler"] = dict(LDM_CLASS_TOKEN_SAMPLER)
    return ModelBundle(f"ldm:{info.folder.name}", unet, _scheduler_config(info), info.sample_shape, decode=decode,
                       conditioning=info.conditioning, num_classes=info.num_classes, null_class=info.null_class,
                       adapter=info.adapter, class_embedder=embedder, weights_id=str(info.folder), extras=extras)


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

    info = inspect_folder("sd", path)
    pipe = StableDiffusionPipeline.from_pretrained(info.folder, local_files_only=True, safety_checker=None,
                                                   requires_safety_checker=False)
    return sd_bundle(pipe, f"sd:{info.folder.name}", str(info.folder))


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
