// The console's script: try a request and watch it stream, start and watch batches, chart the answers' speed.
// No framework and no build step. Every piece of caller text and model output goes into the page as a text node
// (textContent, createTextNode), never as markup; the page's Content-Security-Policy runs this file alone.
"use strict";

(function () {
  // The API's base: this file is served at <base>console/app.js, so the stage prefix comes with it (/v1/ deployed,
  // / through make serve), whether the page was loaded as /v1, /v1/ or /.
  const API = new URL("..", document.currentScript.src);
  const KEY_STORE = "llm-service.api-key";
  const ENDED = new Set(["completed", "failed", "expired", "cancelled"]);
  const BATCH_POLL_MS = 2000;
  const RESULT_POLL_MS = 2000;
  const RECENT_ANSWERS = 40;
  const FILE_PREVIEW_LINES = 50;
  // docs/cost.md: on-demand Lambda x86_64 in us-east-1, the function's default memory (10,240 MB = 10 GB).
  const GB_SECOND_USD = 0.0000166667;
  const MEMORY_GB = 10;
  const REQUEST_USD = 0.2 / 1e6;
  const SVG = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  const recent = [];
  let batchTimer = null;
  let running = null;
  let fileUrl = null;

  // -- small DOM helpers: text is always a text node --------------------------------------------------------------

  function el(tag, className, ...children) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    for (const child of children) node.append(typeof child === "string" ? document.createTextNode(child) : child);
    return node;
  }

  function svgEl(tag, attributes) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
    return node;
  }

  function say(id, message, isError) {
    const node = $(id);
    node.textContent = message;
    node.classList.toggle("error", Boolean(isError));
  }

  const number = (value, digits) => (typeof value === "number" ? value.toFixed(digits) : "-");
  const usd = (value) => "$" + value.toFixed(6);
  const costOf = (seconds) => seconds * MEMORY_GB * GB_SECOND_USD + REQUEST_USD;

  // -- the key: sessionStorage only ----------------------------------------------------------------------------

  function apiKey() {
    return sessionStorage.getItem(KEY_STORE) || "";
  }

  function showKeyState() {
    const present = Boolean(apiKey());
    say("key-state", present ? "key set for this tab" : "enter your API key to call the API", !present);
    document.body.classList.toggle("no-key", !present);
    if (!present) $("api-key").focus();
  }

  class ApiError extends Error {}

  async function call(path, init) {
    if (!apiKey()) throw new ApiError("enter the API key first (above)");
    const options = Object.assign({ cache: "no-store" }, init || {});
    options.headers = Object.assign({ "x-api-key": apiKey() }, (init && init.headers) || {});
    return fetch(new URL(path, API), options);
  }

  // An error answer in any of the API's shapes ({"error": {type, message}}, OpenAI's, API Gateway's {"message"}).
  async function failure(response) {
    let message = response.statusText || "request failed";
    try {
      const body = await response.json();
      const error = (body && body.error) || body || {};
      if (typeof error.message === "string") message = (error.type ? error.type + ": " : "") + error.message;
    } catch (_) {
      // not JSON: the status says enough
    }
    const hint = response.status === 403 ? " (IAM authorization needs signed calls; see the note above)" : "";
    return new ApiError(response.status + " " + message + hint);
  }

  async function json(response) {
    if (!response.ok) throw await failure(response);
    return response.json();
  }

  async function loadModel() {
    try {
      const models = await json(await call("v1/models"));
      $("model-name").textContent = models.data && models.data.length ? models.data[0].id : "";
      $("sample-line").textContent = JSON.stringify({
        custom_id: "line-1",
        method: "POST",
        url: "/v1/chat/completions",
        body: { model: $("model-name").textContent, messages: [{ role: "user", content: "Hello!" }], max_tokens: 64 },
      });
    } catch (_) {
      $("model-name").textContent = "";
    }
  }

  // -- views ----------------------------------------------------------------------------------------------------

  function showView() {
    const wanted = (location.hash || "#try").slice(1);
    const view = ["try", "batches", "speed"].includes(wanted) ? wanted : "try";
    for (const section of document.querySelectorAll("main > section")) section.hidden = section.id !== "view-" + view;
    for (const link of document.querySelectorAll("nav a")) {
      if (link.dataset.view === view) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    if (view === "batches") refreshBatches();
    if (view === "speed") drawSpeed();
  }

  // -- try: one request, its text as it is made, then its metrics ---------------------------------------------------

  function showTaskFields() {
    const task = $("task").value;
    for (const node of document.querySelectorAll("[data-for-task]")) node.hidden = node.dataset.forTask !== task;
    $("input-label").textContent = task === "chat" ? "Message" : "Text";
  }

  function requestBody() {
    const task = $("task").value;
    const text = $("input").value;
    const maxTokens = parseInt($("max-tokens").value, 10);
    const options = Number.isFinite(maxTokens) ? { max_tokens: maxTokens } : undefined;
    if (task === "summarize") return { text, style: $("style").value, options };
    if (task === "translate") return { text, target_language: $("language").value.trim() || "Japanese", options };
    let messages = null;
    if (text.trim().startsWith("[")) {
      try {
        const parsed = JSON.parse(text);
        if (Array.isArray(parsed)) messages = parsed;
      } catch (_) {
        // not a conversation: one message
      }
    }
    if (!messages) {
      messages = [];
      const system = $("system").value.trim();
      if (system) messages.push({ role: "system", content: system });
      messages.push({ role: "user", content: text });
    }
    return { messages, options };
  }

  function setAnswerState(state) {
    $("answer").dataset.state = state;
    $("send").disabled = state === "streaming" || state === "queued";
    $("stop").disabled = !(state === "streaming" || state === "queued");
  }

  // Server-sent events from a fetch body: each event's name and data, as they arrive.
  async function readEvents(body, onEvent) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length) onEvent(name, JSON.parse(data.join("\n")));
      }
    }
  }

  function showMetrics(answer, task) {
    const list = $("metrics");
    list.replaceChildren();
    const metrics = answer.metrics;
    const add = (term, detail) => list.append(el("dt", "", term), el("dd", "", detail));
    add("answer", answer.cached ? "from the table (cached): nothing generated now" : "generated");
    add("status", answer.status + (answer.finish_reason ? ", finished by " + answer.finish_reason : ""));
    if (!metrics) return;
    const seconds = metrics.total_ms / 1000;
    add("prompt", metrics.prompt_tokens + " tokens at " + number(metrics.prompt_tokens_per_s, 1) + " tok/s");
    add("decode", metrics.completion_tokens + " tokens at " + number(metrics.eval_tokens_per_s, 1) + " tok/s");
    add("seconds", number(seconds, 2) + (metrics.load_ms ? " (and " + number(metrics.load_ms / 1000, 2) + " s loading the model)" : ""));
    add("cost (estimate)", answer.cached ? usd(0) + " now; its generation cost " + usd(costOf(seconds)) : usd(costOf(seconds)));
    if (!answer.cached) {
      recent.push({ task, prompt: metrics.prompt_tokens_per_s, decode: metrics.eval_tokens_per_s, seconds });
      if (recent.length > RECENT_ANSWERS) recent.shift();
      drawSpeed();
    }
  }

  function finish(answer, task) {
    const output = $("answer");
    if (typeof answer.output === "string" && output.textContent !== answer.output) output.textContent = answer.output;
    showMetrics(answer, task);
    if (answer.status === "FAILED") {
      setAnswerState("error");
      say("try-state", "failed: " + ((answer.last_error && answer.last_error.message) || "see the result"), true);
    } else {
      setAnswerState("done");
      say("try-state", "done");
    }
  }

  async function pollResult(id, task, signal) {
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, RESULT_POLL_MS));
      if (signal.aborted) return;
      const answer = await json(await call("results/" + encodeURIComponent(id), { signal }));
      if (answer.status === "DONE" || answer.status === "FAILED") return finish(answer, task);
      say("try-state", "queued: " + answer.status.toLowerCase() + "; reading its result every few seconds");
    }
  }

  async function send(event) {
    event.preventDefault();
    const task = $("task").value;
    $("answer").replaceChildren();
    $("metrics").replaceChildren();
    setAnswerState("streaming");
    say("try-state", "sending");
    running = new AbortController();
    const signal = running.signal;
    try {
      const response = await call(task, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify(requestBody()),
        signal,
      });
      const type = response.headers.get("content-type") || "";
      if (response.ok && type.startsWith("text/event-stream")) {
        say("try-state", "generating");
        let ended = false;
        await readEvents(response.body, (name, data) => {
          if (name === "text") $("answer").append(document.createTextNode(data.text));
          else if (name === "answer") {
            ended = true;
            finish(data, task);
          } else if (name === "error") {
            ended = true;
            throw new ApiError((data.error && data.error.message) || "the stream ended with an error");
          }
        });
        if (!ended) throw new ApiError("the stream ended without an answer");
      } else if (response.status === 202) {
        const answer = await response.json();
        setAnswerState("queued");
        say("try-state", "queued (over the API's time budget); reading its result every few seconds");
        await pollResult(answer.id, task, signal);
      } else {
        finish(await json(response), task);
      }
    } catch (error) {
      setAnswerState(signal.aborted ? "stopped" : "error");
      say("try-state", signal.aborted ? "stopped (a generation that began still finishes and is stored)" : error.message, !signal.aborted);
    } finally {
      running = null;
    }
  }

  // -- batches: the caller's, with their progress; upload a file to start one -------------------------------------

  function progressOf(batch) {
    const counts = batch.request_counts || { total: 0, completed: 0, failed: 0 };
    const bar = document.createElement("progress");
    const answered = counts.completed + counts.failed;
    if (counts.total > 0) {
      bar.max = counts.total;
      bar.value = answered;
    }
    const failed = counts.failed ? ", " + counts.failed + " failed" : "";
    return el("td", "progress", bar, " " + answered + " of " + counts.total + failed);
  }

  function fileButton(label, fileId, batchId) {
    const button = el("button", "small", label);
    button.type = "button";
    button.addEventListener("click", () => showFile(fileId, batchId + " " + label.toLowerCase()));
    return button;
  }

  function batchRow(batch) {
    const row = el("tr");
    row.dataset.batchId = batch.id;
    row.dataset.status = batch.status;
    const files = el("td");
    if (batch.output_file_id) files.append(fileButton("Output", batch.output_file_id, batch.id));
    if (batch.error_file_id) files.append(fileButton("Errors", batch.error_file_id, batch.id));
    const status = el("td", "status status-" + batch.status, batch.status);
    const problems = (batch.errors && batch.errors.data) || [];
    for (const problem of problems.slice(0, 3)) {
      status.append(el("div", "note", (problem.line ? "line " + problem.line + ": " : "") + problem.message));
    }
    const created = new Date(batch.created_at * 1000).toLocaleString();
    row.append(el("td", "", el("code", "", batch.id)), status, progressOf(batch), el("td", "", created), files);
    return row;
  }

  async function refreshBatches() {
    clearTimeout(batchTimer);
    if (!apiKey()) return say("batch-state", "enter the API key first (above)", true);
    try {
      const list = await json(await call("v1/batches?limit=20"));
      const batches = list.data || [];
      $("batch-rows").replaceChildren(...batches.map(batchRow));
      if (!batches.length) $("batch-rows").append(el("tr", "", el("td", "muted", "no batches yet")));
      const open = batches.filter((batch) => !ENDED.has(batch.status)).length;
      $("batch-poll").textContent = open ? open + " running; refreshed every few seconds" : "";
      if (open && !$("view-batches").hidden) batchTimer = setTimeout(refreshBatches, BATCH_POLL_MS);
    } catch (error) {
      say("batch-state", error.message, true);
    }
  }

  async function startBatch(event) {
    event.preventDefault();
    const file = $("batch-file").files[0];
    if (!file) return say("batch-state", "choose a JSONL file first", true);
    try {
      say("batch-state", "uploading");
      const form = new FormData();
      form.append("purpose", "batch");
      form.append("file", file, file.name);
      const uploaded = await json(await call("v1/files", { method: "POST", body: form }));
      const batch = await json(
        await call("v1/batches", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ input_file_id: uploaded.id, endpoint: "/v1/chat/completions", completion_window: "24h" }),
        }),
      );
      $("batch-file").value = "";
      say("batch-state", "started " + batch.id);
      await refreshBatches();
    } catch (error) {
      say("batch-state", error.message, true);
    }
  }

  async function showFile(fileId, title) {
    try {
      const response = await call("v1/files/" + encodeURIComponent(fileId) + "/content");
      if (!response.ok) throw await failure(response);
      const blob = await response.blob();
      const text = await blob.text();
      const lines = text.split("\n").filter((line) => line);
      if (fileUrl) URL.revokeObjectURL(fileUrl);
      fileUrl = URL.createObjectURL(new Blob([text], { type: "application/jsonl" }));
      $("file-title").textContent = title + " file";
      $("file-download").href = fileUrl;
      $("file-download").download = fileId + ".jsonl";
      $("file-size").textContent = lines.length + " lines, " + blob.size + " bytes";
      const shown = lines.slice(0, FILE_PREVIEW_LINES).join("\n");
      $("file-text").textContent = lines.length > FILE_PREVIEW_LINES ? shown + "\n..." : shown;
      $("file-view").hidden = false;
    } catch (error) {
      say("batch-state", error.message, true);
    }
  }

  // -- speed: the recent answers' tok/s and seconds, as inline SVG -----------------------------------------------

  function drawChart(svg, series) {
    svg.replaceChildren();
    const [width, height, left, right, top, bottom] = [480, 170, 48, 10, 10, 24];
    const count = Math.max(0, ...series.map((line) => line.values.length));
    if (!count) {
      const empty = svgEl("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "muted" });
      empty.textContent = "no answers yet: send one from Try";
      svg.append(empty);
      return;
    }
    const highest = Math.max(...series.flatMap((line) => line.values)) * 1.1 || 1;
    const x = (i) => left + (count === 1 ? (width - left - right) / 2 : (i * (width - left - right)) / (count - 1));
    const y = (value) => top + (height - top - bottom) * (1 - value / highest);
    for (const fraction of [0, 0.5, 1]) {
      const value = highest * fraction;
      svg.append(svgEl("line", { x1: left, x2: width - right, y1: y(value), y2: y(value), class: "grid" }));
      const label = svgEl("text", { x: left - 6, y: y(value) + 4, "text-anchor": "end", class: "axis" });
      label.textContent = value >= 100 ? value.toFixed(0) : value.toFixed(1);
      svg.append(label);
    }
    for (const [i, text] of [[0, "#1"], [count - 1, "#" + count]]) {
      const label = svgEl("text", { x: x(i), y: height - 6, "text-anchor": "middle", class: "axis" });
      label.textContent = text;
      svg.append(label);
    }
    for (const line of series) {
      const points = line.values.map((value, i) => x(i).toFixed(1) + "," + y(value).toFixed(1)).join(" ");
      svg.append(svgEl("polyline", { points, class: "series " + line.name }));
      line.values.forEach((value, i) => {
        const dot = svgEl("circle", { cx: x(i), cy: y(value), r: 3, class: "dot " + line.name });
        const tip = svgEl("title", {});
        tip.textContent = "#" + (i + 1) + " " + line.name + ": " + value.toFixed(2);
        dot.append(tip);
        svg.append(dot);
      });
    }
  }

  function drawSpeed() {
    drawChart($("chart-speed"), [
      { name: "prompt", values: recent.map((answer) => answer.prompt) },
      { name: "decode", values: recent.map((answer) => answer.decode) },
    ]);
    drawChart($("chart-seconds"), [{ name: "seconds", values: recent.map((answer) => answer.seconds) }]);
    $("speed-rows").replaceChildren(
      ...recent.map((answer, i) =>
        el(
          "tr",
          "",
          el("td", "", String(i + 1)),
          el("td", "", answer.task),
          el("td", "", number(answer.prompt, 1)),
          el("td", "", number(answer.decode, 1)),
          el("td", "", number(answer.seconds, 2)),
          el("td", "", usd(costOf(answer.seconds))),
        ),
      ),
    );
  }

  // -- wiring ---------------------------------------------------------------------------------------------------

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (key) sessionStorage.setItem(KEY_STORE, key);
    $("api-key").value = "";
    showKeyState();
    if (key) {
      loadModel();
      if (!$("view-batches").hidden) refreshBatches();
    }
  });
  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    $("model-name").textContent = "";
    showKeyState();
  });
  $("task").addEventListener("change", showTaskFields);
  $("try-form").addEventListener("submit", send);
  $("stop").addEventListener("click", () => running && running.abort());
  $("batch-form").addEventListener("submit", startBatch);
  $("refresh-batches").addEventListener("click", refreshBatches);
  window.addEventListener("hashchange", showView);

  showKeyState();
  showTaskFields();
  showView();
  drawSpeed();
  if (apiKey()) loadModel();
})();
