"""Smoke fixtures: random-weight checkpoint folders in the real diffusers layouts at the paper's real architectures,
so that every command can run the paper's models end to end where nobody has their weights.

Each model folder is what its loader (:mod:`bench.models.loading`) reads with ``local_files_only``:

* ``ddpm-cifar10`` -- bare ``UNet2DModel`` layout of google/ddpm-cifar10-32 (``config.json``,
  ``diffusion_pytorch_model.safetensors``, ``scheduler_config.json``), ``bench.presets.DDPM_CIFAR10_UNET``;
* ``ddpm-bedroom``, ``ddpm-church`` -- the same layout, ``bench.presets.DDPM_LSUN256_UNET``;
* ``ldm-4-g`` -- the LDM-4-G layout of :mod:`bench.models.loading` (``unet/`` ``UNet2DConditionModel``
  ``LDM_CIN256_UNET``, ``vqvae/`` ``LDM_VQF4``, ``scheduler/`` DDIM, ``class_embedder/`` 1001 x 512);
* ``sd-v1.5`` -- ``StableDiffusionPipeline.save_pretrained`` (``model_index.json``, ``unet/`` ``SD15_UNET``,
  ``vae/`` ``SD15_VAE``, ``text_encoder/`` ``SD15_TEXT_ENCODER``, ``tokenizer/`` CLIP BPE, ``scheduler/`` PNDM with
  ``skip_prk_steps``; no safety checker).

Channels, blocks and heads are the real ones; only ``sample_size`` is reduced by default (what is denoised: CIFAR
8 instead of 32, LSUN 32 instead of 256 -- five downsamplers without padding need 32 --, LDM and SD latents 8
instead of 64) so that CPU runs are short.  Weights are deterministic pseudo-random values
(:func:`bench.presets.fast_random_init`); every folder carries ``flexbench_fixture.json`` saying so: numbers
measured on a fixture are meaningless, the path is what is proven.

Besides the models: :func:`random_inception` (torch-fidelity's ``inception-v3-compat`` weights file),
:func:`random_open_clip` (an open_clip checkpoint file), :func:`real_images` (PNG folders) and :func:`prompts_file`;
:func:`build_all` writes them all under one root and skips what is already there.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from bench import presets
from flexiffusion.errors import UserError

FIXTURE_FILE = "flexbench_fixture.json"
FORMAT = 1
NOTE = "random weights: numbers are meaningless; the path is what is proven"


@dataclass(frozen=True)
class Fixture:
    """One random-weight model folder: its loader, architecture and sizes."""

    name: str
    loader: str                      # bench.models.loading kind
    architecture: str                # the bench.presets configs it is built from
    real_sample_size: int            # what the real model denoises (pixels or latent side)
    sample_size: int                 # the reduced default
    decoder_factor: int              # image side / sample side (1: pixel space)
    min_sample_size: int             # smallest side every down/upsampling level accepts
    write: Callable[[Path, int, int], None]

    def record(self, sample_size: int, seed: int) -> dict:
        """The content of the folder's ``flexbench_fixture.json``."""
        return {"fixture": self.name, "loader": self.loader, "weights": "random",
                "init": f"bench.presets.fast_random_init, seed {seed}", "seed": seed,
                "architecture": self.architecture, "real_sample_size": self.real_sample_size,
                "sample_size": sample_size, "real_image_size": self.real_sample_size * self.decoder_factor,
                "image_size": sample_size * self.decoder_factor, "note": NOTE, "format": FORMAT}


# ---- weights ---------------------------------------------------------------------------------------------------------

