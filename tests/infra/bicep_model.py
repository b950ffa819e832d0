"""Reads the Bicep templates (with pycep-parser, as no Bicep CLI exists here) into plain data for the infra tests."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
FUNCTION_APP = INFRA / "app" / "function-app.bicep"
LOCAL_EXAMPLE = ROOT / "local.settings.example.json"


def bicep_files() -> list[Path]:
    """Every Bicep file under infra/, sorted."""
    return sorted(INFRA.rglob("*.bicep"))


@cache
def parse(path: Path) -> dict[str, Any]:
    """The pycep JSON of one file (raises on a syntax error)."""
    return BicepParser().parse(file_path=path)  # type: ignore[return-value]


def decorator(element: dict[str, Any], kind: str) -> Any:
    """The argument of one decorator (description, secure, allowed, ...) of a param/output, or None."""
    for dec in element.get("decorators") or []:
        if dec.get("type") == kind:
            return dec.get("argument", True)
    return None


def resources(path: Path, type_: str) -> dict[str, dict[str, Any]]:
    """Resources of one type in a file, by symbolic name."""
    return {name: res for name, res in parse(path).get("resources", {}).items() if res["type"] == type_}


def body(element: dict[str, Any]) -> dict[str, Any]:
    """The config of a resource or module, unwrapped from `if (...)` or a loop."""
    config: dict[str, Any] = element["config"]
    inner = config.get("config")
    return inner if isinstance(inner, dict) and ("condition" in config or "loop_type" in config) else config


def function_app_module() -> dict[str, Any]:
    """The module call in main.bicep that deploys app/function-app.bicep."""
    calls: list[dict[str, Any]] = [
        m for m in parse(MAIN)["modules"].values() if m["detail"]["path"] == "./app/function-app.bicep"
    ]
    assert len(calls) == 1, "main.bicep must deploy app/function-app.bicep exactly once"
    return calls[0]


def product_settings() -> dict[str, Any]:
    """The product's settings main.bicep passes to the function app (the appSettings object)."""
    settings = body(function_app_module())["params"]["appSettings"]
    assert isinstance(settings, dict), "appSettings must be an object literal in main.bicep"
    return settings


def runtime_settings() -> dict[str, Any]:
    """The host/platform settings app/function-app.bicep adds (var runtimeSettings)."""
    value = parse(FUNCTION_APP)["variables"]["runtimeSettings"]["value"]
    assert isinstance(value, dict)
    return value


def app_settings() -> dict[str, Any]:
    """Every app setting the deployed function app gets: runtime settings plus the product's."""
    return {**runtime_settings(), **product_settings()}


def local_example_values() -> dict[str, str]:
    """The Values of local.settings.example.json."""
    values = json.loads(LOCAL_EXAMPLE.read_text())["Values"]
    assert isinstance(values, dict)
    return values


# Bicep's integer arithmetic: `/` truncates toward zero (the operands here are never negative).
_ARITHMETIC: dict[str, Callable[[int, int], int]] = {
    "divide": lambda a, b: a // b,
    "multiply": lambda a, b: a * b,
}

# What module outputs and deployment functions stand for when the Bicep is "evaluated" here.
_PLACEHOLDERS = {
    "identity.outputs.clientId": "00000000-0000-4000-8000-00000000000c",
    "keyVault.outputs.uri": "https://kv-abc.vault.azure.net/",
    "storage.outputs.tableEndpoint": "https://stabc.table.core.windows.net/",
    "tenant.tenantId": "00000000-0000-4000-8000-00000000000d",
    "environment.authentication.loginEndpoint": "https://login.microsoftonline.com/",
}


def evaluate(value: Any, path: Path, overrides: dict[str, int | str | bool] | None = None) -> tuple[str, bool]:
    """A Bicep expression of one file as deployed with its default parameters (or `overrides`): (value, whether it
    comes from literals and parameter defaults alone, not from module outputs or deployment functions)."""
    parsed = parse(path)
    params = {name: dict(p) for name, p in parsed["parameters"].items()}
    for name, given in (overrides or {}).items():
        params[name]["default"] = given
    return _resolve(value, params, parsed.get("variables") or {})


def _resolve(value: Any, params: dict[str, Any], variables: dict[str, Any]) -> tuple[str, bool]:
    if isinstance(value, bool):
        return ("true" if value else "false"), True
    if isinstance(value, int):
        return str(value), True
    if isinstance(value, str):
        if value in _PLACEHOLDERS:
            return _PLACEHOLDERS[value], False
        if value in params:
            return _resolve(params[value]["default"], params, variables)
        if value in variables:
            return _resolve(variables[value]["value"], params, variables)
        return value, True  # pycep gives string literals and identifiers alike; unknown names fail below
    if "function" in value:
        fn = value["function"]
        if fn["type"] == "string":
            return _resolve(fn["parameters"]["value_to_convert"], params, variables)
        if fn["type"] == "max":
            resolved = [_resolve(v, params, variables) for v in fn["parameters"].values()]
            return str(max(int(v) for v, _ in resolved)), all(d for _, d in resolved)
        key = f"{fn['type']}.{str(fn.get('property_name', '')).replace(chr(39), '')}"
        key = re.sub(r"\[Token\(STRING, (\w+)\)\]", r"\1", key)
        return _PLACEHOLDERS[key], False
    if "operator" in value and value["operator"]["type"] in _ARITHMETIC:
        operands = value["operator"]["operands"]
        (left, a) = _resolve(operands["operand_1"], params, variables)
        (right, b) = _resolve(operands["operand_2"], params, variables)
        return str(_ARITHMETIC[value["operator"]["type"]](int(left), int(right))), a and b
    if "operator" in value and value["operator"]["type"] == "conditional":
        operands = value["operator"]["operands"]
        condition, _ = _resolve(operands["condition"], params, variables)
        branch = operands["true_value"] if condition == "true" else operands["false_value"]
        return _resolve(branch, params, variables)
    raise AssertionError(f"cannot evaluate {value!r}")
