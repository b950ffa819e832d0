"""The OpenAPI document matches what the app registers, route by route and method by method, and is well-formed."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import jsonschema_rs
import pytest
import schemathesis

from shared import service
from shared.destinations import KINDS
from shared.domain import AssessmentStatus, Stage, SyncVerdict
from shared.entrypoints.access import Role
from shared.entrypoints.api import openapi_document
from shared.entrypoints.dashboard import CONTENT_TYPES
from tests.api.conftest import ROUTES, Api, app_functions
from tests.openapi_check import UndocumentedResponse, check_response

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# A route registered without methods gets every method from the host, TRACE and CONNECT included.
EVERY_METHOD = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT"]


def http_functions() -> dict[str, tuple[str, list[str]]]:
    """Function name -> (route, registered methods) for every HTTP trigger of the app."""
    found = {}
    for f in app_functions():
        for binding in f.get_bindings():
            if binding.type == "httpTrigger":
                methods = binding.methods
                found[f.get_function_name()] = (
                    binding.route, EVERY_METHOD if methods is None else [str(getattr(m, "value", m)) for m in methods]
                )
    return found


async def served_methods(api: Api, name: str, route: str, registered: list[str]) -> set[str]:
    """The methods a function answers with anything but 405 (path values invalid, so nothing is changed)."""
    params = {p: "not-a-guid" for p in re.findall(r"{(\w+)}", route)}
    served = set()
    for method in registered:
        reply = await api.call(name, method, params, raw=b"{}")
        if reply.status != 405:
            served.add(method.lower())
        else:
            assert reply.headers.get("Allow"), name
    return served


def test_every_http_route_takes_every_method_so_wrong_ones_get_our_405() -> None:
    assert {name: methods for name, (_, methods) in http_functions().items() if methods != EVERY_METHOD} == {}


async def test_every_registered_route_and_method_is_documented_and_nothing_else(api: Api) -> None:
    doc = openapi_document()
    functions = http_functions()
    assert {"openapi", "targets", "target", "status", "rotations", "acknowledgements", "discover", "push",
            "me"} <= set(functions)
    documented = {path: {m for m in item if m in HTTP_METHODS} for path, item in doc["paths"].items()}
    registered: dict[str, set[str]] = {}
    for name, (route, methods) in functions.items():
        if methods == EVERY_METHOD:
            methods_served = await served_methods(api, name, route, methods)
        else:
            # Registered for some methods only: the host itself refuses the others.
            methods_served = {m.lower() for m in methods}
        registered[f"/api/{route}"] = methods_served
    assert registered == documented


def resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [node["$ref"]] if "$ref" in node else [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_the_document_is_well_formed() -> None:
    doc = openapi_document()
    assert doc["openapi"].startswith("3.") and doc["info"]["title"] and doc["info"]["version"]
    for ref in refs(doc):
        assert ref.startswith("#/") and resolve(doc, ref) is not None, ref
    operation_ids = []

    def path_params(parameters: list[dict[str, Any]]) -> set[str]:
        found = (resolve(doc, p["$ref"]) if "$ref" in p else p for p in parameters)
        return {p["name"] for p in found if p["in"] == "path"}

    for path, item in doc["paths"].items():
        for method, operation in ((m, o) for m, o in item.items() if m in HTTP_METHODS):
            operation_ids.append(operation["operationId"])
            params = path_params(item.get("parameters", [])) | path_params(operation.get("parameters", []))
            assert params == set(re.findall(r"{(\w+)}", path)), (path, method)
            assert operation["responses"], (path, method)
            for status, response in operation["responses"].items():
                assert re.fullmatch(r"[1-5]\d\d", status), (path, method, status)
                response = resolve(doc, response["$ref"]) if "$ref" in response else response
                assert response["description"], (path, method, status)
            if method in ("put", "post"):
                assert "requestBody" in operation, (path, method)
    assert len(operation_ids) == len(set(operation_ids))


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = openapi_document()
    assert doc["openapi"].startswith("3.1.")
    schemathesis.openapi.from_dict(doc).validate()  # against the OpenAPI 3.1 meta-schema; raises when invalid
    # ...which does not look inside Schema Objects: each is checked against JSON Schema 2020-12's own meta-schema.
    for where, schema in schemas_in(doc):
        assert jsonschema_rs.meta.is_valid({"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}), where


def schemas_in(node: Any, where: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every Schema Object of the document: components' schemas and every `schema` of a parameter, header or body."""
    if isinstance(node, list):
        return [found for index, item in enumerate(node) for found in schemas_in(item, f"{where}/{index}")]
    if not isinstance(node, dict):
        return []
    found = []
    for key, value in node.items():
        if (key == "schema" or where == "/components/schemas") and isinstance(value, dict):
            found.append((f"{where}/{key}", value))
        elif where != "/components/schemas":
            found += schemas_in(value, f"{where}/{key}")
    return found


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, operation) for path, item in openapi_document()["paths"].items()
            for method, operation in item.items() if method in HTTP_METHODS]


def test_every_operation_documents_its_refusals_with_the_error_schema() -> None:
    doc = openapi_document()
    assert doc["components"]["responses"]["MethodNotAllowed"]["headers"]["Allow"]["required"] is True
    for path, method, operation in operations():
        responses = operation["responses"]
        assert {"405", "500"} <= set(responses), (path, method)
        if "requestBody" in operation:
            assert {"400", "413", "415", "422"} <= set(responses), (path, method)
        if re.search(r"{(tenantId|appId)}", path):
            assert "400" in responses, (path, method)
        for status, response in responses.items():
            response = resolve(doc, response["$ref"]) if "$ref" in response else response
            if status.startswith(("4", "5")):
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}, (
                    path, method, status)
    error = doc["components"]["schemas"]["Error"]
    assert error["required"] == ["error"] and error["additionalProperties"] is False
    assert error["properties"]["error"]["required"] == ["code", "message"]


