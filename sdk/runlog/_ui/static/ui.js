// runlog ui: the payload panel and the live tail.  Data never becomes HTML here:
// rows and payloads arrive as HTML the server rendered with escaping, and are
// inserted as they are.
"use strict";

function showPayload(id, origin) {
  const panel = document.getElementById("payload");
  if (!panel) return false;
  fetch("/event/" + encodeURIComponent(id) + "?fragment=1")
    .then((r) => (r.ok ? r.text() : Promise.reject(r.status)))
    .then((html) => {
      panel.innerHTML = html;
      document.querySelectorAll(".selected").forEach((el) => el.classList.remove("selected"));
      const row = origin.closest("tr");
      if (row) row.classList.add("selected");
      const bar = origin.querySelector ? origin.querySelector("rect") : null;
      if (bar) bar.classList.add("selected");
    })
    .catch(() => { panel.textContent = "could not load event " + id; });
  return true;
}

document.addEventListener("click", (ev) => {
  if (ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey) return;
  const link = ev.target.closest("[data-event]");
  if (link && showPayload(link.getAttribute("data-event"), link)) ev.preventDefault();
});

function follow(table) {
  const body = table.tBodies[0];
  const dot = document.getElementById("live");
  const source = new EventSource(table.getAttribute("data-stream"));
  source.onopen = () => dot && dot.classList.add("on");
  source.onerror = () => dot && dot.classList.remove("on");
  source.onmessage = (msg) => {
    const data = JSON.parse(msg.data);
    const empty = document.getElementById("tail-empty");
    if (empty && data.rows.length) empty.remove();
    for (const row of data.rows) {
      if (body.querySelector('tr[data-id="' + row.id + '"]')) continue; // sent again after a reconnect
      const holder = document.createElement("tbody");
      holder.innerHTML = row.html;
      const tr = holder.firstElementChild;
      tr.classList.add("fresh");
      body.insertBefore(tr, body.firstChild);
    }
    while (body.rows.length > 1000) body.deleteRow(body.rows.length - 1);
  };
}

document.addEventListener("DOMContentLoaded", () => {
  const tail = document.getElementById("tail");
  if (tail && tail.getAttribute("data-stream")) follow(tail);
});
