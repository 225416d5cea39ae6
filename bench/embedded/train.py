"""Training of the embedded model: the digit classifier, then a class-conditional DDPM (epsilon prediction) with
10% label dropout to the null class, so one checkpoint serves unconditional sampling and classifier-free guidance.

Layout of the output directory ``OUT``::

    OUT/classifier.safetensors     stage 1 (skipped on restart if present)
    OUT/checkpoint.pt              stage 2, written atomically every ``checkpoint_every`` steps: model, EMA, optimizer,
                                   step, data/noise RNG state, accumulated training time; a restart continues from it
    OUT/weights/                   the final artefacts (unet/, scheduler/, classifier.safetensors, manifest.json),
                                   built in a temporary folder and renamed into place in one step

``install_weights`` copies ``OUT/weights`` into the package (``bench/embedded/weights``), also by rename.

The parts come from libraries: AdamW; torch's ``LinearLR`` warm-up then ``CosineAnnealingLR`` (:func:`lr_scheduler`,
equal to the closed form :func:`lr_at` the shipped weights were trained with); ``diffusers.training_utils.EMAModel``
(:func:`make_ema`; the shipped weights came from the previous, equivalent hand-written EMA, see there).
"""
from __future__ import annotations

import json
import math
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
from bench.embedded.classifier import DigitClassifier, accuracy, train_classifier
from bench.embedded.loader import sha256_file
from bench.embedded.unet import NULL_CLASS, SCHEDULER_CONFIG, build_scheduler, build_unet, count_params

PACKAGE_WEIGHTS = Path(__file__).resolve().parent / "weights"
WEIGHT_FILES = (
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "scheduler/scheduler_config.json",
    "classifier.safetensors",
)


@dataclass
class TrainConfig:
    steps: int = 6000
    batch_size: int = 64
    lr: float = 8e-4
    warmup: int = 200
    final_lr_fraction: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    label_dropout: float = 0.1
    classifier_epochs: int = 30
    seed: int = 0
    checkpoint_every: int = 250


def _atomic_torch_save(obj, path: Path) -> None:
    from flexiffusion.io import atomic_write

    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def lr_at(step: int, cfg: TrainConfig) -> float:
    """The closed form of :func:`lr_scheduler`: linear warm-up, then cosine decay to ``final_lr_fraction * lr`` at
    ``cfg.steps`` (the schedule the shipped weights were trained with; the test compares the two)."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    f = cfg.final_lr_fraction
    return cfg.lr * (f + (1 - f) * 0.5 * (1 + math.cos(math.pi * progress)))


def lr_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, step: int = 0):
    """torch's schedulers for linear warm-up (``LinearLR``, ``lr * (s + 1) / warmup``) then cosine decay
    (``CosineAnnealingLR`` to ``final_lr_fraction * lr`` at ``cfg.steps``), advanced to ``step``.  Built fresh
    from ``cfg`` on every (re)start, so a resume that changes ``--steps`` follows the new length."""
    import warnings

    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    cosine = CosineAnnealingLR(opt, T_max=max(1, cfg.steps - cfg.warmup), eta_min=cfg.final_lr_fraction * cfg.lr)
    sched = cosine
    if cfg.warmup >= 1:
        warm = LinearLR(opt, start_factor=1 / cfg.warmup, end_factor=1.0, total_iters=max(1, cfg.warmup - 1))
        sched = SequentialLR(opt, [warm, cosine], milestones=[cfg.warmup])
    with warnings.catch_warnings():  # SequentialLR passes an epoch to the next scheduler at a milestone
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(step):
            sched.step()
    return sched


def step_scheduler(sched) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sched.step()


def make_ema(model: torch.nn.Module, cfg: TrainConfig, optimization_step: int = 0):
    """``diffusers.training_utils.EMAModel`` of ``model``'s parameters: decay ``min(ema_decay, (1 + s) / (10 + s))``
    at its update number ``s + 1`` (s >= 1), the first update a copy.  The shipped weights were trained with the
    previous hand-written EMA, identical except that its first update used 0.1 instead of 0 (after 6000 steps that
    update weighs ~1e-28 in the average); checkpoints of either form resume."""
    from diffusers.training_utils import EMAModel

    ema = EMAModel(model.parameters(), decay=cfg.ema_decay, min_decay=0.0, update_after_step=0,
                   use_ema_warmup=False)
    ema.optimization_step = optimization_step
    return ema


def restore_ema(saved: dict, model: torch.nn.Module, cfg, step: int):
    """The EMA of a checkpoint: ``EMAModel``'s state, or (a checkpoint of the previous hand-written EMA) the averaged
    module's state dict, turned into an ``EMAModel`` at update number ``step``."""
    import copy

    if "shadow_params" in saved:
        ema = make_ema(model, cfg)
        ema.load_state_dict(saved)
        return ema
    averaged = copy.deepcopy(model)
    averaged.load_state_dict(saved)
    return make_ema(averaged, cfg, optimization_step=step)


