"""Experiment specs against the metric vocabulary (bench.results) and the CLI: a column no writer produces, an
unknown metric or a filled_by that is no real flexbench invocation fails when the spec is parsed, naming the file
and the field."""
import shlex
from pathlib import Path

import pytest

from bench.cli import build_parser, main, parse_invocation
from bench.experiments.spec import known, load, parse
from bench.results import METRICS, Metric, register, result_key
from flexiffusion.errors import UserError

TINY = '''
title = "tiny"
kind = "table"
paper = "p"
models = ["embedded"]
columns = ["nfe", "fid"]
[[rows]]
label = "B"
method = "ddim"
config = {steps = 10}
'''
ABLATION = '''
title = "t"
kind = "table"
paper = "p"
models = ["embedded"]
columns = ["kendall_tau"]
filled_by = "flexbench ablation --preset embedded-50 --store FILE"
'''


def test_every_spec_parses_with_the_cli_parser_and_names_only_registered_metrics():
    for name in known():
        spec = load(name, parse_invocation)
        assert all(c in METRICS for c in spec.columns), name


def test_every_filled_by_is_a_real_invocation_of_the_cli():
    parser = build_parser()
    fillers = [load(n).filled_by for n in known() if load(n).filled_by]
    assert fillers, "the ablation and search tables are filled by other commands"
    for command in fillers:
        words = shlex.split(command)
        assert words[0] == "flexbench"
        args = parser.parse_args(words[1:])
        assert callable(args.func)


def test_a_misspelt_column_fails_at_parse_naming_the_file_and_the_field():
    with pytest.raises(UserError, match=r"x\.toml: columns\[1\] = 'fdi' is no known metric"):
        parse(TINY.replace('"fid"', '"fdi"'), "x", Path("x.toml"))


def test_a_column_the_filling_command_does_not_write_fails_at_parse():
    with pytest.raises(UserError, match=r"x\.toml: columns\[0\] = 'fid' is not written by 'flexbench ablation'"):
        parse(ABLATION.replace('"kendall_tau"', '"fid"'), "x", Path("x.toml"))
    with pytest.raises(UserError, match=r"x\.toml: columns\[0\] = 'kendall_tau' is not written by 'flexbench "
                                        r"experiment'"):
        parse(TINY.replace('["nfe", "fid"]', '["kendall_tau"]'), "x", Path("x.toml"))


@pytest.mark.parametrize("command,needle", [
    ("flexbench rfid-ablation --store FILE", "invalid choice: 'rfid-ablation'"),
    ("flexbench ablation --no-such-flag", "unrecognized arguments"),
    ("python -m bench ablation", "must be a flexbench command line"),
    ("flexbench ablation 'unclosed", "is not a command line"),
])
def test_a_filled_by_that_is_no_real_invocation_fails_at_parse(command, needle):
    with pytest.raises(UserError, match=r"x\.toml: filled_by = .*") as err:
        parse(ABLATION.replace("flexbench ablation --preset embedded-50 --store FILE", command), "x", Path("x.toml"),
              parse_invocation)
    assert needle in str(err.value)


def test_without_the_parser_an_unknown_writer_still_fails():
    with pytest.raises(UserError, match="writes no result rows"):
        parse(ABLATION.replace("flexbench ablation", "flexbench rfid-ablation"), "x", Path("x.toml"))


def test_a_spec_with_an_unknown_metric_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, monkeypatch):
    import bench.experiments.spec as spec_module

    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "bad.toml").write_text(TINY.replace('"fid"', '"fdi"'))
    monkeypatch.setattr(spec_module, "SPEC_DIR", specs)
    store, out = tmp_path / "s.sqlite", tmp_path / "out"
    assert main(["experiment", "bad", "--store", str(store), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "columns[1] = 'fdi' is no known metric" in err[0]
    assert not store.exists() and not out.exists()


def test_the_registry_refuses_a_metric_without_writer_or_direction():
    with pytest.raises(ValueError):
        register(Metric("x", "x", writers=()))
    with pytest.raises(ValueError):
        register(Metric("x", "x", better="up"))


def test_one_key_syntax():
    assert result_key("row", "embedded", "DDIM 100", "ab12") == "row/embedded/DDIM 100/ab12"
    with pytest.raises(ValueError):
        result_key("row", "a/b")
    with pytest.raises(ValueError):
        result_key("row", "")
