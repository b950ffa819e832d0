"""The templates are free of the compile errors we can find without the Bicep CLI (tests/infra/bicep_compile.py),
and the check refuses each class it claims: the copy of the function-app template that would have stopped
the deployment at compile (BCP178) and one small template per rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.infra.bicep_compile import Problem, check
from tests.infra.bicep_model import INFRA, bicep_files

FIXTURES = Path(__file__).parent / "fixtures"
BICEP_FILES = bicep_files()


@pytest.mark.parametrize("path", BICEP_FILES, ids=[str(p.relative_to(INFRA)) for p in BICEP_FILES])
def test_every_template_compiles_as_far_as_we_can_tell(path: Path) -> None:
    problems = check(path)
    assert not problems, "\n".join(map(str, problems))


def test_the_old_function_app_template_is_refused_for_its_settings_loop() -> None:
    problems = check(FIXTURES / "function-app-bcp178.bicep")
    assert problems, "the template that failed to compile (BCP178) passed the check"
    assert {p.code for p in problems} == {"BCP178"}
    for endpoint in ("blob", "queue", "table"):
        assert any(
            f"variable runtimeSettings -> reads storage.properties.primaryEndpoints.{endpoint}" in p.message
            for p in problems
        ), [str(p) for p in problems]


_HEADER = """
param prefix string
param items array = []
resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: prefix
}
resource topic 'Microsoft.EventGrid/systemTopics@2025-02-15' = {
  name: '${prefix}-topic'
  location: 'westeurope'
  properties: {
    source: storage.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}
module child './child.bicep' = {
  name: 'child'
  params: {
    required: prefix
  }
}
"""

_CHILD = """
param required string
param optional string = ''
param nullable string?
output endpoint string = required
"""

# (name, body appended to the header, expected code or None for "compiles", text the message must contain)
_CASES: list[tuple[str, str, str | None, str]] = [
    ("for over params", "var a = [for i in items: { name: i }]", None, ""),
    ("for over a resource's id", "var a = [for i in [storage.id, topic.name]: i]", None, ""),
    (
        "for over runtime properties",
        "var a = [for i in items(storage.properties.primaryEndpoints): i.value]",
        "BCP178",
        "storage.properties.primaryEndpoints",
    ),
    (
        "for through two variables",
        "var e = storage.properties\nvar o = { blob: e.primaryEndpoints.blob }\nvar a = [for s in items(o): s.key]",
        "BCP178",
        "variable o -> variable e -> reads storage.properties",
    ),
    ("for over listKeys()", "var a = [for k in storage.listKeys().keys: k.value]", "BCP178", "listKeys()"),
    ("for over reference()", "var a = [for k in items(reference(storage.id)): k.key]", "BCP178", "reference()"),
    (
        "for over a module output",
        "var a = [for c in split(child.outputs.endpoint, ','): c]",
        "BCP178",
        "child.outputs.endpoint",
    ),
    ("for over the whole resource", "var a = [for c in items(topic): c.key]", "BCP178", "whole of topic"),
    (
        "for in a resource loop",
        "resource r 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = "
        "[for c in storage.properties.containers: { name: c }]",
        "BCP178",
        "storage.properties.containers",
    ),
    ("for in an output", "output o array = [for c in items(topic.properties): c.key]", "BCP178", "topic.properties"),
    (
        "variable for-body reading runtime",
        "var a = [for i in items: storage.properties.primaryEndpoints.blob]",
        "BCP182",
        "variable a",
    ),
    (
        "resource name from runtime",
        "resource r 'Microsoft.Storage/storageAccounts@2023-05-01' = {\n"
        "  name: child.outputs.endpoint\n  location: 'westeurope'\n}",
        "BCP120",
        "name of resource r",
    ),
    (
        "resource location from runtime",
        "resource r 'Microsoft.Storage/storageAccounts@2023-05-01' = {\n  name: 'x'\n  location: storage.location\n}",
        "BCP120",
        "location of resource r",
    ),
    (
        "existing scope from runtime",
        "resource r 'Microsoft.KeyVault/vaults@2023-07-01' existing = {\n"
        "  name: 'kv'\n  scope: resourceGroup(topic.properties.metricResourceId)\n}",
        "BCP120",
        "scope of existing resource r",
    ),
    (
        "existing name from runtime",
        "resource r 'Microsoft.KeyVault/vaults@2023-07-01' existing = {\n"
        "  name: storage.properties.primaryEndpoints.blob\n}",
        "BCP120",
        "name of existing resource r",
    ),
    (
        "parent as a whole resource",
        "resource c 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {\n"
        "  parent: topic\n  name: 'sub'\n}",
        None,
        "",
    ),
    (
        "module name from runtime",
        "module m './child.bicep' = {\n  name: topic.properties.metricResourceId\n  params: { required: 'x' }\n}",
        "BCP120",
        "name of module m",
    ),
    (
        "condition from runtime",
        "resource r 'Microsoft.Storage/storageAccounts@2023-05-01' = "
        "if (!empty(storage.properties.primaryEndpoints.blob)) {\n  name: 'x'\n  location: 'westeurope'\n}",
        "BCP177",
        "if-condition of resource r",
    ),
    (
        "module param not declared",
        "module m './child.bicep' = {\n  name: 'm'\n  params: { required: 'x', unknown: 'y' }\n}",
        "BCP037",
        "declares no parameter unknown",
    ),
    (
        "module param missing",
        "module m './child.bicep' = {\n  name: 'm'\n  params: { optional: 'x' }\n}",
        "BCP035",
        "required parameter required",
    ),
    (
        "module path missing",
        "module m './nowhere.bicep' = {\n  name: 'm'\n  params: {}\n}",
        "BCP091",
        "./nowhere.bicep does not exist",
    ),
    ("module output missing", "output o string = child.outputs.nothing", "BCP053", "has no output nothing"),
    ("undeclared name", "output o string = prefixx", "BCP057", "prefixx"),
    ("runtime value outside a constant place", "output o string = storage.properties.primaryEndpoints.blob", None, ""),
]


@pytest.mark.parametrize(("body", "code", "text"), [c[1:] for c in _CASES], ids=[c[0] for c in _CASES])
def test_each_compile_time_class_is_refused(tmp_path: Path, body: str, code: str | None, text: str) -> None:
    (tmp_path / "child.bicep").write_text(_CHILD)
    template = tmp_path / "main.bicep"
    template.write_text(_HEADER + body + "\n")
    problems: list[Problem] = check(template)
    if code is None:
        assert not problems, "\n".join(map(str, problems))
    else:
        assert problems, f"{code} not found"
        assert {p.code for p in problems} == {code}, "\n".join(map(str, problems))
        assert any(text in p.message for p in problems), "\n".join(map(str, problems))
