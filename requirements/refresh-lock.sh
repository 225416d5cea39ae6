#!/usr/bin/env bash
# Regenerate requirements/lock.txt, the exact versions the README's commands and .ci/run install.
#
#   requirements/refresh-lock.sh              # fresh venv: pip resolves the newest versions that pyproject.toml's
#                                             # ranges (and this machine's pip constraints) allow, then freezes them
#   requirements/refresh-lock.sh --from VENV  # freeze an existing venv that has the project installed with
#                                             # '.[test,ray]' (what the current lock was made from)
#
# Then run .ci/run (the suite must pass with the new lock) and commit the lock. See docs/dependencies.md.
set -euo pipefail
cd "$(dirname "$0")/.."
extras='.[test,ray]'
if [[ "${1:-}" == "--from" ]]; then
    venv="${2:?usage: requirements/refresh-lock.sh [--from VENV]}"
else
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    venv="$tmp/venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q -e "$extras"
fi
python=$("$venv/bin/python" -c 'import platform; print(platform.python_version())')
out=requirements/lock.txt
new=$(mktemp "$out.XXXXXX")
trap 'rm -f "$new"' ERR
{
    echo "# Exact versions the test suite passes with: a pip constraints file (-c), so only what"
    echo "# pip install -e '$extras' needs is installed. Made with Python $python on $(uname -sm)."
    echo "# Regenerate with requirements/refresh-lock.sh (docs/dependencies.md); do not edit by hand."
    "$venv/bin/pip" freeze --exclude-editable --all | grep -v -E '^pip=='
} > "$new"
chmod 644 "$new"
mv "$new" "$out"
echo "wrote $out ($(grep -c '==' "$out") pins)"