def _random(make: Callable[[], torch.nn.Module], seed: int) -> torch.nn.Module:
    """``make()`` in memory, filled with :func:`bench.presets.fast_random_init` values (small parts: the text
    encoder, the class table; torch's own init is skipped where the model allows it)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - older transformers
        from transformers.modeling_utils import no_init_weights
    with no_init_weights():
        model = make()
    presets.fast_random_init(model, seed=seed)
    return model.eval().requires_grad_(False)


def _meta(cls: str, config: dict) -> torch.nn.Module:
    import diffusers

    with torch.device("meta"):
        return getattr(diffusers, cls)(**config)


def random_values(model: torch.nn.Module, seed: int = 0, pool_size: int = 1 << 20):
    """:func:`bench.presets.random_values`: the values :func:`bench.presets.fast_random_init` gives, streamed."""
    from bench.presets import random_values as values

    return values(model, seed, pool_size)


def save_random(model: torch.nn.Module, folder: str | Path, seed: int = 0) -> Path:
    """``model.save_pretrained(folder)`` of a diffusers model built on the meta device, with
    :func:`random_values`: ``config.json`` and ``diffusion_pytorch_model.safetensors``, written tensor by tensor
    (SD's 3.4 GB U-Net is never held in memory, and nothing pays torch's init or first-touch page faults)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_config(folder)
    params = list(model.named_parameters())
    if any(True for _ in model.buffers()) or any(p.dtype != torch.float32 for _, p in params):
        raise ValueError(f"{type(model).__name__}: save_random writes float32 parameters only, no buffers")
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, p in params:  # data in module order: the order random_values generates
        header[name] = {"dtype": "F32", "shape": list(p.shape), "data_offsets": [offset, offset + 4 * p.numel()]}
        offset += 4 * p.numel()
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # as safetensors pads its header
    path = folder / "diffusion_pytorch_model.safetensors"
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for _, values in random_values(model, seed):
            f.write(memoryview(values.contiguous().view(-1).numpy()).cast("B"))
    os.replace(tmp, path)
    return path


def _write_record(folder: Path, record: dict) -> None:
    tmp = folder / f".{FIXTURE_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, folder / FIXTURE_FILE)


# ---- model folders -----------------------------------------------------------------------------------------------

DDPM_SCHEDULER = dict(presets.DDPM_SCHEDULER, variance_type="fixed_large")  # google/ddpm-*'s scheduler_config.json


def _write_ddpm(config: dict):
    def write(folder: Path, sample_size: int, seed: int) -> None:
        from diffusers import DDPMScheduler

        save_random(_meta("UNet2DModel", dict(config, sample_size=sample_size)), folder, seed)
        DDPMScheduler.from_config(DDPM_SCHEDULER).save_pretrained(folder)
    return write


def _write_ldm(folder: Path, sample_size: int, seed: int) -> None:
    from diffusers import DDIMScheduler

    from .loading import ClassEmbedder

    save_random(_meta("UNet2DConditionModel", dict(presets.LDM_CIN256_UNET, sample_size=sample_size)),
                folder / "unet", seed)
    save_random(_meta("VQModel", dict(presets.LDM_VQF4, sample_size=sample_size * 4)), folder / "vqvae", seed + 1)
    DDIMScheduler.from_config(presets.LDM_SCHEDULER).save_pretrained(folder / "scheduler")
    dim = presets.LDM_CIN256_UNET["cross_attention_dim"]
    _random(lambda: ClassEmbedder(1000, dim, null_class=1000), seed + 2).save(folder / "class_embedder")


def _write_sd(folder: Path, sample_size: int, seed: int) -> None:
    from diffusers import PNDMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from .tiny import clip_tokenizer_files

    unet = _meta("UNet2DConditionModel", dict(presets.SD15_UNET, sample_size=sample_size))
    vae = _meta("AutoencoderKL", dict(presets.SD15_VAE, sample_size=sample_size * 8))
    text = _random(lambda: CLIPTextModel(CLIPTextConfig(**presets.SD15_TEXT_ENCODER)), seed + 2)
    bpe = clip_tokenizer_files()
    tokenizer = CLIPTokenizer(f"{bpe}/vocab.json", f"{bpe}/merges.txt", model_max_length=77)
    scheduler = PNDMScheduler.from_config(dict(presets.SD15_SCHEDULER, skip_prk_steps=True))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    # what pipe.save_pretrained writes, with the meta-device U-Net and VAE streamed by save_random
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_config(folder)  # model_index.json
    save_random(unet, folder / "unet", seed)
    save_random(vae, folder / "vae", seed + 1)
    text.save_pretrained(folder / "text_encoder")
    tokenizer.save_pretrained(folder / "tokenizer")
    scheduler.save_pretrained(folder / "scheduler")


