"""Architecture presets of the paper's models: diffusers configs with random weights, nothing downloaded.

A preset is the U-Net of one model of Flexiffusion's experiments (Tables 1-3) with the inputs of one denoising step,
for cost measurement (MACs, latency ratios), never for image quality.  ``build(name)`` returns the U-Net (built once
per process and cached) and example inputs; unknown names raise :class:`UserError` listing the valid ones.

* ``ddpm-cifar10`` -- DDPM CIFAR-10 32x32: ``google/ddpm-cifar10-32`` config, UNet2DModel (128,256,256,256),
  2 layers per block, attention at 16x16;
* ``ddpm-bedroom``, ``ddpm-church`` -- DDPM LSUN 256x256: ``google/ddpm-{bedroom,church}-256`` config (one
  architecture), (128,128,256,256,512,512), attention at 16x16;
* ``ldm-4-g`` -- LDM-4-G ImageNet 256x256 (cin256-v2): a UNet2DConditionModel approximating LDM's U-Net (below);
* ``sd-v1.5`` -- Stable Diffusion v1.5 512x512: the ``unet`` config, latent 4x64x64, text context (1,77,768);
  text encoder (CLIP ViT-L/14 text tower) and VAE decoder as separate parts;
* ``embedded`` -- the suite's shipped 16x16x1 digits model, :mod:`bench.embedded.unet` (imported when built);
* ``embedded-t2i`` -- the shipped text-to-image digits model, :mod:`bench.embedded.t2i.unet` (its tiny text encoder,
  run once per prompt, is not a counted part).

LDM-4-G (``latent-diffusion/configs/latent-diffusion/cin256-v2.yaml``: model_channels 192, channel_mult (1,2,3,5),
num_res_blocks 2, attention_resolutions (8,4,2), num_heads 1, SpatialTransformer depth 1, context_dim 512,
VQ-f4 latent 3x64x64) expressed in diffusers, with these deviations:

* the class condition: LDM's ``ClassEmbedder`` looks up a 512-d embedding (1000 classes) and feeds it to
  cross-attention as one context token; here ``encoder_hidden_states`` of shape (B, 1, 512) is given directly (a
  table lookup costs no MACs, so the count is unaffected; the 1000x512 table is not part of the U-Net);
* ``num_heads=1`` becomes ``attention_head_dim=1`` (diffusers reads it as the number of heads for this class), so one
  head spans all channels as in LDM; heads do not change MACs anyway;
* blocks otherwise correspond one to one (ResBlock = ResnetBlock2D with a 1x1 shortcut, SpatialTransformer =
  Transformer2DModel with conv proj_in/proj_out, GEGLU feed-forward x4, mid block ResBlock-Transformer-ResBlock,
  3 resnets per up level, conv downsampler, nearest upsampler + conv, GroupNorm(32, eps 1e-5)); the measured
  count (99.93 G) is 0.11% above the paper's 99.82 G, see docs/costs.md;
* the decoder counted beside it is diffusers' ``VQModel`` with the VQ-f4 first stage's layout.

Weights are a deterministic pseudo-random fill (see :func:`fast_random_init`): enough for MACs and latency, not for
images.  The step inputs are batch ``batch_size``, timestep 500, and per-sample conditioning.
"""
from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch

from flexiffusion.errors import UserError

# ---- configs (copied from the model repositories' config.json; nothing is downloaded) ------------------------------

DDPM_CIFAR10_UNET: dict = dict(
    sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
    block_out_channels=(128, 256, 256, 256),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    act_fn="silu", attention_head_dim=None, center_input_sample=False, downsample_padding=0,
    flip_sin_to_cos=False, freq_shift=1, mid_block_scale_factor=1, norm_eps=1e-6, norm_num_groups=32,
    time_embedding_type="positional",
)

DDPM_LSUN256_UNET: dict = dict(
    DDPM_CIFAR10_UNET, sample_size=256,
    block_out_channels=(128, 128, 256, 256, 512, 512),
    down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4,
)

