"""The README opens with the two commands, both install the lock file, and CI runs the README's test command."""
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = "-c requirements/lock.txt"


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    block = text.split("```bash", 1)[1].split("```", 1)[0]
    return [line for line in block.strip().splitlines() if line.strip()]


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_readme_opens_with_two_commands():
    main_job, tests = _readme_commands()
    assert main_job.endswith("flexbench demo")
    assert "pytest" in tests


def test_both_readme_commands_install_the_lock_and_tests_get_every_extra():
    main_job, tests = _readme_commands()
    assert LOCK in main_job and LOCK in tests
    assert re.search(r"-e '\.\[test,ray\]'", tests)


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _readme_commands()[1] in ci.splitlines()
    assert "python3 -m venv" in ci
    assert "set -euo pipefail" in ci.splitlines()  # any failing step fails CI


def test_lock_pins_every_dependency_within_the_pyproject_ranges():
    """Exact versions for everything pyproject.toml declares (runtime and every extra), each inside its range."""
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python >= 3.11 (tomllib)")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared += extra
    pins = _lock()
    assert all(re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", v) for v in pins.values())
    for spec in declared:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in requirements/lock.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} outside {spec}"
    assert "ray" in project["optional-dependencies"] and canonicalize_name("flexiffusion-bench") not in pins


def test_readme_test_command_sets_up_system_packages_first(tmp_path):
    """On a fresh machine the README's test command installs what the tests need (as root) or names it: the
    system-package step comes first, and without root it fails in one line naming the package."""
    import os
    import shutil
    import subprocess

    assert _readme_commands()[1].startswith(".ci/system-packages && ")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in ("bash", "mktemp", "rm", "python3", "env"):
        os.symlink(shutil.which(tool), bin_ / tool)
    (bin_ / "id").write_text("#!/bin/sh\necho 1000\n")  # not root; and no chromium on this PATH
    (bin_ / "id").chmod(0o755)
    done = subprocess.run([str(bin_ / "bash"), str(ROOT / ".ci" / "system-packages")], capture_output=True, text=True,
                          env={"PATH": str(bin_)})
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "chromium" in done.stderr and "apt-get install" in done.stderr
