"""The secret-value detector (shared.destinations.options.looks_like_secret), as one table: the names an MSP gives
things (Key Vault secret names, customers, destinations, instructions) pass, and real secret shapes do not.

Every secret shape is made at run time (`secrets`, `base64`): nothing secret-shaped is committed (the repository's
hooks grep tracked files for client secrets and private keys). Random keys are checked at the lengths services issue
them (32 bytes and more); shared/destinations/options.py says how often a random key of a given length could pass
for a name."""

from __future__ import annotations

import base64
import json
import random
import secrets
import string
import uuid
from collections.abc import Callable
from urllib.parse import quote

import pytest

from shared.destinations import validate_destination
from shared.destinations.options import KEY_VAULT_NAME, looks_like_secret
from shared.domain import DESTINATION_NAME, DestinationConfig

NAMES = [
    # Key Vault secret names (letters, digits, dashes), as MSPs name them
    "Vircom-Portal-Auth-Key-Tenant-A1", "Vircom-Portal-Auth-Key-Tenant-B2", "ContosoProofpointApiKey2026",
    # ... ending in a short tag of their own (a commit or ticket hash), and long one-case names with a number
    "WingtipToys-PPE-Key-b7e2c9d4", "kv-ppe-fabrikam-9f8e7d6c", "Contoso-Sync-Key-1a2b3c4d",
    "contosoproofpointsyncsecretname2026", "PROOFPOINT-ESSENTIALS-SYNC-CONTOSO-EU1",
    "proofpoint-api-account", "vircom-portal-auth", "Contoso-Portal-Auth-Tenant2026",
    "FabrikamProofpointEssentialsSync", "NorthwindTradersApiKeyProd01", "PPE-Sync-Secret-Contoso-2026",
    "AdventureWorksCycles2026Q3", "ProofpointAccountWideWorldImporters", "MspPortalAuthHeaderTenantA1B2",
    "tailspin-toys-proofpoint-admin-01", "ContosoEU1ProofpointApiAccount", "O365AzureADSyncContosoLtd",
    "M365TenantContosoEU1PPE", "WoodgroveBankProofpointSyncSecretEU1", "LitwareIncVircomPortalAuthorizationHeader",
    "ProofpointEssentials-Channel-Admin-US1", "pp-us1-channel-admin-account", "VircomPortalApiKeyContosoTenant",
    "FourthCoffeeProofpointAccount2027", "AlpineSkiHouse-PPE-Admin-EU1", "BlueYonderAirlinesPortalAuth01",
    "CohoWineryProofpointSyncAccount", "TreyResearchVircomPortalKeyB2", "WingtipToysProofpointApiKey2026",
    "MargiesTravel-Portal-Auth-Key-C3", "LucernePublishingPPEAccount", "GraphicDesignInstituteApiKeyEU",
    "HumongousInsuranceVircomAuth2026", "ContosoPharmaceuticalsPPEKey01", "CityPowerAndLightProofpointSync",
    "Relecloud-PPE-Sync-Account-US2", "ProseWareIncPortalAuthHeader2026", "SouthridgeVideoProofpointAdmin",
    "ContosoProofpointApiKey2026-Rotated", "Tenant-0042-Vircom-Portal-Auth", "KV-PPE-Contoso-EU1-2026-Q4",
    "AzureADSyncProofpointContosoUS3", "FabrikamFiberPPEChannelAdmin", "WideWorldImportersVircomKey2026",
    # customer names
    "Contoso Ltd", "Fabrikam, Inc.", "Northwind Traders", "Caf\u00e9 M\u00fcller GmbH", "Z\u00fcrich Versicherungen AG",
    "\u682a\u5f0f\u4f1a\u793e\u30b3\u30f3\u30c8\u30bd", "Bearer Logistics", "Digest Systems Ltd",
    "Negotiate Partners LLP",
    "O'Brien & Sons", "AT&T Business Services", "Contoso (EU) - ContosoProofpointApiKey2026",
    "Vircom Portal Auth Key Tenant A1",
    # destination names
    "proofpoint", "vircom-portal", "Vircom Portal EU", "pp us1", "helpdesk", "Proofpoint_EU1.channel",
    # instructions for a notify-only destination
    "Paste it into the Vircom Portal: Office 365 > Azure Active Directory, then Save",
    "Open the 'Secret' field, paste the new value, then Save",
    "The portal reads Vircom-Portal-Auth-Key-Tenant-A1 from our Key Vault",
    "Call the helpdesk at +1 555 0100 before 17:00 CET",
    "See https://portal.msp.example/tenants/contoso/azure-ad for the page",
    "Ask Jo to update ContosoProofpointApiKey2026 and Vircom-Portal-Auth-Key-Tenant-B2",
    "Bearer tokens are not used here; the portal signs in with its own account",
]

