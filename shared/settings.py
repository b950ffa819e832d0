"""Settings: app settings (environment variables) read once into one frozen, validated object.

Every setting the code reads is declared in ``SETTINGS``; infra tests check that the Bicep sets each
one and that ``local.settings.example.json`` lists each one (no drift).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import urlparse

from shared.domain import GUID, renewal_problem


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it."""


class IdentityMode(str, Enum):
    """How the rotator authenticates to Microsoft Graph in customer tenants."""

    MANAGED_IDENTITY = "managed-identity"  # single tenant: the function's managed identity
    FEDERATED = "federated"  # MSP: a multi-tenant app trusting the managed identity (no stored secret)


@dataclass(frozen=True)
class Setting:
    """One app setting: its name, default (None means required), and what it is for."""

    name: str
    default: str | None
    description: str
    required: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting("ROTATION_SCHEDULE", "0 0 6 * * *", "NCRONTAB schedule of the timer pass (default daily 06:00 UTC)."),
    Setting("RESUME_SCHEDULE", "0 */15 * * * *",
            "NCRONTAB schedule of the resume pass: only rotations in flight (default every 15 minutes)."),
    Setting("IDENTITY_MODE", "managed-identity", "managed-identity (single tenant) or federated (MSP)."),
    Setting("AZURE_CLIENT_ID", "", "Client id of the user-assigned managed identity."),
    Setting("MSP_APP_CLIENT_ID", "", "Federated mode: the MSP's multi-tenant app registration (client id)."),
    Setting("MSP_TENANT_ID", "", "The MSP's own tenant (home of the identity and the Key Vault)."),
    Setting("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.com", "Entra ID authority."),
    Setting("GRAPH_BASE_URL", "https://graph.microsoft.com/v1.0", "Microsoft Graph endpoint."),
    Setting("PARTNER_CENTER_URL", "https://api.partnercenter.microsoft.com",
            "Partner Center REST API (bulk onboarding's application consents through the partner relationship)."),
    Setting("KEY_VAULT_URL", None, "The vault holding rotated secrets and destination credentials.", True),
    Setting("STATE_TABLES_ENDPOINT", "", "Table endpoint of the function's storage account (identity access)."),
    Setting("STATE_TABLES_CONNECTION_STRING", "", "Local only (Azurite): a Tables connection string."),
    Setting("WORK_QUEUE__queueServiceUri", "",
            "Queue endpoint of the function's storage account: the rotation work queue (identity access)."),
    Setting("WORK_QUEUE", "", "Local only (Azurite): a Queues connection string for the rotation work queue."),
    Setting("PROOFPOINT_BASE_URL", "https://{stack}.proofpointessentials.com/api/v1",
            "Proofpoint Essentials API base; {stack} is us1..us5 or eu1."),
    Setting("RENEW_BEFORE_DAYS", "30", "Rotate when a secret has at most this many days left."),
    Setting("SECRET_LIFETIME_DAYS", "180", "Lifetime of a new secret in days (at most 730)."),
    Setting("RETIRE_GRACE_HOURS", "24", "Hours a superseded credential stays live after every destination confirmed."),
    Setting("RETIRE_QUIET_HOURS", "26",
            "Where Entra's sign-in logs are readable: a superseded credential goes only once it has not signed in for "
            "this many hours (1 to 720: the log keeps 30 days); a target's policy may override it."),
    Setting("SCAN_CONCURRENCY", "32", "Targets assessed and rotated at once."),
    Setting("KEY_VAULT_WRITES_PER_10S", "250",
            "Secret writes this instance makes to the vault in any 10 seconds (Key Vault allows 300 per vault): with "
            "several instances writing to one vault, 250 divided by their number (Bicep: 2 x maximumInstanceCount)."),
    Setting("PUSH_MAX_ATTEMPTS", "5", "Failed pushes to one destination before a human is alerted."),
    Setting("MANUAL_COOLDOWN_MINUTES", "60", "A manual rotation within this time of the last one needs force."),
    Setting("STUCK_AFTER_HOURS", "24", "A rotation in one stage longer than this raises an alert."),
    Setting("VERIFY_TIMEOUT_SECONDS", "120", "How long to wait for a new secret to start working."),
    Setting("DISCOVERY_NAME_PATTERNS", "PPE,Proofpoint,ModusCloud",
            "Comma-separated display-name prefixes of Proofpoint app registrations."),
    Setting("RETIRE_UNMANAGED_EXPIRED", "false", "Also remove expired credentials the rotator did not create."),
    Setting("ALERT_WEBHOOK_SECRET_NAME", "",
            "Key Vault secret holding the alert channel's webhook URL (Teams Workflows, Slack or a JSON receiver)."),
    Setting("ALERT_WEBHOOK_KIND", "",
            "The alert channel's kind: teams (a Workflows webhook, Adaptive Cards), slack (an incoming webhook) or "
            "json (a generic JSON body); required with ALERT_WEBHOOK_SECRET_NAME."),
    Setting("CA_BUNDLE", "", "Local sandbox only: a CA certificate file to trust."),
    Setting("CONSENT_REDIRECT_URI", "",
            "Where Entra sends a customer admin after consent: https://<app host>/api/consent (default: from the "
            "platform's WEBSITE_HOSTNAME); must be a redirect URI registered on the MSP app."),
    Setting("CONSENT_LINK_HOURS", "72", "How long a consent link stays valid (hours)."),
    Setting("INVENTORY_SCHEDULE", "0 30 2 * * *",
            "NCRONTAB schedule of the credential inventory pass: every app and service principal credential of every "
            "customer tenant, read with Graph delta queries (default daily 02:30 UTC, apart from the rotation pass)."),
    Setting("INVENTORY_CONCURRENCY", "32", "Tenants the inventory pass reads at once."),
    Setting("OFFBOARD_RETENTION_DAYS", "90",
            "Days an offboarded customer's Key Vault versions are kept before the daily timer deletes the secret "
            "(soft-delete: the vault's own 90-day recovery follows)."),
    Setting("DESTINATION_ALLOWED_HOSTS", "",
            "Local sandbox only: comma list of hosts (e.g. 127.0.0.1) a destination may use although they are "
            "loopback or private; never set in Azure."),
    Setting("APPLICATIONINSIGHTS_CONNECTION_STRING", "", "Application Insights; telemetry is sent when set."),
    Setting("ONBOARDING_CONCURRENCY", "8", "Bulk onboarding: customer tenants worked on at once (1-64)."),
    Setting("ONBOARDING_RETENTION_DAYS", "90",
            "Bulk onboarding: days a finished run's progress rows are kept before the daily timer deletes them "
            "(1-3650); the audit trail of its changes is kept regardless."),
    Setting("ONBOARDING_DESTINATIONS", "",
            "Bulk onboarding: the destinations of every onboarded customer, a JSON list as PUT /api/targets takes "
            "them, option values may use {tenantId}, {customer}, {domain} and {stack} (the customer's Proofpoint "
            "org); empty: one Proofpoint destination with the account PROOFPOINT_ACCOUNT_SECRET."),
    Setting("PROOFPOINT_CHANNEL_DOMAIN", "",
            "Bulk onboarding: the primary domain of the MSP's own (channel) org in Proofpoint Essentials, whose "
            "customer orgs are matched to customer tenants by domain; empty: bulk onboarding cannot register."),
    Setting("PROOFPOINT_CHANNEL_STACK", "us1", "The Proofpoint stack (us1..us5, eu1) of the MSP's channel org."),
    Setting("TICKET_SYSTEM", "",
            "The PSA tickets go to: connectwise, autotask, halopsa or webhook (a JSON receiver); empty: no tickets "
            "(docs/tickets.md)."),
    Setting("TICKET_SECRET_NAME", "",
            "Key Vault secret holding the ticket system's configuration and credentials as JSON (each kind's fields: "
            "docs/tickets-<kind>.md); required with TICKET_SYSTEM."),
    Setting("TICKET_ROUTING", "",
            "Which conditions get a ticket and where it is filed, JSON {default, conditions, companies} "
            "(docs/tickets.md, \"Routing\"); empty: every condition that clears, on the desk's defaults."),
    Setting("PROOFPOINT_ACCOUNT_SECRET", "proofpoint-api-account",
            "Key Vault secret holding the MSP's Proofpoint account as JSON {user, password}: what bulk onboarding "
            "reads the org list with and what the default destinations template names."),
)



