"""Replays every official Key Vault example (../shared/contracts/keyvault) against the sandbox's vault.

Per the contract kit's README, "How to use" 1 and 3: operationId -> verb and path from secrets.json, the
example's status code, the same JSON shape (keys at every level, JSON types), paging with nextLink, and every
body validated against the secrets.json definitions (also for operations without an example, such as
DeleteSecret), plus the KeyVaultError format of errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

CONTRACTS = Path(__file__).resolve().parents[2].parent / "shared" / "contracts" / "keyvault"
SPEC = json.loads((CONTRACTS / "secrets.json").read_text())
EXAMPLES = sorted(CONTRACTS.glob("*-example.json"))
# Newer than the recorded examples: the real vault has sent attributes.recoverableDays since api-version 7.1,
# and secrets.json defines it. The only key the sandbox adds over an example; every other key must match.
TOLERATED_EXTRA = {("attributes", "recoverableDays")}

pytestmark = pytest.mark.sandbox


def operations() -> dict[str, tuple[str, str, dict[str, Any]]]:
    """operationId -> (HTTP verb, path template, operation) from secrets.json."""
    found = {}
    for path, ops in SPEC["paths"].items():
        for verb, op in ops.items():
            if verb != "parameters":
                found[op["operationId"]] = (verb.upper(), path, op)
    return found


OPERATIONS = operations()


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def shape_differences(expected: Any, actual: Any, where: str = "") -> list[str]:
    """Where the actual body's keys or JSON types differ from the example's (values are not compared)."""
    if json_type(expected) != json_type(actual):
        return [f"{where or '<body>'}: {json_type(actual)} instead of {json_type(expected)}"]
    problems: list[str] = []
    if isinstance(expected, dict):
        parent = where.rsplit(".", 1)[-1]
        extra = {k for k in set(actual) - set(expected) if (parent, k) not in TOLERATED_EXTRA}
        if set(expected) - set(actual) or extra:
            problems.append(f"{where or '<body>'}: keys {sorted(actual)} instead of {sorted(expected)}")
        for key in set(expected) & set(actual):
            problems += shape_differences(expected[key], actual[key], f"{where}.{key}" if where else key)
    elif isinstance(expected, list) and expected and actual:
        for item in actual:
            problems += shape_differences(expected[0], item, f"{where}[]")
    return problems


def schema_violations(schema: dict[str, Any], value: Any, where: str = "<body>") -> list[str]:
    """Validate a body against a secrets.json definition: no undefined keys, the declared JSON types."""
    if "$ref" in schema:
        schema = SPEC["definitions"][schema["$ref"].rsplit("/", 1)[-1]]
    kind = schema.get("type", "object" if "properties" in schema else None)
    if value is None:
        return [] if schema.get("x-nullable") or where.endswith("nextLink") else [f"{where}: null"]
    expected = {"integer": "number", "number": "number"}.get(kind or "", kind)
    if expected and json_type(value) != expected:
        return [f"{where}: {json_type(value)} instead of {kind}"]
    if kind == "integer" and not isinstance(value, int):
        return [f"{where}: not an integer"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} not one of {schema['enum']}"]
    problems: list[str] = []
    if kind == "object":
        properties = schema.get("properties", {})
        for key, item in value.items():
            if key in properties:
                problems += schema_violations(properties[key], item, f"{where}.{key}")
            elif "additionalProperties" in schema:
                problems += schema_violations(schema["additionalProperties"], item, f"{where}.{key}")
            else:
                problems.append(f"{where}: key {key!r} is not defined")
    if kind == "array":
        for item in value:
            problems += schema_violations(schema["items"], item, f"{where}[]")
    return problems


def response_schema(operation_id: str) -> dict[str, Any] | None:
    return OPERATIONS[operation_id][2]["responses"].get("200", {}).get("schema")


def error_violations(response: requests.Response) -> list[str]:
    body = response.json()
    problems = schema_violations({"$ref": "#/definitions/KeyVaultError"}, body)
    error = body.get("error") or {}
    if not isinstance(error.get("code"), str) or not isinstance(error.get("message"), str):
        problems.append(f"error.code and error.message must be strings: {body}")
    return problems


class Vault:
    """The sandbox vault with a bearer token of the MSP's managed identity."""

    def __init__(self, sb: Any) -> None:
        self.base = sb.endpoints["keyvault"]
        self.session = requests.Session()
        # REQUESTS_CA_BUNDLE in the environment would override Session.verify, so verify goes on every call.
        self.ca_file = sb.ca_file
        token = requests.get(
            sb.settings["IDENTITY_ENDPOINT"],
            params={"resource": "https://vault.azure.net", "api-version": "2019-08-01"},
            headers={"X-IDENTITY-HEADER": sb.settings["IDENTITY_HEADER"]},
            timeout=10,
        ).json()["access_token"]
        self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, verb: str, path: str, api_version: str = "2025-07-01", **kwargs: Any) -> requests.Response:
        params = kwargs.pop("params", {})
        return self.session.request(
            verb, self.base + path, params={"api-version": api_version, **params}, verify=self.ca_file, timeout=10,
            **kwargs,
        )

    def get(self, url: str) -> requests.Response:
        return self.session.get(url, verify=self.ca_file, timeout=10)