LDM_CIN256_UNET: dict = dict(
    sample_size=64, in_channels=3, out_channels=3, layers_per_block=2,
    block_out_channels=(192, 384, 576, 960),
    down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * 3,
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=("CrossAttnUpBlock2D",) * 3 + ("UpBlock2D",),
    cross_attention_dim=512, attention_head_dim=1, transformer_layers_per_block=1, use_linear_projection=False,
    act_fn="silu", norm_num_groups=32, norm_eps=1e-5, flip_sin_to_cos=True, freq_shift=0, downsample_padding=1,
)

SD15_UNET: dict = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=768, attention_head_dim=8, act_fn="silu", center_input_sample=False,
    downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, mid_block_scale_factor=1,
    norm_eps=1e-5, norm_num_groups=32,
)

# SD v1.5 text encoder (openai/clip-vit-large-patch14 text tower) and VAE (AutoencoderKL f8).
SD15_TEXT_ENCODER: dict = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
)
SD15_VAE: dict = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    act_fn="silu", norm_num_groups=32,
)
# LDM-4's first stage: VQ-f4 (ch 128, ch_mult (1,2,4), 2 res blocks, z 3 channels, 8192 codes).
LDM_VQF4: dict = dict(
    in_channels=3, out_channels=3, latent_channels=3, layers_per_block=2, sample_size=256,
    block_out_channels=(128, 256, 512),
    down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
    act_fn="silu", norm_num_groups=32, num_vq_embeddings=8192, vq_embed_dim=3,
)


# Noise schedules (DDPM: linear 1e-4..0.02; LDM and SD: "scaled_linear", i.e. LDM's sqrt-linear).
DDPM_SCHEDULER: dict = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                            prediction_type="epsilon", clip_sample=True)
LDM_SCHEDULER: dict = dict(num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0195,
                           beta_schedule="scaled_linear", prediction_type="epsilon", clip_sample=False)
SD15_SCHEDULER: dict = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                            beta_schedule="scaled_linear", prediction_type="epsilon", clip_sample=False,
                            set_alpha_to_one=False, steps_offset=1)


def _embedded_config() -> dict:
    return dict(importlib.import_module("bench.embedded.unet").UNET_CONFIG)


def _embedded_t2i_config() -> dict:
    return dict(importlib.import_module("bench.embedded.t2i.unet").UNET_CONFIG)


# ---- presets --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """A network besides the U-Net that a pipeline runs once per prompt or image (text encoder, decoder)."""

    kind: str          # "text_encoder" (per prompt) or "decoder" (per image)
    cls: str           # "CLIPTextModel", "AutoencoderKL", "VQModel"
    config: Mapping
    input_shape: tuple[int, ...]  # per prompt / image: token ids (77,) or latent (C, H, W)


