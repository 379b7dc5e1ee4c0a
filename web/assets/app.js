// Mnemon's web UI script: search as you type, live updates, link suggestions and
// keyboard shortcuts. The pages work without it (plain forms and links); this only makes
// them quicker. No dependencies, nothing loaded from elsewhere.
"use strict";

(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
  const page = document.body.dataset.page;

  // Fetches a page's fragment (the server answers the X-Mnemon-Fragment header with just
  // the part that changes) and puts it into `target`.
  let inflight = null;
  async function loadFragment(url, target) {
    if (inflight) inflight.abort();
    inflight = new AbortController();
    try {
      const response = await fetch(url, {
        headers: { "X-Mnemon-Fragment": "1" },
        signal: inflight.signal,
        credentials: "same-origin",
      });
      if (response.status === 401) { location.href = "/signin"; return; }
      target.innerHTML = await response.text();
    } catch (e) {
      if (e.name !== "AbortError") target.textContent = "Could not reach the node: " + e.message;
    }
  }

  // Search as you type.
  const q = document.getElementById("q");
  const results = document.getElementById("results");
  const list = document.getElementById("list");
  if (q && results) {
    let timer = 0;
    const run = () => {
      const text = q.value.trim();
      if (list) list.hidden = text !== "";
      if (text === "") { results.innerHTML = ""; return; }
      const params = new URLSearchParams(new FormData(q.form));
      loadFragment("/search?" + params.toString(), results);
      if (page === "search") history.replaceState(null, "", "/search?" + params.toString());
    };
    q.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(run, 150); });
    q.form.addEventListener("change", (e) => { if (e.target !== q) run(); });
    q.form.addEventListener("submit", (e) => { e.preventDefault(); clearTimeout(timer); run(); });
  }

  // Suggestions for the "link to" box: titles from a keyword search.
  const linkTarget = document.getElementById("link-target");
  const suggestions = document.getElementById("link-suggestions");
  if (linkTarget && suggestions) {
    let timer = 0;
    linkTarget.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(async () => {
        const text = linkTarget.value.trim();
        if (text.length < 2) return;
        const params = new URLSearchParams({ q: text, k: "8", mode: "keyword" });
        const response = await fetch("/api/v1/search?" + params, { credentials: "same-origin" });
        if (!response.ok) return;
        const hits = await response.json();
        suggestions.replaceChildren(...hits.map((hit) => {
          const option = document.createElement("option");
          option.value = hit.title;
          return option;
        }));
      }, 150);
    });
  }

  // Live updates from the event stream.
  const notice = document.getElementById("live-notice");
  function tell(text, reload) {
    if (!notice) return;
    notice.replaceChildren(document.createTextNode(text + " "));
    if (reload) {
      const a = document.createElement("a");
      a.href = location.href;
      a.textContent = "Reload";
      notice.append(a);
    }
    notice.hidden = false;
  }
  if (window.EventSource && page) {
    const events = new EventSource("/api/v1/events");
    // Say when the stream is connected (tests wait for it; people never see it).
    events.addEventListener("open", () => { document.body.dataset.live = "on"; });
    events.addEventListener("error", () => { document.body.dataset.live = "off"; });
    const onChange = (e) => {
      let change;
      try { change = JSON.parse(e.data); } catch { return; }
      if (page === "home" && list && (!q || q.value.trim() === "")) {
        loadFragment(location.pathname + location.search, list);
      } else if (page === "memory") {
        const here = document.querySelector(".memory-page")?.dataset.id;
        if (change.id === here) {
          tell(e.type === "deleted" ? "This memory was deleted." : "This memory changed.", e.type !== "deleted");
        }
      }
    };
    for (const kind of ["created", "updated", "deleted"]) events.addEventListener(kind, onChange);
  }

  // Keyboard: "/" search, "n" new memory, Ctrl/Cmd+Enter saves the form you are in,
  // Escape leaves a field.
  document.addEventListener("keydown", (e) => {
    const inField = e.target.closest("input, textarea, select, [contenteditable]");
    if ((e.ctrlKey || e.metaKey) && e.key === "Enter" && inField?.form) {
      e.preventDefault();
      inField.form.requestSubmit();
      return;
    }
    if (e.key === "Escape" && inField) { inField.blur(); return; }
    if (inField || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "/") {
      e.preventDefault();
      if (q) q.focus(); else location.href = "/search";
    } else if (e.key === "n") {
      const title = document.getElementById("capture-title");
      e.preventDefault();
      if (title) title.focus(); else location.href = "/";
    }
  });

  // API calls made by this script carry the CSRF token.
  window.mnemonFetch = (url, options = {}) =>
    fetch(url, { ...options, credentials: "same-origin",
      headers: { ...(options.headers || {}), "X-CSRF-Token": csrf } });
})();
