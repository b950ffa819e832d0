"""A partner (MSP) with GDAP customers in the sandbox, for bulk onboarding's sandbox tests and its benchmark:
customer tenants from sandbox.gdap.customers_seed (each a Proofpoint app, a verified domain, a GDAP relationship),
their Proofpoint orgs under the MSP's channel org, the MSP's Proofpoint account in Key Vault, and the partner
admin's device code sign-in played at the sandbox's verification page."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aiohttp

from sandbox.client import SandboxClient, answer_device_code
from sandbox.gdap import customers_seed
from shared.adapters.partner import GdapPartnerSession
from shared.adapters.partner_sessions import partner_session, sign_in
from shared.settings import Settings
from tests.rotation.conftest import ACCOUNT_SECRET, random_secret

CHANNEL = "msp-channel.example"
ADMIN = "partner-admin@msp.example"
SEED_BATCH = 100


def tenant_id(n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox-gdap-customer-{n}"))


def app_id(n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox-gdap-proofpoint-{n}"))


def domain(n: int) -> str:
    return f"customer{n:04d}.example"


def seed(control: SandboxClient, count: int, *, missing_role_every: int = 0, start: int = 1) -> None:
    """`count` GDAP customers with their Proofpoint orgs under the channel, and the MSP's Proofpoint account."""
    user, password = "channel-admin@msp.example", random_secret()
    control.seed({
        "proofpoint": {"accounts": [{"user": user, "password": password, "domains": ["*"]}],
                       "channels": [{"domain": CHANNEL, "stack": "us1", "name": "The MSP"}]},
        "keyvault": {"secrets": [{"name": ACCOUNT_SECRET, "value": json.dumps({"user": user, "password": password})}]},
    })
    for first in range(start, start + count, SEED_BATCH):
        last = min(start + count, first + SEED_BATCH)
        doc: dict[str, Any] = customers_seed(last - first, start=first, missing_role_every=missing_role_every)
        doc["proofpoint"] = {"orgs": [
            {"domain": domain(n), "stack": "us1", "tenantId": tenant_id(n), "name": f"Customer {n:04d}",
             "parent": CHANNEL, "settings": {"application_id": app_id(n)}} for n in range(first, last)]}
        control.seed(doc)


async def signed_in_session(settings: Settings, http: aiohttp.ClientSession, control: SandboxClient,
                            entra_url: str, ca_file: str, upn: str = ADMIN) -> GdapPartnerSession:
    """The partner admin signed in with the device code flow (the verification page answered as a person would)."""
    control.set_device_code_interval(1)
    signing = sign_in(settings, http, confidential=False)
    prompt = await signing.start_device_code()
    waiting = asyncio.ensure_future(signing.wait_device_code(prompt))
    await asyncio.to_thread(answer_device_code, entra_url, prompt.user_code, upn, ca_file)
    await waiting
    return partner_session(settings, signing, http)
