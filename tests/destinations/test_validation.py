"""validate_destination: what the registry API refuses to store, and why (plain data, no sandbox)."""

from __future__ import annotations

import pytest

from shared.destinations import validate_destination
from shared.domain import DestinationConfig
from tests.material import client_secret

PASTED_SECRET = client_secret("Xyz")
PROOFPOINT = {"stack": "us1", "domain": "contoso.com", "account_secret": "proofpoint-api-account"}
HTTP = {"url": "https://portal.example.net/api/aad", "auth_secret": "vircom-portal-auth"}

GOOD = [
    DestinationConfig("proofpoint", "proofpoint", PROOFPOINT),
    DestinationConfig("pp eu", "proofpoint", {**PROOFPOINT, "stack": "eu1", "domain": "sub.fabrikam.co.uk"}),
    *(DestinationConfig(f"pp {s}", "proofpoint", {**PROOFPOINT, "stack": s}) for s in ("us2", "us3", "us4", "us5")),
    DestinationConfig("pp url", "proofpoint", {"base_url": "https://us6.proofpointessentials.com/api/v1",
                                               "domain": "contoso.com", "account_secret": "proofpoint-api-account"}),
    DestinationConfig("vircom", "http", {"preset": "vircom-portal", "url": "https://portal.example.net/x"}),
    DestinationConfig("portal", "http", {**HTTP, "method": "PUT", "auth_header": "X-Api-Key",
                                         "success_status": "200, 204", "success_field": "ok", "success_value": "true",
                                         "field_clientSecret": "secret", "field_customer": "customer_name"}),
    DestinationConfig("helpdesk", "notify-only"),
    DestinationConfig("helpdesk-2", "notify-only", {"instructions": "the Vircom Portal, Office 365 page"}),
]

