"""Fixtures for driving the real rotator (real SDK adapters) against the sandbox and Azurite."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.alerts import LogAlerter
from shared.bootstrap import Services, engine_config, services
from shared.clock import SystemClock
from shared.domain import DestinationConfig, Target
from shared.settings import Settings
from tests.conftest import ROOT, SandboxHandle

ROTATOR_ROLE = "Application.ReadWrite.OwnedBy"
ACCOUNT_SECRET = "proofpoint-api-account"
PORTAL_SECRET = "vircom-portal-auth"


def random_secret() -> str:
    """A secret shaped like Entra's, made at run time (never committed)."""
    return secrets.token_urlsafe(3)[:3] + "8Q~" + secrets.token_urlsafe(30)[:34]


@dataclass
class Customer:
    """One seeded customer: its tenant, its Proofpoint app registration and its current secret."""

    name: str
    tenant_id: str
    app_id: str
    object_id: str
    key_id: str
    secret: str
    domain: str
    stack: str = "us1"

    def target(self, destinations: tuple[DestinationConfig, ...] = ()) -> Target:
        return Target(self.tenant_id, self.app_id, self.name, destinations=destinations)

    def proofpoint(self) -> DestinationConfig:
        return DestinationConfig(
            "proofpoint", "proofpoint", {"stack": self.stack, "domain": self.domain, "account_secret": ACCOUNT_SECRET}
        )


def customer_seed(
    name: str,
    days_left: int | None,
    *,
    consent: bool = True,
    roles: tuple[str, ...] = (ROTATOR_ROLE,),
    owned: bool = True,
    max_lifetime_days: int | None = None,
) -> tuple[Customer, dict[str, Any]]:
    """A customer tenant whose Proofpoint app has one secret with `days_left` (None: no secret at all)."""
    c = Customer(
        name=name,
        tenant_id=str(uuid.uuid4()),
        app_id=str(uuid.uuid4()),
        object_id=str(uuid.uuid4()),
        key_id=str(uuid.uuid4()),
        secret=random_secret(),
        domain=f"{name.lower()}.example",
    )
    credentials = []
    if days_left is not None:
        credentials.append(
            {"keyId": c.key_id, "displayName": "created by hand", "secretText": c.secret,
             "startDateTime": "-300d", "endDateTime": f"{days_left:+d}d"}
        )
    tenant: dict[str, Any] = {
        "id": c.tenant_id,
        "name": name,
        "applications": [
            {"appId": c.app_id, "id": c.object_id, "displayName": "Proofpoint Essentials",
             "owners": ["msp-app"] if owned else [], "passwordCredentials": credentials}
        ],
        "grants": [{"appId": "msp-app", "roles": list(roles)}] if consent else [],
    }
    if max_lifetime_days is not None:
        tenant["maxSecretLifetimeDays"] = max_lifetime_days
    settings: dict[str, Any] = {"application_id": c.app_id}
    if days_left is not None:
        settings["ad_key"] = c.secret
    seed = {
        "tenants": [tenant],
        "proofpoint": {
            "orgs": [{"domain": c.domain, "stack": c.stack, "tenantId": c.tenant_id, "settings": settings}]
        },
    }
    return c, seed


