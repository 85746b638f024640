/*
 * pixelhouse: the no-reload generate flow and live status on the detail page.
 *
 * Vanilla JS, no build step. Talks to the JSON API with the session cookie and
 * the CSRF token from the page's form (X-CSRFToken header):
 *   POST /api/v1/generations        -> 201 generation | 400 {detail, errors} | 429 (Retry-After)
 *                                      (an Idempotency-Key header per click)
 *   GET  /api/v1/generations/{id}   -> generation {status, stage, progress, error, image_url,
 *                                      elapsed_seconds, queue_position, steps, can_cancel, ...}
 *   GET  /api/v1/generations/{id}/events -> text/event-stream: "generation" (whole), "state"
 *        (id, status, stage, stage_label, progress) per change, "generation" once finished
 *   POST /api/v1/generations/{id}/cancel -> 200 generation | 409 {detail, code: already_paid|finished}
 *   POST /api/v1/generations/{id}/retry  -> 201 new generation | 400 | 402 | 409 | 429
 * A generation is watched through the event stream; if the stream cannot be opened or
 * keeps breaking, the page polls the plain read instead (watch() below). A "state" event
 * is merged into the last whole generation (mergeState) for the steps and the cancel button.
 * Without JavaScript the form posts to /generate/ and the server does the same work.
 */
