"""MACs of baseline variants counted with fvcore on the model as it runs (bench.cost's handles and conventions):
step types with ToMe applied (per ratio), and per-module counts for AutoDiffusion's dropped layers.

Conventions as in :mod:`bench.cost.macs`: ``paper`` = fvcore's default at batch 1 (attention matmuls not counted),
``complete`` = with attention, doubled under classifier-free guidance.  Inputs: one sample of the bundle's shape at
t = 500, class label 0 or a (1, context length, cross_attention_dim) text context (the length the bundle's
prompt encoder produces; 77 without one).
"""
from __future__ import annotations

import warnings

import torch

from bench.cost.macs import COMPLETE, PAPER, count_call, sdpa_handle
from bench.cost.schedule_cost import CostModel
from flexiffusion.engine import StepEngine
from flexiffusion.schedule import Step

from .autodiffusion.candidate import Candidate
from .tome import ToMeConfig, apply_tome, remove_tome


def example_inputs(bundle) -> tuple[torch.Tensor, torch.Tensor, dict]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn((1, *bundle.sample_shape), generator=g).to(bundle.device)
    t = torch.tensor(500, device=bundle.device)
    if bundle.conditioning == "class":   # the model's own adapter (class labels, or LDM-4-G's one class token)
        labels = torch.zeros(1, dtype=torch.long, device=bundle.device)
        return x, t, bundle.denoiser().unet_kwargs(labels, x, False)
    if bundle.conditioning == "text":   # the model's own context length (SD: 77 tokens, embedded-t2i: 20)
        dim = bundle.unet.config.cross_attention_dim
        length = bundle.encode_prompts([""])["prompt_embeds"].shape[1] if bundle.encode_prompts else 77
        return x, t, {"encoder_hidden_states": torch.randn((1, length, dim), generator=g).to(bundle.device)}
    return x, t, {}


def step_counts(unet, inputs, branches) -> dict:
    """``{"full": OpCount, b: OpCount}`` through the step engine (``__call__``, so forward pre-hooks such as ToMe's
    run while tracing)."""
    x, t, kwargs = inputs
    engine = StepEngine.attach(unet)
    out = {}
    try:
        for step in [Step.full()] + [Step.partial(b) for b in sorted(branches)]:
            with torch.no_grad(), engine.step(step):
                out["full" if step.kind == "full" else step.branch] = count_call(
                    unet, (x, t), kwargs, method="__call__", static={"return_dict": False})
    finally:
        engine.detach()
    return out


def cost_models(bundle, guided: bool = False, tome: ToMeConfig | None = None, branches=None) -> dict:
    """``{"paper": CostModel, "complete": CostModel}`` of the bundle's U-Net (with ToMe applied when given); partial
    steps counted for ``branches`` (default: all), others priced as full."""
    unet = bundle.unet
    num = StepEngine(unet).num_branches
    branches = range(1, num + 1) if branches is None else branches
    if tome is not None:
        apply_tome(unet, tome)
    try:
        counts = step_counts(unet, example_inputs(bundle), branches)
    finally:
        if tome is not None:
            remove_tome(unet)
    models = {}
    for conv in (PAPER, COMPLETE):
        def value(c):
            return c.paper if conv == PAPER else c.complete * (2 if guided else 1)
        full = value(counts["full"])
        steps = [0] + [value(counts[b]) if b in counts else full for b in range(1, num + 1)] + [full]
        models[conv] = CostModel(steps, f"{bundle.name}{'+tome' if tome else ''}", conv)
    return models


_BUNDLE_COSTS: dict = {}


def bundle_cost_models(bundle, tome: ToMeConfig | None = None, guided: bool = False) -> dict:
    """:func:`cost_models` of every branch, counted once per process for a model (name, weights, architecture,
    sample shape), ToMe setting and guidance: the counts depend on shapes, not on the weights' values."""
    import json

    arch = json.dumps(dict(getattr(bundle.unet, "config", {})), sort_keys=True, default=str)
    key = (bundle.name, bundle.weights_id, arch, tuple(bundle.sample_shape), bundle.conditioning, tome, guided)
    if key not in _BUNDLE_COSTS:
        _BUNDLE_COSTS[key] = cost_models(bundle, guided, tome)
    return _BUNDLE_COSTS[key]


def module_counts(unet, inputs, names) -> dict[str, tuple[int, int]]:
    """(paper, complete) MACs of each named module in one full forward (fvcore ``by_module``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    x, t, kwargs = inputs

    class Front(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = unet

        def forward(self, x, t, *values):
            return self.unet(x, t, **dict(zip(kwargs, values)), return_dict=False)[0]

    with torch.no_grad():
        fa = FlopCountAnalysis(Front(), (x, t, *kwargs.values()))
        fa.set_op_handle("aten::scaled_dot_product_attention", sdpa_handle)
        fa.unsupported_ops_warnings(False)
        fa.uncalled_modules_warnings(False)
        fa.tracer_warnings("none")
        by_module = fa.by_module_and_operator()
    out = {}
    for name in list(names) + [""]:
        ops = by_module.get(f"unet.{name}" if name else "unet", {})
        total = int(sum(ops.values()))
        out[name] = (total - int(ops.get("attention", 0)), total)
    return out


class DropCost:
    """Paper/complete MACs of AutoDiffusion candidates from per-module counts: a step costs the full U-Net minus
    each dropped layer plus what the dropped layer still runs (a resnet's shortcut conv)."""

    def __init__(self, unet, inputs, layer_names):
        self.names = tuple(layer_names)
        shortcuts = [f"{n}.conv_shortcut" for n in self.names if getattr(unet.get_submodule(n), "conv_shortcut", None)
                     is not None]
        counts = module_counts(unet, inputs, self.names + tuple(shortcuts))
        self.full = counts[""]
        self.saved = []
        for n in self.names:
            keep = counts.get(f"{n}.conv_shortcut", (0, 0))
            self.saved.append(tuple(counts[n][i] - keep[i] for i in range(2)))

    def step(self, dropped, convention: str = PAPER) -> int:
        i = 0 if convention == PAPER else 1
        return self.full[i] - sum(self.saved[j][i] for j in dropped)

    def total(self, candidate: Candidate, convention: str = PAPER) -> int:
        return sum(self.step(d, convention) for d in candidate.drops)
