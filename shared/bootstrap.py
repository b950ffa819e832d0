"""The composition root: builds the adapters from settings and hands out the services."""

from __future__ import annotations

import asyncio
import json
import os
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from shared.clock import SystemClock
from shared.ports import Alerter, Clock, Destination, PartnerSession
from shared.rotation import Engine, EngineConfig
from shared.settings import IdentityMode, Settings, SettingsError
from shared.telemetry import configure_telemetry

if TYPE_CHECKING:
    from shared.adapters.approvals import TablesApprovals
    from shared.adapters.delegated import DelegatedSignIn
    from shared.adapters.graph import GraphDirectory
    from shared.adapters.inventory import GraphInventory
    from shared.adapters.inventory_tables import TablesInventoryStore
    from shared.adapters.keyvault import KeyVaultConsentKeys, KeyVaultSecretRetention, KeyVaultSecretStore
    from shared.adapters.queues import StorageWorkQueue
    from shared.adapters.signins import GraphSignInLog
    from shared.adapters.tables import TablesConsentStore, TablesOnboardingRuns, TablesStateStore
    from shared.adapters.warning_rules import TablesWarningRules
    from shared.alerts import AlertBook
    from shared.bulk_onboarding import BulkOnboarding
    from shared.onevisit import AdminSession, VisitPorts
    from shared.ports import PartnerSession, PartnerSessions, ProofpointOrgs
    from shared.tickets.book import TicketBook

# The test seam: keyword defaults for services() when an entry point calls it bare (tests set `table_prefix`,
# `clock`, `alerter`); always empty in production, where every setting comes from the environment.
DEFAULTS: dict[str, Any] = {}


def rotator_client_id(settings: Settings) -> str:
    """The client id the rotator signs in to Graph with: its service principal must own each target app."""
    if settings.identity_mode is IdentityMode.FEDERATED:
        return settings.msp_app_client_id
    return settings.managed_identity_client_id


def engine_config(settings: Settings) -> EngineConfig:
    return EngineConfig(
        renew_before_days=settings.renew_before_days,
        lifetime_days=settings.secret_lifetime_days,
        retire_grace=timedelta(hours=settings.retire_grace_hours),
        retire_quiet=timedelta(hours=settings.retire_quiet_hours),
        verify_timeout=timedelta(seconds=settings.verify_timeout_seconds),
        push_max_attempts=settings.push_max_attempts,
        scan_concurrency=settings.scan_concurrency,
        manual_cooldown=timedelta(minutes=settings.manual_cooldown_minutes),
        stuck_after=timedelta(hours=settings.stuck_after_hours),
        retire_other_expired=settings.retire_unmanaged_expired,
    )


