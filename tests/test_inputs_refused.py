"""Issue 22, items 1-2: one model vocabulary, and every input of a paper-model command checked before a single
U-Net call.  Each bad input below is one ``error:`` line naming the file (or name) and the fix, exit 2, no U-Net
forward, nothing written to the store.  The folders are the real diffusers layouts with tiny random weights (the
layout and shape checks read configs only; the real architectures run in ``flexbench smoke``)."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch

from bench.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny real-layout folders (DDPM bare model 3x8x8, SD pipeline), real-image folders, statistics, prompts."""
    from diffusers import UNet2DModel
    from PIL import Image

    from bench.models import tiny

    root = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=8)
    unet.save_pretrained(root / "ddpm")
    (root / "ddpm" / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDPMScheduler",
                                                                     **tiny.DDPM_SCHEDULER}))
    tiny.tiny_sd_pipeline().save_pretrained(root / "sd")
    rng = np.random.default_rng(0)
    for name, size, mode in (("real8", 8, "RGB"), ("real16", 16, "RGB"), ("gray8", 8, "L"), ("real32", 32, "RGB")):
        (root / name).mkdir()
        for i in range(4):
            shape = (size, size, 3) if mode == "RGB" else (size, size)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / name / f"{i}.png")
    (root / "empty").mkdir()
    np.savez(root / "stats10.npz", mu=np.zeros(10), sigma=np.eye(10))
    (root / "notes.npz").write_text("not an npz")
    torch.save({"w": torch.zeros(1)}, root / "extractor.pth")
    (root / "prompts.txt").write_text("a photo of a cat\n")
    (root / "noprompts.txt").write_text("\n  \n")
    return root


