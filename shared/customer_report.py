"""The per-customer report (issue 25): every credential of one customer's tenant with its expiry, what the rotator
did in the period (the audit log), and what needs the customer. Built from the stores once (`gather`), then rendered
by pure functions as HTML (served by the app) or PDF (fpdf2: pure Python, no system library, so it runs on Linux
Functions as is). Metadata only: Graph never lists a secret's value, and no value is ever read here."""

from __future__ import annotations

import html
import unicodedata
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from shared.credential_state import Line
from shared.credential_state import lines_of as credential_lines
from shared.errors import NotFound
from shared.expiry_warnings import DEFAULT_THRESHOLDS, Exclusion
from shared.inventory import InventoryCredential
from shared.ports import Event, InventoryStore, StateStore, WarningRules
from shared.service import StatusPolicy, status_view
from shared.settings import Settings

MAX_PERIOD_DAYS = 366
DEFAULT_PERIOD_DAYS = 30
NOTHING_NEEDED = "Nothing: every credential is renewed, managed by the rotator, or far from its end."
EVENTS_PER_APP = 500  # a month of a target's audit log is a few dozen events; the cap bounds a runaway one


@dataclass(frozen=True)
class CustomerReport:
    tenant_id: str
    customer: str
    since: datetime
    until: datetime
    lines: tuple[Line, ...]  # soonest end first; credentials without an end last
    targets: tuple[Mapping[str, Any], ...]  # the registered sync apps' status documents (service.status_view)
    activity: tuple[Event, ...]  # the audit events of the period, newest first

    @property
    def needs(self) -> list[str]:
        """What needs the customer, one sentence each."""
        found = []
        for t in self.targets:
            for alert in t.get("alerts") or ():
                found.append(f"Proofpoint sync app {t['appId']}: {ALERT_TEXT.get(alert, alert)}.")
        for line in self.lines:
            if line.needs_customer:
                c = line.credential
                what = f"the {_kind(c)} {_name(c)} of {c.display_name or c.app_id} ({_object(c)})"
                owners = (f"; owner: {', '.join(c.owners)}" if c.owners else
                          "; it has no owner in the tenant: name one, so someone answers for it")
                if line.days_left is not None and line.days_left < 0:
                    found.append(f"Renew or remove {what}: it ended on {_day(c.end)}{owners}.")
                else:
                    found.append(f"Renew {what}: it ends on {_day(c.end)}, in {line.days_left} day(s){owners}.")
        return found

    def app_name(self, app_id: str) -> str:
        """The app's display name as the inventory holds it (its id when unknown; "tenant" for tenant-wide events)."""
        if not app_id:
            return "tenant"
        return next((x.credential.display_name for x in self.lines
                     if x.credential.app_id == app_id and x.credential.display_name), app_id)

    @property
    def counts(self) -> dict[str, int]:
        return {
            "credentials": len(self.lines),
            "expired": sum(1 for x in self.lines if x.days_left is not None and x.days_left < 0),
            "warned": sum(1 for x in self.lines if x.threshold is not None),
            "managed": sum(1 for x in self.lines if x.credential.managed),
            "excluded": sum(1 for x in self.lines if x.exclusion is not None),
            "need you": len(self.needs),
        }


# The dashboard's names for a target's open alerts (service.open_alerts), said for a customer.
ALERT_TEXT = {
    "expired": "its sync secret has expired; Proofpoint no longer receives user changes",
    "unreachable": "the rotator cannot reach the tenant (admin consent withdrawn or permission missing)",
    "app-not-found": "the app registration is gone from the tenant",
    "not-owner": "the rotator is not an owner of the app registration; add it as owner so it can renew the secret",
    "policy-blocked": "a tenant app-management policy refuses new client secrets; an exception is needed",
    "foreign-credential": "someone else added a secret to the app; the rotator leaves it alone",
    "verify-refused": "the new secret was refused when tested",
    "verify-timeout": "the new secret did not start working in time",
    "stuck": "a rotation has not finished; the MSP is looking at it",
    "proofpoint-drift": "Proofpoint holds another secret than the rotator gave it",
    "destination-failing": "a destination refuses the new secret",
    "notify-only-waiting": "the new secret waits to be pasted by hand",
    "needs-human": "the rotator needs a person to act",
}