@dataclass
class Services:
    """Everything an entry point needs: the adapters (shared by a worker process's invocations, see
    invocation_services) and an engine."""

    settings: Settings
    engine: Engine
    state: TablesStateStore
    directory: GraphDirectory
    secrets: KeyVaultSecretStore
    consent_keys: KeyVaultConsentKeys
    consents: TablesConsentStore
    queue: StorageWorkQueue | None = None  # None when no work queue is configured (the command line needs none)
    alerts: AlertBook | None = None  # the alert book and its channel (the test alert reads the channel)
    # Entra's sign-in log per credential (the SignInLog port); a tenant that refuses it says so per read.
    sign_in_log: GraphSignInLog | None = None
    # The credential inventory (issue 25): Graph's delta reads of every app and service principal, and their rows.
    inventory_source: GraphInventory | None = None
    inventory: TablesInventoryStore | None = None
    onboarding_runs: TablesOnboardingRuns | None = None  # bulk onboarding's run state
    proofpoint_orgs: ProofpointOrgs | None = None  # Proofpoint's org list (bulk onboarding's register step)
    # Partner sessions kept in Key Vault between a web-started run's invocations: the delegated adapter's (branch
    # `partner`); None until it is built, and the onboarding routes that need a session answer 503 without it.
    partner_sessions: PartnerSessions | None = None
    http: Any = None  # the process's pooled aiohttp session (the delegated partner adapters' HTTP client)
    retention: KeyVaultSecretRetention | None = None  # offboarded customers' Key Vault versions (shared.offboarding)
    # Staged warnings (issue 25): per customer thresholds, exclusions and snoozes.
    warning_rules: TablesWarningRules | None = None
    approvals: TablesApprovals | None = None  # change control's approvals book (issue 26)
    # Tickets (issue 26): the ticket book following the alert book; None when TICKET_SYSTEM is not set.
    tickets: TicketBook | None = None

    @property
    def secret_retention(self) -> KeyVaultSecretRetention:
        """The retention of offboarded customers' secrets; built with every service set but a test's."""
        if self.retention is None:
            raise SettingsError("no Key Vault retention was built for these services")
        return self.retention

    def delegated_sign_in(self, *, confidential: bool = True) -> DelegatedSignIn:
        """A partner admin's delegated sign-in to the MSP app over this process's HTTP pool: the dashboard's
        (authorization code, the rotator a confidential client) or, with confidential=False, a device code's."""
        from shared.adapters.partner_sessions import sign_in

        return sign_in(self.settings, self.http, confidential=confidential)

    def partner_session(self, signed_in: DelegatedSignIn) -> PartnerSession:
        """The GDAP session of a signed-in partner admin (what bulk onboarding works with)."""
        from shared.adapters.partner_sessions import partner_session

        return partner_session(self.settings, signed_in, self.http)

    def bulk_onboarding(self) -> BulkOnboarding:
        """The bulk-onboarding engine over these services (its dry run is this invocation's engine's)."""
        from shared.bulk_onboarding import BulkOnboarding, OnboardingConfig, engine_dry_run

        assert self.onboarding_runs is not None and self.proofpoint_orgs is not None  # built by _build
        s = self.settings
        config = OnboardingConfig(
            concurrency=s.onboarding_concurrency,
            template=json.loads(s.onboarding_destinations) if s.onboarding_destinations else default_template(s),
            name_patterns=s.discovery_name_patterns, msp_app_id=rotator_client_id(s),
            allowed_hosts=s.destination_allowed_hosts)
        return BulkOnboarding(runs=self.onboarding_runs, state=self.state, directory=self.directory,
                              orgs=self.proofpoint_orgs, dry_run=engine_dry_run(self.engine), clock=self.engine.clock,
                              config=config, queue=self.queue)

    @property
    def work_queue(self) -> StorageWorkQueue:
        """The rotation work queue; SettingsError when none is configured."""
        if self.queue is None:
            raise SettingsError("WORK_QUEUE__queueServiceUri (or, locally, WORK_QUEUE) is required to fan work out")
        return self.queue


def default_template(settings: Settings) -> tuple[dict[str, Any], ...]:
    from shared.bulk_onboarding import default_template as template

    return template(settings.proofpoint_account_secret)


class _NoChannel:
    """ProofpointOrgs without PROOFPOINT_CHANNEL_DOMAIN: every read says what to set."""

    async def child_orgs(self) -> list[Any]:
        from shared.errors import RotationError

        raise RotationError("PROOFPOINT_CHANNEL_DOMAIN is not set: the rotator cannot read the MSP's Proofpoint "
                            "org list", code="ProofpointChannelNotSet")


def proofpoint_orgs(settings: Settings, secrets: KeyVaultSecretStore) -> ProofpointOrgs:
    """Proofpoint's org list of the MSP's channel org (PROOFPOINT_CHANNEL_DOMAIN)."""
    from shared.destinations.proofpoint import ProofpointOrgList
    from shared.destinations.transport import guarded_sessions

    if not settings.proofpoint_channel_domain:
        return _NoChannel()
    return ProofpointOrgList(secrets, base_url=settings.proofpoint_base_url,
                             channel_domain=settings.proofpoint_channel_domain,
                             stack=settings.proofpoint_channel_stack,
                             account_secret=settings.proofpoint_account_secret, verify=settings.ca_bundle or True,
                             session_factory=guarded_sessions(settings.destination_allowed_hosts))


def close_destinations(built: Mapping[str, Destination]) -> None:
    """Close what the destination adapters keep open (Proofpoint's pooled connections), with the other services."""
    for destination in built.values():
        close = getattr(destination, "close", None)
        if callable(close):
            close()


def destinations(settings: Settings, secrets: KeyVaultSecretStore) -> dict[str, Destination]:
    """The destination adapters by kind."""
    from shared.destinations import build_destinations

    return build_destinations(settings, secrets)


