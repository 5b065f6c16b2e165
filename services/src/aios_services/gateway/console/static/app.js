"use strict";
// The AIOS console: one page per hash route, data from /ui/api (JSON), live numbers from one
// server-sent-event stream per page. Everything is built with DOM calls (no HTML from data).

const main = document.getElementById("main");
const liveEl = document.getElementById("live");
const pendingEl = document.getElementById("pending");
const problemsEl = document.getElementById("problems");
let stream = null;
let routeId = 0;

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

const fmt = {
  n: (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en")),
  f: (v, d = 2) => (v === null || v === undefined ? "–" : Number(v).toFixed(d)),
  ms: (v) => (v === null || v === undefined ? "–" : `${Number(v).toFixed(1)} ms`),
  time: (t) => (t ? new Date(t * 1000).toLocaleTimeString("en-GB") : "–"),
  date: (t) => (t ? new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) : "–"),
};

async function api(path, opts) {
  const r = await fetch(`/ui/api/${path}`, { credentials: "same-origin", ...opts });
  if (r.status === 401) {
    location.href = "/ui/login";
    throw new Error("not logged in");
  }
  const body = await r.json();
  if (!r.ok) throw new Error(body.error ? `${body.error.code}: ${body.error.message}` : r.statusText);
  return body;
}

function post(path, data) {
  return api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-AIOS-Console": "1" },
    body: JSON.stringify(data),
  });
}

function live(params, onData) {
  if (stream) stream.close();
  const qs = new URLSearchParams(params).toString();
  const es = new EventSource(`/ui/api/live?${qs}`);
  stream = es;
  es.addEventListener(params.view, (ev) => {
    const data = JSON.parse(ev.data);
    liveEl.textContent = `live ${fmt.time(Date.now() / 1000)}`;
    liveEl.className = "live on";
    showBadge(data.pending_approvals);
    showProblems(data.problems);
    onData(data);
  });
  es.onerror = () => {
    liveEl.textContent = "reconnecting";
    liveEl.className = "live";
  };
}

function showBadge(n) {
  pendingEl.textContent = String(n || 0);
  pendingEl.className = n ? "badge" : "badge zero";
}

function showProblems(problems) {
  const list = Object.entries(problems || {});
  problemsEl.hidden = list.length === 0;
  problemsEl.textContent = list.map(([k, v]) => `${k}: ${v}`).join("; ");
}

function showError(err) {
  main.replaceChildren(h("h1", { text: "Something went wrong" }), h("p", { class: "error", role: "alert", text: String(err.message || err) }));
}

function table(headers, rows, caption) {
  return h("div", { class: "scroll" },
    h("table", {},
      caption ? h("caption", { class: "muted", text: caption }) : null,
      h("thead", {}, h("tr", {}, headers.map(([label, cls]) => h("th", { scope: "col", class: cls }, label)))),
      h("tbody", {}, rows)));
}

function parseRoute() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { page: parts[0] || "overview", arg: parts[1], params: new URLSearchParams(query || "") };
}

function go(page, params) {
  const qs = params ? new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v !== null && v !== undefined)).toString() : "";
  location.hash = `#/${page}${qs ? "?" + qs : ""}`;
}

