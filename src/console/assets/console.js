// MetroCloud console: refreshes the #live region of pages that ask for it,
// and runs the live tail of the messages page (server-sent events).
"use strict";

(function refresh() {
  const seconds = Number(document.body.dataset.refresh || 0);
  if (!seconds) return;
  let busy = false;
  setInterval(async () => {
    const live = document.getElementById("live");
    if (!live || busy || document.hidden) return;
    busy = true;
    try {
      const response = await fetch(location.href, { credentials: "same-origin" });
      if (response.ok) {
        const page = new DOMParser().parseFromString(await response.text(), "text/html");
        const fresh = page.getElementById("live");
        if (fresh) live.replaceWith(fresh);
      }
    } catch (e) {
      // The next round tries again; the page keeps what it showed.
    } finally {
      busy = false;
    }
  }, seconds * 1000);
})();

(function tail() {
  const table = document.getElementById("tail");
  if (!table) return;
  const body = table.querySelector("tbody");
  const state = document.getElementById("tail-state");
  const toggle = document.getElementById("tail-toggle");
  const skippedLine = document.getElementById("tail-skipped");
  const keep = 50;
  let skipped = 0;
  let source = null;

  function cell(row, text, className) {
    const td = row.insertCell();
    td.textContent = text;
    if (className) td.className = className;
  }

  function show(text, tone) {
    state.textContent = text;
    state.className = "pill " + tone;
  }

  function open() {
    source = new EventSource(table.dataset.src);
    source.onopen = () => show("live", "green");
    source.onerror = () => show("reconnecting", "amber");
    source.addEventListener("record", (event) => {
      const record = JSON.parse(event.data);
      const row = body.insertRow(0);
      row.dataset.offset = record.offset;
      cell(row, record.partition, "num");
      cell(row, record.offset, "num");
      cell(row, record.timestamp.slice(0, 23).replace("T", " "), "time");
      cell(row, record.key ?? "—");
      const value = record.value ?? "—";
      cell(row, value.length > 140 ? value.slice(0, 140) + "…" : value, "value");
      while (body.rows.length > keep) body.deleteRow(body.rows.length - 1);
    });
    source.addEventListener("skipped", (event) => {
      skipped += Number(event.data);
      skippedLine.textContent = skipped + " newer records were not shown (more than 20 per fetch).";
    });
  }

  toggle.addEventListener("click", () => {
    if (source) {
      source.close();
      source = null;
      show("paused", "neutral");
      toggle.textContent = "Resume";
    } else {
      open();
      toggle.textContent = "Pause";
    }
  });
  open();
})();
