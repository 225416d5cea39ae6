"""Search presets: every row of the paper's Table 8 (framework, dataset, budget), the DPM-Solver space of appendix
E.2, and the embedded model's presets.

A preset names the model it is made for (a name of the model vocabulary, :mod:`bench.models.catalog`), the cost
preset whose MACs table prices it (:mod:`bench.presets`), the teacher's sampler and base grid, the space (S, B, I)
and the budget: ``budget_g`` (maximum avg MACs in G, paper convention: fvcore, batch 1, attention matmuls not
counted) or ``budget_fraction`` (of the teacher's avg MACs = one full step).

Samplers and grids follow Sec. 5: DDPM 100-step DDIM (Table 2), LDM 250-step DDIM (Table 1), SD 50-step PLMS
(Table 3), CIFAR-10 DPM-Solver (E.2: teacher DPM-Solver-3 on 54 steps).
Embedded presets: 100-step DDIM like CIFAR-10, the CIFAR-10 space's branch choices (the embedded U-Net's branches
1-3 cost .084/.215/.375 of a full step, CIFAR's .079/.206/.360), N-segment 30-32 so that every budget binds, and
budgets at 50 / 41 / 33 % of the teacher (CIFAR-10's 3.0 / 2.5 / 2.0 G of 6.1 G); they evaluate fewer images and
run fewer iterations than B.2 so that a search finishes in minutes on 2 CPU cores (stated in ``search``);
``embedded-demo`` is embedded-50 cut to the main job's short search (48 images, 8 initial, 3 iterations).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from flexiffusion.errors import UserError

G = 1e9


@dataclass(frozen=True)
class SearchPreset:
    name: str
    model: str                      # a name of the model vocabulary (bench.models.catalog)
    weights: str | None             # its default weights (hub id / folder); None: the loader's default
    cost_preset: str                # bench.presets name of the architecture
    dataset: str
    scheduler: str                  # the teacher's sampler (flexiffusion.schedulers registry)
    steps: int                      # the teacher's base grid T
    segments: tuple[int, ...]
    branches: tuple[int, ...]
    intervals: tuple[int, ...]
    budget_g: float | None = None
    budget_fraction: float | None = None
    solver: str = "ddim"            # "dpm": appendix E.2's variant
    images: int = 1000              # images per candidate (B.2)
    source: str = ""
    search: dict = field(default_factory=dict)   # EvolutionConfig overrides of this preset

    def budget(self, full_macs: float) -> float:
        """The budget in MACs (avg over the teacher's grid) for a model whose full step costs ``full_macs``."""
        return self.budget_g * G if self.budget_g is not None else self.budget_fraction * full_macs

    @property
    def budget_label(self) -> str:
        if self.budget_g is not None:
            return f"{self.budget_g:g} G"
        return f"{100 * self.budget_fraction:g} % of the teacher"


PRESETS: dict[str, SearchPreset] = {}


def _add(p: SearchPreset) -> None:
    if p.name in PRESETS:
        raise ValueError(f"search preset {p.name!r} defined twice")
    PRESETS[p.name] = p


_DDPM = {"cifar10": ("ddpm-cifar10", "google/ddpm-cifar10-32", "ddpm-cifar10"),
         "bedroom": ("ddpm-bedroom", "google/ddpm-bedroom-256", "ddpm-bedroom"),
         "church": ("ddpm-church", "google/ddpm-church-256", "ddpm-church")}
for _budget in (3.0, 2.5, 2.0):
    _add(SearchPreset(f"cifar10-{_budget:.1f}g", *_DDPM["cifar10"], "CIFAR-10", "ddim", 100, (19, 20, 21), (1, 2, 3),
                      (1, 2, 3), budget_g=_budget, source="Table 8, DDPM CIFAR-10"))
for _data in ("bedroom", "church"):
    for _budget, _segs in ((110, (27, 28, 29)), (100, (21, 22, 23)), (90, (19, 21, 22))):
        _add(SearchPreset(f"{_data}-{_budget}g", *_DDPM[_data], f"LSUN {_data.title()}", "ddim", 100, _segs,
                          (1, 3, 6), (2, 3), budget_g=_budget, source=f"Table 8, DDPM LSUN {_data.title()}"))
for _budget, _segs in ((40, (59, 60, 61)), (16, (29, 30, 31)), (10, (14, 15, 16)), (6, (9, 10, 11))):
    _add(SearchPreset(f"imagenet-{_budget}g", "ldm-4-g", None, "ldm-4-g", "ImageNet", "ddim", 250, _segs, (1, 3, 6),
                      (2, 3), budget_g=_budget, source="Table 8, LDM-4-G ImageNet"))
for _data, _label, _images in (("parti", "Parti-Prompts", 250), ("coco", "MS-COCO", 500)):
    for _budget, _segs in ((90, (9, 10, 11)), (80, (8, 9, 10)), (70, (7, 8, 9))):
        _add(SearchPreset(f"{_data}-{_budget}g", "sd-v1.5", None, "sd-v1.5", _label, "plms", 50, _segs, (1, 3, 6), (2, 3),
                          budget_g=_budget, images=_images, source=f"Table 8, Stable Diffusion v1.5 {_label}"))
# E.2: N-segment {18}, branch {1..6, 12} (12 = the U-Net's last branch = "full"), interval = solver order {1, 2, 3}.
# Teacher: DPM-Solver-3 on 54 steps (= the space's dearest candidate, 18 all-full third-order segments).  Table 6's
# budgets cannot be met by 18 segments (>= 18 evaluations; its Flexiffusion rows have NFE 8-12); the budget keeps its
# heaviest row's ratio to DPM-Solver-3, 70.87 G / 90.97 G.
_add(SearchPreset("cifar10-dpm", *_DDPM["cifar10"], "CIFAR-10", "dpms3", 54, (18,), (1, 2, 3, 4, 5, 6, 12),
                  (1, 2, 3), budget_fraction=70.87 / 90.97, solver="dpm",
                  source="Appendix E.2 / Table 6, DDPM CIFAR-10 with DPM-Solver"))

EMBEDDED_SEARCH = {"iterations": 15, "parents": 8, "children": 5, "population": 100, "initial": 16}
for _pct in (50, 41, 33):
    _add(SearchPreset(f"embedded-{_pct}", "embedded", None, "embedded", "sklearn digits 16x16", "ddim", 100,
                      (30, 31, 32), (1, 2, 3), (1, 2, 3), budget_fraction=_pct / 100, images=128,
                      source=f"embedded model, {_pct} % of the teacher (cf. CIFAR-10's 3.0/2.5/2.0 G of 6.1 G)",
                      search=dict(EMBEDDED_SEARCH)))
# The main job's short search (flexbench demo): embedded-50's space and budget, 48 images per candidate, a small
# initial population and 3 iterations, so that it takes about a minute on 2 CPU cores.
DEMO_SEARCH = {"iterations": 3, "parents": 3, "children": 2, "population": 20, "initial": 8}
_add(SearchPreset("embedded-demo", "embedded", None, "embedded", "sklearn digits 16x16", "ddim", 100, (30, 31, 32),
                  (1, 2, 3), (1, 2, 3), budget_fraction=0.5, images=48,
                  source="embedded model, 50 % of the teacher, short search of the main job (flexbench demo)",
                  search=dict(DEMO_SEARCH)))

# The embedded text-to-image model in the place of SD v1.5 (Table 3): parti-90g's space and budget ratio (50-step
# PLMS teacher, N-segment 9-11, interval 2-3, 90 G of SD's 338.76 G = 26.6 %), SD's branches 1/3/6 of 12 as 1/2/3
# of the embedded U-Net's 6; prompts "a handwritten <digit>" and the model's default guidance (flexbench search
# --prompts / --guidance), 64 images per candidate, a short search.
T2I_SEARCH = {"iterations": 10, "parents": 8, "children": 5, "population": 100, "initial": 16}
_add(SearchPreset("embedded-t2i-27", "embedded-t2i", None, "embedded-t2i", "digits captions", "plms", 50, (9, 10, 11),
                  (1, 2, 3), (2, 3), budget_fraction=90 / 338.76, images=64,
                  source="embedded text-to-image model, parti-90g's budget ratio (26.6 % of the teacher)",
                  search=dict(T2I_SEARCH)))


def get_preset(name: str) -> SearchPreset:
    if name not in PRESETS:
        raise UserError(f"unknown search preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def describe() -> str:
    """One line per preset (for ``--help``)."""
    return "\n".join(f"  {p.name:15s} {p.model:8s} {p.scheduler}-{p.steps:<4d} S={','.join(map(str, p.segments))} "
                     f"B={','.join(map(str, p.branches))} I={','.join(map(str, p.intervals))}  budget {p.budget_label}"
                     for p in PRESETS.values())
