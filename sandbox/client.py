"""Synchronous client of the sandbox's control API (for tests and scripts)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import requests


class SandboxClient:
    """Drives the sandbox: reset, seed, faults, holds, clock, settings."""

    def __init__(self, control_url: str, ca_file: str) -> None:
        self.control_url = control_url.rstrip("/")
        self.ca_file = ca_file
        self._session = requests.Session()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        # verify= per request: requests lets REQUESTS_CA_BUNDLE override a session's verify.
        response = self._session.request(method, self.control_url + path, json=body, timeout=30, verify=self.ca_file)
        if not response.ok:
            raise RuntimeError(f"sandbox control {method} {path} failed: {response.status_code} {response.text}")
        return response.json() if response.content else None

    def reset(self) -> None:
        self._call("POST", "/reset")

    def seed(self, doc: dict[str, Any]) -> None:
        self._call("POST", "/seed", doc)

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/state")
        return result

    def msp(self) -> dict[str, str]:
        result: dict[str, str] = self._call("GET", "/msp")
        return result

    def msp_api(self) -> dict[str, Any]:
        """The rotator's API in the MSP tenant: appId, issuer, app roles, users, automation principals (with their
        client secrets: keep them out of logs)."""
        result: dict[str, Any] = self._call("GET", "/msp/api")
        return result

    def add_redirect_uri(self, app_id: str, uri: str) -> list[str]:
        """Register a web redirect URI on an app ("msp-app" or an appId); kept across reset."""
        result: list[str] = self._call("POST", f"/applications/{app_id}/redirectUris", {"uri": uri})["redirectUris"]
        return result

    def add_fault(
        self,
        service: str,
        *,
        method: str | None = None,
        path: str = ".*",
        status: int | None = None,
        code: str | None = None,
        message: str | None = None,
        retry_after: float | None = None,
        count: int | None = 1,
        latency_ms: float = 0,
        drop: bool = False,
        when: str = "before",
        client_id: str | None = None,
        body_match: str | None = None,
        skip: int = 0,
    ) -> str:
        """A fault on the matching requests; `when="after"` lets the service do the work first, then faults."""
        body = {
            "service": service, "method": method, "path": path, "status": status, "code": code,
            "message": message, "retry_after": retry_after, "count": count, "latency_ms": latency_ms, "drop": drop,
            "when": when, "client_id": client_id, "body": body_match, "skip": skip,
        }
        return str(self._call("POST", "/faults", body)["id"])

    def faults(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/faults")["faults"]
        return result

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def add_hold(
        self, service: str, *, method: str | None = None, path: str = ".*", when: str = "before", count: int = 1,
        client_id: str | None = None, body_match: str | None = None, skip: int = 0,
    ) -> str:
        body = {"service": service, "method": method, "path": path, "when": when, "count": count,
                "client_id": client_id, "body": body_match, "skip": skip}
        return str(self._call("POST", "/holds", body)["id"])

    def held(self, hold_id: str) -> int:
        """How many requests the hold has caught so far (0 once released-all)."""
        return int(self._call("GET", f"/holds/{hold_id}")["held"])

    def waiting(self, hold_id: str) -> int:
        return int(self._call("GET", f"/holds/{hold_id}")["waiting"])

    def wait_held(self, hold_id: str, timeout: float = 10.0) -> None:
        """Block until at least one request is held by the hold."""
        deadline = time.monotonic() + timeout
        while self.waiting(hold_id) < 1:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no request reached hold {hold_id} within {timeout} s")
            time.sleep(0.02)

    def release(self, hold_id: str) -> None:
        self._call("POST", f"/holds/{hold_id}/release")

    def release_all(self) -> None:
        self._call("DELETE", "/holds")

    def set_clock(self, offset_seconds: float) -> None:
        self._call("POST", "/clock", {"offset_seconds": offset_seconds})

    def set_propagation_delay(self, seconds: float) -> None:
        self._call("POST", "/settings", {"propagation_delay_seconds": seconds})

    def set_propagation_delays(self, delays: dict[str, float | None]) -> None:
        """Per application (appId): a secret added from now on works that many sandbox seconds after creation."""
        self._call("POST", "/settings", {"propagation_delays": delays})

    def set_random_propagation(self, seed: int, max_seconds: float, min_seconds: float = 0.0) -> None:
        """Each new secret (of an app without its own delay) draws its delay from a seeded uniform distribution."""
        self._call("POST", "/settings", {"random_propagation": {"seed": seed, "min_seconds": min_seconds,
                                                                 "max_seconds": max_seconds}})

    def set_sign_in_delay(self, seconds: float) -> None:
        """How long after a sign-in its record appears in the sign-in log (sandbox seconds; 120 after reset)."""
        self._call("POST", "/settings", {"sign_in_delay_seconds": seconds})

    def set_report_zone(self, zone: str) -> None:
        """The zone the credential activity report writes its days in: "Z" (after reset) or an offset as the Graph
        docs' examples write it ("-8:00")."""
        self._call("POST", "/settings", {"report_zone": zone})

    def set_sign_in_addresses(self, *, proofpoint: str | None = None, token_endpoint: str | None = None,
                              peer: bool = False) -> None:
        """The IP address sign-ins are logged from: Proofpoint's stand-in, and token endpoint clients (`peer=True`:
        the request's own address again)."""
        addresses: dict[str, str | None] = {}
        if proofpoint is not None:
            addresses["proofpoint"] = proofpoint
        if token_endpoint is not None or peer:
            addresses["token_endpoint"] = None if peer else token_endpoint
        self._call("POST", "/settings", {"sign_in_addresses": addresses})

    def sign_in(self, tenant_id: str, app_id: str, secret: str, *, ip_address: str | None = None,
                at: str | None = None, resource: str | None = None) -> str | None:
        """Another client signs in with the app's secret (now, or `at`, e.g. "-2h"); None when Entra accepted it,
        else the AADSTS description. Logged in the tenant's sign-in log either way."""
        body: dict[str, Any] = {"tenantId": tenant_id, "appId": app_id, "secret": secret}
        if ip_address is not None:
            body["ipAddress"] = ip_address
        if at is not None:
            body["at"] = at
        if resource is not None:
            body["resourceDisplayName"] = resource
        answer = self._call("POST", "/sign-in", body)
        return None if answer["ok"] else str(answer["error"])

    def sign_ins(self, tenant_id: str) -> list[dict[str, Any]]:
        """Every sign-in the tenant's log holds, visible yet or not (`visibleAt`), oldest first."""
        tenant = next(t for t in self.state()["tenants"] if t["id"] == tenant_id)
        return list(tenant["signIns"])

    def set_tables_upstream(self, url: str | None) -> None:
        """Where the `tables` proxy forwards (Azurite's Table endpoint); kept across reset."""
        self._call("POST", "/settings", {"tables_upstream": url})

    def set_keyvault_create_limit(self, limit: int) -> None:
        """Creates Key Vault admits per 10 s (300, Key Vault's own limit, until the next reset)."""
        self._call("POST", "/settings", {"keyvault_create_limit": limit})

    def keyvault_writes(self) -> dict[str, Any]:
        """Key Vault's writes since the last reset: per kind (`create`, `update`, `delete`) the total, the most in
        any 10 s window (`maxPerWindow`) and each consecutive 10 s window's count (`windows`)."""
        result: dict[str, Any] = self._call("GET", "/keyvault/writes")
        return result

    def partner(self) -> dict[str, Any]:
        """The partner relationship: the partner admin, its groups, GDAP relationships, Partner Center consents."""
        result: dict[str, Any] = self._call("GET", "/msp/partner")
        return result

    def seed_gdap_customers(self, count: int, *, start: int = 1, missing_role_every: int = 0,
                            proofpoint_app: bool = True) -> list[str]:
        """Seed `count` customer tenants with active GDAP relationships (sandbox.gdap.customers_seed); their ids."""
        from sandbox.gdap import customers_seed

        doc = customers_seed(count, start=start, missing_role_every=missing_role_every,
                             proofpoint_app=proofpoint_app)
        self.seed(doc)
        return [t["id"] for t in doc["tenants"]]

    def set_service_principal_delay(self, seconds: float) -> None:
        """How long a service principal made by Graph or Partner Center stays unknown to the token endpoint."""
        self._call("POST", "/settings", {"service_principal_delay_seconds": seconds})

    def set_device_code_interval(self, seconds: int) -> None:
        """The polling interval the device code endpoint tells clients (5 s, Entra's, until the next reset)."""
        self._call("POST", "/settings", {"device_code_interval_seconds": seconds})

    def inventory_change(self, tenant_id: str, change: dict[str, Any]) -> list[str]:
        """Change generated objects of a tenant's population (sandbox/inventory.py InventoryState.change); the ids."""
        result: list[str] = self._call("POST", f"/inventory/{tenant_id}/changes", change)["ids"]
        return result

    def inventory_changes(self, tenant_ids: list[str], change: dict[str, Any]) -> int:
        """The same change in many tenants at once; how many objects changed."""
        result: int = self._call("POST", "/inventory/changes", {**change, "tenants": tenant_ids})["changed"]
        return result

    def inventory_sync_reset(self, tenant_id: str) -> None:
        """Graph's synchronization reset of a tenant: every earlier delta token meets 410 Gone."""
        self._call("POST", f"/inventory/{tenant_id}/reset")

    def proofpoint_sync(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("POST", "/proofpoint/sync")["results"]
        return result


    # Autotask PSA (sandbox/psa_autotask.py): its database as tests read it, and what a person does in its UI.

    def autotask(self) -> dict[str, Any]:
        """The Autotask database: `tickets`, `notes`, `deletedTicketIds`, `threshold`, `rejected`, users, companies."""
        result: dict[str, Any] = self.state()["psa_autotask"]
        return result

    def autotask_person_updates(self, ticket_id: int | str, changes: dict[str, Any]) -> dict[str, Any]:
        """A person edits a ticket in Autotask (e.g. `{"status": 5}` completes it); the ticket afterwards."""
        result: dict[str, Any] = self._call("POST", f"/autotask/tickets/{ticket_id}", changes)
        return result

    def autotask_person_unlocks(self, user_name: str) -> None:
        """A person clears an API user's Locked box in Autotask (after repeated failed sign-ins)."""
        self._call("POST", f"/autotask/users/{user_name}/unlock")

    def autotask_person_deletes(self, ticket_id: int | str) -> None:
        """A person deletes a ticket in Autotask (its notes go with it)."""
        self._call("DELETE", f"/autotask/tickets/{ticket_id}")


def through_tables_proxy(connection_string: str, proxy_url: str) -> str:
    """The connection string with its TableEndpoint's origin replaced by the sandbox's `tables` proxy."""
    parts = [p for p in connection_string.split(";") if p]
    out = []
    for part in parts:
        key, _, value = part.partition("=")
        if key == "TableEndpoint":
            path = urlsplit(value).path
            value = proxy_url.rstrip("/") + path
        out.append(f"{key}={value}")
    return ";".join(out) + ";"


def tables_origin(connection_string: str) -> str:
    """The origin (scheme://host:port) of a connection string's TableEndpoint."""
    for part in connection_string.split(";"):
        key, _, value = part.partition("=")
        if key == "TableEndpoint":
            split = urlsplit(value)
            return f"{split.scheme}://{split.netloc}"
    raise ValueError("the connection string has no TableEndpoint")


@dataclass(frozen=True)
class SignInAnswer:
    """What Entra sends the app's redirect URI after a sign-in: where, how (GET or POST) and the parameters (`code`,
    `state`, `id_token`, or `error` and `error_description`)."""

    redirect_uri: str
    method: str
    params: dict[str, str]


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, dict[str, list[str]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append((named.get("action", ""), {}))
        elif tag in ("input", "button") and self.forms and named.get("name"):
            self.forms[-1][1].setdefault(named["name"], []).append(named.get("value", ""))


def _only_form(page: str) -> tuple[str, dict[str, list[str]]]:
    parser = _Forms()
    parser.feed(page)
    if len(parser.forms) != 1:
        raise ValueError("expected one form on the page")
    return parser.forms[0]


def sign_in_as(authorize_url: str, user_principal_name: str, ca_file: str) -> SignInAnswer:
    """Play the browser at the sandbox's Entra: open an authorize URL (as the app's /.auth/login/aad redirect names
    it), pick the user on the account picker, and return what Entra sends to the redirect URI. Raises
    PermissionError with Entra's error text when Entra shows its error page instead (AADSTS50011, AADSTS50105...)."""
    with requests.Session() as browser:
        page = browser.get(authorize_url, allow_redirects=False, verify=ca_file, timeout=30)
        if page.status_code in (301, 302, 303):  # a protocol error sent straight back to the app
            return _redirected(page.headers["Location"])
        if page.status_code != 200:
            raise PermissionError(page.text)
        action, fields = _only_form(page.text)
        if "ctx" not in fields:  # a protocol error posted straight back to the app (response_mode=form_post)
            return SignInAnswer(action, "POST", {k: v[0] for k, v in fields.items()})
        if user_principal_name not in fields.get("login_hint", []):
            raise LookupError(f"{user_principal_name} is not offered on the sign-in page")
        answer = browser.post(urljoin(authorize_url, action), data={"ctx": fields["ctx"][0],
                              "login_hint": user_principal_name}, allow_redirects=False, verify=ca_file, timeout=30)
    if answer.status_code in (301, 302, 303):
        return _redirected(answer.headers["Location"])
    if answer.status_code != 200:
        raise PermissionError(answer.text)
    target, posted = _only_form(answer.text)  # response_mode=form_post: the auto-posting form
    return SignInAnswer(target, "POST", {k: v[0] for k, v in posted.items()})


def _redirected(location: str) -> SignInAnswer:
    parts = urlsplit(location)
    params = dict(parse_qsl(parts.fragment or parts.query))
    return SignInAnswer(f"{parts.scheme}://{parts.netloc}{parts.path}", "GET", params)


def answer_device_code(entra_url: str, user_code: str, user_principal_name: str, ca_file: str, *,
                       approve: bool = True) -> str:
    """Play the user at the device code verification page: enter the code, pick the account, Continue (or Cancel);
    the page's heading. PermissionError with Entra's text when the code is refused."""
    with requests.Session() as browser:
        picker = browser.post(f"{entra_url}/devicelogin", data={"otc": user_code}, verify=ca_file, timeout=30)
        if picker.status_code != 200:
            raise PermissionError(picker.text)
        action, fields = _only_form(picker.text)
        if user_principal_name not in fields.get("login_hint", []):
            raise LookupError(f"{user_principal_name} is not offered on the sign-in page")
        done = browser.post(urljoin(entra_url + "/", action.lstrip("/")), data={
            "otc": fields["otc"][0], "login_hint": user_principal_name,
            "decision": "approve" if approve else "decline"}, verify=ca_file, timeout=30)
    if done.status_code != 200:
        raise PermissionError(done.text)
    return done.text
