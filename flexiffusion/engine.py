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

What a full step stores.  Of the skipped modules' outputs a partial step at ``b`` reads one value: the hidden state
entering the consumer of skip ``b`` (the output of the up-path module just before it, or of the mid block for the
deepest branch).  The other skipped outputs only flow into skipped modules, which ignore them; they keep their
batch and spatial sizes (``torch.cat`` of the skipped up resnets checks them), not their channels or values.  So a full step keeps, for each
branch ``b`` it is told to keep, that one tensor, and an empty stand-in (no channels, same batch and spatial sizes)
for each other skipped output (``StepEngineConfig(minimal_cache=False)`` keeps every skipped output, for comparison).
A full step replaces the whole cache: features of branches it was not told to keep are dropped, and a partial step
at such a branch fails with a clear error instead of reading features of an older step.

The four parts of a diffusers cache hook (``diffusers.hooks``): :class:`StepEngineConfig`, a
:class:`StepCacheState` per cache context (held by a diffusers ``StateManager``), the hook :class:`StepEngineHook`,
and :func:`apply_step_engine` / :func:`remove_step_engine`.  :class:`StepEngine` is the handle the sampler drives.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, CacheContext, StateManager

from .errors import UserError
from .schedule import FULL, NULL, PARTIAL, Step, format_branches

HOOK_NAME = "flexiffusion_step_engine"
DEFAULT_CONTEXT = "default"
READ, SHAPE = "read", "shape"  # how a full step stores a skipped module's output


@dataclass(frozen=True)
class StepEngineConfig:
    """Settings of the step engine.

    ``minimal_cache``: a full step keeps only what the partial steps read (one tensor per kept branch, shape-only
    stand-ins for the rest); ``False`` keeps every skipped module's output (same results, more memory).
    """

    minimal_cache: bool = True


@dataclass(frozen=True)
class Branch:
    """Skip tensor ``index`` (1-based): which down module produces it and which up resnet consumes it."""

    index: int
    producer: str  # module key, e.g. "conv_in", "down.0.resnets.1", "down.0.downsamplers.0"
    consumer: str  # up resnet key, e.g. "up.3.resnets.2"


class StepCacheState(BaseState):
    """The features one cache context (e.g. the conditional pass of guidance) stored during the last full step."""

    def __init__(self):
        self.features: dict[str, object] = {}

    def reset(self, *args, **kwargs) -> None:
        self.features = {}


class _Contexts(StateManager):
    """diffusers' per-context state manager, with a default context when none is set (plain unguided calls) and
    access to every context's state (for :meth:`StepEngine.cache_state`)."""

    def __init__(self):
        super().__init__(StepCacheState)
        self.set_context(None)

    def set_context(self, context: CacheContext | None) -> None:
        super().set_context(context if context is not None else CacheContext(DEFAULT_CONTEXT))

    def states(self) -> dict[str, StepCacheState]:
        return self._state_cache

    def clear(self) -> None:
        self._state_cache.clear()


def _shape_only(out):
    """A stand-in for a module output whose values nobody reads: same dtype, batch and spatial sizes, **no
    channels** (dim 1 of size 0; a tensor of fewer than 2 dims: one element expanded to its shape).

    Such outputs only flow into skipped modules, through the ``torch.cat`` of an up block's skipped resnets, which
    checks every dim but dim 1: so those cats stay valid and cost nothing (with full-size stand-ins they
    materialised zero tensors at full resolution, ~8 % of a partial(1) step on the embedded U-Net), and the U-Net's
    own use of skip shapes (``upsample_size`` = ``shape[2:]``) is unchanged."""
    if isinstance(out, torch.Tensor):
        if out.dim() >= 2:
            return out.new_empty((out.shape[0], 0, *out.shape[2:]))
        return torch.zeros((), dtype=out.dtype, device=out.device).expand(out.shape)
    if isinstance(out, (tuple, list)):
        return type(out)(_shape_only(o) for o in out)
    return out


