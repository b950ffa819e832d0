"""`python -m scripts.token [--role Rotator.Operate|Rotator.Read]`: an access token for the rotator's API from the
sandbox that `make serve` runs (`.sandbox/serve/`), as automation gets one from Entra ID in Azure: the
client-credentials flow of the sandbox's automation principal holding that app role, for `api://<MSP app>/.default`.
Prints the token only (for `curl -H "Authorization: Bearer $(...)"`); the principal's secret never leaves this process.
"""

from __future__ import annotations

import argparse
import json
import sys

import requests

from sandbox.client import SandboxClient
from scripts.serve import STATE


def token(role: str) -> str:
    """The token, or SystemExit saying why not."""
    endpoints_file = STATE / "endpoints.json"
    if not endpoints_file.exists():
        raise SystemExit("no sandbox of `make serve` is running (.sandbox/serve/endpoints.json is missing)")
    endpoints = json.loads(endpoints_file.read_text())
    ca_file = str(STATE / "ca.pem")
    api = SandboxClient(endpoints["control"], ca_file).msp_api()
    principal = next((a for a in api["automation"] if a["roles"] == [role]), None)
    if principal is None:
        raise SystemExit(f"the sandbox has no automation principal holding exactly {role}")
    answer = requests.post(f"{endpoints['entra']}/{api['tenantId']}/oauth2/v2.0/token", data={
        "grant_type": "client_credentials", "client_id": principal["appId"], "client_secret": principal["clientSecret"],
        "scope": f"{api['identifierUri']}/.default"}, verify=ca_file, timeout=30)
    if answer.status_code != 200:
        raise SystemExit(f"Entra (the sandbox) refused: {answer.json().get('error_description', answer.status_code)}")
    return str(answer.json()["access_token"])


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.token", description=__doc__)
    parser.add_argument("--role", default="Rotator.Operate", choices=["Rotator.Operate", "Rotator.Read"])
    print(token(parser.parse_args().role))
    return 0


if __name__ == "__main__":
    sys.exit(main())