// --- overview ------------------------------------------------------------------------------------
function chart(points, step, kind) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", "0 0 600 120");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  const now = Date.now() / 1000;
  const t0 = now - 600;
  const x = (t) => ((t - t0) / 600) * 600;
  const el = (name, attrs) => {
    const e = document.createElementNS(ns, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    svg.append(e);
  };
  if (kind === "rate") {
    const max = Math.max(1, ...points.map((p) => p.calls / step));
    for (const p of points) {
      const hgt = ((p.calls / step) / max) * 110;
      el("rect", { class: "bar", x: x(p.ts), y: 120 - hgt, width: Math.max(2, (step / 600) * 600 - 1), height: hgt });
      const e = ((p.errors / step) / max) * 110;
      if (e > 0) el("rect", { class: "ebar", x: x(p.ts), y: 120 - e, width: Math.max(2, (step / 600) * 600 - 1), height: e });
    }
    svg.setAttribute("aria-label", `Finished syscalls per second, last 10 minutes; peak ${max.toFixed(1)}/s`);
  } else {
    const vals = points.filter((p) => p.p99_ms !== null);
    const max = Math.max(1, ...vals.map((p) => p.p99_ms));
    const line = (key) => vals.map((p) => `${x(p.ts + step / 2).toFixed(1)},${(120 - (p[key] / max) * 110).toFixed(1)}`).join(" ");
    if (vals.length) {
      el("polyline", { class: "l1", points: line("p50_ms") });
      el("polyline", { class: "l2", points: line("p99_ms") });
    }
    svg.setAttribute("aria-label", `Latency p50 (solid) and p99 (dashed), last 10 minutes; peak ${max.toFixed(1)} ms`);
  }
  return svg;
}

function renderOverview(d) {
  const c = d.counters || {};
  const last = d.series.length ? d.series[d.series.length - 1] : null;
  const errors10 = d.series.reduce((a, p) => a + p.errors, 0);
  const cards = h("dl", { class: "cards" },
    [["Finished / s", fmt.f(d.rate, 1), "stat-rate"], ["Running", fmt.n(d.running), "stat-running"],
     ["Queued", fmt.n(d.queued), "stat-queued"], ["Finished", fmt.n((c.done || 0) + (c.failed || 0)), "stat-done"],
     ["Errors (10 min)", fmt.n(errors10), "stat-errors"], ["Agents", fmt.n(d.agents), "stat-agents"],
     ["Approvals waiting", fmt.n(d.approvals), "stat-approvals"],
     ["Latency p50 / p99", last ? `${fmt.f(last.p50_ms, 0)} / ${fmt.f(last.p99_ms, 0)} ms` : "–", "stat-latency"]]
      .map(([dt, dd, id]) => h("div", {}, h("dt", { text: dt }), h("dd", { id, text: dd }))));
  const rows = [];
  for (const r of d.resources) {
    const bs = r.backends.length ? r.backends : [{ name: "–", slots: r.capacity, running: r.running, breaker: "" }];
    bs.forEach((b, i) => rows.push(h("tr", {},
      i === 0 ? h("th", { scope: "row", rowspan: bs.length, text: r.name }) : null,
      i === 0 ? h("td", { rowspan: bs.length, text: r.policy || "idle" }) : null,
      h("td", { text: b.name }),
      h("td", {}, h("meter", { min: 0, max: Math.max(1, b.slots), value: b.running, "aria-label": `${b.name} slots in use` }), ` ${b.running}/${b.slots}`),
      h("td", { class: b.breaker === "closed" ? "state-done" : "state-failed", text: b.breaker }),
      i === 0 ? h("td", { class: "num", rowspan: bs.length, text: fmt.n(r.queued) }) : null)));
  }
  const step = 10;
  const errRows = d.errors.map((e) => h("tr", {},
    h("td", {}, h("a", { href: `#/syscall/${encodeURIComponent(e.id)}` }, h("code", { text: e.id }))),
    h("td", { text: e.agent }), h("td", { text: e.kind }), h("td", { class: "state-failed", text: e.code || e.state }),
    h("td", { text: fmt.time(e.updated) })));
  return [
    h("h1", { text: "Overview" }),
    cards,
    h("h2", { text: "Models and backends" }),
    table([["Resource"], ["Policy"], ["Backend"], ["Slots in use"], ["Breaker"], ["Queued", "num"]], rows),
    h("h2", { text: "Last 10 minutes" }),
    h("div", { class: "charts" },
      h("figure", {}, h("figcaption", { text: "Throughput: finished syscalls per second (red: errors)" }), chart(d.series, step, "rate")),
      h("figure", {}, h("figcaption", { text: "Latency, queued + running: p50 (solid), p99 (dashed)" }), chart(d.series, step, "latency"))),
    h("h2", { text: "Recent errors" }),
    errRows.length ? table([["Syscall"], ["Agent"], ["Kind"], ["Error"], ["At"]], errRows) : h("p", { class: "muted", text: "None in the last 10 minutes." }),
  ];
}

