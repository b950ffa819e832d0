"""Proofpoint's org list (GET /orgs/{channel}/orgs) through the product's ProofpointOrgList against the sandbox: the
channel's customer orgs with their domains, the account read from Key Vault, refusals as Proofpoint answers them,
and the password never in an error or a log."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from shared.adapters.keyvault import KeyVaultSecretStore
from shared.destinations.proofpoint import ProofpointOrgList, child_orgs_of
from shared.destinations.transport import guarded_sessions
from shared.errors import NotFound, RotationError, Throttled, Unreachable
from shared.ports import ProofpointOrg
from tests.destinations import EVERY_SECRET, settings_of

CHANNEL = "msp-dest.example"


def seed_channel(sb: Any) -> None:
    sb.control.seed({"proofpoint": {
        "channels": [{"domain": CHANNEL, "stack": "us2", "name": "The MSP"}],
        "orgs": [
            {"domain": "fabrikam-dest.com", "stack": "us2", "tenantId": "d0570000-0000-4000-8000-0000000000f1",
             "name": "Fabrikam", "parent": CHANNEL, "domains": ["fabrikam-dest.co.uk"]},
            {"domain": "elsewhere-dest.com", "stack": "us2", "tenantId": "d0570000-0000-4000-8000-0000000000f2",
             "name": "Not ours", "parent": "other-channel.example"},
        ],
    }})


def orgs(sb: Any, store: KeyVaultSecretStore, account: str = "pp-account", channel: str = CHANNEL,
         stack: str = "us2") -> ProofpointOrgList:
    settings = settings_of(sb)
    return ProofpointOrgList(store, base_url=settings.proofpoint_base_url, channel_domain=channel, stack=stack,
                             account_secret=account, verify=settings.ca_bundle,
                             session_factory=guarded_sessions(settings.destination_allowed_hosts))


async def test_the_channels_customer_orgs_with_every_domain(sb: Any, store: KeyVaultSecretStore) -> None:
    seed_channel(sb)
    found = await orgs(sb, store).child_orgs()
    assert found == [ProofpointOrg("Fabrikam", "fabrikam-dest.com", ("fabrikam-dest.com", "fabrikam-dest.co.uk"),
                                   "us2")]


@pytest.mark.parametrize(("account", "channel", "stack", "error", "code"), [
    ("pp-account-wrong", CHANNEL, "us2", Unreachable, "ProofpointAuthFailed"),
    ("pp-org-admin", CHANNEL, "us2", Unreachable, "ProofpointForbidden"),
    ("pp-account", "no-such-channel.example", "us2", NotFound, "ProofpointOrgNotFound"),
    ("pp-account", CHANNEL, "us1", NotFound, "ProofpointOrgNotFound"),  # the channel lives on us2
])
async def test_refusals_name_the_cause_and_never_the_password(
    sb: Any, store: KeyVaultSecretStore, caplog: pytest.LogCaptureFixture, account: str, channel: str, stack: str,
    error: type[RotationError], code: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    seed_channel(sb)
    with pytest.raises(error) as raised:
        await orgs(sb, store, account, channel, stack).child_orgs()
    assert raised.value.code == code
    text = repr(raised.value) + str(raised.value) + caplog.text
    assert not [s for s in EVERY_SECRET if s in text]


async def test_throttled_is_told_with_its_wait(sb: Any, store: KeyVaultSecretStore) -> None:
    seed_channel(sb)
    sb.control.add_fault("proofpoint", method="GET", status=429, retry_after=7)
    with pytest.raises(Throttled) as raised:
        await orgs(sb, store).child_orgs()
    assert raised.value.retry_after == 7


def test_an_answer_is_read_leniently_where_the_guide_is_silent() -> None:
    body = {"orgs": [{"primary_domain": "A.example", "domains": ["a.example", {"domain": "b.example"}, 7]},
                     {"name": "no domain"}, "junk", {"primary_domain": "not a domain"}]}
    assert child_orgs_of(body, "eu1") == [ProofpointOrg("A.example", "a.example", ("a.example", "b.example"), "eu1")]
    with pytest.raises(RotationError, match="no orgs list"):
        child_orgs_of({"data": []}, "eu1")