FIXTURES: dict[str, Fixture] = {f.name: f for f in (
    Fixture("ddpm-cifar10", "ddpm", "bench.presets.DDPM_CIFAR10_UNET", 32, 8, 1, 8,
            _write_ddpm(presets.DDPM_CIFAR10_UNET)),
    Fixture("ddpm-bedroom", "ddpm", "bench.presets.DDPM_LSUN256_UNET", 256, 32, 1, 32,
            _write_ddpm(presets.DDPM_LSUN256_UNET)),
    Fixture("ddpm-church", "ddpm", "bench.presets.DDPM_LSUN256_UNET", 256, 32, 1, 32,
            _write_ddpm(presets.DDPM_LSUN256_UNET)),
    Fixture("ldm-4-g", "ldm", "bench.presets.LDM_CIN256_UNET + LDM_VQF4 + class table 1001x512", 64, 8, 4, 8,
            _write_ldm),
    Fixture("sd-v1.5", "sd", "bench.presets.SD15_UNET + SD15_VAE + SD15_TEXT_ENCODER", 64, 8, 8, 8, _write_sd),
)}


def _fixture(name: str) -> Fixture:
    if name not in FIXTURES:
        raise UserError(f"unknown fixture {name!r}: choose one of {', '.join(FIXTURES)}")
    return FIXTURES[name]


def write_fixture(name: str, folder: str | Path, sample_size: int | None = None, seed: int = 0) -> Path:
    """Write the random-weight folder of model ``name`` (a :data:`FIXTURES` key) into ``folder`` at the real
    architecture; ``sample_size`` (default: the fixture's reduced one) is the side of what is denoised.  The
    ``flexbench_fixture.json`` record is written last, so a folder without it is incomplete."""
    fx = _fixture(name)
    size = fx.sample_size if sample_size is None else int(sample_size)
    if size < fx.min_sample_size or size % fx.min_sample_size:
        raise UserError(f"fixture {name}: sample_size {size} does not pass every down/upsampling level; use a "
                        f"multiple of {fx.min_sample_size} (the real model: {fx.real_sample_size})")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / FIXTURE_FILE).unlink(missing_ok=True)
    fx.write(folder, size, seed)
    _write_record(folder, fx.record(size, seed))
    return folder


def ddpm_cifar10(folder, sample_size: int = 8, seed: int = 0) -> Path:
    """DDPM CIFAR-10 (google/ddpm-cifar10-32 layout and architecture), random weights; real sample size 32."""
    return write_fixture("ddpm-cifar10", folder, sample_size, seed)


def ddpm_bedroom(folder, sample_size: int = 32, seed: int = 0) -> Path:
    """DDPM LSUN Bedroom (google/ddpm-bedroom-256 layout and architecture), random weights; real size 256."""
    return write_fixture("ddpm-bedroom", folder, sample_size, seed)


def ddpm_church(folder, sample_size: int = 32, seed: int = 0) -> Path:
    """DDPM LSUN Church (google/ddpm-church-256 layout and architecture), random weights; real size 256."""
    return write_fixture("ddpm-church", folder, sample_size, seed)


def ldm_4g(folder, sample_size: int = 8, seed: int = 0) -> Path:
    """LDM-4-G cin256-v2 (the layout of bench.models.loading), random weights; real latent 64 (256x256 images)."""
    return write_fixture("ldm-4-g", folder, sample_size, seed)


