// The dashboard: one module, no dependencies, no build step. It reads the same HTTP API as every other client
// (/api/status, /api/targets/{t}/{a}/details, /api/me, /api/approvals) and acts through it (/api/rotations,
// /api/acknowledgements, /api/approvals/{t}/{a}); the API enforces the roles, the page only hides what the caller may
// not do.
// Every value from the API reaches the page as text (textContent / attributes), never as markup.

const REFRESH_MS = 30000;
const PROGRESS_MS = 1000;
const OPERATE = "Rotator.Operate";
const SVG = "http://www.w3.org/2000/svg";
const DAY = 86400000;

// Known statuses with their labels, in the order the counts show them; any other status gets a neutral chip.
const STATUSES = {
  "healthy": "Healthy",
  "due": "Due",
  "expired": "Expired",
  "missing": "Missing",
  "app-not-found": "App not found",
  "unreachable": "Unreachable",
  "not-owner": "Not owner",
  "policy-blocked": "Policy blocked",
  "foreign-credential": "Foreign credential",
  "unknown": "Not checked yet",
};
const STATUS_HELP = {
  "healthy": "The secret lives longer than the renew-before window.",
  "due": "The secret expires within the renew-before window: the next timer pass rotates it.",
  "expired": "The secret has expired: Proofpoint's sync is failing.",
  "missing": "The app registration has no client secret.",
  "app-not-found": "No app registration with this app id in the tenant.",
  "unreachable": "The rotator could not reach the tenant (consent, network or Graph).",
  "not-owner": "The rotator is not an owner of the app registration.",
  "policy-blocked": "An app-management policy blocks adding a secret.",
  "foreign-credential": "A credential the rotator did not make is in use.",
  "unknown": "Not assessed yet: the next check or timer pass will.",
};
const STAGES = ["creating", "pending", "verified", "pushed"];
const STAGE_LABELS = { creating: "Create", pending: "Verify", verified: "Deliver", pushed: "Promote" };
const STAGE_HELP = {
  creating: "creating the secret in Entra ID and Key Vault",
  pending: "waiting for the new secret to get a token",
  verified: "delivering to the destinations",
  pushed: "promoting the new Key Vault version",
};
const ALERT_LABELS = {
  "expired": "expired", "unreachable": "unreachable", "app-not-found": "app not found", "not-owner": "not owner",
  "policy-blocked": "policy blocked", "foreign-credential": "foreign credential", "stuck": "stuck",
  "destination-failing": "destination failing", "proofpoint-drift": "Proofpoint drift",
  "old-key-still-used": "old key still used", "new-key-unused": "new key unused",
  "sign-in-evidence-unreadable": "sign-in log unreadable", "drift-check-unreadable": "Proofpoint settings unreadable",
  "notify-only-waiting": "waiting for acknowledgement",
  "needs-human": "needs a human", "verify-refused": "new secret refused", "verify-timeout": "new secret not working",
  "rotation-forced": "rotated outside change control", "change-control-blocking-expiry": "change control blocks expiry",
  "approval-requested": "approval requested",
};

// Conditions shown beside the status as chips and filterable like a status (the value "flag:<condition>"): what an
// engineer deciding whether an old secret may go must see at once, from the status document's open alerts.
const FLAGS = {
  "old-key-still-used": "Old key still used",
  "proofpoint-drift": "Drift",
};
const FLAG_HELP = {
  "old-key-still-used": "A superseded key still signs in (Entra ID's sign-in log): it is kept until it is quiet.",
  "proofpoint-drift": "Proofpoint's settings do not match the app registration (another app, an unknown secret, a key the rotator did not make, its settings changed by a push).",
};
const flagged = (t, flag) => (t.alerts || []).includes(flag);

const state = {
  targets: [],
  loaded: false,
  me: null,
  sort: { key: "status", dir: 1 },
  status: "",
  search: "",
  selected: null, // "tenant/app" of the open detail panel
  details: null,
  detailsError: null,
  progress: null, // {key, running, result, error}
  actionResult: null, // {key, kind, text}
  proofpointCheck: null, // {key, loading, body, error}: what Proofpoint shows and what a push would send
};

// ---------------------------------------------------------------- helpers

const $ = (id) => document.getElementById(id);

function h(tag, attrs = {}, ...children) {
  const el = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.setAttribute("class", value);
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, {
      credentials: "same-origin",
      headers: { Accept: "application/json", ...(options.body ? { "Content-Type": "application/json" } : {}) },
      ...options,
    });
  } catch {
    throw new ApiError(0, "NetworkError", "the function app did not answer");
  }
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const error = (body && body.error) || {};
    throw new ApiError(response.status, error.code || `HTTP${response.status}`, error.message || response.statusText);
  }
  return body;
}

const keyOf = (t) => `${t.tenantId}/${t.appId}`;
const known = (status) => Object.hasOwn(STATUSES, status);
const statusClass = (status) => (known(status) ? `s-${status}` : "s-other");
const label = (status) => (known(status) ? STATUSES[status] : status);
const canOperate = () => Boolean(state.me && state.me.roles && state.me.roles.includes(OPERATE));

function flagChip(flag) {
  return h("span", { class: `chip flag flag-${flag}`, title: FLAG_HELP[flag], "data-flag": flag }, FLAGS[flag]);
}

function flagChips(t) {
  return Object.keys(FLAGS).filter((f) => flagged(t, f)).map(flagChip);
}

function chip(status) {
  return h("span", { class: `chip ${statusClass(status)}`, title: STATUS_HELP[status] || "", "data-status": status },
    label(status));
}

function date(iso) {
  if (!iso) return "—";
  return new Date(iso).toLocaleDateString("en-GB", { day: "numeric", month: "short", year: "numeric", timeZone: "UTC" });
}

function dateTime(iso) {
  if (!iso) return "—";
  return new Date(iso).toLocaleString("en-GB", {
    day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
    timeZone: "UTC", timeZoneName: "short",
  });
}

function ago(iso) {
  if (!iso) return "";
  const seconds = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (seconds < 0) return "";
  if (seconds < 60) return "just now";
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

function confirmed(t) {
  const total = t.destinations.length;
  const done = t.destinations.filter((d) => d.acknowledged).length;
  return { done, total, rotated: !(t.currentKeyId === null && t.stage === "idle") };
}

function short(id) {
  return id ? `${id.slice(0, 8)}…` : "—";
}

// ---------------------------------------------------------------- loading

async function loadMe() {
  try {
    state.me = await api("/api/me");
  } catch (error) {
    state.me = null;
    if (error.status === 401) showBanner("You are not signed in. Reload the page to sign in again.");
  }
  renderCaller();
}

async function refresh() {
  try {
    const body = await api("/api/status");
    state.targets = body.targets;
    state.loaded = true;
    hideBanner();
    $("updated").textContent = `Updated ${new Date().toLocaleTimeString("en-GB")}`;
  } catch (error) {
    $("updated").textContent = "Update failed";
    if (error.status === 401) showBanner("You are not signed in. Reload the page to sign in again.");
    else if (error.status === 403) showBanner("Your account lacks the Rotator.Read role: ask an administrator of the rotator's app to assign it.");
    else showBanner(`Could not load the status (${error.code}: ${error.message}). Showing the last known state; retrying every ${REFRESH_MS / 1000} s.`);
    state.loadError = error;
  }
  // The open customer's details are read before anything is drawn, so the page never shows a fresh status beside
  // an older stage (a finished rotation's result next to a stepper still at "verified").
  if (state.selected) await loadDetails();
  render();
}

async function loadDetails() {
  const key = state.selected;
  if (!key) return;
  try {
    const details = await api(`/api/targets/${key}/details`);
    if (state.selected !== key) return;
    state.details = details;
    state.detailsError = null;
  } catch (error) {
    if (state.selected !== key) return;
    state.detailsError = error;
  }
  renderDetail();
}

function showBanner(text) {
  const banner = $("banner");
  banner.textContent = text;
  banner.hidden = false;
}

function hideBanner() {
  $("banner").hidden = true;
}

// ---------------------------------------------------------------- the fleet

function visibleTargets() {
  const needle = state.search.trim().toLowerCase();
  return state.targets.filter((t) => {
    if (state.status.startsWith("flag:")) {
      if (!flagged(t, state.status.slice(5))) return false;
    } else if (state.status.startsWith("waiting:")) {
      if (waitingFor(t) !== state.status.slice(8)) return false;
    } else if (state.status && t.status !== state.status) return false;
    if (!needle) return true;
    return [t.customer, t.tenantId, t.appId].some((v) => (v || "").toLowerCase().includes(needle));
  });
}

const STATUS_ORDER = Object.keys(STATUSES);
const severity = (s) => {
  const order = ["expired", "missing", "app-not-found", "not-owner", "policy-blocked", "foreign-credential",
    "unreachable", "due", "unknown", "healthy"];
  const i = order.indexOf(s);
  return i < 0 ? order.length - 2 : i;
};

function sortValue(t, key) {
  switch (key) {
    case "customer": return (t.customer || t.tenantId).toLowerCase();
    case "status": return severity(t.status);
    case "daysLeft": return t.daysLeft ?? Number.POSITIVE_INFINITY;
    case "expires": return t.expires ? Date.parse(t.expires) : Number.POSITIVE_INFINITY;
    case "stage": return t.stage === "idle" ? 99 : STAGES.indexOf(t.stage);
    case "confirmed": { const c = confirmed(t); return c.total ? c.done / c.total : 2; }
    case "lastRotationAt": return t.lastRotationAt ? Date.parse(t.lastRotationAt) : 0;
    case "alerts": return -(t.alerts || []).length;
    case "change": return changeSortValue(t);
    default: return 0;
  }
}

function sorted(targets) {
  const { key, dir } = state.sort;
  return [...targets].sort((a, b) => {
    const x = sortValue(a, key);
    const y = sortValue(b, key);
    if (x < y) return -dir;
    if (x > y) return dir;
    return (a.customer || "").localeCompare(b.customer || "");
  });
}

function renderCounts() {
  const counts = new Map();
  for (const t of state.targets) counts.set(t.status, (counts.get(t.status) || 0) + 1);
  const list = $("counts");
  list.replaceChildren();
  const button = (status, n, text) => h("li", {},
    h("button", {
      type: "button",
      class: `count ${status ? statusClass(status) : "total"}`,
      "aria-pressed": String(state.status === status),
      "data-status": status || "all",
      title: status ? `Show only ${text.toLowerCase()}` : "Show every customer",
      onclick: () => { state.status = state.status === status ? "" : status; $("status-filter").value = state.status; render(); },
    }, h("span", { class: "n" }, n), h("span", { class: "label" }, text)));
  list.append(button("", state.targets.length, "Customers"));
  const statuses = [...STATUS_ORDER.filter((s) => counts.has(s)), ...[...counts.keys()].filter((s) => !known(s)).sort()];
  for (const s of statuses) list.append(button(s, counts.get(s), label(s)));
  const flags = Object.keys(FLAGS).map((f) => [f, state.targets.filter((t) => flagged(t, f)).length]);
  for (const [f, n] of flags) {
    if (!n) continue;
    const item = button(`flag:${f}`, n, FLAGS[f]);
    const b = item.querySelector("button");
    b.className = `count flag flag-${f}`;
    b.dataset.flag = f;
    b.title = `Show only customers with "${FLAGS[f].toLowerCase()}": ${FLAG_HELP[f]}`;
    list.append(item);
  }
  const waits = Object.keys(WAITING).map((w) => [w, state.targets.filter((t) => waitingFor(t) === w).length]);
  for (const [w, n] of waits) {
    if (!n) continue;
    const item = button(`waiting:${w}`, n, WAITING[w]);
    const b = item.querySelector("button");
    b.className = `count waiting waiting-${w}`;
    b.dataset.waiting = w;
    b.title = `Show only customers ${WAITING[w].toLowerCase()}: ${WAITING_HELP[w]}`;
    list.append(item);
  }

  const select = $("status-filter");
  const current = state.status;
  select.replaceChildren(h("option", { value: "" }, "All statuses"),
    ...[...STATUS_ORDER, ...[...counts.keys()].filter((s) => !known(s))].map((s) =>
      h("option", { value: s }, `${label(s)} (${counts.get(s) || 0})`)),
    ...flags.map(([f, n]) => h("option", { value: `flag:${f}` }, `${FLAGS[f]} (${n})`)),
    ...waits.map(([w, n]) => h("option", { value: `waiting:${w}` }, `${WAITING[w]} (${n})`)));
  select.value = current;
}

function daysCell(t, scale) {
  if (t.daysLeft === null || t.daysLeft === undefined) return h("span", { class: "muted" }, "—");
  const fill = h("span");
  fill.style.width = `${Math.max(2, Math.min(100, (Math.max(0, t.daysLeft) / scale) * 100))}%`;
  return h("div", { class: "days" },
    h("span", { class: "num" }, t.daysLeft),
    h("div", { class: `bar ${statusClass(t.status)}`, role: "img", "aria-label": `${t.daysLeft} days left` }, fill));
}

function stageCell(t) {
  if (t.stage === "idle") return h("span", { class: "muted" }, "—");
  return h("span", { class: "stage", title: `since ${dateTime(t.stageSince)}` },
    h("span", { class: "spinner", "aria-hidden": "true" }), `${STAGES.indexOf(t.stage) + 1}/4 ${STAGE_LABELS[t.stage] || t.stage}`);
}

function destinationsCell(t) {
  const c = confirmed(t);
  if (!c.total) return h("span", { class: "muted" }, "none");
  if (!c.rotated) return h("span", { class: "muted", title: "The rotator has not delivered a secret yet" }, `0/${c.total} · not rotated yet`);
  const names = t.destinations.map((d) => `${d.name}: ${d.acknowledged ? "confirmed" : "waiting"}${d.failures ? ` (${d.failures} failed)` : ""}`).join("\n");
  return h("span", { class: c.done === c.total ? "ok-text" : "warn-text", title: names }, `${c.done}/${c.total} confirmed`);
}

function lastRotationCell(t) {
  if (!t.lastRotationAt) return h("span", { class: "muted" }, "never");
  return h("span", { title: dateTime(t.lastRotationAt) }, date(t.lastRotationAt), " ",
    h("span", { class: "muted" }, [t.lastOutcome, ago(t.lastRotationAt)].filter(Boolean).join(" · ")));
}

function alertsCell(t) {
  const alerts = t.alerts || [];
  const tickets = ticketsOf(t);
  if (!alerts.length && !tickets.length) return h("span", { class: "muted" }, "—");
  const rest = tickets.filter((k) => !alerts.includes(k.condition));
  return h("span", {}, alerts.map((a) => h("span", { class: "alert-with-ticket" },
    h("span", { class: "alert-badge" }, ALERT_LABELS[a] || a),
    tickets.filter((k) => k.condition === a).map(ticketLink))), rest.map(ticketLink));
}

function renderFleet() {
  const rows = sorted(visibleTargets());
  const scale = Math.max(180, ...state.targets.map((t) => t.daysLeft || 0));
  const body = $("fleet-body");
  body.replaceChildren(...rows.map((t) => {
    const key = keyOf(t);
    const open = () => openDetail(key);
    return h("tr", {
      tabindex: "0",
      "data-key": key,
      "data-status": t.status,
      class: state.selected === key ? "selected" : null,
      "aria-label": `${t.customer || t.tenantId}: ${label(t.status)}. Open details`,
      onclick: open,
      onkeydown: (event) => rowKey(event, open),
    },
    h("td", { class: "cell-customer", "data-label": "Customer" },
      h("div", { class: "customer-name" }, t.customer || "(no name)"),
      h("div", { class: "ids", title: `tenant ${t.tenantId}\napp ${t.appId}` }, `${short(t.tenantId)} · app ${short(t.appId)}`)),
    h("td", { class: "cell-status", "data-label": "Status" }, chip(t.status), ...flagChips(t), waitingChip(t), t.enabled === false ? h("span", { class: "badge grey" }, " disabled") : null),
    h("td", { "data-label": "Days left" }, daysCell(t, scale)),
    h("td", { class: "nowrap", "data-label": "Expires" }, date(t.expires)),
    h("td", { class: "cell-stage", "data-label": "Rotation" }, stageCell(t)),
    h("td", { class: "cell-change", "data-label": "Change control" }, changeCell(t)),
    h("td", { class: "cell-destinations", "data-label": "Destinations" }, destinationsCell(t)),
    h("td", { "data-label": "Last rotation" }, lastRotationCell(t)),
    h("td", { "data-label": "Alerts" }, alertsCell(t)));
  }));
  for (const th of document.querySelectorAll("#fleet-table th[data-sort]")) {
    th.setAttribute("aria-sort", th.dataset.sort === state.sort.key ? (state.sort.dir > 0 ? "ascending" : "descending") : "none");
  }
  $("fleet-count").textContent = state.loaded ? `${rows.length} of ${state.targets.length}` : "";
  const empty = $("fleet-empty");
  empty.replaceChildren();
  empty.hidden = true;
  if (!state.loaded) {
    empty.hidden = false;
    empty.append(h("strong", {}, state.loadError ? "The status could not be loaded" : "Loading the fleet…"));
  } else if (!state.targets.length) {
    empty.hidden = false;
    empty.append(h("strong", {}, "No customers registered yet"),
      "Register a customer's Proofpoint app with PUT /api/targets/{tenantId}/{appId} or python -m shared targets import; it appears here after the next check.");
  } else if (!rows.length) {
    empty.hidden = false;
    empty.append(h("strong", {}, "No customer matches"), "Nothing fits the status filter and search. ",
      h("button", { type: "button", class: "btn ghost small", onclick: clearFilters }, "Clear filters"));
  }
}

function rowKey(event, open) {
  if (event.key === "Enter" || event.key === " ") {
    event.preventDefault();
    open();
  } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    event.preventDefault();
    const next = event.key === "ArrowDown" ? event.currentTarget.nextElementSibling : event.currentTarget.previousElementSibling;
    if (next) next.focus();
  }
}

