"""Fig. 4's measurement: cosine similarity of the feature map a partial step at branch ``b`` would reuse (the
hidden state entering the consumer of skip ``b``, flexiffusion.engine's read key) between every pair of steps of
the all-full teacher, averaged over images; and per step the number of steps whose map is > ``threshold`` similar."""
from __future__ import annotations

import torch

from flexiffusion.engine import StepEngine
from flexiffusion.schedule import Plan


def _module(unet, key: str):
    head, _, rest = key.partition(".")
    name = {"down": "down_blocks", "up": "up_blocks", "mid": "mid_block"}[head]
    return unet.get_submodule(f"{name}.{rest}" if rest else name)


def feature_similarity(bundle, branches, steps: int = 100, n_images: int = 16, threshold: float = 0.9,
                       progress: bool = False) -> dict:
    """``{b: {"matrix": steps x steps list, "above": [count per step], "mean_above": float}}``."""
    from bench.generate import generate_latents

    engine = StepEngine(bundle.unet)
    seen: dict[int, list[torch.Tensor]] = {b: [] for b in branches}
    handles = []
    for b in branches:
        def hook(module, args, out, b=b):
            t = out[0] if isinstance(out, tuple) else out
            seen[b].append(t.detach().flatten(1).float())
        handles.append(_module(bundle.unet, engine.read_key(b)).register_forward_hook(hook))
    try:
        generate_latents(bundle, Plan.full(steps, f"teacher-{steps}"), list(range(n_images)), batch_size=n_images,
                         progress=progress)
    finally:
        for h in handles:
            h.remove()
    out = {}
    for b, maps in seen.items():
        x = torch.nn.functional.normalize(torch.stack(maps), dim=2)       # steps x images x features
        sim = torch.einsum("sid,tid->st", x, x) / x.shape[1]
        above = ((sim > threshold).sum(dim=1) - 1).tolist()               # other steps, not the step itself
        out[b] = {"matrix": sim.tolist(), "above": above, "mean_above": float(sum(above) / len(above))}
    return out