def ema_module(model: torch.nn.Module, ema) -> torch.nn.Module:
    """A frozen eval copy of ``model`` holding ``ema``'s averaged parameters (the shipped weights)."""
    import copy

    averaged = copy.deepcopy(model).requires_grad_(False)
    ema.copy_to(averaged.parameters())
    return averaged.eval()


def stage_classifier(out: Path, cfg: TrainConfig, progress: bool) -> tuple[DigitClassifier, float, float | None]:
    """Train the classifier, or reuse ``OUT/classifier.safetensors``; (model, held-out accuracy, training seconds)."""
    from safetensors.torch import load_file, save_file

    path = out / "classifier.safetensors"
    x_tr, y_tr = embedded_data.load_split("train")
    x_he, y_he = embedded_data.load_split("heldout")
    info_path = out / "classifier_info.json"
    if path.exists():
        model = DigitClassifier()
        model.load_state_dict(load_file(str(path)))
        model.eval()
        elapsed = json.loads(info_path.read_text())["elapsed_s"] if info_path.exists() else None
    else:
        t0 = time.perf_counter()
        model = train_classifier(x_tr, y_tr, epochs=cfg.classifier_epochs, seed=cfg.seed, progress=progress)
        elapsed = time.perf_counter() - t0
        from flexiffusion.io import atomic_write, atomic_write_json

        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        atomic_write(path, lambda tmp: save_file(state, str(tmp)))
        atomic_write_json(info_path, {"elapsed_s": elapsed, "epochs": cfg.classifier_epochs})
    return model, accuracy(model, x_he, y_he), elapsed


# settings a restart may change: how long to train and how often to save
RESUMABLE_CHANGES = ("steps", "checkpoint_every", "classifier_epochs")


def _check_resumable(path: Path, saved: dict, cfg: TrainConfig) -> None:
    from flexiffusion.errors import UserError

    diff = {k: (v, getattr(cfg, k)) for k, v in saved.items()
            if k not in RESUMABLE_CHANGES and hasattr(cfg, k) and getattr(cfg, k) != v}
    if diff:
        what = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in sorted(diff.items()))
        raise UserError(f"{path} was trained with other settings ({what}): resume with the same settings or "
                        f"use a new --out directory")


def resume_training(ckpt_path: Path, cfg, model: torch.nn.Module, opt: torch.optim.Optimizer):
    """``(checkpoint or None, step, lr scheduler, EMA)`` for training ``model`` with ``opt``: from ``ckpt_path`` when
    it exists (its settings checked against ``cfg``; model, optimizer, schedule position and EMA restored), else fresh.
    The caller restores its own generators and bookkeeping from the returned checkpoint."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False) if ckpt_path.exists() else None
    step = 0
    if ckpt is not None:
        _check_resumable(ckpt_path, ckpt.get("config", {}), cfg)
        step = ckpt["step"]
    sched = lr_scheduler(opt, cfg, step)  # before the optimizer state: the schedulers start from the base lr
    ema = make_ema(model, cfg)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        ema = restore_ema(ckpt["ema"], model, cfg, step)  # EMAModel's state or the earlier hand-written EMA's
    return ckpt, step, sched, ema


def stage_diffusion(out: Path, cfg: TrainConfig, progress: bool) -> tuple[torch.nn.Module, dict]:
    """Train (or resume) the U-Net; returns the EMA model and the checkpoint's bookkeeping."""
    from tqdm.auto import tqdm

    x_tr, y_tr = embedded_data.load_split("train")
    torch.manual_seed(cfg.seed)  # decides the initial weights
    model = build_unet()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # batches, timesteps, noise, label dropout
    elapsed, losses = 0.0, []
    ckpt_path = out / "checkpoint.pt"
    ckpt, step, sched, ema = resume_training(ckpt_path, cfg, model, opt)
    if ckpt is not None:
        gen.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        elapsed, losses = ckpt["elapsed_s"], ckpt.get("losses", [])

    def save_checkpoint() -> None:
        _atomic_torch_save(
            dict(model=model.state_dict(), ema=ema.state_dict(), optimizer=opt.state_dict(), generator=gen.get_state(),
                 torch_rng=torch.get_rng_state(), step=step, elapsed_s=elapsed, losses=losses, config=asdict(cfg)),
            ckpt_path,
        )

    scheduler = build_scheduler()
    alphas_cumprod = scheduler.alphas_cumprod.float()
    n = x_tr.shape[0]
    model.train()
    bar = tqdm(total=cfg.steps, initial=step, desc="diffusion", unit="step", disable=not progress)
    running = None
    while step < cfg.steps:
        t0 = time.perf_counter()
        idx = torch.randint(0, n, (cfg.batch_size,), generator=gen)
        x0, labels = x_tr[idx], y_tr[idx].clone()
        drop = torch.rand(cfg.batch_size, generator=gen) < cfg.label_dropout
        labels[drop] = NULL_CLASS
        t = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.batch_size,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        lr = opt.param_groups[0]["lr"]
        loss = F.mse_loss(model(xt, t, class_labels=labels).sample, noise)
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
            losses.append((step, running))
        bar.set_postfix(loss=f"{running:.4f}", lr=f"{lr:.1e}")
        bar.update(1)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save_checkpoint()
    bar.close()
    if not ckpt_path.exists():  # steps already reached with no checkpoint (steps=0): keep the layout uniform
        save_checkpoint()
    return ema_module(model, ema), dict(step=step, elapsed_s=elapsed, final_loss=running, losses=losses)


