"""`python -m shared approvals`: change control's approval requests from the command line (what the API does).

  approvals list [--status pending|approved|postponed|rejected] [--json]
  approvals decide TENANT APP REQUEST_ID approve|postpone|reject [--until DATE] [--reason TEXT] [--as NAME]
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from dataclasses import asdict
from typing import Any

from shared.approvals import ACTIONS, InvalidDecision, approval_document, decide_and_reserve, list_approvals
from shared.bootstrap import Services
from shared.change_control import ApprovalStatus
from shared.domain import Actor, actor_of
from shared.errors import Conflict, NotFound

EXIT_OK, EXIT_FAILED, EXIT_NEEDS_HUMAN = 0, 1, 2


def add_parser(sub: Any) -> None:
    approvals = sub.add_parser("approvals", help="change control's approval requests: list them, or decide one "
                                                 "(docs/change-control.md)")
    asub = approvals.add_subparsers(dest="approvals_command", required=True)
    listing = asub.add_parser("list", help="every customer's request, the oldest first")
    listing.add_argument("--status", choices=[s.value for s in ApprovalStatus], default=None)
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    decide = asub.add_parser("decide", help="approve, postpone (until a date) or reject a pending request (audited)")
    decide.add_argument("tenant_id")
    decide.add_argument("app_id")
    decide.add_argument("request_id")
    decide.add_argument("action", choices=list(ACTIONS))
    decide.add_argument("--until", default=None, help="postpone: a future date (2026-12-20) or date-time with offset")
    decide.add_argument("--reason", default=None, help="why (kept on the request and in the audit trail)")
    decide.add_argument("--as", dest="actor", default="", metavar="NAME",
                        help="who decides, for the audit log (default: the login name)")


def _login() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


async def main(svc: Services, args: argparse.Namespace) -> int:
    if svc.approvals is None:
        print("the approvals book is not configured", file=sys.stderr)
        return EXIT_FAILED
    if args.approvals_command == "list":
        status = ApprovalStatus(args.status) if args.status else None
        docs = await list_approvals(svc.approvals, svc.state, status)
        if args.json:
            print(json.dumps(docs, indent=2))
        else:
            for d in docs:
                by = f" by {d['decidedBy']}" if d["decidedBy"] else ""
                print(f"{d['customer'] or d['tenantId']}  {d['tenantId']}/{d['appId']}  {d['requestId']}  "
                      f"{d['status']}{by}  expires {d['expires'] or '?'}  forced from {d['forceOn'] or 'never'}")
            print(f"{len(docs)} request(s)")
        return EXIT_OK
    actor = actor_of(Actor.MANUAL, args.actor or _login())
    try:
        decided, outcome = await decide_and_reserve(
            svc.approvals, svc.engine, svc.queue, args.tenant_id.lower(), args.app_id.lower(), args.request_id,
            args.action, actor=actor, until=args.until, reason=args.reason, via="command line")
    except (InvalidDecision, Conflict, NotFound) as error:
        print(f"{error.code}: {error.message}", file=sys.stderr)
        return EXIT_NEEDS_HUMAN
    print(json.dumps({"approval": approval_document(decided), "outcome": asdict(outcome)}, indent=2))
    return EXIT_OK
