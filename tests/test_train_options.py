"""Training options of both embedded models: a bad value is one error line naming the option, exit 2, nothing
written (checked before any data or model is touched)."""
import subprocess
import sys

import pytest


@pytest.mark.parametrize("model", ["embedded", "embedded-t2i"])
@pytest.mark.parametrize("option,value,message", [
    ("--steps", "-1", "--steps must be >= 0, got -1"),
    ("--batch-size", "0", "--batch-size must be >= 1, got 0"),
    ("--threads", "0", "--threads must be >= 1, got 0"),
])
def test_bad_training_option(tmp_path, model, option, value, message):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "bench.cli", "embedded-train", "--model", model, "--out", str(out),
                        option, value], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: {message}"]
    assert not out.exists()


def test_t2i_only_option_bounds(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bench.cli", "embedded-train", "--model", "embedded-t2i", "--out",
                        str(tmp_path / "run"), "--text-steps", "0"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == "error: --text-steps must be >= 1, got 0"
