#!/usr/bin/env bash
# Runs a command with a private Azurite (Tables and Queues) on free loopback ports, stopped on any exit.
# Exports STATE_TABLES_CONNECTION_STRING (the state tables) and WORK_QUEUE (the rotation work queue) for the command.
# Usage: scripts/with-azurite.sh CMD [ARGS...]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin="$here/node_modules/.bin"
[ -x "$bin/azurite-table" ] && [ -x "$bin/azurite-queue" ] \
  || { echo "Azurite is not installed: run 'npm install' (make does it)" >&2; exit 2; }
workdir=$(mktemp -d "${TMPDIR:-/tmp}/azurite.XXXXXX")
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
table_port=$(free_port)
queue_port=$(free_port)
common=(--silent --skipApiVersionCheck --disableTelemetry --inMemoryPersistence)
"$bin/azurite-table" "${common[@]}" --tableHost 127.0.0.1 --tablePort "$table_port" >"$workdir/table.log" 2>&1 &
table_pid=$!
"$bin/azurite-queue" "${common[@]}" --queueHost 127.0.0.1 --queuePort "$queue_port" >"$workdir/queue.log" 2>&1 &
queue_pid=$!
cleanup() {
  kill "$table_pid" "$queue_pid" 2>/dev/null || true
  wait "$table_pid" "$queue_pid" 2>/dev/null || true
  rm -rf "$workdir"
}
trap cleanup EXIT INT TERM
wait_for() {  # port pid name
  for _ in $(seq 1 300); do
    if python3 -c "import socket; socket.create_connection(('127.0.0.1', $1), 0.2)" 2>/dev/null; then return 0; fi
    kill -0 "$2" 2>/dev/null || { cat "$workdir/$3.log" >&2; echo "Azurite ($3) failed to start" >&2; exit 1; }
    sleep 0.1
  done
  echo "Azurite ($3) did not listen on port $1 within 30 s" >&2
  exit 1
}
wait_for "$table_port" "$table_pid" table
wait_for "$queue_port" "$queue_pid" queue
# The well-known Azurite development account key (public, documented by Microsoft).
account="AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
export STATE_TABLES_CONNECTION_STRING="DefaultEndpointsProtocol=http;$account;TableEndpoint=http://127.0.0.1:$table_port/devstoreaccount1;"
export WORK_QUEUE="DefaultEndpointsProtocol=http;$account;QueueEndpoint=http://127.0.0.1:$queue_port/devstoreaccount1;"
# The command runs as a job of its own (job control on: its own process group, SIGINT not ignored) and the script
# waits for it, so that a SIGTERM (a service manager, `kill`, or make forwarding its own) reaches the command at once
# instead of after it ends (bash runs a trap only once a foreground command returns). Each signal goes to the
# command's whole process group, as Ctrl-C in a terminal does; the command stops what it started, then the EXIT
# trap stops Azurite.
set +e
set -m
"$@" &
child=$!
set +m
trap 'kill -TERM -- "-$child" 2>/dev/null; wait "$child"; exit 143' TERM
trap 'kill -INT -- "-$child" 2>/dev/null; wait "$child"; exit 130' INT
wait "$child"
rc=$?
set -e
exit $rc