async function pageOverview(id) {
  const body = h("div", { id: "overview" });
  main.replaceChildren(body);
  const show = (d) => { if (id === routeId) body.replaceChildren(...renderOverview(d)); };
  show(await api("overview"));
  live({ view: "overview" }, show);
}

// --- agents --------------------------------------------------------------------------------------
async function pageAgents(id, params) {
  const state = { page: Number(params.get("page") || 0), sort: params.get("sort") || "calls", q: params.get("q") || "" };
  const tbody = h("tbody", { id: "agents-rows" });
  const info = h("span", { id: "agents-page", role: "status" });
  const prev = h("button", { type: "button", onclick: () => go("agents", { ...state, page: state.page - 1 }) }, "Previous");
  const next = h("button", { type: "button", onclick: () => go("agents", { ...state, page: state.page + 1 }) }, "Next");
  const sorts = ["calls", "tokens", "wait", "service", "running", "queued", "agent"];
  const form = h("form", { class: "filters", role: "search", onsubmit: (e) => {
      e.preventDefault();
      const f = new FormData(e.target);
      go("agents", { q: f.get("q"), sort: f.get("sort"), page: 0 });
    } },
    h("div", {}, h("label", { for: "agent-q", text: "Agent name contains" }), h("input", { id: "agent-q", name: "q", value: state.q })),
    h("div", {}, h("label", { for: "agent-sort", text: "Sort by" }),
      h("select", { id: "agent-sort", name: "sort" }, sorts.map((s) => h("option", { value: s, selected: s === state.sort }, s)))),
    h("button", { type: "submit" }, "Show"));
  main.replaceChildren(
    h("h1", { text: "Agents" }), form,
    table([["Agent"], ["Calls", "num"], ["Tokens", "num"], ["Wait s", "num"], ["Service s", "num"], ["Suspended", "num"], ["Running", "num"], ["Queued", "num"], ["Quota left"]], []),
    h("div", { class: "pager" }, prev, info, next));
  main.querySelector("tbody").replaceWith(tbody);
  const show = (d) => {
    if (id !== routeId) return;
    tbody.replaceChildren(...d.rows.map((r) => h("tr", {},
      h("th", { scope: "row" }, h("a", { href: `#/agent/${encodeURIComponent(r.agent)}`, text: r.agent })),
      h("td", { class: "num", text: fmt.n(r.calls) }), h("td", { class: "num", text: fmt.n(r.tokens) }),
      h("td", { class: "num", text: fmt.f(r.wait) }), h("td", { class: "num", text: fmt.f(r.service) }),
      h("td", { class: "num", text: fmt.n(r.suspensions) }), h("td", { class: "num", text: fmt.n(r.running) }),
      h("td", { class: "num", text: fmt.n(r.queued) }),
      h("td", { class: "quota", text: r.quota ?? "" }))));
    if (!d.rows.length) tbody.append(h("tr", {}, h("td", { colspan: 9, class: "muted", text: "No agents yet." })));
    info.textContent = `page ${d.page + 1} of ${d.pages} (${fmt.n(d.total)} agents)`;
    prev.disabled = d.page <= 0;
    next.disabled = d.page + 1 >= d.pages;
    state.page = d.page;
  };
  const p = { page: state.page, sort: state.sort, q: state.q };
  show(await api(`agents?${new URLSearchParams(p)}`));
  live({ view: "agents", ...p }, show);
}

