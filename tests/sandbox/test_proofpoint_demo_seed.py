"""The demo seed is consistent: Proofpoint holds each customer's working (or expired) secret, Key Vault the
Proofpoint account and the portal's Authorization value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.contract.test_keyvault_examples import Vault

pytestmark = pytest.mark.sandbox

DEMO = json.loads((Path(__file__).resolve().parents[2] / "sandbox" / "seeds" / "demo.json").read_text())


def test_demo_seed_sync_state_and_credentials(sb: Any) -> None:
    sb.control.seed(DEMO)
    results = {r["domain"]: r for r in sb.control.proofpoint_sync()}
    assert results["contoso.com"]["error"].startswith("AADSTS7000222")
    assert results["fabrikam.com"]["ok"] and results["northwindtraders.com"]["ok"]

    vault = Vault(sb)
    account = json.loads(vault.call("GET", "/secrets/proofpoint-api-account/").json()["value"])
    org = requests.get(
        f"{sb.endpoints['proofpoint']}/us1/api/v1/orgs/northwindtraders.com/settings/azure",  # the channel's stack
        headers={"X-User": account["user"], "X-Password": account["password"]},
        verify=sb.ca_file,
        timeout=10,
    )
    assert org.status_code == 200 and org.json()["application_id"] == DEMO["tenants"][2]["applications"][0]["appId"]

    auth = vault.call("GET", "/secrets/vircom-portal-auth/").json()["value"]
    posted = requests.post(
        f"{sb.endpoints['portal']}/api/office365/azure-ad", json={}, headers={"Authorization": auth},
        verify=sb.ca_file, timeout=10,
    )
    assert posted.status_code == 200
