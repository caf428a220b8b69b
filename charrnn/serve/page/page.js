// The page of `charrnn serve`: write, press Tab for the model's continuation, and see a cell
// painted over the text. Every text from the model or the server reaches the page as text
// (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const text = $("text"), offers = $("offers"), painted = $("painted"), status = $("status");
let chosen = -1, timer = null, asked = 0;

function say(line) { status.textContent = line || ""; }

async function call(path, body) {
  const response = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"},
                                      body: JSON.stringify(body)});
  const data = await response.json();
  if (!response.ok) {
    const detail = typeof data.detail === "string" ? data.detail
      : (data.detail || []).map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
    throw new Error(detail || response.statusText);
  }
  return data;
}

async function loadRuns() {
  const response = await fetch("/api/runs");
  const data = await response.json();
  for (const run of data.runs) {
    const option = document.createElement("option");
    option.value = run.name;
    option.textContent = run.name;
    $("run").appendChild(option);
  }
  describe(data.runs);
  $("run").addEventListener("change", () => { describe(data.runs); repaint(); });
}

function describe(runs) {
  const run = runs.find((r) => r.name === $("run").value);
  if (!run) return;
  const m = run.model;
  $("about").textContent = `${m.layers}x${m.hidden_size} ${m.model}, ${run.vocab_size} characters` +
    (run.corpus ? `, trained on ${run.corpus}` : "");
}

// -- Tab: the model's continuation --------------------------------------------------------------

async function offer() {
  const mine = ++asked;
  say("asking the model...");
  try {
    const data = await call("/api/complete", {run: $("run").value, text: text.value.slice(-20000)});
    if (mine !== asked) return;
    show([["beam", data.beam], ...data.samples.map((s) => ["sample", s])]);
    say("");
  } catch (e) { say(e.message); }
}

function show(items) {
  offers.replaceChildren();
  for (const [kind, continuation] of items) {
    const li = document.createElement("li");
    const tag = document.createElement("span");
    tag.className = "kind";
    tag.textContent = kind;
    li.append(tag, document.createTextNode(continuation));
    li.dataset.text = continuation;
    li.addEventListener("click", () => take(li));
    offers.appendChild(li);
  }
  offers.hidden = items.length === 0;
  choose(0);
}

function choose(k) {
  const items = offers.children;
  if (!items.length) return;
  chosen = (k + items.length) % items.length;
  [...items].forEach((li, i) => li.classList.toggle("chosen", i === chosen));
}

function take(li) {
  const at = text.selectionEnd;
  text.value = text.value.slice(0, at) + li.dataset.text + text.value.slice(at);
  text.selectionStart = text.selectionEnd = at + li.dataset.text.length;
  close();
  text.focus();
  repaintSoon();
}

function close() { offers.hidden = true; offers.replaceChildren(); chosen = -1; }

text.addEventListener("keydown", (event) => {
  const open = !offers.hidden;
  if (event.key === "Tab") {
    event.preventDefault();
    if (open) choose(chosen + (event.shiftKey ? -1 : 1)); else offer();
  } else if (open && event.key === "ArrowDown") { event.preventDefault(); choose(chosen + 1); }
  else if (open && event.key === "ArrowUp") { event.preventDefault(); choose(chosen - 1); }
  else if (open && event.key === "Enter") { event.preventDefault(); take(offers.children[chosen]); }
  else if (open && event.key === "Escape") { close(); }
});
text.addEventListener("input", () => { close(); repaintSoon(); });

// -- the cells, painted over the text -----------------------------------------------------------

function repaintSoon() { clearTimeout(timer); timer = setTimeout(repaint, 300); }

async function repaint() {
  const written = text.value.slice(-20000);
  if (written.length < 2) { painted.replaceChildren(); $("painted-title").textContent = ""; return; }
  const body = {run: $("run").value, text: written};
  if ($("state").value.trim()) body.state = $("state").value.trim();
  if ($("layer").value) body.layer = Number($("layer").value);
  if ($("probe").value.trim()) body.probe = $("probe").value.trim();
  else if ($("cell").value !== "") body.cell = Number($("cell").value);
  try {
    const data = await call("/api/inspect", body);
    paint(data);
    say("");
  } catch (e) { say(e.message); }
}

function paint(data) {
  const pieces = [];
  const chars = Array.from(data.text);
  chars.forEach((ch, i) => {
    const span = document.createElement("span");
    span.className = `c${data.levels[i]}`;
    span.textContent = ch;
    const v = data.values[i];
    span.title = v === null ? "not a number" : v.toFixed(3);
    pieces.push(span);
  });
  painted.replaceChildren(...pieces);
  let title = `layer ${data.layer} cell ${data.cell} (${data.state})`;
  if (data.cells.length) {
    title += ", the probe's best; then " +
      data.cells.slice(1, 5).map(([l, c, r]) => `${l}:${c} r ${r.toFixed(2)}`).join(", ");
  }
  $("painted-title").textContent = title;
}

for (const id of ["state", "layer", "cell", "probe"]) $(id).addEventListener("input", repaintSoon);
loadRuns().then(repaint);
