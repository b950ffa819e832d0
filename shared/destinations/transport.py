"""Where a destination may send a secret: public addresses only (no SSRF), checked twice.

At registration a destination URL's host is checked as written: IP literals in any spelling (dotted, decimal,
octal, hex, short forms, IPv6 and IPv4-mapped IPv6) must be public, and names that only mean something inside a
network (`localhost`, `*.internal` such as metadata.google.internal, `*.local`, single labels) are refused. At
delivery the name is resolved, EVERY answer must be public, and the connection goes to an address that was just
checked (no second lookup an attacker's DNS could answer differently: no rebinding between check and connect);
TLS still verifies the certificate against the name. Redirects are never followed, proxies and .netrc from the
environment are ignored. DESTINATION_ALLOWED_HOSTS lists hosts exempt from these checks: for the local sandbox
(127.0.0.1) only, never set in Azure.
"""

from __future__ import annotations

import http.cookiejar
import ipaddress
import os
import socket
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NameResolutionError, NewConnectionError

from shared.tls import tls_context

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Names that resolve inside a network, never to the MSP's portal on the internet (RFC 6761, RFC 8375, RFC 6762,
# cloud metadata names).
_INTERNAL_NAMES = frozenset({"localhost", "localhost.localdomain", "metadata", "instance-data", "kubernetes"})
_INTERNAL_SUFFIXES = (".localhost", ".internal", ".local", ".localdomain", ".home.arpa", ".arpa", ".intranet",
                      ".lan", ".corp", ".home", ".test", ".invalid", ".example.internal")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Public-looking addresses that are a cloud platform's own endpoint inside every network: Azure's WireServer
# (168.63.129.16, host agent and DNS) and AWS's IPv6 instance metadata.
_PLATFORM = frozenset({ipaddress.ip_address("168.63.129.16"), ipaddress.ip_address("fd00:ec2::254")})


class BlockedDestination(ValueError):
    """A destination host that is, or resolves to, a loopback, private, link-local or otherwise non-public address."""


def is_public(address: IPAddress) -> bool:
    """True only for globally routable unicast addresses (and not for IPv6 forms that embed a private IPv4)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and not is_public(embedded):
            return False
        if address.scope_id:
            return False
    if address in _PLATFORM:
        return False
    return bool(
        address.is_global
        and not (address.is_private or address.is_loopback or address.is_link_local or address.is_multicast
                 or address.is_reserved or address.is_unspecified)
    )


def _numeric_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a numeric host means to the C resolver (2130706433, 0x7f.1, 0177.0.0.1, 127.1), if any."""
    if not host or not all(c in "0123456789abcdefx." for c in host) or not host[0].isdigit():
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def canonical_host(host: str) -> str:
    """The host as the resolver sees it: lower case, no trailing dot, no brackets; non-ASCII names refused."""
    text = unicodedata.normalize("NFKC", host).strip().strip("[]").lower().rstrip(".")
    if not text or not text.isascii():
        raise BlockedDestination("the host must be an ASCII name (write internationalised names in punycode)")
    return text


def check_host(host: str, allowed: Iterable[str] = ()) -> None:
    """Registration: refuse a host that names a non-public place as written (no DNS lookup)."""
    name = canonical_host(host)
    if name in set(allowed):
        return
    try:
        literal: IPAddress | None = ipaddress.ip_address(name.split("%")[0])
        if "%" in name:
            raise BlockedDestination("the host must not be a scoped (link-local) IPv6 address")
    except ValueError:
        literal = _numeric_ipv4(name)
        if literal is not None:
            raise BlockedDestination(
                f"the host is the address {literal} written in a non-standard form; use a DNS name"
            ) from None
    if literal is not None:
        if not is_public(literal):
            raise BlockedDestination(f"the host {literal} is a loopback, private, link-local or reserved address")
        return
    if name in _INTERNAL_NAMES or name.endswith(_INTERNAL_SUFFIXES) or "." not in name:
        raise BlockedDestination(f"the host {name!r} is not a public internet name")
    if not all(label and len(label) <= 63 for label in name.split(".")) or len(name) > 253:
        raise BlockedDestination(f"the host {name!r} is not a valid DNS name")