(function () {
  "use strict";

  var FINISHED = { succeeded: true, failed: true, canceled: true };
  var STATUS_LABELS = {
    queued: "Queued",
    running: "Running",
    succeeded: "Succeeded",
    failed: "Failed",
    canceled: "Canceled",
  };
  var FAST_POLL_MS = 1000;
  var SLOW_POLL_MS = 3000;
  var SLOW_AFTER_MS = 60000;
  var FIELD_ALIASES = { width: "size", height: "size" };
  var RUNNING_AT_LEAST_MS = 800;

  /* A random key for one submission (crypto.randomUUID needs a secure context). */
  function idempotencyKey() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    var hex = "";
    for (var i = 0; i < bytes.length; i++) hex += (bytes[i] + 256).toString(16).slice(1);
    return hex;
  }

  function readJsonScript(id) {
    var node = document.getElementById(id);
    if (!node) return {};
    try {
      return JSON.parse(node.textContent);
    } catch (e) {
      return {};
    }
  }

  /* The stages (value, label, progress, in order) come from the server: GenerationStage.table(). */
  var STAGES = readJsonScript("generation-stages");
  var STAGE_LABELS = {};
  if (Array.isArray(STAGES)) {
    for (var s = 0; s < STAGES.length; s++) STAGE_LABELS[STAGES[s].value] = STAGES[s].label;
  }

  function elapsedSeconds(data) {
    var started = Date.parse(data.started_at || "");
    var finished = Date.parse(data.finished_at || "");
    if (isNaN(started) || isNaN(finished) || finished < started) return null;
    return (finished - started) / 1000;
  }

  function stageText(data) {
    if (data.status === "succeeded") {
      var seconds = elapsedSeconds(data);
      return seconds === null ? "Done" : "Done in " + seconds.toFixed(1) + " s";
    }
    if (data.status === "failed") return "Failed";
    if (data.status === "canceled") return "Canceled";
    if (data.status === "queued" && data.stage !== "retrying") return STAGE_LABELS.queued || "";
    return data.stage_label || STAGE_LABELS[data.stage] || STAGE_LABELS.queued || "";
  }

  function csrfToken() {
    var input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function readJson(response) {
    return response
      .json()
      .catch(function () {
        return {};
      });
  }

  /* django-ninja's 422 body: {detail: [{loc: ["body", "payload", "seed"], msg}]} -> {seed: msg}. */
  function schemaErrors(detail) {
    var errors = {};
    if (!Array.isArray(detail)) return errors;
    for (var i = 0; i < detail.length; i++) {
      var loc = detail[i] && detail[i].loc;
      if (Array.isArray(loc) && loc.length) errors[String(loc[loc.length - 1])] = String(detail[i].msg || "Invalid value.");
    }
    return errors;
  }

  /* ---- Progress rendering (shared by both pages) -------------------------- */

  function renderProgress(root, data) {
    var badge = root.querySelector("[data-status-badge]");
    if (badge) {
      badge.className = "badge " + data.status;
      badge.textContent = STATUS_LABELS[data.status] || data.status;
    }
    var stage = root.querySelector("[data-progress-stage]");
    if (stage) stage.textContent = stageText(data);
    var bar = root.querySelector("[data-progress-bar]");
    var fill = root.querySelector("[data-progress-fill]");
    var progress = Math.max(0, Math.min(100, parseInt(data.progress, 10) || 0));
    if (data.status === "succeeded") progress = 100;
    if (bar) {
      bar.setAttribute("aria-valuenow", String(progress));
      bar.classList.toggle("running", !FINISHED[data.status]);
      bar.classList.toggle("failed", data.status === "failed" || data.status === "canceled");
      bar.classList.toggle("done", data.status === "succeeded");
    }
    if (fill) fill.style.width = progress + "%";
  }

  /* ---- The job: elapsed time, queue position, stages as steps ---------------- */

  function formatElapsed(seconds) {
    var whole = Math.max(0, Math.floor(seconds));
    if (whole < 60) return whole + " s";
    var minutes = Math.floor(whole / 60);
    if (minutes < 60) return minutes + " min " + (whole % 60) + " s";
    return Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
  }

  /* The server says how long it has been (elapsed_seconds); the page ticks on from the
     moment it heard, so the browser's clock never matters. */
  function tickElapsed() {
    var nodes = document.querySelectorAll("[data-elapsed][data-elapsed-seconds]");
    for (var i = 0; i < nodes.length; i++) {
      var base = parseFloat(nodes[i].getAttribute("data-elapsed-seconds"));
      if (isNaN(base)) continue;
      var since = parseFloat(nodes[i].getAttribute("data-received-at") || "");
      if (isNaN(since)) {
        since = Date.now();
        nodes[i].setAttribute("data-received-at", String(since));
      }
      var extra = nodes[i].hasAttribute("data-ticking") ? (Date.now() - since) / 1000 : 0;
      nodes[i].textContent = formatElapsed(base + extra);
    }
  }

  function renderSteps(list, steps) {
    if (!list || !Array.isArray(steps)) return;
    list.innerHTML = "";
    for (var i = 0; i < steps.length; i++) {
      var item = document.createElement("li");
      item.className = "step " + steps[i].state;
      item.setAttribute("data-step", steps[i].stage);
      item.setAttribute("data-state", steps[i].state);
      var label = document.createElement("span");
      label.className = "step-label";
      label.textContent = steps[i].label;
      item.appendChild(label);
      var at = Date.parse(steps[i].at || "");
      if (!isNaN(at)) {
        var time = document.createElement("time");
        time.className = "muted small";
        time.setAttribute("datetime", steps[i].at);
        time.setAttribute("data-step-at", "");
        time.textContent = new Date(at).toLocaleTimeString();
        item.appendChild(document.createTextNode(" "));
        item.appendChild(time);
      }
      list.appendChild(item);
    }
  }

  var PAID_STAGES = { paying: true, generating: true, saving: true };

  /* A "state" event (status and stage only) on top of the last whole generation: the
     steps follow the stage, the queue position goes once it left the queue, and the
     cancel button turns off once the stage says the payment was claimed. */
  function mergeState(previous, update) {
    if (!previous || Array.isArray(update.steps) || previous.id !== update.id) return update;
    var merged = {};
    var key;
    for (key in previous) if (Object.prototype.hasOwnProperty.call(previous, key)) merged[key] = previous[key];
    for (key in update) if (Object.prototype.hasOwnProperty.call(update, key)) merged[key] = update[key];
    var stage = update.stage === "retrying" ? "queued" : update.stage;
    var steps = Array.isArray(previous.steps) ? previous.steps : [];
    var index = -1;
    for (var i = 0; i < steps.length; i++) if (steps[i].stage === stage) index = i;
    if (index >= 0 && !FINISHED[update.status]) {
      merged.steps = steps.map(function (step, position) {
        var state = position < index ? "done" : position === index ? "current" : "todo";
        return { stage: step.stage, label: step.label, state: state, at: step.at };
      });
    }
    if (update.status !== "queued") merged.queue_position = null;
    if (PAID_STAGES[update.stage]) merged.can_cancel = false;
    delete merged.elapsed_seconds; // keep ticking from the last whole read
    return merged;
  }

  function renderJob(root, data) {
    var elapsed = root.querySelector("[data-elapsed]");
    if (elapsed && typeof data.elapsed_seconds === "number") {
      elapsed.setAttribute("data-elapsed-seconds", String(data.elapsed_seconds));
      elapsed.setAttribute("data-received-at", String(Date.now()));
      if (FINISHED[data.status]) elapsed.removeAttribute("data-ticking");
      else elapsed.setAttribute("data-ticking", "");
    }
    var box = root.querySelector("[data-queue-position-box]");
    if (box && data.queue_position !== undefined) {
      box.hidden = !data.queue_position;
      var position = root.querySelector("[data-queue-position]");
      if (position) position.textContent = data.queue_position ? String(data.queue_position) : "";
    }
    renderSteps(root.querySelector("[data-steps]"), data.steps);
    var cancel = root.querySelector("[data-cancel]");
    var refusal = root.querySelector("[data-cancel-refusal]");
    var paidRunning = !FINISHED[data.status] && data.can_cancel === false;
    if (cancel && typeof data.can_cancel === "boolean") {
      cancel.hidden = !!FINISHED[data.status] && !cancel.form;
      cancel.disabled = !data.can_cancel;
      if (paidRunning) cancel.setAttribute("aria-describedby", "cancel-refusal");
    }
    if (refusal && typeof data.can_cancel === "boolean") {
      refusal.id = "cancel-refusal";
      // The server's words (the page carries them too, for a "state" event).
      refusal.textContent = data.cancel_refusal || refusal.getAttribute("data-message") || "";
      refusal.hidden = !paidRunning;
    }
    tickElapsed();
  }

  function showError(node, message) {
    if (!node) return;
    node.textContent = message;
    node.hidden = !message;
  }

  /* ---- Polling -------------------------------------------------------------- */

  /*
   * Poll url every second, every 3 s after the first minute, until the
   * generation finishes. Network hiccups keep polling; a 404 stops.
   */
  function poll(url, handlers) {
    var started = Date.now();
    var stopped = false;
    function schedule() {
      if (stopped) return;
      var delay = Date.now() - started < SLOW_AFTER_MS ? FAST_POLL_MS : SLOW_POLL_MS;
      window.setTimeout(tick, delay);
    }
    function tick() {
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          if (response.status === 404) {
            stopped = true;
            handlers.onGone();
            return null;
          }
          if (response.status === 401 || response.status === 403) {
            stopped = true;
            handlers.onTransient("Your session has ended. Sign in again to see this image.", true);
            return null;
          }
          if (!response.ok) {
            handlers.onTransient("Still working; the status is taking a moment to load…", false);
            return null;
          }
          return response.json();
        })
        .then(function (data) {
          if (!data) return;
          handlers.onTransient("", false);
          handlers.onUpdate(data);
          if (FINISHED[data.status]) {
            stopped = true;
            handlers.onFinished(data);
          }
        })
        .catch(function () {
          handlers.onTransient("Connection lost; retrying…", false);
        })
        .then(schedule);
    }
    tick();
    return {
      stop: function () {
        stopped = true;
      },
    };
  }

  /* ---- Push: the event stream, falling back to polling ---------------------- */

  var STAGE_ORDER = {};
  if (Array.isArray(STAGES)) {
    for (var o = 0; o < STAGES.length; o++) STAGE_ORDER[STAGES[o].value] = o;
  }

  /*
   * Progress never steps back: an update at an earlier stage of the same status than the
   * last one shown is dropped. Some stages are published without a row write ("saving"),
   * so a read of the row (a reconnect's first event, a poll) can be behind the stream.
   */
  function forwardOnly(handlers) {
    var last = null;
    var onUpdate = handlers.onUpdate;
    var wrapped = {};
    for (var key in handlers) if (Object.prototype.hasOwnProperty.call(handlers, key)) wrapped[key] = handlers[key];
    wrapped.onUpdate = function (data) {
      if (
        last &&
        data.status === last.status &&
        data.stage in STAGE_ORDER &&
        last.stage in STAGE_ORDER &&
        STAGE_ORDER[data.stage] < STAGE_ORDER[last.stage]
      ) {
        return;
      }
      last = { status: data.status, stage: data.stage };
      onUpdate(data);
    };
    return wrapped;
  }

  /*
   * Follow url's generation through url + "/events" (Server-Sent Events). The browser
   * reconnects a dropped stream by itself; a stream that fails before any event
   * (refused, not a stream) or breaks twice in a row without one is given up for
   * poll(url). Same handlers as poll().
   */
  function watch(url, handlers) {
    handlers = forwardOnly(handlers);
    if (!window.EventSource) return poll(url, handlers);
    var stopped = false;
    var fallback = null;
    var failures = 0;
    var source = new EventSource(url + "/events", { withCredentials: true });
    function stop() {
      stopped = true;
      source.close();
      if (fallback) fallback.stop();
    }
    function received(event) {
      failures = 0;
      var data;
      try {
        data = JSON.parse(event.data);
      } catch (e) {
        return null;
      }
      handlers.onTransient("", false);
      return data;
    }
    function onGeneration(event) {
      var data = received(event);
      if (!data) return;
      handlers.onUpdate(data);
      if (FINISHED[data.status]) {
        stop();
        handlers.onFinished(data);
      }
    }
    source.addEventListener("generation", onGeneration);
    source.addEventListener("state", function (event) {
      var data = received(event);
      if (data) handlers.onUpdate(data);
    });
    source.addEventListener("gone", function () {
      stop();
      handlers.onGone();
    });
    source.addEventListener("error", function () {
      if (stopped || fallback) return;
      failures += 1;
      if (source.readyState === EventSource.CLOSED || failures >= 2) {
        source.close();
        fallback = poll(url, handlers);
      }
    });
    return { stop: stop };
  }

  /* ---- The generate page ---------------------------------------------------- */

  function GeneratePage(form) {
    this.form = form;
    this.apiUrl = form.getAttribute("data-api-url");
    this.submitButton = form.querySelector("[data-submit]");
    this.submitLabel = this.submitButton.textContent;
    this.submitNote = form.querySelector("[data-submit-note]");
    this.formAlert = form.querySelector("[data-form-alert]");
    this.idle = document.querySelector("[data-preview-idle]");
    this.card = document.querySelector("[data-progress-card]");
    this.busy = false;
    this.cooldownTimer = null;
    this.poller = null;
    this.current = null;
    var self = this;
    var cancelButton = this.card.querySelector("[data-cancel]");
    var retryButton = this.card.querySelector("[data-retry]");
    if (cancelButton) cancelButton.addEventListener("click", function () {
      self.cancel();
    });
    if (retryButton) retryButton.addEventListener("click", function () {
      self.retry();
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      self.submit();
    });
    form.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        if (!self.submitButton.disabled) self.submit();
      }
    });
  }

  GeneratePage.prototype.payload = function () {
    var form = this.form;
    var size = form.querySelector("input[name=size]:checked");
    var seedText = form.elements.seed.value.trim();
    var body = {
      prompt: form.elements.prompt.value,
      negative_prompt: form.elements.negative_prompt.value,
      model_id: form.elements.model_id.value,
      width: size ? parseInt(size.getAttribute("data-width"), 10) : null,
      height: size ? parseInt(size.getAttribute("data-height"), 10) : null,
    };
    if (seedText !== "") body.seed = Number(seedText);
    return body;
  };

  GeneratePage.prototype.clearErrors = function () {
    var lists = this.form.querySelectorAll("[data-error-for]");
    for (var i = 0; i < lists.length; i++) {
      lists[i].innerHTML = "";
      lists[i].hidden = true;
    }
    var invalid = this.form.querySelectorAll("[aria-invalid]");
    for (var j = 0; j < invalid.length; j++) invalid[j].removeAttribute("aria-invalid");
    showError(this.formAlert, "");
  };

  GeneratePage.prototype.showFieldErrors = function (errors) {
    var first = null;
    var leftovers = [];
    for (var name in errors) {
      if (!Object.prototype.hasOwnProperty.call(errors, name)) continue;
      var field = FIELD_ALIASES[name] || name;
      var list = this.form.querySelector('[data-error-for="' + field + '"]');
      if (!list) {
        leftovers.push(errors[name]);
        continue;
      }
      var already = false;
      for (var k = 0; k < list.children.length; k++) {
        if (list.children[k].textContent === errors[name]) already = true;
      }
      if (!already) {
        var item = document.createElement("li");
        item.textContent = errors[name];
        list.appendChild(item);
      }
      list.hidden = false;
      var control = this.form.elements[field];
      if (control && control.setAttribute) control.setAttribute("aria-invalid", "true");
      if (field === "negative_prompt" || field === "seed") {
        var details = this.form.querySelector("details.advanced");
        if (details) details.open = true;
      }
      if (!first) first = control && control.focus ? control : null;
    }
    if (leftovers.length) showError(this.formAlert, leftovers.join(" "));
    if (first) first.focus();
  };

  GeneratePage.prototype.setBusy = function (busy, label) {
    this.busy = busy;
    this.submitButton.disabled = busy;
    this.submitButton.textContent = label || this.submitLabel;
    this.submitButton.classList.toggle("is-busy", busy);
  };

  GeneratePage.prototype.cooldown = function (seconds, message) {
    var self = this;
    var remaining = Math.max(1, seconds);
    window.clearInterval(this.cooldownTimer);
    function render() {
      self.submitButton.disabled = true;
      self.submitButton.textContent = "Wait " + remaining + " s";
      showError(self.formAlert, message + " Please wait " + remaining + " second" + (remaining === 1 ? "" : "s") + ".");
    }
    render();
    this.cooldownTimer = window.setInterval(function () {
      remaining -= 1;
      if (remaining <= 0) {
        window.clearInterval(self.cooldownTimer);
        self.cooldownTimer = null;
        showError(self.formAlert, "");
        self.setBusy(false);
        return;
      }
      render();
    }, 1000);
  };

  GeneratePage.prototype.submit = function () {
    if (this.busy || this.cooldownTimer) return;
    var self = this;
    this.clearErrors();
    var seed = this.form.elements.seed;
    if (seed.value.trim() !== "" && !/^\d+$/.test(seed.value.trim())) {
      this.showFieldErrors({ seed: seed.getAttribute("data-invalid-message") || "Enter a whole number." });
      return;
    }
    this.setBusy(true, "Starting…");
    fetch(this.apiUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json",
        "X-CSRFToken": csrfToken(),
        // One per click: a request the browser repeats is answered once, never made twice.
        "Idempotency-Key": idempotencyKey(),
      },
      body: JSON.stringify(this.payload()),
    })
      .then(function (response) {
        return readJson(response).then(function (data) {
          self.handleCreate(response, data);
        });
      })
      .catch(function () {
        self.setBusy(false);
        showError(self.formAlert, "We couldn't reach pixelhouse. Check your connection and try again.");
      });
  };

  GeneratePage.prototype.handleCreate = function (response, data) {
    if (response.status === 201 || response.status === 200) {
      this.start(data);
      return;
    }
    this.setBusy(false);
    var detail = typeof data.detail === "string" ? data.detail : "";
    if (response.status === 400 || response.status === 422) {
      var errors = data.errors && typeof data.errors === "object" ? data.errors : schemaErrors(data.detail);
      this.showFieldErrors(errors);
      if (!Object.keys(errors).length) {
        showError(this.formAlert, detail || "Please check the form and try again.");
      }
      return;
    }
    if (response.status === 429) {
      var retryAfter = parseInt(response.headers.get("Retry-After"), 10);
      this.cooldown(isNaN(retryAfter) ? 5 : retryAfter, detail || "You're generating too fast.");
      return;
    }
    if (response.status === 401 || response.status === 403) {
      showError(this.formAlert, "Your session has ended. Reload the page and sign in again.");
      return;
    }
    showError(this.formAlert, detail || "Something went wrong on our side. Please try again.");
  };

  /* Cancel or retry the shown job through the API (the same services as the detail page). */
  GeneratePage.prototype.jobAction = function (action, onDone) {
    var self = this;
    var data = this.current;
    if (!data) return;
    var note = this.card.querySelector("[data-progress-error]");
    fetch(this.apiUrl + "/" + encodeURIComponent(data.id) + "/" + action, {
      method: "POST",
      credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRFToken": csrfToken() },
    })
      .then(function (response) {
        return readJson(response).then(function (body) {
          if (response.ok) {
            onDone(body);
            return;
          }
          if (action === "cancel" && response.status === 409) {
            var refusal = self.card.querySelector("[data-cancel-refusal]");
            if (refusal && body.code === "already_paid") {
              refusal.textContent = body.detail;
              refusal.hidden = false;
              self.card.querySelector("[data-cancel]").disabled = true;
              return;
            }
          }
          showError(note, typeof body.detail === "string" ? body.detail : "That didn't work. Please try again.");
        });
      })
      .catch(function () {
        showError(note, "We couldn't reach pixelhouse. Check your connection and try again.");
      });
  };

  GeneratePage.prototype.cancel = function () {
    var self = this;
    this.jobAction("cancel", function (data) {
      if (self.poller) self.poller.stop();
      self.finish(data);
    });
  };

  GeneratePage.prototype.retry = function () {
    var self = this;
    this.jobAction("retry", function (data) {
      self.start(data);
    });
  };

  GeneratePage.prototype.showJob = function (update) {
    var card = this.card;
    var data = mergeState(this.current, update);
    this.current = data;
    renderProgress(card, data);
    renderJob(card, data);
    var cancel = card.querySelector("[data-cancel]");
    if (cancel) cancel.hidden = !!FINISHED[data.status];
    var retry = card.querySelector("[data-retry]");
    if (retry) retry.hidden = !data.can_retry;
    var details = card.querySelector("[data-job-detail]");
    if (details && data.detail_url) {
      details.href = data.detail_url;
      details.hidden = data.status === "succeeded"; // the result's own Details link
    }
  };

  GeneratePage.prototype.start = function (data) {
    var self = this;
    var card = this.card;
    if (this.poller) this.poller.stop();
    if (this.idle) this.idle.hidden = true;
    card.hidden = false;
    card.setAttribute("data-generation-id", data.id);
    card.querySelector("[data-result]").hidden = true;
    showError(card.querySelector("[data-progress-error]"), "");
    card.querySelector("[data-progress-prompt]").textContent = data.prompt || "";
    var skeleton = card.querySelector("[data-result-skeleton]");
    skeleton.style.aspectRatio = data.width + " / " + data.height;
    skeleton.style.width = Math.min(100, (100 * data.width) / data.height) + "%";
    skeleton.hidden = false;
    var refusal = card.querySelector("[data-cancel-refusal]");
    if (refusal) refusal.hidden = true;
    this.showJob(data);
    this.addRecent(data); // in "Recent" from the start, updated as it goes
    this.setBusy(true, "Generating…");
    if (FINISHED[data.status]) {
      this.finish(data);
      return;
    }
    var transient = "";
    var shown = data.status;
    this.poller = watch(this.apiUrl + "/" + encodeURIComponent(data.id), {
      onUpdate: function (update) {
        if (FINISHED[update.status]) return; // onFinished shows it
        // A "state" event carries status and stage only: Recent takes the merged whole.
        if (update.status !== shown) self.addRecent(mergeState(self.current, update));
        shown = update.status;
        self.showJob(update);
      },
      onFinished: function (update) {
        if (shown === "queued" && update.started_at && update.status !== "canceled") {
          // It ran between two polls: show the running it did (from the server's
          // timestamps) for a moment before the outcome.
          shown = "running";
          var running = {};
          for (var key in update) if (Object.prototype.hasOwnProperty.call(update, key)) running[key] = update[key];
          running.status = "running";
          running.stage = "generating";
          running.stage_label = STAGE_LABELS.generating || "";
          running.progress = 65;
          running.can_cancel = false;
          running.can_retry = false;
          self.showJob(running);
          self.addRecent(running);
          window.setTimeout(function () {
            self.finish(update);
          }, RUNNING_AT_LEAST_MS);
          return;
        }
        self.finish(update);
      },
      onTransient: function (message, fatal) {
        if (message === transient) return;
        transient = message;
        var note = card.querySelector("[data-progress-error]");
        showError(note, message);
        if (fatal) self.setBusy(false);
      },
      onGone: function () {
        showError(card.querySelector("[data-progress-error]"), "This image was deleted.");
        card.querySelector("[data-result-skeleton]").hidden = true;
        self.setBusy(false);
      },
    });
  };

  GeneratePage.prototype.finish = function (data) {
    var card = this.card;
    if (this.current && this.current.id !== data.id) return; // a retry replaced it
    this.showJob(data);
    this.setBusy(false);
    card.querySelector("[data-result-skeleton]").hidden = true;
    if (data.status === "succeeded" && data.image_url) {
      var figure = card.querySelector("[data-result]");
      var img = card.querySelector("[data-result-image]");
      img.width = data.width;
      img.height = data.height;
      img.alt = data.prompt || "Generated image";
      img.src = data.image_url;
      card.querySelector("[data-result-detail-image]").href = data.detail_url;
      card.querySelector("[data-result-detail]").href = data.detail_url;
      card.querySelector("[data-result-download]").href = data.image_url + "?download=1";
      figure.hidden = false;
      this.addRecent(data);
      return;
    }
    var message = (data.error && data.error.message) || "This image could not be generated. Please try again.";
    showError(card.querySelector("[data-progress-error]"), message);
    if (data.detail_url) this.addRecent(data);
  };

  /* Put the new image first in "Recent" (same markup as templates/inference/_card.html). */
  GeneratePage.prototype.addRecent = function (data) {
    var grid = document.querySelector("[data-recent-grid]");
    if (!grid || !data.detail_url) return;
    var empty = document.querySelector("[data-recent-empty]");
    if (empty) empty.remove();
    grid.hidden = false;

    var item = document.createElement("li");
    item.className = "gen-card is-new";
    item.setAttribute("data-status", data.status);
    var link = document.createElement("a");
    link.className = "gen-card-link";
    link.href = data.detail_url;
    var thumb = document.createElement("div");
    thumb.className = "gen-thumb";
    if (data.status === "succeeded" && data.image_url) {
      var img = document.createElement("img");
      img.src = data.image_url;
      img.alt = (data.prompt || "").slice(0, 120);
      img.loading = "lazy";
      img.width = data.width;
      img.height = data.height;
      thumb.appendChild(img);
    } else {
      var placeholder = document.createElement("div");
      placeholder.className = "gen-placeholder " + data.status;
      var badge = document.createElement("span");
      badge.className = "badge " + data.status;
      badge.textContent = STATUS_LABELS[data.status] || data.status;
      placeholder.appendChild(badge);
      thumb.appendChild(placeholder);
    }
    var body = document.createElement("div");
    body.className = "gen-card-body";
    var prompt = document.createElement("p");
    prompt.className = "gen-card-prompt";
    prompt.textContent = data.prompt || "";
    var meta = document.createElement("p");
    meta.className = "gen-card-meta muted";
    var dims = document.createElement("span");
    dims.textContent = data.width + "×" + data.height;
    var model = document.createElement("span");
    model.textContent = String(data.model_id || "").split("/").pop();
    var when = document.createElement("span");
    when.textContent = "just now";
    meta.appendChild(dims);
    meta.appendChild(model);
    meta.appendChild(when);
    body.appendChild(prompt);
    body.appendChild(meta);
    link.appendChild(thumb);
    link.appendChild(body);
    item.appendChild(link);

    var existing = grid.querySelector('a[href="' + data.detail_url + '"]');
    if (existing) existing.closest("li").remove();
    grid.insertBefore(item, grid.firstChild);
    while (grid.children.length > 6) grid.removeChild(grid.lastElementChild);
  };

  /* ---- The detail page: watch an unfinished generation ---------------------- */

  function watchDetail(container) {
    var url = container.getAttribute("data-watch");
    var last = null;
    watch(url, {
      onUpdate: function (data) {
        last = mergeState(last, data);
        renderProgress(container, data);
        renderJob(container, last);
      },
      onFinished: function () {
        refreshDetail(container);
      },
      onTransient: function (message) {
        showError(container.querySelector("[data-progress-error]"), message);
      },
      onGone: function () {
        showError(container.querySelector("[data-progress-error]"), "This image was deleted.");
      },
    });
  }

  /* Swap in the server-rendered block (image, timings, cost) without a full reload. */
  function refreshDetail(container) {
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.querySelector("[data-generation-detail]");
        if (!fresh) throw new Error("no detail block");
        var adopted = document.importNode(fresh, true);
        container.replaceWith(adopted);
        bindConfirms(adopted);
      })
      .catch(function () {
        window.location.reload();
      });
  }

  /* ---- Confirmations (delete) ------------------------------------------------ */

  function bindConfirms(root) {
    var forms = root.querySelectorAll("form[data-confirm]");
    for (var i = 0; i < forms.length; i++) {
      forms[i].addEventListener("submit", function (event) {
        if (!window.confirm(this.getAttribute("data-confirm"))) event.preventDefault();
      });
    }
  }

  /* ---- The price of the next image, per model (server-computed quotes) ---------- */

  function bindQuotes(form) {
    var data = document.getElementById("model-quotes");
    var select = form.elements.model_id;
    var line = form.querySelector("[data-quote]");
    if (!data || !select || !line) return;
    var quotes = JSON.parse(data.textContent);
    var text = line.querySelector("[data-quote-text]");
    var refusal = form.querySelector("[data-quote-refusal]");
    var refusalBox = form.querySelector("[data-quote-refusal-box]");
    var button = form.querySelector("[data-submit]");
    select.addEventListener("change", function () {
      var quote = quotes[select.value];
      if (!quote) return;
      text.textContent = quote.text;
      line.setAttribute("data-affordable", quote.affordable ? "true" : "false");
      refusal.textContent = quote.refusal;
      refusalBox.hidden = quote.affordable;
      button.disabled = !quote.affordable;
    });
  }

  function init() {
    var form = document.querySelector("[data-generate-form]");
    if (form) bindQuotes(form);
    if (form && window.fetch) new GeneratePage(form);
    var watched = document.querySelector("[data-generation-detail][data-watch]");
    if (watched && window.fetch) watchDetail(watched);
    bindConfirms(document);
    tickElapsed();
    window.setInterval(tickElapsed, 1000);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
