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
        const params = new URLSearchParams({ q: text, k: "8", mode: "keyword", rerank: "false" });
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

  // Chat: the answer streams from POST /api/v1/ask (server-sent events: sources, then
  // delta per piece of text, then answer or error); citations link to the memories.
  const askForm = document.getElementById("ask-form");
  if (askForm) {
    const answerBox = document.getElementById("answer");
    const sourcesBox = document.getElementById("sources");
    const askState = document.getElementById("ask-state");
    const button = document.getElementById("ask");
    // The answer as text, with [n] turned into links to the memories cited.
    function render(text, sources) {
      const byN = new Map(sources.map((s) => [s.n, s]));
      const parts = text.split(/(\[\d+\])/);
      answerBox.replaceChildren(...parts.map((part) => {
        const m = /^\[(\d+)\]$/.exec(part);
        const source = m && byN.get(Number(m[1]));
        if (!source) return document.createTextNode(part);
        const a = document.createElement("a");
        a.href = "/m/" + source.id;
        a.className = "citation";
        a.title = source.title;
        a.textContent = part;
        return a;
      }));
    }
    function showSources(sources, cited) {
      sourcesBox.replaceChildren(...sources.map((s) => {
        const li = document.createElement("li");
        li.value = s.n;
        if (cited.includes(s.n)) li.className = "cited";
        const a = document.createElement("a");
        a.href = "/m/" + s.id;
        a.textContent = s.title;
        li.append(a);
        return li;
      }));
    }
    askForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      const question = document.getElementById("question").value.trim();
      if (!question) return;
      button.disabled = true;
      askState.textContent = "Thinking…";
      answerBox.textContent = "";
      sourcesBox.replaceChildren();
      let text = "", sources = [];
      try {
        const response = await window.mnemonFetch("/api/v1/ask", {
          method: "POST",
          headers: { "Content-Type": "application/json", "Accept": "text/event-stream" },
          body: JSON.stringify({ question }),
        });
        if (!response.ok) {
          const body = await response.json().catch(() => ({}));
          throw new Error(body?.error?.message || "HTTP " + response.status);
        }
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let at;
          while ((at = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, at);
            buffer = buffer.slice(at + 2);
            let event = "message", data = "";
            for (const line of block.split("\n")) {
              if (line.startsWith("event:")) event = line.slice(6).trim();
              else if (line.startsWith("data:")) data += (data ? "\n" : "") + line.slice(5).replace(/^ /, "");
            }
            if (event === "sources") { sources = JSON.parse(data); showSources(sources, []); askState.textContent = "Answering…"; }
            else if (event === "delta") { text += JSON.parse(data); render(text, sources); }
            else if (event === "answer") { const a = JSON.parse(data); render(a.answer, a.sources); showSources(a.sources, a.cited); askState.textContent = ""; }
            else if (event === "error") { throw new Error(JSON.parse(data)?.error?.message || "the answer failed"); }
          }
        }
      } catch (err) {
        askState.textContent = "Could not answer: " + err.message;
        askState.className = "meta error";
      } finally {
        button.disabled = false;
      }
    });
  }

  // API calls made by this script carry the CSRF token.
  window.mnemonFetch = (url, options = {}) =>
    fetch(url, { ...options, credentials: "same-origin",
      headers: { ...(options.headers || {}), "X-CSRF-Token": csrf } });
})();

// Times in the browser's own time zone (the page carries them in UTC), the undo banner's
// countdown, and the service worker that makes the UI installable.
(function () {
  const format = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  const dateOnly = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });
  for (const time of document.querySelectorAll("time[datetime]")) {
    const iso = time.getAttribute("datetime");
    const at = new Date(iso);
    if (Number.isNaN(at.getTime())) continue;
    // A due date at midnight UTC is a day, not a moment.
    const day = /T00:00(:00(\.0+)?)?Z$/.test(iso);
    time.textContent = day ? dateOnly.format(at) : format.format(at);
    time.title = iso;
  }

  const banner = document.querySelector(".notice.undo[data-undo-ms]");
  if (banner) {
    const until = Date.now() + Number(banner.dataset.undoMs);
    const button = banner.querySelector("button");
    const tick = () => {
      const left = Math.ceil((until - Date.now()) / 1000);
      if (left <= 0) { banner.remove(); return; }
      if (button) button.textContent = "Undo (" + left + ")";
      setTimeout(tick, 250);
    };
    tick();
  }

  if ("serviceWorker" in navigator && window.isSecureContext) {
    navigator.serviceWorker.register("/sw.js").catch(() => {});
  }
})();