Resolver = Callable[[str, int], list[str]]


def system_resolver(name: str, port: int) -> list[str]:
    """Every address the system resolver answers for a name (A and AAAA)."""
    return [str(info[4][0]) for info in socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)]


def vetted_addresses(
    host: str, port: int, allowed: Iterable[str] = (), resolve: Resolver = system_resolver
) -> list[str]:
    """Delivery: resolve the host; every answer must be public (else BlockedDestination). The addresses to use."""
    name = canonical_host(host)
    if name not in set(allowed):
        check_host(name)
    answers = resolve(name, port)
    addresses = list(dict.fromkeys(answers))
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, f"no address for {name}")
    if name not in set(allowed):
        for raw in addresses:
            if not is_public(ipaddress.ip_address(raw.split("%")[0])) or "%" in raw:
                raise BlockedDestination(f"{name} resolves to {raw}, a non-public address: refused")
    return addresses


def _pinned(base: type[HTTPConnection], allowed: frozenset[str], resolve: Resolver) -> type[HTTPConnection]:
    class Pinned(base):  # type: ignore[valid-type,misc]
        """Connects to an address vetted at this moment; TLS still checks the certificate against the name."""

        def _new_conn(self) -> socket.socket:
            name: str = self.host  # urllib3 2.x: _dns_host without a trailing dot
            last: Exception | None = None
            try:
                addresses = vetted_addresses(name, self.port or 443, allowed, resolve)
            except socket.gaierror as error:
                raise NameResolutionError(self.host, self, error) from error
            for address in addresses:
                self._dns_host = address
                try:
                    sock: socket.socket = super()._new_conn()
                    return sock
                except NewConnectionError as error:
                    last = error
                finally:
                    self._dns_host = name
            raise last or NewConnectionError(self, f"no address for {name}")

    return Pinned


class _IdleLimited:
    """A connection pool (urllib3's, one per scheme, host and port) that closes a kept connection idle longer than
    `idle` seconds when it is taken again, so the next request opens (resolves, vets, pins) a new one: a session
    kept busy by one host must not send another host's request on a socket that host's server has since closed."""

    idle: float | None = None
    clock: Callable[[], float] = time.monotonic

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        returned = getattr(conn, "_rotator_returned", None)
        if self.idle is not None and returned is not None and self.clock() - returned > self.idle:
            conn.close()  # urllib3 connects a closed connection again before its request
        return conn

    def _put_conn(self, conn: Any) -> None:
        if conn is not None:
            conn._rotator_returned = self.clock()
        super()._put_conn(conn)  # type: ignore[misc]