// --- syscall explorer ----------------------------------------------------------------------------
async function pageSyscalls(id, params) {
  const f = { agent: params.get("agent") || "", kind: params.get("kind") || "", state: params.get("state") || "",
    since_min: params.get("since_min") || "", offset: Number(params.get("offset") || 0) };
  const states = ["", "accepted", "queued", "dispatched", "suspended", "resumed", "done", "failed", "cancelled"];
  const form = h("form", { class: "filters", role: "search", onsubmit: (e) => {
      e.preventDefault();
      const d = Object.fromEntries(new FormData(e.target));
      go("syscalls", { ...d, offset: 0 });
    } },
    h("div", {}, h("label", { for: "f-agent", text: "Agent" }), h("input", { id: "f-agent", name: "agent", value: f.agent, size: 14 })),
    h("div", {}, h("label", { for: "f-kind", text: "Kind (llm, llm.chat...)" }), h("input", { id: "f-kind", name: "kind", value: f.kind, size: 14 })),
    h("div", {}, h("label", { for: "f-state", text: "Latest state" }),
      h("select", { id: "f-state", name: "state" }, states.map((s) => h("option", { value: s, selected: s === f.state }, s || "any")))),
    h("div", {}, h("label", { for: "f-since", text: "Last N minutes" }), h("input", { id: "f-since", name: "since_min", type: "number", min: 0, step: "any", value: f.since_min, size: 6 })),
    h("button", { type: "submit" }, "Filter"));
  const body = h("div", { id: "syscalls-body" }, h("p", { class: "muted", text: "Loading…" }));
  main.replaceChildren(h("h1", { text: "Syscalls" }), form, body);
  const q = new URLSearchParams(Object.entries(f).filter(([, v]) => v !== ""));
  const page = (off) => () => go("syscalls", { ...f, offset: off });
  let fetching = false;
  let last = 0;
  const render = async () => {
    fetching = true;
    try {
      const d = await api(`syscalls?${q}`);
      if (id !== routeId) return;
      last = Date.now();
      const rows = d.syscalls.map((s) => h("tr", {},
        h("td", {}, h("a", { href: `#/syscall/${encodeURIComponent(s.id)}` }, h("code", { text: s.id }))),
        h("td", {}, h("a", { href: `#/agent/${encodeURIComponent(s.agent)}`, text: s.agent })),
        h("td", { text: s.kind }), h("td", { text: s.resource || "–" }),
        h("td", { class: `state-${s.state}`, text: s.code ? `${s.state} (${s.code})` : s.state }),
        h("td", { text: fmt.time(s.started) }), h("td", { class: "num", text: fmt.ms(s.queued_ms) }),
        h("td", { class: "num", text: fmt.ms(s.service_ms) }), h("td", { class: "num", text: fmt.n(s.tokens) }),
        h("td", { text: s.backend || "–" })));
      body.replaceChildren(
        rows.length ? table([["Syscall"], ["Agent"], ["Kind"], ["Resource"], ["State"], ["Started"], ["Queued", "num"], ["Ran", "num"], ["Tokens", "num"], ["Backend"]], rows)
          : h("p", { class: "muted", text: "No syscall matches." }),
        h("div", { class: "pager" },
          h("button", { type: "button", disabled: d.offset <= 0, onclick: page(Math.max(0, d.offset - 50)) }, "Newer"),
          h("span", { role: "status", text: `${d.offset + 1}–${d.offset + rows.length}` }),
          h("button", { type: "button", disabled: !d.more, onclick: page(d.offset + 50) }, "Older")));
    } finally {
      fetching = false;
    }
  };
  // Live on the newest page: each pushed change re-reads it (at most every 2 s); older pages stay
  // still, so what the operator is reading does not shift under them.
  live({ view: "overview" }, () => {
    if (f.offset === 0 && !fetching && Date.now() - last >= 2000) render();
  });
  await render();
}

