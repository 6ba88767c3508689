// greenstalk web console: polls the console's JSON API and acts through it.
// Plain browser JavaScript, no build step, nothing loaded from elsewhere.
"use strict";

(() => {
  const HEADERS = {"Content-Type": "application/json", "X-Requested-By": "greenstalk-web"};
  const NUMBERS = ["ready", "reserved", "delayed", "buried", "urgent", "waiting", "watching",
                   "total", "pause_time_left"];
  const view = {
    servers: [],
    sort: {key: "name", direction: 1},
    selected: null,   // {server: index, tube: name}
    tubeData: null,
    filter: "",
    refresh: 1000,
    timer: null,
  };
  const $ = (id) => document.getElementById(id);

  // -- talking to the console ----------------------------------------------------------

  async function answer(response) {
    let data;
    try {
      data = await response.json();
    } catch (error) {
      data = {error: response.statusText || "no answer"};
    }
    if (!response.ok) {
      throw new Error(data.error || response.statusText);
    }
    return data;
  }

  function read(url) {
    return fetch(url, {credentials: "same-origin", cache: "no-store"}).then(answer);
  }

  function act(action, fields) {
    return fetch("api/" + action, {
      method: "POST",
      headers: HEADERS,
      credentials: "same-origin",
      body: JSON.stringify(fields),
    }).then(answer);
  }

  // -- small helpers ----------------------------------------------------------------

  // An element with attributes and children (text children become text nodes: no HTML).
  function make(tag, attributes, ...children) {
    const element = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (name === "class") {
        element.className = value;
      } else if (name.startsWith("data-")) {
        element.dataset[name.slice(5).replace(/-(.)/g, (_, c) => c.toUpperCase())] = value;
      } else {
        element.setAttribute(name, value);
      }
    }
    for (const child of children) {
      if (child !== null && child !== undefined) {
        element.append(child instanceof Node ? child : String(child));
      }
    }
    return element;
  }

  function duration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    if (s < 60) return s + "s";
    const parts = [];
    const days = Math.floor(s / 86400);
    const hours = Math.floor((s % 86400) / 3600);
    const minutes = Math.floor((s % 3600) / 60);
    if (days) parts.push(days + "d");
    if (days || hours) parts.push(hours + "h");
    parts.push(minutes + "m");
    if (!days) parts.push((s % 60) + "s");
    return parts.join(" ");
  }

  function status(text, isError) {
    const line = $("status");
    line.textContent = text;
    line.classList.toggle("error", Boolean(isError));
  }

  function notice(text, isError) {
    const line = $("notice");
    line.textContent = text;
    line.hidden = !text;
    line.classList.toggle("error", Boolean(isError));
  }

  async function run(work, done) {
    try {
      const result = await work;
      notice(done(result), false);
    } catch (error) {
      notice(error.message, true);
    }
    await refresh();
  }

  // -- servers and tubes ------------------------------------------------------------

  function serverCard(server) {
    const card = make("article", {class: "server " + (server.up ? "up" : "down"),
                                  "data-server": server.index},
                      make("h2", {}, server.name,
                           make("span", {class: "badge"}, server.up ? "up" : "down")));
    if (!server.up) {
      card.append(make("p", {class: "error"}, server.error || "not reachable"));
      return card;
    }
    const stats = server.stats;
    const facts = [
      ["version", stats.version],
      ["uptime", duration(stats.uptime)],
      ["connections", stats["current-connections"]],
      ["ready", stats["current-jobs-ready"]],
      ["reserved", stats["current-jobs-reserved"]],
      ["delayed", stats["current-jobs-delayed"]],
      ["buried", stats["current-jobs-buried"]],
      ["jobs put", stats["total-jobs"]],
    ];
    if (stats.draining) facts.push(["draining", "yes"]);
    const list = make("dl");
    for (const [name, value] of facts) {
      list.append(make("dt", {}, name), make("dd", {"data-stat": name}, value));
    }
    card.append(list);
    return card;
  }

  function allTubes() {
    const rows = [];
    for (const server of view.servers) {
      for (const tube of server.tubes) {
        rows.push(Object.assign({server: server.index, serverName: server.name}, tube));
      }
    }
    const filter = view.filter.toLowerCase();
    const shown = filter ? rows.filter((row) => row.name.toLowerCase().includes(filter)) : rows;
    const {key, direction} = view.sort;
    const byName = (a, b) => a.serverName.localeCompare(b.serverName) || a.name.localeCompare(b.name);
    shown.sort((a, b) => {
      let order;
      if (key === "server") order = a.serverName.localeCompare(b.serverName);
      else if (key === "name") order = a.name.localeCompare(b.name);
      else order = a[key] - b[key];
      return direction * order || byName(a, b);
    });
    return {shown, total: rows.length};
  }

  // Rows are kept from one refresh to the next and updated in place, so that
  // what is being clicked or read does not vanish under the pointer.
  const rowsByKey = new Map();

  function tubeRow(row) {
    const key = row.server + "\u0000" + row.name;
    let tr = rowsByKey.get(key);
    if (!tr) {
      tr = make("tr", {"data-server": row.server, "data-tube": row.name},
                make("td", {"data-col": "server"}, row.serverName),
                make("td", {"data-col": "name"}, row.name));
      for (const column of NUMBERS) tr.append(make("td", {"data-col": column}));
      tr.addEventListener("click", () => select(row.server, row.name));
      rowsByKey.set(key, tr);
    }
    const selected = view.selected && view.selected.server === row.server &&
                     view.selected.tube === row.name;
    tr.classList.toggle("selected", Boolean(selected));
    NUMBERS.forEach((column, index) => {
      const value = row[column];
      let shown = String(value);
      let style = value ? "" : "zero";
      if (column === "pause_time_left") {
        shown = row.pause ? duration(value) : "–";
        style = row.pause ? "paused" : "zero";
      } else if (column === "buried" && value) {
        style = "alert";
      }
      const cell = tr.cells[index + 2];   // after the server and the tube
      if (cell.textContent !== shown) cell.textContent = shown;
      const className = "number " + style;
      if (cell.className !== className) cell.className = className;
    });
    return {key, tr};
  }

  function renderOverview() {
    $("servers").replaceChildren(...view.servers.map(serverCard));
    const {shown, total} = allTubes();
    const body = document.querySelector("#tubes tbody");
    const kept = new Set();
    let before = body.firstChild;
    for (const row of shown) {
      const {key, tr} = tubeRow(row);
      kept.add(key);
      if (tr === before) {
        before = tr.nextSibling;
      } else {
        body.insertBefore(tr, before);
      }
    }
    for (const [key, tr] of rowsByKey) {
      if (!kept.has(key)) {
        tr.remove();
        rowsByKey.delete(key);
      }
    }
    $("tube-count").textContent = shown.length === total
      ? `${total} tube${total === 1 ? "" : "s"}`
      : `${shown.length} of ${total} tubes`;
    for (const th of document.querySelectorAll("#tubes th")) {
      if (th.dataset.key === view.sort.key) {
        th.setAttribute("aria-sort", view.sort.direction > 0 ? "ascending" : "descending");
      } else {
        th.removeAttribute("aria-sort");
      }
    }
    const names = new Set();
    for (const server of view.servers) for (const tube of server.tubes) names.add(tube.name);
    $("tube-names").replaceChildren(...[...names].sort().map((name) => make("option", {value: name})));
  }

  async function refresh() {
    clearTimeout(view.timer);
    try {
      const data = await read("api/state");
      view.refresh = Math.max(200, data.refresh * 1000);
      view.servers = data.servers;
      renderOverview();
      if (view.selected) await refreshTube();
      const down = data.servers.filter((server) => !server.up).length;
      if (down) {
        status(`${down} of ${data.servers.length} server${data.servers.length === 1 ? "" : "s"} down`, true);
      } else {
        status("updated " + new Date().toLocaleTimeString(), false);
      }
    } catch (error) {
      status("cannot reach the console: " + error.message, true);
    }
    view.timer = setTimeout(refresh, view.refresh);
  }

  // -- one tube -----------------------------------------------------------------------

  function select(server, tube) {
    view.selected = {server, tube};
    view.tubeData = null;
    const name = view.servers[server] ? view.servers[server].name : "";
    $("tube-title").textContent = `${tube} on ${name}`;
    $("tube").hidden = false;
    $("tube-counts").textContent = "";
    for (const box of document.querySelectorAll("#tube .job-body")) {
      delete box.dataset.job;
      box.replaceChildren();
    }
    renderOverview();
    refreshTube();
  }

  async function refreshTube() {
    const chosen = view.selected;
    if (!chosen) return;
    let data;
    try {
      data = await read(`api/tube?server=${chosen.server}&tube=${encodeURIComponent(chosen.tube)}`);
    } catch (error) {
      $("tube-counts").textContent = error.message;
      return;
    }
    if (view.selected !== chosen) return;   // another tube was chosen meanwhile
    view.tubeData = data;
    if (!data.exists) {
      $("tube-counts").textContent = "This tube does not exist (any more): it has no jobs and no clients.";
      for (const state of ["ready", "delayed", "buried"]) renderJob(state, null);
      return;
    }
    const s = data.stats;
    const paused = s.pause ? ` · paused, ${duration(s.pause_time_left)} left` : "";
    $("tube-counts").textContent =
      `${s.ready} ready · ${s.reserved} reserved · ${s.delayed} delayed · ${s.buried} buried · ` +
      `${s.waiting} waiting · ${s.total} put in all${paused}`;
    $("tube-counts").dataset.paused = s.pause ? "yes" : "no";
    $("delete-buried").disabled = s.buried === 0;
    for (const state of ["ready", "delayed", "buried"]) renderJob(state, data.jobs[state]);
  }

  function renderJob(state, job) {
    const box = document.querySelector(`#job-${state} .job-body`);
    if (!job) {
      if (box.dataset.job !== "") {
        box.dataset.job = "";
        box.replaceChildren(make("p", {class: "none"}, `No ${state} job.`));
      }
      return;
    }
    const facts = [
      ["id", job.id],
      ["priority", job.priority],
      ["age", duration(job.age)],
      ["TTR", duration(job.ttr)],
    ];
    if (state === "delayed") facts.push(["ready in", duration(job.time_left)]);
    facts.push(["reserves", job.reserves], ["kicks", job.kicks],
               ["size", `${job.size} byte${job.size === 1 ? "" : "s"}${job.text ? "" : ", not text"}`]);
    if (box.dataset.job === String(job.id)) {   // the same job: update its facts only
      for (const [name, value] of facts) {
        const fact = box.querySelector(`dd[data-fact="${name}"]`);
        if (fact && fact.textContent !== String(value)) fact.textContent = value;
      }
      return;
    }
    box.dataset.job = String(job.id);
    const list = make("dl");
    for (const [name, value] of facts) list.append(make("dt", {}, name), make("dd", {"data-fact": name}, value));
    const body = make("pre", {class: "preview"}, job.preview + (job.truncated ? " …" : ""));
    const buttons = make("div", {class: "buttons"});
    if (state !== "ready") {
      buttons.append(make("button", {type: "button", "data-action": "kick-job", "data-id": job.id}, "Kick"));
    }
    buttons.append(
      make("button", {type: "button", "data-action": "move", "data-id": job.id, class: "quiet"}, "Move…"),
      make("button", {type: "button", "data-action": "delete", "data-id": job.id, class: "danger"}, "Delete…"),
    );
    box.replaceChildren(list, body, buttons);
  }

  // -- dialogs -------------------------------------------------------------------------

  function confirmDialog(text, okLabel) {
    const dialog = $("confirm-dialog");
    $("confirm-text").textContent = text;
    $("confirm-ok").textContent = okLabel;
    dialog.showModal();
    return new Promise((resolve) => {
      const finish = (answer) => {
        $("confirm-form").onsubmit = null;
        $("confirm-cancel").onclick = null;
        dialog.onclose = null;
        if (dialog.open) dialog.close();
        resolve(answer);
      };
      $("confirm-form").onsubmit = (event) => { event.preventDefault(); finish(true); };
      $("confirm-cancel").onclick = () => finish(false);
      dialog.onclose = () => finish(false);
    });
  }

  function moveDialog(jobId) {
    const dialog = $("move-dialog");
    $("move-job").textContent = jobId;
    $("move-target").value = "";
    dialog.showModal();
    return new Promise((resolve) => {
      const finish = (target) => {
        $("move-form").onsubmit = null;
        $("move-cancel").onclick = null;
        dialog.onclose = null;
        if (dialog.open) dialog.close();
        resolve(target);
      };
      $("move-form").onsubmit = (event) => {
        event.preventDefault();
        finish($("move-target").value.trim());
      };
      $("move-cancel").onclick = () => finish(null);
      dialog.onclose = () => finish(null);
    });
  }

  // -- wiring ---------------------------------------------------------------------------

  function number(id) {
    return Number.parseInt($(id).value, 10);
  }

  function wire() {
    for (const th of document.querySelectorAll("#tubes th")) {
      th.querySelector("button").addEventListener("click", () => {
        const key = th.dataset.key;
        if (view.sort.key === key) {
          view.sort.direction = -view.sort.direction;
        } else {
          // Names read best A to Z; counts, largest first.
          view.sort = {key, direction: key === "name" || key === "server" ? 1 : -1};
        }
        renderOverview();
      });
    }
    $("filter").addEventListener("input", (event) => {
      view.filter = event.target.value;
      renderOverview();
    });
    $("tube-close").addEventListener("click", () => {
      view.selected = null;
      $("tube").hidden = true;
      renderOverview();
    });
    $("kick-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const {server, tube} = view.selected;
      run(act("kick", {server, tube, bound: number("kick-bound")}),
          (result) => `kicked ${result.kicked} job${result.kicked === 1 ? "" : "s"} in ${tube}`);
    });
    $("pause-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const {server, tube} = view.selected;
      const seconds = number("pause-seconds");
      run(act("pause", {server, tube, seconds}), () => `paused ${tube} for ${duration(seconds)}`);
    });
    $("unpause").addEventListener("click", () => {
      const {server, tube} = view.selected;
      run(act("pause", {server, tube, seconds: 0}), () => `${tube} is no longer paused`);
    });
    $("delete-buried").addEventListener("click", async () => {
      const {server, tube} = view.selected;
      const count = view.tubeData && view.tubeData.stats ? view.tubeData.stats.buried : 0;
      const serverName = view.servers[server].name;
      const text = `Delete all ${count} buried job${count === 1 ? "" : "s"} of tube ${tube} on ` +
                   `${serverName}? This cannot be undone.`;
      if (await confirmDialog(text, "Delete buried jobs")) {
        run(act("delete-buried", {server, tube, confirm: tube}),
            (result) => `deleted ${result.deleted} buried job${result.deleted === 1 ? "" : "s"} of ${tube}`);
      }
    });
    $("put-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const {server, tube} = view.selected;
      const fields = {
        server, tube,
        body: $("put-body").value,
        priority: number("put-priority"),
        delay: number("put-delay"),
        ttr: number("put-ttr"),
      };
      run(act("put", fields), (result) => {
        $("put-body").value = "";
        return `put job ${result.id} into ${tube}`;
      });
    });
    document.querySelector("#tube .jobs").addEventListener("click", async (event) => {
      const button = event.target.closest("button[data-action]");
      if (!button) return;
      const server = view.selected.server;
      const id = Number(button.dataset.id);
      const action = button.dataset.action;
      if (action === "kick-job") {
        run(act("kick-job", {server, id}), () => `kicked job ${id}`);
      } else if (action === "delete") {
        if (await confirmDialog(`Delete job ${id}? This cannot be undone.`, "Delete job")) {
          run(act("delete", {server, id}), () => `deleted job ${id}`);
        }
      } else if (action === "move") {
        const target = await moveDialog(id);
        if (target) {
          run(act("move", {server, id, to: target}),
              (result) => `moved job ${id} to ${target} (now job ${result.id})`);
        }
      }
    });
  }

  wire();
  refresh();
})();