async def test_401_and_403_are_documented_exactly_where_the_code_answers_them(api: Api) -> None:
    """Both ways: an operation documents 401 if and only if it refuses a request without a principal, and 403 if
    and only if it refuses a signed-in caller without roles."""
    functions = {f"/api/{route}": name for name, route in ROUTES.items()}
    for path, method, operation in operations():
        params = {p: str(uuid.uuid4()) for p in re.findall(r"{(\w+)}", path)}
        if "asset" in params:
            params["asset"] = "app.js"
        anonymous = await api.call(functions[path], method.upper(), params, {}, caller=None)
        no_role = await api.call(functions[path], method.upper(), params, {}, caller=("nobody@msp.example", ()))
        assert ("401" in operation["responses"]) == (anonymous.status == 401), (path, method, anonymous.status)
        assert ("403" in operation["responses"]) == (no_role.status == 403), (path, method, no_role.status)


def test_closed_sets_are_enums_taken_from_the_code() -> None:
    schemas = openapi_document()["components"]["schemas"]
    statuses = [s.value for s in AssessmentStatus]
    assert schemas["AssessmentStatus"]["enum"] == statuses
    assert schemas["Status"]["properties"]["status"]["enum"] == list(service.STATUSES)
    status_query = next(p for p in openapi_document()["paths"]["/api/status"]["get"]["parameters"]
                        if p["name"] == "status")
    assert status_query["schema"]["items"]["enum"] == list(service.STATUSES)
    assert status_query["schema"]["minItems"] == 1
    assert schemas["Stage"]["enum"] == [s.value for s in Stage]
    assert schemas["RotationProgress"]["properties"]["state"]["enum"] == list(service.ROTATION_STATES)
    assert schemas["Outcome"]["properties"]["status"]["enum"] == [*statuses, ""]
    assert schemas["Outcome"]["properties"]["stage"]["enum"] == [*(s.value for s in Stage), ""]
    assert schemas["DestinationKind"]["enum"] == list(KINDS)
    sync = schemas["DestinationStatus"]["properties"]["sync"]["enum"]
    assert None in sync and set(sync) - {None} <= {v.value for v in SyncVerdict}
    alerts = set(schemas["Status"]["properties"]["alerts"]["items"]["enum"])
    assert service.ALERTING_STATUSES <= alerts
    me = schemas["Me"]["properties"]
    assert set(me["roles"]["items"]["enum"]) == {r.value for r in Role}
    assert set(me["kind"]["enum"]) == {"user", "app"}
    asset = openapi_document()["paths"]["/api/dashboard/{asset}"]
    assert asset["parameters"][0]["schema"]["enum"] == list(CONTENT_TYPES)
    media = set(asset["get"]["responses"]["200"]["content"])
    assert media == {t.split(";")[0] for t in CONTENT_TYPES.values()}


GUID_A, GUID_B = "11111111-2222-4333-8444-555555555555", "66666666-7777-4888-8999-aaaaaaaaaaaa"
TARGET = {"tenantId": GUID_A, "appId": GUID_B, "customer": "C", "enabled": True, "policy": {}, "destinations": []}
ERROR = b'{"error": {"code": "MethodNotAllowed", "message": "use GET"}}'
AS_JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(("path", "method", "status", "headers", "body", "complaint"), [
    ("/api/targets", "GET", 418, AS_JSON, b"{}", "not among the documented"),
    ("/api/targets", "GET", 200, AS_JSON, b'{"targets": [], "more": 1}', "breaks the documented schema"),
    ("/api/me", "GET", 200, AS_JSON, b'{"name": "a", "roles": ["Rotator.Admin"], "kind": "user"}', "breaks"),
    ("/api/targets/{tenantId}/{appId}", "GET", 200, AS_JSON,
     json.dumps({**TARGET, "tenantId": GUID_B}).encode(), "not the path's"),
    ("/api/targets/{tenantId}/{appId}", "DELETE", 204, {"Content-Type": "text/plain"}, b"x", "a body where"),
    ("/api/status", "GET", 200, {"Content-Type": "text/html"}, b"<p>", "as 'text/html'"),
    ("/api/targets", "TRACE", 200, AS_JSON, b"{}", "must get 405"),
    ("/api/targets", "TRACE", 405, {**AS_JSON, "Allow": "GET, POST"}, ERROR, "the document lists"),
    ("/api/targets/{tenantId}/{appId}", "PATCH", 405, AS_JSON, ERROR, "Allow"),
])
def test_the_answer_check_refuses_what_the_document_does_not_say(
    path: str, method: str, status: int, headers: dict[str, str], body: bytes, complaint: str
) -> None:
    route = {"tenantId": GUID_A, "appId": GUID_B} if "{" in path else {}
    with pytest.raises(UndocumentedResponse, match=re.escape(complaint)):
        check_response(path, method, status, headers, body, route)


def test_the_answer_check_accepts_what_the_document_says() -> None:
    route = {"tenantId": GUID_A.upper(), "appId": GUID_B}
    check_response("/api/targets/{tenantId}/{appId}", "GET", 200, AS_JSON, json.dumps(TARGET).encode(), route)
    check_response("/api/targets/{tenantId}/{appId}", "PATCH", 405, {**AS_JSON, "Allow": "GET, PUT, DELETE"}, ERROR,
                   route)
    check_response("/api/targets/{tenantId}/{appId}", "DELETE", 204, {"Content-Type": "text/plain"}, b"", route)
