"""Step engine: full / partial(b) steps on an unmodified diffusers U-Net through diffusers hooks (DeepCache-style
feature reuse, Ma et al. 2024; the *partial* step of Flexiffusion, section 3).

Branch numbering (1-based).  The down path of a diffusers ``UNet2DModel`` / ``UNet2DConditionModel`` produces its
skip tensors in this order: 1 = ``conv_in`` output, then, block by block, each resnet(+attention) output and
each downsampler output.  Up blocks pop skips from the end, so the flattened up-resnet ``j`` (0-based) consumes
skip ``B - j``.

A partial step at branch ``b`` computes skips ``1..b`` and the up path from the consumer of skip ``b`` onwards;
the rest (deeper down path, mid block, deeper up path) returns what it returned during the last full step of the
same cache context.  This equals DeepCache's ``DeepCacheSDHelper`` with ``cache_branch_id = b - 1`` and its DDPM
research code's ``--branch b - 1`` (both number three skips per down block: ``baselines.deepcache.engine_branch``).

Only outputs that a later partial step will need are kept: the sampler tells each full step which branches follow.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from diffusers.hooks import HookRegistry, ModelHook

from .errors import UserError
from .schedule import FULL, NULL, PARTIAL, Step

HOOK_NAME = "flexiffusion_step_engine"


@dataclass(frozen=True)
class Branch:
    """Skip tensor ``index`` (1-based): which down module produces it and which up resnet consumes it."""

    index: int
    producer: str  # module key, e.g. "conv_in", "down.0.resnets.1", "down.0.downsamplers.0"
    consumer: str  # up resnet key, e.g. "up.3.resnets.2"


class _SkipHook(ModelHook):
    """Replaces a module's forward by the engine's decision: run it (and maybe cache its output) or reuse."""

    def __init__(self, engine: "StepEngine", key: str):
        super().__init__()
        self.engine, self.key = engine, key

    def new_forward(self, module, *args, **kwargs):
        return self.engine._call(self.key, self.fn_ref.original_forward, args, kwargs)


def _down_layout(unet):
    """Per down block: the keys of its skip producers in order, with the attention key paired to each resnet."""
    layout = []
    for d, block in enumerate(unet.down_blocks):
        if hasattr(block, "skip_conv"):
            raise UserError(f"down block {d} ({type(block).__name__}) has a skip_conv path (score-SDE U-Net): "
                            "the step engine supports standard DDPM/LDM/SD U-Nets only")
        attns = getattr(block, "attentions", None) or []
        producers = []
        for k, _ in enumerate(block.resnets):
            group = [f"down.{d}.resnets.{k}"] + ([f"down.{d}.attentions.{k}"] if k < len(attns) else [])
            producers.append(group)
        for k, _ in enumerate(getattr(block, "downsamplers", None) or []):
            producers.append([f"down.{d}.downsamplers.{k}"])
        layout.append(producers)
    return layout


def _up_layout(unet):
    """Per up block: the keys of each resnet(+attention) and the upsampler keys."""
    layout = []
    for u, block in enumerate(unet.up_blocks):
        attns = getattr(block, "attentions", None) or []
        resnets = [[f"up.{u}.resnets.{k}"] + ([f"up.{u}.attentions.{k}"] if k < len(attns) else [])
                   for k, _ in enumerate(block.resnets)]
        ups = [f"up.{u}.upsamplers.{k}" for k, _ in enumerate(getattr(block, "upsamplers", None) or [])]
        layout.append((resnets, ups))
    return layout


def _module(unet, key: str) -> torch.nn.Module:
    head, _, rest = key.partition(".")
    name = {"down": "down_blocks", "up": "up_blocks", "mid": "mid_block"}[head]
    return unet.get_submodule(f"{name}.{rest}" if rest else name)


class StepEngine:
    """Runs a diffusers U-Net as full or partial(b) steps; attach with :meth:`attach`, remove with :meth:`detach`.

    Outside ``with engine.step(...)`` the U-Net behaves natively.  Each cache context (e.g. the conditional and
    unconditional passes of classifier-free guidance run separately) keeps its own cache.
    """

    def __init__(self, unet: torch.nn.Module):
        for attr in ("conv_in", "down_blocks", "mid_block", "up_blocks"):
            if getattr(unet, attr, None) is None:
                raise UserError(f"{type(unet).__name__} has no {attr}: the step engine needs a diffusers U-Net "
                                "(UNet2DModel or UNet2DConditionModel)")
        self.unet = unet
        down, up = _down_layout(unet), _up_layout(unet)
        self.branches = self._number_branches(down, up)
        self._skips = {b.index: self._skip_set(b.index, down, up) for b in self.branches}
        self._all_keys = frozenset().union(*self._skips.values())
        self._mode: Step | None = None
        self._keep: frozenset[str] = frozenset()
        self._context = "default"
        self._caches: dict[str, dict[str, object]] = {}
        self._hooked: list[torch.nn.Module] = []

    # ---- structure ----------------------------------------------------------------------------------
    @staticmethod
    def _number_branches(down, up) -> tuple[Branch, ...]:
        producers = ["conv_in"] + [group[-1] for block in down for group in block]
        consumers = [group[0] for resnets, _ in up for group in resnets]
        if len(producers) != len(consumers):
            raise UserError(f"U-Net has {len(producers)} skip tensors but {len(consumers)} up resnets consuming them:"
                            " unsupported layout")
        n = len(producers)
        return tuple(Branch(i, producers[i - 1], consumers[n - i]) for i in range(1, n + 1))

    @staticmethod
    def _skip_set(b: int, down, up) -> frozenset[str]:
        """Module keys whose forward a partial step at branch ``b`` replaces by the cached output."""
        skipped, index = set(), 1  # index of the next skip tensor (conv_in is 1)
        for d, block in enumerate(down):
            first = index + 1
            if first > b:  # the whole block lies below branch b
                skipped.add(f"down.{d}")
            else:
                for i, group in enumerate(block):
                    if first + i > b:
                        skipped.update(group)
            index += len(block)
        skipped.add("mid")
        n, j = index, 0  # j: flattened up-resnet index; resnet j consumes skip n - j
        for u, (resnets, ups) in enumerate(up):
            computed = [n - (j + k) <= b for k in range(len(resnets))]
            if not any(computed):
                skipped.add(f"up.{u}")
            else:
                for group, comp in zip(resnets, computed):
                    if not comp:
                        skipped.update(group)
            j += len(resnets)
        return frozenset(skipped)

    @property
    def num_branches(self) -> int:
        return len(self.branches)

    # ---- attach / detach ----------------------------------------------------------------------------
    @classmethod
    def attach(cls, unet: torch.nn.Module) -> "StepEngine":
        engine = cls(unet)
        for key in sorted(engine._all_keys):
            module = _module(unet, key)
            registry = HookRegistry.check_if_exists_or_initialize(module)
            if registry.get_hook(HOOK_NAME) is not None:
                raise UserError(f"a step engine is already attached to this U-Net ({key}): detach it first")
            registry.register_hook(_SkipHook(engine, key), HOOK_NAME)
            engine._hooked.append(module)
        return engine

    def detach(self) -> None:
        """Remove every hook: the U-Net's forward is exactly the original again."""
        for module in self._hooked:
            registry = module._diffusers_hook
            registry.remove_hook(HOOK_NAME, recurse=False)
            if not registry.hooks:
                del module._diffusers_hook
        self._hooked.clear()
        self.reset()

    def reset(self) -> None:
        """Forget every cache (start of a new batch)."""
        self._caches.clear()

    # ---- stepping -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def step(self, step: Step, keep: frozenset[int] | None = None):
        """Run the U-Net call(s) inside as ``step``.  A full step keeps the outputs needed by partial steps at
        branches ``keep`` (all branches when None)."""
        if step.kind == NULL:
            raise UserError("a null step evaluates no network: the sampler must not call the U-Net for it")
        if step.kind == PARTIAL and not 1 <= step.branch <= self.num_branches:
            raise UserError(f"branch {step.branch} out of range: this U-Net has branches 1..{self.num_branches}")
        if step.kind == FULL:
            self._keep = self._all_keys if keep is None else frozenset().union(
                *(self._skips[b] for b in keep if b in self._skips))
        self._mode = step
        try:
            yield self
        finally:
            self._mode = None

    @contextlib.contextmanager
    def context(self, name: str):
        """Use the cache of context ``name`` (e.g. "cond" / "uncond") for the calls inside."""
        previous, self._context = self._context, name
        try:
            yield self
        finally:
            self._context = previous

    def _call(self, key, original, args, kwargs):
        mode = self._mode
        if mode is None:
            return original(*args, **kwargs)
        if mode.kind == FULL:
            out = original(*args, **kwargs)
            if key in self._keep:
                self._caches.setdefault(self._context, {})[key] = out
            return out
        if key not in self._skips[mode.branch]:
            return original(*args, **kwargs)
        try:
            return self._caches[self._context][key]
        except KeyError:
            raise UserError(
                f"partial step at branch {mode.branch} without a cache (context {self._context!r}): a partial step "
                "must follow a full step that kept this branch") from None

    # ---- state capture ------------------------------------------------------------------------------
    def cache_state(self) -> dict[str, dict[str, object]]:
        """The cached features of every context (tensors are shared, never modified in place)."""
        return {ctx: dict(cache) for ctx, cache in self._caches.items()}

    def load_cache_state(self, state: dict[str, dict[str, object]]) -> None:
        self._caches = {ctx: dict(cache) for ctx, cache in state.items()}
