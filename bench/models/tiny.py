"""Tiny random models built from configs (nothing downloaded): the stand-ins that tests and code-path demos use
for DDPM (UNet2DModel), class-conditional DDPM/LDM-like models and Stable Diffusion."""
from __future__ import annotations

import functools
import gzip
import json
import os
import tempfile
from pathlib import Path

import torch

DDPM_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
                  "clip_sample": True, "prediction_type": "epsilon"}
SD_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                "beta_schedule": "scaled_linear", "clip_sample": False, "set_alpha_to_one": False,
                "steps_offset": 1, "skip_prk_steps": True, "prediction_type": "epsilon"}


def tiny_unet2d(num_class_embeds: int | None = None, seed: int = 0):
    """3-level 16x16x1 UNet2DModel, 2 layers per block, attention at 8x8 (9 branches)."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=16, in_channels=1, out_channels=1, block_out_channels=(16, 32, 32), layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8,
        attention_head_dim=8, num_class_embeds=num_class_embeds).eval()


def tiny_unet2d_condition(seed: int = 0):
    """2-level UNet2DConditionModel on 4x16x16 latents with cross-attention at the highest resolution."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8).eval()


@functools.lru_cache(maxsize=1)
def clip_tokenizer_files() -> str:
    """vocab.json / merges.txt of the CLIP BPE, built from the vocabulary bundled with open_clip (no network)."""
    import open_clip
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder = Path(tempfile.gettempdir()) / f"flexbench-clip-bpe-{open_clip.__version__}"
    if not (folder / "merges.txt").exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"vocab.json.{os.getpid()}"
        tmp.write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
        os.replace(tmp, folder / "vocab.json")
        tmp = folder / f"merges.txt.{os.getpid()}"
        tmp.write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        os.replace(tmp, folder / "merges.txt")
    return str(folder)


def tiny_sd_pipeline(seed: int = 0):
    """A StableDiffusionPipeline with tiny random U-Net, VAE and CLIP text encoder, PNDM (PLMS) scheduler."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    unet = tiny_unet2d_condition(seed)
    torch.manual_seed(seed)
    vae = AutoencoderKL(block_out_channels=(16, 32), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=8, sample_size=32).eval()
    torch.manual_seed(seed)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                                        num_hidden_layers=2, vocab_size=49408, max_position_embeddings=77)).eval()
    folder = clip_tokenizer_files()
    tokenizer = CLIPTokenizer(f"{folder}/vocab.json", f"{folder}/merges.txt", model_max_length=77)
    return StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                   scheduler=PNDMScheduler.from_config(SD_SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
