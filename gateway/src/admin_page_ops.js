"use strict";
// The admin page's operations panels: queues (pause/resume, settings, bulk retry or discard
// of failed jobs), charts of the last hour, blocked and busiest lanes with a lane's jobs in
// run order, and schedules. Built on window.lanesAdmin from the page's first script, and
// refreshed with it (its `hooks`).
(() => {
  const A = window.lanesAdmin;
  const { api, el, handle, short } = A;
  const $ = (id) => document.getElementById(id);
  const enc = encodeURIComponent;
  const SVG = "http://www.w3.org/2000/svg";
  let openLane = null;        // { queue, lane } whose jobs are shown
  let settingsQueue = null;   // queue whose settings form is open
  let confirmDone = null;     // resolves the open confirm dialog
  let knownQueues = [];

  const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;
  const laneKey = (queue, lane) => `${queue}:${lane}`;

  function age(iso) {
    if (!iso) return "—";
    const s = Math.max(0, Math.round((Date.now() - new Date(iso)) / 1000));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
    return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  }

  function ms(n) {
    if (n % 3600000 === 0) return `${n / 3600000} h`;
    if (n % 60000 === 0) return `${n / 60000} min`;
    if (n % 1000 === 0) return `${n / 1000} s`;
    return `${n} ms`;
  }

  // ---- confirm dialog -------------------------------------------------------------------
  function ask(text) {
    $("confirm-text").textContent = text;
    $("confirm").classList.remove("hidden");
    return new Promise((resolve) => { confirmDone = resolve; });
  }
  function answer(ok) {
    $("confirm").classList.add("hidden");
    const done = confirmDone;
    confirmDone = null;
    if (done) done(ok);
  }

  // ---- queues ---------------------------------------------------------------------------
  function renderQueues(queues) {
    $("queues").replaceChildren(...queues.map((q) => {
      const n = q.queue;
      const rate = q.rate_limit > 0 ? `${q.rate_started}/${q.rate_limit} started per ${ms(q.rate_interval_ms)}` : "none";
      return el("tr", { testid: `queue-row-${n}`, "data-paused": String(q.paused) },
        el("td", {}, n),
        el("td", { testid: `queue-state-${n}`, class: q.paused ? "status status-pending" : "" }, q.paused ? "paused" : "active"),
        el("td", {}, String(q.pending)),
        el("td", {}, String(q.processing)),
        el("td", { testid: `queue-failed-${n}` }, String(q.failed)),
        el("td", {}, String(q.blocked_lanes)),
        el("td", { testid: `queue-rate-${n}` }, rate),
        el("td", {},
          el("button", { testid: `queue-toggle-${n}`, onclick: (e) => pauseResume(e, n, !q.paused) }, q.paused ? "Resume" : "Pause"), " ",
          el("button", { testid: `queue-settings-${n}`, onclick: () => openSettings(n) }, "Settings"), " ",
          el("button", { testid: `queue-retry-failed-${n}`, disabled: q.failed === 0,
                         onclick: () => bulk(n, "retry", q.failed) }, "Retry failed"), " ",
          el("button", { class: "danger", testid: `queue-discard-failed-${n}`, disabled: q.failed === 0,
                         onclick: () => bulk(n, "cancel", q.failed) }, "Discard failed")));
    }));
    const names = queues.map((q) => q.queue);
    if (names.join("\n") !== knownQueues.join("\n")) {
      knownQueues = names;
      const sel = $("ops-queue");
      const keep = sel.value;
      sel.replaceChildren(el("option", { value: "" }, "every queue"),
        ...names.map((n) => el("option", { value: n }, n)));
      sel.value = names.includes(keep) ? keep : "";
    }
  }

  async function pauseResume(ev, queue, pause) {
    ev.target.disabled = true;
    try {
      await api("POST", `/admin/api/queues/${enc(queue)}/${pause ? "pause" : "resume"}`);
      $("queues-result").textContent = `${queue} ${pause ? "paused" : "resumed"}`;
      await A.refresh();
    } catch (err) { handle(err); }
  }

  async function bulk(queue, what, failed) {
    const verb = what === "retry" ? "Retry" : "Discard (cancel)";
    if (!await ask(`${verb} ${plural(failed, "failed job", "failed jobs")} of ${queue}?`)) return;
    try {
      const r = await api("POST", `/admin/api/queues/${enc(queue)}/failed/${what}`);
      $("queues-result").textContent = `${plural(r.count, "job", "jobs")} ${what === "retry" ? "retried" : "cancelled"} in ${queue}`
        + (r.more ? " — more remain, run it again" : "");
      await A.refresh();
    } catch (err) { handle(err); }
  }

  // ---- settings -------------------------------------------------------------------------
  const SETTINGS = [
    ["max_attempts", "attempts before failed"], ["backoff_initial_ms", "retry backoff: first, ms"],
    ["backoff_max_ms", "retry backoff: cap, ms"], ["lease_ttl_ms", "lease TTL, ms"],
    ["job_timeout_ms", "hard timeout of a run, ms"], ["soft_timeout_ms", "soft timeout, ms (0 = none)"],
    ["max_pending", "max pending (0 = no limit)"], ["max_running", "max running (0 = no limit)"],
    ["rate_limit", "rate limit: starts (0 = none)"], ["rate_interval_ms", "rate limit: per interval, ms"],
    ["idempotency_window_s", "idempotency window, s (0 = forever)"],
    ["retention_completed_s", "keep completed, s"], ["retention_failed_s", "keep failed, s"],
  ];

  function buildSettingsForm() {
    const fields = SETTINGS.map(([name, label]) => el("label", {}, label,
      el("input", { type: "number", id: `setting-${name}`, testid: `setting-${name}`, name, step: "1" })));
    const policy = el("select", { id: "setting-failure_policy", testid: "setting-failure_policy", name: "failure_policy" },
      el("option", { value: "continue" }, "continue"), el("option", { value: "block" }, "block (stop the lane)"));
    fields.push(el("label", {}, "after a failed job, the lane", policy));
    $("settings-fields").replaceChildren(...fields);
  }

  function fillSettings(s) {
    for (const [name] of SETTINGS) {
      const input = $(`setting-${name}`);
      input.value = String(s[name]);
      input.dataset.orig = String(s[name]);
      input.style.borderColor = "";
    }
    const policy = $("setting-failure_policy");
    policy.value = s.failure_policy;
    policy.dataset.orig = s.failure_policy;
  }

  async function openSettings(queue) {
    try {
      const s = await api("GET", `/admin/api/queues/${enc(queue)}/settings`);
      settingsQueue = queue;
      $("settings-queue").textContent = queue;
      $("settings-result").textContent = "";
      fillSettings(s);
      $("settings").classList.remove("hidden");
    } catch (err) { handle(err); }
  }

  async function saveSettings(ev) {
    ev.preventDefault();
    const patch = {};
    for (const [name] of SETTINGS) {
      const input = $(`setting-${name}`);
      if (input.value.trim() !== input.dataset.orig) patch[name] = Number(input.value.trim());
    }
    // The rate limit and its interval go together.
    if ("rate_limit" in patch || "rate_interval_ms" in patch) {
      patch.rate_limit = Number($("setting-rate_limit").value);
      patch.rate_interval_ms = Number($("setting-rate_interval_ms").value);
    }
    const policy = $("setting-failure_policy");
    if (policy.value !== policy.dataset.orig) patch.failure_policy = policy.value;
    if (Object.keys(patch).length === 0) {
      $("settings-result").textContent = "nothing changed";
      return;
    }
    try {
      const s = await api("PUT", `/admin/api/queues/${enc(settingsQueue)}/settings`, patch);
      fillSettings(s);
      $("settings-result").textContent = `saved: ${Object.keys(patch).join(", ")}`;
      await A.refresh();
    } catch (err) {
      if (err instanceof A.HttpError && (err.status === 422 || err.status === 400)) {
        $("settings-result").textContent = err.message;
        const bad = err.field && $(`setting-${err.field}`);
        if (bad) bad.style.borderColor = "var(--failed)";
      } else handle(err);
    }
  }

  // ---- charts ---------------------------------------------------------------------------
  function svg(tag, attrs, ...children) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    for (const c of children) e.append(c);
    return e;
  }

  // Bars per minute: each series is drawn from the baseline (`stack`: on top of the previous
  // one). Only non-zero values get a bar; each carries its value for tooltips and tests.
  function chart(testid, minutes, series, stack) {
    const W = 600, H = 150, L = 44, B = 18, T = 8;
    const n = Math.max(1, minutes.length);
    const total = (m) => stack ? series.reduce((a, s) => a + m[s.key], 0) : Math.max(...series.map((s) => m[s.key]));
    const max = Math.max(1, ...minutes.map(total));
    const bw = (W - L) / n;
    const y = (v) => T + (H - T - B) * (1 - v / max);
    const out = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", "data-testid": testid, role: "img" });
    out.append(svg("line", { x1: L, x2: W, y1: H - B, y2: H - B, stroke: "#dde1e6" }),
      svg("text", { x: L - 4, y: T + 8, "text-anchor": "end" }, String(max)),
      svg("text", { x: L - 4, y: H - B, "text-anchor": "end" }, "0"));
    minutes.forEach((m, i) => {
      let base = 0;
      const label = new Date(m.minute).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      for (const s of series) {
        const v = m[s.key];
        if (v > 0) {
          const from = stack ? base : 0;
          const w = s.narrow ? bw * 0.45 : bw * 0.8;
          out.append(svg("rect", {
            x: L + i * bw + (bw - w) / 2, y: y(from + v), width: w, height: y(from) - y(from + v),
            fill: s.color, class: `bar bar-${s.key}`, "data-value": v, "data-minute": m.minute,
          }, svg("title", {}, `${label}: ${v} ${s.label}`)));
        }
        if (stack) base += v;
      }
      if ((i % 10 === 0 && i < minutes.length - 5) || i === minutes.length - 1) {
        const last = i === minutes.length - 1;
        out.append(svg("text", { x: last ? W - 2 : L + i * bw + bw / 2, y: H - 4, "text-anchor": last ? "end" : "middle" }, label));
      }
    });
    return out;
  }

  function renderHistory(h) {
    $("chart-throughput-box").replaceChildren(chart("chart-throughput", h.minutes, [
      { key: "completed", label: "completed", color: "#18794e" },
      { key: "failed", label: "failed", color: "#c4320a" }], true));
    $("chart-wait-box").replaceChildren(chart("chart-wait", h.minutes, [
      { key: "wait_p95_ms", label: "ms wait (p95)", color: "#9db8ee" },
      { key: "wait_p50_ms", label: "ms wait (p50)", color: "#1d64d8", narrow: true }], false));
  }

  // ---- lanes ----------------------------------------------------------------------------
  function laneRow(l, blocked) {
    const k = laneKey(l.queue, l.lane);
    const open = openLane && laneKey(openLane.queue, openLane.lane) === k;
    const show = () => showLane(l.queue, l.lane);
    if (blocked) {
      return el("tr", { class: "lane" + (open ? " open" : ""), testid: `blocked-lane-${k}`, onclick: show },
        el("td", {}, l.queue), el("td", {}, l.lane),
        el("td", { class: "status status-failed" }, String(l.head_job_id)),
        el("td", {}, String(l.queued)), el("td", {}, age(l.since)),
        el("td", {}, el("button", { testid: `lane-unblock-${k}`, onclick: (e) => unblock(e, l) }, "Unblock")));
    }
    return el("tr", { class: "lane" + (open ? " open" : ""), testid: `lane-row-${k}`, onclick: show },
      el("td", {}, l.queue), el("td", {}, l.lane),
      el("td", { class: `status status-${l.state === "running" ? "processing" : l.state === "blocked" ? "failed" : "pending"}` }, l.state),
      el("td", { testid: `lane-queued-${k}` }, String(l.queued)),
      el("td", {}, l.running_job_id ? String(l.running_job_id) : "—"),
      el("td", {}, l.oldest_pending_at ? age(l.oldest_pending_at) : "—"));
  }

  function renderLanes(blocked, busiest) {
    $("blocked-lanes").replaceChildren(...blocked.lanes.map((l) => laneRow(l, true)));
    $("blocked-empty").classList.toggle("hidden", blocked.lanes.length > 0);
    $("busy-lanes").replaceChildren(...busiest.lanes.map((l) => laneRow(l, false)));
  }

  async function unblock(ev, l) {
    ev.stopPropagation();
    ev.target.disabled = true;
    try {
      const r = await api("POST", "/admin/api/lanes/unblock", { queue: l.queue, lane: l.lane });
      $("lanes-result").textContent = `lane ${l.lane} unblocked (job ${r.failed_job_id} stays failed)`;
      await A.refresh();
    } catch (err) { handle(err); }
  }

  function laneJobRow(j) {
    return el("tr", { class: "lane-job", testid: `lane-job-${j.job_id}`, "data-job-id": j.job_id, "data-status": j.status },
      el("td", {}, String(j.job_id)),
      el("td", { class: `status status-${j.status}` }, j.status, A.delayedMark(j, "lane-job-")),
      el("td", {}, `${j.attempt}/${j.max_attempts}`),
      el("td", {}, short(j.created_at)),
      el("td", {}, short(j.completed_at)));
  }

  async function loadLane() {
    if (!openLane) return;
    const { queue, lane } = openLane;
    const r = await api("GET", `/admin/api/lanes/jobs?queue=${enc(queue)}&lane=${enc(lane)}&finished_limit=20`);
    const rows = r.unfinished.map(laneJobRow);
    if (r.more_unfinished) rows.push(el("tr", { class: "sep" }, el("td", { colSpan: 5 }, "… more waiting")));
    if (r.finished.length) rows.push(el("tr", { class: "sep" }, el("td", { colSpan: 5 }, "recently finished")));
    rows.push(...r.finished.map(laneJobRow));
    if (!rows.length) rows.push(el("tr", { class: "sep" }, el("td", { colSpan: 5 }, "no jobs")));
    $("lane-jobs-title").textContent = `${lane} (${queue})`;
    $("lane-jobs-rows").replaceChildren(...rows);
    $("lane-jobs").classList.remove("hidden");
  }

  async function showLane(queue, lane) {
    openLane = { queue, lane };
    try { await loadLane(); } catch (err) { handle(err); }
  }

  // ---- schedules ------------------------------------------------------------------------
  function renderSchedules(list) {
    $("schedules").replaceChildren(...list.map((s) => el("tr", { testid: `schedule-row-${s.name}`, "data-enabled": String(s.enabled) },
      el("td", {}, s.name),
      el("td", {}, `${s.cron} (${s.timezone || "UTC"})`),
      el("td", {}, s.lane ? `${s.queue} / ${s.lane}` : s.queue),
      el("td", { testid: `schedule-next-${s.name}` }, s.enabled && s.next_fires && s.next_fires.length
        ? s.next_fires.slice(0, 3).map(short).join(" · ") : "—"),
      el("td", {}, s.missed || "—"),
      el("td", {}, el("button", { testid: `schedule-toggle-${s.name}`, onclick: (e) => toggleSchedule(e, s) },
        s.enabled ? "Enabled — disable" : "Disabled — enable")))));
    $("schedules-empty").classList.toggle("hidden", list.length > 0);
  }

  async function toggleSchedule(ev, s) {
    ev.target.disabled = true;
    try {
      await api("PUT", `/admin/api/schedules/${enc(s.name)}`, { enabled: !s.enabled });
      await A.refresh();
    } catch (err) { handle(err); }
  }

  async function refreshSchedules() {
    try {
      const r = await api("GET", "/admin/api/schedules");
      $("schedules-unavailable").classList.add("hidden");
      $("schedule-table").classList.remove("hidden");
      renderSchedules(r.schedules || []);
    } catch (err) {
      // Not served by this gateway (yet): say so, and leave the rest of the page alone.
      if (err instanceof A.HttpError && (err.status === 404 || err.status === 405 || err.status === 501)) {
        $("schedules-unavailable").classList.remove("hidden");
        $("schedule-table").classList.add("hidden");
        $("schedules-empty").classList.add("hidden");
      } else throw err;
    }
  }

  // ---- refresh --------------------------------------------------------------------------
  A.hooks.push(async (stats) => {
    renderQueues(stats.queues);
    const q = $("ops-queue").value;
    const only = q ? `&queue=${enc(q)}` : "";
    const [history, blocked, busiest] = await Promise.all([
      api("GET", `/admin/api/history?minutes=60${only}`),
      api("GET", `/admin/api/lanes?filter=blocked&limit=50${only}`),
      api("GET", `/admin/api/lanes?filter=busiest&limit=10${only}`),
      refreshSchedules()]);
    renderHistory(history);
    renderLanes(blocked, busiest);
    await loadLane();
  });

  buildSettingsForm();
  $("settings").addEventListener("submit", saveSettings);
  $("settings-close").addEventListener("click", () => { settingsQueue = null; $("settings").classList.add("hidden"); });
  $("lane-jobs-close").addEventListener("click", () => { openLane = null; $("lane-jobs").classList.add("hidden"); });
  $("ops-queue").addEventListener("change", () => A.refresh());
  $("confirm-ok").addEventListener("click", () => answer(true));
  $("confirm-cancel").addEventListener("click", () => answer(false));
})();
