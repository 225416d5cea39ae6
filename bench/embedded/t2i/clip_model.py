"""The scoring CLIP: a tiny open_clip model (custom config registered with ``open_clip.add_model_config``, the
bundled BPE tokenizer), trained contrastively on (digit, caption) pairs of the training split and loaded by the
suite's CLIP-score path (:class:`bench.quality.clip_score.ClipScorer`) from the shipped file, offline.

Image tower: a ViT on 16x16 RGB (the grey digit repeated, as open_clip's transform converts to RGB), patch 4
(16 tokens of 2x2 source pixels), width 64, 3 layers.  Text tower: width 32, 2 layers, context ``CONTEXT_LENGTH``.
Joint embedding 64.  The token table spans the whole BPE vocabulary (the tokenizer's ids), most of the file.
"""
from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

import torch

from .tokens import CONTEXT_LENGTH, VOCAB_SIZE

MODEL_NAME = "flexbench-digits-clip"
CONFIG_FILE = Path(__file__).resolve().parent / "weights" / f"{MODEL_NAME}.json"  # shipped next to the weights
MODEL_CONFIG: dict = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 16, "layers": 3, "width": 64, "head_width": 16, "mlp_ratio": 2.0, "patch_size": 4},
    "text_cfg": {"context_length": CONTEXT_LENGTH, "vocab_size": VOCAB_SIZE, "width": 32, "heads": 4,
                 "layers": 2, "mlp_ratio": 2.0},
}
# open_clip's default (OpenAI) image normalisation, the one its transform applies for a custom config
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


@functools.lru_cache(maxsize=1)
def register() -> str:
    """Make ``MODEL_NAME`` known to open_clip (idempotent); returns the name."""
    import open_clip

    if MODEL_NAME not in open_clip.list_models():
        path = CONFIG_FILE
        if not path.is_file() or json.loads(path.read_text()) != MODEL_CONFIG:  # a checkout without weights yet
            path = Path(tempfile.mkdtemp(prefix="flexbench-clip-")) / f"{MODEL_NAME}.json"
            write_config(path)
        open_clip.add_model_config(path)
    return MODEL_NAME


def write_config(path: Path) -> None:
    path.write_text(json.dumps(MODEL_CONFIG, indent=2) + "\n")


def build_clip():
    """A freshly initialised scoring CLIP (torch's global RNG decides the weights)."""
    import open_clip

    return open_clip.create_model(register(), pretrained=None)


def to_clip_input(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] grey NCHW -> the tensor open_clip's inference transform makes of the same uint8 image (RGB in [0, 1],
    normalised); the images are quantised to uint8 first, as the scored PNGs / uint8 tensors are."""
    x = ((images.clamp(-1, 1) + 1) * 127.5).round() / 255.0
    x = x.expand(-1, 3, -1, -1)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std
