"""Training options of both embedded models: a bad value is one error line naming the option, exit 2, nothing
written (checked before any data or model is touched)."""
import pytest

from bench.cli import main


@pytest.mark.parametrize("model", ["embedded", "embedded-t2i"])
@pytest.mark.parametrize("option,value,message", [
    ("--steps", "-1", "--steps must be >= 0, got -1"),
    ("--batch-size", "0", "--batch-size must be >= 1, got 0"),
    ("--threads", "0", "--threads must be >= 1, got 0"),
])
def test_bad_training_option(tmp_path, model, option, value, message, capsys):
    out = tmp_path / "run"
    assert main(["embedded-train", "--model", model, "--out", str(out), option, value]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {message}"]
    assert not out.exists()


def test_t2i_only_option_bounds(tmp_path, capsys):
    assert main(["embedded-train", "--model", "embedded-t2i", "--out", str(tmp_path / "run"), "--text-steps",
                 "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --text-steps must be >= 1, got 0"
