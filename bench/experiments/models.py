"""The models an experiment can name: the one vocabulary of :mod:`bench.models.catalog` (loader, cost preset,
paper resolution, quality reference), and the command that fills a model's weight-dependent cells."""
from __future__ import annotations

from bench.models.catalog import MODELS, ModelEntry, get_model
from flexiffusion.errors import UserError

ModelInfo = ModelEntry

__all__ = ["MODELS", "ModelInfo", "get_model", "fill_command"]


def fill_command(experiment: str, model: str) -> str:
    """The exact command that fills the weight-dependent cells of ``experiment`` on ``model``."""
    info = get_model(model)
    hint = "" if info.shipped else f"   # PATH: {info.weights_hint}" + (
        "" if info.real else "; REAL: a folder of real images or FID statistics STATS.npz (inception-v3-compat "
                             "features: --extractor-weights FILE)")
    return f"flexbench experiment {experiment} --model {model}{weights_flags(model)}{hint}"


def default_preset(model: str) -> str:
    """The model's first search preset (Table 8's order: its highest budget), e.g. cifar10-3.0g, imagenet-40g."""
    from bench.search.presets import PRESETS

    for p in PRESETS.values():
        if p.model == model:
            return p.name
    raise UserError(f"model {model!r} has no search preset")


def weights_flags(model: str, real: bool = True) -> str:
    """What a paper model's command adds: its weights and, for quality, its real data (empty for shipped models)."""
    info = get_model(model)
    return "" if info.shipped else " --weights PATH" + (" --real REAL" if real and not info.real else "")


def command_for_model(command: str, model: str) -> str:
    """A writer's command (``flexbench search|ablation --preset P ...``) made for ``model``: a preset of another
    model becomes ``model``'s default one, and a paper model's command names its weights and real data."""
    import shlex

    from bench.search.presets import PRESETS

    words = shlex.split(command.split(", then ")[0])
    tail = command[len(command.split(", then ")[0]):]
    if "--preset" in words:
        i = words.index("--preset") + 1
        if i < len(words) and words[i] in PRESETS and PRESETS[words[i]].model != model:
            words[i] = default_preset(model)
    info = get_model(model)
    text = shlex.join(words)
    if not info.shipped and "--weights" not in words:
        real = words[1:2] != ["search"]   # a search's rFID fitness compares with the teacher, not real data
        text += weights_flags(model, real)
        tail += f"   # PATH: {info.weights_hint}" + ("; REAL: a folder of real images or FID statistics STATS.npz"
                                                       if real else "")
    return text + tail
