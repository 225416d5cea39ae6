"""The models an experiment can name: how to load each, which cost preset prices it (bench.presets, real
architecture with random weights) and the command that fills its weight-dependent cells."""
from __future__ import annotations

from dataclasses import dataclass

from flexiffusion.errors import UserError


@dataclass(frozen=True)
class ModelInfo:
    name: str
    loader: str              # bench.models.LOADERS kind
    cost_preset: str         # bench.presets name (MACs on the real architecture, random weights)
    shipped: bool            # weights ship with the suite (nothing to download)
    weights_hint: str = ""   # what --weights must point at


MODELS = {m.name: m for m in (
    ModelInfo("embedded", "embedded", "embedded", True),
    ModelInfo("embedded-t2i", "embedded-t2i", "embedded-t2i", True),
    ModelInfo("ddpm-cifar10", "ddpm", "ddpm-cifar10", False, "a google/ddpm-cifar10-32 folder"),
    ModelInfo("ddpm-bedroom", "ddpm", "ddpm-bedroom", False, "a google/ddpm-bedroom-256 folder"),
    ModelInfo("ddpm-church", "ddpm", "ddpm-church", False, "a google/ddpm-church-256 folder"),
    ModelInfo("ldm-4-g", "ldm", "ldm-4-g", False, "a CompVis/ldm cin256-v2 diffusers folder"),
    ModelInfo("sd-v1.5", "sd", "sd-v1.5", False, "a runwayml/stable-diffusion-v1-5 folder"),
)}


def get_model(name: str) -> ModelInfo:
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    return MODELS[name]


def fill_command(experiment: str, model: str) -> str:
    """The exact command that fills the weight-dependent cells of ``experiment`` on ``model``."""
    info = get_model(model)
    weights = "" if info.shipped else f" --weights PATH   # PATH: {info.weights_hint}"
    return f"flexbench experiment {experiment} --model {model}{weights}"