def sd_v15(folder, sample_size: int = 8, seed: int = 0) -> Path:
    """Stable Diffusion v1.5 pipeline folder, random weights; real latent 64 (512x512 images)."""
    return write_fixture("sd-v1.5", folder, sample_size, seed)


def fixture_record(folder: str | Path) -> dict | None:
    """The ``flexbench_fixture.json`` of a folder, or None (not a fixture, or an incomplete one)."""
    path = Path(folder) / FIXTURE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ---- quality-side files ----------------------------------------------------------------------------------------------

def random_inception(path: str | Path, seed: int = 0) -> Path:
    """A random-weight file in torch-fidelity's ``inception-v3-compat`` format (the state dict that
    ``FeatureExtractorInceptionV3`` loads from ``feature_extractor_weights_path``).  Convolutions He-normal,
    batch norms the identity (weight 1, bias 0, running mean 0, running var 1), fc N(0, 1/2048): features stay
    finite and of order one.  The extractor is built with its download and load stubbed out, for the key set only."""
    from unittest import mock

    import torch_fidelity.feature_extractor_inceptionv3 as inc

    with mock.patch.object(inc, "load_state_dict_from_url", lambda *a, **k: None), \
            mock.patch.object(inc.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None):
        net = inc.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, value in net.state_dict().items():
        if name.endswith("conv.weight"):
            fan_in = value[0].numel()
            value = torch.randn(value.shape, generator=g) * (2.0 / fan_in) ** 0.5
        elif name == "fc.weight":
            value = torch.randn(value.shape, generator=g) / value.shape[1] ** 0.5
        elif name.endswith(("bn.weight", "running_var")):
            value = torch.ones_like(value)
        elif name.endswith("num_batches_tracked"):
            value = torch.zeros_like(value)
        else:  # bn.bias, running_mean, fc.bias
            value = torch.zeros_like(value)
        state[name] = value.contiguous()
    return _save_torch(state, path)


def random_open_clip(path: str | Path, model: str = "ViT-B-32", seed: int = 0) -> Path:
    """A random open_clip checkpoint of ``model`` that ``open_clip.create_model_and_transforms(model,
    pretrained=path)`` loads offline (open_clip's own initialisation under ``torch.manual_seed(seed)``)."""
    import open_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = open_clip.create_model(model, pretrained=None)
    return _save_torch({k: v.contiguous() for k, v in net.state_dict().items()}, path)


def _save_torch(state: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def real_images(folder: str | Path, shape: tuple[int, int, int], n: int, seed: int = 0) -> Path:
    """``n`` random PNGs ``000000.png``... of ``shape`` (C, H, W), C = 1 (grayscale) or 3 (RGB): smooth random
    blobs plus noise, deterministic in ``seed``; a stand-in for a real-data folder."""
    import numpy as np
    from PIL import Image

    c, h, w = (int(v) for v in shape)
    if c not in (1, 3) or h < 1 or w < 1 or n < 1:
        raise UserError(f"real_images: shape {tuple(shape)} x {n} images; C must be 1 or 3, H, W and n positive")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        coarse = torch.from_numpy(rng.uniform(0, 255, (1, c, 4, 4)).astype(np.float32))
        smooth = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]
        pixels = (smooth.numpy() + rng.normal(0, 16, (c, h, w))).clip(0, 255).round().astype(np.uint8)
        image = Image.fromarray(pixels[0], "L") if c == 1 else Image.fromarray(pixels.transpose(1, 2, 0), "RGB")
        image.save(folder / f"{i:06d}.png")
    return folder


_SUBJECTS = ("a red fox", "an old lighthouse", "a bowl of ramen", "a vintage car", "a snowy mountain",
             "a cat wearing a hat", "a city street at night", "a field of sunflowers", "a wooden cabin",
             "a robot reading a book", "a sailing boat", "a cup of coffee")
