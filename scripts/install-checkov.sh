#!/usr/bin/env bash
# Installs checkov into its own virtual environment (.tools/checkov): its many pinned dependencies
# conflict with the app's, so it never goes into .venv. Idempotent: does nothing when the pinned
# version is already there. Used by `make test` (through the Makefile) and by tests/infra/test_checkov.py.
set -euo pipefail
CHECKOV_VERSION="${CHECKOV_VERSION:-3.3.30}"
cd "$(dirname "$0")/.."
TOOL_VENV=.tools/checkov
STAMP="$TOOL_VENV/.installed-$CHECKOV_VERSION"
if [ -f "$STAMP" ] && [ -x "$TOOL_VENV/bin/checkov" ]; then
  exit 0
fi
rm -rf "$TOOL_VENV"
mkdir -p .tools
LOG=.tools/install-checkov.log
# Quiet: pip's chatter goes to a log, shown only when the install fails.
if ! {
  python3 -m venv "$TOOL_VENV" &&
  "$TOOL_VENV/bin/python" -m pip install --disable-pip-version-check -q "checkov==$CHECKOV_VERSION" &&
  "$TOOL_VENV/bin/checkov" --version
} >"$LOG" 2>&1; then
  cat "$LOG" >&2
  echo "install-checkov: failed to install checkov==$CHECKOV_VERSION into $TOOL_VENV" >&2
  exit 1
fi
touch "$STAMP"
