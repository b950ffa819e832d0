"""`python -m shared serve` serves the real function app: its functions, its document, its tables, its settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import requests

from shared.cli import EXIT_FAILED
from shared.entrypoints.api import openapi_document
from tests.conftest import ROOT
from tests.openapi_check import check_response
from tests.rotation.conftest import World
from tests.serve.conftest import bearer, serving


def test_the_real_functions_answer_as_documented(world: World) -> None:
    operator = bearer(world.sb, "Rotator.Operate")
    with serving(world) as served:
        document = requests.get(f"{served.url}/api/openapi.json", headers=operator, timeout=60)
        anonymous = requests.get(f"{served.url}/api/targets", timeout=60)
        wrong_method = requests.request("TRACE", f"{served.url}/api/targets", headers=operator, timeout=60)
        no_route = requests.get(f"{served.url}/api/no-such-route", headers=operator, timeout=60)
    assert document.status_code == 200 and document.json() == openapi_document()
    for path, method, reply in (("/api/openapi.json", "GET", document), ("/api/targets", "GET", anonymous),
                                ("/api/targets", "TRACE", wrong_method)):
        check_response(path, method, reply.status_code, dict(reply.headers), reply.content)
    assert anonymous.status_code == 401 and wrong_method.status_code == 405
    assert (no_route.status_code, no_route.content) == (404, b"")  # the host's bare 404: no function matched


def test_writes_through_the_server_land_in_the_tables_it_was_given(world: World) -> None:
    tenant, app = str(uuid.uuid4()), str(uuid.uuid4())
    operator = bearer(world.sb, "Rotator.Operate")
    with serving(world) as served:
        reply = requests.put(f"{served.url}/api/targets/{tenant}/{app}", json={"customer": "Served Ltd"},
                             headers=operator, timeout=60)
    assert reply.status_code == 201, reply.text
    listed = subprocess.run(
        [sys.executable, "-m", "shared", "--table-prefix", world.prefix, "targets", "list"],
        cwd=ROOT, env={**os.environ, **world.env}, capture_output=True, text=True, timeout=120, check=True,
    )
    assert [(t["tenantId"], t["customer"]) for t in json.loads(listed.stdout)] == [(tenant, "Served Ltd")]


def test_a_missing_setting_stops_the_server_at_start(world: World) -> None:
    env = {k: v for k, v in {**os.environ, **world.env}.items() if k != "KEY_VAULT_URL"}
    result = subprocess.run([sys.executable, "-m", "shared", "serve", "--port", "0"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == EXIT_FAILED and "KEY_VAULT_URL" in result.stderr
