"""The address guard at delivery (shared/destinations/transport.py): a name that resolves to a loopback, private or
metadata address is refused before any connection, an allowed host is reached at the address just vetted, and a
redirect is never followed. A plain HTTP server on loopback stands in for the destination; the resolver is the
guard's own parameter (what DNS would answer), so no DNS is needed."""

from __future__ import annotations

import http.server
from collections.abc import Iterator

import pytest
import requests

from shared.destinations.transport import BlockedDestination, GuardedSession, check_host, vetted_addresses
from tests.destinations import loopback_server, resolver


class _Redirecting(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.path)
        self.send_response(302)
        self.send_header("Location", "http://169.254.169.254/metadata/identity/oauth2/token")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    _Redirecting.seen = []
    with loopback_server(_Redirecting) as port:
        yield port


@pytest.mark.parametrize("answers", [["10.0.0.4"], ["93.184.216.34", "127.0.0.1"], ["::1"], ["169.254.169.254"],
                                     ["::ffff:192.168.1.1"], ["168.63.129.16"]])
def test_a_name_resolving_to_a_non_public_address_is_refused(answers: list[str]) -> None:
    with pytest.raises(BlockedDestination):
        vetted_addresses("portal.example.com", 443, resolve=resolver({"portal.example.com": answers}))


def test_public_answers_are_used() -> None:
    found = vetted_addresses("portal.example.com", 443, resolve=resolver({"portal.example.com": ["93.184.216.34"]}))
    assert found == ["93.184.216.34"]


def test_a_rebinding_name_never_gets_a_connection(server: int) -> None:
    # The name was fine at registration (a public-looking name); at delivery it answers loopback: refused before
    # any byte is sent.
    check_host("portal.example.com")
    session = GuardedSession(resolve=resolver({"portal.example.com": ["127.0.0.1"]}))
    with pytest.raises(BlockedDestination):
        session.get(f"http://portal.example.com:{server}/hook", timeout=5)
    assert _Redirecting.seen == []


def test_an_allowed_host_is_reached_and_its_redirect_is_not_followed(server: int) -> None:
    session = GuardedSession(["portal.test"], resolve=resolver({"portal.test": ["127.0.0.1"]}))
    # max_redirects 0: requests refuses a 3xx outright, with or without allow_redirects.
    for path, follow in (("/hook", False), ("/again", True)):
        with pytest.raises(requests.TooManyRedirects) as refused:
            session.get(f"http://portal.test:{server}{path}", timeout=5, allow_redirects=follow)
        assert refused.value.response is not None and refused.value.response.status_code == 302
    assert _Redirecting.seen == ["/hook", "/again"]  # reached; the metadata address in Location was never asked