def _tickets(system: str, secret_name: str, routing: str) -> dict[str, str]:
    """TICKET_SYSTEM (a desk kind), TICKET_SECRET_NAME (required with it) and TICKET_ROUTING (valid JSON routing)."""
    from shared.tickets import KINDS
    from shared.tickets.routing import RoutingError, parse_routing

    kind = system.strip().lower()
    if kind and kind not in KINDS:
        raise SettingsError(f"TICKET_SYSTEM must be one of {', '.join(KINDS)} (or empty for no tickets), got "
                            f"{system!r}")
    if kind and not secret_name.strip():
        raise SettingsError("TICKET_SECRET_NAME is required with TICKET_SYSTEM: the Key Vault secret holding the "
                            f"{kind} configuration and credentials as JSON (docs/tickets-{kind}.md)")
    try:
        parse_routing(routing)
    except RoutingError as error:
        raise SettingsError(str(error)) from None
    return {"ticket_system": kind, "ticket_secret_name": secret_name.strip() if kind else "",
            "ticket_routing": routing}


# The alert channel kinds (shared/alerts: one module each; a test holds the two lists equal).
ALERT_WEBHOOK_KINDS = ("teams", "slack", "json")


def _alert_webhook_kind(raw: str, secret_name: str) -> str:
    """ALERT_WEBHOOK_KIND, required when a webhook is configured: one body cannot suit every service."""
    kind = raw.strip().lower()
    kinds = ", ".join(ALERT_WEBHOOK_KINDS)
    if kind and kind not in ALERT_WEBHOOK_KINDS:
        raise SettingsError(f"ALERT_WEBHOOK_KIND must be one of {kinds}, got {raw!r}")
    if secret_name and not kind:
        raise SettingsError(f"ALERT_WEBHOOK_KIND is required with ALERT_WEBHOOK_SECRET_NAME: one of {kinds} (teams "
                            "for a Teams Workflows webhook; Office 365 connector URLs are retired)")
    return kind