@pytest.fixture
def no_unet_calls(monkeypatch, tmp_path):
    """Counts U-Net forwards (both diffusers classes); the user's caches are out of reach."""
    from diffusers import UNet2DConditionModel, UNet2DModel

    calls = []
    for cls in (UNet2DModel, UNet2DConditionModel):
        original = cls.forward

        def counted(self, *a, _original=original, **k):
            calls.append(type(self).__name__)
            return _original(self, *a, **k)
        monkeypatch.setattr(cls, "forward", counted)
    monkeypatch.setenv("FLEXBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return calls


def _run(argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main([str(a) for a in argv])
    return rc, err.getvalue()


CASES = [  # (command words with {f} = the files folder, what the one line must name)
    ("run deepcache --model ddpm --weights {f}/ddpm", "unknown model 'ddpm'"),
    ("run deepcache --model nope", "unknown model 'nope'"),
    ("run deepcache --model ddpm-cifar10 --weights {f}/ddpm --interval 5 --branch 1", "--real"),
    ("run deepcache --model ddpm-cifar10 --weights {f}/ddpm --real {f}/real16 --extractor-weights {f}/extractor.pth",
     "real16"),
    ("run deepcache --model ddpm-cifar10 --weights {f}/ddpm --real {f}/gray8 --extractor-weights {f}/extractor.pth",
     "gray8"),
    ("run deepcache --model ddpm-cifar10 --weights {f}/ddpm --real {f}/empty --extractor-weights {f}/extractor.pth",
     "empty"),
    ("run deepcache --model ddpm-cifar10 --weights {f}/ddpm --real {f}/stats10.npz "
     "--extractor-weights {f}/extractor.pth", "stats10.npz"),
    ("run deepcache --model ddpm-cifar10 --weights {f}/ddpm --real {f}/notes.npz "
     "--extractor-weights {f}/extractor.pth", "notes.npz"),
    ("run deepcache --model ddpm-cifar10 --weights {f}/ddpm --real {f}/real8 --extractor-weights {f}/missing.pth",
     "missing.pth"),
    ("run deepcache --model ddpm-cifar10 --weights {f}/ddpm --real {f}/real8", "inception-v3-compat"),
    ("run deepcache --model ddpm-cifar10 --weights {f}/sd --real {f}/real8", "sd"),
    ("run deepcache --model sd-v1.5 --weights {f}/ddpm --real {f}/real32", "ddpm"),
    ("run plms --model sd-v1.5 --weights {f}/sd --real {f}/real32 --extractor-weights {f}/extractor.pth "
     "--prompts {f}/noprompts.txt", "noprompts.txt"),
    ("run plms --model sd-v1.5 --weights {f}/sd --real {f}/real32 --extractor-weights {f}/extractor.pth",
     "--prompts"),
    ("run plms --model sd-v1.5 --weights {f}/sd --real {f}/real32 --extractor-weights {f}/extractor.pth "
     "--prompts {f}/prompts.txt --clip-model ViT-B-32 --clip-pretrained {f}/missing-clip.pt", "missing-clip.pt"),
    ("run deepcache --model ddpm-cifar10 --weights {f}/ddpm --real {f}/real8 --extractor-weights {f}/extractor.pth "
     "--device cuda:3", "cuda:3"),
    ("experiment table2 --model ddpm-cifar10 --weights {f}/ddpm", "--real"),
    ("experiment table2 --model ddpm-cifar10 --weights {f}/ddpm --real {f}/real16 "
     "--extractor-weights {f}/extractor.pth", "real16"),
    ("experiment table2 --model ddpm-cifar10 --weights {f}/sd", "sd"),
    ("search --preset cifar10-3.0g --weights {f}/sd", "sd"),
    ("search --preset cifar10-3.0g --weights {f}/ddpm --extractor-weights {f}/missing.pth", "missing.pth"),
    ("search --preset cifar10-3.0g --model ddpm", "unknown model 'ddpm'"),
    ("ablation --preset cifar10-3.0g --weights {f}/ddpm --extractor-weights {f}/extractor.pth", "--real"),
    ("sample --model sd-v1.5 --weights {f}/sd --prompts {f}/noprompts.txt", "noprompts.txt"),
    ("sample --model ddpm-cifar10 --weights {f}/ddpm --device cuda:0", "cuda"),
    ("latency --model nope", "unknown model 'nope'"),
    ("latency --model tiny-ddpm", "tiny-ddpm"),
    ("macs --model ddpm", "unknown model 'ddpm'"),
]


@pytest.mark.parametrize("words,needle", CASES, ids=[c[0].split(" --")[0] + ": " + c[1] for c in CASES])
def test_bad_input_is_one_line_before_any_unet_call(words, needle, files, no_unet_calls, tmp_path):
    store = tmp_path / "store.sqlite"
    argv = words.format(f=files).split()
    if argv[0] in ("run", "experiment", "search", "ablation"):
        argv += ["--store", str(store)]
    if argv[0] == "sample":
        argv += ["--out", str(tmp_path / "imgs"), "--steps", "4", "--seeds", "0-1"]
    rc, err = _run(argv)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0], lines[0]
    assert no_unet_calls == []
    assert not store.exists() and not (tmp_path / "imgs").exists()


def test_one_vocabulary_across_commands():
    """Every command that takes a model takes the catalog's names (and only them)."""
    from bench.cli import build_parser, parse_invocation
    from bench.models.catalog import MODELS, PAPER_MODELS

    assert set(PAPER_MODELS) == {"ddpm-cifar10", "ddpm-bedroom", "ddpm-church", "ldm-4-g", "sd-v1.5"}
    for name in MODELS:
        for words in (["run", "ddim", "--model", name], ["sample", "--model", name, "--out", "x"],
                      ["experiment", "table2", "--model", name], ["latency", "--model", name],
                      ["macs", "--model", name], ["ablation", "--model", name], ["search", "--preset", "embedded-50",
                                                                                  "--model", name]):
            assert parse_invocation(words) == "", words
    assert build_parser() is not None
    from bench.search.presets import PRESETS

    assert {p.model for p in PRESETS.values()} <= set(MODELS)
    from bench.experiments.spec import known, load

    assert {m for n in known() for m in load(n).models} <= set(MODELS)