async function pageSyscall(id, sid) {
  live({ view: "overview" }, () => {});
  const t = await api(`syscalls/${encodeURIComponent(sid)}`);
  if (id !== routeId) return;
  if (!t.found) {
    main.replaceChildren(h("h1", { text: `Syscall ${sid}` }), h("p", { text: "The recorder has no event of this syscall (yet)." }));
    return;
  }
  const total = Math.max(t.total_ms, ...t.spans.map((s) => s.to_ms), 0.001);
  const pct = (ms) => `${((ms / total) * 100).toFixed(3)}%`;
  const seg = (cls, from, to, title) => h("span", { class: `seg ${cls}`, style: `left:${pct(from)};width:${pct(Math.max(0, to - from))}`, title });
  const lanes = [h("div", { class: "lane" }, h("span", { class: "name", text: "syscall" }),
    h("span", { class: "track" }, t.phases.map((p) => seg(p.phase, p.from_ms, p.to_ms,
      `${p.phase} ${(p.to_ms - p.from_ms).toFixed(2)} ms${p.backend ? " on " + p.backend : ""}`))))];
  for (const s of t.spans) {
    lanes.push(h("div", { class: "lane" }, h("span", { class: "name", title: `${s.service}: ${s.name}`, text: s.name }),
      h("span", { class: "track" }, seg(`span ${s.status === "error" ? "error" : ""}`, s.from_ms, s.to_ms, `${s.service}: ${s.name} ${(s.to_ms - s.from_ms).toFixed(2)} ms`))));
  }
  const facts = [["Agent", t.agent], ["Kind", t.kind], ["Resource", t.resource || "–"], ["State", t.state],
    ["Backend", t.backend || "–"], ["Tokens", fmt.n(t.tokens)], ["Suspensions", fmt.n(t.suspensions)],
    ["Total", fmt.ms(t.total_ms)], ["Started", fmt.date(t.started)]];
  main.replaceChildren(
    h("h1", {}, "Syscall ", h("code", { text: t.id })),
    h("dl", { class: "cards" }, facts.map(([k, v]) => h("div", {}, h("dt", { text: k }), h("dd", { style: "font-size:16px", text: v })))),
    h("h2", { text: "Timeline" }),
    h("ul", { class: "legend", "aria-label": "Legend" },
      [["admission", "--adm"], ["queued", "--queue"], ["running", "--run"], ["suspended", "--susp"], ["span", "--muted"]]
        .map(([n, v]) => h("li", { style: `--c: var(${v})`, text: n }))),
    h("div", { class: "timeline", id: "timeline", role: "img", "aria-label": t.phases.map((p) => `${p.phase} ${(p.to_ms - p.from_ms).toFixed(1)} ms`).join(", ") }, lanes),
    h("h2", { text: "Events" }),
    table([["At", "num"], ["State"], ["Resource"], ["Details"]], t.events.map((e) => h("tr", {},
      h("td", { class: "num", text: `+${e.at_ms.toFixed(2)} ms` }), h("td", { class: `state-${e.state}`, text: e.state }),
      h("td", { text: e.resource || "–" }), h("td", {}, h("code", { text: Object.keys(e.details).length ? JSON.stringify(e.details) : "" }))))),
    h("p", {}, h("a", { href: `#/syscalls?agent=${encodeURIComponent(t.agent)}`, text: `More syscalls of ${t.agent}` })));
}

