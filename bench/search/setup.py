"""A search's parts from a preset and command-line style overrides: the space, its cost model and budget, and the
Algorithm 1 configuration (B.2 defaults, then the preset's, then explicit overrides)."""
from __future__ import annotations

from dataclasses import fields

from flexiffusion.errors import UserError
from flexiffusion.search.evolution import EvolutionConfig
from flexiffusion.search.space import SearchSpace

G = 1e9
B2_DEFAULTS = EvolutionConfig()


def _ints(text: str | None, what: str):
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"malformed {what} choices {text!r}: use comma-separated integers, e.g. 1,2,3") from None


def check_model(preset, model: str | None) -> None:
    """Bad input unless ``model`` (when given) is a name of the vocabulary and the one ``preset`` is made for."""
    if not model:
        return
    from bench.models.catalog import get_model

    get_model(model)   # a name outside the vocabulary: one line listing it
    if model != preset.model:
        raise UserError(f"preset {preset.name} is made for the {preset.model} model ({preset.source}), not "
                        f"{model}: choose an {model} preset (flexbench search --help lists them)")


def space_of(preset, *, layout: str = "tile", segments=None, branches=None, intervals=None,
             budget_g: float | None = None, model: str | None = None):
    """The preset's space (choices overridable: tuples of ints, or comma-separated text as typed) and its cost
    model (paper convention, cached MACs table) and budget (avg MACs; ``budget_g`` in G overrides the preset's)."""
    from bench.cost.schedule_cost import CostModel
    from flexiffusion.schedulers import grid_length

    check_model(preset, model)
    cost = CostModel.for_preset(preset.cost_preset)
    choices = {k: _ints(v, k) if isinstance(v, str) else v
               for k, v in (("segments", segments), ("branches", branches), ("intervals", intervals))}
    space = SearchSpace(choices["segments"] if choices["segments"] is not None else preset.segments,
                        choices["branches"] if choices["branches"] is not None else preset.branches,
                        choices["intervals"] if choices["intervals"] is not None else preset.intervals,
                        cost.num_branches, grid_length(preset.scheduler, preset.steps), layout=layout,
                        solver=preset.solver)
    budget = budget_g * G if budget_g is not None else preset.budget(cost.full_macs)
    return space, cost, budget


def search_config(preset, **overrides) -> EvolutionConfig:
    """Algorithm 1's settings: B.2's defaults, then the preset's, then ``overrides`` that are not None."""
    values = {**B2_DEFAULTS.to_dict(), **preset.search}
    names = {f.name for f in fields(EvolutionConfig)}
    values.update({k: v for k, v in overrides.items() if k in names and v is not None})
    return EvolutionConfig(**values)


def text_condition(bundle, n_images: int, prompts_file: str | None = None,
                   guidance: float | None = None) -> tuple[tuple[str, ...], float | None]:
    """``(prompts, guidance)`` of a setting on ``bundle``: for a text-to-image model one prompt per image (the lines
    of ``prompts_file`` cycled over the images, else :func:`bench.embedded.t2i.captions.digit_prompts`) and its
    default classifier-free guidance (``guidance`` overrides it); ``((), guidance)`` for other models.  Searches and
    experiment rows both take their prompts and guidance from here."""
    if bundle.conditioning != "text":
        if prompts_file:
            raise UserError(f"--prompts given, but the {bundle.name} model takes no text: drop --prompts")
        return (), guidance
    if prompts_file:
        from bench.quality.reference import read_prompts_file

        lines = read_prompts_file(prompts_file)
        prompts = tuple(lines[i % len(lines)] for i in range(n_images))
    else:
        from bench.embedded.t2i.captions import digit_prompts

        prompts = digit_prompts(n_images)
    if guidance is None:
        guidance = (bundle.extras.get("default_sampler") or {}).get("guidance_scale")
    return prompts, guidance
