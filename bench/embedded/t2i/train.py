"""Training of the embedded text-to-image model, three stages on the digits' training split, one CPU thread:

1. the conditioning encoder (:class:`.text_encoder.ConditioningCLIP`, contrastive; only its text side is kept),
2. the U-Net (DDPM epsilon loss on ``encoder_hidden_states`` of the frozen encoder; 10% of prompts dropped to the
   empty prompt, the unconditional input of classifier-free guidance), resumable from ``OUT/checkpoint.pt``,
3. the scoring CLIP (open_clip, contrastive), trained last and independently of 1-2.

Layout of ``OUT``: ``text_encoder.safetensors`` / ``clip.safetensors`` (+ ``*.json`` with their settings; a finished
stage is reused, a stage finished with other settings is refused), ``checkpoint.pt`` (every ``checkpoint_every``
steps, atomically), ``weights/`` (the final artefacts + manifest, built aside and renamed into place).
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.embedded import data as embedded_data
from bench.embedded.loader import sha256_file
from bench.embedded.train import _atomic_torch_save, _replace_dir, ema_module, resume_training, step_scheduler
from flexiffusion.errors import UserError

from bench.embedded.t2i import clip_model
from bench.embedded.t2i.captions import HELDOUT_TEMPLATES, TRAIN_TEMPLATES
from bench.embedded.t2i.contrastive import (ContrastiveConfig, caption_table, draw_captions, train_contrastive,
                                            zero_shot_accuracy)
from bench.embedded.t2i.text_encoder import ConditioningCLIP, TextEncoder, count_params
from bench.embedded.t2i.tokens import tokenize
from bench.embedded.t2i.unet import DEFAULT_SAMPLER, SCHEDULER_CONFIG, UNET_CONFIG, build_scheduler, build_unet

WEIGHT_FILES = ("unet/config.json", "unet/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json",
                "text_encoder.safetensors", "clip.safetensors", f"{clip_model.MODEL_NAME}.json")


@dataclass
class T2ITrainConfig:
    steps: int = 4800            # U-Net
    batch_size: int = 32
    lr: float = 8e-4
    warmup: int = 100
    final_lr_fraction: float = 0.1
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    prompt_dropout: float = 0.1
    token_noise: float = 0.3
    text_steps: int = 500        # conditioning encoder
    clip_steps: int = 500        # scoring CLIP
    contrastive_batch: int = 128
    seed: int = 0
    checkpoint_every: int = 250


def _save_safetensors(state: dict, path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(tmp))
    os.replace(tmp, path)


def _stage(out: Path, name: str, settings: dict, train_fn) -> dict:
    """Run ``train_fn() -> (state_dict, info)`` unless ``OUT/name.safetensors`` exists from the same settings."""
    path, info_path = out / f"{name}.safetensors", out / f"{name}.json"
    if path.exists() and info_path.exists():
        info = json.loads(info_path.read_text())
        if info["settings"] != settings:
            raise UserError(f"{path} was trained with other settings ({info['settings']} vs {settings}): use the "
                            "same settings or a new --out directory")
        return info
    state, info = train_fn()
    _save_safetensors(state, path)
    info = dict(info, settings=settings)
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    return info


def _contrastive_cfg(cfg: T2ITrainConfig, steps: int, seed: int) -> ContrastiveConfig:
    return ContrastiveConfig(steps=steps, batch_size=cfg.contrastive_batch, seed=seed, token_noise=cfg.token_noise)


def stage_text_encoder(out: Path, cfg: T2ITrainConfig, progress: bool) -> dict:
    ccfg = _contrastive_cfg(cfg, cfg.text_steps, cfg.seed + 10)

    def run():
        x, y = embedded_data.load_split("train")
        torch.manual_seed(ccfg.seed)
        model = ConditioningCLIP(torch.unique(caption_table()))
        info = train_contrastive(model, x, y, ccfg, lambda a: a, "text encoder", progress)
        xh, yh = embedded_data.load_split("heldout")
        info["heldout_zero_shot"] = zero_shot_accuracy(model.encode_image, model.encode_text, xh, yh,
                                                       HELDOUT_TEMPLATES)
        return model.text.state_dict(), info

    return _stage(out, "text_encoder", asdict(ccfg), run)


def stage_clip(out: Path, cfg: T2ITrainConfig, progress: bool) -> dict:
    ccfg = _contrastive_cfg(cfg, cfg.clip_steps, cfg.seed + 20)

    def run():
        x, y = embedded_data.load_split("train")
        torch.manual_seed(ccfg.seed)
        model = clip_model.build_clip()
        info = train_contrastive(model, x, y, ccfg, clip_model.to_clip_input, "scoring CLIP", progress)
        xh, yh = embedded_data.load_split("heldout")
        enc = lambda a: model.encode_image(clip_model.to_clip_input(a))  # noqa: E731
        info["heldout_zero_shot"] = zero_shot_accuracy(enc, model.encode_text, xh, yh, HELDOUT_TEMPLATES)
        return model.state_dict(), info

    return _stage(out, "clip", asdict(ccfg), run)


def load_text_encoder_file(path: Path) -> TextEncoder:
    from safetensors.torch import load_file

    state = load_file(str(path))
    enc = TextEncoder(state["vocab"])
    enc.load_state_dict(state)
    return enc.eval().requires_grad_(False)


def stage_unet(out: Path, cfg: T2ITrainConfig, progress: bool) -> tuple[torch.nn.Module, dict]:
    """Train (or resume) the U-Net on the frozen encoder's states; returns the EMA model and bookkeeping."""
    from tqdm.auto import tqdm

    encoder = load_text_encoder_file(out / "text_encoder.safetensors")
    x_tr, y_tr = embedded_data.load_split("train")
    table, empty = caption_table(), tokenize([""], warn=False)[0]
    torch.manual_seed(cfg.seed)  # decides the initial weights
    model = build_unet()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # batches, captions, prompt dropout, timesteps, noise
    elapsed, losses, running = 0.0, [], None
    ckpt_path = out / "checkpoint.pt"
    ckpt, step, sched, ema = resume_training(ckpt_path, cfg, model, opt)
    if ckpt is not None:
        gen.set_state(ckpt["generator"])
        elapsed, losses, running = ckpt["elapsed_s"], ckpt["losses"], ckpt["running"]

    def save_checkpoint():
        _atomic_torch_save(dict(model=model.state_dict(), ema=ema.state_dict(), optimizer=opt.state_dict(),
                                generator=gen.get_state(), step=step, elapsed_s=elapsed, losses=losses,
                                running=running, config=asdict(cfg)), ckpt_path)

    alphas_cumprod = build_scheduler().alphas_cumprod.float()
    model.train()
    bar = tqdm(total=cfg.steps, initial=step, desc="t2i U-Net", unit="step", disable=not progress)
    while step < cfg.steps:
        t0 = time.perf_counter()
        idx = torch.randint(0, x_tr.shape[0], (cfg.batch_size,), generator=gen)
        x0, labels = x_tr[idx], y_tr[idx]
        tokens = draw_captions(table, labels, gen, cfg.token_noise)
        tokens[torch.rand(cfg.batch_size, generator=gen) < cfg.prompt_dropout] = empty
        t = torch.randint(0, alphas_cumprod.shape[0], (cfg.batch_size,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        with torch.no_grad():
            states = encoder.hidden_states(tokens)
        loss = F.mse_loss(model(a.sqrt() * x0 + (1 - a).sqrt() * noise, t, encoder_hidden_states=states).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step_scheduler(sched)
        ema.step(model.parameters())
        step += 1
        elapsed += time.perf_counter() - t0
        running = loss.item() if running is None else 0.99 * running + 0.01 * loss.item()
        if step % 50 == 0:
            losses.append((step, round(running, 5)))
        bar.set_postfix(loss=f"{running:.4f}")
        bar.update(1)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save_checkpoint()
    bar.close()
    if not ckpt_path.exists():
        save_checkpoint()
    return ema_module(model, ema), dict(step=step, elapsed_s=round(elapsed, 1), final_loss=running, losses=losses)


def write_weights(out: Path, unet: torch.nn.Module, manifest: dict) -> Path:
    """``OUT/weights`` built in a temporary sibling folder and renamed into place."""
    tmp = Path(tempfile.mkdtemp(prefix=".weights-", dir=out))
    os.chmod(tmp, 0o755)
    unet.save_pretrained(str(tmp / "unet"), safe_serialization=True)
    build_scheduler().save_pretrained(str(tmp / "scheduler"))
    for name in ("text_encoder.safetensors", "clip.safetensors"):
        shutil.copyfile(out / name, tmp / name)
    clip_model.write_config(tmp / f"{clip_model.MODEL_NAME}.json")
    for path in tmp.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    manifest = dict(manifest, files={name: sha256_file(tmp / name) for name in WEIGHT_FILES})
    manifest["size_bytes"] = sum((tmp / name).stat().st_size for name in WEIGHT_FILES)
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    final = out / "weights"
    _replace_dir(tmp, final)
    return final


@torch.enable_grad()
def train(out: Path, cfg: T2ITrainConfig, command: str, threads: int | None = None, progress: bool = True) -> Path:
    """All three stages and the final artefacts with their manifest; returns the weights folder."""
    import diffusers
    import open_clip

    if threads:
        torch.set_num_threads(threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    text_info = stage_text_encoder(out, cfg, progress)
    ema, unet_info = stage_unet(out, cfg, progress)
    clip_info = stage_clip(out, cfg, progress)
    encoder = load_text_encoder_file(out / "text_encoder.safetensors")
    manifest = dict(
        description="Embedded text-to-image model: 16x16x1 pixel-space UNet2DConditionModel on sklearn digits "
                    "conditioned on a tiny text encoder; a separately trained tiny open_clip model scores",
        command=command,
        data=dict(source="sklearn.datasets.load_digits, bilinear 8x8 -> 16x16, [-1, 1] (bench.embedded.data)",
                  split="train_test_split(test_size=0.2, stratify=y, random_state=0): the digits model's split",
                  n_train=embedded_data.N_TRAIN, n_heldout=embedded_data.N_HELDOUT, all_stages_trained_on="train",
                  train_templates=list(TRAIN_TEMPLATES), heldout_templates=list(HELDOUT_TEMPLATES)),
        seeds=dict(unet_init=cfg.seed, unet_data_and_noise=cfg.seed + 1, text_encoder_init=cfg.seed + 10,
                   text_encoder_data=cfg.seed + 11, clip_init=cfg.seed + 20, clip_data=cfg.seed + 21),
        train_config=asdict(cfg),
        unet=dict(config=UNET_CONFIG, params=count_params(ema), steps=unet_info["step"],
                  training_time_s=unet_info["elapsed_s"], final_loss=unet_info["final_loss"],
                  loss_curve=unet_info["losses"]),
        text_encoder=dict(params=count_params(encoder), vocabulary=int(encoder.vocab.numel()), **text_info),
        clip=dict(model_name=clip_model.MODEL_NAME, model_config=clip_model.MODEL_CONFIG, **clip_info),
        scheduler=SCHEDULER_CONFIG,
        default_sampler=DEFAULT_SAMPLER,
        environment=dict(torch=torch.__version__, diffusers=diffusers.__version__, open_clip=open_clip.__version__,
                         python=platform.python_version(), threads=torch.get_num_threads(),
                         machine=platform.machine()),
        quality=None,
    )
    return write_weights(out, ema, manifest)