@dataclass(frozen=True)
class Preset:
    """The U-Net of one model of the paper with the inputs of one denoising step."""

    name: str
    title: str
    unet_class: str                      # "UNet2DModel" or "UNet2DConditionModel"
    unet_config: Mapping | Callable[[], Mapping]
    sample_shape: tuple[int, int, int]   # one sample, (C, H, W)
    context_shape: tuple[int, int] | None = None  # encoder_hidden_states of one sample, (tokens, dim)
    num_classes: int | None = None       # class-conditional UNet2DModel: class_labels (B,) in 0..num_classes-1
    null_class: int | None = None        # the label of the unconditional pass (classifier-free guidance)
    guidance: bool = False               # sampled with classifier-free guidance: the U-Net runs twice per step
    paper_macs_g: float | None = None    # MACs of a full step in the paper (Tables 1-3)
    parts: tuple[Part, ...] = ()
    scheduler_config: Mapping = field(default_factory=lambda: dict(DDPM_SCHEDULER))
    timestep: int = 500
    notes: str = ""

    def config(self) -> dict:
        cfg = self.unet_config() if callable(self.unet_config) else self.unet_config
        return dict(cfg)

    def build_unet(self) -> torch.nn.Module:
        """The U-Net in eval mode; built once per process (SD's takes seconds) and shared afterwards."""
        return _cached_module(("unet", self.name), lambda: _build(self.unet_class, self.config()))

    def example_inputs(self, batch_size: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """``(sample, timestep, kwargs)`` of one U-Net call at ``batch_size``."""
        g = torch.Generator().manual_seed(seed)
        sample = torch.randn((batch_size, *self.sample_shape), generator=g)
        timestep = torch.tensor([self.timestep], dtype=torch.long)
        kwargs: dict[str, torch.Tensor] = {}
        if self.context_shape is not None:
            kwargs["encoder_hidden_states"] = torch.randn((batch_size, *self.context_shape), generator=g)
        if self.num_classes is not None:
            kwargs["class_labels"] = torch.randint(0, self.num_classes, (batch_size,), generator=g)
        return sample, timestep, kwargs

    def build_part(self, kind: str) -> torch.nn.Module:
        part = self.part(kind)
        return _cached_module((kind, self.name), lambda: _build(part.cls, dict(part.config)))

    def part(self, kind: str) -> Part:
        for p in self.parts:
            if p.kind == kind:
                return p
        raise UserError(f"preset {self.name} has no {kind}: it has {[p.kind for p in self.parts] or 'none'}")


@dataclass(frozen=True)
class BuiltPreset:
    """What :func:`build` returns: the U-Net and one step's inputs."""

    preset: Preset
    unet: torch.nn.Module
    sample: torch.Tensor
    timestep: torch.Tensor
    kwargs: dict = field(default_factory=dict)


_SD_PARTS = (
    Part("text_encoder", "CLIPTextModel", SD15_TEXT_ENCODER, (77,)),
    Part("decoder", "AutoencoderKL", SD15_VAE, (4, 64, 64)),
)

PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("ddpm-cifar10", "DDPM CIFAR-10 32x32", "UNet2DModel", DDPM_CIFAR10_UNET, (3, 32, 32),
           paper_macs_g=6.10, notes="google/ddpm-cifar10-32 config"),
    Preset("ddpm-bedroom", "DDPM LSUN Bedroom 256x256", "UNet2DModel", DDPM_LSUN256_UNET, (3, 256, 256),
           paper_macs_g=248.7, notes="google/ddpm-bedroom-256 config"),
    Preset("ddpm-church", "DDPM LSUN Church 256x256", "UNet2DModel", DDPM_LSUN256_UNET, (3, 256, 256),
           paper_macs_g=248.7, notes="google/ddpm-church-256 config (same architecture as bedroom)"),
    Preset("ldm-4-g", "LDM-4-G ImageNet 256x256 (cin256-v2)", "UNet2DConditionModel", LDM_CIN256_UNET, (3, 64, 64),
           context_shape=(1, 512), guidance=True, paper_macs_g=99.82,
           parts=(Part("decoder", "VQModel", LDM_VQF4, (3, 64, 64)),), scheduler_config=LDM_SCHEDULER,
           notes="approximation of the LDM openaimodel U-Net; class as 1 context token of 512"),
    Preset("sd-v1.5", "Stable Diffusion v1.5 512x512", "UNet2DConditionModel", SD15_UNET, (4, 64, 64),
           context_shape=(77, 768), guidance=True, paper_macs_g=338.76, parts=_SD_PARTS,
           scheduler_config=SD15_SCHEDULER, notes="runwayml/stable-diffusion-v1-5 unet config"),
    Preset("embedded", "embedded 16x16x1 (digits)", "UNet2DModel", _embedded_config, (1, 16, 16),
           num_classes=10, null_class=10, guidance=True, notes="bench.embedded.unet; class labels 0..9"),
    Preset("embedded-t2i", "embedded text-to-image 16x16x1 (digits)", "UNet2DConditionModel", _embedded_t2i_config,
           (1, 16, 16), context_shape=(20, 64), guidance=True, scheduler_config=dict(DDPM_SCHEDULER, clip_sample=False),
           notes="bench.embedded.t2i.unet; 20 tokens x 64 text states; text encoder not counted"),
)}


