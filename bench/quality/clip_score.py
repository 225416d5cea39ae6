"""CLIP score (Hessel et al. 2021; Flexiffusion Table 3): ``100 * max(cos(image, prompt), 0)``, averaged over pairs.

The model comes from open_clip: a model name plus ``pretrained``, either a local weights file or an open_clip tag
whose file is already in the Hugging Face cache (or open_clip's URL cache).  Nothing is downloaded: a missing file
is a UserError naming it.  Prompts are tokenized by open_clip's bundled tokenizer (``open_clip.get_tokenizer``);
images are preprocessed by the model's own inference transform (resize, centre crop, RGB, normalise).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from flexiffusion.errors import UserError

from .images import as_images

DEFAULT_MODEL, DEFAULT_PRETRAINED = "ViT-B-32", "openai"


def resolve_clip_weights(model_name: str, pretrained: str | os.PathLike | None) -> tuple[str | None, dict]:
    """(local weights path or None for random weights, the tag's preprocessing config) — never downloads."""
    import open_clip
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    if pretrained is None:
        return None, {}
    if Path(pretrained).is_file():
        return str(pretrained), {}
    cfg = open_clip.get_pretrained_cfg(model_name, str(pretrained))
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise UserError(f"CLIP weights {pretrained!r} for {model_name!r}: neither a file nor a known tag "
                        f"(tags: {', '.join(tags) or 'none'})")
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache
        from huggingface_hub.constants import HF_HUB_CACHE

        repo, filename = os.path.split(cfg["hf_hub"])  # "org/model/" names open_clip's default file
        filename = filename or HF_WEIGHTS_NAME
        names = [HF_SAFE_WEIGHTS_NAME, filename] if filename == HF_WEIGHTS_NAME else [filename]
        for name in names:
            hit = try_to_load_from_cache(repo, name)
            if isinstance(hit, str):
                return hit, cfg
        where = f"the Hugging Face cache ({HF_HUB_CACHE}) as {repo}/{filename}"
    else:
        url = cfg.get("url", "")
        path = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if path.is_file():
            return str(path), cfg
        where = f"{path} (from {url})"
    raise UserError(f"CLIP weights for {model_name!r} tag {pretrained!r} are not available offline: put them in "
                    f"{where}, or pass a local weights file as pretrained")


class ClipScorer:
    """Embeds images and prompts with one open_clip model; ``scorer(images, prompts)`` -> flat metric dict."""

    def __init__(self, model_name: str = DEFAULT_MODEL, pretrained: str | os.PathLike | None = DEFAULT_PRETRAINED,
                 device: str | None = None, batch_size: int = 32):
        import open_clip

        if model_name not in open_clip.list_models():
            raise UserError(f"unknown open_clip model {model_name!r}; e.g. {', '.join(open_clip.list_models()[:8])}")
        weights, cfg = resolve_clip_weights(model_name, pretrained)
        if weights is None:
            warnings.warn(f"CLIP model {model_name!r} with random weights: scores only serve tests", stacklevel=2)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=weights, device=self.device, pretrained_text=False,
            force_quick_gelu=bool(cfg.get("quick_gelu", False)), image_mean=cfg.get("mean"),
            image_std=cfg.get("std"), image_interpolation=cfg.get("interpolation"),
            image_resize_mode=cfg.get("resize_mode"))
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.batch_size = batch_size

    @torch.no_grad()
    def image_embeddings(self, images) -> torch.Tensor:
        """L2-normalised image embeddings of uint8 NCHW images (or a folder)."""
        from PIL import Image

        images = as_images(images, "images")
        out = []
        for i in range(0, images.n, self.batch_size):
            pil = []
            for j in range(i, min(i + self.batch_size, images.n)):
                arr = images[j].permute(1, 2, 0).numpy()
                pil.append(Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr))
            x = torch.stack([self.preprocess(p) for p in pil]).to(self.device)
            out.append(torch.nn.functional.normalize(self.model.encode_image(x).float(), dim=-1).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def text_embeddings(self, prompts: list[str]) -> torch.Tensor:
        out = []
        for i in range(0, len(prompts), self.batch_size):
            tokens = self.tokenizer(prompts[i:i + self.batch_size]).to(self.device)
            out.append(torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu())
        return torch.cat(out)

    def __call__(self, images, prompts) -> dict:
        """``{"clip_score", "n_images"}``: image ``i`` is paired with ``prompts[i]`` (or one prompt for all)."""
        images = as_images(images, "images")
        prompts = [prompts] * images.n if isinstance(prompts, str) else list(prompts)
        if len(prompts) != images.n:
            raise UserError(f"CLIP score pairs images with prompts: {images.n} images, {len(prompts)} prompts")
        if images.n == 0:
            raise UserError("CLIP score needs at least 1 image")
        cos = (self.image_embeddings(images) * self.text_embeddings(prompts)).sum(-1)
        return {"clip_score": float((100.0 * cos.clamp(min=0)).mean()), "n_images": images.n}


def clip_score(images, prompts, model_name: str = DEFAULT_MODEL, pretrained=DEFAULT_PRETRAINED, **kwargs) -> dict:
    """One-shot :class:`ClipScorer` (build the scorer once when scoring many candidates)."""
    return ClipScorer(model_name, pretrained, **kwargs)(images, prompts)
