"""The OpenAPI document matches what the app registers, route by route and method by method, and is well-formed."""

from __future__ import annotations

import re
from typing import Any

from shared.entrypoints.api import openapi_document
from tests.api.conftest import Api, app_functions

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
    for path, item in doc["paths"].items():
        path_params = {p["name"] for p in item.get("parameters", []) if p["in"] == "path"}
        for method, operation in ((m, o) for m, o in item.items() if m in HTTP_METHODS):
            operation_ids.append(operation["operationId"])
            params = path_params | {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert params == set(re.findall(r"{(\w+)}", path)), (path, method)
            assert operation["responses"], (path, method)
            for status, response in operation["responses"].items():
                assert re.fullmatch(r"[1-5]\d\d", status), (path, method, status)
                response = resolve(doc, response["$ref"]) if "$ref" in response else response
                assert response["description"], (path, method, status)
            if method in ("put", "post"):
                assert "requestBody" in operation, (path, method)
    assert len(operation_ids) == len(set(operation_ids))


def test_every_error_status_the_api_answers_is_described() -> None:
    doc = openapi_document()
    for name in ("BadRequest", "Unauthenticated", "Forbidden", "NotFound", "MethodNotAllowed", "Conflict",
                 "PayloadTooLarge", "UnsupportedMediaType", "Unprocessable"):
        schema = doc["components"]["responses"][name]["content"]["application/json"]["schema"]
        assert resolve(doc, schema["$ref"])["required"] == ["error"]