def preset_names() -> list[str]:
    return list(PRESETS)


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise UserError(f"unknown preset {name!r}: valid presets are {', '.join(PRESETS)}") from None


def build(name: str, batch_size: int = 1, seed: int = 0) -> BuiltPreset:
    """The preset's U-Net (cached per process) and the inputs of one step at ``batch_size``."""
    preset = get_preset(name)
    sample, timestep, kwargs = preset.example_inputs(batch_size, seed)
    return BuiltPreset(preset, preset.build_unet(), sample, timestep, kwargs)


# ---- construction ---------------------------------------------------------------------------------------------

_CACHE: dict[tuple, torch.nn.Module] = {}
_LOCK = threading.Lock()


def _cached_module(key: tuple, make: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = make()
        return _CACHE[key]


def clear_cache() -> None:
    """Drop the built models (SD's U-Net holds 3.4 GB)."""
    with _LOCK:
        _CACHE.clear()


def _model_class(cls: str) -> type:
    if cls == "CLIPTextModel":
        from transformers import CLIPTextConfig, CLIPTextModel

        return lambda **cfg: CLIPTextModel(CLIPTextConfig(**cfg))  # type: ignore[return-value]
    return getattr(importlib.import_module("diffusers"), cls)


def _build(cls: str, config: dict) -> torch.nn.Module:
    make = _model_class(cls)
    with torch.device("meta"):
        model = make(**config)
    if any(True for _ in model.buffers()):
        model = make(**config)  # buffers (e.g. CLIP's position ids) need their real initial values
    else:
        model = model.to_empty(device="cpu")
        fast_random_init(model)
    return model.eval().requires_grad_(False)


def fast_random_init(module: torch.nn.Module, seed: int = 0, pool_size: int = 1 << 20) -> None:
    """Fill parameters with a deterministic pseudo-random pattern in seconds (torch's own init of SD's 860 M
    parameters takes ~18 s on 2 cores): slices of one pool of N(0, 1) values at per-tensor offsets, scaled by
    1/sqrt(fan_in); norm weights 1, biases 0.  Values do not change MACs and barely change CPU latency."""
    with torch.no_grad():
        for (_, p), (_, values) in zip(module.named_parameters(), random_values(module, seed, pool_size)):
            p.view(-1).copy_(values.view(-1))


def random_values(model: torch.nn.Module, seed: int = 0, pool_size: int = 1 << 20):
    """``(name, values)`` of every parameter of ``model`` (any device, meta included) as :func:`fast_random_init`
    sets them, one tensor at a time in one reused buffer (the fixtures stream them to disk)."""
    g = torch.Generator().manual_seed(seed)
    pool = torch.randn(2 * pool_size, generator=g)
    offsets = torch.randint(0, pool_size, (4096,), generator=g).tolist()
    params = list(model.named_parameters())
    buffer = torch.empty(max((p.numel() for _, p in params), default=0))
    for i, (name, p) in enumerate(params):
        flat = buffer[:p.numel()]
        if p.dim() <= 1:
            flat.fill_(1.0 if name.endswith("weight") else 0.0)
        else:
            start, n = offsets[i % len(offsets)], p.numel()
            rows, rest = divmod(n, pool_size)
            # one broadcast copy per tensor: per-chunk loops are ~20x slower on a loaded 2-core machine
            if rows:
                flat[:rows * pool_size].view(rows, pool_size).copy_(pool[start:start + pool_size].expand(rows, -1))
            if rest:
                flat[rows * pool_size:].copy_(pool[start:start + rest])
            flat.mul_(1.0 / (p[0].numel() ** 0.5))
        yield name, flat.view(p.shape)