@dataclass
class World:
    """The test's view of the sandbox: seeding helpers and state queries."""

    sb: SandboxHandle
    env: dict[str, str]
    prefix: str
    proofpoint_user: str = "channel-admin@msp.example"
    proofpoint_password: str = field(default_factory=random_secret)
    portal_auth: str = field(default_factory=lambda: "Bearer " + secrets.token_hex(16))

    def seed_customer(self, name: str, days_left: int | None, **kwargs: Any) -> Customer:
        customer, seed = customer_seed(name, days_left, **kwargs)
        self.sb.control.seed(seed)
        return customer

    def seed_accounts(self) -> None:
        """The Proofpoint channel admin, the portal's auth, and both in Key Vault."""
        import json

        self.sb.control.seed(
            {
                "proofpoint": {"accounts": [{"user": self.proofpoint_user, "password": self.proofpoint_password,
                                             "domains": ["*"]}]},
                "portal": {"authorization": self.portal_auth},
                "keyvault": {"secrets": [
                    {"name": ACCOUNT_SECRET,
                     "value": json.dumps({"user": self.proofpoint_user, "password": self.proofpoint_password})},
                    {"name": PORTAL_SECRET, "value": self.portal_auth},
                ]},
            }
        )

    def application(self, customer: Customer) -> dict[str, Any]:
        tenant = next(t for t in self.sb.control.state()["tenants"] if t["id"] == customer.tenant_id)
        return next(a for a in tenant["applications"] if a["appId"] == customer.app_id)

    def credentials(self, customer: Customer) -> list[dict[str, Any]]:
        return list(self.application(customer)["passwordCredentials"])

    def versions(self, customer: Customer) -> list[dict[str, Any]]:
        name = Target(customer.tenant_id, customer.app_id).secret_name
        return list(self.sb.control.state()["keyvault"]["secrets"].get(name, []))

    @property
    def queue(self) -> str:
        """This test's private rotation work queue (its poison queue: the name + "-poison")."""
        return f"{self.prefix}-work"

    def settings(self, **overrides: str) -> Settings:
        return Settings.from_env({**self.env, **overrides})

    def cli(self, *args: str, offset: float = 0.0) -> Rotating:
        """The rotator's command line in its own process (so a test can kill it mid-step)."""
        return Rotating(
            [sys.executable, "-m", "shared", "--table-prefix", self.prefix,
             "--clock-offset-seconds", str(offset), *args],
            cwd=ROOT, env={**os.environ, **self.env},
        )


class Rotating(subprocess.Popen[bytes]):
    """The CLI in its own process, its output (stdout and stderr) in a file: a pipe that nobody reads until the
    process ends fills up with its log and blocks it mid-rotation, short of the point a test waits for."""

    def __init__(self, args: list[str], **kwargs: Any) -> None:
        handle, name = tempfile.mkstemp(prefix="rotator-", suffix=".log")
        self.log = Path(name)
        with os.fdopen(handle, "wb") as sink:
            super().__init__(args, stdout=sink, stderr=subprocess.STDOUT, **kwargs)

    def output(self) -> str:
        return self.log.read_bytes().decode(errors="replace")


@pytest.fixture
def world(sb: SandboxHandle, monkeypatch: pytest.MonkeyPatch) -> World:
    tables = os.environ.get("STATE_TABLES_CONNECTION_STRING")
    if not tables:
        pytest.fail("STATE_TABLES_CONNECTION_STRING is not set: run the tests through `make test` (starts Azurite)")
    env = {
        **sb.settings,
        "STATE_TABLES_CONNECTION_STRING": tables,
        "VERIFY_TIMEOUT_SECONDS": "20",
        "RETIRE_GRACE_HOURS": "24",
        # The rotation work queue: Azurite's queue service, started beside its tables by scripts/with-azurite.sh.
        **({"WORK_QUEUE": os.environ["WORK_QUEUE"]} if os.environ.get("WORK_QUEUE") else {}),
    }
    # The managed identity credential reads App Service's variables from the process environment.
    for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER"):
        monkeypatch.setenv(name, env[name])
    return World(sb, env, "t" + uuid.uuid4().hex[:12])


Rotator = Callable[..., AbstractAsyncContextManager[Services]]


@pytest.fixture
def rotator(world: World) -> Rotator:
    """Builds the real rotator (every adapter real) on the test's tables; `offset` shifts its clock."""

    def build(offset: timedelta = timedelta(0), alerter: LogAlerter | None = None,
              **overrides: str) -> AbstractAsyncContextManager[Services]:
        settings = world.settings(**overrides)
        config = engine_config(settings)
        return services(settings, clock=SystemClock(offset), table_prefix=world.prefix, work_queue=world.queue,
                        alerter=alerter or LogAlerter(), config=config)

    return build


@pytest.fixture
async def svc(rotator: Rotator) -> AsyncIterator[Services]:
    async with rotator() as built:
        yield built


@pytest.fixture(params=["merge", "replace"])
def put_semantics(request: pytest.FixtureRequest, world: World) -> str:
    """The sandbox Proofpoint's PUT semantics for this test (unknown on the real service: the rotation must hold
    under either)."""
    world.sb.control.seed({"proofpoint": {"putSemantics": request.param}})
    return str(request.param)
