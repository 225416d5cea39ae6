"""Loading the shipped text-to-image model (U-Net, scheduler config, conditioning encoder, scoring CLIP) with sha256
verification; a missing or corrupted file is a UserError naming it and the retrain command."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bench.embedded.loader import check_files, read_manifest
from flexiffusion.errors import UserError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
RETRAIN_COMMAND = "flexbench embedded-train --model embedded-t2i --out runs/embedded-t2i --install"


@dataclass
class T2IModel:
    unet: "object"            # diffusers UNet2DConditionModel, eval
    scheduler_config: dict
    text_encoder: "object"    # .text_encoder.TextEncoder, eval, frozen
    manifest: dict
    path: Path

    @property
    def clip_weights(self) -> Path:
        return self.path / "clip.safetensors"


def _fail(path: Path, problem: str) -> UserError:
    return UserError(f"embedded-t2i weights file {path} {problem}; retrain it with: {RETRAIN_COMMAND}")


def verify_weights(weights_dir: Path | None = None) -> dict:
    """Every file of the manifest exists with its recorded sha256; returns the manifest."""
    weights_dir = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    try:
        manifest = read_manifest(weights_dir)
    except UserError:
        raise _fail(weights_dir / "manifest.json", "is missing, unreadable or lists no files") from None
    return check_files(weights_dir, manifest, _fail)


def _load(path: Path, fn):
    if not path.is_file():
        raise _fail(path, "is missing")
    try:
        return fn(path)
    except Exception as exc:  # safetensors / state-dict / config errors: a broken file, say which
        raise _fail(path, f"cannot be loaded ({type(exc).__name__}: {exc})") from None


def load_t2i(weights_dir: Path | None = None, verify: bool = True) -> T2IModel:
    from diffusers import UNet2DConditionModel

    from bench.embedded.t2i.train import load_text_encoder_file

    weights_dir = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    manifest = verify_weights(weights_dir) if verify else read_manifest(weights_dir)
    _load(weights_dir / "unet" / "config.json", lambda p: json.loads(p.read_text()))
    unet = _load(weights_dir / "unet" / "diffusion_pytorch_model.safetensors", lambda p: UNet2DConditionModel.
                 from_pretrained(str(p.parent), local_files_only=True, use_safetensors=True))
    scheduler_config = _load(weights_dir / "scheduler" / "scheduler_config.json", lambda p: json.loads(p.read_text()))
    encoder = _load(weights_dir / "text_encoder.safetensors", load_text_encoder_file)
    return T2IModel(unet.eval(), scheduler_config, encoder, manifest, weights_dir)