@pytest.fixture
def vault(sb: Any) -> Vault:
    return Vault(sb)


def prepare(sb: Any, vault: Vault, operation_id: str, params: dict[str, Any]) -> None:
    """Seed what the example presupposes (the secret, its versions, its deletion)."""
    name = params.get("secret-name")
    version = params.get("secret-version")
    secrets: list[dict[str, Any]] = []
    if operation_id == "GetSecrets":
        # The example's item has a contentType and no tags; it sorts first.
        secrets = [
            {"name": "listsecrettest0", "value": "v0", "contentType": "plainText"},
            {"name": "listsecrettest1", "value": "v1", "contentType": "plainText"},
        ]
    elif operation_id == "GetSecretVersions":
        secrets = [{"name": name, "value": "v1"}, {"name": name, "value": "v2"}]
    elif operation_id != "SetSecret":
        secrets = [{"name": name, "value": "mysecretvalue", **({"version": version} if version else {})}]
    sb.control.seed({"keyvault": {"secrets": secrets}})
    if operation_id in ("GetDeletedSecret", "PurgeDeletedSecret", "RecoverDeletedSecret"):
        assert vault.call("DELETE", f"/secrets/{name}").status_code == 200


@pytest.mark.parametrize("example_file", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_replays(sb: Any, vault: Vault, example_file: Path) -> None:
    example = json.loads(example_file.read_text())
    verb, template, _ = OPERATIONS[example["operationId"]]
    params = example["parameters"]
    prepare(sb, vault, example["operationId"], params)
    path = template.replace("{secret-name}", params.get("secret-name", "")).replace(
        "{secret-version}", params.get("secret-version", "")
    )
    query = {"maxresults": params["maxresults"]} if "maxresults" in params else {}
    response = vault.call(verb, path, params["api-version"], params=query, json=params.get("parameters"))

    [(status, expected)] = example["responses"].items()
    assert response.status_code == int(status), response.text
    if "body" not in expected:
        assert response.content == b""
        return
    body = response.json()
    assert shape_differences(expected["body"], body) == []
    schema = response_schema(example["operationId"])
    assert schema is not None
    assert schema_violations(schema, body) == []
    if "nextLink" in expected["body"]:
        assert_pages(vault, body, params["maxresults"], schema)


def assert_pages(vault: Vault, first: dict[str, Any], maxresults: int, schema: dict[str, Any]) -> None:
    """Follow nextLink to the end: absolute links with $skiptoken, api-version, maxresults; no item twice."""
    seen = [item["id"] for item in first["value"]]
    assert len(first["value"]) == maxresults
    page = first
    while page.get("nextLink"):
        link = urlsplit(page["nextLink"])
        assert f"{link.scheme}://{link.netloc}" == vault.base
        query = parse_qs(link.query)
        assert {"$skiptoken", "api-version", "maxresults"} <= set(query)
        response = vault.get(page["nextLink"])
        assert response.status_code == 200, response.text
        page = response.json()
        assert schema_violations(schema, page) == []
        assert 1 <= len(page["value"]) <= maxresults
        seen += [item["id"] for item in page["value"]]
    assert len(seen) == len(set(seen)) == 2


def test_every_example_has_an_operation() -> None:
    assert len(EXAMPLES) == 9
    assert {json.loads(p.read_text())["operationId"] for p in EXAMPLES} <= set(OPERATIONS)


def test_delete_secret_matches_deleted_secret_bundle(sb: Any, vault: Vault) -> None:
    sb.control.seed({"keyvault": {"secrets": [{"name": "gone", "value": "x", "tags": {"a": "b"}}]}})
    verb, template, _ = OPERATIONS["DeleteSecret"]
    response = vault.call(verb, template.replace("{secret-name}", "gone"))
    assert response.status_code == 200
    body = response.json()
    assert schema_violations({"$ref": "#/definitions/DeletedSecretBundle"}, body) == []
    assert {"recoveryId", "deletedDate", "scheduledPurgeDate", "id", "attributes", "tags"} <= set(body)
    assert body["recoveryId"] == f"{vault.base}/deletedsecrets/gone"
    assert body["scheduledPurgeDate"] - body["deletedDate"] == 90 * 86400


def test_other_operations_match_their_definitions(sb: Any, vault: Vault) -> None:
    """Operations with no example: list deleted secrets, restore, get latest with the SDK's trailing slash."""
    sb.control.seed({"keyvault": {"secrets": [{"name": "a", "value": "1", "tags": {"k": "v"}, "contentType": "t"}]}})
    latest = vault.call("GET", "/secrets/a/")
    assert latest.status_code == 200
    assert schema_violations(response_schema("GetSecret") or {}, latest.json()) == []
    blob = vault.call("POST", "/secrets/a/backup").json()["value"]
    assert vault.call("DELETE", "/secrets/a").status_code == 200
    deleted = vault.call("GET", "/deletedsecrets", params={"maxresults": 25})
    assert deleted.status_code == 200
    assert schema_violations(response_schema("GetDeletedSecrets") or {}, deleted.json()) == []
    assert [item["id"] for item in deleted.json()["value"]] == [f"{vault.base}/secrets/a"]
    assert vault.call("DELETE", "/deletedsecrets/a").status_code == 204
    restored = vault.call("POST", "/secrets/restore", json={"value": blob})
    assert restored.status_code == 200
    assert schema_violations(response_schema("RestoreSecret") or {}, restored.json()) == []
    assert vault.call("GET", "/secrets/a").json()["value"] == "1"


def test_not_found_is_a_keyvault_error(vault: Vault) -> None:
    response = vault.call("GET", "/secrets/nosuch/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "SecretNotFound"
    assert error_violations(response) == []


def test_missing_api_version_is_400(vault: Vault) -> None:
    response = vault.get(f"{vault.base}/secrets")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadParameter"
    assert error_violations(response) == []


def test_unauthenticated_request_gets_the_challenge(sb: Any, vault: Vault) -> None:
    response = requests.get(f"{vault.base}/secrets/x/", params={"api-version": "7.6"}, verify=sb.ca_file, timeout=10)
    assert response.status_code == 401
    assert error_violations(response) == []
    tenant = sb.control.msp()["tenantId"]
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer authorization="{sb.endpoints["entra"]}/{tenant}", resource="https://vault.azure.net"'
    )


def test_throttling_fault_is_429_with_retry_after(sb: Any, vault: Vault) -> None:
    sb.control.add_fault("keyvault", method="GET", path="^/secrets", status=429, retry_after=3)
    response = vault.call("GET", "/secrets")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"
    assert response.json()["error"]["code"] == "Throttled"
    assert error_violations(response) == []
    assert vault.call("GET", "/secrets").status_code == 200