def lines_of(credentials: Iterable[InventoryCredential], exclusions: Sequence[Exclusion],
             thresholds: Sequence[int], now: datetime, paused_app_ids: Collection[str] = ()) -> tuple[Line, ...]:
    """The report's lines of one tenant's credentials (pure), soonest end first, those without an end last.
    `paused_app_ids`: the apps of disabled targets."""
    lines = credential_lines(credentials, exclusions, thresholds, now, paused_app_ids)
    far = datetime.max.replace(tzinfo=now.tzinfo)
    lines.sort(key=lambda x: (x.credential.end or far, x.credential.display_name.lower(), x.credential.key_id))
    return tuple(lines)


async def gather(state: StateStore, inventory: InventoryStore, rules: WarningRules, tenant_id: str,
                 policy: StatusPolicy, now: datetime, days: int = DEFAULT_PERIOD_DAYS) -> CustomerReport:
    """Read one customer's report from the stores. NotFound (TenantNotFound) when no target of the tenant is
    registered: the report is for customers. `policy`: what the dashboard's status of a target uses too."""
    tenant_id = tenant_id.lower()
    targets = [t for t, _ in await state.list_targets() if t.tenant_id.lower() == tenant_id]
    if not targets:
        raise NotFound(f"no customer with tenant {tenant_id} is registered", code="TenantNotFound")
    since = now - timedelta(days=days)
    exclusions = await rules.exclusions(tenant_id)
    chosen = (await rules.thresholds()).get(tenant_id, DEFAULT_THRESHOLDS)
    lines = lines_of([c async for c in inventory.stream(tenant_id)], exclusions, chosen, now,
                     {t.app_id for t in targets if not t.enabled})
    activity: list[Event] = []
    # Each target's events, the tenant's own ("": thresholds, credential and customer exclusions) and those of the
    # apps an app exclusion names (logged under that app's id).
    for app_id in sorted({t.app_id for t in targets} | {""} | {e.app_id for e in exclusions}):
        activity += [e for e in await state.events(tenant_id, app_id, EVENTS_PER_APP)
                     if e.at is not None and since <= e.at <= now]
    activity.sort(key=lambda e: e.at or now, reverse=True)
    customer = next((t.customer for t in targets if t.customer), "") or next(
        (x.credential.customer for x in lines if x.credential.customer), tenant_id)
    return CustomerReport(tenant_id, customer, since, now, lines, tuple(status_view(t, policy, now) for t in targets),
                          tuple(activity))


def policy_from(settings: Settings) -> StatusPolicy:
    """The status policy the dashboard uses (api.py), from the app settings."""
    return StatusPolicy(renew_before_days=settings.renew_before_days,
                        stuck_after=timedelta(hours=settings.stuck_after_hours))


# ------------------------------------------------------------------------------------------------ words