class StepEngineHook(ModelHook):
    """Replaces one module's forward by the current step's decision: run it (a full step also stores its output,
    or a stand-in) or, in a partial step that skips the module, return the stored output."""

    _is_stateful = True

    def __init__(self, engine: "StepEngine", key: str):
        super().__init__()
        self.engine, self.key = engine, key
        self.states = engine.states

    def new_forward(self, module, *args, **kwargs):
        original, step = self.fn_ref.original_forward, self.engine.mode
        if step is None:
            return original(*args, **kwargs)
        state = self.states.get_state()
        if step.kind == FULL:
            out = original(*args, **kwargs)
            how = self.engine.storage.get(self.key)
            if how is not None:
                state.features[self.key] = out if how == READ else _shape_only(out)
            return out
        if self.key not in self.engine.skipped(step.branch):
            return original(*args, **kwargs)
        try:
            return state.features[self.key]
        except KeyError:
            raise UserError(
                f"partial step at branch {step.branch} without a cache (context {self.states.context.name!r}): a "
                "partial step must follow a full step that kept this branch") from None

    def reset_state(self, module):
        self.states.clear()
        return module


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


def _number_branches(down, up) -> tuple[Branch, ...]:
    producers = ["conv_in"] + [group[-1] for block in down for group in block]
    consumers = [group[0] for resnets, _ in up for group in resnets]
    if len(producers) != len(consumers):
        raise UserError(f"U-Net has {len(producers)} skip tensors but {len(consumers)} up resnets consuming them:"
                        " unsupported layout")
    n = len(producers)
    return tuple(Branch(i, producers[i - 1], consumers[n - i]) for i in range(1, n + 1))


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


def _read_key(consumer: str, up) -> str:
    """The skipped module whose output enters ``consumer`` (an up resnet key ``up.u.resnets.k``)."""
    _, u, _, k = consumer.split(".")
    u, k = int(u), int(k)
    if k > 0:
        return up[u][0][k - 1][-1]  # the previous resnet's attention, or that resnet
    return f"up.{u - 1}" if u > 0 else "mid"


class StepEngine:
    """Runs a diffusers U-Net as full or partial(b) steps; :func:`apply_step_engine` attaches it (or
    :meth:`attach`), :func:`remove_step_engine` removes it (or :meth:`detach`).

    Outside ``with engine.step(...)`` the U-Net behaves natively.  Each cache context (e.g. the conditional and
    unconditional passes of classifier-free guidance run separately) keeps its own cache.
    """

    def __init__(self, unet: torch.nn.Module, config: StepEngineConfig | None = None):
        for attr in ("conv_in", "down_blocks", "mid_block", "up_blocks"):
            if getattr(unet, attr, None) is None:
                raise UserError(f"{type(unet).__name__} has no {attr}: the step engine needs a diffusers U-Net "
                                "(UNet2DModel or UNet2DConditionModel)")
        self.unet, self.config = unet, config or StepEngineConfig()
        down, up = _down_layout(unet), _up_layout(unet)
        self.branches = _number_branches(down, up)
        self._skips = {b.index: _skip_set(b.index, down, up) for b in self.branches}
        self._reads = {b.index: _read_key(b.consumer, up) for b in self.branches}
        self.all_keys = frozenset().union(*self._skips.values())
        self.states = _Contexts()
        self.mode: Step | None = None           # the step the next U-Net calls run as
        self.kept: frozenset[int] = frozenset()  # branches the last full step stored features for
        self.storage: dict[str, str] = {}        # module key -> READ / SHAPE during a full step

    # ---- structure ----------------------------------------------------------------------------------
    @property
    def num_branches(self) -> int:
        return len(self.branches)

    def skipped(self, branch: int) -> frozenset[str]:
        """Module keys a partial step at ``branch`` does not compute."""
        return self._skips[branch]

    def read_key(self, branch: int) -> str:
        """The one skipped module whose stored output a partial step at ``branch`` reads."""
        return self._reads[branch]

    def storage_for(self, branches) -> dict[str, str]:
        """How a full step that keeps ``branches`` stores each skipped output."""
        shape = SHAPE if self.config.minimal_cache else READ
        storage = {key: shape for b in branches for key in self._skips[b]}
        storage.update({self._reads[b]: READ for b in branches})
        return storage

    # ---- attach / detach (thin wrappers of apply_step_engine / remove_step_engine) -----------------
    @classmethod
    def attach(cls, unet: torch.nn.Module, config: StepEngineConfig | None = None) -> "StepEngine":
        return apply_step_engine(unet, config)

    def detach(self) -> None:
        """Remove every hook: the U-Net's forward is exactly the original again."""
        remove_step_engine(self.unet)
        self.reset()

    def reset(self) -> None:
        """Forget every cache (start of a new batch)."""
        self.states.clear()
        self.kept = frozenset()

    # ---- stepping -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def step(self, step: Step, keep=None):
        """Run the U-Net call(s) inside as ``step``.  A full step replaces the cache by the features that partial
        steps at branches ``keep`` (all branches when None) read."""
        if step.kind == NULL:
            raise UserError("a null step evaluates no network: the sampler must not call the U-Net for it")
        if step.kind == PARTIAL:
            if not 1 <= step.branch <= self.num_branches:
                raise UserError(f"branch {step.branch} out of range: this U-Net has branches 1..{self.num_branches}")
            if self.kept and step.branch not in self.kept:
                raise UserError(f"partial step at branch {step.branch} without a cache for it: the last full step "
                                f"kept branches {format_branches(self.kept)} only (sample(..., cache_branches=) sets them)")
        if step.kind == FULL:
            keep = frozenset(range(1, self.num_branches + 1)) if keep is None else frozenset(keep)
            bad = sorted(b for b in keep if b not in self._skips)
            if bad:
                raise UserError(f"branch {bad[0]} out of range: this U-Net has branches 1..{self.num_branches}")
            self.states.clear()
            self.kept, self.storage = keep, self.storage_for(keep)
        self.mode = step
        try:
            yield self
        finally:
            self.mode = None

    @contextlib.contextmanager
    def context(self, name: str):
        """Use the cache of context ``name`` (e.g. "cond" / "uncond") for the calls inside."""
        previous = self.states.context
        self.states.set_context(CacheContext(name))
        try:
            yield self
        finally:
            self.states.set_context(previous)

    # ---- state capture ------------------------------------------------------------------------------
    def cache_state(self) -> dict:
        """``{"kept": sorted branches, "contexts": {context: {module key: output}}}`` as plain data; tensors are
        shared, never modified in place."""
        return {"kept": sorted(self.kept),
                "contexts": {ctx: dict(s.features) for ctx, s in self.states.states().items()}}

    def cache_nbytes(self) -> int:
        """Bytes the cache holds now, over every context: each distinct tensor storage once (the shape-only
        stand-ins hold none, or one element)."""
        seen: dict[int, int] = {}
        for s in self.states.states().values():
            for out in s.features.values():
                for t in _tensors(out):
                    storage = t.untyped_storage()
                    seen.setdefault(storage.data_ptr(), storage.nbytes())
        return sum(seen.values())

    def load_cache_state(self, state: dict) -> None:
        self.reset()
        self.kept = frozenset(state.get("kept", ()))
        for ctx, features in state.get("contexts", {}).items():
            with self.context(ctx):
                self.states.get_state().features = dict(features)


