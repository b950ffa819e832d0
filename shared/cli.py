"""Command line: the same engine as the function app, outside Functions.

    python -m shared status [--json]
    python -m shared run
    python -m shared check                    (assess and record every status; rotate nothing)
    python -m shared rotate TENANT_ID APP_ID [--force] [--dry-run]
    python -m shared targets import FILE      (a JSON list of target documents)
    python -m shared targets list
    python -m shared serve [--port N] [--keys-file PATH] [--no-worker]
                                            (a checkout only: the HTTP functions on 127.0.0.1 as the Functions host
                                            serves them behind App Service Authentication, and a queue worker)
    python -m shared resume                   (take only the rotations in flight further)
    python -m shared consent-url TENANT_ID [--json]   (a signed admin-consent link for a customer tenant)
    python -m shared proofpoint-check TENANT_ID APP_ID [--json]
                                            (the Proofpoint org's sync settings and the PUT a push would send,
                                             secrets hidden; changes nothing)
    python -m shared alert-test [--as NAME]   (post a test alert to the alert channel; audited; exit 1 if refused)
    python -m shared tickets list | tickets test [--as NAME] [--condition C]   (PSA tickets, docs/tickets.md)
    python -m shared inventory scan           (the credential inventory pass now, as INVENTORY_SCHEDULE runs it;
                                             exit 1 if a tenant could not be read)
    python -m shared onboard list|run|status|runs|resume|forget
                                            (bulk onboarding through GDAP, device code sign-in: shared/onboard_cli.py)
    python -m shared offboard TENANT_ID APP_ID [--remove-owner] [--remove-app [--sign-in]] [--as NAME] [--json]
                                            (remove a customer; exit 2 when a step is left to a person)
    python -m shared retention-sweep          (delete offboarded customers' secrets whose retention has passed)
    python -m shared inventory export --format csv|json [--tenant T] [--customer NAME] [--days-left N]
                                      [--kind password|certificate] [--managed true|false] [--excluded true|false]
                                      [--state expired,due,...]
                                            (every credential of every customer, streamed to stdout)
    python -m shared exclusions list [--tenant T]
    python -m shared exclusions add TENANT_ID --scope credential|app|customer [--app-id ID] [--key-id ID]
                                   --why TEXT [--snooze --until DATE] [--until DATE] [--as NAME]
    python -m shared exclusions lift EXCLUSION_ID [--as NAME]
    python -m shared warnings thresholds TENANT_ID [DAYS ...] [--as NAME]   (show, or set, a customer's thresholds)
    python -m shared warnings run             (the staged expiry warnings now, as after the inventory timer)
    python -m shared report TENANT_ID [--format html|pdf] [--days N] [--out FILE]
                                            (a customer's credential report; to stdout, or FILE)

Exit codes (for automation): 0 every target healthy or rotated; 1 a failure (a step failed, bad settings);
2 something needs a human (a secret expired, a tenant unreachable or the app not found, a secret not verified,
a push incomplete, not owner, blocked by policy, a foreign credential; after `run` or `check` also drift, an old
key still signing in or a new key unused, a sign-in log or Proofpoint settings unreadable for days) or the input is
malformed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from shared import approvals_cli, onboard_cli
from shared.bootstrap import Services, services
from shared.clock import SystemClock
from shared.domain import GUID, Actor, Target
from shared.drift import DRIFT_UNREADABLE
from shared.errors import PartnerRefused, RotationError
from shared.offboarding import OffboardOptions, OffboardPorts, offboard, offboarded_document, sweep_retention
from shared.onboarding import ConsentUnavailable, consent_link
from shared.registry import InvalidTarget, check_policy, parse_target, status_document, target_document
from shared.rotation import Outcome
from shared.service import StatusPolicy, open_alerts, proofpoint_check, put_target
from shared.settings import Settings, SettingsError, allowed_hosts
from shared.sign_in_proof import EVIDENCE_UNREADABLE, HOLDS

EXIT_OK, EXIT_FAILED, EXIT_NEEDS_HUMAN = 0, 1, 2
# Statuses and results a pass cannot resolve by itself: a human must act.
NEEDS_HUMAN = frozenset({
    "expired", "unreachable", "app-not-found", "not-owner", "policy-blocked", "foreign-credential",
    "unverified", "push-incomplete", "would-fail",
})
EXIT_CODES = """exit codes:
  0  every target healthy or rotated
  1  a failure (a step failed; bad settings)
  2  something needs a human: expired, unreachable, app-not-found, unverified, push incomplete, not-owner,
     policy-blocked, foreign-credential; after run or check also drift, old-key-still-used, new-key-unused,
     sign-in-evidence-unreadable, drift-check-unreadable; or a malformed input file"""


def exit_code(outcomes: Sequence[Outcome]) -> int:
    """2 when any outcome needs a human, else 1 when any failed, else 0."""
    if any(o.result in NEEDS_HUMAN or o.status in NEEDS_HUMAN for o in outcomes):
        return EXIT_NEEDS_HUMAN
    if any(o.result == "failed" for o in outcomes):
        return EXIT_FAILED
    return EXIT_OK


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A plain-text table: columns are (key, heading)."""
    cells = [[("" if r.get(k) is None else str(r.get(k))) for k, _ in columns] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (_, h) in enumerate(columns)]
    line = "  ".join(h.ljust(w) for (_, h), w in zip(columns, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(out)


STATUS_COLUMNS = (
    ("customer", "CUSTOMER"),
    ("tenantId", "TENANT"),
    ("status", "STATUS"),
    ("daysLeft", "DAYS LEFT"),
    ("expiresOn", "EXPIRES"),
    ("stage", "STAGE"),
    ("lastOutcome", "LAST OUTCOME"),
    ("delivered", "DESTINATIONS"),
    ("signInLog", "SIGN-IN LOG"),
)


def status_rows(docs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for d in docs:
        acked = sum(1 for x in d["destinations"] if x["acknowledged"])
        if not d["destinations"]:
            delivered = "-"
        elif d["currentKeyId"] is None and d["stage"] == "idle":
            delivered = "not rotated yet"
        else:
            delivered = f"{acked}/{len(d['destinations'])} confirmed"
        rows.append(
            {
                **d,
                "expiresOn": (d["expires"] or "")[:10],
                "delivered": delivered,
                "status": d["status"] + (" (needs human)" if d["needsHuman"] or _evidence_hold(d) else "")
                + (" (drift)" if any(x["drift"] for x in d["destinations"]) else ""),
                "signInLog": sign_in_log(d),
            }
        )
    return rows


def sign_in_log(doc: dict[str, Any]) -> str:
    """What the target's last sign-in evidence read said, in a word and its day: read, refused by the tenant (Graph's
    code: retirement falls back to Proofpoint's own sync), or not read (no old key has waited since it was added)."""
    evidence = doc.get("signInEvidence")
    if not evidence:
        return "-"
    day = (evidence.get("readAt") or "")[:10]
    if not evidence.get("available"):
        return f"refused {day}: {evidence.get('code') or 'no code'} (fallback: Proofpoint's sync)"
    return f"read {day}"


def _evidence_hold(doc: dict[str, Any]) -> bool:
    """The sign-in evidence keeps an old key for a human (old-key-still-used, new-key-unused)."""
    evidence = doc.get("signInEvidence")
    return bool(evidence and evidence.get("hold"))


async def _status(svc: Services, as_json: bool) -> int:
    targets = sorted((t for t, _ in await svc.state.list_targets()), key=lambda t: (t.customer.lower(), t.key))
    docs = [status_document(t) for t in targets]
    print(json.dumps(docs, indent=2) if as_json else table(status_rows(docs), STATUS_COLUMNS))
    return 0


async def _run(svc: Services, assess_only: bool = False, resume: bool = False) -> int:
    names = {t.key: t.customer for t, _ in await svc.state.list_targets()}
    if resume:
        summary = await svc.engine.resume_pass(Actor.TIMER)
    else:
        summary = await svc.engine.run_pass(Actor.MANUAL if assess_only else Actor.TIMER, assess_only=assess_only)
    rows = [
        {"customer": names.get(f"{o.tenant_id}/{o.app_id}", ""), "app": o.app_id, "result": o.result,
         "status": o.status, "stage": o.stage, "error": f"{o.error_code}: {o.message}" if o.error_code else ""}
        for o in sorted(summary.outcomes, key=lambda o: names.get(f"{o.tenant_id}/{o.app_id}", "").lower())
    ]
    print(table(rows, (("customer", "CUSTOMER"), ("app", "APP ID"), ("status", "STATUS"), ("result", "RESULT"),
                       ("stage", "STAGE"), ("error", "ERROR"))))
    print(f"\n{len(rows)} target(s) in {summary.duration_ms} ms: {summary.by_result}")
    # Drift leaves a target's status as it is (nothing is changed for it), but a human must look: the row says so.
    listed = [t for t, _ in await svc.state.list_targets()]
    drifted = sorted(t.customer or t.key for t in listed if t.observed.drift)
    if drifted:
        print(f"drift between Proofpoint and Entra ID (proofpoint-drift): {', '.join(drifted)}")
    # Likewise the sign-in evidence keeping an old key (or unreadable), and Proofpoint's settings unreadable: the
    # targets stay healthy, but each is a condition a human must look at.
    held = held_for_a_human(listed, svc.engine.clock.now())
    for condition, customers in held.items():
        print(f"{condition}: {', '.join(customers)}")
    return exit_code(summary.outcomes) or (EXIT_NEEDS_HUMAN if drifted or held else EXIT_OK)


# Conditions that leave a target's status healthy yet need a human (docs/evidence.md, docs/destinations.md).
HELD_FOR_A_HUMAN = (*HOLDS, EVIDENCE_UNREADABLE, DRIFT_UNREADABLE)


def held_for_a_human(targets: Sequence[Target], now: datetime) -> dict[str, list[str]]:
    """Each such condition open on some target now, with the customers it holds for."""
    held: dict[str, list[str]] = {}
    for target in targets:
        for condition in open_alerts(target, StatusPolicy(), now):
            if condition in HELD_FOR_A_HUMAN:
                held.setdefault(condition, []).append(target.customer or target.key)
    return {c: sorted(held[c]) for c in HELD_FOR_A_HUMAN if c in held}


async def _rotate(svc: Services, tenant_id: str, app_id: str, force: bool, dry_run: bool) -> int:
    outcome = await svc.engine.rotate_now(tenant_id.lower(), app_id.lower(), force=force, dry_run=dry_run)
    print(json.dumps(outcome.__dict__, indent=2))
    if outcome.result in ("rotated", "would-rotate"):
        return EXIT_OK
    return exit_code([outcome]) or EXIT_FAILED


async def _consent_url(svc: Services, tenant_id: str, as_json: bool) -> int:
    try:
        link = await consent_link(svc.consent_keys, svc.settings, tenant_id, svc.engine.clock.now())
    except ConsentUnavailable as error:
        print(f"{error.code}: {error.message}", file=sys.stderr)
        return EXIT_NEEDS_HUMAN
    if as_json:
        print(json.dumps(link, indent=2))
    else:
        print(f"{link['instructions']}\n\n  {link['url']}\n\nValid until {link['expires']}; Entra returns the admin "
              f"to {link['redirectUri']}.")
    return EXIT_OK


async def _proofpoint_check(svc: Services, tenant_id: str, app_id: str, as_json: bool) -> int:
    doc = await proofpoint_check(svc.state, svc.engine.ports.destinations, tenant_id, app_id)
    if as_json:
        print(json.dumps(doc, indent=2))
    else:
        for entry in doc["destinations"]:
            print(f"{entry['name']}: {entry['domain']} on {entry['stack'] or entry['url'] or '?'}")
            if entry["error"]:
                print(f"  {entry['error']['code']}: {entry['error']['message']}")
                continue
            print(f"  GET {entry['url']} (as Proofpoint returned it, secrets hidden):")
            print("    " + json.dumps(entry["get"], indent=2).replace("\n", "\n    "))
            print(f"  PUT a push would send (changing {', '.join(entry['changes'])}):")
            print("    " + json.dumps(entry["put"], indent=2).replace("\n", "\n    "))
            for note in entry["notes"]:
                print(f"  - {note}")
    return EXIT_FAILED if any(e["error"] for e in doc["destinations"]) else EXIT_OK


def _guid(text: str) -> str:
    if not GUID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a tenant id (a GUID)")
    return text.lower()


def _period(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 366:  # "²".isdigit(), int() refuses it
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days from 1 to 366")
    return int(text)


def read_documents(path: Path) -> list[object]:
    """The target documents of an import file: a JSON list (InvalidTarget otherwise)."""
    try:
        docs = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InvalidTarget(str(path), f"cannot be read ({error.strerror or type(error).__name__})") from None
    except UnicodeDecodeError:
        raise InvalidTarget(str(path), "is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise InvalidTarget(str(path), f"is not JSON ({error.msg} at line {error.lineno} column {error.colno})") \
            from None
    if not isinstance(docs, list):
        raise InvalidTarget(str(path), "must hold a JSON list of target documents")
    return docs


def parse_documents(docs: list[object], hosts: frozenset[str] = frozenset()) -> list[Target]:
    """Every document as a target; InvalidTarget naming the first bad one (nothing is registered then). Destination
    hosts must be public unless listed in `hosts` (DESTINATION_ALLOWED_HOSTS, the local sandbox only)."""
    targets = []
    for index, doc in enumerate(docs):
        try:
            targets.append(parse_target(doc, allowed_hosts=hosts))
        except InvalidTarget as error:
            raise InvalidTarget(f"document {index + 1}", error.message) from None
    return targets


async def _import(svc: Services, targets: list[Target]) -> int:
    settings = svc.settings
    for index, target in enumerate(targets):
        try:
            check_policy(target.policy, settings.renew_before_days, settings.secret_lifetime_days)
        except InvalidTarget as error:
            raise InvalidTarget(f"document {index + 1}", error.message) from None
    for target in targets:
        created = await put_target(svc.state, target, actor="cli", at=svc.engine.clock.now())
        print(f"{'registered' if created else 'updated'} {target.customer or target.key}")
    return 0


async def _list(svc: Services) -> int:
    print(json.dumps([target_document(t) for t, _ in await svc.state.list_targets()], indent=2))
    return 0


async def _alert_test(svc: Services, sender: str) -> int:
    from shared.alerts import send_test_alert

    who = sender or f"cli:{_login()}"
    answer = await send_test_alert(svc.alerts.channel if svc.alerts else None, svc.state, who, svc.engine.clock.now())
    print(json.dumps(answer, indent=2))
    return EXIT_OK if answer["delivered"] else EXIT_FAILED


async def _tickets(svc: Services, command: str, sender: str, condition: str) -> int:
    """`tickets list`: the open tickets and the routing (GET /api/tickets); `tickets test`: a test ticket."""
    from shared.tickets.routing import Routing, parse_routing
    from shared.tickets.service import send_test_ticket, tickets_document

    book = svc.tickets
    routing = book.routing if book is not None else parse_routing(svc.settings.ticket_routing)
    if command == "list":
        rows = await book.open_tickets() if book is not None else []
        print(json.dumps(tickets_document(svc.settings.ticket_system, rows, routing), indent=2))
        return EXIT_OK
    answer = await send_test_ticket(book.desk_factory if book is not None else None, svc.settings.ticket_system,
                                    routing if book is not None else Routing(), svc.state,
                                    sender or f"cli:{_login()}", svc.engine.clock.now(), condition)
    print(json.dumps(answer, indent=2))
    return EXIT_OK if answer["opened"] else EXIT_FAILED


async def _inventory_scan(svc: Services) -> int:
    from shared.inventory_pass import take_inventory

    summary = await take_inventory(svc)
    print(json.dumps({
        "credentials": summary.credentials, "failed": summary.failed, "durationMs": summary.duration_ms,
        "passes": [{"tenantId": p.tenant_id, "objectKind": p.object_kind.value, "full": p.full,
                    "restarted": p.restarted, "objects": p.objects, "removed": p.removed,
                    "credentials": p.credentials} for p in summary.passes],
    }, indent=2))
    return EXIT_FAILED if summary.failed else EXIT_OK
def _offboard_ports(svc: Services) -> OffboardPorts:
    return OffboardPorts(svc.state, svc.directory, svc.secrets, svc.secret_retention, svc.engine.clock.now,
                         svc.settings.msp_app_client_id, approvals=svc.approvals)


async def _offboard(svc: Services, args: argparse.Namespace) -> int:
    options = OffboardOptions(remove_owner=args.remove_owner, remove_app=args.remove_app)
    async with AsyncExitStack() as stack:
        # The same device code sign-in as `onboard` (the prompt on stderr: stdout stays the answer, e.g. --json).
        partner = (await stack.enter_async_context(onboard_cli.device_code_session(svc, sys.stderr))
                   if args.sign_in else None)
        ports = replace(_offboard_ports(svc), partner=partner)
        result = await offboard(ports, args.tenant_id, args.app_id, options,
                                retention_days=svc.settings.offboard_retention_days,
                                actor=args.actor or f"cli:{_login()}")
    from shared.inventory_pass import forget_unregistered

    await forget_unregistered(svc, args.tenant_id)  # the tenant's last target: its inventory goes too
    if args.json:
        print(json.dumps(offboarded_document(result), indent=2))
    else:
        print(f"{result.customer or result.tenant_id}: offboarded by {result.actor}; the Key Vault versions of "
              f"{result.secret_name} are kept until {result.retained_until:%Y-%m-%d}")
        for step in result.steps:
            print(f"  {step.name:<9} {step.outcome:<12} {step.detail}")
            if step.command:
                print(f"  {'':<9} {'':<12} run: {step.command}")
    return EXIT_NEEDS_HUMAN if any(s.outcome in ("failed", "manual") for s in result.steps) else EXIT_OK


async def _retention_sweep(svc: Services) -> int:
    deleted = await sweep_retention(svc.secret_retention, svc.state, svc.engine.clock.now())
    print(json.dumps({"deleted": deleted}, indent=2))
    return EXIT_OK


async def _inventory_export(svc: Services, args: argparse.Namespace) -> int:
    """Every matching credential to stdout, one tenant's rows at a time (never the fleet in memory)."""
    from shared.inventory_view import InvalidFilter, csv_text, parse_filters, rows

    params = {name: str(value) for name, value in (
        ("tenantId", args.tenant), ("customer", args.customer), ("daysLeft", args.days_left), ("kind", args.kind),
        ("managed", args.managed), ("excluded", args.excluded), ("state", args.state)) if value is not None}
    try:
        filters = parse_filters(params, GUID)
    except InvalidFilter as error:
        print(f"invalid filter: {error.message}", file=sys.stderr)
        return EXIT_NEEDS_HUMAN
    if svc.inventory is None or svc.warning_rules is None:
        raise RotationError("the inventory is not configured", code="InventoryUnavailable")
    targets = [t for t, _ in await svc.state.list_targets()]
    tenants = sorted({t.tenant_id for t in targets})
    found = rows(svc.inventory, tenants, filters, await svc.warning_rules.exclusions(),
                 await svc.warning_rules.thresholds(), svc.engine.clock.now(),
                 paused={(t.tenant_id, t.app_id) for t in targets if not t.enabled})
    first = True
    if args.format == "csv":
        sys.stdout.write(csv_text([]))
    else:
        sys.stdout.write("[")
    async for _, doc in found:
        if args.format == "csv":
            sys.stdout.write(csv_text([doc], header=False))
        else:
            sys.stdout.write(("\n" if first else ",\n") + json.dumps(doc))
        first = False
    if args.format == "json":
        sys.stdout.write("\n]\n")
    sys.stdout.flush()
    return EXIT_OK


async def _report(svc: Services, args: argparse.Namespace) -> int:
    """A customer's credential report (docs/reports.md) as HTML or PDF, to a file or stdout."""
    from shared.customer_report import gather, policy_from, render_html, render_pdf

    if svc.inventory is None or svc.warning_rules is None:
        raise RotationError("the inventory is not configured", code="InventoryUnavailable")
    found = await gather(svc.state, svc.inventory, svc.warning_rules, args.tenant_id, policy_from(svc.settings),
                         svc.engine.clock.now(), args.days)
    data = render_pdf(found) if args.format == "pdf" else render_html(found).encode()
    if args.out:
        await asyncio.to_thread(Path(args.out).write_bytes, data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return EXIT_OK


async def _exclusions(svc: Services, args: argparse.Namespace) -> int:
    import uuid
    from datetime import datetime

    from shared.expiry_warnings import InvalidRule, exclusion_document, new_exclusion
    from shared.warning_pass import exclude, lift

    if svc.warning_rules is None:
        raise RotationError("the warning rules are not configured", code="InventoryUnavailable")
    now = svc.engine.clock.now()
    if args.exclusions_command == "list":
        print(json.dumps([exclusion_document(e, now) for e in await svc.warning_rules.exclusions(args.tenant or "")],
                         indent=2))
        return EXIT_OK
    if args.exclusions_command == "lift":
        lifted = await lift(svc.warning_rules, svc.state, args.exclusion_id, args.sender or _login(), now)
        print(json.dumps(exclusion_document(lifted, now), indent=2))
        return EXIT_OK
    try:
        until = datetime.fromisoformat(args.until.replace("Z", "+00:00")) if args.until else None
        made = new_exclusion(str(uuid.uuid4()), args.tenant_id, args.scope, app_id=args.app_id or "",
                             key_id=args.key_id or "", snooze=args.snooze, until=until,
                             by=args.sender or _login(), why=args.why, now=now)
    except InvalidRule as error:
        print(f"{error.code}: {error.message}", file=sys.stderr)
        return EXIT_NEEDS_HUMAN
    except ValueError:
        print("InvalidRequest: --until must be a date-time like 2027-01-31T00:00:00Z", file=sys.stderr)
        return EXIT_NEEDS_HUMAN
    await exclude(svc.warning_rules, svc.state, made)
    print(json.dumps(exclusion_document(made, now), indent=2))
    return EXIT_OK


async def _warnings(svc: Services, args: argparse.Namespace) -> int:
    from shared.expiry_warnings import DEFAULT_THRESHOLDS, InvalidRule, parse_thresholds
    from shared.warning_pass import registered, set_thresholds, take_warnings

    if args.warnings_command == "run":
        summary = await take_warnings(svc)
        print(json.dumps({"tenants": summary.tenants, "credentials": summary.credentials, "due": summary.due,
                          "failed": summary.failed, "durationMs": summary.duration_ms}, indent=2))
        return EXIT_FAILED if summary.failed else EXIT_OK
    if svc.warning_rules is None:
        raise RotationError("the warning rules are not configured", code="InventoryUnavailable")
    if args.days:
        try:
            days = parse_thresholds(list(args.days))
        except InvalidRule as error:
            print(f"{error.code}: {error.message}", file=sys.stderr)
            return EXIT_NEEDS_HUMAN
        await set_thresholds(svc.warning_rules, svc.state, args.tenant_id, days, args.sender or _login(),
                             svc.engine.clock.now())
    else:
        await registered(svc.state, args.tenant_id)  # as the API: no defaults shown for a tenant not watched
    chosen = (await svc.warning_rules.thresholds()).get(args.tenant_id)
    print(json.dumps({"tenantId": args.tenant_id, "days": list(chosen or DEFAULT_THRESHOLDS),
                      "default": chosen is None}))
    return EXIT_OK


def _login() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m shared", description="The sync-secret rotator, outside Functions.",
                                epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--verbose", "-v", action="store_true", help="log every protocol step")
    # For tests: a private set of tables, and a clock far enough ahead to take over a crashed run's lease.
    p.add_argument("--clock-offset-seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--table-prefix", default="", help=argparse.SUPPRESS)
    p.add_argument("--work-queue", default="", help=argparse.SUPPRESS)  # tests: a private work queue
    sub = p.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="every target with its secret's lifetime and rotation stage")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("run", help="one timer pass: resume, assess, rotate what is due")
    sub.add_parser("resume", help="take only the rotations in flight further (what RESUME_SCHEDULE runs)")
    sub.add_parser("check", help="assess every target and record its status; rotate nothing")
    rotate = sub.add_parser("rotate", help="rotate one target now")
    rotate.add_argument("tenant_id")
    rotate.add_argument("app_id")
    rotate.add_argument("--force", action="store_true", help="rotate even if healthy or within the cool-down")
    rotate.add_argument("--dry-run", action="store_true", help="say what would happen; change nothing")
    targets = sub.add_parser("targets", help="the customer registry")
    tsub = targets.add_subparsers(dest="targets_command", required=True)
    imp = tsub.add_parser("import", help="register or update targets from a JSON file")
    imp.add_argument("file", type=Path)
    tsub.add_parser("list", help="print the registry as JSON")
    link = sub.add_parser("consent-url", help="a signed admin-consent link for a customer tenant (federated mode)")
    link.add_argument("tenant_id", type=_guid, help="the customer's Entra tenant id")
    link.add_argument("--json", action="store_true", help="machine-readable output")
    check = sub.add_parser("proofpoint-check", help="a target's Proofpoint org: its sync settings as Proofpoint "
                                                    "returns them and the PUT a push would send (changes nothing)")
    check.add_argument("tenant_id", type=_guid)
    check.add_argument("app_id", type=_guid)
    check.add_argument("--json", action="store_true", help="machine-readable output")
    test = sub.add_parser("alert-test", help="post a test alert to the alert channel (ALERT_WEBHOOK_KIND) and print "
                                             "what was sent and the channel's HTTP status")
    test.add_argument("--as", dest="sender", default="", metavar="NAME",
                      help="who sends it, for the audit log (default: the login name)")
    tickets = sub.add_parser("tickets", help="PSA tickets (docs/tickets.md): the open ones, or a test ticket")
    tsub = tickets.add_subparsers(dest="tickets_command", required=True)
    tsub.add_parser("list", help="every ticket not closed and the routing in force (JSON)")
    ticket_test = tsub.add_parser("test", help="open a test ticket in TICKET_SYSTEM; exit 1 if refused")
    ticket_test.add_argument("--as", dest="sender", default="", metavar="NAME",
                             help="who sends it, for the audit log (default: the login name)")
    ticket_test.add_argument("--condition", default="", help="file it on this condition's route (default route)")
    inventory = sub.add_parser("inventory", help="the credential inventory: every app and service principal "
                                                 "credential of every customer tenant (docs/inventory.md)")
    isub = inventory.add_subparsers(dest="inventory_command", required=True)
    isub.add_parser("scan", help="read every customer tenant's credentials now (first a full read, then changes)")
    off = sub.add_parser("offboard", help="remove a customer: stop rotating (a rotation in flight is compensated or "
                                          "kept safe), keep its Key Vault versions OFFBOARD_RETENTION_DAYS, audit it")
    off.add_argument("tenant_id", type=_guid)
    off.add_argument("app_id", type=_guid)
    off.add_argument("--remove-owner", action="store_true",
                     help="also remove the rotator's service principal from the app's owners")
    off.add_argument("--remove-app", action="store_true",
                     help="also remove the MSP app's service principal from the tenant (prints the command an admin "
                          "of the tenant runs)")
    off.add_argument("--sign-in", action="store_true",
                     help="sign in as a partner admin (device code) to remove the MSP app through GDAP (needs Cloud "
                          "Application Administrator or Application Administrator in the customer's tenant)")
    off.add_argument("--as", dest="actor", default="", metavar="NAME",
                     help="who offboards, for the audit log (default: the login name)")
    off.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("retention-sweep", help="delete the Key Vault secrets of offboarded customers whose retention "
                                           "has passed (what the daily timer does)")
    export = isub.add_parser("export", help="every credential of every customer to stdout as CSV or JSON (streamed)")
    export.add_argument("--format", choices=("csv", "json"), default="json")
    export.add_argument("--tenant", type=_guid, default=None, help="only this customer tenant")
    export.add_argument("--customer", default=None, help="only customers whose name contains this (any case)")
    export.add_argument("--days-left", type=int, default=None, help="only credentials ending within N days")
    export.add_argument("--kind", choices=("password", "certificate"), default=None)
    export.add_argument("--managed", choices=("true", "false"), default=None)
    export.add_argument("--excluded", choices=("true", "false"), default=None)
    export.add_argument("--state", default=None, help="any of these states, comma-separated (e.g. expired,due)")
    report = sub.add_parser("report", help="a customer's credential report: every credential, what the rotator did, "
                                           "what needs the customer (docs/reports.md)")
    report.add_argument("tenant_id", type=_guid)
    report.add_argument("--format", choices=("html", "pdf"), default="html")
    report.add_argument("--days", type=_period, default=30, help="the period of activity shown (1 to 366 days)")
    report.add_argument("--out", default=None, help="write to this file (default: stdout)")
    exclusions = sub.add_parser("exclusions", help="exclusions and snoozes from expiry warnings (audited)")
    xsub = exclusions.add_subparsers(dest="exclusions_command", required=True)
    xlist = xsub.add_parser("list", help="every exclusion and snooze, lapsed ones included")
    xlist.add_argument("--tenant", type=_guid, default=None)
    xadd = xsub.add_parser("add", help="exclude a credential, an app or a customer, or snooze it until a date")
    xadd.add_argument("tenant_id", type=_guid)
    xadd.add_argument("--scope", choices=("credential", "app", "customer"), required=True)
    xadd.add_argument("--app-id", type=_guid, default=None, help="the app (scope app)")
    xadd.add_argument("--key-id", type=_guid, default=None, help="the credential's key id (scope credential)")
    xadd.add_argument("--why", required=True, help="why the warnings are not wanted (kept and shown)")
    xadd.add_argument("--until", default=None, help="end date-time with a time zone (required with --snooze)")
    xadd.add_argument("--snooze", action="store_true", help="a snooze: needs --until")
    xadd.add_argument("--as", dest="sender", default="", metavar="NAME", help="who (default: the login name)")
    xlift = xsub.add_parser("lift", help="lift an exclusion or snooze now")
    xlift.add_argument("exclusion_id", type=_guid)
    xlift.add_argument("--as", dest="sender", default="", metavar="NAME", help="who (default: the login name)")
    warnings = sub.add_parser("warnings", help="staged expiry warnings (thresholds per customer)")
    wsub = warnings.add_subparsers(dest="warnings_command", required=True)
    wsub.add_parser("run", help="judge every customer's credentials and tell the due warnings now")
    thresholds = wsub.add_parser("thresholds", help="show a customer's warning thresholds, or set them")
    thresholds.add_argument("tenant_id", type=_guid)
    thresholds.add_argument("days", type=int, nargs="*", help="the new thresholds in days (none: show)")
    thresholds.add_argument("--as", dest="sender", default="", metavar="NAME", help="who (default: the login name)")
    serve = sub.add_parser("serve", help="serve the function app's HTTP functions on 127.0.0.1 as the Functions host "
                                         "does in Azure, behind App Service Authentication (a checkout only: devhost/)")
    serve.add_argument("--port", type=int, default=7071, help="port on 127.0.0.1 (default 7071; 0 picks a free one)")
    serve.add_argument("--keys-file", type=Path, default=None,
                       help="where the host writes the function keys it makes at start (default: a new temporary "
                            "folder; the path is printed, the keys never are)")
    serve.add_argument("--no-worker", action="store_true",
                       help="do not take work from the rotation queue beside the HTTP functions (as the Functions host "
                            "runs the queue trigger; on by default when WORK_QUEUE is set)")
    work = sub.add_parser("work", help="take work from the rotation queue (WORK_QUEUE, Azurite) as the Functions host "
                                       "runs advance_target: a local worker")
    work.add_argument("--until-empty", action="store_true", help="stop once no message is visible")
    work.add_argument("--invisible-seconds", type=int, default=600, help=argparse.SUPPRESS)
    onboard_cli.add_parser(sub)
    approvals_cli.add_parser(sub)
    return p


DEVHOST_MISSING = ("the local Functions host (devhost/) is test equipment and is not deployed: `serve` and `work` run "
                   "only in a checkout of the repository")


def _devhost(module: str) -> Any:
    """A module of the local host, imported only when asked for: the deployed package never imports devhost."""
    import importlib

    try:
        return importlib.import_module(f"devhost.{module}")
    except ModuleNotFoundError as error:
        if error.name in ("devhost", f"devhost.{module}"):
            raise SettingsError(DEVHOST_MISSING) from None
        raise


def _work(args: argparse.Namespace) -> int:
    work_queue_forever = _devhost("queues").work_queue_forever
    settings = Settings.from_env(os.environ)
    if not settings.work_queue_connection_string:
        raise SettingsError("WORK_QUEUE (a connection string, e.g. Azurite's) is required for a local worker")
    _test_defaults(args)
    try:
        asyncio.run(work_queue_forever(settings.work_queue_connection_string, until_empty=args.until_empty,
                                       invisible=timedelta(seconds=args.invisible_seconds)))
    except KeyboardInterrupt:
        pass
    return 0


def _test_defaults(args: argparse.Namespace) -> None:
    from shared import bootstrap

    if args.table_prefix:
        bootstrap.DEFAULTS["table_prefix"] = args.table_prefix
    if args.clock_offset_seconds:
        bootstrap.DEFAULTS["clock"] = SystemClock(timedelta(seconds=args.clock_offset_seconds))
    if args.work_queue:
        bootstrap.DEFAULTS["work_queue"] = args.work_queue


def _serve(args: argparse.Namespace) -> int:
    host = _devhost("host")
    settings = Settings.from_env(os.environ)  # a missing or malformed setting stops the server at start
    _test_defaults(args)
    worker = settings.work_queue_connection_string if not args.no_worker else ""
    keys_file = args.keys_file
    if keys_file is None:
        import tempfile

        keys_file = Path(tempfile.mkdtemp(prefix="rotator-host-keys-")) / "keys.json"
    try:
        asyncio.run(host.serve(args.port, keys_file, work_queue_connection=worker))
    except KeyboardInterrupt:
        pass
    return 0


async def main_async(args: argparse.Namespace) -> int:
    settings = Settings.from_env(os.environ)
    clock = SystemClock(timedelta(seconds=args.clock_offset_seconds))
    async with services(settings, clock=clock, table_prefix=args.table_prefix) as svc:
        if args.command == "status":
            return await _status(svc, args.json)
        if args.command == "run":
            return await _run(svc)
        if args.command == "resume":
            return await _run(svc, resume=True)
        if args.command == "check":
            return await _run(svc, assess_only=True)
        if args.command == "rotate":
            return await _rotate(svc, args.tenant_id, args.app_id, args.force, args.dry_run)
        if args.command == "consent-url":
            return await _consent_url(svc, args.tenant_id, args.json)
        if args.command == "proofpoint-check":
            return await _proofpoint_check(svc, args.tenant_id, args.app_id, args.json)
        if args.command == "alert-test":
            return await _alert_test(svc, args.sender)
        if args.command == "tickets":
            return await _tickets(svc, args.tickets_command, getattr(args, "sender", ""),
                                  getattr(args, "condition", ""))
        if args.command == "inventory" and args.inventory_command == "scan":
            return await _inventory_scan(svc)
        if args.command == "onboard":
            return await onboard_cli.main(svc, args)
        if args.command == "approvals":
            return await approvals_cli.main(svc, args)
        if args.command == "offboard":
            return await _offboard(svc, args)
        if args.command == "retention-sweep":
            return await _retention_sweep(svc)
        if args.command == "inventory" and args.inventory_command == "export":
            return await _inventory_export(svc, args)
        if args.command == "exclusions":
            return await _exclusions(svc, args)
        if args.command == "report":
            return await _report(svc, args)
        if args.command == "warnings":
            return await _warnings(svc, args)
        if args.targets_command == "import":
            return await _import(svc, args.targets)
        return await _list(svc)


def main(argv: Sequence[str] | None = None) -> int:
    commands = parser()
    args = commands.parse_args(argv)
    if args.command == "offboard" and args.sign_in and not args.remove_app:
        # The sign-in serves the MSP app's removal only: a partner admin would sign in for nothing.
        commands.error("offboard: --sign-in goes with --remove-app (it removes the MSP app through GDAP)")
    if getattr(args, "targets_command", None) == "import":
        try:
            hosts = allowed_hosts(os.environ.get("DESTINATION_ALLOWED_HOSTS", ""))
            args.targets = parse_documents(read_documents(args.file), hosts)
        except InvalidTarget as error:
            print(f"invalid target file: {error.message}", file=sys.stderr)
            return EXIT_NEEDS_HUMAN
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("azure", "httpx", "msal"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "work":
            return _work(args)
        return asyncio.run(main_async(args))
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except InvalidTarget as error:
        print(f"invalid target: {error.message}", file=sys.stderr)
        return EXIT_NEEDS_HUMAN
    except PartnerRefused as error:  # a refused sign-in or partner read: the fix is what the admin acts on
        print(f"{error.code}: {error.message}\nfix: {error.fix}", file=sys.stderr)
        return EXIT_FAILED
    except RotationError as error:
        print(f"{error.code}: {error.message}", file=sys.stderr)
        return EXIT_FAILED
