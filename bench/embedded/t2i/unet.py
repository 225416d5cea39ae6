"""Configs of the text-to-image U-Net: a diffusers ``UNet2DConditionModel`` on 16x16x1 pixels (the paper's Stable
Diffusion is latent, 4x64x64; here the sample is the image) and its scheduler.

Levels 16, 8, 4 with channels (32, 64, 64), one resnet per down block (branches: conv_in, then resnet and
downsampler per level but the last: 6); ``CrossAttnDownBlock2D`` / ``CrossAttnUpBlock2D`` (Transformer2DModel with
self-attention, cross-attention to the text states and a GEGLU feed-forward, as SD) at 16x16 and 8x8, so tomesd's
default ``max_downsample=1`` merges the 256 tokens of the 16x16 blocks; a cross-attention mid block at 4x4.
Two heads per transformer (diffusers' ``attention_head_dim`` of this class is the number of heads).

Scheduler: the digits model's DDPM betas (1000 steps, linear 1e-4..0.02: a pixel-space schedule) with SD's PLMS
settings (``set_alpha_to_one=False``, ``steps_offset=1``, ``skip_prk_steps=True``); the default sampler is 50-step
PLMS with classifier-free guidance (``DEFAULT_SAMPLER``), the paper's SD setting.
"""
from __future__ import annotations

from diffusers import DDPMScheduler, UNet2DConditionModel

from .text_encoder import WIDTH

UNET_CONFIG: dict = dict(
    sample_size=16,
    in_channels=1,
    out_channels=1,
    layers_per_block=1,
    block_out_channels=(32, 64, 64),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    cross_attention_dim=WIDTH,
    attention_head_dim=2,
    norm_num_groups=16,
)

SCHEDULER_CONFIG: dict = dict(
    num_train_timesteps=1000,
    beta_start=1e-4,
    beta_end=0.02,
    beta_schedule="linear",
    prediction_type="epsilon",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    skip_prk_steps=True,
)

DEFAULT_SAMPLER = dict(scheduler="plms", steps=50, guidance_scale=1.5, cfg="batched")


def build_unet() -> UNet2DConditionModel:
    """A freshly initialised U-Net (torch's global RNG decides the weights)."""
    return UNet2DConditionModel(**UNET_CONFIG)


def build_scheduler() -> DDPMScheduler:
    """The training noise schedule (DDPM forward process); sampling uses PLMS built from the same config."""
    return DDPMScheduler.from_config(SCHEDULER_CONFIG)