BAD = [
    (DestinationConfig("x", "smtp"), "unknown kind 'smtp'"),
    (DestinationConfig("", "notify-only"), "destination name"),
    (DestinationConfig("a/b", "notify-only"), "destination name"),
    (DestinationConfig("pp", "proofpoint", {"stack": "us1", "domain": "contoso.com"}),
     "missing option(s) account_secret"),
    (DestinationConfig("pp", "proofpoint", {**PROOFPOINT, "region": "us"}), "unknown option 'region'"),
    (DestinationConfig("pp", "proofpoint", {**PROOFPOINT, "stack": "us6"}), "stack must be one of"),
    (DestinationConfig("pp", "proofpoint", {**PROOFPOINT, "stack": "US1"}), "stack must be one of"),
    (DestinationConfig("pp", "proofpoint", {**PROOFPOINT, "domain": "contoso"}), "primary domain"),
    (DestinationConfig("pp", "proofpoint", {**PROOFPOINT, "domain": "contoso.com/../x"}), "primary domain"),
    (DestinationConfig("pp", "proofpoint", {**PROOFPOINT, "domain": "-bad.com"}), "primary domain"),
    (DestinationConfig("pp", "proofpoint", {**PROOFPOINT, "domain": "https://contoso.com"}), "primary domain"),
    (DestinationConfig("pp", "proofpoint", {**PROOFPOINT, "account_secret": "proofpoint_account"}),
     "name of a Key Vault secret"),
    (DestinationConfig("pp", "proofpoint", {**PROOFPOINT, "account_secret": '{"user": "a", "password": "b"}'}),
     "looks like a secret value"),
    (DestinationConfig("pp", "proofpoint", {**PROOFPOINT, "account_secret": PASTED_SECRET}),
     "looks like a secret value"),
    (DestinationConfig("pp", "proofpoint", {**PROOFPOINT, "account_secret": "k" * 128}), "name of a Key Vault secret"),
    (DestinationConfig("pp", "proofpoint", {**PROOFPOINT, "stack": 1}), "must be a string"),  # type: ignore[dict-item]
    (DestinationConfig("pp", "proofpoint", {**PROOFPOINT, "stack": "eu2"}), "stack must be one of"),
    (DestinationConfig("pp", "proofpoint", {**PROOFPOINT, "stack": "us1.proofpointessentials.com"}),
     "stack must be one of"),
    (DestinationConfig("pp", "proofpoint", {"domain": "contoso.com", "account_secret": "a"}), "either stack"),
    (DestinationConfig("pp", "proofpoint", {**PROOFPOINT, "base_url": "https://us1.proofpointessentials.com"}),
     "not both"),
    (DestinationConfig("pp", "proofpoint", {"base_url": "http://us1.proofpointessentials.com/api/v1",
                                            "domain": "contoso.com", "account_secret": "a"}), "https://"),
    (DestinationConfig("pp", "proofpoint", {"base_url": "us1.proofpointessentials.com",
                                            "domain": "contoso.com", "account_secret": "a"}), "https://"),
    (DestinationConfig("pp", "proofpoint", {"base_url": "https://u:p@us1.proofpointessentials.com/api/v1",
                                            "domain": "contoso.com", "account_secret": "a"}), "plain https"),
    (DestinationConfig("pp", "proofpoint", {"base_url": "https://us1.proofpointessentials.com/api/v1?x=1",
                                            "domain": "contoso.com", "account_secret": "a"}), "plain https"),
    (DestinationConfig("h", "http", {"auth_secret": "a"}), "missing option(s) url"),
    (DestinationConfig("h", "http", {**HTTP, "url": "http://portal.example.net/api"}), "https://"),
    (DestinationConfig("h", "http", {**HTTP, "url": "ftp://portal.example.net/api"}), "https://"),
    (DestinationConfig("h", "http", {**HTTP, "url": "https:///api"}), "https://"),
    (DestinationConfig("h", "http", {**HTTP, "url": "https://user:pw@portal.example.net/"}), "credentials"),
    (DestinationConfig("h", "http", {**HTTP, "url": "https://x.example.net/hook?code=abc"}), "query"),
    (DestinationConfig("h", "http", {"url": HTTP["url"]}), "missing option auth_secret"),
    (DestinationConfig("h", "http", {**HTTP, "auth_secret": "Bearer abc123"}), "looks like a secret value"),
    (DestinationConfig("h", "http", {**HTTP, "auth_secret": "token.with.dots"}), "name of a Key Vault secret"),
    (DestinationConfig("h", "http", {**HTTP, "auth_secret": "aZ3kQ9pL2mX7vB4nR8tY1wE6"}), "looks like a secret value"),
    (DestinationConfig("h", "http", {**HTTP, "method": "GET"}), "POST or PUT"),
    (DestinationConfig("h", "http", {**HTTP, "auth_header": "Bad Header"}), "header name"),
    (DestinationConfig("h", "http", {**HTTP, "success_status": "200,abc"}), "2xx"),
    (DestinationConfig("h", "http", {**HTTP, "success_status": "200,302"}), "2xx"),
    (DestinationConfig("h", "http", {**HTTP, "success_field": "status"}), "go together"),
    (DestinationConfig("h", "http", {**HTTP, "success_value": PASTED_SECRET}), "looks like a secret value"),
    (DestinationConfig("h", "http", {**HTTP, "preset": "other-portal"}), "unknown preset"),
    (DestinationConfig("h", "http", {**HTTP, "field_password": "pw"}), "renames no body field"),
    (DestinationConfig("h", "http", {**HTTP, "field_clientSecret": "bad name"}), "JSON field name"),
    (DestinationConfig("h", "http", {**HTTP, "field_clientSecret": "keyId"}), "same name"),
    (DestinationConfig("h", "http", {**HTTP, "headers": "X-A: b"}), "unknown option 'headers'"),
    (DestinationConfig("n", "notify-only", {"url": "https://a.example"}), "unknown option 'url'"),
    (DestinationConfig("n", "notify-only", {"instructions": "x" * 1001}), "at most 1000"),
    (DestinationConfig("n", "notify-only", {"instructions": f"paste {PASTED_SECRET}"}), "looks like a secret value"),
]


@pytest.mark.parametrize("config", GOOD, ids=[c.name for c in GOOD])
def test_valid_destinations_pass(config: DestinationConfig) -> None:
    validate_destination(config)


@pytest.mark.parametrize(("config", "reason"), BAD, ids=[f"{i}-{c.kind}" for i, (c, _) in enumerate(BAD)])
def test_invalid_destinations_are_refused_with_a_clear_message(config: DestinationConfig, reason: str) -> None:
    with pytest.raises(ValueError, match="destination") as caught:
        validate_destination(config)
    assert reason in str(caught.value)
    assert PASTED_SECRET not in str(caught.value)
    assert "abc123" not in str(caught.value) and '"password": "b"' not in str(caught.value)