// --- approvals -----------------------------------------------------------------------------------
function approvalCard(a, onDone) {
  const idp = `ap-${a.id}`;
  const args = h("textarea", { id: `${idp}-args`, "aria-describedby": `${idp}-argshelp`, spellcheck: "false" });
  args.value = JSON.stringify(a.payload, null, 2);
  const reason = h("input", { id: `${idp}-reason`, name: "reason", placeholder: "required to reject" });
  const msg = h("p", { role: "status", class: "muted" });
  const buttons = [];
  const act = async (action) => {
    let body = { action };
    if (action === "approve") {
      let edited;
      try { edited = JSON.parse(args.value); } catch (e) { msg.textContent = `Arguments are not JSON: ${e.message}`; return; }
      if (JSON.stringify(edited) !== JSON.stringify(a.payload)) body.args = edited;
    } else {
      if (!reason.value.trim()) { msg.textContent = "Say why it is rejected."; reason.focus(); return; }
      body.reason = reason.value.trim();
    }
    buttons.forEach((b) => { b.disabled = true; });
    try {
      const r = await post(`approvals/${encodeURIComponent(a.id)}`, body);
      msg.textContent = `${r.state}${r.args ? " with edited arguments" : ""}.`;
      onDone(a.id);
    } catch (e) {
      msg.textContent = e.message;
      buttons.forEach((b) => { b.disabled = false; });
    }
  };
  buttons.push(h("button", { type: "button", class: "primary", onclick: () => act("approve") }, "Approve"));
  buttons.push(h("button", { type: "button", class: "danger", onclick: () => act("reject") }, "Reject"));
  return h("article", { class: "approval", id: idp, "data-id": a.id, "aria-labelledby": `${idp}-title` },
    h("h2", { id: `${idp}-title` }, h("code", { text: a.kind }), ` by ${a.agent} on ${a.resource}`),
    h("p", { class: "muted", text: `Syscall ${a.id}; rule ${a.rule}; held since ${fmt.time(a.requested)}; denied at ${fmt.time(a.deadline)} unless decided.` }),
    h("p", {}, "Arguments: ", h("code", { class: "args", text: JSON.stringify(a.payload) })),
    h("div", { class: "field" }, h("label", { for: `${idp}-args`, text: "Arguments (edit to approve with others)" }), args),
    h("p", { id: `${idp}-argshelp`, class: "muted", text: "Edited arguments are checked as the syscall's payload." }),
    h("div", { class: "actions" }, buttons[0],
      h("div", { class: "field" }, h("label", { for: `${idp}-reason`, text: "Reason" }), reason), buttons[1]),
    msg);
}

async function pageApprovals(id) {
  const list = h("div", { id: "approvals" });
  const empty = h("p", { class: "muted", text: "Nothing waits for a decision." });
  const count = h("p", { role: "status" });
  const decided = new Set();
  main.replaceChildren(h("h1", { text: "Approvals" }), count, list);
  const show = (d) => {
    if (id !== routeId) return;
    const want = new Map(d.approvals.filter((a) => !decided.has(a.id)).map((a) => [a.id, a]));
    for (const card of [...list.children]) {
      if (card.dataset.id && !want.has(card.dataset.id) && !card.dataset.done) card.remove();
    }
    const have = new Set([...list.children].map((c) => c.dataset.id));
    for (const [aid, a] of want) {  // cards being edited stay as they are
      if (!have.has(aid)) list.append(approvalCard(a, (x) => {
        decided.add(x);
        const card = document.getElementById(`ap-${x}`);
        if (card) card.dataset.done = "1";
      }));
    }
    count.textContent = `${d.total} waiting.`;
    if (!list.children.length) list.append(empty); else if (list.children.length > 1) empty.remove();
  };
  show(await api("approvals"));
  live({ view: "approvals" }, show);
}