function clearFilters() {
  state.status = "";
  state.search = "";
  $("search").value = "";
  $("status-filter").value = "";
  render();
}

// ---------------------------------------------------------------- the timeline

function monthStart(d, offset = 0) {
  return new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + offset, 1));
}

function renderTimeline() {
  const container = $("timeline-chart");
  const empty = $("timeline-empty");
  const targets = visibleTargets().filter((t) => t.expires)
    .sort((a, b) => Date.parse(a.expires) - Date.parse(b.expires));
  const undated = visibleTargets().filter((t) => !t.expires);
  container.replaceChildren();
  empty.hidden = true;
  if (!targets.length) {
    if (state.loaded) {
      empty.hidden = false;
      empty.replaceChildren(h("strong", {}, "Nothing to show"),
        state.targets.length ? "No customer in view has a known expiry yet." : "Customers appear here once registered and checked.");
    }
    return;
  }
  const now = new Date();
  const start = monthStart(now, -1);
  const end = monthStart(now, 24);
  const width = Math.max(560, container.clientWidth - 32);
  const compact = targets.length > 40;
  const narrow = width < 700;
  const left = compact ? 8 : narrow ? 96 : 170;
  const right = 14;
  const laneH = compact ? Math.max(4, Math.min(10, 480 / targets.length)) : 26;
  const top = 62;
  const height = top + targets.length * laneH + 8;
  const x = (t) => left + ((t - start) / (end - start)) * (width - left - right);
  const svg = h("svg:svg", {
    viewBox: `0 0 ${width} ${height}`, width, height, role: "img", class: "timeline-svg",
    "aria-label": `Expiry of ${targets.length} customers' secrets from ${date(start.toISOString())} to ${date(end.toISOString())}`,
  });

  // months: grid, labels, and how many secrets expire in each (the "what expires in March" strip)
  const perMonth = new Map();
  for (const t of targets) {
    const m = monthStart(new Date(t.expires)).getTime();
    perMonth.set(m, (perMonth.get(m) || 0) + 1);
  }
  const maxPerMonth = Math.max(1, ...perMonth.values());
  for (let m = 0; m < 25; m += 1) {
    const from = monthStart(start, m);
    const to = monthStart(start, m + 1);
    const x0 = x(from);
    const x1 = x(to);
    const january = from.getUTCMonth() === 0;
    svg.append(h("svg:line", { x1: x0, x2: x0, y1: 20, y2: height, class: `grid${january ? " year" : ""}` }));
    const name = from.toLocaleDateString("en-GB", { month: "short", timeZone: "UTC" });
    if (!narrow || m % 3 === 0) {
      svg.append(h("svg:text", { x: x0 + 3, y: 12, class: january ? "axis-year" : "axis-label" },
        january ? String(from.getUTCFullYear()) : name));
    }
    const count = perMonth.get(from.getTime()) || 0;
    if (count) {
      const barH = 4 + (count / maxPerMonth) * 16;
      const bar = h("svg:rect", { x: x0 + 1.5, y: 54 - barH, width: Math.max(2, x1 - x0 - 3), height: barH, rx: 2, class: "month-bar",
        "data-month": from.toISOString().slice(0, 7) });
      bar.append(h("svg:title", {}, `${count} secret${count > 1 ? "s" : ""} expire${count > 1 ? "" : "s"} in ${name} ${from.getUTCFullYear()}`));
      svg.append(bar, h("svg:text", { x: (x0 + x1) / 2, y: 50 - barH, "text-anchor": "middle", class: "month-count" }, count));
    }
  }
  const xToday = x(now);
  svg.append(h("svg:line", { x1: xToday, x2: xToday, y1: 16, y2: height, class: "today-line" }),
    h("svg:text", { x: xToday + 4, y: top - 2, class: "today-label" }, "today"));

  targets.forEach((t, i) => {
    const y = top + i * laneH + laneH / 2;
    const name = t.customer || t.tenantId;
    if (!compact) {
      svg.append(h("svg:line", { x1: left, x2: width - right, y1: y, y2: y, class: "lane" }));
      const text = h("svg:text", { x: left - 8, y: y + 4, "text-anchor": "end", class: "lane-label" },
        name.length > (narrow ? 12 : 22) ? `${name.slice(0, narrow ? 11 : 21)}…` : name);
      svg.append(text);
    }
    const expiry = new Date(t.expires);
    const clampedLeft = expiry < start;
    const clampedRight = expiry > end;
    const ex = Math.min(Math.max(x(expiry), left), width - right);
    if (t.plannedRotation) {
      const planned = new Date(t.plannedRotation);
      if (planned >= start && planned <= end) {
        const px = x(planned);
        const r = compact ? 3 : 5;
        svg.append(h("svg:line", { x1: px, x2: ex, y1: y, y2: y, class: "window" }));
        const plan = h("svg:path", { d: `M${px} ${y - r} L${px + r} ${y} L${px} ${y + r} L${px - r} ${y} Z`, class: "plan-mark", "data-key": keyOf(t) });
        plan.append(h("svg:title", {}, `${name}: rotation planned ${date(t.plannedRotation)}`));
        svg.append(plan);
      }
    }
    for (const c of otherCredentialsOf(t)) {
      const cx = Math.min(Math.max(x(new Date(c.end)), left), width - right);
      const other = h("svg:circle", { cx, cy: y, r: compact ? 2 : 3.5, class: "other-credential", "data-key-id": c.keyId });
      other.append(h("svg:title", {}, `${name}: ${c.displayName || c.appId}, ${credentialKind(c)} ends ${date(c.end)}`));
      svg.append(other);
    }
    const when = clampedLeft ? `expired ${date(t.expires)}` : `expires ${date(t.expires)}`;
    const mark = h("svg:g", {
      class: "mark", tabindex: "0", role: "button", "data-key": keyOf(t), "data-status": t.status,
      "aria-label": `${name}: ${when} (${label(t.status)}). Open details`,
      onclick: () => openDetail(keyOf(t)),
      onkeydown: (event) => { if (event.key === "Enter" || event.key === " ") { event.preventDefault(); openDetail(keyOf(t)); } },
    });
    mark.append(h("svg:title", {}, `${name}: ${when}, ${t.daysLeft ?? "?"} days (${label(t.status)})`));
    if (clampedLeft) mark.append(h("svg:path", { d: `M${ex - 1} ${y} l7 -5 v10 z`, class: "clamped-arrow" }));
    if (clampedRight) mark.append(h("svg:path", { d: `M${ex + 1} ${y} l-7 -5 v10 z`, class: "dot s-healthy" }));
    mark.append(h("svg:circle", { cx: ex, cy: y, r: compact ? Math.max(2, laneH / 2) : 6.5, class: `dot ${statusClass(t.status)}` }));
    svg.append(mark);
  });
  container.append(svg);
  if (undated.length) {
    container.append(h("p", { class: "muted" },
      `No known expiry: ${undated.map((t) => `${t.customer || t.tenantId} (${label(t.status)})`).join(", ")}.`));
  }
}

// ---------------------------------------------------------------- one customer

function openDetail(key, { push = true } = {}) {
  if (state.selected !== key) {
    registryControl.delete(key);
    state.details = null;
    state.detailsError = null;
    state.actionResult = null;
    if (!state.progress || state.progress.key !== key) state.progress = null;
  }
  state.selected = key;
  if (push && location.hash !== `#/target/${key}`) history.pushState(null, "", `#/target/${key}`);
  $("detail").hidden = false;
  renderDetail();
  renderFleet();
  $("detail-title").focus();
  loadDetails();
  const tenantId = key.split("/")[0];
  if (creds.tenant.id !== tenantId) loadTenantCredentials(tenantId);
}

function closeDetail({ push = true } = {}) {
  const key = state.selected;
  state.selected = null;
  state.details = null;
  $("detail").hidden = true;
  if (push && location.hash) history.pushState(null, "", location.pathname + location.search);
  renderFleet();
  const row = key && document.querySelector(`#fleet-body tr[data-key="${CSS.escape(key)}"]`);
  if (row) row.focus();
}

function fact(k, v, extra) {
  return h("div", { class: "fact" }, h("div", { class: "k" }, k), h("div", { class: "v" }, v), extra ? h("div", { class: "muted" }, extra) : null);
}

function sectionError(error) {
  return h("p", { class: "section-error" }, `${error.code}: ${error.message}`);
}

function renderDetail() {
  const key = state.selected;
  if (!key) return;
  const summary = state.targets.find((t) => keyOf(t) === key);
  const d = state.details || summary;
  const title = $("detail-title");
  title.replaceChildren((d && d.customer) || "Customer", d ? chip(d.status) : "", ...(d ? flagChips(d) : []), (d && waitingChip(d)) || "");
  const [tenantId, appId] = key.split("/");
  $("detail-ids").textContent = `tenant ${tenantId} · app ${appId}`;
  const body = $("detail-body");
  body.replaceChildren();
  if (state.detailsError && !state.details) {
    body.append(sectionError(state.detailsError));
    return;
  }
  if (!d) {
    body.append(h("p", { class: "muted" }, "Loading…"));
    return;
  }
  body.append(h("div", { class: "facts" },
    fact("Expires", date(d.expires), d.daysLeft !== null && d.daysLeft !== undefined ? `${d.daysLeft} days left` : null),
    fact("Rotation planned", date(d.plannedRotation), d.policy ? `${d.policy.renewBeforeDays} days before expiry` : null),
    fact("Last rotation", d.lastRotationAt ? date(d.lastRotationAt) : "never", d.lastOutcome),
    fact("Last checked", d.checkedAt ? ago(d.checkedAt) || date(d.checkedAt) : "never", d.checkedAt ? dateTime(d.checkedAt) : null)));
  if (d.error) body.append(sectionError(d.error));
  if (d.needsHuman) body.append(h("p", { class: "section-error" }, `Needs a human: ${d.needsHuman}`));
  for (const x of d.destinations || []) {
    // What a drift check found: Proofpoint using another app, a secret matching no credential the rotator made...
    if (x.drift) body.append(h("p", { class: "section-error", "data-drift": x.name }, `Drift at ${x.name}: ${x.drift}`));
  }
  if (d.alerts && d.alerts.length) body.append(h("p", {}, "Open alerts: ", alertsCell(d)));

  body.append(progressSection(d));
  body.append(changeControlSection(d));
  if (canOperate()) body.append(actionsSection(d));
  if (ticketsOf(d).length) body.append(ticketsSection(d));
  if (!state.details) {
    body.append(h("p", { class: "muted" }, "Loading credentials, Key Vault versions and audit trail…"));
    return;
  }
  body.append(destinationsSection(d), proofpointCheckSection(d), entraSection(d), tenantCredentialsSection(d), vaultSection(d),
    auditSection(d));
}

