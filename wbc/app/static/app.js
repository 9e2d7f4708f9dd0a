// The review app's pages: keyboard-first reclassification, live differentials, boxes drawn on a field.
// No framework and nothing from a CDN: this file and app.css are all the front end.
"use strict";
const body = document.body;
const page = body.dataset.page;
const run = body.dataset.run;
const keys = body.dataset.keys ? JSON.parse(body.dataset.keys) : {};
const keyToLabel = Object.fromEntries(Object.entries(keys).filter(([, k]) => k).map(([l, k]) => [k, l]));

function say(message, error = false) {
  const el = document.getElementById("status");
  el.textContent = message;
  el.className = error ? "error" : "";
}

async function post(url, data = {}) {
  const response = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(data)});
  const answer = await response.json();
  window.serverTimes = [...(window.serverTimes || []), Number(response.headers.get("X-Server-Time"))];  // ms, for benchmarks
  if (!response.ok) throw new Error(answer.detail || response.statusText);
  return answer;
}

const reviewer = document.getElementById("reviewer");
reviewer.addEventListener("change", () => {
  document.cookie = "reviewer=" + encodeURIComponent(reviewer.value) + "; path=/; samesite=strict";
  say("reviewer: " + reviewer.value);
});

function fill(table, diff) {
  if (!table) return;
  const set = (bin, count, percent) => {
    const cell = table.querySelector(`[data-bin="${CSS.escape(bin)}"]`);
    if (cell) { cell.textContent = count; cell.dataset.count = count; }
    const pct = table.querySelector(`[data-bin-percent="${CSS.escape(bin)}"]`);
    if (pct && percent !== undefined) pct.textContent = percent.toFixed(1);
  };
  for (const [bin, v] of Object.entries(diff.per_class)) set(bin, v.count, v.percent);
  for (const [bin, v] of Object.entries(diff.nrbc)) set(bin, v.count);
  set("WBC", diff.wbc);
}

function table(diff) {
  const rows = Object.entries(diff.per_class).filter(([, v]) => v.count)
    .map(([b, v]) => `<tr><td>${b}</td><td data-bin="${b}" data-count="${v.count}">${v.count}</td><td>${v.percent.toFixed(1)}</td></tr>`);
  return `<table class="differential" data-differential="live"><tr><th>class</th><th>count</th><th>%</th></tr>${rows.join("")}` +
         `<tr><th>WBC</th><th data-bin="WBC" data-count="${diff.wbc}">${diff.wbc}</th><th>100</th></tr></table>`;
}

async function refresh() {
  if (!run) return;
  const d = await (await fetch(`/api/runs/${run}/differential`)).json();
  fill(document.querySelector('[data-differential="run"]'), d.run);
  if (body.dataset.smear) fill(document.querySelector('[data-differential="smear"]'), d.per_smear[body.dataset.smear]);
  const live = document.getElementById("live");
  if (live) live.innerHTML = table(d.run);
  for (const row of document.querySelectorAll("tr[data-smear]")) {
    const s = d.per_smear[row.dataset.smear];
    row.querySelector("[data-smear-wbc]").textContent = s.wbc;
    row.querySelector("[data-smear-unidentified]").textContent = s.per_class.unidentified.count;
  }
}

// --- cells: the gallery's figures or the smear view's boxes ------------------------------------------
const items = [...document.querySelectorAll("figure[data-cell], rect[data-cell]")];
const selected = new Set();
let focused = items.length ? 0 : -1;

function show() {
  items.forEach((el, i) => {
    el.classList.toggle("focus", i === focused);
    el.classList.toggle("selected", selected.has(el.dataset.cell));
  });
  const el = items[focused];
  if (!el) return;
  if (el.tagName === "FIGURE") el.scrollIntoView({block: "nearest"});
  const info = document.getElementById("selected");
  if (info) info.textContent = `cell ${el.dataset.cell}: ${el.dataset.label}`;
}

function columns() {
  if (!items.length || items[0].tagName !== "FIGURE") return 1;
  const top = items[0].offsetTop;
  const n = items.findIndex(el => el.offsetTop !== top);
  return n === -1 ? items.length : n;
}

function labelled(id, label) {
  const el = items.find(e => e.dataset.cell === String(id));
  if (!el) return;
  el.dataset.label = label;
  const current = el.querySelector("[data-current]");
  if (current) current.textContent = label;
  const title = el.querySelector("title");
  if (title) title.textContent = label;
  el.classList.add("done");
}

async function relabel(label) {
  const ids = selected.size ? [...selected] : items[focused] ? [items[focused].dataset.cell] : [];
  if (!ids.length) return;
  try {
    const answer = await post("/api/cells/label", {cells: ids.map(Number), label});
    ids.forEach(id => labelled(id, label));
    say(`${answer.changed.length} cell(s) → ${label}`);
    selected.clear();
    if (focused < items.length - 1) focused += 1;
    show();
    refresh();
  } catch (e) { say(e.message, true); }
}

