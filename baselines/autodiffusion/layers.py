"""AutoDiffusion's layer dropping (Li et al. 2023) as a hook on an unmodified diffusers U-Net.

Droppable layers: every resnet (``ResnetBlock2D``) and every attention block (the entries of a block's
``attentions``: ``Attention`` in ``UNet2DModel``, ``Transformer2DModel`` in ``UNet2DConditionModel``), mid block
included.  A dropped resnet keeps only its skip path (resampling, then the 1x1 shortcut where channels change,
divided by ``output_scale_factor`` as the full block does); a dropped attention block is the identity.

Which layers are dropped depends on the timestep: a :class:`LayerDropConfig` maps timestep -> layer names; a hook on
the U-Net reads the timestep of each call and switches the set, so the common sampler loop runs it unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers.hooks import HookRegistry, ModelHook

from flexiffusion.errors import UserError

HOOK_NAME = "flexbench_layer_drop"


def droppable_layers(unet: torch.nn.Module) -> tuple[str, ...]:
    """Names (as in ``unet.named_modules()``) of every resnet and attention block, in forward order."""
    names = []
    for prefix, blocks in (("down_blocks", unet.down_blocks), ("mid_block", [unet.mid_block]),
                           ("up_blocks", unet.up_blocks)):
        for i, block in enumerate(blocks):
            base = prefix if prefix == "mid_block" else f"{prefix}.{i}"
            resnets = list(getattr(block, "resnets", None) or [])
            attns = list(getattr(block, "attentions", None) or [])
            if prefix == "mid_block":  # resnet 0, then (attention k, resnet k + 1)
                order = [f"{base}.resnets.0"]
                for k in range(len(attns)):
                    order += [f"{base}.attentions.{k}", f"{base}.resnets.{k + 1}"]
            else:  # (resnet k, attention k)
                order = []
                for k in range(len(resnets)):
                    order.append(f"{base}.resnets.{k}")
                    if k < len(attns):
                        order.append(f"{base}.attentions.{k}")
            names += order
    return tuple(n for n in names if _present(unet, n))


def _present(unet, name: str) -> bool:
    try:  # a mid block without attention holds None in its ``attentions`` list
        return unet.get_submodule(name) is not None
    except AttributeError:
        return False


@dataclass(frozen=True)
class LayerDropConfig:
    """Dropped layers per timestep: ``drops[t]`` = names of the layers skipped when the U-Net runs at ``t``."""

    drops: dict = field(default_factory=dict)

    def for_timestep(self, t) -> frozenset:
        return self.drops.get(int(t), frozenset())


class _Controller(ModelHook):
    """On the U-Net: sets the active drop set from the call's timestep."""

    def __init__(self, config: LayerDropConfig):
        super().__init__()
        self.config, self.active = config, frozenset()

    def pre_forward(self, module, *args, **kwargs):
        t = args[1] if len(args) > 1 else kwargs.get("timestep")
        t = t.flatten()[0] if isinstance(t, torch.Tensor) else t
        self.active = self.config.for_timestep(t)
        return args, kwargs

    def post_forward(self, module, output):
        self.active = frozenset()
        return output


class _DropHook(ModelHook):
    def __init__(self, controller: _Controller, name: str):
        super().__init__()
        self.controller, self.name = controller, name

    def new_forward(self, module, *args, **kwargs):
        if self.name not in self.controller.active:
            return self.fn_ref.original_forward(*args, **kwargs)
        x = args[0] if args else kwargs["hidden_states" if "hidden_states" in kwargs else "input_tensor"]
        if hasattr(module, "conv_shortcut"):  # resnet: the skip path only
            if module.upsample is not None:
                x = module.upsample(x)
            elif module.downsample is not None:
                x = module.downsample(x)
            if module.conv_shortcut is not None:
                x = module.conv_shortcut(x)
            return x / module.output_scale_factor
        if type(module).__name__ == "Transformer2DModel":
            if kwargs.get("return_dict", True):
                from diffusers.models.modeling_outputs import Transformer2DModelOutput

                return Transformer2DModelOutput(sample=x)
            return (x,)
        return x  # attention block: identity


def apply_layer_drop(unet: torch.nn.Module, config: LayerDropConfig) -> torch.nn.Module:
    """Attach layer dropping to ``unet`` (unmodified otherwise); undo with :func:`remove_layer_drop`."""
    layers = set(droppable_layers(unet))
    unknown = sorted({n for names in config.drops.values() for n in names} - layers)
    if unknown:
        raise UserError(f"layer {unknown[0]!r} is not a droppable layer of this U-Net "
                        f"({len(layers)} resnet/attention blocks, e.g. {sorted(layers)[0]!r})")
    top = HookRegistry.check_if_exists_or_initialize(unet)
    if top.get_hook(HOOK_NAME) is not None:
        raise UserError("layer dropping is already attached to this U-Net: remove_layer_drop first")
    controller = _Controller(config)
    top.register_hook(controller, HOOK_NAME)
    for name in layers:
        HookRegistry.check_if_exists_or_initialize(unet.get_submodule(name)).register_hook(
            _DropHook(controller, name), HOOK_NAME)
    return unet


def remove_layer_drop(unet: torch.nn.Module) -> torch.nn.Module:
    """Remove every layer-drop hook: the U-Net's forward is the original again."""
    for module in [unet, *(unet.get_submodule(n) for n in droppable_layers(unet))]:
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None and registry.get_hook(HOOK_NAME) is not None:
            registry.remove_hook(HOOK_NAME, recurse=False)
            if not registry.hooks:
                del module._diffusers_hook
    return unet
