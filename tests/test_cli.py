"""The flexbench command: help on every sub-command, bad input -> one error line, exit 2, nothing written."""
import subprocess
import sys

import pytest

from bench.cli import build_parser, main


def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_help_on_every_subcommand(capsys):
    names = _subcommands()
    assert "sample" in names
    for name in names:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0
        assert "usage:" in capsys.readouterr().out


def test_a_command_module_that_fails_to_import_fails_loudly(monkeypatch, tmp_path):
    """A listed module that is missing or broken raises; its sub-commands never silently drop out."""
    from bench import cli

    assert {"demo", "sample", "macs", "latency", "cost-figures"} <= set(_subcommands())
    monkeypatch.setattr(cli, "COMMAND_MODULES", [*cli.COMMAND_MODULES, "bench.commands.not_written"])
    with pytest.raises(ModuleNotFoundError, match="bench.commands.not_written"):
        cli.build_parser()
    (tmp_path / "broken_commands.py").write_text("raise RuntimeError('broken at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["bench.commands.sample", "broken_commands"])
    with pytest.raises(RuntimeError, match="broken at import"):
        cli.main(["sample", "--help"])


@pytest.mark.parametrize("args,needle", [
    (["--uniform", "5,0"], "branch must be >= 1"),
    (["--plan", '{"steps": ["p1", "f"]}'], "first step must be full"),
    (["--plan", "{oops"], "malformed plan JSON"),
    (["--plan", "missing.json"], "plan file"),
    (["--scheduler", "heun"], "invalid choice"),
    (["--model", "ddpm-cifar10", "--weights", "/nonexistent/ddpm"], "not found"),
    (["--model", "ddpm"], "unknown model 'ddpm'"),
    (["--uniform", "5,40"], "out of range"),
])
def test_bad_input_one_line_nothing_written(tmp_path, args, needle):
    out = tmp_path / "imgs"
    proc = subprocess.run([sys.executable, "-m", "bench.cli", "sample", "--model", "tiny-ddpm", "--steps", "10",
                           "--seeds", "0-1", "--out", str(out), *args], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr
    if "invalid choice" not in needle:
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_sample_writes_one_png_per_seed(tmp_path):
    out = tmp_path / "imgs"
    assert main(["sample", "--model", "tiny-class", "--steps", "6", "--uniform", "3,2", "--seeds", "0-2",
                 "--guidance", "2", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["seed-000000.png", "seed-000001.png", "seed-000002.png"]
    assert main(["sample", "--model", "tiny-ddpm", "--steps", "4", "--seeds", "0", "--out", str(out)]) == 2
