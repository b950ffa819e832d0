#!/usr/bin/env bash
# Runs a command with a private Azurite (Tables) on a free loopback port, stopped on any exit.
# Exports STATE_TABLES_CONNECTION_STRING for the command. Usage: scripts/with-azurite.sh CMD [ARGS...]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
azurite="$here/node_modules/.bin/azurite-table"
[ -x "$azurite" ] || { echo "Azurite is not installed: run 'npm install' (make does it)" >&2; exit 2; }
workdir=$(mktemp -d "${TMPDIR:-/tmp}/azurite.XXXXXX")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$azurite" --silent --skipApiVersionCheck --disableTelemetry --inMemoryPersistence \
  --tableHost 127.0.0.1 --tablePort "$port" >"$workdir/azurite.log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$workdir"; }
trap cleanup EXIT INT TERM
for _ in $(seq 1 100); do
  if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then break; fi
  kill -0 "$pid" 2>/dev/null || { cat "$workdir/azurite.log" >&2; echo "Azurite failed to start" >&2; exit 1; }
  sleep 0.1
done
# The well-known Azurite development account key (public, documented by Microsoft).
export STATE_TABLES_CONNECTION_STRING="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;TableEndpoint=http://127.0.0.1:$port/devstoreaccount1;"
set +e
"$@"
rc=$?
set -e
exit $rc
