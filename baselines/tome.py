"""Token Merging for Stable Diffusion (ToMe, Bolya & Hoffman 2023) as an attach/remove acceleration: a config
dataclass, :func:`apply_tome` and :func:`remove_tome`, the merging itself delegated to ``tomesd``.

tomesd patches every ``BasicTransformerBlock`` (the blocks of ``UNet2DConditionModel``'s ``Transformer2DModel``s)
and adds a forward pre-hook on the U-Net that reads the sample's height and width (the sample must be passed
positionally, as the sampler's denoisers do).  A ``UNet2DModel`` has plain ``Attention`` blocks, on which tomesd
silently does nothing: here that is an error.  ToMe combines with any plan: the step engine hooks resnets and
attention containers, tomesd swaps the class of the transformer blocks inside them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from flexiffusion.errors import UserError

STATE_ATTR = "_flexbench_tome"  # the config that :func:`apply_tome` attached, on the U-Net
MAX_DOWNSAMPLES = (1, 2, 4, 8)


@dataclass(frozen=True)
class ToMeConfig:
    """tomesd's ``apply_patch`` arguments (same names and defaults)."""

    ratio: float = 0.5
    max_downsample: int = 1
    sx: int = 2
    sy: int = 2
    use_rand: bool = True
    merge_attn: bool = True
    merge_crossattn: bool = False
    merge_mlp: bool = False

    def validate(self) -> "ToMeConfig":
        if self.sx < 1 or self.sy < 1:
            raise UserError(f"ToMe strides must be >= 1, got sx={self.sx}, sy={self.sy}")
        limit = 1 - 1 / (self.sx * self.sy)
        if not 0 <= self.ratio <= limit:
            raise UserError(f"ToMe ratio {self.ratio} outside 0..{limit:g} (at most 1 - 1/(sx*sy) of the tokens "
                            "can merge): choose a smaller ratio")
        if self.max_downsample not in MAX_DOWNSAMPLES:
            raise UserError(f"ToMe max_downsample must be one of {MAX_DOWNSAMPLES}, got {self.max_downsample}")
        return self


def unet_of(pipeline_or_unet) -> torch.nn.Module:
    """The U-Net of a diffusers pipeline (``.unet``), or the U-Net itself."""
    return getattr(pipeline_or_unet, "unet", pipeline_or_unet)


def transformer_blocks(unet: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules tomesd patches (class named ``BasicTransformerBlock`` or a subclass of it)."""
    return [m for m in unet.modules() if any(c.__name__ == "BasicTransformerBlock" for c in type(m).__mro__)]


def tome_config(pipeline_or_unet) -> ToMeConfig | None:
    """The ToMe config applied to this U-Net, or None."""
    return getattr(unet_of(pipeline_or_unet), STATE_ATTR, None)


def apply_tome(pipeline_or_unet, config: ToMeConfig = ToMeConfig()):
    """Patch the U-Net with ToMe (tomesd); returns its argument.  Undo with :func:`remove_tome`."""
    import tomesd

    config.validate()
    unet = unet_of(pipeline_or_unet)
    if not transformer_blocks(unet):
        raise UserError(f"ToMe needs transformer blocks (BasicTransformerBlock, as in UNet2DConditionModel); "
                        f"{type(unet).__name__} has none, so token merging would change nothing: use a "
                        "text-to-image (Stable Diffusion-like) model or leave ToMe off")
    if tome_config(unet) is not None:
        raise UserError("ToMe is already applied to this U-Net: remove_tome first")
    tomesd.apply_patch(unet, **asdict(config))
    setattr(unet, STATE_ATTR, config)
    return pipeline_or_unet


def remove_tome(pipeline_or_unet):
    """Undo :func:`apply_tome`: original block classes, no pre-hook, no ToMe state left on the U-Net."""
    import tomesd

    unet = unet_of(pipeline_or_unet)
    tomesd.remove_patch(unet)
    for module in unet.modules():
        if hasattr(module, "_tome_info"):
            del module._tome_info
    if hasattr(unet, STATE_ATTR):
        delattr(unet, STATE_ATTR)
    return pipeline_or_unet
