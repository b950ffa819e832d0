"""Checks an HTTP answer against shared/openapi.json: the method and status are documented for the path, the
documented headers are there, and the body is the documented media type and validates against its schema (JSON
Schema 2020-12, as OpenAPI 3.1 uses, formats included). A method the path does not document must be refused with
the document's 405, whose `Allow` names exactly the documented methods."""

from __future__ import annotations

import functools
import json
from typing import Any

import jsonschema_rs

from shared.entrypoints.api import openapi_document

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


class UndocumentedResponse(AssertionError):
    """An answer the OpenAPI document does not describe."""


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """A response or header object with its `$ref` (within the document) followed."""
    doc = openapi_document()
    while "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


@functools.cache
def _validator(schema_json: str) -> Any:
    """A validator for one schema of the document; its `$ref`s resolve within the document's components."""
    schema = {"components": openapi_document()["components"], **json.loads(schema_json)}
    return jsonschema_rs.validator_for(schema, validate_formats=True)


def schema_errors(schema: dict[str, Any], instance: Any) -> list[str]:
    """Where and how `instance` breaks `schema` (empty when it validates)."""
    validator = _validator(json.dumps(schema, sort_keys=True))
    return [f"/{'/'.join(map(str, e.instance_path))}: {e.message}" for e in validator.iter_errors(instance)]


def documented_methods(path: str) -> list[str]:
    """The methods the document lists for a path template, upper case, in the document's order."""
    item = openapi_document()["paths"].get(path)
    if item is None:
        raise UndocumentedResponse(f"{path} is not in the OpenAPI document")
    return [m.upper() for m in item if m in HTTP_METHODS]


def check_response(
    path: str, method: str, status: int, headers: dict[str, str], body: bytes, route: dict[str, str] | None = None
) -> None:
    """Raise UndocumentedResponse unless the document describes this answer of `method path` (a path template
    such as /api/targets/{tenantId}/{appId}, its values in `route`): also, an answer's ids are the path's."""
    methods = documented_methods(path)
    lowered = {k.lower(): v for k, v in headers.items()}
    where = f"{method} {path} answered {status}"
    if method.upper() not in methods:
        if status != 405:
            raise UndocumentedResponse(f"{where}; a method the document does not list must get 405")
        allowed = [m.strip() for m in lowered.get("allow", "").split(",") if m.strip()]
        if sorted(allowed) != sorted(methods):
            raise UndocumentedResponse(f"{where} with Allow {allowed}; the document lists {methods}")
        response = resolve({"$ref": "#/components/responses/MethodNotAllowed"})
    else:
        responses = openapi_document()["paths"][path][method.lower()]["responses"]
        if str(status) not in responses:
            raise UndocumentedResponse(f"{where}: not among the documented {sorted(responses)}")
        response = resolve(responses[str(status)])
    for name, header in response.get("headers", {}).items():
        if resolve(header).get("required") and name.lower() not in lowered:
            raise UndocumentedResponse(f"{where} without the header {name}")
    content = response.get("content")
    if not content:
        if body:
            raise UndocumentedResponse(f"{where} with a body where the document says none")
        return
    media = (lowered.get("content-type") or "").split(";")[0].strip().lower()
    if media not in content:
        raise UndocumentedResponse(f"{where} as {media!r}; documented: {sorted(content)}")
    if method.upper() == "HEAD" or "schema" not in content[media]:
        return
    instance: Any = json.loads(body) if media == "application/json" else body.decode("utf-8")
    errors = schema_errors(content[media]["schema"], instance)
    if errors:
        raise UndocumentedResponse(f"{where}: the body breaks the documented schema: {errors[:5]}")
    if status < 300 and isinstance(instance, dict):
        for name, value in (route or {}).items():
            if name in instance and instance[name] != value.lower():
                raise UndocumentedResponse(f"{where} with {name} {instance[name]!r}, not the path's {value!r}")
