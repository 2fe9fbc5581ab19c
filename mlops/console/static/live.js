// A live page (data-live="true") polls /status.json and, while something runs, swaps in its
// own freshly rendered content; it stops once nothing runs and the last state is shown.
(function () {
  if (document.body.dataset.live !== "true") return;
  async function refresh() {
    const page = await fetch(location.pathname, {cache: "no-store"});
    const next = new DOMParser().parseFromString(await page.text(), "text/html");
    document.getElementById("live").replaceWith(next.getElementById("live"));
    return next.body.dataset.live === "true";
  }
  async function poll() {
    try {
      const status = await (await fetch("/status.json", {cache: "no-store"})).json();
      const stillLive = await refresh();
      if (!status.running && !stillLive) { document.body.dataset.live = "false"; return; }
    } catch (err) { /* the console restarting: try again */ }
    setTimeout(poll, 1000);
  }
  setTimeout(poll, 1000);
})();