def _day(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d") if moment else "never"


def _kind(c: InventoryCredential) -> str:
    if c.saml:
        return "SAML signing certificate"
    return "client secret" if c.credential_kind.value == "password" else "certificate"


def _name(c: InventoryCredential) -> str:
    label = c.credential_name or c.hint or c.key_id[:8]
    return f"'{label}'"


def _object(c: InventoryCredential) -> str:
    return "app registration" if c.object_kind.value == "application" else "enterprise app"


def state_of(line: Line) -> str:
    """One word or two for a line's state: the words the API, the export and the dashboard show too."""
    return line.words


def event_text(e: Event) -> str:
    parts = [e.step, e.outcome]
    if e.rotation_id:
        parts.append(f"rotation {e.rotation_id[:8]}")
    if e.error_code:
        parts.append(e.error_code)
    if e.detail:
        parts.append(e.detail)
    return " · ".join(p for p in parts if p)


def _left(days: int | None) -> str:
    return "—" if days is None else str(days)


# ------------------------------------------------------------------------------------------------ HTML

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2rem;color:#1b1b1b}h1{font-size:1.5rem;margin:0}
.sub{color:#555;margin:.2rem 0 1.5rem}table{border-collapse:collapse;width:100%;margin:.5rem 0 1.5rem}
th,td{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}th{background:#f3f3f3}
.num{text-align:right}.expired td{color:#a40000}.warn td{color:#8a5300}.muted td{color:#888}
.needs li{margin:.2rem 0}.counts span{display:inline-block;margin-right:1.2rem}
@media print{body{margin:0}}
"""


def render_html(report: CustomerReport) -> str:
    """The report as one self-contained HTML page (every name from the tenant escaped)."""
    e = html.escape
    counts = report.counts
    out = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>Credential report: {e(report.customer)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Credential report: {e(report.customer)}</h1>",
        f"<p class=sub>Tenant {e(report.tenant_id)} · period {_day(report.since)} to {_day(report.until)}</p>",
        "<p class=counts>" + "".join(f"<span><b>{v}</b> {e(k)}</span>" for k, v in counts.items()) + "</p>",
        "<h2>What needs you</h2>",
    ]
    needs = report.needs
    out.append("<ul class=needs>" + "".join(f"<li>{e(n)}</li>" for n in needs) + "</ul>" if needs
               else f"<p>{NOTHING_NEEDED}</p>")
    out.append("<h2>Credentials</h2><table><thead><tr><th>Object</th><th>Credential</th><th>Kind</th><th>Ends</th>"
               "<th class=num>Days left</th><th>State</th><th>Owners</th></tr></thead><tbody>")
    for line in report.lines:
        c = line.credential
        css = ("muted" if line.exclusion is not None or c.first_party else
               "expired" if line.days_left is not None and line.days_left < 0 and not line.renewed else
               "warn" if line.needs_customer else "")
        out.append(
            f"<tr class='{css}' data-key-id='{e(c.key_id)}'><td>{e(c.display_name or c.app_id)}"
            f"<br><small>{e(_object(c))} · {e(c.app_id)}</small></td><td>{e(c.credential_name or c.hint)}</td>"
            f"<td>{e(_kind(c))}{' (' + e(c.usage) + ')' if c.usage else ''}</td><td>{_day(c.end)}</td>"
            f"<td class=num>{_left(line.days_left)}</td><td>{e(state_of(line))}</td>"
            f"<td>{e(', '.join(c.owners))}</td></tr>")
    if not report.lines:
        out.append("<tr><td colspan=7>The inventory holds no credential of this tenant yet.</td></tr>")
    out.append("</tbody></table><h2>What the rotator did</h2>")
    if report.activity:
        out.append("<table><thead><tr><th>When (UTC)</th><th>App</th><th>What</th><th>Who</th></tr></thead><tbody>")
        for ev in report.activity:
            at = ev.at.strftime("%Y-%m-%d %H:%M") if ev.at else ""
            out.append(f"<tr><td>{at}</td><td>{e(report.app_name(ev.app_id))}</td><td>{e(event_text(ev))}</td>"
                       f"<td>{e(ev.actor)}</td></tr>")
        out.append("</tbody></table>")
    else:
        out.append("<p>Nothing in this period.</p>")
    out.append("</body></html>")
    return "".join(out)


# ------------------------------------------------------------------------------------------------ PDF


# The PDF's fonts ship in the package (shared/fonts/, each licence beside it): DejaVu Sans (Latin, Greek, Cyrillic,
# many symbols, some emoji; Bitstream Vera licence), and for what it lacks Droid Sans Fallback (Chinese, Japanese;
# Apache 2.0) and NanumSquare (Korean Hangul; SIL OFL 1.1). A fallback is loaded only when a report needs it (parsing
# a 4 MB font costs 0.2 s); fpdf2 embeds only the glyphs used (subsetting). A character no font has is drawn as
# U+FFFD, never dropped in silence.
FONTS = Path(__file__).parent / "fonts"
MAIN_FONT, MAIN_BOLD = "DejaVuSans.ttf", "DejaVuSans-Bold.ttf"
FALLBACK_FONTS = {"DroidFallback": "DroidSansFallbackFull.ttf", "Nanum": "NanumSquareR.ttf"}  # tried in this order
MISSING = "\ufffd"


@cache
def font_characters(name: str) -> frozenset[int]:
    """The code points a shipped font draws (read once per process)."""
    from fontTools.ttLib import TTFont  # fpdf2's own dependency

    with TTFont(FONTS / name, lazy=True) as font:
        return frozenset(font.getBestCmap())


def printable(text: str) -> tuple[str, frozenset[str]]:
    """The text as the PDF's fonts can draw it, and the fallback fonts it needs: control characters become spaces,
    an invisible joiner or variation selector no font draws is left out (emoji sequences), any other character no
    font has becomes U+FFFD."""
    main = font_characters(MAIN_FONT)
    out: list[str] = []
    needs: set[str] = set()
    for ch in text:
        code = ord(ch)
        if code in main:
            out.append(ch)
            continue
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            out.append(" ")
            continue
        fallback = next((name for name, file in FALLBACK_FONTS.items() if code in font_characters(file)), None)
        if fallback is not None:
            out.append(ch)
            needs.add(fallback)
        elif unicodedata.category(ch) not in ("Mn", "Cf"):
            out.append(MISSING)
    return "".join(out), frozenset(needs)


def render_pdf(report: CustomerReport) -> bytes:
    """The report as a PDF (A4 landscape) made with fpdf2, in Unicode fonts shipped with the app."""
    from fpdf import FPDF  # imported here: only a report request pays for it
    from fpdf.fonts import FontFace

    grey, red, amber = FontFace(color=(140, 140, 140)), FontFace(color=(164, 0, 0)), FontFace(color=(138, 83, 0))
    title = f"Credential report: {report.customer}"
    summary = (f"Tenant {report.tenant_id} · period {_day(report.since)} to {_day(report.until)} · "
               + ", ".join(f"{v} {k}" for k, v in report.counts.items()))
    needs = [f"- {sentence}" for sentence in report.needs or [NOTHING_NEEDED]]
    credentials: list[tuple[FontFace | None, list[str]]] = []
    for line in report.lines:
        c = line.credential
        style = (grey if line.exclusion is not None or c.first_party else
                 red if line.days_left is not None and line.days_left < 0 and not line.renewed else
                 amber if line.needs_customer else None)
        credentials.append((style, [
            f"{c.display_name or c.app_id} ({_object(c)})", c.credential_name or c.hint,
            _kind(c) + (f" ({c.usage})" if c.usage else ""), _day(c.end), _left(line.days_left), state_of(line),
            ", ".join(c.owners)]))
    activity = [[ev.at.strftime("%Y-%m-%d %H:%M") if ev.at else "", report.app_name(ev.app_id), event_text(ev),
                 ev.actor] for ev in report.activity]
    texts = [title, summary, *needs, *(x for _, row in credentials for x in row), *(x for row in activity for x in row)]
    drawn = {text: printable(text) for text in texts}

    def p(text: str) -> str:
        return drawn[text][0] if text in drawn else printable(text)[0]

    pdf = FPDF(orientation="L", format="A4")
    pdf.add_font("DejaVu", "", str(FONTS / MAIN_FONT))
    pdf.add_font("DejaVu", "B", str(FONTS / MAIN_BOLD))
    needed = [name for name in FALLBACK_FONTS if any(name in fallbacks for _, fallbacks in drawn.values())]
    for name in needed:
        pdf.add_font(name, "", str(FONTS / FALLBACK_FONTS[name]))
    if needed:
        pdf.set_fallback_fonts(needed, exact_match=False)  # bold text too: the fallbacks have no bold
    pdf.set_title(p(title))
    pdf.set_creation_date(report.until)
    pdf.set_auto_page_break(True, margin=12)
    pdf.add_page()
    pdf.set_font("DejaVu", "B", 16)
    pdf.cell(0, 9, p(title), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", "", 9)
    pdf.multi_cell(0, 5, p(summary), new_x="LMARGIN", new_y="NEXT")

    def heading(text: str) -> None:
        pdf.ln(3)
        pdf.set_font("DejaVu", "B", 12)
        pdf.cell(0, 8, text, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("DejaVu", "", 8)

    heading("What needs you")
    for sentence in needs:
        pdf.multi_cell(0, 5, p(sentence), new_x="LMARGIN", new_y="NEXT")
    heading("Credentials")
    with pdf.table(col_widths=(58, 45, 34, 22, 14, 40, 54), text_align="LEFT", line_height=5,
                   headings_style=FontFace(emphasis="BOLD", fill_color=(235, 235, 235))) as table:
        table.row(["Object", "Credential", "Kind", "Ends", "Days", "State", "Owners"])
        for style, row in credentials:
            table.row([p(x) for x in row], style=style)
    heading("What the rotator did")
    if activity:
        with pdf.table(col_widths=(30, 70, 140, 27), text_align="LEFT", line_height=5,
                       headings_style=FontFace(emphasis="BOLD", fill_color=(235, 235, 235))) as table:
            table.row(["When (UTC)", "App", "What", "Who"])
            for row in activity:
                table.row([p(x) for x in row])
    else:
        pdf.cell(0, 6, "Nothing in this period.", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