@asynccontextmanager
async def services(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    alerter: Alerter | None = None,
    table_prefix: str = "",
    work_queue: str = "",
    config: EngineConfig | None = None,
) -> AsyncIterator[Services]:
    """Build the adapters from settings (the environment by default); close them on exit (the command line, one
    process per command). The function app's entry points use invocation_services() instead."""
    built, close = await _build(settings or Settings.from_env(os.environ), clock=clock, alerter=alerter,
                                table_prefix=table_prefix, work_queue=work_queue, config=config)
    try:
        yield built
    finally:
        await close()


async def _build(
    settings: Settings,
    *,
    clock: Clock | None,
    alerter: Alerter | None,
    table_prefix: str,
    work_queue: str,
    config: EngineConfig | None,
) -> tuple[Services, Callable[[], Awaitable[None]]]:
    """The adapters and an engine over them, and the coroutine function that closes them."""
    # The SDKs are imported here, not at module import: `import function_app` (the host's indexing of every
    # function) stays light, and a route that never builds the services never loads them.
    from azure.data.tables.aio import TableServiceClient
    from azure.keyvault.secrets.aio import SecretClient

    from shared.adapters.approvals import TablesApprovals
    from shared.adapters.graph import GraphDirectory
    from shared.adapters.identity import Credentials, EntraTokenProbe, close_transport, shared_transport
    from shared.adapters.inventory import GraphInventory
    from shared.adapters.inventory_tables import TablesInventoryStore
    from shared.adapters.keyvault import KeyVaultConsentKeys, KeyVaultSecretRetention, KeyVaultSecretStore, write_budget
    from shared.adapters.queues import StorageWorkQueue
    from shared.adapters.retries import SendOnceRetryPolicy, key_vault_write_once, send_once_transport
    from shared.adapters.signins import GraphSignInLog
    from shared.adapters.tables import TablesConsentStore, TablesOnboardingRuns, TablesStateStore
    from shared.adapters.warning_rules import TablesWarningRules
    from shared.alerts import AlertBook, WebhookPost, build_channel
    from shared.approval_links import SignedApprovalLinks, base_url
    from shared.work import WORK_QUEUE_NAME

    table_prefix = table_prefix or DEFAULTS.get("table_prefix", "")
    clock = clock or DEFAULTS.get("clock") or SystemClock()
    alerter = alerter or DEFAULTS.get("alerter")
    configure_telemetry(settings)
    transport = shared_transport(settings, pool_size=max(32, settings.scan_concurrency * 4))
    credentials = Credentials(settings, transport)
    if settings.tables_connection_string:
        table_service = TableServiceClient.from_connection_string(
            settings.tables_connection_string, transport=transport
        )
    else:
        table_service = TableServiceClient(settings.tables_endpoint, credential=credentials.home(), transport=transport)
    state = TablesStateStore(table_service, prefix=table_prefix)
    vault_transport = send_once_transport(transport)
    secret_client = SecretClient(
        settings.key_vault_url,
        credentials.home(),
        # The challenge names vault.azure.net; a vault elsewhere (the sandbox) cannot match it.
        verify_challenge_resource=".vault." in (urlparse(settings.key_vault_url).hostname or ""),
        # A set-secret is never sent twice (a lost answer would store the value in two versions): see retries.py.
        transport=vault_transport,
        retry_policy=SendOnceRetryPolicy(key_vault_write_once),
    )
    writes = write_budget(settings.key_vault_url, settings.key_vault_writes_per_10s)
    secrets = KeyVaultSecretStore(secret_client, writes)
    channel = None
    if settings.alert_webhook_secret_name:
        channel = build_channel(settings.alert_webhook_kind, WebhookPost(
            secrets, settings.alert_webhook_secret_name, ca_bundle=settings.ca_bundle))
    book = AlertBook(table_service.get_table_client(f"{table_prefix}alerts"), clock, channel)
    alerter = alerter or book
    tickets = ticket_book(settings, table_service, table_prefix, clock, secrets, book, state)
    directory = GraphDirectory(credentials, settings.graph_base_url, transport.session, settings.ca_bundle,
                               rotator_client_id(settings))
    consent_keys = KeyVaultConsentKeys(secret_client, writes)
    approvals = TablesApprovals(table_service, prefix=table_prefix)
    links = SignedApprovalLinks(consent_keys, base_url(settings.consent_redirect_uri), clock)
    # Entra's sign-in log (the SignInLog port): plain reads on the process's session with the tenant credentials, as
    # the directory's reads; nothing to close.
    sign_in_log = GraphSignInLog(credentials, settings.graph_base_url, transport.session, clock)
    delivering = destinations(settings, secrets)
    engine = Engine(
        state=state,
        directory=directory,
        secrets=secrets,
        probe=EntraTokenProbe(settings, transport),
        destinations=delivering,
        alerter=alerter,
        clock=clock,
        config=config or engine_config(settings),
        sign_ins=sign_in_log,  # retirement waits for the new key's sign-in where the tenant allows the read
        approvals=approvals,  # change control (issue 26): approval requests, read at the reservation
        links=links,
    )
    queue = None
    if settings.work_queue_connection_string or settings.work_queue_endpoint:
        name = work_queue or DEFAULTS.get("work_queue") or WORK_QUEUE_NAME
        queue = StorageWorkQueue.build(settings.work_queue_connection_string, settings.work_queue_endpoint,
                                       credentials.home(), transport, name=name)

    async def close() -> None:
        if queue is not None:
            await queue.close()
        await directory.close()
        await secrets.close()
        await state.close()
        await credentials.close()
        close_destinations(delivering)
        await close_transport(vault_transport)
        await close_transport(transport)

    consents = TablesConsentStore(table_service, prefix=table_prefix)
    inventory_source = GraphInventory(credentials, settings.graph_base_url, transport.session)
    inventory = TablesInventoryStore(table_service, prefix=table_prefix)
    return Services(settings, engine, state, directory, secrets, consent_keys, consents,
                    queue, book, sign_in_log, inventory_source=inventory_source, inventory=inventory,
                    onboarding_runs=TablesOnboardingRuns(table_service, prefix=table_prefix),
                    proofpoint_orgs=proofpoint_orgs(settings, secrets),
                    partner_sessions=_partner_sessions(settings, secret_client, transport, clock),
                    http=transport.session, retention=KeyVaultSecretRetention(secret_client),
                    warning_rules=TablesWarningRules(table_service, prefix=table_prefix),
                    approvals=approvals, tickets=tickets), close