ALNUM = string.ascii_letters + string.digits


def alnum(n: int) -> str:
    return "".join(secrets.choice(ALNUM) for _ in range(n))


def b64(n: int) -> str:
    return base64.b64encode(secrets.token_bytes(n)).decode()


def b64url(n: int, pad: bool = False) -> str:
    text = base64.urlsafe_b64encode(secrets.token_bytes(n)).decode()
    return text if pad else text.rstrip("=")


def entra_secret(digit: int) -> str:
    """An Entra ID client secret's shape: 3 characters, a digit, "Q~", 34 more (built here, never written down)."""
    return alnum(3) + str(digit) + "Q" + "~" + (secrets.token_urlsafe(40).replace("-", "~")[:34])


def jwt() -> str:
    def part(doc: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")
    claims = {"aud": "api://rotator", "iss": "https://sts.windows.net/x/", "oid": str(uuid.uuid4()), "exp": 1}
    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.{b64url(256)}"


def pem(kind: str) -> str:
    dashes = "-" * 5
    body = "\n".join(b64(192)[i:i + 64] for i in range(0, 256, 64))
    return f"{dashes}{'BEGIN'} {kind}{dashes}\n{body}\n{dashes}END {kind}{dashes}"


def sas() -> str:
    return (f"sv=2022-11-02&ss=b&srt=sco&sp=rl&se=2026-12-31T00:00:00Z&spr=https&sig={quote(b64(32), safe='')}")


def storage_key() -> str:
    return b64(64)  # 88 characters, as Azure Storage issues account keys


def zero_width(value: str) -> str:
    return "\u200b".join(value[i:i + 5] for i in range(0, len(value), 5))


PRIVATE = "PRIVATE" + " KEY"
_SEEDED = random.Random(2026)
SECRET_SHAPES: list[tuple[str, Callable[[], str]]] = [
    *((f"entra-client-secret-{d}", lambda d=d: entra_secret(d)) for d in range(10)),  # type: ignore[misc]
    ("entra-secret-in-a-sentence", lambda: f"the new secret is {entra_secret(8)} (copied from the portal)"),
    ("entra-secret-percent-encoded", lambda: quote(entra_secret(8), safe="")),
    ("entra-secret-zero-width-split", lambda: zero_width(entra_secret(7))),
    ("storage-account-key", storage_key),
    ("storage-account-key-2", storage_key),
    ("storage-connection-string", lambda: "DefaultEndpointsProtocol=https;AccountName=contosostore;AccountKey="
     f"{storage_key()};EndpointSuffix=core.windows.net"),
    ("storage-connection-string-key-first", lambda: f"AccountKey={storage_key()};AccountName=contosostore"),
    ("service-bus-connection-string", lambda: "Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName="
     f"RootManageSharedAccessKey;SharedAccessKey={b64(32)}"),
    ("event-hub-connection-string", lambda: "Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=send;"
     f"SharedAccessKey={b64(32)};EntityPath=events"),
    ("sql-connection-string", lambda: f"Server=tcp:contoso.database.windows.net;User ID=rotator;Password={alnum(20)}"),
    ("jwt", jwt),
    ("jwt-2", jwt),
    ("bearer-jwt", lambda: f"Bearer {jwt()}"),
    ("authorization-header", lambda: f"Authorization: Bearer {b64url(32)}"),
    ("bearer-opaque", lambda: f"Bearer {b64url(32)}"),
    ("basic-credentials", lambda: "Basic " + base64.b64encode(f"admin:{alnum(12)}".encode()).decode()),
    ("sas-token", sas),
    ("sas-token-leading-question-mark", lambda: "?" + sas()),
    ("sas-url", lambda: f"https://contosostore.blob.core.windows.net/backups?{sas()}"),
    ("shared-access-signature-header", lambda: f"SharedAccessSignature sr=contoso&sig={quote(b64(32))}&se=1"),
    *((f"pem-{k.split()[0].lower()}", lambda k=k: pem(k))  # type: ignore[misc]
      for k in (PRIVATE, "RSA " + PRIVATE, "EC " + PRIVATE, "OPENSSH " + PRIVATE, "ENCRYPTED " + PRIVATE)),
    ("pem-certificate", lambda: pem("CERTIFICATE")),
    ("pem-on-one-line", lambda: pem(PRIVATE).replace("\n", " ")),
    ("base64-32-bytes", lambda: b64(32)),
    ("base64-48-bytes", lambda: b64(48)),
    ("base64-64-bytes", lambda: b64(64)),
    ("base64-256-bytes", lambda: b64(256)),
    ("base64url-32-bytes", lambda: b64url(32)),
    ("base64url-32-bytes-padded", lambda: b64url(32, pad=True)),
    ("base64url-48-bytes", lambda: b64url(48)),
    ("base64url-64-bytes", lambda: b64url(64)),
    ("hex-16-bytes", lambda: secrets.token_hex(16)),
    ("hex-20-bytes", lambda: secrets.token_hex(20)),
    ("hex-32-bytes", lambda: secrets.token_hex(32)),
    ("hex-64-bytes", lambda: secrets.token_hex(64)),
    ("hex-32-bytes-upper", lambda: secrets.token_hex(32).upper()),
    ("hex-in-a-sentence", lambda: f"api key {secrets.token_hex(16)} for the portal"),
    ("api-key-alnum-32", lambda: alnum(32)),
    ("api-key-alnum-40", lambda: alnum(40)),
    ("api-key-alnum-64", lambda: alnum(64)),
    ("api-key-urlsafe", lambda: secrets.token_urlsafe(32)),
    ("github-token-shape", lambda: "ghp_" + alnum(36)),
    ("prefixed-key", lambda: "sk_live_" + alnum(40)),
    ("teams-workflow-webhook", lambda: f"https://prod-12.westeurope.logic.azure.com:443/workflows/{uuid.uuid4().hex}"
     f"/triggers/manual/paths/invoke?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={b64url(32)}"),
    ("power-automate-webhook", lambda: f"https://default{uuid.uuid4().hex[:10]}.environment.api.powerplatform.com:443"
     f"/powerautomate/automations/direct/workflows/{uuid.uuid4().hex}/triggers/manual/paths/invoke?api-version=1"
     f"&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={b64url(32)}"),
    ("logic-apps-callback", lambda: f"https://contoso-la.azurewebsites.net:443/api/wf/triggers/manual/invoke"
     f"?api-version=2022-05-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={b64url(32)}"),
    ("slack-webhook", lambda: f"https://hooks.slack.com/services/T{alnum(8).upper()}/B{alnum(8).upper()}/{alnum(24)}"),
    ("slack-workflow-webhook", lambda: f"https://hooks.slack.com/workflows/T{alnum(8).upper()}/A{alnum(8).upper()}"
     f"/{secrets.randbelow(10**18)}/{alnum(24)}"),
    ("office-365-connector", lambda: f"https://contoso.webhook.office.com/webhookb2/{uuid.uuid4()}@{uuid.uuid4()}"
     f"/IncomingWebhook/{secrets.token_hex(16)}/{uuid.uuid4()}"),
    ("discord-webhook", lambda: f"https://discord.com/api/webhooks/{secrets.randbelow(10**18)}/{b64url(51)}"),
    ("credential-json", lambda: json.dumps({"username": "admin@contoso.com", "password": alnum(16)})),
    ("password-assignment", lambda: f"password={alnum(16)}"),
    ("api-key-query", lambda: f"https://portal.msp.example/api?api_key={alnum(32)}"),
    ("access-token-fragment", lambda: f"https://portal.msp.example/cb#access_token={b64url(32)}"),
    ("client-secret-assignment", lambda: f"client_secret={entra_secret(3)}"),
    ("fullwidth-entra-secret", lambda: "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "}" else c
                                               for c in entra_secret(5))),
    # one-case keys: base32 (Azure DevOps tokens, TOTP seeds) and base36, made at run time from a fixed seed (about
    # 1 in 3,000 random ones of these lengths passes for a name: measured, docs in shared/destinations/options.py)
    ("base32-lower", lambda: "".join(_SEEDED.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(52))),
    ("base32-padded", lambda: base64.b32encode(_SEEDED.randbytes(32)).decode()),
    ("base36-upper", lambda: "".join(_SEEDED.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(48))),
]


