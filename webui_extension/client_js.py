"""The tab's browser-side hooks, as JS function expressions for :func:`~.compat.js_hook`.

They are inlined into the event listeners instead of shipped as ``javascript/*.js`` so the standalone
app (which injects no scripts) and the webui run the same code. In the webui, Train also starts the
host's own progress bar and live preview (``requestProgress``/``randomId`` from its
``javascript/progressbar.js``). Everywhere, once an event's returned status says a run is active, a
poller clicks the Status button until it is not: that is how the page follows a job that runs
outside any gradio request (no ``every=``/``gr.Timer``, which gradio 3.41 and 5+ do not share).
"""

POLL_INTERVAL_MS = 2000

#: Train: a task id for the host's progress API (the first input) and the host's progress bar.
START = """(...args) => {
  const app = typeof gradioApp === "function" ? gradioApp() : document;
  const id = typeof randomId === "function" ? randomId() : "task(unifl-" + Math.random().toString(36).slice(2, 12) + ")";
  if (typeof requestProgress === "function") {
    requestProgress(id, app.querySelector("#unifl_progress"), app.querySelector("#unifl_gallery"), () => {});
  }
  args[0] = id;
  return args;
}"""

#: After Train, Stop or Status (given the status HTML they returned): poll while the run is active.
FOLLOW = """(status) => {
  const app = typeof gradioApp === "function" ? gradioApp() : document;
  const active = (state) => ["queued", "loading", "training", "stopping"].includes(state);
  const stated = /data-unifl-state="([a-z]+)"/.exec(status || "");
  if (stated && active(stated[1]) && !window.uniflPoller) {
    window.uniflPoller = setInterval(() => {
      const marker = app.querySelector("#unifl_status [data-unifl-state]");
      if (!marker || !active(marker.getAttribute("data-unifl-state"))) {
        clearInterval(window.uniflPoller);
        window.uniflPoller = null;
        return;
      }
      const target = app.querySelector("#unifl_poll");
      const button = target && (target.tagName === "BUTTON" ? target : target.querySelector("button"));
      if (button) button.click();
    }, %d);
  }
  return [];
}""" % POLL_INTERVAL_MS
