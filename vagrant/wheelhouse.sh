#!/usr/bin/env bash
# Fills the lab's wheelhouse: a wheel of every Python package Presculpt needs (torch from this
# machine's local CPU build, libvirt-python built once here against the same libvirt 9.0 the lab
# machines run), plus a fresh wheel of the project itself. Vagrant syncs it into every machine,
# whose pip then installs from it alone (no index): provisioning downloads nothing.
#
# The dependencies are rebuilt only when pyproject.toml changes; the project wheel every time.
# Usage: wheelhouse.sh            Environment: PRESCULPT_VAGRANT_CACHE, PYTHON (default .venv/bin/python)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${PRESCULPT_VAGRANT_CACHE:-/var/cache/presculpt-vagrant}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
WHEELS=$CACHE/wheelhouse
LOG=$CACHE/wheelhouse.log  # pip's output (setuptools' warnings are long)

say() { printf 'vagrant-wheels: %s\n' "$*" >&2; }
trap 'say "error: line $LINENO: $BASH_COMMAND failed"' ERR

[[ -x $PYTHON ]] || { say "error: $PYTHON is missing (make install)"; exit 1; }
mkdir -p "$WHEELS"
want=$(cat "$REPO/pyproject.toml" | sha256sum | cut -c1-12)
stamp=$WHEELS/.deps
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  say "building the wheels of every dependency into $WHEELS (torch comes from the local CPU build)"
  find "$WHEELS" -name '*.whl' -delete
  # The build backend too: pip builds the project from source inside the machines without an index.
  "$PYTHON" -m pip wheel -q --wheel-dir "$WHEELS" "$REPO" setuptools wheel pip >"$LOG" 2>&1 \
    || { tail -n 20 "$LOG" >&2; say "error: pip wheel failed (log: $LOG)"; exit 1; }
  ls "$WHEELS"/torch-*.whl >/dev/null 2>&1 || { say "error: no torch wheel in $WHEELS"; exit 1; }
  echo "$want" >"$stamp"
else
  say "dependency wheels are up to date in $WHEELS"
fi
rm -f "$WHEELS"/presculpt-*.whl
"$PYTHON" -m pip wheel -q --no-deps --wheel-dir "$WHEELS" "$REPO" >"$LOG" 2>&1 \
  || { tail -n 20 "$LOG" >&2; say "error: pip wheel failed (log: $LOG)"; exit 1; }
say "$(ls "$WHEELS"/*.whl | wc -l) wheels, $(du -sh "$WHEELS" | cut -f1) in $WHEELS"
