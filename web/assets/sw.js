// Mnemon's service worker: the app's shell (style, script, icon) is kept so the installed
// app opens offline and says so. Pages and the API always go to the node, and nothing that
// holds a memory is ever cached.
"use strict";

const SHELL = "mnemon-shell-1";
const ASSETS = ["/assets/app.css", "/assets/app.js", "/assets/icon.svg", "/manifest.webmanifest"];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(SHELL).then((cache) => cache.addAll(ASSETS)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== SHELL).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== self.location.origin) return;
  if (ASSETS.includes(url.pathname)) {
    // The shell: from the network when it answers (a new version), else the copy kept.
    event.respondWith(
      fetch(request)
        .then((response) => {
          const copy = response.clone();
          caches.open(SHELL).then((cache) => cache.put(request, copy));
          return response;
        })
        .catch(() => caches.match(request)),
    );
    return;
  }
  if (request.mode === "navigate") {
    event.respondWith(
      fetch(request).catch(() =>
        new Response(
          "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Offline · Mnemon</title><link rel=\"stylesheet\" href=\"/assets/app.css\"></head><body><main class=\"narrow\"><h1>Your node cannot be reached</h1><p>Mnemon runs on your own machine: start <code>mnemon serve</code> there, or check this device's network, then reload.</p></main></body></html>",
          { status: 503, headers: { "Content-Type": "text/html; charset=utf-8" } },
        ),
      ),
    );
  }
});