function progressSection(d) {
  const p = state.progress && state.progress.key === keyOf(d) ? state.progress : null;
  const inFlight = d.stage !== "idle";
  const wrap = h("section", { "aria-labelledby": "progress-title", id: "progress", "aria-live": "polite" });
  if (!inFlight && !p) return wrap;
  const index = STAGES.indexOf(d.stage);
  const finished = !inFlight && p && !p.running && p.result && ["rotated"].includes(p.result.result);
  wrap.append(h("h3", { id: "progress-title" }, "Rotation progress"));
  wrap.append(h("ol", { class: "stepper", "data-stage": d.stage },
    STAGES.map((s, i) => h("li", {
      class: finished || (inFlight && i < index) ? "done" : inFlight && i === index ? "now" : null,
      "aria-current": inFlight && i === index ? "step" : null,
    }, STAGE_LABELS[s])),
    h("li", { class: finished ? "done" : null }, "Done")));
  if (inFlight) wrap.append(h("p", { class: "muted" }, `Now ${STAGE_HELP[d.stage] || d.stage} (since ${dateTime(d.stageSince)}).`));
  else if (p && p.running) wrap.append(h("p", { class: "muted" }, "Starting the rotation…"));
  return wrap;
}

function actionsSection(d) {
  const busy = d.stage !== "idle" || Boolean(state.progress && state.progress.running);
  const section = h("section", { class: "action-bar", "aria-label": "Actions" },
    h("button", { type: "button", class: "btn ghost", id: "action-dry-run", disabled: busy, onclick: () => dryRun(d) }, "Dry run"),
    h("button", { type: "button", class: "btn danger", id: "action-rotate", disabled: busy, onclick: () => askRotate(d) }, "Rotate now…"),
    h("button", { type: "button", class: "btn ghost", id: "action-offboard", disabled: Boolean(state.progress && state.progress.running), onclick: () => askOffboard(d) }, "Offboard…"),
    h("span", { class: "muted" }, busy ? "A rotation is in flight." : "A dry run shows what a rotation would do and changes nothing."));
  const wrap = h("div", {}, section);
  const r = state.actionResult && state.actionResult.key === keyOf(d) ? state.actionResult : null;
  if (r) wrap.append(h("p", { class: `action-result ${r.kind}`, id: "action-result", role: "status" }, r.text));
  return wrap;
}

function outcomeText(prefix, outcome) {
  const parts = [`${prefix}: ${outcome.result}`];
  if (outcome.status) parts.push(`status ${outcome.status}`);
  if (outcome.days_left !== null && outcome.days_left !== undefined) parts.push(`${outcome.days_left} days left`);
  if (outcome.error_code) parts.push(outcome.error_code);
  return parts.join(" · ") + (outcome.message ? ` — ${outcome.message}` : "");
}

const GOOD = new Set(["rotated", "healthy", "would-rotate", "acknowledged"]);
const BAD = new Set(["failed", "would-fail", "push-incomplete"]);

async function dryRun(d) {
  const key = keyOf(d);
  state.actionResult = { key, kind: "", text: "Dry run…" };
  renderDetail();
  try {
    const outcome = await api("/api/rotations", { method: "POST", body: JSON.stringify({ tenantId: d.tenantId, appId: d.appId, dryRun: true }) });
    state.actionResult = { key, kind: BAD.has(outcome.result) ? "bad" : "", text: outcomeText("Dry run", outcome) };
  } catch (error) {
    state.actionResult = { key, kind: "bad", text: `Dry run refused: ${error.code}: ${error.message}` };
  }
  renderDetail();
}

function askRotate(d) {
  const dialog = $("confirm");
  const n = d.destinations.length;
  $("confirm-title").textContent = `Rotate ${d.customer || "this customer"}'s secret now?`;
  $("confirm-text").textContent = `A new client secret is created in Entra ID, stored in Key Vault, proven with a token and delivered to ${n} destination${n === 1 ? "" : "s"}. The old secret is retired after the grace period.`;
  $("confirm-force").checked = false;
  dialog.dataset.key = keyOf(d);
  dialog.showModal();
  $("confirm-cancel").focus();
}

// POST /api/targets/{tenant}/{app}/offboard (Rotator.Operate): stop rotating this customer, keep its Key Vault
// versions for the stated retention, optionally remove the rotator from the app's owners and the MSP app from the
// tenant. The answer lists each step; one left to a person carries the command to run.
function askOffboard(d) {
  const dialog = $("offboard");
  $("offboard-title").textContent = `Offboard ${d.customer || "this customer"}?`;
  $("offboard-text").textContent = "The rotator stops rotating this app's secret and removes it from its registry. "
    + "A rotation in flight is undone if nothing was pushed yet, else both secrets stay. "
    + "The secret's Key Vault versions are kept for the retention period, then deleted. Nothing is changed in Proofpoint.";
  $("offboard-owner").checked = false;
  $("offboard-app").checked = false;
  partnerSignIns();
  dialog.dataset.key = keyOf(d);
  dialog.showModal();
  $("offboard-cancel").focus();
}

// The partner sign-ins the MSP app can be removed with: runs a partner admin signed in for on this dashboard
// (GET /api/onboarding/signin) and never started, newest first; the newest is picked. Their sessions are kept 8 hours:
// an older one answers PartnerSessionNotFound, shown as any refusal.
async function partnerSignIns() {
  const select = $("offboard-partner");
  select.replaceChildren(h("option", { value: "" }, "no partner sign-in: show the customer's admin the command"));
  try {
    const runs = (await api(ONBOARDING_API.runs)).runs.filter((r) => r.state === "signed-in");
    for (const r of runs) select.append(h("option", { value: r.runId }, `${r.startedBy} (signed in ${dateTime(r.startedAt)})`));
    if (runs.length) select.value = runs[0].runId;
  } catch (error) {
    // Not fatal: offboarding without it gives the command for the customer's admin.
  }
}

function offboardText(answer) {
  const steps = answer.steps.map((s) => `${s.name}: ${s.outcome}${s.command ? ` (run: ${s.command})` : ""}`);
  return `Offboarded by ${answer.actor}; Key Vault versions kept until ${date(answer.retainedUntil)}. ${steps.join(" · ")}`;
}

async function offboard(key, removeOwner, removeApp, partnerRun) {
  const d = state.targets.find((t) => keyOf(t) === key) || state.details;
  state.actionResult = { key, kind: "", text: "Offboarding…" };
  renderDetail();
  const body = removeApp && partnerRun ? { removeOwner, removeApp, partnerRun } : { removeOwner, removeApp };
  try {
    const answer = await api(`/api/targets/${key}/offboard`, { method: "POST", body: JSON.stringify(body) });
    const failed = answer.steps.some((s) => s.outcome === "failed" || s.outcome === "manual");
    const notice = $("notice");
    notice.className = `action-result ${failed ? "bad" : "good"}`;
    notice.textContent = `${d.customer || key}: ${offboardText(answer)}`;
    notice.hidden = false;
    closeDetail();
  } catch (error) {
    state.actionResult = { key, kind: "bad", text: `Offboarding refused: ${error.code}: ${error.message}` };
    renderDetail();
  }
  await refresh();
}

// POST /api/rotations answers 202 at once (the rotation reserved and queued for a worker) with the rotation's
// id; the page then follows GET /api/rotations/{id} until it rests, showing the stage as the worker moves it.
// A 200 is a final answer: the tenant refused before anything was reserved.
const ROTATION_KIND = { succeeded: "good", failed: "bad", "needs-human": "bad" };
const ROTATION_FOLLOW_MS = 15 * 60 * 1000;

function rotationText(r) {
  const parts = [`Rotation: ${r.state === "succeeded" ? "rotated" : r.state}`];
  if (r.stage && r.stage !== "idle") parts.push(`stage ${r.stage}`);
  if (r.errorCode) parts.push(r.errorCode);
  return parts.join(" · ") + (r.message ? ` — ${r.message}` : "");
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

async function follow(key, accepted) {
  const until = Date.now() + ROTATION_FOLLOW_MS;
  let r = accepted;
  while (!(r.state in ROTATION_KIND) && Date.now() < until) {
    state.actionResult = { key, kind: "", text: r.state === "queued" ? "Rotation queued: a worker takes it in a moment…" : `${rotationText(r)}…` };
    if (state.selected === key) await loadDetails();
    await sleep(PROGRESS_MS);
    r = await api(`/api/rotations/${encodeURIComponent(r.rotationId)}`);
  }
  return r;
}

async function rotate(key, force) {
  const d = state.targets.find((t) => keyOf(t) === key) || state.details;
  state.progress = { key, running: true, result: null };
  state.actionResult = { key, kind: "", text: "Starting the rotation…" };
  renderDetail();
  try {
    const answer = await api("/api/rotations", { method: "POST", body: JSON.stringify({ tenantId: d.tenantId, appId: d.appId, force }) });
    if (answer.rotationId) {
      const r = await follow(key, answer);
      const rested = r.state in ROTATION_KIND;
      state.progress = { key, running: false, result: { result: r.state === "succeeded" ? "rotated" : r.state } };
      state.actionResult = { key, kind: ROTATION_KIND[r.state] || "", text: rested ? rotationText(r) : `${rotationText(r)} — still going: see the audit trail.` };
    } else {
      state.progress = { key, running: false, result: answer };
      state.actionResult = { key, kind: GOOD.has(answer.result) ? "good" : BAD.has(answer.result) ? "bad" : "", text: outcomeText("Rotation", answer) };
    }
  } catch (error) {
    state.progress = null;
    const hint = error.code === "CoolDown" ? " Tick Force to rotate again within the cool-down." : "";
    state.actionResult = { key, kind: "bad", text: `Rotation refused: ${error.code}: ${error.message}.${hint}` };
  }
  await refresh();
}

async function acknowledge(d, destination) {
  const key = keyOf(d);
  try {
    const body = await api("/api/acknowledgements", {
      method: "POST",
      body: JSON.stringify({ tenantId: d.tenantId, appId: d.appId, destination: destination.name, keyId: d.newKeyId }),
    });
    state.actionResult = { key, kind: "good", text: outcomeText(`${destination.name} acknowledged`, body.outcome) };
  } catch (error) {
    state.actionResult = { key, kind: "bad", text: `Acknowledgement refused: ${error.code}: ${error.message}` };
  }
  await refresh();
}

function table(headers, rows, emptyText) {
  if (!rows.length) return h("p", { class: "muted" }, emptyText);
  return h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c) => h("td", {}, c)))))));
}

function destinationsSection(d) {
  const waitingFor = d.stage === "verified" ? d.newKeyId : null;
  const rows = d.destinations.map((x) => {
    // A human acknowledges a notify-only destination, or one held after its push changed other settings (drift).
    const canAck = canOperate() && (x.kind === "notify-only" || x.held) && waitingFor && !x.acknowledged;
    return [
      h("strong", {}, x.name),
      x.kind,
      x.acknowledged ? h("span", { class: "ok-text" }, "confirmed") : h("span", { class: "warn-text" }, x.held ? "held: settings changed" : d.currentKeyId || d.stage !== "idle" ? "waiting" : "not rotated yet"),
      x.acknowledgedAt ? h("span", { title: dateTime(x.acknowledgedAt) }, date(x.acknowledgedAt), " ", h("span", { class: "muted" }, `key ${short(x.acknowledgedKeyId)}`)) : "—",
      x.failures ? h("span", { class: "alert-badge" }, `${x.failures} failed`) : "0",
      x.drift ? h("span", { class: "alert-badge", title: x.drift }, "drift")
        : x.usesKeyId ? h("span", { class: "ok-text", title: d.driftCheckedAt ? `checked ${dateTime(d.driftCheckedAt)}` : "" }, `key ${short(x.usesKeyId)}`)
          : h("span", { class: "muted" }, d.driftCheckedAt ? "not told" : "not checked"),
      canAck ? h("button", { type: "button", class: "btn small", "data-ack": x.name, onclick: () => acknowledge(d, x) }, "Acknowledge") : "",
    ];
  });
  return h("section", {}, h("h3", {}, "Destinations"),
    table(["Destination", "Kind", "Current key", "Acknowledged", "Failed", "Uses", ""], rows, "No destinations registered."));
}

// GET /api/targets/{tenant}/{app}/proofpoint-check (Rotator.Operate): the org's settings as Proofpoint returns them
// and the PUT a push would send, secrets hidden by the API; shown as text only (textContent), never as markup.
async function checkProofpoint(d) {
  const key = keyOf(d);
  state.proofpointCheck = { key, loading: true, body: null, error: null };
  renderDetail();
  try {
    const body = await api(`/api/targets/${key}/proofpoint-check`);
    state.proofpointCheck = { key, loading: false, body, error: null };
  } catch (error) {
    state.proofpointCheck = { key, loading: false, body: null, error };
  }
  if (state.selected === key) renderDetail();
}