def ticket_book(settings: Settings, table_service: Any, table_prefix: str, clock: Clock, secrets: Any, book: AlertBook,
                state: Any) -> TicketBook | None:
    """The ticket book following the alert book after each pass (TICKET_SYSTEM set), or None."""
    if not settings.ticket_system:
        return None
    from shared.tickets.book import TicketBook
    from shared.tickets.routing import parse_routing
    from shared.tickets.service import desk_factory

    tickets = TicketBook(table_service.get_table_client(f"{table_prefix}tickets"), clock,
                         parse_routing(settings.ticket_routing),
                         desk_factory(settings.ticket_system, settings.ticket_secret_name, secrets,
                                      ca_bundle=settings.ca_bundle),
                         kind=settings.ticket_system, open_rows=book.open_rows, audit=state.record,
                         tell=book.raise_alert)
    book.followers.append(tickets.reconcile)
    return tickets


def _partner_sessions(settings: Settings, client: Any, transport: Any, clock: Clock) -> PartnerSessions | None:
    """Partner sessions kept in Key Vault (federated mode: the MSP app the partner admin signs in to)."""
    if "partner_sessions" in DEFAULTS:
        seam: PartnerSessions | None = DEFAULTS["partner_sessions"]
        return seam
    if settings.identity_mode is not IdentityMode.FEDERATED:
        return None
    from shared.adapters.partner_sessions import KeyVaultPartnerSessions

    return KeyVaultPartnerSessions(client, settings, transport.session, clock)


# ------------------------------------------------------------------------------------------------ per process


@dataclass
class _Shared:
    """The services one event loop's invocations share, and how many invocations are using them now."""

    loop: asyncio.AbstractEventLoop
    services: Services
    close: Callable[[], Awaitable[None]]
    users: int = 0
    retired: bool = False


