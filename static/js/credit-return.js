// The return page after pymthouse's checkout: poll until the credit shows, at most
// data-poll-seconds (the server then answers "processing"). Never starts a purchase.
(() => {
  "use strict";
  const box = document.querySelector("[data-top-up]");
  if (!box || box.dataset.state !== "waiting") return;
  const url = box.dataset.statusUrl;
  const show = (state) => {
    for (const name of ["waiting", "credited", "processing", "cancelled"]) {
      box.querySelector(`[data-top-up-${name}]`).hidden = name !== state;
    }
  };
  const deadline = Date.now() + (Number(box.dataset.pollSeconds) + 5) * 1000;
  const poll = async () => {
    let body = null;
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
      if (response.ok) body = await response.json();
    } catch (error) {
      body = null; // a dropped poll: try again
    }
    if (body && body.state === "credited") {
      box.querySelector("[data-top-up-available]").textContent = body.available;
      document.querySelectorAll("[data-available-micros]").forEach((node) => {
        node.textContent = body.available;
        node.dataset.availableMicros = body.available_micros;
      });
    }
    const state = body ? body.state : "waiting";
    if (state !== "waiting" || Date.now() > deadline) {
      show(state === "waiting" ? "processing" : state);
      return;
    }
    window.setTimeout(poll, 1000);
  };
  window.setTimeout(poll, 500);
})();