function proofpointCheckSection(d) {
  if (!canOperate() || !d.destinations.some((x) => x.kind === "proofpoint")) return "";
  const c = state.proofpointCheck && state.proofpointCheck.key === keyOf(d) ? state.proofpointCheck : null;
  const section = h("section", { id: "proofpoint-check", "aria-live": "polite" }, h("h3", {}, "Proofpoint check"),
    h("div", { class: "action-bar" },
      h("button", { type: "button", class: "btn ghost", id: "action-proofpoint-check", disabled: Boolean(c && c.loading), onclick: () => checkProofpoint(d) }, "Check Proofpoint"),
      h("span", { class: "muted" }, "Reads the org's Azure AD sync settings and shows the PUT a push would send; changes nothing.")));
  if (!c) return section;
  if (c.loading) section.append(h("p", { class: "muted" }, "Reading Proofpoint…"));
  else if (c.error) section.append(sectionError(c.error));
  else {
    for (const entry of c.body.destinations) {
      section.append(h("h4", {}, `${entry.name} · ${entry.domain}`, entry.stack ? ` · ${entry.stack}` : ""));
      if (entry.error) {
        section.append(h("p", { class: "section-error", "data-check-error": entry.name }, `${entry.error.code}: ${entry.error.message}`));
        continue;
      }
      section.append(
        h("p", { class: "muted" }, `GET ${entry.url} (as Proofpoint returned it, secrets hidden)`),
        h("pre", { class: "check-json", "data-check": "get" }, JSON.stringify(entry.get, null, 2)),
        h("p", { class: "muted" }, `PUT a push would send (changing ${entry.changes.join(", ")})`),
        h("pre", { class: "check-json", "data-check": "put" }, JSON.stringify(entry.put, null, 2)),
        h("ul", { class: "notes" }, entry.notes.map((n) => h("li", {}, n))));
    }
  }
  return section;
}

// Who made a credential, as far as anyone can tell: the rotator (its display name carries the rotation id), or
// someone else (the portal's FIX, a person); and whether Proofpoint demonstrably uses it (its reported expiry).
function madeBy(c) {
  return c.madeByRotator ? h("span", { class: "badge", title: c.displayName }, "rotator")
    : h("span", {}, h("span", { class: "badge grey", title: c.displayName || "" }, "someone else"),
      c.displayName ? h("div", { class: "muted small" }, c.displayName) : "");
}

// A credential's first or last sign-in from the last sign-in evidence read (Entra ID's sign-in log), or why there is
// none: never read (read only while a superseded key waits to retire), or the tenant cannot say (no licence, no
// permission: its reason).
function signInCell(d, c, which) {
  const e = d.signInEvidence;
  if (!e) return h("span", { class: "muted", title: "Entra ID's sign-in log is read while a superseded key waits for retirement" }, "not read");
  if (which === "lastSignIn" && c.lastSignIn && c.lastSignInFrom === "report") {
    // Beyond the log's window (or a tenant that refuses the log): the day Entra's credential activity report states.
    return h("span", { title: `${date(c.lastSignIn)}: from Entra's credential activity report (a day, not the exact time)`, "data-signin": which, "data-signin-from": "report" }, date(c.lastSignIn), h("span", { class: "muted" }, " from the report"));
  }
  if (!e.available) return h("span", { class: "muted", "data-signin": "unavailable", title: e.code || "" }, `not available: ${e.reason || e.code || "the tenant does not say"}`);
  const at = c[which];
  if (!at) return h("span", { class: "muted", title: `read ${dateTime(e.readAt)}` }, `none since ${date(e.since)}`);
  const where = which === "lastSignIn" && c.lastSignInIp ? ` from ${c.lastSignInIp}` : "";
  if (which === "firstSignIn" && c.firstSignInBy === "rotator-probe") {
    // The rotator's own verify probe (before or right at the push), not a destination using the key.
    return h("span", { title: `${dateTime(at)}: the rotator's own check of the new key (read ${dateTime(e.readAt)})`, "data-signin": which, "data-signin-by": "rotator-probe" }, dateTime(at), h("span", { class: "muted" }, " rotator's check"));
  }
  // The log is read from `since` only: a key made before it may have signed in earlier, so its first sign-in in the
  // read is not its first ever, and is said to be the first since then.
  const earlier = which === "firstSignIn" && e.since && (!c.start || new Date(c.start) < new Date(e.since));
  const since = earlier ? h("span", { class: "muted", "data-signin-since": e.since }, ` (first since ${date(e.since)})`) : "";
  return h("span", { title: `${dateTime(at)}${where} (read ${dateTime(e.readAt)})`, "data-signin": which }, dateTime(at), where ? h("span", { class: "muted" }, where) : "", since);
}

function entraSection(d) {
  const e = d.entra;
  const section = h("section", {}, h("h3", {}, "Credentials in Entra ID", e.displayName ? h("span", { class: "muted" }, ` · ${e.displayName}`) : ""));
  if (e.error) section.append(sectionError(e.error));
  const roleBadge = { current: ["in use", "green"], "rolling-out": ["rolling out", ""], superseded: ["superseded", "grey"] };
  const rows = e.credentials.map((c) => [
    h("code", {}, c.hint ? `${c.hint}…` : "—"),
    madeBy(c),
    date(c.start),
    h("span", { title: dateTime(c.end) }, date(c.end), " ", c.expired ? h("span", { class: "alert-badge" }, "expired") : h("span", { class: "muted" }, `${c.daysLeft} d`)),
    signInCell(d, c, "firstSignIn"),
    signInCell(d, c, "lastSignIn"),
    h("span", {},
      c.role ? h("span", { class: `badge ${roleBadge[c.role][1]}` }, roleBadge[c.role][0]) : "",
      (c.usedBy || []).length ? h("span", { class: "badge green", "data-used-by": c.usedBy.join(","), title: "Its expiry is the one Proofpoint reports" }, `${c.usedBy.join(", ")} uses it`) : ""),
  ]);
  const t = table(["Hint", "Made by", "Created", "Expires", "First sign-in", "Last sign-in", ""], rows, e.error ? "" : "The app registration has no client secret.");
  t.id = "entra-credentials";
  section.append(t);
  return section;
}

function vaultSection(d) {
  const v = d.keyVault;
  const section = h("section", {}, h("h3", {}, "Key Vault versions ", h("span", { class: "muted" }, h("code", {}, v.secretName))));
  if (v.error) section.append(sectionError(v.error));
  section.append(table(["Version", "Created", "Expires", "Tags"], v.versions.map((x) => [
    h("code", { title: x.version }, short(x.version)),
    date(x.created),
    date(x.expires),
    h("span", {}, Object.entries(x.tags).map(([k, val]) => h("span", { class: "tag" }, `${k}=${k.endsWith("-id") && val.length > 12 ? short(val) : val}`)),
      x.enabled ? null : h("span", { class: "badge grey" }, "disabled")),
  ]), v.error ? "" : "No version yet: the rotator stores one with each rotation."));
  return section;
}

function auditSection(d) {
  const good = new Set(["ok", "done", "rotated", "acknowledged", "healthy", "stored", "verified", "delivered", "removed"]);
  const bad = (e) => e.errorCode || /fail|error|refused|timeout/i.test(e.outcome || "");
  const items = d.events.map((e) => h("li", { class: bad(e) ? "bad" : good.has(e.outcome) ? "ok" : null },
    h("div", { class: "when" }, dateTime(e.at), e.actor ? ` · ${e.actor}` : "", e.durationMs ? ` · ${e.durationMs} ms` : ""),
    h("div", {}, h("span", { class: "what" }, e.step), " ", e.outcome, e.errorCode ? h("span", { class: "alert-badge" }, e.errorCode) : ""),
    e.detail ? h("div", { class: "muted" }, e.detail) : null,
    e.rotationId ? h("div", { class: "muted" }, `rotation ${short(e.rotationId)}`) : null));
  return h("section", {}, h("h3", {}, "Audit trail ", h("span", { class: "muted" }, `(${d.events.length} newest)`)),
    items.length ? h("ol", { class: "audit" }, items) : h("p", { class: "muted" }, "No events yet."));
}

// ---------------------------------------------------------------- onboarding customers (issue 23)
// The partner admin signs in (GET /api/onboarding/signin: Entra's sign-in of the partner tenant, back through
// /api/onboarding/callback, which makes a run in the state `signed-in` holding the partner session and sends the
// browser to #/onboarding/run/{runId}); the page then lists the GDAP customers with the admin's roles in each and what
// the chosen install method still needs, starts the run for those picked and shows each tenant's steps as they happen
// (the run's progress document, every second while it runs); a failed tenant names its cause and fix, and the run
// can be resumed (or signed in again when its session has ended). The routes are bulk onboarding's (docs/api.md).
const ONBOARDING_API = {
  runs: "/api/onboarding/runs",
  run: (runId) => `/api/onboarding/runs/${encodeURIComponent(runId)}`,
  customers: (runId, method) => `/api/onboarding/runs/${encodeURIComponent(runId)}/customers?method=${encodeURIComponent(method)}`,
  start: (runId) => `/api/onboarding/runs/${encodeURIComponent(runId)}/start`,
  resume: (runId) => `/api/onboarding/runs/${encodeURIComponent(runId)}/resume`,
  session: (runId) => `/api/onboarding/runs/${encodeURIComponent(runId)}/session`,
};

const ONBOARD_STEPS = ["roles", "install", "owner", "register", "dry-run"];
const ONBOARD_STEP_LABELS = { roles: "GDAP roles", install: "Install app", owner: "Owner", register: "Register", "dry-run": "Dry run" };
const TENANT_STATES = { pending: "Waiting", running: "Running", done: "Done", failed: "Failed", skipped: "Onboarded already" };
const INSTALL_METHODS = {
  "partner-center": "Partner Center application consent, then its Graph permissions (as CIPP does)",
  graph: "Graph under GDAP: create the service principal, assign its Graph permissions",
};
// The answers that mean "the partner admin must sign in (again)": no partner session for this operator, or it ended.
const PARTNER_SIGN_IN_CODES = new Set(["PartnerSessionNotFound", "NotSignedIn", "invalid_grant", "SignInExpired"]);
const RUN_ID = /^[0-9a-f]{32}$/;

const onboarding = {
  open: false,
  runId: null,
  customers: null, // {admin, customers: [...]}
  customersError: null,
  picked: new Set(),
  method: "partner-center", // as the command line's default: the consent also lets the admin's token into the tenant
  planOnly: false,
  keepSession: false, // keep the partner sign-in in Key Vault after the run (for later resumes), until forgotten
  forgotten: false,
  driving: false, // a start or resume request is working on the run
  run: null,
  runError: null, // the progress could not be read
  actionError: null, // the last start or resume was refused (kept until the next one)
  timer: null,
  runs: null, // the latest runs (GET /api/onboarding/runs), to find one again and resume it
  runsNext: null, // the cursor of the next (older) page of runs, null on the last
  runsError: null,
};

const signInHref = (runId) => `/api/onboarding/signin${runId ? `?run=${encodeURIComponent(runId)}` : ""}`;
const needsPartnerSignIn = (error) => Boolean(error) && (PARTNER_SIGN_IN_CODES.has(error.code) || error.status === 428);

// The page's views: the fleet (its cards carry data-view="fleet"), onboarding customers, approvals.
const VIEW_NAV = { fleet: "nav-fleet", onboarding: "nav-onboarding", approvals: "nav-approvals" };

function showView(name) {
  for (const el of document.querySelectorAll('[data-view="fleet"]')) el.hidden = name !== "fleet";
  $("onboarding").hidden = name !== "onboarding";
  $("approvals").hidden = name !== "approvals";
  for (const [view, id] of Object.entries(VIEW_NAV)) {
    if (view === name) $(id).setAttribute("aria-current", "page");
    else $(id).removeAttribute("aria-current");
  }
}

function openOnboarding(runId) {
  const wasOpen = onboarding.open;
  onboarding.open = true;
  if (state.selected) closeDetail({ push: false });
  showView("onboarding");
  if (runId !== onboarding.runId) {
    onboarding.runId = runId;
    onboarding.run = null;
    onboarding.runError = null;
    onboarding.actionError = null;
    onboarding.forgotten = false;
    onboarding.customers = null;
    onboarding.customersError = null;
    onboarding.picked = new Set();
  }
  renderOnboarding();
  if (!wasOpen) $("onboarding").focus();
  if (runId) loadRun();
  else loadRuns();
}

// GET /api/onboarding/runs, a page at a time (newest first): "Older runs" asks for the next page by its cursor.
async function loadRuns(older = false) {
  try {
    const url = older ? `${ONBOARDING_API.runs}?cursor=${encodeURIComponent(onboarding.runsNext)}` : ONBOARDING_API.runs;
    const page = await api(url);
    onboarding.runs = older ? [...onboarding.runs, ...page.runs] : page.runs;
    onboarding.runsNext = page.next;
    onboarding.runsError = null;
  } catch (error) {
    onboarding.runsError = error;
  }
  if (onboarding.open && !onboarding.runId) renderOnboarding();
}

