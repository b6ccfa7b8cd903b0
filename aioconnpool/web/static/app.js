// aioconnpool dashboard: polls the JSON endpoints next to this page and
// draws them. Vanilla JS, no dependency, no inline code (the page's CSP
// allows only this file).
"use strict";

(function () {
  const params = new URLSearchParams(window.location.search);
  const token = params.get("token");
  const state = {
    connector: null,
    sort: "acquired",
    order: "desc",
    q: "",
    page: 1,
    perPage: 50,
    lastEvent: 0,
    interval: 1000,
    columns: [],
  };
  const $ = (id) => document.getElementById(id);
  const TOTALS = [
    "acquired", "idle", "connecting", "waiting", "open", "limit",
    "limit_per_host", "available", "fd_budget", "requests", "created",
    "reused", "connect_errors", "rejected", "wait_timeouts", "hosts_count",
    "forgotten_hosts",
  ];
  const KNOWN = new Set(TOTALS.concat([
    "released", "closed", "wait_time", "connect_time", "hold_time", "lifetime",
    "host_limits", "forgotten", "is_closed", "fleet",
  ]));
  const HISTOGRAMS = ["wait_time", "connect_time", "hold_time", "lifetime"];
  const POLITENESS = [
    "delay_per_host", "delay_jitter", "pacing_waiting", "paced", "pacing_late",
    "pauses", "paused_hosts", "limit_adjustments",
  ];
  for (const name of POLITENESS.concat(["host_delays"])) KNOWN.add(name);

  function url(path, query) {
    const q = new URLSearchParams(query || {});
    if (state.connector) q.set("connector", state.connector);
    if (token) q.set("token", token);
    const s = q.toString();
    return s ? path + "?" + s : path;
  }

  async function getJSON(path, query) {
    const response = await fetch(url(path, query), { cache: "no-store" });
    const body = await response.json();
    if (!response.ok) {
      const error = new Error(body.error || response.statusText);
      error.body = body;
      throw error;
    }
    return body;
  }

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  // None is "no limit" for a limit, "nothing" anywhere else.
  const UNLIMITED = new Set(["limit", "available", "limit_per_host", "fd_budget"]);

  function show(value, name) {
    if (value === null || value === undefined) return UNLIMITED.has(name) ? "\u221e" : "\u2013";
    if (typeof value === "number" && !Number.isInteger(value)) return value.toFixed(3);
    return String(value);
  }

  function figures(container, entries) {
    container.replaceChildren();
    for (const [name, value] of entries) {
      const box = el("div", { "data-figure": name });
      box.append(el("dt", {}, name.replace(/_/g, " ")), el("dd", {}, show(value, name)));
      container.append(box);
    }
  }

  function seconds(bound) {
    if (bound === "+Inf") return "\u221e";
    return bound < 1 ? Math.round(bound * 1000) + "ms" : bound + "s";
  }

  // A bar chart: one bar per label, scaled to the largest value.
  function barChart(id, title, labels, values, note) {
    const pad = 40;  // room for the first label, slanted to the left
    const width = Math.max(240, labels.length * 24) + pad, height = 190, base = 120;
    const most = Math.max(1, ...values);
    const figure = el("figure", { class: "chart", id: id });
    const chart = svg("svg", { width: width, height: height, role: "img", "aria-label": title });
    const step = (width - pad) / labels.length;
    labels.forEach((label, i) => {
      const h = Math.round((values[i] / most) * (base - 12));
      const bar = svg("rect", {
        class: "bar", x: pad + i * step + 2, y: base - h, width: step - 4, height: Math.max(h, 0),
        "data-value": values[i],
      });
      const tip = svg("title", {});
      tip.textContent = label + ": " + values[i];
      bar.append(tip);
      chart.append(bar);
      const x = pad + i * step + step / 2, y = base + 10;
      const text = svg("text", { x: x, y: y, "text-anchor": "end", transform: "rotate(-45 " + x + " " + y + ")" });
      text.textContent = label;
      chart.append(text);
    });
    const caption = el("figcaption", {}, title + (note ? " \u2014 " + note : ""));
    figure.append(chart, caption);
    return figure;
  }

  function drawHistograms(stats) {
    const box = $("histograms");
    box.replaceChildren();
    for (const name of HISTOGRAMS) {
      const h = stats[name];
      if (!h) continue;
      const labels = h.bounds.map((b) => "\u2264" + seconds(b));
      const mean = h.mean === null ? "no samples" : "mean " + seconds(Number(h.mean.toPrecision(3)));
      box.append(barChart("chart-" + name, name.replace(/_/g, " ") + " (" + h.count + ")", labels, h.counts, mean));
    }
  }

  function drawEndings(stats) {
    const box = $("endings");
    box.replaceChildren();
    for (const [name, title] of [["released", "how acquisitions ended"], ["closed", "why connections closed"]]) {
      const counts = stats[name] || {};
      const labels = Object.keys(counts);
      box.append(barChart("chart-" + name, title, labels, labels.map((k) => counts[k])));
    }
  }

  function drawFleet(fleet) {
    $("fleet-section").hidden = !fleet;
    if (!fleet) return;
    figures($("fleet"), Object.entries(fleet).filter(([, v]) => typeof v !== "object" || v === null));
    const body = $("fleet-hosts").tBodies[0];
    body.replaceChildren();
    for (const [host, f] of Object.entries(fleet.hosts || {})) {
      const row = el("tr");
      for (const v of [host, f.limit, f.acquired, f.waiting, f.mine, f.waiting_here]) row.append(el("td", {}, show(v)));
      body.append(row);
    }
  }

  // Figures the page does not know yet (a newer pool's): shown as they are.
  function drawMore(stats) {
    const extra = Object.entries(stats).filter(([k, v]) => !KNOWN.has(k) && (typeof v !== "object" || v === null));
    $("more-section").hidden = extra.length === 0;
    figures($("more"), extra);
  }

  function drawLeaks(leaks) {
    const box = $("leaks");
    box.replaceChildren();
    if (leaks === null) {
      box.append(el("p", {}, "leak detection is off (PoolConnector(leak_threshold=...) turns it on)"));
      return;
    }
    if (leaks.length === 0) {
      box.append(el("p", {}, "none"));
      return;
    }
    for (const leak of leaks) {
      const item = el("details", { class: "leak" });
      item.append(el("summary", {}, leak.host + " held " + leak.held_for.toFixed(1) + " s by " + (leak.task || "?")));
      item.append(el("pre", {}, leak.stack || "(no stack)"));
      box.append(item);
    }
  }

  function drawLoop(status) {
    const loop = status.loop;
    const banner = $("loop-banner");
    if (loop.responsive) {
      banner.hidden = true;
      return;
    }
    const at = new Date(status.snapshot_at * 1000).toLocaleTimeString();
    $("loop-message").textContent =
      "event loop unresponsive for " + loop.unresponsive_for.toFixed(1) + " s; last snapshot at " + at;
    $("loop-stack").textContent = (loop.stack || ["(not available)"]).join("");
    banner.hidden = false;
  }

  function drawConnectors(status) {
    const select = $("connector");
    if (select.options.length !== status.connectors.length) {
      select.replaceChildren(...status.connectors.map((n) => el("option", { value: n }, n)));
    }
    select.value = status.connector;
    $("connector-choice").hidden = status.connectors.length < 2;
  }

  function drawHeader() {
    const row = $("hosts").tHead.rows[0];
    if (row.cells.length === state.columns.length) {
      for (const th of row.cells) {
        th.className = th.dataset.sort === state.sort ? "sorted " + state.order : "";
      }
      return;
    }
    row.replaceChildren();
    for (const column of state.columns) {
      const th = el("th", { "data-sort": column, scope: "col" }, column.replace(/_/g, " "));
      th.addEventListener("click", () => {
        if (state.sort === column) {
          state.order = state.order === "desc" ? "asc" : "desc";
        } else {
          state.sort = column;
          state.order = column === "host" ? "asc" : "desc";
        }
        state.page = 1;
        refreshHosts();
      });
      row.append(th);
    }
    drawHeader();
  }

  function drawHosts(page) {
    state.columns = page.columns;
    state.page = page.page;
    drawHeader();
    const body = $("hosts").tBodies[0];
    body.replaceChildren();
    for (const r of page.rows) {
      const row = el("tr", { "data-host": r.host });
      for (const column of page.columns) row.append(el("td", { "data-column": column }, show(r[column], column)));
      body.append(row);
    }
    $("hosts-count").textContent =
      page.matching === page.total ? page.total + " hosts" : page.matching + " of " + page.total + " hosts";
    $("page-info").textContent = "page " + page.page + " of " + page.pages;
    $("prev").disabled = page.page <= 1;
    $("next").disabled = page.page >= page.pages;
  }

  function drawEvents(list) {
    const box = $("events");
    for (const e of list) {
      const when = new Date().toLocaleTimeString();
      const extra = Object.entries(e)
        .filter(([k]) => !["kind", "key", "at", "number", "stack"].includes(k))
        .map(([k, v]) => k + "=" + show(v)).join(" ");
      box.prepend(el("li", { "data-kind": e.kind }, when + " " + e.kind + " " + e.key + " " + extra));
    }
    while (box.children.length > 200) box.lastChild.remove();
  }

  function problem(message) {
    const banner = $("error-banner");
    banner.hidden = !message;
    banner.textContent = message || "";
  }

  async function refreshHosts() {
    const page = await getJSON("hosts.json", {
      sort: state.sort, order: state.order, q: state.q, page: state.page, per_page: state.perPage,
    });
    drawHosts(page);
  }

  async function refresh() {
    const status = await getJSON("status.json");
    state.connector = status.connector;
    state.interval = Math.max(250, status.interval * 1000);
    drawConnectors(status);
    drawLoop(status);
    const stats = status.stats;
    figures($("totals"), TOTALS.filter((k) => k in stats).map((k) => [k, stats[k]]));
    drawHistograms(stats);
    drawEndings(stats);
    drawFleet(stats.fleet);
    const polite = POLITENESS.filter((k) => k in stats);
    $("politeness-section").hidden = polite.length === 0;
    figures($("politeness"), polite.map((k) => [k, stats[k]]));
    drawMore(stats);
    drawLeaks(status.leaks);
    $("snapshot").textContent = "snapshot at " + new Date(status.snapshot_at * 1000).toLocaleTimeString();
    await refreshHosts();
    if (status.last_event !== state.lastEvent) {
      const events = await getJSON("events.json", { after: state.lastEvent });
      drawEvents(events.events);
      state.lastEvent = events.last;
    }
  }

  async function loop() {
    try {
      await refresh();
      problem(null);
    } catch (error) {
      problem("the dashboard cannot be read: " + error.message);
    }
    window.setTimeout(loop, state.interval);
  }

  function wire() {
    let typing = null;
    $("filter").addEventListener("input", (event) => {
      window.clearTimeout(typing);
      typing = window.setTimeout(() => {
        state.q = event.target.value;
        state.page = 1;
        refreshHosts().catch((e) => problem(e.message));
      }, 150);
    });
    $("per-page").addEventListener("change", (event) => {
      state.perPage = Number(event.target.value);
      state.page = 1;
      refreshHosts().catch((e) => problem(e.message));
    });
    $("prev").addEventListener("click", () => {
      state.page = Math.max(1, state.page - 1);
      refreshHosts().catch((e) => problem(e.message));
    });
    $("next").addEventListener("click", () => {
      state.page += 1;
      refreshHosts().catch((e) => problem(e.message));
    });
    $("connector").addEventListener("change", (event) => {
      state.connector = event.target.value;
      state.page = 1;
      state.lastEvent = 0;
      $("events").replaceChildren();
      loop();
    });
  }

  wire();
  loop();
})();
