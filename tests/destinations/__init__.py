"""The destination adapters against the sandbox: a customer tenant, its Proofpoint org, the portal, the vault.

Helpers shared by the test modules: the seed, the real Key Vault secret store wired to the sandbox, a delivery,
and the check that no secret reached an exception or a log record.
"""

from __future__ import annotations

import http.server
import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.identity.aio import ClientSecretCredential
from azure.keyvault.secrets.aio import SecretClient

from shared.adapters.keyvault import KeyVaultSecretStore
from shared.destinations.transport import Resolver
from shared.domain import Secret
from shared.ports import Delivery
from shared.settings import Settings
from tests.material import client_secret

TENANT = "d0570000-0000-4000-8000-0000000000d1"
APP = "d0a70000-0000-4000-8000-0000000000d2"
OTHER_APP = "d0a70000-0000-4000-8000-0000000000d3"
OLD_SECRET = client_secret("Old")
NEW_SECRET = client_secret("New")
NEW_KEY_ID = "d0c10000-0000-4000-8000-0000000000d4"
WRONG_SECRET = client_secret("Bad")
DOMAIN = "contoso-dest.com"
SYNCED_AT = "2026-01-02T03:04:05Z"  # the org's last successful sync, as seeded
STACK = "us2"
PP_USER = "channel-admin@msp-dest.example"
PP_PASSWORD = "Pp-Account-Password-7c1e9a"
ORG_ADMIN_USER = "admin@other-dest.com"
ORG_ADMIN_PASSWORD = "Org-Admin-Password-55aa"
PORTAL_AUTH = "Bearer portal-token-9f8e7d6c5b4a"
SECRET_NAME = f"ppsync-{TENANT}-{APP}"
SECRET_VERSION = "0123456789abcdef0123456789abcdef"
EVERY_SECRET = (NEW_SECRET, OLD_SECRET, WRONG_SECRET, PP_PASSWORD, ORG_ADMIN_PASSWORD, PORTAL_AUTH,
                PORTAL_AUTH.split(" ", 1)[1])

_KV_APP = "d0a70000-0000-4000-8000-0000000000a1"
_KV_APP_SECRET = client_secret("Kva")


def seed(sb: Any) -> None:
    """A customer tenant whose app holds the old and the new secret, its Proofpoint org, the portal, the vault."""
    msp_tenant = sb.control.msp()["tenantId"]
    sb.control.seed(
        {
            "tenants": [
                {
                    "id": TENANT,
                    "name": "Contoso (destinations)",
                    "applications": [
                        {
                            "appId": APP,
                            "displayName": "Proofpoint Essentials",
                            "passwordCredentials": [
                                {"displayName": "by hand", "secretText": OLD_SECRET, "endDateTime": "+20d"},
                                {"keyId": NEW_KEY_ID, "displayName": "rotated", "secretText": NEW_SECRET,
                                 "endDateTime": "+180d"},
                            ],
                        },
                        {"appId": OTHER_APP, "displayName": "Something else", "passwordCredentials": []},
                    ],
                },
                {
                    "id": msp_tenant,
                    "applications": [
                        {
                            "appId": _KV_APP,
                            "displayName": "destinations-test-vault-reader",
                            "passwordCredentials": [{"secretText": _KV_APP_SECRET, "endDateTime": "+1d"}],
                        }
                    ],
                },
            ],
            "proofpoint": {
                "accounts": [
                    {"user": PP_USER, "password": PP_PASSWORD, "domains": ["*"]},
                    {"user": ORG_ADMIN_USER, "password": ORG_ADMIN_PASSWORD, "domains": ["other-dest.com"]},
                ],
                "orgs": [
                    {
                        "domain": DOMAIN,
                        "stack": STACK,
                        "tenantId": TENANT,
                        "settings": {"application_id": APP, "ad_key": OLD_SECRET, "sync_frequency": 168,
                                     "add_users": False, "remove_deleted_users": True},
                        "extraFields": {"secret_expiry": "+20d", "last_successful_sync": SYNCED_AT,
                                        "last_sync_status": "success", "tenant_id": TENANT},
                    }
                ],
            },
            "portal": {"authorization": PORTAL_AUTH},
            "keyvault": {
                "secrets": [
                    {"name": "pp-account", "value": json.dumps({"user": PP_USER, "password": PP_PASSWORD})},
                    {"name": "pp-account-wrong", "value": json.dumps({"user": PP_USER, "password": "nope-" + "x"})},
                    {"name": "pp-org-admin",
                     "value": json.dumps({"user": ORG_ADMIN_USER, "password": ORG_ADMIN_PASSWORD})},
                    {"name": "pp-account-not-json", "value": PP_PASSWORD},
                    {"name": "portal-auth", "value": PORTAL_AUTH},
                    {"name": "portal-auth-wrong", "value": "Bearer not-the-right-one"},
                ]
            },
        }
    )


@asynccontextmanager
async def vault_store(sb: Any) -> AsyncIterator[KeyVaultSecretStore]:
    """The product's KeyVaultSecretStore on the real aio SecretClient, signed in as an app of the MSP tenant."""
    credential = ClientSecretCredential(
        sb.control.msp()["tenantId"], _KV_APP, _KV_APP_SECRET,
        authority=sb.settings["AZURE_AUTHORITY_HOST"], disable_instance_discovery=True, connection_verify=sb.ca_file,
    )
    client = SecretClient(sb.settings["KEY_VAULT_URL"], credential, verify_challenge_resource=False,
                          connection_verify=sb.ca_file)
    store = KeyVaultSecretStore(client)
    try:
        yield store
    finally:
        await store.close()
        await credential.close()


def settings_of(sb: Any) -> Settings:
    """The rotator's settings as the sandbox writes them (the state store is not used here)."""
    return Settings.from_env({**sb.settings, "STATE_TABLES_CONNECTION_STRING": "UseDevelopmentStorage=true"})


def delivery(secret: str = NEW_SECRET, expires: datetime | None = None) -> Delivery:
    return Delivery(
        tenant_id=TENANT,
        app_id=APP,
        key_id=NEW_KEY_ID,
        secret=Secret(secret),
        expires=expires or datetime.now(UTC) + timedelta(days=180),
        customer="Contoso",
        secret_name=SECRET_NAME,
        version=SECRET_VERSION,
    )


def org_settings(sb: Any, domain: str = DOMAIN) -> dict[str, Any]:
    for org in sb.control.state()["proofpoint"]["orgs"]:
        if org["domain"] == domain:
            settings: dict[str, Any] = org["settings"]
            return settings
    raise AssertionError(f"no org {domain} in the sandbox")


def assert_no_secret(error: BaseException, records: list[logging.LogRecord]) -> None:
    """No secret value in the exception (message, repr, chained causes) nor in any log record."""
    texts: list[str] = []
    seen: BaseException | None = error
    while seen is not None:
        texts += [str(seen), repr(seen), str(getattr(seen, "message", ""))]
        seen = seen.__cause__ or seen.__context__
    for record in records:
        texts.append(record.getMessage())
        texts += [repr(v) for v in record.__dict__.values()]
    blob = "\n".join(texts)
    for value in EVERY_SECRET:
        assert value not in blob, "a secret value leaked into an exception or a log record"


@contextmanager
def loopback_server(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[int]:
    """A plain HTTP server on 127.0.0.1 in a thread, standing in for a destination: its port, shut down after."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def resolver(answers: dict[str, list[str]]) -> Resolver:
    """What DNS would answer for each name: the address guard's own parameter, so no DNS is needed."""
    return lambda name, port: answers[name]
