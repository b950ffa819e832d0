"""`make demo`: the whole job end to end against the local sandbox and Azurite.

Starts the sandbox with six customers of the MSP, each with a GDAP relationship with the MSP's partner tenant
(Contoso expired, Fabrikam due, Northwind healthy; Adatum's app not owned by the MSP app yet; Tailspin's tenant
blocking client secrets; Woodgrove's relationship lacking Privileged Role Administrator). Onboards them in one step
from the partner relationship: on the dashboard, operator@msp.example opens Onboard customers, signs the partner
admin in (the sandbox's Entra sign-in page), picks every customer and starts; each is put in place (the MSP app by
Partner Center's consent with its Graph permissions, the owner of its Proofpoint app, the registration with its
Proofpoint org and the portal, a dry run) and Woodgrove stops at the roles step naming the role; a screenshot of the
result (.demo/onboarding.png). Without Chromium the same run is made on the command line
(`python -m shared onboard run --all`, the device code answered on the sandbox's verification page). Then it runs one
timer pass with the grace period at zero, a second one a day later (once Proofpoint's own sync has run with the
new secrets, which is when the old ones are retired), and shows what changed everywhere. Ends with a browser
screenshot of the dashboard (.demo/dashboard.png) taken through the local server after signing in as
operator@msp.example through App Service Authentication's redirect to the sandbox's Entra sign-in page. Stops
everything at the end.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sandbox.client import SandboxClient
from sandbox.launch import RunningSandbox, running
from scripts.browser import chromium_missing, onboard_all, screenshot, serving, trusted_keys, view_screenshot

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "sandbox" / "seeds" / "demo.json"
SCREENSHOT = ROOT / ".demo" / "dashboard.png"
ONBOARDING_SCREENSHOT = ROOT / ".demo" / "onboarding.png"
PARTNER_ADMIN = "partner-admin@msp.example"  # the partner tenant's admin, in its GDAP groups (sandbox/README.md)
CHANNEL = "msp.example"  # the MSP's own (channel) org in Proofpoint; the customers' orgs are its children
# Issue 24, seeded beside demo.json and registered directly (no GDAP relationship): Wingtip, whose Proofpoint org
# syncs with another app than the registered one (drift), and Litware, whose tenant lets the rotator read Entra's
# sign-in log; the customer views shown: Litware's credentials after its rotation (the new key signed in from
# Proofpoint's sync, the old one quiet since the push and kept for its quiet period) and Wingtip's drift.
EXTRA_SEED = ROOT / "sandbox" / "seeds" / "demo-issue24.json"
EXTRA = {"3d1f0000-0000-4000-8000-00000000b001": ("Wingtip", "wingtiptoys.com", "us4"),
         "1a7a0000-0000-4000-8000-0000000017a1": ("Litware", "litwareinc.com", "us2")}
VIEWS = {"1a7a0000-0000-4000-8000-0000000017a1": ROOT / ".demo" / "customer-litware.png",
         "3d1f0000-0000-4000-8000-00000000b001": ROOT / ".demo" / "customer-wingtip.png",
         # issue 26: Trey Research's rotation waiting for approval, with the operator's actions
         "7e3e0000-0000-4000-8000-00000000e301": ROOT / ".demo" / "customer-trey.png"}
POLICIES = {"1a7a0000-0000-4000-8000-0000000017a1": {"retireQuietHours": 48}}  # Litware: the old key waits 48 h
CREDENTIALS_SCREENSHOT = ROOT / ".demo" / "credentials.png"  # the dashboard's "All credentials" view
# Issue 26, seeded beside demo.json and registered directly with change control in their policy: Trey Research (due,
# approval mode: the timer pass asks for an approval and waits) and Lucerne Publishing (due, rotations only inside its
# weekly maintenance window in New York, placed days ahead: it waits for the window). The dashboard's Approvals view.
CHANGE_SEED = ROOT / "sandbox" / "seeds" / "demo-issue26.json"
TREY, LUCERNE = "7e3e0000-0000-4000-8000-00000000e301", "1cee0000-0000-4000-8000-00000000c301"
CHANGE = {TREY: ("Trey Research", "treyresearch.net", "us1"),
          LUCERNE: ("Lucerne Publishing", "lucernepublishing.com", "us1")}
LUCERNE_ZONE = "America/New_York"
APPROVALS_SCREENSHOT = ROOT / ".demo" / "approvals.png"
REPORT = ROOT / ".demo" / "fabrikam-report"  # .pdf, .png (its first page) and .html
FABRIKAM = "fab10000-0000-4000-8000-00000000f001"  # rotated by the demo; other credentials expiring (the seed)
PORTAL_PATH = "/api/office365/azure-ad"
OPERATOR = "operator@msp.example"  # the sandbox's MSP user holding Rotator.Operate
DAY_LATER = timedelta(hours=25)  # past Proofpoint's daily sync (sync_frequency 24 in the seed)
CUSTOMERS = {  # tenant id -> (name, Proofpoint org domain, stack), as in the seed
    "c0a70000-0000-4000-8000-00000000c001": ("Contoso", "contoso.com", "us1"),
    "fab10000-0000-4000-8000-00000000f001": ("Fabrikam", "fabrikam.com", "us1"),
    "90e70000-0000-4000-8000-00000000e001": ("Northwind", "northwindtraders.com", "us1"),
    "ada70000-0000-4000-8000-00000000a001": ("Adatum", "adatum.com", "us1"),
    "7a150000-0000-4000-8000-00000000d001": ("Tailspin", "tailspintoys.com", "us1"),
    "b0b00000-0000-4000-8000-00000000b001": ("Woodgrove", "woodgrovebank.com", "us1"),
    **EXTRA,
    **CHANGE,
}


def banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 100 - len(text)), flush=True)


def targets(state: dict[str, Any], endpoints: dict[str, str]) -> list[dict[str, Any]]:
    """Registry documents for the seeded customers but Woodgrove (what an operator would PUT to /api/targets, as the
    browser tests register them directly)."""
    docs = []
    for tenant in state["tenants"]:
        if tenant["id"] not in CUSTOMERS or CUSTOMERS[tenant["id"]][0] == "Woodgrove":
            continue
        name, domain, stack = CUSTOMERS[tenant["id"]]
        docs.append(
            {
                "tenantId": tenant["id"],
                "appId": tenant["applications"][0]["appId"],
                "customer": name,
                "destinations": [
                    {"name": "proofpoint", "kind": "proofpoint",
                     "options": {"stack": stack, "domain": domain, "account_secret": "proofpoint-api-account"}},
                    {"name": "vircom-portal", "kind": "http",
                     "options": {"preset": "vircom-portal", "url": endpoints["portal"] + PORTAL_PATH}},
                ],
                **({"policy": POLICIES[tenant["id"]]} if tenant["id"] in POLICIES else {}),
                **({"policy": {"changeControl": change_control(tenant["id"])}} if tenant["id"] in CHANGE else {}),
            }
        )
    return docs


def change_control(tenant_id: str, now: datetime | None = None) -> dict[str, Any]:
    """Issue 26's demo policies: Trey Research approves each rotation; Lucerne Publishing allows them only in a weekly
    window of its own time zone, on the weekday three days from now (01:00-05:00), so that neither of the demo's two
    passes (a day apart) falls inside it whatever day the demo runs."""
    if tenant_id == TREY:
        return {"mode": "approval", "timeZone": "Europe/London", "forceDaysBeforeExpiry": 7}
    local = (now or datetime.now(UTC)).astimezone(ZoneInfo(LUCERNE_ZONE)) + timedelta(days=3)
    day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[local.weekday()]
    return {"mode": "window", "timeZone": LUCERNE_ZONE, "windows": [{"days": [day], "start": "01:00", "end": "05:00"}],
            "forceDaysBeforeExpiry": 7}


def destinations_template(endpoints: dict[str, str]) -> list[dict[str, Any]]:
    """ONBOARDING_DESTINATIONS: what every onboarded customer is registered with (its Proofpoint org, the portal)."""
    return [
        {"name": "proofpoint", "kind": "proofpoint",
         "options": {"stack": "{stack}", "domain": "{domain}", "account_secret": "proofpoint-api-account"}},
        {"name": "vircom-portal", "kind": "http",
         "options": {"preset": "vircom-portal", "url": endpoints["portal"] + PORTAL_PATH}},
    ]


def cli(env: dict[str, str], *args: str) -> None:
    print(f"$ python -m shared {' '.join(args)}", flush=True)
    result = subprocess.run([sys.executable, "-m", "shared", *args], cwd=ROOT, env=env, check=False)
    # 1: a step failed, 2: something needs a human (Contoso expired, Adatum not-owner, ...): what the demo shows.
    if result.returncode not in (0, 1, 2):
        raise SystemExit(f"python -m shared {args[0]} failed with exit code {result.returncode}")


def world_table(control: SandboxClient) -> None:
    """What the services themselves now hold (read from the sandbox, secrets shown only as 4-character hints)."""
    state = control.state()
    sync = {r["domain"]: r for r in control.proofpoint_sync()}
    received = state["portal"]["received"]
    vault = state["keyvault"]["secrets"]
    rows = []
    for tenant in state["tenants"]:
        if tenant["id"] not in CUSTOMERS:
            continue
        name, domain, _ = CUSTOMERS[tenant["id"]]
        app = tenant["applications"][0]
        secret_name = f"ppsync-{tenant['id']}-{app['appId']}"
        current = [v for v in vault.get(secret_name, []) if v["tags"].get("stage") == "current"]
        org = next(o for o in state["proofpoint"]["orgs"] if o["domain"] == domain)
        pushed = [r for r in received if r["body"].get("tenantId") == tenant["id"]]
        hint = current[0]["value"][:3] + "…" if current else "-"
        rows.append(
            {
                "customer": name,
                "credentials": ", ".join(
                    f"{c['hint']}… until {c['endDateTime'][:10]}" for c in app["passwordCredentials"]
                ),
                "vault": f"{hint} ({len(vault.get(secret_name, []))} version(s))" if current else "-",
                "proofpoint": (org["settings"].get("ad_key") or "")[:3] + "…",
                "sync": "ok" if sync[domain]["ok"] else "FAILING",
                "portal": (pushed[-1]["body"]["clientSecret"][:3] + "…") if pushed else "-",
            }
        )
    from shared.cli import table

    print(table(rows, (("customer", "CUSTOMER"), ("credentials", "LIVE CREDENTIALS IN ENTRA ID"),
                       ("vault", "KEY VAULT (current)"), ("proofpoint", "PROOFPOINT KEY"),
                       ("sync", "PROOFPOINT SYNC"), ("portal", "PORTAL KEY"))))


def main() -> int:
    if not os.environ.get("STATE_TABLES_CONNECTION_STRING"):
        raise SystemExit("run through `make demo` (it starts Azurite and sets STATE_TABLES_CONNECTION_STRING)")
    with tempfile.TemporaryDirectory(prefix="rotator-demo-") as directory, running(Path(directory), SEED) as sandbox:
        endpoints, control = sandbox.endpoints, sandbox.control
        env = {
            **os.environ,
            **sandbox.settings,
            "RETIRE_GRACE_HOURS": "0",  # the demo retires old secrets at once; the default waits 24 hours
            "VERIFY_TIMEOUT_SECONDS": "30",
        }
        env.update({"PROOFPOINT_CHANNEL_DOMAIN": CHANNEL,
                    "ONBOARDING_DESTINATIONS": json.dumps(destinations_template(endpoints))})

        control.seed(json.loads(EXTRA_SEED.read_text()))
        control.seed(json.loads(CHANGE_SEED.read_text()))
        env.update(ticket_receiver(control, endpoints))

        banner("The MSP's customers today (before the rotator)")
        world_table(control)
        banner("Onboard every customer from the partner relationship (GDAP), in one step")
        onboard(env, sandbox)
        banner("Register Wingtip and Litware (no partner relationship) with their destinations")
        extra = sandbox.state_dir / "extra-targets.json"
        extra.write_text(json.dumps([d for d in targets(control.state(), endpoints) if d["tenantId"] in EXTRA],
                                    indent=2))
        cli(env, "targets", "import", str(extra))
        banner("Register Trey Research (approval) and Lucerne Publishing (maintenance window) with change control")
        changed = sandbox.state_dir / "change-control-targets.json"
        changed.write_text(json.dumps([d for d in targets(control.state(), endpoints) if d["tenantId"] in CHANGE],
                                      indent=2))
        print(json.dumps({CUSTOMERS[t][0]: change_control(t) for t in CHANGE}, indent=2), flush=True)
        cli(env, "targets", "import", str(changed))
        banner("Check every customer's sync secret (rotates nothing)")
        cli(env, "check")
        cli(env, "status")
        banner("One timer pass: rotate what is due, store in Key Vault, verify, push")
        cli(env, "run")
        cli(env, "status")
        # The old secrets stay until Proofpoint's own daily sync has run with the new ones (docs/destinations.md).
        banner("A day later: Proofpoint's daily sync ran with the new secrets; the next timer pass retires the old")
        day_later = str(DAY_LATER.total_seconds())
        control.set_clock(DAY_LATER.total_seconds())
        cli(env, "--clock-offset-seconds", day_later, "run")
        cli(env, "--clock-offset-seconds", day_later, "status")
        banner("The tickets: one per customer and condition still open (the sandbox's JSON ticket receiver)")
        cli(env, "--clock-offset-seconds", day_later, "tickets", "list")
        banner("What Entra ID, Key Vault, Proofpoint and the portal now hold")
        world_table(control)
        banner("Every other credential of the customers (the inventory) and Fabrikam's report")
        cli(env, "inventory", "scan")
        cli(env, "inventory", "export", "--format", "csv", "--days-left", "90", "--tenant", FABRIKAM)
        report(env, day_later)  # the demo's "now" is a day on: the retirements are in the period
        banner("The dashboard")
        # Entra's clock back with ours: its tokens would otherwise start a day in the future, and App Service
        # Authentication refuses a token before its nbf.
        control.set_clock(0)
        dashboard(env, sandbox)
        return 0


def ticket_receiver(control: SandboxClient, endpoints: dict[str, str]) -> dict[str, str]:
    """Tickets to the sandbox's JSON ticket receiver (docs/tickets.md): its URL and key in Key Vault, as in Azure;
    the app settings that name them."""
    token, key = secrets.token_hex(12), secrets.token_hex(16)
    config = {"url": f"{endpoints['webhooks']}/tickets/{token}", "authorization": f"Bearer {key}"}
    control.seed({"webhooks": {"tickets": token, "ticketsAuthorization": f"Bearer {key}"},
                  "keyvault": {"secrets": [{"name": "psa-tickets", "value": json.dumps(config)}]}})
    return {"TICKET_SYSTEM": "webhook", "TICKET_SECRET_NAME": "psa-tickets",
            "TICKET_ROUTING": json.dumps({"default": {"board": "Security", "closedStatus": "Completed"}})}


def onboard(env: dict[str, str], sandbox: RunningSandbox) -> None:
    """Bulk onboarding as an MSP engineer does it: on the dashboard (the partner admin's sign-in, every customer
    picked, Partner Center's consent), or, without a browser, on the command line with the device code flow."""
    missing = chromium_missing()
    if missing:
        print(f"No browser ({missing}): the same run on the command line", flush=True)
        onboard_on_the_command_line(env, sandbox)
        return
    with serving(env) as url:
        for path in ("/.auth/login/aad/callback", "/api/onboarding/callback"):
            sandbox.control.add_redirect_uri("msp-app", f"{url}{path}")
        print(f"{OPERATOR} opens Onboard customers on the dashboard and signs {PARTNER_ADMIN} in; every customer "
              "picked; the MSP app put in place by Partner Center's consent", flush=True)
        run_id = onboard_all(url, ONBOARDING_SCREENSHOT, operator=OPERATOR, partner=PARTNER_ADMIN,
                             trust=trusted_keys(sandbox.ca_file, [sandbox.endpoints["entra"]]),
                             method="partner-center")
    cli(env, "onboard", "status", run_id)
    print(f"Screenshot of the onboarding run (Chromium): {ONBOARDING_SCREENSHOT.relative_to(ROOT)}", flush=True)


def onboard_on_the_command_line(env: dict[str, str], sandbox: RunningSandbox) -> None:
    """`python -m shared onboard run --all`, its device code entered on the sandbox's verification page as the
    partner admin would."""
    import re
    import threading

    from sandbox.client import answer_device_code

    sandbox.control.set_device_code_interval(1)
    print("$ python -m shared onboard run --all", flush=True)
    process = subprocess.Popen([sys.executable, "-m", "shared", "onboard", "run", "--all"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None

    def approve(code: str) -> None:
        answer_device_code(sandbox.endpoints["entra"], code, PARTNER_ADMIN, sandbox.ca_file)

    for line in process.stdout:
        print(line, end="", flush=True)
        found = re.search(r"enter the code (\S+)", line)
        if found:
            threading.Thread(target=approve, args=(found.group(1),), daemon=True).start()
    if process.wait() not in (0, 2):  # 2: Woodgrove needs a human (its missing role), as intended
        raise SystemExit(f"python -m shared onboard run failed with exit code {process.returncode}")


def report(env: dict[str, str], clock_offset: str) -> None:
    """Fabrikam's credential report as the MSP would send it: the PDF, its first page as PNG (pypdfium2), the HTML."""
    import pypdfium2 as pdfium

    REPORT.parent.mkdir(parents=True, exist_ok=True)
    for fmt in ("pdf", "html"):
        cli(env, "--clock-offset-seconds", clock_offset, "report", FABRIKAM, "--format", fmt,
            "--out", str(REPORT.with_suffix(f".{fmt}")))
    pdf = pdfium.PdfDocument(REPORT.with_suffix(".pdf"))
    pdf[0].render(scale=2).to_pil().save(REPORT.with_suffix(".png"))
    print(f"Fabrikam's report: {REPORT.with_suffix('.pdf').relative_to(ROOT)} ({len(pdf)} page(s)), first page "
          f"{REPORT.with_suffix('.png').relative_to(ROOT)}, HTML {REPORT.with_suffix('.html').relative_to(ROOT)}",
          flush=True)


def dashboard(env: dict[str, str], sandbox: RunningSandbox) -> None:
    """A browser screenshot of the dashboard, served by `python -m shared serve` over the demo's state, taken after
    operator@msp.example signed in as in Azure (the page's redirect, Entra's sign-in page, the callback)."""
    missing = chromium_missing()
    if missing:
        print(f"No screenshot of the dashboard: {missing}", flush=True)
    else:
        with serving(env) as url:
            sandbox.control.add_redirect_uri("msp-app", f"{url}/.auth/login/aad/callback")
            apps = {t["id"]: t["applications"][0]["appId"] for t in sandbox.control.state()["tenants"]}
            views = [(f"#/target/{tenant}/{apps[tenant]}", path) for tenant, path in VIEWS.items()]
            screenshot(url, SCREENSHOT, upn=OPERATOR,
                       trust=trusted_keys(sandbox.ca_file, [sandbox.endpoints["entra"]]), views=views)
            screenshot(url, CREDENTIALS_SCREENSHOT, upn=OPERATOR, height=1400, selector="#credentials",
                       trust=trusted_keys(sandbox.ca_file, [sandbox.endpoints["entra"]]))
            # Issue 26: the rotations waiting for a decision (Trey Research), with the operator's actions
            view_screenshot(url, APPROVALS_SCREENSHOT, upn=OPERATOR, fragment="#/approvals",
                            ready="#approvals-table tbody tr", height=360,
                            trust=trusted_keys(sandbox.ca_file, [sandbox.endpoints["entra"]]))
        print(f"Screenshot of the dashboard after {OPERATOR} signed in (Chromium, 1280x800): "
              f"{SCREENSHOT.relative_to(ROOT)}; customer views: "
              f"{', '.join(str(p.relative_to(ROOT)) for p in VIEWS.values())}; its All credentials view: "
              f"{CREDENTIALS_SCREENSHOT.relative_to(ROOT)}; its Approvals view: "
              f"{APPROVALS_SCREENSHOT.relative_to(ROOT)}", flush=True)
    print("Open the dashboard live: `make serve`, then http://127.0.0.1:7071/api/dashboard in a browser and sign in "
          "on the sandbox's Entra page (the sandbox with the demo's customers behind it; Ctrl-C stops).", flush=True)


if __name__ == "__main__":
    sys.exit(main())