// --- one agent -----------------------------------------------------------------------------------
async function pageAgent(id, agent, params) {
  live({ view: "overview" }, () => {});
  const enc = encodeURIComponent(agent);
  const moff = Number(params.get("moff") || 0);
  const prefix = params.get("prefix") || "";
  const path = params.get("path");
  const [stats, mem, files] = await Promise.all([
    api(`agents?q=${enc}`).catch((e) => ({ error: e })),
    api(`agents/${enc}/memory?offset=${moff}`).catch((e) => ({ error: e })),
    api(`agents/${enc}/files?prefix=${encodeURIComponent(prefix)}`).catch((e) => ({ error: e })),
  ]);
  if (id !== routeId) return;
  const row = stats.rows ? stats.rows.find((r) => r.agent === agent) : null;
  const facts = row ? [["Calls", fmt.n(row.calls)], ["Tokens", fmt.n(row.tokens)], ["Wait s", fmt.f(row.wait)],
    ["Service s", fmt.f(row.service)], ["Running", fmt.n(row.running)], ["Queued", fmt.n(row.queued)]] : [];
  const errorP = (e) => h("p", { class: "error", role: "alert", text: e.message });
  const memPart = mem.error ? errorP(mem.error) : mem.records.length
    ? [table([["Id"], ["v", "num"], ["Text"], ["Tags"], ["Session"], ["Updated"]], mem.records.map((r) => h("tr", {},
        h("td", {}, h("code", { text: r.id })), h("td", { class: "num", text: r.version }), h("td", { text: r.text }),
        h("td", { text: (r.tags || []).join(", ") }), h("td", { text: r.session || "" }), h("td", { text: fmt.date(r.updated) })))),
      h("div", { class: "pager" },
        moff > 0 ? h("a", { href: `#/agent/${enc}?moff=${Math.max(0, moff - 50)}` }, "Newer records") : null,
        mem.next_offset !== null ? h("a", { href: `#/agent/${enc}?moff=${mem.next_offset}` }, "Older records") : null)]
    : h("p", { class: "muted", text: "No memory records." });
  const filesPart = files.error ? errorP(files.error) : files.entries.length
    ? table([["Path"], ["v", "num"], ["Size", "num"], ["Author"], ["Written"]], files.entries.map((f) => h("tr", {},
        h("td", {}, h("a", { href: `#/agent/${enc}?path=${encodeURIComponent(f.path)}` }, h("code", { text: f.path }))),
        h("td", { class: "num", text: f.version }), h("td", { class: "num", text: fmt.n(f.size) }),
        h("td", { text: f.author }), h("td", { text: fmt.date(f.created) }))))
    : h("p", { class: "muted", text: "No files." });
  const out = [
    h("h1", {}, "Agent ", h("code", { text: agent })),
    facts.length ? h("dl", { class: "cards" }, facts.map(([k, v]) => h("div", {}, h("dt", { text: k }), h("dd", { text: v })))) : h("p", { class: "muted", text: "No finished syscall yet." }),
    h("p", {}, h("a", { href: `#/syscalls?agent=${enc}`, text: "Its syscalls" })),
    h("div", { class: "two" },
      h("section", { "aria-labelledby": "mem-h" }, h("h2", { id: "mem-h", text: "Memory (read-only)" }), memPart),
      h("section", { "aria-labelledby": "files-h" }, h("h2", { id: "files-h", text: "Files (read-only)" }), filesPart)),
  ];
  if (path) {
    const ver = params.get("version") || "";
    const fsec = h("section", { "aria-labelledby": "file-h", id: "file" }, h("h2", { id: "file-h" }, h("code", { text: path })));
    out.push(fsec);
    try {
      const f = await api(`agents/${enc}/file?path=${encodeURIComponent(path)}${ver ? "&version=" + ver : ""}`);
      fsec.append(
        h("p", { class: "muted", text: `version ${f.info.version}, ${fmt.n(f.info.size)} bytes, by ${f.info.author}, ${fmt.date(f.info.created)}` }),
        f.binary ? h("p", { text: "Binary or large content: not shown." }) : h("pre", { class: "file", tabindex: 0, text: f.text }),
        h("h3", { text: "Versions" }),
        h("ul", {}, f.versions.map((v) => h("li", {}, h("a", { href: `#/agent/${enc}?path=${encodeURIComponent(path)}&version=${v.version}` }, `v${v.version}`),
          ` ${v.deleted ? "deleted" : fmt.n(v.size) + " bytes"} by ${v.author}, ${fmt.date(v.created)}`))));
    } catch (e) { fsec.append(errorP(e)); }
  }
  main.replaceChildren(...out);
}

// --- routing -------------------------------------------------------------------------------------
async function route() {
  const id = ++routeId;
  const { page, arg, params } = parseRoute();
  const navPage = page === "syscall" ? "syscalls" : page === "agent" ? "agents" : page;
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === navPage) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  document.title = `AIOS console: ${page}`;
  try {
    if (page === "agents") await pageAgents(id, params);
    else if (page === "syscalls") await pageSyscalls(id, params);
    else if (page === "syscall") await pageSyscall(id, arg);
    else if (page === "approvals") await pageApprovals(id);
    else if (page === "agent") await pageAgent(id, arg, params);
    else await pageOverview(id);
  } catch (e) {
    if (id === routeId) showError(e);
  }
}

window.addEventListener("hashchange", () => { route(); main.focus({ preventScroll: true }); });
route();
