"""`make serve`: the function app's HTTP API on http://127.0.0.1:7071 against the local sandbox (demo seed) and
Azurite, behind the local App Service Authentication, as in Azure: nobody is signed in for you.

Starts the sandbox in `.sandbox/serve/` with the demo's customers, registers them, registers the local sign-in callback
(`http://127.0.0.1:7071/.auth/login/aad/callback`) and the partner sign-in's callback
(`http://127.0.0.1:7071/api/onboarding/callback`) on the MSP app as `az ad app update --web-redirect-uris` would, then
runs `python -m shared serve` with the sandbox's settings until Ctrl-C, and says how to sign in:
- a person: open the dashboard; App Service Authentication sends the browser to the sandbox's Entra sign-in page,
  which offers the MSP tenant's users (operator@ holds Rotator.Operate, reader@ Rotator.Read, nobody@ no role);
- automation: a bearer token of the sandbox's automation principal, `python -m scripts.token --role Rotator.Operate`.
Before serving it assesses every customer once (`python -m shared check`: statuses recorded, nothing rotated), so
the page shows each customer's state at once instead of "Not checked yet" until the first timer pass.
SIGTERM (a service manager, `kill`) stops it as Ctrl-C does: the local host and the sandbox are stopped too, and
`scripts/with-azurite.sh` forwards the signal and stops Azurite (GNU make forwards SIGTERM to its children).
SERVE_PORT changes the port.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

from sandbox.launch import running, stop
from scripts.browser import trusted_keys
from scripts.demo import SEED, targets

ROOT = Path(__file__).resolve().parent.parent
# Where `python -m scripts.token` finds the running sandbox (SERVE_STATE_DIR: another place, e.g. for a test).
STATE = Path(os.environ.get("SERVE_STATE_DIR") or ROOT / ".sandbox" / "serve")


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM as Ctrl-C: unwind, so every `finally` stops what it started (the local host, the sandbox)."""
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    if not os.environ.get("STATE_TABLES_CONNECTION_STRING"):
        raise SystemExit("run through `make serve` (it starts Azurite and sets STATE_TABLES_CONNECTION_STRING)")
    port = int(os.environ.get("SERVE_PORT") or 7071)
    base = f"http://127.0.0.1:{port}"
    shutil.rmtree(STATE, ignore_errors=True)
    STATE.mkdir(parents=True)
    with running(STATE, SEED) as sandbox:
        env = {**os.environ, **sandbox.settings}
        registry = sandbox.state_dir / "targets.json"
        registry.write_text(json.dumps(targets(sandbox.control.state(), sandbox.endpoints), indent=2))
        subprocess.run([sys.executable, "-m", "shared", "targets", "import", str(registry)], cwd=ROOT, env=env,
                       check=True)
        subprocess.run([sys.executable, "-m", "shared", "check"], cwd=ROOT, env=env, check=False,
                       stdout=subprocess.DEVNULL)  # exit 2 (something needs a human) is the demo seed's normal state
        sandbox.control.add_redirect_uri("msp-app", f"{base}/.auth/login/aad/callback")
        # The partner admin's sign-in for bulk onboarding (the dashboard's "Onboard customers"), as create-msp-app.sh
        # registers it in Azure.
        sandbox.control.add_redirect_uri("msp-app", f"{base}/api/onboarding/callback")
        users = sandbox.control.msp_api()["users"]
        spki = ",".join(trusted_keys(sandbox.ca_file, [sandbox.endpoints["entra"]]))
        print(f"""
Sign in as in Azure (App Service Authentication, emulated by devhost/ from infra/app/easy-auth.json):
  A person: open {base}/api/dashboard in a browser; it goes to the sandbox's Entra sign-in page, which offers
{chr(10).join(f"    {u['userPrincipalName']:<24} {', '.join(u['roles']) or 'no app role'}" for u in users)}
    The sandbox serves HTTPS with its own CA ({sandbox.ca_file}): trust it in the browser, or start Chromium with
    --user-data-dir=$(mktemp -d) --ignore-certificate-errors-spki-list={spki}
  Automation: a bearer token of the sandbox's automation principal (client credentials), e.g.
    curl -H "Authorization: Bearer $(.venv/bin/python -m scripts.token --role Rotator.Operate)" {base}/api/status
Sandbox control (its state, clock and faults): {sandbox.endpoints['control']}
""", flush=True)
        host = subprocess.Popen([sys.executable, "-m", "shared", "serve", "--port", str(port), "--keys-file",
                                 str(STATE / "host-keys.json")], cwd=ROOT, env=env)
        try:
            return host.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            stop(host, timeout=30)


if __name__ == "__main__":
    sys.exit(main())