// Task-list checkboxes in a memory's text tick as they are clicked: one character of the
// text changes on the node (so it merges with edits made elsewhere).
(function () {
  const content = document.getElementById("memory-content");
  if (!content) return;
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
  content.addEventListener("change", async (e) => {
    const box = e.target;
    if (!(box instanceof HTMLInputElement) || !box.classList.contains("tick")) return;
    box.disabled = true;
    const body = new URLSearchParams({ csrf, task: box.dataset.task, done: String(box.checked) });
    try {
      const response = await fetch("/m/" + content.dataset.id + "/tick", {
        method: "POST", body, credentials: "same-origin",
      });
      if (!response.ok) throw new Error("HTTP " + response.status);
    } catch (err) {
      box.checked = !box.checked;
      const notice = document.getElementById("live-notice");
      if (notice) { notice.textContent = "Could not tick it: " + err.message; notice.hidden = false; }
    } finally {
      box.disabled = false;
    }
  });
})();

// Copy buttons (an invite ticket): the text of the element named by data-copy goes to the
// clipboard; where the clipboard is not allowed, the text is selected for Ctrl+C.
(function () {
  document.addEventListener("click", async (e) => {
    const button = e.target instanceof Element ? e.target.closest("button[data-copy]") : null;
    if (!button) return;
    const source = document.getElementById(button.dataset.copy);
    if (!source) return;
    try {
      await navigator.clipboard.writeText(source.textContent);
      button.textContent = "Copied";
    } catch {
      const range = document.createRange();
      range.selectNodeContents(source);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      button.textContent = "Selected: press Ctrl+C";
    }
  });
})();

// Editing in place: while the Edit panel is open the rendered text gives way to it, a
// live preview renders what is typed (on the node, as the page will), and typing `[[`
// and a few letters of a title offers the notes to link.
(function () {
  const edit = document.getElementById("edit");
  const textarea = document.getElementById("edit-content");
  const preview = document.getElementById("edit-preview");
  const list = document.getElementById("wikilink-suggestions");
  if (!edit || !textarea || !preview || !list) return;
  const rendered = document.getElementById("memory-content");
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
  let timer = 0;
  let inflight = null;
  async function refresh() {
    if (inflight) inflight.abort();
    inflight = new AbortController();
    try {
      const response = await fetch("/preview", {
        method: "POST", body: new URLSearchParams({ csrf, content: textarea.value }),
        credentials: "same-origin", signal: inflight.signal,
      });
      if (!response.ok) throw new Error("HTTP " + response.status);
      preview.innerHTML = await response.text();
    } catch (e) {
      if (e.name !== "AbortError") preview.textContent = "No preview: " + e.message;
    }
  }
  edit.addEventListener("toggle", () => {
    if (rendered) rendered.hidden = edit.open;
    if (edit.open) refresh();
  });

  const opening = /\[\[([^[\]\n|#]{0,60})$/;
  const typed = () => textarea.value.slice(0, textarea.selectionStart).match(opening)?.[1] ?? null;
  function insert(title) {
    const at = textarea.selectionStart;
    // (A function, so a `$` in a title is text, not a replacement pattern.)
    const before = textarea.value.slice(0, at).replace(opening, () => "[[" + title + "]]");
    const after = textarea.value.slice(at).replace(/^\]\]/, "");
    textarea.value = before + after;
    textarea.selectionStart = textarea.selectionEnd = before.length;
    list.hidden = true;
    textarea.focus();
    refresh();
  }
  let asking = 0;
  function complete() {
    clearTimeout(asking);
    const partial = typed();
    if (partial === null || partial.trim() === "") { list.hidden = true; return; }
    asking = setTimeout(async () => {
      const params = new URLSearchParams({ q: partial, k: "6", mode: "keyword", rerank: "false" });
      const response = await fetch("/api/v1/search?" + params, { credentials: "same-origin" });
      if (!response.ok || typed() !== partial) return;
      // Not the memory being edited.
      const hits = (await response.json()).filter((hit) => hit.id !== rendered?.dataset.id);
      list.replaceChildren(...hits.map((hit) => {
        const item = document.createElement("li");
        const button = document.createElement("button");
        button.type = "button";
        button.className = "link";
        button.textContent = hit.title;
        button.addEventListener("click", () => insert(hit.title));
        item.append(button);
        return item;
      }));
      list.hidden = hits.length === 0;
    }, 120);
  }
  textarea.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(refresh, 200);
    complete();
  });
  textarea.addEventListener("keydown", (e) => {
    if (list.hidden) return;
    const first = list.querySelector("button");
    if (first && (e.key === "Tab" || (e.key === "Enter" && !e.ctrlKey && !e.metaKey))) {
      e.preventDefault();
      insert(first.textContent);
    } else if (first && e.key === "ArrowDown") {
      e.preventDefault();
      first.focus();
    } else if (e.key === "Escape") {
      list.hidden = true;
    }
  });
})();