_STYLES = ("photo of", "watercolor painting of", "pencil sketch of", "3d render of", "oil painting of")


def prompts_file(path: str | Path, n: int) -> Path:
    """A text file of ``n`` distinct prompts, one per line (a stand-in for Parti-Prompts / COCO captions)."""
    lines = [f"a {_STYLES[(i // len(_SUBJECTS)) % len(_STYLES)]} {_SUBJECTS[i % len(_SUBJECTS)]}"
             + (f", variation {i // (len(_SUBJECTS) * len(_STYLES))}" if i >= len(_SUBJECTS) * len(_STYLES) else "")
             for i in range(n)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---- everything under one root ------------------------------------------------------------------------------------

REAL_IMAGES = 32      # real-image PNGs per model fixture
PROMPTS = 16


def _done(marker: Path, record: dict) -> bool:
    try:
        return json.loads(marker.read_text()) == record
    except (OSError, ValueError):
        return False


def _build_once(target: Path, marker: Path, record: dict, write: Callable[[], object]) -> Path:
    """``write()`` unless ``marker`` already holds ``record`` (and ``target`` exists); the marker comes last."""
    if target.exists() and _done(marker, record):
        return target
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
    marker.unlink(missing_ok=True)
    write()
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(f".{marker.name}.{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, marker)
    return target


def build_all(root: str | Path, models=None, seed: int = 0, clip_model: str = "ViT-B-32") -> dict:
    """Every fixture under ``root``: ``models/<name>/`` (default: all of :data:`FIXTURES`), ``real/<name>/``
    (:data:`REAL_IMAGES` PNGs of each model's image shape), ``inception/pt_inception-2015-12-05.pth``,
    ``open_clip/<clip_model>.pt`` and ``prompts.txt``.  What already exists with a matching record is kept, so a second
    call costs nothing.  Returns ``{"models": {name: folder}, "real": {name: folder}, "inception": file,
    "open_clip": file, "prompts": file}``."""
    root = Path(root)
    names = list(FIXTURES) if models is None else [_fixture(m).name for m in models]
    out: dict = {"models": {}, "real": {}}
    for name in names:
        fx = FIXTURES[name]
        folder = root / "models" / name
        record = fx.record(fx.sample_size, seed)
        out["models"][name] = _build_once(folder, folder / FIXTURE_FILE, record,
                                          lambda: write_fixture(name, folder, fx.sample_size, seed))
        side = fx.sample_size * fx.decoder_factor
        shape = (3, side, side)
        real = root / "real" / name
        out["real"][name] = _build_once(real, root / "real" / f"{name}.{FIXTURE_FILE}",
                                        {"fixture": f"real-images:{name}", "shape": list(shape), "n": REAL_IMAGES,
                                         "seed": seed, "note": NOTE, "format": FORMAT},
                                        lambda: real_images(real, shape, REAL_IMAGES, seed))
    inception = root / "inception" / "pt_inception-2015-12-05.pth"
    out["inception"] = _build_once(inception, root / "inception" / FIXTURE_FILE,
                                   {"fixture": "inception-v3-compat", "seed": seed, "note": NOTE, "format": FORMAT},
                                   lambda: random_inception(inception, seed))
    clip = root / "open_clip" / f"{clip_model}.pt"
    out["open_clip"] = _build_once(clip, root / "open_clip" / f"{clip_model}.{FIXTURE_FILE}",
                                   {"fixture": f"open_clip:{clip_model}", "seed": seed, "note": NOTE,
                                    "format": FORMAT},
                                   lambda: random_open_clip(clip, clip_model, seed))
    prompts = root / "prompts.txt"
    out["prompts"] = _build_once(prompts, root / f"prompts.{FIXTURE_FILE}",
                                 {"fixture": "prompts", "n": PROMPTS, "format": FORMAT},
                                 lambda: prompts_file(prompts, PROMPTS))
    return out
