"""The published Adaptive Card schema (version 1.5), to validate what the Teams channel sends.

adaptive-card-1.5.schema.json is microsoft/AdaptiveCards `schemas/1.5.0/adaptive-card.json` (the schema
http://adaptivecards.io/schemas/adaptive-card.json publishes for 1.5), copied unchanged at commit
644d933e185a8482c4dcf4c375d177aac37fd095; MIT License, Copyright (c) 2017 Microsoft. No registry package ships it as
a JSON file (the npm package adaptivecards-designer embeds an older, permissive 1.0 schema in TypeScript), so it is
vendored here.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema_rs

SCHEMA = Path(__file__).with_name("adaptive-card-1.5.schema.json")
ADAPTIVE = "application/vnd.microsoft.card.adaptive"


@functools.cache
def validator() -> Any:
    return jsonschema_rs.Draft6Validator(json.loads(SCHEMA.read_text()))


def card_errors(card: Any) -> list[str]:
    """Every way the card breaks the schema."""
    return [str(e) for e in validator().iter_errors(card)]


def assert_adaptive_card(message: dict[str, Any]) -> None:
    """A Teams Workflows message: `type: message` and one Adaptive Card attachment that the 1.5 schema accepts."""
    assert message["type"] == "message"
    [attachment] = message["attachments"]
    assert attachment["contentType"] == ADAPTIVE and attachment["contentUrl"] is None
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.5"
    assert card_errors(card) == [], card_errors(card)
