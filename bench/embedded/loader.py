"""Loading the shipped embedded model (U-Net, scheduler config, classifier) with sha256 verification."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from flexiffusion.errors import UserError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
RETRAIN_COMMAND = "flexbench embedded-train --out runs/embedded --install"


@dataclass
class EmbeddedModel:
    unet: "object"  # diffusers UNet2DModel, eval mode
    scheduler_config: dict
    classifier: "object"  # bench.embedded.classifier.DigitClassifier, eval mode
    manifest: dict
    path: Path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fail(path: Path, problem: str) -> UserError:
    return UserError(f"embedded weights file {path} {problem}; retrain it with: {RETRAIN_COMMAND}")


def read_manifest(weights_dir: Path | None = None) -> dict:
    weights_dir = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    path = weights_dir / "manifest.json"
    if not path.is_file():
        raise _fail(path, "is missing")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise _fail(path, f"is unreadable ({exc})") from None
    if not isinstance(manifest.get("files"), dict) or not manifest["files"]:
        raise _fail(path, "lists no weight files")
    return manifest


UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


def unet_weights_digest(manifest: dict) -> str:
    """The sha256 of the U-Net's weights file as the manifest records it (:func:`verify_weights` checks it against
    the file, so a verified load never hashes the weights twice)."""
    try:
        return manifest["files"][UNET_WEIGHTS]
    except KeyError:
        raise UserError(f"manifest.json lists no {UNET_WEIGHTS}; retrain with: {RETRAIN_COMMAND}") from None


def verify_weights(weights_dir: Path | None = None) -> dict:
    """Check every file of the manifest exists and has its recorded sha256; returns the manifest."""
    weights_dir = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    return check_files(weights_dir, read_manifest(weights_dir))


def check_files(weights_dir: Path, manifest: dict, fail=_fail) -> dict:
    """Every file the manifest lists exists under ``weights_dir`` with its recorded sha256 (``fail(path, problem)``
    builds the error naming the file and its retrain command); returns the manifest."""
    for name, digest in manifest["files"].items():
        path = weights_dir / name
        if not path.is_file():
            raise fail(path, "is missing")
        if sha256_file(path) != digest:
            raise fail(path, "is corrupted (sha256 differs from manifest.json)")
    return manifest


def load_classifier(weights_dir: Path | None = None, verify: bool = False):
    """The shipped digit classifier (eval mode)."""
    from bench.embedded.classifier import load_classifier_weights

    weights_dir = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    if verify:
        verify_weights(weights_dir)
    path = weights_dir / "classifier.safetensors"
    if not path.is_file():
        raise _fail(path, "is missing")
    try:
        return load_classifier_weights(path)
    except Exception as exc:  # safetensors / state-dict errors: a broken file, say which
        raise _fail(path, f"cannot be loaded ({type(exc).__name__}: {exc})") from None


def load_embedded(verify: bool = True, weights_dir: Path | None = None) -> EmbeddedModel:
    """The embedded model: U-Net (eval), scheduler config (dict), classifier (eval), manifest; offline only."""
    from diffusers import UNet2DModel

    weights_dir = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    manifest = verify_weights(weights_dir) if verify else read_manifest(weights_dir)
    unet_dir = weights_dir / "unet"
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):
        if not (unet_dir / name).is_file():
            raise _fail(unet_dir / name, "is missing")
    try:
        unet = UNet2DModel.from_pretrained(str(unet_dir), local_files_only=True, use_safetensors=True)
    except Exception as exc:
        raise _fail(unet_dir / "diffusion_pytorch_model.safetensors",
                    f"cannot be loaded ({type(exc).__name__}: {exc})") from None
    sched_path = weights_dir / "scheduler" / "scheduler_config.json"
    try:
        scheduler_config = json.loads(sched_path.read_text())
    except (OSError, ValueError):
        raise _fail(sched_path, "is missing or unreadable") from None
    classifier = load_classifier(weights_dir)
    return EmbeddedModel(unet=unet.eval(), scheduler_config=scheduler_config, classifier=classifier,
                         manifest=manifest, path=weights_dir)
