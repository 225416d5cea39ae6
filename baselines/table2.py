"""The baselines of the paper's Table 2 (and Table 6's DeepCache on DPM-Solver-3) as experiments, and their
markdown table rendered from the results store.

Rows (cheap ones first, so that a table cut short still holds them): the teacher (DDIM, ``steps`` full steps); DDIM
and AutoDiffusion at ``ad_steps`` steps (the comparison the issue asks for); PLMS and DPM-Solver orders 1-3
(multistep and singlestep) at ``small`` steps; DPM-Solver-3 and DeepCache on it (interval 2, DeepCache's branch 1 = our b 2, Table 6) at
``dpm_deepcache_steps``; DeepCache-A..D (uniform, N = 2/5/10/20) and their "+" variants in both published forms
(SD: center 15, pow 1.4; LDM: pow 1.5) at the N of ``plus``.
"""
from __future__ import annotations

from dataclasses import replace

from .autodiffusion.method import AutoDiffusionConfig
from .autodiffusion.search import EvolutionConfig
from .deepcache import PAPER_INTERVALS, DeepCacheConfig, DeepCachePlusConfig
from .registry import ORDERS, Experiment, SolverConfig, StepsConfig

# The search setting of the table's AutoDiffusion rows: the published operators and ratios, scaled down so that
# a search fits a shared 2-core CPU (population 50 -> 10, top 10 -> 3, 25 mutants -> 5, 15 crossovers -> 2,
# 10 epochs -> 3, 96 images per evaluation): about 31 evaluations per search.
TABLE_EVOLUTION = EvolutionConfig(population=10, top_k=3, mutation=5, crossover=2, m_prob=0.25, epochs=3,
                                  stage1_epochs=2, ramp_epochs=1)
TABLE_AUTODIFFUSION = AutoDiffusionConfig(search_images=96, evolution=TABLE_EVOLUTION)

# the paper's Table 2 columns, headers and formats from the one metric vocabulary (bench.results)
COLUMNS = ["nfe", "avg_macs_paper_g", "avg_macs_complete_g", "speedup_paper", "latency_s_per_image", "fid", "rfid",
           "isc", "precision", "recall", "clip_score"]


def table2_experiments(steps: int = 100, branch: int = 3, plus=("C", "D"), small=(10,), ad_steps=(4, 6, 8, 10),
                       dpm_deepcache_steps=(15,), autodiffusion: AutoDiffusionConfig = TABLE_AUTODIFFUSION
                       ) -> list[Experiment]:
    out = [Experiment("teacher", StepsConfig(steps), label=f"DDIM {steps} (teacher)")]
    for k in ad_steps:
        out.append(Experiment("ddim", StepsConfig(k), label=f"DDIM {k}"))
        out.append(Experiment("autodiffusion", replace(autodiffusion, k=k), label=f"AutoDiffusion {k}"))
    for s in small:
        out.append(Experiment("plms", StepsConfig(s), label=f"PLMS {s}"))
        for kind in ("multistep", "singlestep"):
            for order in ORDERS:
                out.append(Experiment(f"dpm-{kind}", SolverConfig(s, order),
                                      label=f"DPM-Solver-{order} {kind} {s}"))
    for s in dpm_deepcache_steps:
        out.append(Experiment("dpm-multistep", SolverConfig(s, 3), label=f"DPM-Solver-3 multistep {s}"))
        out.append(Experiment("deepcache", DeepCacheConfig(s, 2, 2, scheduler="dpm3"),
                              label=f"DeepCache N2 b2 on DPM-Solver-3 {s}"))
    for letter, n in PAPER_INTERVALS.items():
        out.append(Experiment("deepcache", DeepCacheConfig(steps, n, branch), label=f"DeepCache-{letter}"))
    for letter in plus:
        n = PAPER_INTERVALS[letter]
        out.append(Experiment("deepcache-plus", DeepCachePlusConfig(steps, n, branch, "sd"),
                              label=f"DeepCache-{letter}+ (sd)"))
        out.append(Experiment("deepcache-plus", DeepCachePlusConfig(steps, n, branch, "ldm"),
                              label=f"DeepCache-{letter}+ (ldm)"))
    return out


def render_markdown(records: list[dict]) -> str:
    """A markdown table of flat records (the row harness's ``as_record``), the paper's Table 2 columns."""
    from bench.results import fmt, header

    cols = [c for c in COLUMNS if any(c in r for r in records)]
    lines = ["| method | " + " | ".join(header(c) for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for r in records:
        cells = [fmt(c, r[c]) if c in r else "" for c in cols]
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