def write_weights(out: Path, unet: torch.nn.Module, classifier_path: Path, manifest: dict) -> Path:
    """Write ``out/weights`` atomically: build in a temporary sibling folder, then rename over the old one."""
    final = out / "weights"
    tmp = Path(tempfile.mkdtemp(prefix=".weights-", dir=out))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the weights folder is shipped
    unet.save_pretrained(str(tmp / "unet"), safe_serialization=True)
    build_scheduler().save_pretrained(str(tmp / "scheduler"))
    shutil.copyfile(classifier_path, tmp / "classifier.safetensors")
    for path in tmp.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    manifest = dict(manifest)
    manifest["files"] = {name: sha256_file(tmp / name) for name in WEIGHT_FILES}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    _replace_dir(tmp, final)
    return final


def _replace_dir(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; an old ``dst`` is moved aside first and deleted after (two renames, no copy)."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}-old-{os.getpid()}")
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def install_weights(src: Path, dst: Path = PACKAGE_WEIGHTS) -> Path:
    """Copy a finished ``OUT/weights`` folder into the package (copied next to ``dst``, then renamed)."""
    src = Path(src)
    if not (src / "manifest.json").exists():
        raise FileNotFoundError(f"{src} has no manifest.json: not a finished weights folder")
    staging = Path(tempfile.mkdtemp(prefix=".weights-", dir=dst.parent))
    shutil.rmtree(staging)
    shutil.copytree(src, staging)
    _replace_dir(staging, dst)
    return dst


@torch.enable_grad()  # training must not depend on the caller's grad mode
def train(out: Path, cfg: TrainConfig, command: str, threads: int | None = None, progress: bool = True) -> Path:
    """The whole embedded training: classifier, diffusion model, final artefacts with manifest. Returns weights dir.
    ``threads``: torch's thread count for the run (restored afterwards)."""
    from flexiffusion.threads import num_threads

    with num_threads(threads or None):
        return _train(Path(out), cfg, command, progress)


def _train(out: Path, cfg: TrainConfig, command: str, progress: bool) -> Path:
    import diffusers
    import sklearn

    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    classifier, heldout_acc, classifier_s = stage_classifier(out, cfg, progress)
    ema, info = stage_diffusion(out, cfg, progress)
    manifest = dict(
        description="Embedded default model: class-conditional DDPM on sklearn digits (16x16x1) + digits-cnn classifier",
        command=command,
        data=dict(
            source="sklearn.datasets.load_digits (8x8, 0..16), bilinear upsampling to 16x16, scaled to [-1, 1]",
            split="train_test_split(test_size=0.2, stratify=y, random_state=0)",
            n_train=embedded_data.N_TRAIN, n_heldout=embedded_data.N_HELDOUT,
            diffusion_trained_on="train", classifier_trained_on="train",
        ),
        seeds=dict(init=cfg.seed, data_and_noise=cfg.seed + 1, classifier=cfg.seed),
        train_config=asdict(cfg),
        unet=dict(params=count_params(ema), null_class=NULL_CLASS, ema_decay=cfg.ema_decay),
        scheduler=SCHEDULER_CONFIG,
        steps=info["step"],
        training_time_s=dict(diffusion=round(info["elapsed_s"], 1),
                             classifier=None if classifier_s is None else round(classifier_s, 1)),
        final_loss=info["final_loss"],
        loss_curve=info["losses"],
        classifier_heldout_accuracy=heldout_acc,
        environment=dict(torch=torch.__version__, diffusers=diffusers.__version__, sklearn=sklearn.__version__,
                         python=platform.python_version(), threads=torch.get_num_threads(),
                         machine=platform.machine()),
        quality=None,
    )
    return write_weights(out, ema, out / "classifier.safetensors", manifest)
