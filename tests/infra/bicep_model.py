"""Reads the Bicep templates (with pycep-parser, as no Bicep CLI exists here) into plain data for the infra tests."""

from __future__ import annotations

import json
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