_SHARED: dict[tuple[Any, ...], _Shared] = {}
_BUILDING: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def invocation_services() -> AsyncIterator[Services]:
    """The services of one function invocation: the worker process's clients, credentials and connection pool,
    built by its first invocation and reused by every later one on the same event loop (as Microsoft's "Manage
    connections in Azure Functions" asks: a client per invocation costs a TLS context, new connections and new
    tokens each time, about a second of CPU here), with an engine of the invocation's own: its own lease owner, so
    two invocations running at once in one process never mistake each other's lease for their own.

    The services are keyed by the settings and the test seams (DEFAULTS); a change of either builds new ones, and
    the old are closed when the last invocation using them ends. close_invocation_services() closes them all.
    """
    loop = asyncio.get_running_loop()
    settings = Settings.from_env(os.environ)
    key = (loop, settings, DEFAULTS.get("table_prefix", ""), DEFAULTS.get("work_queue", ""),
           id(DEFAULTS.get("clock")), id(DEFAULTS.get("alerter")), id(DEFAULTS.get("partner_sessions")))
    shared = _SHARED.get(key)
    if shared is None:
        lock = _BUILDING.setdefault(loop, asyncio.Lock())
        async with lock:  # invocations arriving together in a fresh process build the services once
            shared = _SHARED.get(key)
            if shared is None:
                built, close = await _build(settings, clock=None, alerter=None, table_prefix="", work_queue="",
                                            config=None)
                shared = _SHARED[key] = _Shared(loop, built, close)
                await _retire_others(key)
    shared.users += 1
    try:
        yield replace(shared.services, engine=shared.services.engine.renewed())
    finally:
        shared.users -= 1
        if shared.retired and shared.users == 0:
            await shared.close()


async def _retire_others(current: tuple[Any, ...]) -> None:
    """Services of other keys on this loop are closed once unused; those of a closed loop are forgotten (their
    connections went with the loop)."""
    for key, shared in list(_SHARED.items()):
        if key == current:
            continue
        if shared.loop.is_closed():
            del _SHARED[key]
        elif shared.loop is current[0]:
            await _retire(key)


async def close_invocation_services() -> None:
    """Close the shared services of the running event loop (at shutdown: `python -m shared serve`, the tests)."""
    loop = asyncio.get_running_loop()
    for key, shared in list(_SHARED.items()):
        if shared.loop is loop:
            await _retire(key)


async def _retire(key: tuple[Any, ...]) -> None:
    """No new invocation gets these services; they are closed now if unused, else by the last user's exit."""
    shared = _SHARED.pop(key)
    shared.retired = True
    if shared.users == 0:
        await shared.close()


# ------------------------------------------------------------------------------------- the consent's second click


def visit_ports(svc: Services) -> VisitPorts:
    """The second click's ports over the real services: the admin's sign-in at their own tenant and their Graph calls
    (the partner adapters, the customer's tenant as home; the rotator a confidential client), the registrar of bulk
    onboarding, this engine's dry run."""
    from shared.adapters.delegated import DelegatedSignIn
    from shared.adapters.partner_sessions import client_assertion
    from shared.onevisit import TemplateRegistrar, VisitPorts

    s = svc.settings

    async def redeem(tenant: str, code: str, verifier: str, redirect_uri: str,
                     scopes: Sequence[str]) -> AdminSession:
        sign_in = DelegatedSignIn.for_settings(s, svc.http, tenant_id=tenant, client_assertion=client_assertion(s))
        await sign_in.redeem_code(code, redirect_uri, verifier, scopes)
        return svc.partner_session(sign_in)  # its close() forgets the admin's tokens

    async def dry_run(tenant: str, app_id: str, actor: str) -> dict[str, Any]:
        return asdict(await svc.engine.rotate_now(tenant, app_id, dry_run=True, actor=actor))

    template = json.loads(s.onboarding_destinations) if s.onboarding_destinations else default_template(s)
    register = TemplateRegistrar(svc.state, svc.proofpoint_orgs if s.proofpoint_channel_domain else None,
                                 template, s.destination_allowed_hosts)
    return VisitPorts(svc.consent_keys, svc.consents, svc.directory, svc.state, redeem, register, dry_run,
                      s.consent_redirect_uri)