def _int(name: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no", ""):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _onboarding_destinations(raw: str, account_secret: str, hosts: frozenset[str]) -> str:
    """The destinations template of bulk onboarding (JSON), validated by rendering it for a sample customer."""
    from shared.bulk_onboarding import InvalidTemplate, check_template, default_template

    if not raw.strip():
        return json.dumps(default_template(account_secret))
    try:
        doc = json.loads(raw)
    except ValueError:
        raise SettingsError("ONBOARDING_DESTINATIONS must be a JSON list of destinations") from None
    try:
        check_template(doc, hosts)
    except InvalidTemplate as error:
        raise SettingsError(f"ONBOARDING_DESTINATIONS: {error}") from None
    return json.dumps(doc)


_DOMAIN_NAME = re.compile(r"\A(?=.{1,253}\Z)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}\Z", re.IGNORECASE)
PROOFPOINT_STACKS = ("us1", "us2", "us3", "us4", "us5", "eu1")


def _channel_domain(raw: str) -> str:
    if raw and not _DOMAIN_NAME.fullmatch(raw.strip()):
        raise SettingsError(f"PROOFPOINT_CHANNEL_DOMAIN must be a domain name, got {raw!r}")
    return raw.strip().lower()


def _stack(raw: str) -> str:
    if raw not in PROOFPOINT_STACKS:
        raise SettingsError(f"PROOFPOINT_CHANNEL_STACK must be one of {', '.join(PROOFPOINT_STACKS)}, got {raw!r}")
    return raw


def allowed_hosts(raw: str) -> frozenset[str]:
    """DESTINATION_ALLOWED_HOSTS as lower-case host names or addresses (brackets of IPv6 literals removed)."""
    hosts = {h.strip().strip("[]").lower().rstrip(".") for h in raw.split(",")}
    return frozenset(h for h in hosts if h)


def _https_url(name: str, raw: str) -> str:
    if not raw.startswith("https://"):
        raise SettingsError(f"{name} must be an https:// URL, got {raw!r}")
    return raw.rstrip("/")


def _redirect_uri(raw: str, website_hostname: str) -> str:
    """CONSENT_REDIRECT_URI, or the app's own /api/consent on the host name App Service sets (WEBSITE_HOSTNAME);
    "" when neither is known. Entra accepts http:// only for localhost."""
    if not raw:
        return f"https://{website_hostname}/api/consent" if website_hostname else ""
    parsed = urlparse(raw)
    local = parsed.scheme == "http" and parsed.hostname in ("localhost", "127.0.0.1")
    if not (parsed.scheme == "https" or local) or not parsed.hostname or parsed.query or parsed.fragment:
        raise SettingsError(f"CONSENT_REDIRECT_URI must be an https:// URL without query or fragment (http:// only "
                            f"for localhost), got {raw!r}")
    return raw


@dataclass(frozen=True)
class Settings:
    """The validated settings of one process."""

    rotation_schedule: str
    resume_schedule: str
    identity_mode: IdentityMode
    managed_identity_client_id: str
    msp_app_client_id: str
    msp_tenant_id: str
    authority_host: str
    graph_base_url: str
    partner_center_url: str
    key_vault_url: str
    tables_endpoint: str
    tables_connection_string: str = field(repr=False)
    work_queue_endpoint: str
    work_queue_connection_string: str = field(repr=False)
    proofpoint_base_url: str
    renew_before_days: int
    secret_lifetime_days: int
    retire_grace_hours: int
    retire_quiet_hours: int
    scan_concurrency: int
    key_vault_writes_per_10s: int
    push_max_attempts: int
    manual_cooldown_minutes: int
    stuck_after_hours: int
    verify_timeout_seconds: int
    discovery_name_patterns: tuple[str, ...]
    retire_unmanaged_expired: bool
    alert_webhook_secret_name: str
    alert_webhook_kind: str
    ca_bundle: str
    consent_redirect_uri: str
    consent_link_hours: int
    offboard_retention_days: int
    destination_allowed_hosts: frozenset[str]
    appinsights_connection_string: str = field(repr=False)
    inventory_schedule: str = "0 30 2 * * *"
    inventory_concurrency: int = 32
    onboarding_concurrency: int = 8
    onboarding_retention_days: int = 90
    onboarding_destinations: str = ""  # the validated template, JSON (Settings is hashable: a key of the services)
    proofpoint_channel_domain: str = ""
    proofpoint_channel_stack: str = "us1"
    proofpoint_account_secret: str = "proofpoint-api-account"  # noqa: S105 (a Key Vault secret's name)
    ticket_system: str = ""  # one of shared.tickets.KINDS, or "" for no tickets
    ticket_secret_name: str = ""
    ticket_routing: str = ""  # the validated TICKET_ROUTING JSON (parse with shared.tickets.routing.parse_routing)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read and validate every setting; raise SettingsError naming the first bad one."""
        raw: dict[str, str] = {}
        for setting in SETTINGS:
            value = env.get(setting.name, "")
            if value == "" and setting.required:
                raise SettingsError(f"{setting.name} is required: {setting.description}")
            raw[setting.name] = value if value != "" else (setting.default or "")

        try:
            mode = IdentityMode(raw["IDENTITY_MODE"])
        except ValueError:
            allowed = ", ".join(m.value for m in IdentityMode)
            raise SettingsError(f"IDENTITY_MODE must be one of {allowed}, got {raw['IDENTITY_MODE']!r}") from None
        if mode is IdentityMode.FEDERATED:
            for name in ("MSP_APP_CLIENT_ID", "MSP_TENANT_ID"):
                if not GUID.fullmatch(raw[name]):
                    raise SettingsError(f"{name} must be a GUID in federated mode, got {raw[name]!r}")
        if not raw["STATE_TABLES_ENDPOINT"] and not raw["STATE_TABLES_CONNECTION_STRING"]:
            raise SettingsError("STATE_TABLES_ENDPOINT (or, locally, STATE_TABLES_CONNECTION_STRING) is required")
        if "{stack}" not in raw["PROOFPOINT_BASE_URL"]:
            raise SettingsError("PROOFPOINT_BASE_URL must contain {stack}")
        renew = _int("RENEW_BEFORE_DAYS", raw["RENEW_BEFORE_DAYS"], 1, 365)
        lifetime = _int("SECRET_LIFETIME_DAYS", raw["SECRET_LIFETIME_DAYS"], 1, 730)
        problem = renewal_problem(renew, lifetime)
        if problem:
            raise SettingsError(f"RENEW_BEFORE_DAYS ({renew}) and SECRET_LIFETIME_DAYS ({lifetime}): {problem}")
        patterns = tuple(p.strip() for p in raw["DISCOVERY_NAME_PATTERNS"].split(",") if p.strip())
        if not patterns:
            raise SettingsError("DISCOVERY_NAME_PATTERNS must name at least one prefix")
        return cls(
            rotation_schedule=raw["ROTATION_SCHEDULE"],
            resume_schedule=raw["RESUME_SCHEDULE"],
            identity_mode=mode,
            managed_identity_client_id=raw["AZURE_CLIENT_ID"],
            msp_app_client_id=raw["MSP_APP_CLIENT_ID"],
            msp_tenant_id=raw["MSP_TENANT_ID"],
            authority_host=_https_url("AZURE_AUTHORITY_HOST", raw["AZURE_AUTHORITY_HOST"]),
            graph_base_url=_https_url("GRAPH_BASE_URL", raw["GRAPH_BASE_URL"]),
            partner_center_url=_https_url("PARTNER_CENTER_URL", raw["PARTNER_CENTER_URL"]),
            key_vault_url=_https_url("KEY_VAULT_URL", raw["KEY_VAULT_URL"]),
            tables_endpoint=raw["STATE_TABLES_ENDPOINT"],
            tables_connection_string=raw["STATE_TABLES_CONNECTION_STRING"],
            work_queue_endpoint=raw["WORK_QUEUE__queueServiceUri"],
            work_queue_connection_string=raw["WORK_QUEUE"],
            proofpoint_base_url=_https_url("PROOFPOINT_BASE_URL", raw["PROOFPOINT_BASE_URL"]),
            renew_before_days=renew,
            secret_lifetime_days=lifetime,
            retire_grace_hours=_int("RETIRE_GRACE_HOURS", raw["RETIRE_GRACE_HOURS"], 0, 24 * 90),
            retire_quiet_hours=_int("RETIRE_QUIET_HOURS", raw["RETIRE_QUIET_HOURS"], 1, 30 * 24),
            scan_concurrency=_int("SCAN_CONCURRENCY", raw["SCAN_CONCURRENCY"], 1, 512),
            key_vault_writes_per_10s=_int("KEY_VAULT_WRITES_PER_10S", raw["KEY_VAULT_WRITES_PER_10S"], 1, 300),
            push_max_attempts=_int("PUSH_MAX_ATTEMPTS", raw["PUSH_MAX_ATTEMPTS"], 1, 100),
            manual_cooldown_minutes=_int("MANUAL_COOLDOWN_MINUTES", raw["MANUAL_COOLDOWN_MINUTES"], 0, 24 * 60),
            stuck_after_hours=_int("STUCK_AFTER_HOURS", raw["STUCK_AFTER_HOURS"], 1, 24 * 30),
            verify_timeout_seconds=_int("VERIFY_TIMEOUT_SECONDS", raw["VERIFY_TIMEOUT_SECONDS"], 1, 900),
            discovery_name_patterns=patterns,
            retire_unmanaged_expired=_bool("RETIRE_UNMANAGED_EXPIRED", raw["RETIRE_UNMANAGED_EXPIRED"]),
            alert_webhook_secret_name=raw["ALERT_WEBHOOK_SECRET_NAME"],
            alert_webhook_kind=_alert_webhook_kind(raw["ALERT_WEBHOOK_KIND"], raw["ALERT_WEBHOOK_SECRET_NAME"]),
            ca_bundle=raw["CA_BUNDLE"],
            consent_redirect_uri=_redirect_uri(raw["CONSENT_REDIRECT_URI"], env.get("WEBSITE_HOSTNAME", "")),
            consent_link_hours=_int("CONSENT_LINK_HOURS", raw["CONSENT_LINK_HOURS"], 1, 24 * 30),
            offboard_retention_days=_int("OFFBOARD_RETENTION_DAYS", raw["OFFBOARD_RETENTION_DAYS"], 1, 3650),
            destination_allowed_hosts=allowed_hosts(raw["DESTINATION_ALLOWED_HOSTS"]),
            appinsights_connection_string=raw["APPLICATIONINSIGHTS_CONNECTION_STRING"],
            inventory_schedule=raw["INVENTORY_SCHEDULE"],
            inventory_concurrency=_int("INVENTORY_CONCURRENCY", raw["INVENTORY_CONCURRENCY"], 1, 512),
            onboarding_concurrency=_int("ONBOARDING_CONCURRENCY", raw["ONBOARDING_CONCURRENCY"], 1, 64),
            onboarding_retention_days=_int("ONBOARDING_RETENTION_DAYS", raw["ONBOARDING_RETENTION_DAYS"], 1, 3650),
            onboarding_destinations=_onboarding_destinations(
                raw["ONBOARDING_DESTINATIONS"], raw["PROOFPOINT_ACCOUNT_SECRET"],
                allowed_hosts(raw["DESTINATION_ALLOWED_HOSTS"])),
            proofpoint_channel_domain=_channel_domain(raw["PROOFPOINT_CHANNEL_DOMAIN"]),
            proofpoint_channel_stack=_stack(raw["PROOFPOINT_CHANNEL_STACK"]),
            proofpoint_account_secret=raw["PROOFPOINT_ACCOUNT_SECRET"],
            **_tickets(raw["TICKET_SYSTEM"], raw["TICKET_SECRET_NAME"], raw["TICKET_ROUTING"]),
        )