def _tensors(out):
    if isinstance(out, torch.Tensor):
        yield out
    elif isinstance(out, (tuple, list)):
        for o in out:
            yield from _tensors(o)


def attached_engine(unet: torch.nn.Module) -> StepEngine | None:
    """The step engine attached to ``unet`` now (None when none is)."""
    for module in unet.modules():
        registry = getattr(module, "_diffusers_hook", None)
        hook = registry.get_hook(HOOK_NAME) if registry is not None else None
        if hook is not None:
            return hook.engine
    return None


def apply_step_engine(unet: torch.nn.Module, config: StepEngineConfig | None = None) -> StepEngine:
    """Hook the step engine into ``unet`` (unmodified diffusers U-Net); returns the engine that drives it."""
    engine = StepEngine(unet, config)
    hooked = []
    try:
        for key in sorted(engine.all_keys):
            module = _module(unet, key)
            registry = HookRegistry.check_if_exists_or_initialize(module)
            if registry.get_hook(HOOK_NAME) is not None:
                raise UserError(f"a step engine is already attached to this U-Net ({key}): detach it first")
            registry.register_hook(StepEngineHook(engine, key), HOOK_NAME)
            hooked.append(module)
    except BaseException:
        _remove_hooks(hooked)
        raise
    return engine


def remove_step_engine(unet: torch.nn.Module) -> None:
    """Remove the step engine's hooks from ``unet``: its forward is exactly the original again."""
    _remove_hooks(unet.modules())


def _remove_hooks(modules) -> None:
    for module in list(modules):
        registry = getattr(module, "_diffusers_hook", None)
        if registry is None or registry.get_hook(HOOK_NAME) is None:
            continue
        registry.remove_hook(HOOK_NAME, recurse=False)
        if not registry.hooks:
            del module._diffusers_hook
