"""The e-mail rules and staged warnings: a warning is told once and never logged again while it holds, so it must
not sit in the stateful rule (its record would age out of the two-day look-back and send a false "Resolved" e-mail);
a stateless rule e-mails each warning record and each resolution once."""

from __future__ import annotations

from shared.conditions import STAGE_PREFIX
from shared.expiry_warnings import condition_name
from tests.infra.bicep_model import INFRA, parse, resources
from tests.infra.test_bicep_templates import _format_query

PATH = INFRA / "app/alerts.bicep"


def test_staged_warnings_are_left_out_of_the_stateful_rule_and_e_mailed_by_their_own_stateless_rule() -> None:
    variables = parse(PATH)["variables"]
    stateful, _ = _format_query(variables["alertEventsQuery"]["value"])
    assert f'Condition !startswith "{STAGE_PREFIX}"' in stateful
    warnings = variables["warningEventsQuery"]["value"]
    assert isinstance(warnings, str) and condition_name(30).startswith(STAGE_PREFIX)
    assert f'| where Condition startswith "{STAGE_PREFIX}"' in warnings
    assert 'Event in ("alert", "alert-resolved")' in warnings and "ago(" not in warnings
    assert "TimeGenerated" not in warnings.split("| project")[-1] and "Event," in warnings.split("| project")[-1]
    rule = resources(PATH, "Microsoft.Insights/scheduledQueryRules")["warningEvents"]["config"]["properties"]
    assert rule["criteria"]["allOf"][0]["query"] == "warningEventsQuery"
    assert rule["autoMitigate"] is False and "overrideQueryTimeRange" not in rule
    assert rule["evaluationFrequency"] == rule["windowSize"] == "PT15M"
    assert {d["name"] for d in rule["criteria"]["allOf"][0]["dimensions"]} == {
        "Event", "Condition", "TenantId", "AppId", "Destination"}
    assert rule["actions"]["actionGroups"] == ["actionGroup.id"]
