#!/usr/bin/env bash
# Installs Debian's Chromium for the dashboard's browser tests and the demo's screenshot (Playwright drives it
# through its executable path: `playwright install` would download a browser build, which we never do).
# Idempotent. As root it uses apt-get (CI runs as root); otherwise sudo when it needs no password. Where neither
# works it says so: outside CI the browser tests then skip with that reason; in CI (CI=true) it fails.
set -euo pipefail
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
[ -x "$CHROMIUM" ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "install-chromium: $CHROMIUM is missing and installing it needs root: run 'sudo apt-get install chromium'." >&2
  echo "install-chromium: until then the dashboard's browser tests skip and make demo takes no screenshot." >&2
  [ "${CI:-}" = "true" ] && exit 1
  exit 0
fi
LOG=$(mktemp "${TMPDIR:-/tmp}/install-chromium.XXXXXX")
if ! {
  "${as_root[@]}" apt-get update -q &&
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q chromium
} >"$LOG" 2>&1; then
  cat "$LOG" >&2
  echo "install-chromium: apt-get could not install chromium" >&2
  rm -f "$LOG"
  exit 1
fi
rm -f "$LOG"
"$CHROMIUM" --version