class _GuardedAdapter(HTTPAdapter):
    def __init__(self, allowed: frozenset[str], resolve: Resolver, pool_size: int = 10, idle: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._allowed = allowed
        self._resolve = resolve
        self._idle = idle
        self._clock = clock
        super().__init__(max_retries=0, pool_maxsize=pool_size)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        idle = {"idle": self._idle, "clock": staticmethod(self._clock)}
        https = type("GuardedHTTPSPool", (_IdleLimited, HTTPSConnectionPool),
                     {"ConnectionCls": _pinned(HTTPSConnection, self._allowed, self._resolve), **idle})
        http = type("GuardedHTTPPool", (_IdleLimited, HTTPConnectionPool),
                    {"ConnectionCls": _pinned(HTTPConnection, self._allowed, self._resolve), **idle})
        self.poolmanager.pool_classes_by_scheme = {"https": https, "http": http}

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Verify as requests does, against a CA store loaded once per process (tls_context): requests hands urllib3
        a bundle path, which it loads into a new context on every new connection (about 100 ms of CPU here). The
        verify=True store is the system's, as for the Azure SDK clients."""
        super().cert_verify(conn, url, verify, cert)  # type: ignore[no-untyped-call]
        if url.lower().startswith("https") and verify and not (isinstance(verify, str) and os.path.isdir(verify)):
            # `conn` is the pool: what it gives each new connection.
            conn.conn_kw["ssl_context"] = tls_context("" if verify is True else str(verify))
            conn.ca_certs = None


class GuardedSession(requests.Session):
    """A requests Session that only reaches public addresses (or the allowed hosts), with no redirects, no
    environment proxies and no .netrc credentials."""

    guarded = True

    def __init__(self, allowed_hosts: Iterable[str] = (), resolve: Resolver = system_resolver,
                 pool_size: int = 10, idle: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.trust_env = False  # HTTPS_PROXY would carry the request elsewhere; .netrc would add credentials
        self.max_redirects = 0
        adapter = _GuardedAdapter(frozenset(canonical_host(h) for h in allowed_hosts), resolve, pool_size, idle, clock)
        self.mount("https://", adapter)
        self.mount("http://", adapter)


# A connection left idle is closed by the server after its own keep-alive timeout (nginx's default 75 s, many load
# balancers 60 s): a pooled session idle longer than this is replaced rather than reused, so the calls of one pass
# (a target's drift read, baseline, push and sync checks; the next targets on the same stack) share connections and
# a request is not sent on a socket the server is about to close.
REUSE_IDLE_SECONDS = 30.0

SessionFactory = Callable[[], AbstractContextManager[requests.Session]]


class SessionPool:
    """One GuardedSession shared by the calls that follow each other (a pass), so its TLS connections are reused
    instead of a handshake per call; replaced after REUSE_IDLE_SECONDS without use. Called, it lends the session for a
    `with` block (never closed there). Each new connection is still vetted and pinned (GuardedSession), a pooled one
    only ever serves the host it was opened to (urllib3 pools per scheme, host and port), and no cookie is kept: one
    org's or account's answer never travels with another's request. requests' Session is shared across the worker
    threads as its connection pool allows (urllib3's pools are thread-safe); nothing else in it changes per call."""

    def __init__(self, allowed_hosts: Iterable[str] = (), resolve: Resolver = system_resolver,
                 idle: float = REUSE_IDLE_SECONDS, clock: Callable[[], float] = time.monotonic,
                 pool_size: int = 10) -> None:
        self._allowed = tuple(allowed_hosts)
        # Connections kept per host: as many as calls may run at once (the destinations' threads), else those
        # beyond it are closed on return and the next calls pay a handshake again.
        self._pool_size = pool_size
        self._resolve = resolve
        self._idle = idle
        self._clock = clock
        self._lock = threading.Lock()
        self._session: requests.Session | None = None
        self._last = 0.0
        self._lent = 0
        self.opened = 0  # sessions made so far (for tests and benchmarks)

    def __call__(self) -> AbstractContextManager[requests.Session]:
        return self._lend()

    @contextmanager
    def _lend(self) -> Iterator[requests.Session]:
        with self._lock:
            stale = self._session is not None and not self._lent and self._clock() - self._last > self._idle
            if stale and self._session is not None:
                self._session.close()
            if self._session is None or stale:
                # Each kept connection is also dropped after `idle` unused (per host: the session's own idleness
                # does not tell one host's connection from another's).
                self._session = _cookieless(GuardedSession(self._allowed, self._resolve, self._pool_size,
                                                           self._idle, self._clock))
                self.opened += 1
            session = self._session
            self._lent += 1
        try:
            yield session
        finally:
            with self._lock:
                self._lent -= 1
                self._last = self._clock()

    def close(self) -> None:
        """Close the pooled connections (a worker's end)."""
        with self._lock:
            if self._session is not None:
                self._session.close()
            self._session = None


def _cookieless(session: requests.Session) -> requests.Session:
    # A cookie policy that accepts none: requests stores a response's cookies in the session's jar otherwise.
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return session


def guarded_sessions(allowed_hosts: Iterable[str] = ()) -> Callable[[], requests.Session]:
    """A session factory for the destinations: each session guarded with the same allowed hosts."""
    allowed = frozenset(allowed_hosts)
    return lambda: GuardedSession(allowed)
