"""Proofpoint's calls of a pass share connections (shared/destinations/transport.py SessionPool): against the sandbox's
Proofpoint over HTTPS one TLS handshake serves a drift read, a push (GET, PUT, GET) and a sync check, where a session
per call paid one each; the pool is replaced after it sat idle; each new connection is still vetted (a name that
resolves to a private address is refused), a connection serves only the host it was opened to, and no cookie is kept
from one call to the next."""

from __future__ import annotations

import asyncio
import http.server
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3.connection

from shared.adapters.keyvault import KeyVaultSecretStore
from shared.destinations import ProofpointDestination, build_destinations
from shared.destinations.transport import BlockedDestination, SessionPool, guarded_sessions
from shared.domain import DestinationConfig
from tests.destinations import DOMAIN, STACK, delivery, loopback_server, resolver, settings_of
from tests.rotation import conftest as rotation

world, rotator = rotation.world, rotation.rotator  # the rotation tests' fixtures: the real services


def config() -> DestinationConfig:
    return DestinationConfig("proofpoint", "proofpoint", {"stack": STACK, "domain": DOMAIN,
                                                          "account_secret": "pp-account"})


@pytest.fixture
def handshakes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The host of every new TLS connection the requests clients open."""
    return _connections_opened(monkeypatch, urllib3.connection.HTTPSConnection)


def _connections_opened(monkeypatch: pytest.MonkeyPatch, kind: type[urllib3.connection.HTTPConnection]) -> list[str]:
    """The host of every new connection of this kind, in order, as it is opened."""
    opened: list[str] = []
    connect = kind.connect

    def counted(self: urllib3.connection.HTTPConnection) -> None:
        opened.append(str(self.host))
        connect(self)

    monkeypatch.setattr(kind, "connect", counted)
    return opened


@pytest.fixture
def pooled(sb: Any, store: KeyVaultSecretStore) -> ProofpointDestination:
    """Proofpoint as bootstrap builds it for the sandbox: one session pool for all its calls."""
    destination = build_destinations(settings_of(sb), store)["proofpoint"]
    assert isinstance(destination, ProofpointDestination)
    return destination


async def _a_pass(destination: ProofpointDestination) -> None:
    await destination.reported_use(config())  # the drift read at the assessment
    await destination.deliver(config(), delivery())  # GET, PUT, GET
    await destination.last_sync(config())  # the retire step's sync proof


@pytest.mark.sandbox
async def test_one_handshake_serves_a_pass_where_each_call_paid_one(
    sb: Any, store: KeyVaultSecretStore, pooled: ProofpointDestination, handshakes: list[str]
) -> None:
    await _a_pass(pooled)
    assert len(handshakes) == 1, handshakes
    settings = settings_of(sb)
    per_call = ProofpointDestination(store, base_url=settings.proofpoint_base_url, verify=settings.ca_bundle or True,
                                     session_factory=guarded_sessions(settings.destination_allowed_hosts))
    handshakes.clear()
    await _a_pass(per_call)
    assert len(handshakes) == 3, "a session per call: the drift read, the push, the sync check"


def test_an_idle_pool_is_replaced_and_a_busy_one_is_not() -> None:
    now = [0.0]
    pool = SessionPool(idle=30.0, clock=lambda: now[0])
    with pool() as first:
        now[0] = 100.0  # in use for long: never replaced under a caller
        with pool() as same:
            assert same is first
    now[0] = 120.0
    with pool() as again:
        assert again is first, "20 s idle: reused"
    now[0] = 151.0
    with pool() as fresh:
        assert fresh is not first and pool.opened == 2, "31 s idle: a new session"
    pool.close()


class _Cookies(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Proofpoint's HTTPS endpoints
    seen: list[str] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("Cookie") or "")
        self.send_response(200)
        self.send_header("Set-Cookie", "session=org-a-account; Path=/")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    _Cookies.seen = []
    with loopback_server(_Cookies) as port:
        yield port


def test_no_cookie_travels_from_one_call_to_the_next(server: int) -> None:
    pool = SessionPool(["pp.test"], resolve=resolver({"pp.test": ["127.0.0.1"]}))
    for _ in range(2):
        with pool() as session:
            assert session.get(f"http://pp.test:{server}/orgs/a", timeout=5).status_code == 200
            assert len(session.cookies) == 0
    assert _Cookies.seen == ["", ""]
    pool.close()


def test_each_new_connection_is_still_vetted_and_serves_only_its_host(
    server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = _connections_opened(monkeypatch, urllib3.connection.HTTPConnection)
    answers = {"a.test": ["127.0.0.1"], "b.test": ["127.0.0.1"], "rebound.example.com": ["127.0.0.1"]}
    pool = SessionPool(["a.test", "b.test"], resolve=resolver(answers))
    for host in ("a.test", "a.test", "b.test", "a.test"):
        with pool() as session:
            assert session.get(f"http://{host}:{server}/", timeout=5).status_code == 200
    assert opened == ["a.test", "b.test"], "reused per host, never across hosts"
    with pool() as session, pytest.raises(BlockedDestination):
        session.get(f"http://rebound.example.com:{server}/", timeout=5)
    assert len(_Cookies.seen) == 4
    pool.close()


@pytest.mark.sandbox
async def test_concurrent_calls_share_the_pool_safely(pooled: ProofpointDestination, handshakes: list[str]) -> None:
    for _ in range(2):  # the second round reuses the first round's connections
        reports = await asyncio.gather(*(pooled.reported_use(config()) for _ in range(16)))
        assert all(r.app_id == reports[0].app_id and r.app_id for r in reports)
    assert 1 <= len(handshakes) <= 16, "at most one connection per concurrent call, kept for the next round"


def test_a_hosts_connection_idle_too_long_is_replaced_while_another_host_keeps_the_pool_busy(
    server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool's idleness is the session's: a.test's connection idle 45 s while b.test was used every 20 s was sent
    a request again (before: opened == [a, b]), on a socket a.test's server may have closed (keep-alive timeouts of
    5 to 75 s): each kept connection is dropped after `idle` unused, per host."""
    opened = _connections_opened(monkeypatch, urllib3.connection.HTTPConnection)
    now = [0.0]
    pool = SessionPool(["a.test", "b.test"], resolve=resolver({"a.test": ["127.0.0.1"], "b.test": ["127.0.0.1"]}),
                       idle=30.0, clock=lambda: now[0])
    for at, host in ((0, "a.test"), (20, "b.test"), (40, "b.test"), (45, "a.test"), (50, "a.test"), (65, "b.test")):
        now[0] = float(at)
        with pool() as session:
            assert session.get(f"http://{host}:{server}/", timeout=5).status_code == 200
    assert opened == ["a.test", "b.test", "a.test"], "a.test idle 45 s: a new connection; 5 s and 25 s: kept"
    assert pool.opened == 1, "the session itself was never idle 30 s"
    pool.close()


@pytest.mark.sandbox
@pytest.mark.azurite
async def test_the_services_close_proofpoints_pooled_connections(world: Any, rotator: Any) -> None:
    """The services' close (a command's end, an invocation's services retired) closes the pool: its connections were
    left open until the garbage collector found them."""
    async with rotator() as built:
        proofpoint = built.engine.destinations["proofpoint"]
        pool = proofpoint._session_factory
        assert isinstance(pool, SessionPool)
        url = built.settings.proofpoint_base_url.format(stack=STACK)
        with pool() as session:
            await asyncio.to_thread(session.get, url, verify=built.settings.ca_bundle or True, timeout=10)
        adapter = session.get_adapter(url)
        assert adapter.poolmanager.pools, "a connection kept for the next call"
    assert not adapter.poolmanager.pools, "closed with the services"
