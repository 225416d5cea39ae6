"""Fig. 4 on a model with weights: feature similarity across the teacher's steps (bench.experiments.similarity)
for three branches (shallow, middle, deep), stored as rows (one per branch: mean number of steps > 0.9 similar;
the matrix in ``extra``)."""
from __future__ import annotations

from .models import get_model


def similarity_key(spec, model: str, store, options) -> tuple[str, bool]:
    from bench.cache import stable_hash
    from bench.models import load_model
    from bench.results import result_key
    from flexiffusion.engine import StepEngine

    from .similarity import feature_similarity

    bundle = load_model(get_model(model).name, options.weights, device=options.device)
    n = options.images or spec.images
    nb = StepEngine(bundle.unet).num_branches
    branches = sorted({1, (nb + 1) // 2, nb})
    key = result_key("fig4", model, stable_hash({"weights": bundle.weights_id, "steps": spec.teacher_steps, "n": n,
                                                 "branches": branches}))

    def rows() -> list[dict]:
        sims = feature_similarity(bundle, branches, spec.teacher_steps, n, progress=options.progress)
        return [{"experiment": "fig4", "method": f"branch {b}", "model": model, "weights": bundle.weights_id,
                 "scheduler": "ddim", "grid": spec.teacher_steps, "n_images": n, "seeds": f"0-{n - 1}",
                 "metric": "steps_above_0.9", "value": s["mean_above"],
                 "extra": {"branch": b, "above": s["above"], "matrix": s["matrix"], "threshold": 0.9}}
                for b, s in sims.items()]

    _, reused = store.get_or_put(key, rows)
    return key, reused
