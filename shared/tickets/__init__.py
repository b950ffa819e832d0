"""Tickets: the alert book's conditions as PSA tickets with a lifecycle (docs/tickets.md).

Each desk kind is a module of this package named after its TICKET_SYSTEM value, exposing `KIND` (that name) and
`build(config, *, ca_bundle) -> TicketDesk`: `config` is the JSON object held in the Key Vault secret
TICKET_SECRET_NAME (each module documents its fields). No `if kind == ...` anywhere else: `desk()` looks the module
up by name.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from shared.tickets.port import TICKET_ERRORS, TicketDesk, TicketDraft, TicketError, TicketRef, TicketRoute

__all__ = ["KINDS", "TICKET_ERRORS", "TicketDesk", "TicketDraft", "TicketError", "TicketRef", "TicketRoute", "desk"]

# Every desk kind by its TICKET_SYSTEM name (settings.py validates the name against these).
KINDS = ("connectwise", "autotask", "halopsa", "webhook")


def desk(kind: str, config: Mapping[str, str], *, ca_bundle: str = "") -> TicketDesk:
    """The desk of this kind, configured; TicketError(TicketConfigInvalid) for an unknown kind or a bad config."""
    if kind not in KINDS:
        raise TicketError(f"unknown ticket system {kind!r}: one of {', '.join(KINDS)}", code="TicketConfigInvalid")
    module = importlib.import_module(f"shared.tickets.{kind}")
    built: TicketDesk = module.build(config, ca_bundle=ca_bundle)
    return built