// The graph zooms (the wheel, the buttons) and pans (dragging) by moving its viewBox.
(function () {
  const svg = document.getElementById("graph");
  if (!svg) return;
  const full = { x: 0, y: 0, w: Number(svg.dataset.width), h: Number(svg.dataset.height) };
  let view = { ...full };
  const show = () => svg.setAttribute("viewBox", `${view.x} ${view.y} ${view.w} ${view.h}`);
  // Zooms by `factor` keeping the drawing's point (px, py) where it is on the screen.
  function zoom(factor, px = view.x + view.w / 2, py = view.y + view.h / 2) {
    const w = Math.min(full.w * 2, Math.max(full.w / 12, view.w * factor));
    const scale = w / view.w;
    view = { x: px - (px - view.x) * scale, y: py - (py - view.y) * scale, w, h: view.h * scale };
    show();
  }
  const toDrawing = (e) => {
    const box = svg.getBoundingClientRect();
    return [view.x + (e.clientX - box.left) / box.width * view.w, view.y + (e.clientY - box.top) / box.height * view.h];
  };
  svg.addEventListener("wheel", (e) => {
    e.preventDefault();
    zoom(e.deltaY > 0 ? 1.2 : 1 / 1.2, ...toDrawing(e));
  }, { passive: false });
  let drag = null;
  svg.addEventListener("pointerdown", (e) => {
    if (e.button !== 0) return;
    drag = { x: e.clientX, y: e.clientY, view: { ...view }, moved: false };
  });
  svg.addEventListener("pointermove", (e) => {
    if (!drag) return;
    const box = svg.getBoundingClientRect();
    const dx = (e.clientX - drag.x) / box.width * view.w;
    const dy = (e.clientY - drag.y) / box.height * view.h;
    if (!drag.moved && Math.hypot(e.clientX - drag.x, e.clientY - drag.y) < 4) return;
    if (!drag.moved) { drag.moved = true; svg.setPointerCapture(e.pointerId); }
    view = { ...view, x: drag.view.x - dx, y: drag.view.y - dy };
    show();
  });
  const end = (e) => {
    // A drag is not a click on the memory under it.
    if (drag?.moved) svg.addEventListener("click", (c) => c.preventDefault(), { capture: true, once: true });
    drag = null;
    if (svg.hasPointerCapture?.(e.pointerId)) svg.releasePointerCapture(e.pointerId);
  };
  svg.addEventListener("pointerup", end);
  svg.addEventListener("pointercancel", end);
  document.querySelectorAll("[data-zoom]").forEach((button) => button.addEventListener("click", () => {
    if (button.dataset.zoom === "in") zoom(1 / 1.5);
    else if (button.dataset.zoom === "out") zoom(1.5);
    else { view = { ...full }; show(); }
  }));
})();