function runsSection() {
  const section = h("section", { class: "onboard-runs", "aria-labelledby": "runs-title" }, h("h3", { id: "runs-title" }, "Latest runs"));
  if (onboarding.runsError) section.append(errorBox(onboarding.runsError));
  else if (!onboarding.runs) section.append(h("p", { class: "muted" }, "Loading…"));
  else if (!onboarding.runs.length) section.append(h("p", { class: "muted" }, "No onboarding run yet."));
  else section.append(h("div", { class: "table-wrap" }, h("table", { id: "onboard-runs" },
    h("thead", {}, h("tr", {}, ["Started", "Partner admin", "Run", "Tenants", ""].map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, onboarding.runs.map((r) => {
      const c = r.counts;
      return h("tr", { "data-run": r.runId, "data-state": r.state },
        h("td", {}, dateTime(r.startedAt)),
        h("td", {}, r.startedBy),
        h("td", {}, r.state, r.planOnly ? h("span", { class: "badge grey" }, " plan only") : ""),
        h("td", {}, c.total ? `${c.done} done · ${c.failed} failed · ${c.skipped} onboarded already · ${c.pending + c.running} not finished` : "no customer picked yet"),
        h("td", {}, h("a", { href: `#/onboarding/run/${r.runId}` }, c.failed || c.pending || c.running ? "Open to resume" : "Open")));
    })))));
  if (onboarding.runs && onboarding.runsNext) {
    section.append(h("button", { type: "button", class: "btn ghost", id: "older-runs", onclick: () => loadRuns(true) }, "Older runs"));
  }
  return section;
}

function closeOnboarding() {
  onboarding.open = false;
  onboarding.runId = null;
  clearTimeout(onboarding.timer);
  showView("fleet");
}

async function loadCustomers() {
  const runId = onboarding.runId;
  onboarding.customersError = null;
  try {
    const customers = await api(ONBOARDING_API.customers(runId, onboarding.method));
    if (onboarding.runId !== runId) return;
    onboarding.customers = customers;
    const known = new Set(onboarding.customers.customers.map((c) => c.tenantId));
    onboarding.picked = new Set([...onboarding.picked].filter((t) => known.has(t)));
  } catch (error) {
    onboarding.customers = null;
    onboarding.customersError = error;
  }
  if (onboarding.open && onboarding.runId === runId) renderOnboarding();
}

async function loadRun() {
  const runId = onboarding.runId;
  clearTimeout(onboarding.timer);
  try {
    const run = await api(ONBOARDING_API.run(runId));
    if (onboarding.runId !== runId) return;
    onboarding.run = run;
    onboarding.runError = null;
    // Signed in, nothing picked yet: the customers to pick from, with the admin's roles in each.
    if (run.state === "signed-in" && !onboarding.driving && !onboarding.customers) await loadCustomers();
  } catch (error) {
    if (onboarding.runId !== runId) return;
    onboarding.runError = error;
  }
  if (!onboarding.open || onboarding.runId !== runId) return;
  renderOnboarding();
  // Progress as it happens: every second while the run works, then the fleet picks up what it registered.
  if (onboarding.driving || (onboarding.run && onboarding.run.state === "running")) onboarding.timer = setTimeout(loadRun, PROGRESS_MS);
  else if (onboarding.run) refresh();
}

// Work happens inside the start and resume requests (each for up to 150 s; 202 while the run goes on), so the page
// drives the run: it calls resume again while the answer says `running`, and meanwhile reads the progress every
// second to show each tenant as it happens.
async function drive(first) {
  const runId = onboarding.runId;
  onboarding.driving = true;
  onboarding.actionError = null;
  loadRun();
  try {
    let doc = await first();
    while (doc && doc.state === "running" && onboarding.runId === runId && onboarding.open) {
      onboarding.run = doc;
      doc = await api(ONBOARDING_API.resume(runId), { method: "POST", body: "{}" });
    }
    if (doc && onboarding.runId === runId) onboarding.run = doc;
  } catch (error) {
    if (onboarding.runId === runId) onboarding.actionError = error;
  } finally {
    onboarding.driving = false;
  }
  if (onboarding.runId === runId) loadRun();
}

function startRun() {
  const all = onboarding.customers.customers;
  const picked = all.filter((c) => onboarding.picked.has(c.tenantId)).map((c) => c.tenantId);
  if (!picked.length) return;
  const body = JSON.stringify({ tenants: picked.length === all.length ? "all" : picked, method: onboarding.method, planOnly: onboarding.planOnly, keepSession: onboarding.keepSession });
  onboarding.picked = new Set();
  drive(() => api(ONBOARDING_API.start(onboarding.runId), { method: "POST", body }));
}

async function forgetSession() {
  const runId = onboarding.runId;
  try {
    await api(ONBOARDING_API.session(runId), { method: "DELETE" });
    if (onboarding.runId === runId) onboarding.forgotten = true;
  } catch (error) {
    if (onboarding.runId === runId) onboarding.actionError = error;
  }
  renderOnboarding();
}

// Any run that may hold the partner admin's sign-in (a refresh token in Key Vault) offers to forget it: one signed in
// for and not started, one not finished (a tab closed mid-run), one kept at the admin's request. Unforgotten, a run's
// sign-in expires 8 hours after it was made (a kept one after 90 days) and the daily sweep deletes it.
function forgetSessionBar(run) {
  const why = run.keepSession
    ? "This run keeps the partner admin's sign-in (a refresh token) in Key Vault so that it can be resumed later."
    : "Until this run finishes, the partner admin's sign-in (a refresh token) is kept in Key Vault, at most 8 hours; forget it if you leave the run here.";
  return h("div", { class: "action-bar" },
    onboarding.forgotten
      ? h("span", { class: "ok-text", id: "session-forgotten" }, "The sign-in was deleted from Key Vault.")
      : h("button", { type: "button", class: "btn ghost", id: "forget-session", onclick: forgetSession }, run.keepSession ? "Forget the kept sign-in" : "Forget the sign-in"),
    h("span", { class: "muted" }, why));
}

function resumeRun() {
  drive(() => api(ONBOARDING_API.resume(onboarding.runId), { method: "POST", body: "{}" }));
}

function partnerSignInCard(runId, why, code) {
  return h("div", { class: "signin-card", id: "partner-sign-in", "data-code": code || null },
    h("h3", {}, runId ? "Sign in with your partner account to resume" : "Sign in with your partner account"),
    h("p", {}, why || "A partner admin of the MSP's tenant signs in once. The rotator then lists every customer you have an active GDAP relationship with, and onboards the ones you pick in your name: each change in a customer tenant is in its audit trail with your account."),
    h("p", { class: "muted" }, "Entra ID's sign-in page opens; the rotator keeps no password and, unless you ask, no token after the run."),
    h("a", { class: "btn", id: "partner-sign-in-link", href: signInHref(runId) }, runId ? "Sign in and resume" : "Sign in with the partner account"));
}

function errorBox(error) {
  return h("p", { class: "section-error", "data-code": error.code }, `${error.code}: ${error.message}`);
}

function customersSection() {
  const section = h("section", { class: "onboard-customers" });
  if (onboarding.customersError) {
    if (needsPartnerSignIn(onboarding.customersError)) {
      section.append(partnerSignInCard(onboarding.runId, "The partner sign-in has ended: sign in again.", onboarding.customersError.code));
    } else {
      section.append(errorBox(onboarding.customersError), partnerSignInCard(null, "Sign in again with the partner account, or try again later."));
    }
    return section;
  }
  if (!onboarding.customers) {
    section.append(h("p", { class: "muted" }, "Reading the partner relationships…"));
    return section;
  }
  const { admin, customers } = onboarding.customers;
  section.append(h("p", { class: "signed-in-as" }, "Partner admin: ",
    h("strong", { id: "partner-admin" }, (typeof admin === "string" ? admin : admin && (admin.userPrincipalName || admin.displayName)) || "signed in"), " · ",
    h("a", { href: signInHref(null) }, "sign in as someone else")));
  if (onboarding.run) section.append(forgetSessionBar(onboarding.run));
  if (!customers.length) {
    section.append(h("div", { class: "empty" }, h("strong", {}, "No customer with an active GDAP relationship"),
      "The partner tenant has no active GDAP relationship this account can see. Create one in Partner Center, then sign in again."));
    return section;
  }
  // A registered customer whose targets are all disabled (paused, or its offboarding not finished) is not onboarded:
  // it can be picked, and the run says what to do with it.
  const choosable = customers.filter((c) => !c.registered || c.disabled);
  const allPicked = choosable.length > 0 && choosable.every((c) => onboarding.picked.has(c.tenantId));
  const pickAll = h("input", {
    type: "checkbox", id: "pick-all", checked: allPicked, "aria-label": "Pick every customer not onboarded yet",
    onchange: (event) => {
      onboarding.picked = event.target.checked ? new Set(choosable.map((c) => c.tenantId)) : new Set();
      renderOnboarding();
    },
  });
  const rows = customers.map((c) => {
    const box = h("input", {
      type: "checkbox", "data-pick": c.tenantId, checked: onboarding.picked.has(c.tenantId),
      "aria-label": `Onboard ${c.customer || c.tenantId}`,
      onchange: (event) => {
        if (event.target.checked) onboarding.picked.add(c.tenantId);
        else onboarding.picked.delete(c.tenantId);
        renderOnboarding();
      },
    });
    return h("tr", { "data-tenant": c.tenantId, class: c.registered ? "registered" : null },
      h("td", {}, box),
      h("td", {}, h("div", { class: "customer-name" }, c.customer || "(no name)"), h("div", { class: "ids" }, c.tenantId)),
      h("td", {}, c.roles.length ? c.roles.map((r) => h("span", { class: "badge" }, r)) : h("span", { class: "muted" }, "no role for you")),
      h("td", { "data-missing": c.missingRoles.join(",") }, c.missingRoles.length
        ? c.missingRoles.map((r) => h("span", { class: "alert-badge", title: `Add ${r} to the GDAP relationship with ${c.customer}, assigned to a security group you are in` }, `needs ${r}`))
        : h("span", { class: "ok-text" }, "none")),
      h("td", {}, c.disabled
        ? h("span", { class: "alert-badge", title: "Registered but disabled: paused, or its offboarding did not finish. Finish the offboarding, or re-enable the target" }, "disabled")
        : c.registered ? h("span", { class: "badge green" }, "onboarded") : h("span", { class: "muted" }, "not yet")));
  });
  const count = onboarding.picked.size;
  const method = h("select", {
    id: "install-method",
    onchange: (event) => { onboarding.method = event.target.value; loadCustomers(); },
  }, Object.entries(INSTALL_METHODS).map(([value, text]) => h("option", { value, selected: value === onboarding.method }, text)));
  const missingPicked = customers.filter((c) => onboarding.picked.has(c.tenantId) && c.missingRoles.length).length;
  section.append(
    h("div", { class: "table-wrap" }, h("table", { id: "onboard-customers" },
      h("thead", {}, h("tr", {},
        h("th", { scope: "col" }, pickAll),
        h("th", { scope: "col" }, "Customer"),
        h("th", { scope: "col" }, "Your GDAP roles"),
        h("th", { scope: "col" }, "Missing for this method"),
        h("th", { scope: "col" }, "Rotator"))),
      h("tbody", {}, rows))),
    h("div", { class: "action-bar" },
      h("label", { class: "select" }, h("span", { class: "field-label" }, "Install method "), method),
      h("label", { class: "check" }, h("input", { type: "checkbox", id: "plan-only", checked: onboarding.planOnly,
        onchange: (event) => { onboarding.planOnly = event.target.checked; } }), "Plan only (check roles and Proofpoint orgs; change nothing)"),
      h("label", { class: "check" }, h("input", { type: "checkbox", id: "keep-session", checked: onboarding.keepSession,
        onchange: (event) => { onboarding.keepSession = event.target.checked; } }), "Keep my sign-in after the run (in Key Vault, for later resumes, until forgotten)"),
      h("button", { type: "button", class: "btn", id: "start-onboarding", disabled: !count, onclick: startRun },
        `Onboard ${count} customer${count === 1 ? "" : "s"}`),
      missingPicked ? h("span", { class: "warn-text" }, `${missingPicked} picked lack a GDAP role: they will stop at the roles step, naming it`) : null),
    onboarding.actionError ? (needsPartnerSignIn(onboarding.actionError) ? partnerSignInCard(onboarding.runId, "The partner sign-in has ended: sign in again.", onboarding.actionError.code) : errorBox(onboarding.actionError)) : "");
  return section;
}

function stepPill(step) {
  const s = step.state || "pending";
  const text = `${ONBOARD_STEP_LABELS[step.step] || step.step}: ${s}${step.detail ? ` · ${step.detail}` : ""}`;
  return h("li", { class: `step ${s}`, "data-step": step.step, "data-state": s, title: text },
    h("span", { class: "visually-hidden" }, text), h("span", { "aria-hidden": "true" }, ONBOARD_STEP_LABELS[step.step] || step.step));
}

function tenantRow(t) {
  const dry = t.steps.find((x) => x.step === "dry-run");
  const cells = [
    h("td", {}, h("div", { class: "customer-name" }, t.customer || "(no name)"), h("div", { class: "ids" }, t.tenantId)),
    h("td", {}, h("span", { class: `chip t-${t.state}`, "data-state": t.state }, TENANT_STATES[t.state] || t.state)),
    h("td", {}, h("ol", { class: "steps", "aria-label": "Steps" }, t.steps.map(stepPill))),
  ];
  const outcome = h("td", { class: "outcome" });
  if (t.error) {
    outcome.append(
      h("div", { class: "tenant-error", "data-code": t.error.code }, h("strong", {}, t.error.code), ": ", t.error.message),
      t.error.fix ? h("div", { class: "fix" }, h("strong", {}, "Fix: "), t.error.fix) : null);
  }
  if (dry && dry.state !== "pending" && dry.detail) outcome.append(h("div", { class: "dry-run", "data-dry-run": dry.state }, h("strong", {}, "Dry run: "), dry.detail));
  if (t.appId && (t.state === "done" || t.state === "skipped")) {
    outcome.append(h("a", { href: `#/target/${t.tenantId}/${t.appId}`, class: "open-target" }, "Open in the fleet"));
  }
  if (!outcome.childNodes.length) outcome.append(h("span", { class: "muted" }, t.state === "running" ? "working…" : "—"));
  return h("tr", { "data-tenant": t.tenantId, "data-state": t.state }, ...cells, outcome);
}

function runSection() {
  const section = h("section", { class: "onboard-run" });
  const run = onboarding.run;
  if (!run) {
    section.append(onboarding.runError ? errorBox(onboarding.runError) : h("p", { class: "muted" }, "Loading the run…"));
    return section;
  }
  const c = run.counts;
  const finished = c.done + c.failed + c.skipped;
  const meter = h("div", { class: "bar run-bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": String(c.total), "aria-valuenow": String(finished), "aria-label": "Tenants finished" }, h("span"));
  meter.firstChild.style.width = `${c.total ? Math.round((finished / c.total) * 100) : 0}%`;
  section.append(
    h("div", { class: "facts" },
      fact("Run", run.state, run.planOnly ? "plan only: nothing changed" : INSTALL_METHODS[run.method] || run.method),
      fact("Started by", run.startedBy, dateTime(run.startedAt)),
      fact("Tenants", `${finished} of ${c.total} finished`, `${c.done} done · ${c.failed} failed · ${c.skipped} onboarded already`),
      run.finishedAt ? fact("Finished", date(run.finishedAt), dateTime(run.finishedAt)) : null),
    meter,
    h("p", { id: "run-summary", class: "run-summary", "data-state": run.state },
      run.state === "signed-in" ? "Starting: recording the customers picked…" :
      run.state === "running" ? `Working: ${c.running} running, ${c.pending} waiting.` :
        c.failed ? `Finished: ${c.failed} tenant${c.failed === 1 ? "" : "s"} need${c.failed === 1 ? "s" : ""} a fix (below), then resume.` : "Finished: every tenant is onboarded."),
    h("div", { class: "table-wrap" }, h("table", { id: "onboard-run" },
      h("thead", {}, h("tr", {}, ["Customer", "State", "Steps", "Outcome"].map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, run.tenants.map(tenantRow)))));
  const canResume = canOperate() && run.state !== "signed-in" && (c.failed > 0 || c.pending > 0 || run.state === "running");
  if (canResume) {
    section.append(h("div", { class: "action-bar" },
      h("button", { type: "button", class: "btn", id: "resume-run", disabled: onboarding.driving, onclick: resumeRun }, onboarding.driving ? "Working…" : "Resume"),
      h("span", { class: "muted" }, "Runs every tenant not finished again from its first step not done; what is done is skipped."),
      h("a", { href: signInHref(run.runId), class: "btn ghost small", id: "resume-sign-in" }, "Sign in again and resume")));
  }
  if (onboarding.actionError) {
    section.append(needsPartnerSignIn(onboarding.actionError)
      ? partnerSignInCard(run.runId, "The partner sign-in of this run has ended (no token is kept after a run): sign in again to resume it.", onboarding.actionError.code)
      : errorBox(onboarding.actionError));
  }
  if (onboarding.runError) section.append(errorBox(onboarding.runError));
  if (canOperate() && (run.keepSession || run.state !== "finished")) section.append(forgetSessionBar(run));
  section.append(h("p", {}, h("a", { href: "#/onboarding" }, "Onboard more customers")));
  return section;
}

// The view is redrawn whole (every second while a run works, at each pick): the control that had the focus gets it
// back, so a keyboard user picking customers or waiting on Resume is not sent to the top of the page.
function focusKey(el) {
  if (!el || !$("onboarding-body").contains(el)) return null;
  if (el.dataset && el.dataset.pick) return `[data-pick="${CSS.escape(el.dataset.pick)}"]`;
  return el.id ? `#${CSS.escape(el.id)}` : null;
}

function renderOnboarding() {
  const body = $("onboarding-body");
  const focused = focusKey(document.activeElement);
  if (!canOperate()) {
    body.replaceChildren(h("p", { class: "section-error" }, "Onboarding changes customer tenants: it needs the Rotator.Operate role."));
    return;
  }
  if (!onboarding.runId) body.replaceChildren(partnerSignInCard(null), runsSection());
  else if (onboarding.run && onboarding.run.state === "signed-in" && !onboarding.driving) body.replaceChildren(customersSection());
  else body.replaceChildren(runSection());
  const again = focused && body.querySelector(focused);
  if (again) again.focus();
  // One persistent live region says what changed (a run's summary), not the whole table every second.
  const summary = $("run-summary");
  const said = summary ? summary.textContent : "";
  if ($("onboarding-status").textContent !== said) $("onboarding-status").textContent = said;
}

function renderOnboardingNav() {
  $("nav-onboarding").hidden = !canOperate();
}

// ---------------------------------------------------------------- all credentials (the inventory, issue 25)

// The inventory can hold millions of rows across a fleet: the view asks the server for a window (ending within N
// days, kind, managed, excluded) and holds at most CREDENTIAL_CAP rows; sorting and searching work on those.
const CREDENTIAL_PAGE = 1000;
const CREDENTIAL_CAP = 5000;
// The API says each credential's state (`state`, `stateText`: shared/credential_state.py), in the words the
// customer report uses: the view never works it out again, so the two cannot disagree.
const CREDENTIAL_STATES = {
  expired: "Expired", due: "Inside a warning", paused: "Rotation disabled", "expired-renewed": "Expired, renewed",
  renewed: "Renewed", healthy: "Not yet due", rotated: "Managed by the rotator", microsoft: "Microsoft's",
  snoozed: "Snoozed", excluded: "Excluded",
};
const CREDENTIAL_HELP = {
  expired: "Its end has passed and nothing newer replaces it",
  due: "Inside one of the customer's warning thresholds (default 60, 30, 14, 7, 1 days)",
  paused: "A registered target's app whose rotation is disabled: nobody renews it by itself",
  "expired-renewed": "Its end has passed; a newer credential of the same app outlives it (remove the old one)",
  renewed: "Inside a warning threshold, but a newer credential of the same app outlives it",
  healthy: "Outside every warning threshold, or no end",
  rotated: "A registered target's app: the rotator renews its sync secret",
  microsoft: "A Microsoft first-party service principal's or a managed identity's: Microsoft renews it",
  snoozed: "A snooze covers it until a date: listed, no warning",
  excluded: "An exclusion covers it: listed, no warning",
};
const creds = {
  rows: [], loaded: false, error: null, truncated: false, state: "", search: "",
  sort: { key: "daysLeft", dir: 1 },
  tenant: { id: null, rows: [], error: null, loaded: false }, // the open customer's other credentials
};

function credentialState(c) {
  return c.state in CREDENTIAL_STATES ? c.state : "healthy";
}

function credentialChip(c) {
  const s = credentialState(c);
  // An exclusion's reason is shown under the chip: the chip says only which kind covers it.
  const words = c.excluded ? CREDENTIAL_STATES[s] : c.stateText || CREDENTIAL_STATES[s];
  return h("span", { class: `chip s-${s}`, title: CREDENTIAL_HELP[s], "data-state": s }, words);
}

function credentialKind(c) {
  if (c.saml) return `SAML certificate${c.usage ? ` (${c.usage})` : ""}`;
  if (c.credentialKind === "password") return "Client secret";
  return `Certificate${c.usage ? ` (${c.usage})` : ""}`;
}

async function fetchInventory(params, cap) {
  const rows = [];
  let cursor = null;
  do {
    const query = new URLSearchParams({ ...params, limit: String(CREDENTIAL_PAGE) });
    if (cursor) query.set("cursor", cursor);
    const body = await api(`/api/inventory?${query}`);
    rows.push(...body.credentials);
    cursor = body.next;
  } while (cursor && rows.length < cap);
  return { rows, truncated: Boolean(cursor) };
}

function credentialParams() {
  const params = {};
  const pick = (id, name) => { const v = $(id).value; if (v) params[name] = v; };
  pick("credentials-window", "daysLeft");
  pick("credentials-kind", "kind");
  pick("credentials-managed", "managed");
  pick("credentials-excluded", "excluded");
  return params;
}

async function loadCredentials() {
  const asked = JSON.stringify(credentialParams());
  try {
    const found = await fetchInventory(credentialParams(), CREDENTIAL_CAP);
    if (JSON.stringify(credentialParams()) !== asked) return; // the filters changed meanwhile: a newer load wins
    creds.rows = found.rows;
    creds.truncated = found.truncated;
    creds.error = null;
  } catch (error) {
    creds.error = error;
  }
  creds.loaded = true;
  renderCredentials();
  renderTimeline();
}

function visibleCredentials() {
  const needle = creds.search.trim().toLowerCase();
  return creds.rows.filter((c) => {
    if (creds.state && credentialState(c) !== creds.state) return false;
    if (!needle) return true;
    return [c.customer, c.tenantId, c.displayName, c.appId, c.credentialName, c.hint, c.keyId, ...(c.owners || [])]
      .some((v) => (v || "").toLowerCase().includes(needle));
  });
}

const CREDENTIAL_ORDER = Object.keys(CREDENTIAL_STATES);

function credentialSortValue(c, key) {
  switch (key) {
    case "customer": return (c.customer || c.tenantId).toLowerCase();
    case "app": return (c.displayName || c.appId).toLowerCase();
    case "kind": return credentialKind(c);
    case "daysLeft": return c.daysLeft ?? Number.POSITIVE_INFINITY;
    case "end": return c.end ? Date.parse(c.end) : Number.POSITIVE_INFINITY;
    case "state": return CREDENTIAL_ORDER.indexOf(credentialState(c));
    case "owners": return (c.owners || []).join(", ").toLowerCase() || "\uffff";
    default: return 0;
  }
}

function sortedCredentials(rows) {
  const { key, dir } = creds.sort;
  return [...rows].sort((a, b) => {
    const x = credentialSortValue(a, key);
    const y = credentialSortValue(b, key);
    if (x < y) return -dir;
    if (x > y) return dir;
    return (a.daysLeft ?? Infinity) - (b.daysLeft ?? Infinity);
  });
}

function renderCredentialStates() {
  const counts = new Map();
  for (const c of creds.rows) counts.set(credentialState(c), (counts.get(credentialState(c)) || 0) + 1);
  const button = (s, n, text) => h("li", {}, h("button", {
    type: "button", class: `count ${s ? `s-${s}` : "total"}`, "aria-pressed": String(creds.state === s),
    "data-state": s || "all", title: s ? CREDENTIAL_HELP[s] : "Every credential in the window",
    onclick: () => { creds.state = creds.state === s ? "" : s; renderCredentials(); },
  }, h("span", { class: "n" }, n), h("span", { class: "label" }, text)));
  $("credentials-states").replaceChildren(button("", creds.rows.length, "Credentials"),
    ...CREDENTIAL_ORDER.filter((s) => counts.has(s)).map((s) => button(s, counts.get(s), CREDENTIAL_STATES[s])));
}

function reportLinks(tenantId) {
  return h("span", { class: "report-links" },
    h("a", { href: `/api/reports/${tenantId}`, target: "_blank", rel: "noopener", title: "The customer's credential report" }, "Report"),
    " · ",
    h("a", { href: `/api/reports/${tenantId}?format=pdf`, title: "The same report as a PDF" }, "PDF"));
}

function credentialRow(c, { compact = false } = {}) {
  const ex = c.excluded;
  const why = ex ? `${ex.kind === "snooze" ? "Snoozed" : "Excluded"} by ${ex.by}${ex.until ? ` until ${date(ex.until)}` : ""}: ${ex.why}` : null;
  return h("tr", {
    class: ex ? "excluded" : null, "data-key-id": c.keyId, "data-state": credentialState(c), title: why,
  },
  compact ? null : h("td", { class: "cell-customer", "data-label": "Customer" },
    h("div", { class: "customer-name" }, c.customer || "(no name)"),
    h("div", { class: "ids" }, short(c.tenantId), " · ", reportLinks(c.tenantId))),
  h("td", { "data-label": "Application" },
    h("div", {}, c.displayName || "(no name)"),
    h("div", { class: "ids", title: `appId ${c.appId}\nobject ${c.objectId}` },
      `${c.objectKind === "application" ? "app registration" : "enterprise app"} · ${short(c.appId)}`)),
  h("td", { "data-label": "Credential" }, h("div", {}, credentialKind(c)),
    h("div", { class: "ids", title: `key ${c.keyId}` }, [c.credentialName, c.hint].filter(Boolean).join(" · ") || short(c.keyId))),
  h("td", { class: "num", "data-label": "Days left", title: c.end ? `ends ${date(c.end)}` : "no end" }, c.daysLeft ?? "—"),
  compact ? null : h("td", { class: "nowrap", "data-label": "Ends" }, c.end ? date(c.end) : "never"),
  h("td", { "data-label": "State" }, credentialChip(c),
    c.managed && c.state !== "rotated" ? h("span", { class: "badge green", title: "A registered target's app: the rotator renews its sync secret" }, "managed") : null,
    ex ? h("div", { class: "muted exclusion-why" }, why) : null),
  compact ? null : h("td", { "data-label": "Owners" }, (c.owners || []).join(", ") || h("span", { class: "muted" }, "—")));
}

function renderCredentials() {
  renderCredentialStates();
  const rows = sortedCredentials(visibleCredentials());
  $("credentials-body").replaceChildren(...rows.map((c) => credentialRow(c)));
  for (const th of document.querySelectorAll("#credentials-table th[data-sort]")) {
    th.setAttribute("aria-sort", th.dataset.sort === creds.sort.key ? (creds.sort.dir > 0 ? "ascending" : "descending") : "none");
  }
  $("credentials-count").textContent = creds.loaded
    ? `${rows.length} of ${creds.rows.length}${creds.truncated ? ` (the first ${creds.rows.length}: narrow the filters for the rest)` : ""}` : "";
  const empty = $("credentials-empty");
  empty.replaceChildren();
  empty.hidden = true;
  if (creds.error) {
    empty.hidden = false;
    empty.append(h("strong", {}, "The inventory could not be loaded"), `${creds.error.code}: ${creds.error.message}`);
  } else if (!creds.loaded) {
    empty.hidden = false;
    empty.append(h("strong", {}, "Loading the credentials…"));
  } else if (!rows.length) {
    empty.hidden = false;
    empty.append(h("strong", {}, "No credential matches"),
      creds.rows.length ? "Nothing fits the state and search." : "The inventory holds none in this window: it fills after the daily inventory pass.");
  }
}

async function loadTenantCredentials(tenantId) {
  creds.tenant = { id: tenantId, rows: [], error: null, loaded: false };
  try {
    const found = await fetchInventory({ tenantId }, CREDENTIAL_CAP);
    if (creds.tenant.id !== tenantId) return;
    creds.tenant = { id: tenantId, rows: found.rows, error: null, loaded: true };
  } catch (error) {
    if (creds.tenant.id !== tenantId) return;
    creds.tenant = { id: tenantId, rows: [], error, loaded: true };
  }
  if (state.selected && state.selected.startsWith(`${tenantId}/`)) renderDetail();
}

function tenantCredentialsSection(d) {
  const section = h("section", { id: "tenant-credentials" },
    h("h3", {}, "The tenant's other credentials ", reportLinks(d.tenantId)));
  const t = creds.tenant;
  if (t.id !== d.tenantId || !t.loaded) {
    section.append(h("p", { class: "muted" }, "Loading…"));
    return section;
  }
  if (t.error) {
    section.append(sectionError(t.error));
    return section;
  }
  const others = sortedCredentials(t.rows.filter((c) => c.appId !== d.appId));
  if (!others.length) {
    section.append(h("p", { class: "muted" }, "None: the inventory holds no other credential of this tenant (yet)."));
    return section;
  }
  section.append(h("div", { class: "table-wrap" }, h("table", { class: "credentials" },
    h("thead", {}, h("tr", {}, ["Application", "Credential", "Days", "State"].map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, others.map((c) => credentialRow(c, { compact: true }))))));
  return section;
}

function otherCredentialsOf(t) {
  // What the timeline plots beside a customer's sync secret: the loaded window's credentials of its tenant.
  if (!$("timeline-others").checked) return [];
  return creds.rows.filter((c) => c.tenantId === t.tenantId && c.appId !== t.appId && c.end && !c.excluded);
}

function wireCredentials() {
  $("credentials-search").addEventListener("input", (event) => { creds.search = event.target.value; renderCredentials(); });
  for (const id of ["credentials-window", "credentials-kind", "credentials-managed", "credentials-excluded"]) {
    $(id).addEventListener("change", () => { creds.loaded = false; renderCredentials(); loadCredentials(); });
  }
  for (const th of document.querySelectorAll("#credentials-table th[data-sort]")) {
    th.querySelector("button").addEventListener("click", () => {
      const key = th.dataset.sort;
      creds.sort = { key, dir: creds.sort.key === key ? -creds.sort.dir : 1 };
      renderCredentials();
    });
  }
  $("timeline-others").addEventListener("change", () => renderTimeline());
}

// ---------------------------------------------------------------- change control, approvals and tickets (issue 26)
// Per customer (its policy's changeControl): mode auto (a due rotation goes ahead), window (only inside the
// customer's maintenance windows, in its time zone) or approval (a due rotation waits for Approve, Postpone to a date
// or Reject). The status document says what a due rotation waits for (`rotationWaiting`), the next window and the
// approval request; GET /api/approvals lists the requests and POST /api/approvals/{tenantId}/{appId} decides one
// (Rotator.Operate; 409 once it is no longer pending; an approval reserves the rotation at once). Near expiry a
// rotation is forced (`forceOn`) unless the customer is set to never force. The status carries the mode
// (`changeMode`); the windows, time zone and force settings are the registry's (GET /api/targets/{t}/{a}), read when
// a customer not in auto mode is opened. Tickets (`tickets`: one per open condition in the MSP's PSA) link to the PSA.

const WAITING = { approval: "Waiting for approval", window: "Waiting for window" };
const WAITING_HELP = {
  approval: "A rotation is due; the customer's change control wants an approval first (Approvals, or the signed link in the alert).",
  window: "A rotation is due; the customer's change control allows it only inside its maintenance window.",
};
const MODES = { auto: "Auto", window: "Window", approval: "Approval" };
const MODE_HELP = {
  auto: "A due rotation goes ahead at the next pass.",
  window: "A due rotation goes ahead only inside the customer's maintenance windows.",
  approval: "A due rotation waits for an approval.",
};
const APPROVAL_STATES = { pending: "Pending", approved: "Approved", postponed: "Postponed", rejected: "Rejected" };
const DECISIONS = {
  approve: { title: "Approve", button: "Approve", kind: "" },
  postpone: { title: "Postpone", button: "Postpone", kind: "" },
  reject: { title: "Reject", button: "Reject", kind: "danger" },
};
const DAY_NAMES = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

const waitingFor = (t) => (t.rotationWaiting && Object.hasOwn(WAITING, t.rotationWaiting) ? t.rotationWaiting : "");
const modeOf = (t) => t.changeMode || "auto";
const ticketsOf = (t) => (Array.isArray(t.tickets) ? t.tickets.filter((k) => k && (k.number || k.url)) : []);
const windowStart = (t) => (t.nextWindow && t.nextWindow.start) || null; // the next window's opening (UTC)
const windowZone = (t) => (t.nextWindow && t.nextWindow.timeZone) || null;
// Who decided: the audit actor ("manual:<the operator's UPN>") shown as the person.
const person = (actor) => (actor || "").replace(/^manual:/, "");

// A customer's change control as the registry holds it (policy.changeControl), by "tenant/app": read when its view
// opens (null while loading, an ApiError when it could not be read).
const registryControl = new Map();
const changeControlOf = (t) => {
  const c = registryControl.get(keyOf(t));
  return c && !(c instanceof Error) ? c : null;
};

async function loadChangeControl(key) {
  registryControl.set(key, null);
  try {
    const doc = await api(`/api/targets/${key}`);
    registryControl.set(key, (doc.policy && doc.policy.changeControl) || { mode: "auto" });
  } catch (error) {
    registryControl.set(key, error);
  }
  if (state.selected === key) renderDetail();
}

function waitingChip(t) {
  const w = waitingFor(t);
  if (!w) return null;
  return h("span", { class: `chip waiting waiting-${w}`, title: WAITING_HELP[w], "data-waiting": w }, WAITING[w]);
}

// An instant in the customer's own time zone ("Sat 12 Dec, 22:00 GMT"); the zone's name where the browser lacks it.
function zoned(iso, timeZone) {
  if (!iso) return "—";
  const options = { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", timeZoneName: "short" };
  try {
    return new Date(iso).toLocaleString("en-GB", { ...options, timeZone: timeZone || "UTC" });
  } catch {
    return `${new Date(iso).toLocaleString("en-GB", { ...options, timeZone: "UTC" })} (${timeZone})`;
  }
}

function dayList(days) {
  const picked = DAY_NAMES.filter((d) => (days || []).includes(d));
  const name = (d) => d[0].toUpperCase() + d.slice(1);
  if (picked.length === 7) return "Every day";
  const first = DAY_NAMES.indexOf(picked[0]);
  const run = picked.length > 2 && picked.every((d, i) => DAY_NAMES.indexOf(d) === first + i);
  return run ? `${name(picked[0])}–${name(picked[picked.length - 1])}` : picked.map(name).join(", ");
}

// A window as the customer set it; one whose end is at or before its start crosses midnight (equal: 24 hours).
function windowText(w) {
  const note = w.end === w.start ? " (24 hours)" : w.end < w.start ? " (to the next day)" : "";
  return `${dayList(w.days)} ${w.start}–${w.end}${note}`;
}

function changeSortValue(t) {
  const w = waitingFor(t);
  if (w === "approval") return 0;
  if (w === "window") return 1;
  return { approval: 2, window: 3, auto: 4 }[modeOf(t)] ?? 5;
}

function changeCell(t) {
  const mode = modeOf(t);
  if (mode === "auto") return h("span", { class: "muted", title: MODE_HELP.auto, "data-mode": mode }, "auto");
  const badge = h("span", { class: `badge mode mode-${mode}`, title: MODE_HELP[mode] || "", "data-mode": mode }, MODES[mode] || mode);
  if (mode === "window") {
    const start = windowStart(t);
    return h("span", {}, badge, start
      ? h("span", { class: "muted next-window", "data-next-window": start, title: `next window opens ${dateTime(start)} (${windowZone(t)})` }, `next ${zoned(start, windowZone(t))}`)
      : h("span", { class: "muted" }, "no window"));
  }
  if (mode === "approval" && t.approval && t.approval.status === "postponed" && t.approval.until) {
    return h("span", {}, badge, " ", h("span", { class: "muted" }, `postponed to ${date(t.approval.until)}`));
  }
  return badge;
}

// A ticket in the MSP's PSA: its number, linking to the ticket when the desk gave an http(s) address.
function ticketLink(k) {
  let href = null;
  try {
    const url = new URL(k.url);
    if (url.protocol === "https:" || url.protocol === "http:") href = url.href;
  } catch {
    href = null;
  }
  const number = k.number ? String(k.number) : "";
  const text = number ? `${number.startsWith("#") ? "" : "#"}${number}` : "ticket";
  const title = `${ALERT_LABELS[k.condition] || k.condition}: ticket ${number} in the PSA`;
  return href
    ? h("a", { class: "ticket", href, target: "_blank", rel: "noopener noreferrer", title, "data-ticket": number, "data-condition": k.condition,
      onclick: (event) => event.stopPropagation() }, text)
    : h("span", { class: "ticket", title, "data-ticket": number, "data-condition": k.condition }, text);
}

function ticketsSection(d) {
  const rows = ticketsOf(d).map((k) => [ALERT_LABELS[k.condition] || k.condition, ticketLink(k),
    (d.alerts || []).includes(k.condition) ? h("span", { class: "warn-text" }, "open") : h("span", { class: "muted" }, "resolved: closing")]);
  const section = h("section", { id: "tickets" }, h("h3", {}, "Tickets"), table(["Condition", "Ticket", "Condition now"], rows, ""));
  return section;
}

function changeControlSection(d) {
  const key = keyOf(d);
  const mode = modeOf(d);
  if (mode !== "auto" && !registryControl.has(key)) loadChangeControl(key);
  const cc = changeControlOf(d);
  const section = h("section", { id: "change-control", "data-mode": mode }, h("h3", {}, "Change control"));
  const facts = [fact("Mode", MODES[mode] || mode, MODE_HELP[mode])];
  if (mode === "window") {
    const start = windowStart(d);
    facts.push(fact("Next window", start ? zoned(start, windowZone(d)) : "none", start ? `${dateTime(start)}` : null));
    if (cc) facts.push(fact("Windows", h("span", { class: "windows" }, (cc.windows || []).map((w) => h("span", { class: "window-text" }, windowText(w)))), cc.timeZone));
  }
  if (mode === "approval" && cc) facts.push(fact("Time zone", cc.timeZone || "UTC", "of the customer's dates"));
  if (mode !== "auto") {
    const never = cc ? cc.neverForce : !d.forceOn;
    facts.push(fact("Forced", never ? "never" : d.forceOn ? date(d.forceOn) : `${cc ? cc.forceDaysBeforeExpiry : "?"} days before expiry`,
      never ? "an expiring secret raises a loud alert every day instead" : `${cc ? `${cc.forceDaysBeforeExpiry} days before expiry, ` : ""}outside the window or without approval, with an alert`));
  }
  const loadError = registryControl.get(key);
  section.append(h("div", { class: "facts" }, facts));
  if (loadError instanceof Error) section.append(sectionError(loadError));
  const w = waitingFor(d);
  const request = d.approval && d.approval.requestId;
  if (w && !request) section.append(h("p", { class: "waiting-text", "data-waiting": w }, waitingChip(d), " ", WAITING_HELP[w]));
  if (request) section.append(approvalBlock({ ...d.approval, tenantId: d.tenantId, appId: d.appId, customer: d.customer }));
  const r = state.actionResult && state.actionResult.key === keyOf(d) && state.actionResult.approval ? state.actionResult : null;
  if (r) section.append(h("p", { class: `action-result ${r.kind}`, id: "approval-result", role: "status" }, r.text));
  return section;
}

function decisionText(a) {
  if (a.status === "pending") return "waiting for a decision";
  const parts = [`${APPROVAL_STATES[a.status] || a.status} by ${person(a.decidedBy) || "?"}`];
  if (a.decidedAt) parts.push(dateTime(a.decidedAt));
  if (a.until) parts.push(`until ${date(a.until)}`);
  return parts.join(" · ") + (a.reason ? ` — ${a.reason}` : "");
}

function approvalChip(status) {
  return h("span", { class: `chip a-${status}`, "data-approval": status }, APPROVAL_STATES[status] || status);
}

// One approval request in the customer view, with its actions for an operator while it is pending.
function approvalBlock(a) {
  return h("div", { class: "approval", "data-request": a.requestId, "data-approval": a.status },
    h("div", {}, h("strong", {}, "Approval "), approvalChip(a.status),
      h("span", { class: "muted" }, ` requested ${dateTime(a.requestedAt)}${a.expires ? ` · the secret expires ${date(a.expires)}` : ""}`)),
    h("div", { class: "muted decision" }, decisionText(a)),
    a.status === "pending" && canOperate() ? decisionButtons(a) : null);
}

function decisionButtons(a) {
  const who = a.customer || a.tenantId;
  const button = (action, cls, text) => h("button", {
    type: "button", class: cls, "data-decide": action, "aria-label": `${text} ${who}'s rotation…`, onclick: () => askDecision(a, action),
  }, `${text}…`);
  return h("div", { class: "decision-buttons", role: "group", "aria-label": `Decide on ${who}'s rotation` },
    button("approve", "btn small", "Approve"), button("postpone", "btn ghost small", "Postpone"),
    button("reject", "btn ghost small danger-text", "Reject"));
}

const approvals = { open: false, status: "pending", rows: null, error: null, result: null };

function isoDay(offsetDays) {
  const d = new Date(Date.now() + offsetDays * DAY);
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
}

function askDecision(a, action) {
  const dialog = $("decide");
  const what = DECISIONS[action];
  const who = a.customer || a.tenantId;
  $("decide-title").textContent = `${what.title} ${who}'s rotation?`;
  $("decide-text").textContent = {
    approve: `The due rotation of ${who}'s sync secret is reserved and goes ahead now: a new secret in Entra ID, Key Vault, Proofpoint and the portal. Audited with your name.`,
    postpone: `The rotation waits until the date you pick; then a new approval is requested.${a.forceOn ? ` It is still forced on ${date(a.forceOn)}, before the secret expires.` : ""}`,
    reject: `The rotation does not happen for this secret. ${a.forceOn ? `It is still forced on ${date(a.forceOn)}, before the secret expires.` : "The customer is set to never force: the expiring secret raises an alert every day."}`,
  }[action];
  $("decide-until-field").hidden = action !== "postpone";
  $("decide-until").value = "";
  $("decide-until").min = isoDay(1);
  $("decide-reason").value = "";
  $("decide-reason").required = action === "reject";
  $("decide-reason-label").textContent = action === "reject" ? "Reason (required, kept in the audit trail)" : "Note (optional, kept in the audit trail)";
  $("decide-error").hidden = true;
  $("decide-hint").hidden = true;
  const confirm = $("decide-confirm");
  confirm.textContent = what.button;
  confirm.className = `btn ${what.kind}`;
  dialog.dataset.action = action;
  decision.pending = a;
  dialog.showModal();
  (action === "approve" ? $("decide-cancel") : action === "postpone" ? $("decide-until") : $("decide-reason")).focus();
}

const decision = { pending: null, busy: false };

// A postponement past the force day does not hold the rotation past it (expiry is never let through silently): said
// as the date is picked.
function forceDayHint() {
  const a = decision.pending;
  const day = $("decide-until").value;
  const hint = $("decide-hint");
  const past = Boolean(a && a.forceOn && day && `${day}T00:00:00Z` > a.forceOn);
  hint.textContent = past ? `The rotation is forced on ${date(a.forceOn)}, before this date: it goes ahead then, with an alert.` : "";
  hint.hidden = !past;
}

function decideError(text) {
  const p = $("decide-error");
  p.textContent = text;
  p.hidden = false;
}

async function sendDecision() {
  const a = decision.pending;
  const action = $("decide").dataset.action;
  if (!a || decision.busy) return;
  const body = { requestId: a.requestId, action };
  const reason = $("decide-reason").value.trim();
  if (action === "postpone") {
    const day = $("decide-until").value;
    if (!day) return decideError("Pick the date the rotation waits until.");
    if (day < isoDay(1)) return decideError("Pick a date after today.");
    body.until = day; // the API takes a date as that day's start in UTC: the rotation may go ahead from then
  }
  if (action === "reject" && !reason) return decideError("Say why: the reason is kept with the decision and in the customer's audit trail.");
  if (reason) body.reason = reason;
  decision.busy = true;
  $("decide-confirm").disabled = true;
  const key = `${a.tenantId}/${a.appId}`;
  try {
    const answer = await api(`/api/approvals/${a.tenantId}/${a.appId}`, { method: "POST", body: JSON.stringify(body) });
    const done = answer.approval;
    const going = answer.outcome && answer.outcome.result === "reserved" ? " The rotation is reserved and queued." : "";
    const text = `${a.customer || a.tenantId}: ${APPROVAL_STATES[done.status] || done.status} by ${person(done.decidedBy)}${done.until ? ` until ${date(done.until)}` : ""}.${going}`;
    approvals.result = { kind: "good", text };
    state.actionResult = { key, kind: "good", text, approval: true };
    $("decide").close("done");
  } catch (error) {
    if (error.status === 400 || error.status === 422) {
      decideError(`${error.code}: ${error.message}`);
      return;
    }
    // 409: decided meanwhile (by someone else, or a signed link), or a newer request replaced it: the lists are read again.
    const text = `${a.customer || a.tenantId}: not recorded: ${error.code}: ${error.message}`;
    approvals.result = { kind: "bad", text };
    state.actionResult = { key, kind: "bad", text, approval: true };
    $("decide").close("refused");
  } finally {
    decision.busy = false;
    $("decide-confirm").disabled = false;
  }
  decision.pending = null;
  if (approvals.open) await loadApprovals();
  await refresh();
}

function renderApprovalsNav() {
  const n = state.targets.filter((t) => waitingFor(t) === "approval").length;
  const badge = $("nav-approvals-count");
  badge.textContent = String(n);
  badge.hidden = !n;
  $("nav-approvals").title = n ? `${n} customer${n === 1 ? "" : "s"} waiting for approval` : "No rotation waiting for approval";
}

function openApprovals() {
  const wasOpen = approvals.open;
  approvals.open = true;
  if (state.selected) closeDetail({ push: false });
  showView("approvals");
  renderApprovals();
  if (!wasOpen) $("approvals").focus();
  loadApprovals();
}

function closeApprovals() {
  approvals.open = false;
  approvals.result = null;
  showView("fleet");
}

async function loadApprovals() {
  const status = approvals.status;
  try {
    const body = await api(status === "all" ? "/api/approvals" : `/api/approvals?status=${encodeURIComponent(status)}`);
    if (approvals.status !== status) return;
    approvals.rows = body.approvals;
    approvals.error = null;
  } catch (error) {
    if (approvals.status !== status) return;
    approvals.rows = null;
    approvals.error = error;
  }
  if (approvals.open) renderApprovals();
}

function approvalRow(a) {
  const key = `${a.tenantId}/${a.appId}`;
  const target = state.targets.find((t) => keyOf(t) === key);
  return h("tr", { "data-key": key, "data-request": a.requestId, "data-approval": a.status },
    h("td", { class: "cell-customer", "data-label": "Customer" },
      h("div", { class: "customer-name" }, h("a", { href: `#/target/${key}` }, a.customer || "(no name)")),
      h("div", { class: "ids", title: `tenant ${a.tenantId}\napp ${a.appId}` }, `${short(a.tenantId)} · app ${short(a.appId)}`)),
    h("td", { "data-label": "Requested" }, h("span", { title: dateTime(a.requestedAt) }, date(a.requestedAt)), " ", h("span", { class: "muted" }, ago(a.requestedAt))),
    h("td", { class: "nowrap", "data-label": "Secret expires" }, date(a.expires), target && target.daysLeft !== null && target.daysLeft !== undefined ? h("div", { class: "muted" }, `${target.daysLeft} days left`) : null),
    h("td", { class: "nowrap", "data-label": "Forced" }, a.forceOn ? date(a.forceOn) : h("span", { class: "warn-text", title: "The customer is set to never force: an expiring secret raises an alert every day" }, "never"),
      a.forceOn ? h("div", { class: "muted" }, "without a decision") : null),
    h("td", { "data-label": "Status" }, approvalChip(a.status), h("div", { class: "muted decision" }, decisionText(a))),
    canOperate() ? h("td", { "data-label": "Decide" }, a.status === "pending" ? decisionButtons({ ...a }) : h("span", { class: "muted" }, "—")) : null);
}

function renderApprovals() {
  const body = $("approvals-body");
  const parts = [];
  if (approvals.result) parts.push(h("p", { class: `action-result ${approvals.result.kind}`, id: "approvals-result", role: "status" }, approvals.result.text));
  if (approvals.error) {
    parts.push(approvals.error.status === 403
      ? h("p", { class: "section-error", "data-code": approvals.error.code }, "Your account lacks the Rotator.Read role: ask an administrator of the rotator's app to assign it.")
      : errorBox(approvals.error));
  } else if (!approvals.rows) {
    parts.push(h("p", { class: "muted" }, "Loading…"));
  } else if (!approvals.rows.length) {
    parts.push(h("div", { class: "empty" }, h("strong", {}, approvals.status === "all" ? "No approval request yet" : `No ${APPROVAL_STATES[approvals.status].toLowerCase()} approval`),
      approvals.status === "pending" ? "A customer in approval mode asks here when its secret is due." : ""));
  } else {
    const headers = ["Customer", "Requested", "Secret expires", "Forced", "Status", ...(canOperate() ? ["Decide"] : [])];
    parts.push(h("div", { class: "table-wrap" }, h("table", { id: "approvals-table", class: "fleet approvals-table" },
      h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, approvals.rows.map(approvalRow)))));
  }
  if (!canOperate() && !approvals.error) parts.push(h("p", { class: "muted" }, "Read only: operators (Rotator.Operate) approve, postpone or reject."));
  body.replaceChildren(...parts);
}

function wireApprovals() {
  $("approvals-status").addEventListener("change", (event) => {
    approvals.status = event.target.value;
    approvals.rows = null;
    approvals.result = null;
    renderApprovals();
    loadApprovals();
  });
  $("decide-cancel").addEventListener("click", () => $("decide").close("cancel"));
  $("decide-confirm").addEventListener("click", () => sendDecision());
  $("decide").addEventListener("close", () => { if (!decision.busy) decision.pending = null; });
  $("decide-until").addEventListener("input", forceDayHint);
}

// ---------------------------------------------------------------- the page

function renderCaller() {
  const el = $("caller");
  if (!state.me) {
    el.hidden = true;
    return;
  }
  const roles = (state.me.roles || []).map((r) => r.replace(/^Rotator\./, ""));
  el.replaceChildren(state.me.name || "signed in", " · ", h("span", { class: "role" }, roles.length ? roles.join(", ") : "no role"));
  el.title = canOperate() ? "You may run and rotate" : "Read only: actions are hidden";
  el.hidden = false;
  renderAlertTest();
  renderOnboardingNav();
  renderApprovalsNav();
}

// ---------------------------------------------------------------- the alert channel's test (operators only)

function renderAlertTest() {
  const existing = $("alert-test");
  if (!canOperate()) {
    if (existing) existing.remove();
    return;
  }
  if (existing) return;
  const result = h("span", { id: "alert-test-result", class: "muted", "aria-live": "polite" });
  const button = h("button", {
    type: "button", id: "alert-test-send", class: "btn ghost",
    title: "Post a test alert to the alert channel (Teams, Slack or JSON webhook); audited with your name",
    onclick: () => sendTestAlert(button, result),
  }, "Send test alert");
  $("caller").before(h("span", { id: "alert-test", class: "alert-test" }, button, result));
}

async function sendTestAlert(button, result) {
  button.disabled = true;
  result.textContent = "Sending…";
  try {
    const answer = await api("/api/alerts/test", { method: "POST", body: "{}" });
    const status = answer.status === null ? "no answer" : `HTTP ${answer.status}`;
    result.textContent = answer.delivered
      ? `Test alert sent to the ${answer.channel} channel (${status})`
      : `Test alert not delivered to the ${answer.channel} channel (${status}, ${answer.errorCode})`;
    result.dataset.outcome = answer.delivered ? "delivered" : "failed";
  } catch (error) {
    result.textContent = `Test alert not sent: ${error.message} (${error.code})`;
    result.dataset.outcome = "failed";
  } finally {
    button.disabled = false;
  }
}

function render() {
  renderCounts();
  renderFleet();
  renderTimeline();
  renderApprovalsNav();
  if (state.selected) renderDetail();
}

function fromHash() {
  const onboardingMatch = /^#\/onboarding(?:\/run\/([^/?#]+))?\/?$/.exec(location.hash);
  if (onboardingMatch) {
    const runId = onboardingMatch[1] && RUN_ID.test(onboardingMatch[1]) ? onboardingMatch[1] : null;
    openOnboarding(runId);
    return;
  }
  if (onboarding.open) closeOnboarding();
  if (/^#\/approvals\/?$/.test(location.hash)) {
    openApprovals();
    return;
  }
  if (approvals.open) closeApprovals();
  const match = /^#\/target\/([0-9a-fA-F-]{36})\/([0-9a-fA-F-]{36})$/.exec(location.hash);
  if (match) openDetail(`${match[1]}/${match[2]}`, { push: false });
  else if (state.selected) closeDetail({ push: false });
}

function wire() {
  wireCredentials();
  wireApprovals();
  $("refresh").addEventListener("click", () => refresh());
  $("search").addEventListener("input", (event) => { state.search = event.target.value; renderFleet(); renderTimeline(); });
  $("status-filter").addEventListener("change", (event) => { state.status = event.target.value; render(); });
  $("detail-close").addEventListener("click", () => closeDetail());
  for (const th of document.querySelectorAll("#fleet-table th[data-sort]")) {
    th.querySelector("button").addEventListener("click", () => {
      const key = th.dataset.sort;
      state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : 1 };
      renderFleet();
    });
  }
  $("confirm-cancel").addEventListener("click", () => $("confirm").close("cancel"));
  $("offboard-cancel").addEventListener("click", () => $("offboard").close("cancel"));
  $("offboard-confirm").addEventListener("click", () => {
    const dialog = $("offboard");
    dialog.close("offboard");
    offboard(dialog.dataset.key, $("offboard-owner").checked, $("offboard-app").checked, $("offboard-partner").value);
  });
  $("confirm-rotate").addEventListener("click", () => {
    const dialog = $("confirm");
    const force = $("confirm-force").checked;
    dialog.close("rotate");
    rotate(dialog.dataset.key, force);
  });
  document.addEventListener("keydown", (event) => {
    const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement?.tagName);
    if (event.key === "Escape" && state.selected && !$("confirm").open && !$("offboard").open && !$("decide").open) closeDetail();
    else if (event.key === "/" && !typing) { event.preventDefault(); $("search").focus(); }
    else if (event.key === "r" && !typing && !event.ctrlKey && !event.metaKey) refresh();
  });
  window.addEventListener("popstate", fromHash);
  let resize = null;
  window.addEventListener("resize", () => { clearTimeout(resize); resize = setTimeout(renderTimeline, 150); });
  setInterval(() => {
    if (!state.progress || !state.progress.running) refresh();
    if (approvals.open && !$("decide").open) loadApprovals();
  }, REFRESH_MS);
}

async function start() {
  wire();
  render();
  await loadMe();
  await refresh();
  await loadCredentials();
  fromHash();
  document.body.dataset.ready = "true";
}

start();
