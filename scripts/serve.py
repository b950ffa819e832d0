"""`make serve`: the function app's HTTP API on 127.0.0.1 against the local sandbox (demo seed) and Azurite.

Starts the sandbox with the demo's three customers, registers them, then runs `python -m shared serve` with the
sandbox's settings until Ctrl-C. SERVE_ARGS passes options to `serve` (default: signed in, through the local
stand-in for Easy Auth, as an operator holding both app roles).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from sandbox.launch import running
from scripts.demo import SEED, targets

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ARGS = "--port 7071 --as operator@msp.example --roles Rotator.Read,Rotator.Operate"


def main() -> int:
    if not os.environ.get("STATE_TABLES_CONNECTION_STRING"):
        raise SystemExit("run through `make serve` (it starts Azurite and sets STATE_TABLES_CONNECTION_STRING)")
    serve_args = shlex.split(os.environ.get("SERVE_ARGS") or DEFAULT_ARGS)
    with tempfile.TemporaryDirectory(prefix="rotator-serve-") as directory, running(Path(directory), SEED) as sandbox:
        env = {**os.environ, **sandbox.settings}
        registry = sandbox.state_dir / "targets.json"
        registry.write_text(json.dumps(targets(sandbox.control.state(), sandbox.endpoints), indent=2))
        subprocess.run([sys.executable, "-m", "shared", "targets", "import", str(registry)], cwd=ROOT, env=env,
                       check=True)
        print(f"Sandbox control (its state, clock and faults): {sandbox.endpoints['control']}", flush=True)
        try:
            return subprocess.run([sys.executable, "-m", "shared", "serve", *serve_args], cwd=ROOT, env=env,
                                  check=False).returncode
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main())
