"""`python -m shared onboard ...`: bulk onboarding from the command line, signed in with the device code flow.

    python -m shared onboard list [--method M] [--json]          the GDAP customers, roles held, roles missing
    python -m shared onboard run (--all | --tenant T ...) [--app T=APP] [--proofpoint-domain T=DOMAIN]
                                 [--method partner-center|graph] [--plan-only] [--keep-session] [--json]
    python -m shared onboard status RUN_ID [--json]              a run's progress (no sign-in)
    python -m shared onboard runs                                the latest runs
    python -m shared onboard resume RUN_ID [--json]              the tenants not onboarded yet
    python -m shared onboard forget RUN_ID                       delete a kept session from Key Vault

The sign-in prints the code and the page as `az login --use-device-code` does, and waits. A line per tenant as it
finishes; the exit code says whether every tenant was onboarded (0), one needs a human (2: the line names the cause
and the fix), or the command failed (1). The session lives in this process and is forgotten at the end, unless
--keep-session keeps it in Key Vault (`onboarding-session-<runId>`) for a later resume, until `forget`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, TextIO

import aiohttp

from shared.bootstrap import Services
from shared.bulk_onboarding import (
    DOMAIN,
    RUN_ID,
    TENANT_CLAIM,
    BulkOnboarding,
    TenantPick,
    TenantProgress,
    customers_document,
    disabled_tenants,
    release_session,
    session_expiry,
    session_secret_name,
    tenants_key,
)
from shared.domain import GUID
from shared.errors import NotFound, RotationError
from shared.ports import InstallMethod, PartnerSession

EXIT_OK, EXIT_FAILED, EXIT_NEEDS_HUMAN = 0, 1, 2
METHODS = [m.value for m in InstallMethod]


def _guid(text: str) -> str:
    if not GUID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not a GUID: {text!r}")
    return text.lower()


def _run_id(text: str) -> str:
    if not RUN_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not an onboarding run id (32 hex digits): {text!r}")
    return text


def _pair(text: str) -> tuple[str, str]:
    tenant, sep, value = text.partition("=")
    if not sep or not GUID.fullmatch(tenant) or not value:
        raise argparse.ArgumentTypeError(f"expected TENANT_ID=VALUE, got {text!r}")
    return tenant.lower(), value.lower()


def _app_pair(text: str) -> tuple[str, str]:
    """TENANT_ID=APP_ID, both GUIDs: checked here, before any sign-in or change (as the API's parse_picks does)."""
    tenant, app = _pair(text)
    if not GUID.fullmatch(app):
        raise argparse.ArgumentTypeError(f"expected TENANT_ID=APP_ID (the app's GUID), got {text!r}")
    return tenant, app


def _domain_pair(text: str) -> tuple[str, str]:
    """TENANT_ID=DOMAIN, the domain a domain name (as the API's parse_picks checks it)."""
    tenant, domain = _pair(text)
    if not DOMAIN.fullmatch(domain):
        raise argparse.ArgumentTypeError(f"expected TENANT_ID=DOMAIN (a domain name), got {text!r}")
    return tenant, domain


def add_parser(sub: Any) -> None:
    """The `onboard` command and its subcommands."""
    onboard = sub.add_parser("onboard", help="bulk onboarding through the partner relationship (GDAP)")
    osub = onboard.add_subparsers(dest="onboard_command", required=True)
    listing = osub.add_parser("list", help="sign in (device code) and list the GDAP customers with the roles you "
                                           "hold in each, the roles missing for the method, and whether registered")
    listing.add_argument("--method", choices=METHODS, default=InstallMethod.PARTNER_CENTER.value)
    listing.add_argument("--json", action="store_true")
    run = osub.add_parser("run", help="sign in (device code) and onboard the customers picked, or all")
    picked = run.add_mutually_exclusive_group(required=True)
    picked.add_argument("--all", action="store_true", help="every customer with an active GDAP relationship")
    picked.add_argument("--tenant", action="append", type=_guid, metavar="TENANT_ID", help="a customer (repeat)")
    run.add_argument("--app", action="append", type=_app_pair, default=[], metavar="TENANT_ID=APP_ID",
                     help="the Proofpoint app of a tenant where discovery finds none or several")
    run.add_argument("--proofpoint-domain", action="append", type=_domain_pair, default=[], metavar="TENANT_ID=DOMAIN",
                     help="the Proofpoint org (its primary domain) of a tenant whose domains match none or several")
    run.add_argument("--method", choices=METHODS, default=InstallMethod.PARTNER_CENTER.value,
                     help="partner-center (default: Partner Center's application consent, then the Graph "
                          "permissions) or graph (where the MSP app was consented before)")
    run.add_argument("--plan-only", action="store_true", help="check roles and Proofpoint orgs; change nothing")
    run.add_argument("--keep-session", action="store_true",
                     help="keep the sign-in in Key Vault after the run (onboarding-session-<runId>) until `forget`")
    run.add_argument("--json", action="store_true", help="print the run's progress document at the end")
    status = osub.add_parser("status", help="a run's progress, tenant by tenant (no sign-in)")
    status.add_argument("run_id", type=_run_id)
    status.add_argument("--json", action="store_true")
    runs = osub.add_parser("runs", help="the latest runs (20; --all: every run, a page at a time)")
    runs.add_argument("--all", action="store_true", help="every run kept (ONBOARDING_RETENTION_DAYS), newest first")
    resume = osub.add_parser("resume", help="the tenants of a run not onboarded yet (its kept session, or sign in)")
    resume.add_argument("run_id", type=_run_id)
    resume.add_argument("--json", action="store_true")
    forget = osub.add_parser("forget", help="delete a run's kept session from Key Vault")
    forget.add_argument("run_id", type=_run_id)


def picks_of(args: argparse.Namespace) -> list[TenantPick] | None:
    """The tenants of `onboard run`: None for --all; --app and --proofpoint-domain name tenants picked."""
    for option, pairs in (("--app", args.app), ("--proofpoint-domain", args.proofpoint_domain)):
        twice = sorted({t for t, _ in pairs if sum(1 for u, _ in pairs if u == t) > 1})
        if twice:  # which one was meant is not ours to guess (the last one silently won before)
            raise SystemExit(f"{option} names a tenant more than once: {', '.join(twice)}")
    apps, domains = dict(args.app), dict(args.proofpoint_domain)
    if args.all:
        if apps or domains:
            raise SystemExit("--app and --proofpoint-domain go with --tenant, not --all")
        return None
    tenants = list(dict.fromkeys(args.tenant))
    stray = sorted((set(apps) | set(domains)) - set(tenants))
    if stray:
        raise SystemExit(f"--app/--proofpoint-domain name a tenant not picked with --tenant: {', '.join(stray)}")
    return [TenantPick(t, apps.get(t, ""), domains.get(t, "")) for t in tenants]


@asynccontextmanager
async def device_code_session(svc: Services, out: TextIO) -> AsyncIterator[PartnerSession]:
    """Sign the partner admin in with the device code flow (the code and the page printed, as az does) and open the
    GDAP session; its tokens are forgotten on exit."""
    from shared.adapters.partner_sessions import partner_session, sign_in

    async with aiohttp.ClientSession() as http:
        signing = sign_in(svc.settings, http, confidential=False)
        prompt = await signing.start_device_code()
        print(prompt.message or f"To sign in, use a web browser to open the page {prompt.verification_uri} and "
              f"enter the code {prompt.user_code} to authenticate.", file=out, flush=True)
        admin = await signing.wait_device_code(prompt)
        print(f"Signed in as {admin.user_principal_name}.", file=out, flush=True)
        session = partner_session(svc.settings, signing, http)
        try:
            yield session
        finally:
            await session.close()


@asynccontextmanager
async def kept_or_new_session(svc: Services, run_id: str, out: TextIO) -> AsyncIterator[PartnerSession]:
    """The run's session kept in Key Vault, if any; else a device code sign-in."""
    if svc.partner_sessions is not None:
        try:
            session = await svc.partner_sessions.open(session_secret_name(run_id))
        except NotFound:
            pass
        except RotationError as error:  # expired or revoked refresh token, an unreadable secret: sign in anew
            print(f"The session kept for run {run_id} cannot be used ({error.code}): signing in again with a device "
                  "code.", file=out, flush=True)
        else:
            print(f"Using the session kept for run {run_id}.", file=out, flush=True)
            try:
                yield session
            finally:
                await session.close()
            return
    async with device_code_session(svc, out) as session:
        yield session


def progress_line(p: TenantProgress) -> str:
    """One tenant as it finished: its state, name and what happened (or the cause and the fix)."""
    head = f"{p.state.value:<8} {p.customer or p.tenant_id} ({p.tenant_id})"
    if p.error_code:
        return f"{head}\n         {p.error_code}: {p.error_message}\n         fix: {p.fix}"
    register = p.steps.get("register")
    dry = p.steps.get("dry-run")
    said = "; ".join(r.detail for r in (register, dry) if r is not None and r.detail)
    return f"{head}: {said}" if said else head


def exit_code(doc: dict[str, Any]) -> int:
    """0 every tenant onboarded (or onboarded before), 2 any failed or not finished (a human acts), else 1."""
    counts = doc["counts"]
    if counts["failed"] or counts["pending"] or counts["running"]:
        return EXIT_NEEDS_HUMAN
    return EXIT_OK


def summary(doc: dict[str, Any]) -> str:
    c = doc["counts"]
    held = (f" {c['running']} running: another resume works on them (the dashboard, another terminal), or one that "
            f"stopped holds them until its claim runs out ({int(TENANT_CLAIM.total_seconds()) // 60} minutes); resume "
            "again then." if c["running"] else "")
    return (f"Run {doc['runId']} {doc['state']}: {c['done']} onboarded, {c['skipped']} onboarded before, "
            f"{c['failed']} failed, {c['pending'] + c['running']} not finished (of {c['total']}).{held}")


async def _work(svc: Services, engine: BulkOnboarding, session: PartnerSession, run_id: str, keep: bool,
                as_json: bool, out: TextIO) -> int:
    def show(p: TenantProgress) -> None:
        print(progress_line(p), flush=True)

    doc = await engine.work(session, run_id, on_progress=show)
    if svc.partner_sessions is not None:
        if keep:
            run, _ = await engine.runs.get_run(run_id)
            await svc.partner_sessions.keep(session_secret_name(run_id), session,
                                            session_expiry(replace(run, keep_session=True), engine.clock.now()))
            print(f"The session is kept in Key Vault as {session_secret_name(run_id)}: "
                  f"`python -m shared onboard forget {run_id}` deletes it.", file=out)
        else:
            await release_session(engine.runs, svc.partner_sessions, run_id)
    print(json.dumps(doc, indent=2) if as_json else summary(doc))
    return exit_code(doc)


async def main(svc: Services, args: argparse.Namespace, out: TextIO = sys.stderr) -> int:
    """One `onboard` subcommand."""
    engine = svc.bulk_onboarding()
    command = args.onboard_command
    if command == "status":
        doc = await engine.progress(args.run_id)
        if args.json:
            print(json.dumps(doc, indent=2))
        else:
            for t in doc["tenants"]:
                state = t["state"]
                error = t["error"]
                print(f"{state:<8} {t['customer']} ({t['tenantId']})" + (
                    f": {error['code']}: {error['message']} | fix: {error['fix']}" if error else ""))
            print(summary(doc))
        return exit_code(doc) if doc["state"] != "signed-in" else EXIT_OK
    if command == "runs":
        cursor: str | None = None
        while True:  # a page at a time: the list is never held whole
            runs, cursor = await engine.runs.list_runs(20, cursor)
            for run in runs:
                print(f"{run.run_id}  {run.state.value:<9} {run.started_at.isoformat()}  {run.admin_upn}  "
                      f"{run.method.value}{'  plan-only' if run.plan_only else ''}")
            if cursor is None or not args.all:
                break
        return EXIT_OK
    if command == "forget":
        await engine.runs.get_run(args.run_id)
        if svc.partner_sessions is not None:
            await release_session(engine.runs, svc.partner_sessions, args.run_id, force=True)
        print(f"Forgot the session of run {args.run_id} (Key Vault secret {session_secret_name(args.run_id)}).")
        return EXIT_OK
    if command == "resume":
        run, _ = await engine.runs.get_run(args.run_id)
        async with kept_or_new_session(svc, args.run_id, out) as session:
            return await _work(svc, engine, session, args.run_id, run.keep_session, args.json, out)
    picks = picks_of(args) if command == "run" else None  # a wrong pick stops before the sign-in, not after it
    async with device_code_session(svc, out) as session:
        if command == "list":
            method = InstallMethod(args.method)
            targets = [t for t, _ in await svc.state.list_targets()]
            docs = customers_document(await session.customers(), {t.tenant_id.lower() for t in targets}, method,
                                      disabled_tenants(targets))
            if args.json:
                print(json.dumps(docs, indent=2))
            else:
                for c in docs:
                    missing = f"  missing: {', '.join(c['missingRoles'])}" if c["missingRoles"] else ""
                    print(f"{c['tenantId']}  {c['customer']}  [{', '.join(c['roles']) or 'no role'}]"
                          f"{'  registered' if c['registered'] else ''}"
                          f"{' (disabled: finish its offboarding, or re-enable it)' if c['disabled'] else ''}{missing}")
            return EXIT_OK
        run = await engine.start(session, picks, InstallMethod(args.method), plan_only=args.plan_only,
                                 keep_session=args.keep_session)
        print(f"Run {run.run_id}: {sum(1 for _ in await engine.runs.tenants(tenants_key(run)))} customer(s), method "
              f"{run.method.value}{', plan only' if run.plan_only else ''}. "
              f"`python -m shared onboard status {run.run_id}` shows it.", file=out, flush=True)
        return await _work(svc, engine, session, run.run_id, args.keep_session, args.json, out)