def test_the_table_is_as_large_as_promised() -> None:
    assert len(NAMES) >= 60 and len(set(NAMES)) == len(NAMES)
    assert len(SECRET_SHAPES) >= 60 and len({n for n, _ in SECRET_SHAPES}) == len(SECRET_SHAPES)


@pytest.mark.parametrize("name", NAMES)
def test_a_name_people_use_is_not_a_secret(name: str) -> None:
    assert not looks_like_secret(name)


@pytest.mark.parametrize(("shape", "make"), SECRET_SHAPES, ids=[n for n, _ in SECRET_SHAPES])
def test_a_secret_shape_is_refused(shape: str, make: Callable[[], str]) -> None:
    for _ in range(3):  # three fresh values of the shape
        value = make()
        assert looks_like_secret(value), shape


@pytest.mark.parametrize("name", [n for n in NAMES if KEY_VAULT_NAME.fullmatch(n)])
def test_a_name_is_accepted_where_a_key_vault_secret_name_goes(name: str) -> None:
    validate_destination(DestinationConfig("portal", "http", {"url": "https://portal.msp.example/api/aad",
                                                              "auth_secret": name}))
    validate_destination(DestinationConfig("pp", "proofpoint", {"stack": "us1", "domain": "contoso.com",
                                                                "account_secret": name}))


@pytest.mark.parametrize("name", [n for n in NAMES if DESTINATION_NAME.fullmatch(n)])
def test_a_name_is_accepted_as_a_destination_name_and_in_instructions(name: str) -> None:
    validate_destination(DestinationConfig(name, "notify-only", {"instructions": f"Paste it, then tell {name}"}))


@pytest.mark.parametrize(("shape", "make"), SECRET_SHAPES, ids=[n for n, _ in SECRET_SHAPES])
def test_a_secret_shape_is_refused_in_every_option_without_being_echoed(shape: str, make: Callable[[], str]) -> None:
    value = make()
    for config in (DestinationConfig("n", "notify-only", {"instructions": value}),
                   DestinationConfig("h", "http", {"url": "https://portal.msp.example/api/aad",
                                                   "auth_secret": "vircom-portal-auth", "success_value": value})):
        with pytest.raises(ValueError) as refused:
            validate_destination(config)
        assert value not in str(refused.value) and value[:12] not in str(refused.value)