async function undo() {
  try {
    const answer = await post(`/api/runs/${run}/undo`);
    if (!answer.undone) { say("nothing to undo"); return; }
    if (answer.undone.kind === "added") location.reload();
    labelled(answer.undone.cell, answer.undone.restored);
    const i = items.findIndex(e => e.dataset.cell === String(answer.undone.cell));
    if (i >= 0) focused = i;
    say(`undone: cell ${answer.undone.cell} is ${answer.undone.restored} again`);
    show();
    refresh();
  } catch (e) { say(e.message, true); }
}

document.addEventListener("keydown", e => {
  if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT" || e.ctrlKey && e.key !== "z" || e.metaKey || e.altKey) return;
  const step = {ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns(), ArrowUp: -columns()}[e.key];
  if (step !== undefined && items.length) {
    focused = Math.max(0, Math.min(items.length - 1, focused + step));
    show();
  } else if (e.key === " " && items[focused]) {
    const id = items[focused].dataset.cell;
    selected.has(id) ? selected.delete(id) : selected.add(id);
    show();
  } else if (e.key === "z") {
    undo();
  } else if (keyToLabel[e.key.toLowerCase()]) {
    relabel(keyToLabel[e.key.toLowerCase()]);
  } else {
    return;
  }
  e.preventDefault();
});

items.forEach((el, i) => el.addEventListener("click", e => {
  if (e.target.tagName === "A") return;
  focused = i;
  if (e.shiftKey) { const id = el.dataset.cell; selected.has(id) ? selected.delete(id) : selected.add(id); }
  show();
}));
document.querySelectorAll("[data-relabel]").forEach(b => b.addEventListener("click", () => relabel(b.dataset.relabel)));
document.querySelectorAll("[data-undo]").forEach(b => b.addEventListener("click", undo));

// --- smear view: drag to box a missed cell (a click without a drag selects the box under it) -------
const svg = document.getElementById("boxes");
if (svg) {
  let start = null, drawn = null;
  const point = e => {
    const r = svg.getBoundingClientRect();
    return [(e.clientX - r.left) / r.width * Number(body.dataset.width), (e.clientY - r.top) / r.height * Number(body.dataset.height)];
  };
  svg.addEventListener("mousedown", e => { start = {at: point(e), x: e.clientX, y: e.clientY}; e.preventDefault(); });
  svg.addEventListener("mousemove", e => {
    if (!start) return;
    if (!drawn && Math.hypot(e.clientX - start.x, e.clientY - start.y) < 5) return;
    if (!drawn) {
      drawn = document.createElementNS("http://www.w3.org/2000/svg", "rect");
      drawn.classList.add("drawing");
      svg.appendChild(drawn);
    }
    const [x, y] = point(e), [x0, y0] = start.at;
    drawn.setAttribute("x", Math.min(x, x0)); drawn.setAttribute("y", Math.min(y, y0));
    drawn.setAttribute("width", Math.abs(x - x0)); drawn.setAttribute("height", Math.abs(y - y0));
  });
  document.addEventListener("mouseup", async e => {
    if (!start) return;
    const was = start, box = drawn;
    start = drawn = null;
    if (!box) return;  // a click: the box's own click handler selects it
    box.dataset.drawn = "1";
    const [x, y] = point(e);
    try {
      await post(`/api/smears/${body.dataset.smear}/cells`, {box: [was.at[0], was.at[1], x, y], label: document.getElementById("new-label").value});
      location.reload();
    } catch (err) { box.remove(); say(err.message, true); }
  });
}

// --- approve and export ----------------------------------------------------------------------------
document.querySelectorAll("button.approve").forEach(b => b.addEventListener("click", async () => {
  try {
    await post(`/api/smears/${b.dataset.smear}/approve`, {user: reviewer.value});
    say(`smear approved by ${reviewer.value}`);
    const row = document.querySelector(`tr[data-smear="${b.dataset.smear}"] [data-smear-status]`);
    if (row) row.textContent = "approved by " + reviewer.value;
    b.remove();
  } catch (e) { say(e.message, true); }
}));
const exportButton = document.getElementById("export");
if (exportButton) exportButton.addEventListener("click", async () => {
  try {
    const answer = await post(`/api/runs/${run}/export`);
    document.getElementById("exported").textContent = JSON.stringify(answer, null, 1);
    say("exported to " + answer.folder);
  } catch (e) { say(e.message, true); }
});

show();
if (run) { refresh(); if (page === "overview") setInterval(refresh, 2000); }
