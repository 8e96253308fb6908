// clickmask demo page: plain JavaScript, no build step. The backend (clickmask/web/demo.py)
// keeps this tab's Session; every request carries the tab id it returned at /api/open.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  // One colour per object (RGB); object k uses PALETTE[(k - 1) % length].
  const PALETTE = [
    [64, 156, 255], [255, 176, 32], [255, 92, 138], [62, 207, 114], [180, 120, 255],
    [0, 212, 212], [255, 128, 64], [200, 230, 60], [255, 90, 90], [120, 170, 255],
  ];
  const LATENCY_PARTS = [
    ["encode_ms", "encode", "#4f8cff"], ["inference_ms", "inference", "#ffb020"],
    ["decode_ms", "decode", "#3ecf72"], ["respond_ms", "respond", "#b478ff"], ["transport_ms", "transport + browser", "#6b7280"],
  ];

  const state = {
    tab: null, width: 0, height: 0, name: "", objects: [], current: null,
    image: null,        // the HTMLImageElement drawn under the masks
    source: null,       // {file} or {sample}: what to reopen when the backend dropped the session
    seeds: new Map(),   // object id -> the mask file it was started from (to replay)
    layers: new Map(),  // object id -> {key, canvas} coloured mask layer
    latencies: [],
  };

  // ---------------------------------------------------------------- requests, one at a time
  let queue = Promise.resolve();
  let pending = 0;
  function enqueue(task) {
    pending += 1;
    document.body.dataset.busy = "1";
    const run = queue.then(task).catch(showError).finally(() => {
      pending -= 1;
      if (pending === 0) document.body.dataset.busy = "0";
      updateControls();
    });
    queue = run;
    return run;
  }

  class DemoError extends Error {
    constructor(message, code, status) { super(message); this.code = code; this.status = status; }
  }

  async function api(path, { json, form, method = "POST" } = {}) {
    const options = { method, headers: {} };
    if (json) { options.headers["Content-Type"] = "application/json"; options.body = JSON.stringify(json); }
    else if (form) options.body = form;
    let response;
    try {
      response = await fetch(path, options);
    } catch (error) {
      throw new DemoError("The demo backend does not answer: is 'clickmask demo' still running? Restart it and reload this page.", "backend_down");
    }
    if (!response.ok) {
      let data = null;
      try { data = await response.json(); } catch (error) { /* not JSON */ }
      throw new DemoError((data && data.error) || `${response.status} ${response.statusText}`,
        (data && data.code) || "http_error", response.status);
    }
    return response;
  }
  const apiJson = async (path, options) => (await api(path, options)).json();

  // Run fn(); when the backend dropped this tab's session (idle timeout or too many tabs),
  // reopen the image, replay every object's clicks, and run fn() again.
  async function withSession(fn) {
    try {
      return await fn();
    } catch (error) {
      if (!(error instanceof DemoError) || error.code !== "session_expired" || !state.source) throw error;
      await replay();
      showMessage("This tab's session had expired on the server; the image was reopened and your clicks replayed.", "info");
      return fn();
    }
  }

  async function replay() {
    const objects = state.objects.concat(state.current ? [state.current] : []);
    const seeds = new Map(state.seeds);
    let data = await apiJson("/api/open", { form: sourceForm(state.source) });
    state.tab = data.tab;
    for (const [index, object] of objects.entries()) {
      const seed = seeds.get(object.id);
      if (seed && object.seeded) data = await apiJson("/api/seed", { form: formOf({ tab: state.tab, mask: seed }) });
      for (const click of object.clicks) {
        data = await apiJson("/api/click", { json: { tab: state.tab, ...click } });
      }
      if (index < objects.length - 1) data = await apiJson("/api/next", { json: { tab: state.tab } });
    }
    state.seeds = seeds;
    setState(data);
  }

  function formOf(fields) {
    const form = new FormData();
    for (const [key, value] of Object.entries(fields)) if (value !== null && value !== undefined) form.append(key, value);
    return form;
  }
  const sourceForm = (source) => formOf(source.file ? { image: source.file, tab: state.tab } : { sample: source.sample, tab: state.tab });

  // ---------------------------------------------------------------- opening images
  function openSource(source) {
    return enqueue(async () => {
      const data = await apiJson("/api/open", { form: sourceForm(source) });
      const url = source.file ? URL.createObjectURL(source.file) : source.url;
      let image = await loadImage(url).catch(() => null);
      if (!image || image.naturalWidth !== data.width || image.naturalHeight !== data.height) {
        // The browser cannot show this file (e.g. TIFF) or decodes it differently (EXIF
        // rotation): show what the server decoded, so clicks land where they are drawn.
        image = await loadImage(`/api/image?tab=${encodeURIComponent(data.tab)}`);
      }
      state.image = image;
      state.source = source;
      state.seeds = new Map();
      state.layers = new Map();
      state.latencies = [];
      renderLatency(null);
      hideMessage();
      setState(data);
      $("drop-hint").hidden = true;
      canvas.hidden = false;
      fitCanvas();
    });
  }

  function loadImage(url) {
    return new Promise((resolve, reject) => {
      const image = new Image();
      image.onload = () => resolve(image);
      image.onerror = () => reject(new Error(`cannot load ${url}`));
      image.src = url;
    });
  }

  // ---------------------------------------------------------------- actions
  function click(x, y, positive) {
    if (!state.tab) return Promise.resolve();
    return enqueue(() => withSession(async () => {
      const started = performance.now();
      const data = await apiJson("/api/click", { json: { tab: state.tab, x, y, positive } });
      const roundTrip = performance.now() - started;
      setState(data);
      const latency = { ...data.latency, round_trip_ms: roundTrip, transport_ms: Math.max(0, roundTrip - data.latency.backend_ms) };
      state.latencies.push(latency);
      renderLatency(latency);
      hideMessage();
    }));
  }

  function action(path) {
    if (!state.tab) return Promise.resolve();
    return enqueue(() => withSession(async () => {
      const current = state.current;
      const data = await apiJson(path, { json: { tab: state.tab } });
      if (current && current.seeded && !data.current.seeded && data.current.id === current.id) state.seeds.delete(current.id);
      setState(data);
      hideMessage();
    }));
  }

  function seed(file) {
    if (!state.tab) { showError(new Error("open an image first, then start from its mask")); return Promise.resolve(); }
    return enqueue(() => withSession(async () => {
      const data = await apiJson("/api/seed", { form: formOf({ tab: state.tab, mask: file }) });
      state.seeds.set(data.current.id, file);
      setState(data);
      showMessage(`Started object #${data.current.id} from ${file.name} (${data.current.area.toLocaleString()} px): click to refine it.`, "info");
    }));
  }

  function download(format) {
    if (!state.tab) return Promise.resolve();
    return enqueue(() => withSession(async () => {
      const response = await api(`/api/download?tab=${encodeURIComponent(state.tab)}&format=${format}`, { method: "GET" });
      const disposition = response.headers.get("Content-Disposition") || "";
      const match = /filename="?([^";]+)"?/.exec(disposition);
      const blob = await response.blob();
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = match ? match[1] : `clickmask_${format}`;
      document.body.appendChild(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    }));
  }

  // ---------------------------------------------------------------- state and drawing
  function setState(data) {
    state.tab = data.tab;
    state.width = data.width;
    state.height = data.height;
    state.name = data.name;
    state.objects = data.objects;
    state.current = data.current;
    const live = new Set();
    for (const object of data.objects.concat([data.current])) {
      live.add(object.id);
      const key = `${object.area}:${object.runs.length}:${object.bbox.join(",")}:${object.clicks.length}`;
      const layer = state.layers.get(object.id);
      if (!layer || layer.key !== key) state.layers.set(object.id, { key, canvas: maskLayer(object) });
    }
    for (const id of [...state.layers.keys()]) if (!live.has(id)) state.layers.delete(id);
    renderObjects();
    draw();
    updateControls();
  }

  const colourOf = (id) => PALETTE[(id - 1) % PALETTE.length];

  // The object's mask as a canvas of its colour: row-major runs (zeros first) filled in place.
  function maskLayer(object) {
    const layer = document.createElement("canvas");
    layer.width = state.width;
    layer.height = state.height;
    if (!object.area) return layer;
    const pixels = new ImageData(state.width, state.height);
    const words = new Uint32Array(pixels.data.buffer);
    const [r, g, b] = colourOf(object.id);
    const colour = ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0;  // little-endian RGBA
    let offset = 0;
    object.runs.forEach((run, index) => {
      if (index % 2 === 1) words.fill(colour, offset, offset + run);
      offset += run;
    });
    layer.getContext("2d").putImageData(pixels, 0, 0);
    return layer;
  }

  function scale() {
    const rect = canvas.getBoundingClientRect();
    return rect.width / state.width || 1;
  }

  function draw() {
    if (!state.image) return;
    canvas.width = state.width;
    canvas.height = state.height;
    ctx.drawImage(state.image, 0, 0, state.width, state.height);
    const px = 1 / scale();  // one CSS pixel in image pixels
    const objects = state.objects.concat(state.current ? [state.current] : []);
    for (const object of objects) {
      if (!object.area) continue;
      const isCurrent = object === state.current;
      ctx.globalAlpha = isCurrent ? 0.5 : 0.38;
      ctx.drawImage(state.layers.get(object.id).canvas, 0, 0);
      ctx.globalAlpha = 1;
      outline(object.polygons, isCurrent ? "rgba(255,255,255,0.95)" : `rgb(${colourOf(object.id).join(",")})`,
        (isCurrent ? 2 : 1.5) * px);
    }
    if (state.current) {
      for (const c of state.current.clicks) {
        ctx.beginPath();
        ctx.arc(c.x, c.y, 7 * px, 0, 2 * Math.PI);
        ctx.fillStyle = "#fff";
        ctx.fill();
        ctx.beginPath();
        ctx.arc(c.x, c.y, 5 * px, 0, 2 * Math.PI);
        ctx.fillStyle = c.positive ? "#22c55e" : "#ef4444";
        ctx.fill();
      }
    }
  }

  function outline(polygons, colour, width) {
    ctx.beginPath();
    for (const poly of polygons) {
      // Polygon points are pixel indices; +0.5 puts the line on the pixel centres.
      ctx.moveTo(poly[0] + 0.5, poly[1] + 0.5);
      for (let i = 2; i < poly.length; i += 2) ctx.lineTo(poly[i] + 0.5, poly[i + 1] + 0.5);
      ctx.closePath();
    }
    ctx.lineJoin = "round";
    ctx.strokeStyle = "rgba(0,0,0,0.55)";
    ctx.lineWidth = width * 2;
    ctx.stroke();
    ctx.strokeStyle = colour;
    ctx.lineWidth = width;
    ctx.stroke();
  }

  function fitCanvas() {
    if (!state.width) return;
    const stage = $("stage").getBoundingClientRect();
    const fit = Math.min((stage.width - 32) / state.width, (stage.height - 32) / state.height, 2);
    canvas.style.width = `${Math.round(state.width * fit)}px`;
    canvas.style.height = `${Math.round(state.height * fit)}px`;
    draw();
  }

  function renderObjects() {
    const list = $("objects");
    list.textContent = "";
    const objects = state.objects.concat(state.current ? [state.current] : []);
    for (const object of objects) {
      const item = document.createElement("li");
      if (object === state.current) item.className = "current";
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = `rgb(${colourOf(object.id).join(",")})`;
      const clicks = object.clicks.length;
      const text = `#${object.id}${object === state.current ? " (current)" : ""} · ${object.area.toLocaleString()} px · `
        + `${clicks} click${clicks === 1 ? "" : "s"}${object.seeded ? " · from mask" : ""}`;
      item.append(swatch, document.createTextNode(text));
      list.appendChild(item);
    }
  }

  function updateControls() {
    const open = Boolean(state.tab);
    const current = state.current;
    const anyMask = open && (state.objects.length > 0 || (current && current.area > 0));
    $("undo").disabled = !open || !(current && (current.clicks.length || current.seeded || state.objects.length));
    $("reset").disabled = !open || !(current && current.clicks.length);
    $("next").disabled = !open || !(current && current.area > 0);
    for (const button of document.querySelectorAll("button.download")) button.disabled = !anyMask;
    $("seed-label").classList.toggle("disabled", !open);
  }

  const ms = (value) => `${value < 10 ? value.toFixed(1) : Math.round(value)} ms`;

  function renderLatency(latency) {
    const box = $("latency");
    const table = $("latency-table");
    if (!latency) {
      box.innerHTML = '<p class="hint">click on an object to see where the time goes</p>';
      table.hidden = true;
      table.tBodies[0].textContent = "";
      return;
    }
    const total = latency.round_trip_ms;
    const median = (key) => {
      const values = state.latencies.map((l) => l[key]).sort((a, b) => a - b);
      return values[Math.floor(values.length / 2)];
    };
    box.textContent = "";
    const head = document.createElement("div");
    head.className = "total";
    head.innerHTML = `${ms(total)} <small>round trip · backend ${ms(latency.backend_ms)}</small>`;
    const bar = document.createElement("div");
    bar.className = "bar";
    const legend = document.createElement("div");
    legend.className = "legend";
    for (const [key, label, colour] of LATENCY_PARTS) {
      const part = document.createElement("span");
      part.style.width = `${(100 * latency[key]) / total}%`;
      part.style.background = colour;
      part.title = `${label}: ${ms(latency[key])}`;
      bar.appendChild(part);
      const entry = document.createElement("span");
      entry.innerHTML = `<i style="background:${colour}"></i>${label} ${ms(latency[key])}`;
      legend.appendChild(entry);
    }
    const summary = document.createElement("p");
    summary.className = "hint";
    summary.textContent = `median of ${state.latencies.length} click${state.latencies.length === 1 ? "" : "s"}: `
      + `${ms(median("round_trip_ms"))} round trip, ${ms(median("inference_ms"))} inference`;
    box.append(head, bar, legend, summary);
    const row = document.createElement("tr");
    const cells = [state.latencies.length, ...[total, latency.backend_ms, latency.encode_ms, latency.inference_ms,
      latency.decode_ms].map((value) => Math.round(value))];
    for (const value of cells) {
      const cell = document.createElement("td");
      cell.textContent = value;
      row.appendChild(cell);
    }
    const body = table.tBodies[0];
    body.insertBefore(row, body.firstChild);
    while (body.rows.length > 8) body.deleteRow(body.rows.length - 1);
    table.hidden = false;
  }

  // ---------------------------------------------------------------- messages and health
  function showMessage(text, kind = "error") {
    const box = $("message");
    $("message-text").textContent = text;
    box.className = kind;
    box.dataset.code = "";
    box.hidden = false;
    clearTimeout(showMessage.timer);
    if (kind === "info") showMessage.timer = setTimeout(hideMessage, 8000);
  }
  // A success clears an error; an info message stays until its timer or the close button.
  function hideMessage() {
    if ($("message").className === "error") $("message").hidden = true;
  }
  const SERVER_CODES = new Set(["server_unavailable", "server_overloaded", "model_not_ready", "deadline_exceeded", "backend_down"]);
  function showError(error) {
    console.warn(error);
    showMessage(error.message || String(error), "error");
    $("message").dataset.code = error.code || "";
    if (SERVER_CODES.has(error.code)) checkHealth();
  }

  async function checkHealth() {
    const badge = $("server-status");
    try {
      const health = await apiJson("/api/health", { method: "GET" });
      badge.className = `status ${health.ready ? "ok" : "down"}`;
      badge.textContent = health.ready ? `model server ${health.server} ready` : `model server ${health.server} not reachable`;
      badge.title = health.message;
      const message = $("message");
      if (health.ready && !message.hidden && SERVER_CODES.has(message.dataset.code)) {
        showMessage(`The model server ${health.server} is ready again: click on.`, "info");
        message.dataset.code = "";
      }
      return health.ready;
    } catch (error) {
      badge.className = "status down";
      badge.textContent = "demo backend not answering";
      return false;
    }
  }

  // ---------------------------------------------------------------- wiring
  function imagePoint(event) {
    const rect = canvas.getBoundingClientRect();
    const x = ((event.clientX - rect.left) / rect.width) * state.width - 0.5;
    const y = ((event.clientY - rect.top) / rect.height) * state.height - 0.5;
    return [Math.min(Math.max(x, 0), state.width - 1), Math.min(Math.max(y, 0), state.height - 1)];
  }

  canvas.addEventListener("mousedown", (event) => {
    if (event.button !== 0 && event.button !== 2) return;
    event.preventDefault();
    const [x, y] = imagePoint(event);
    click(Math.round(x * 10) / 10, Math.round(y * 10) / 10, event.button === 0 && !event.shiftKey);
  });
  canvas.addEventListener("contextmenu", (event) => event.preventDefault());

  $("file-input").addEventListener("change", (event) => {
    const file = event.target.files[0];
    event.target.value = "";
    if (file) openSource({ file });
  });
  $("seed-input").addEventListener("change", (event) => {
    const file = event.target.files[0];
    event.target.value = "";
    if (file) seed(file);
  });
  $("undo").addEventListener("click", () => action("/api/undo"));
  $("reset").addEventListener("click", () => action("/api/reset"));
  $("next").addEventListener("click", () => action("/api/next"));
  for (const button of document.querySelectorAll("button.download")) {
    button.addEventListener("click", () => download(button.dataset.format));
  }
  $("message-close").addEventListener("click", () => { $("message").hidden = true; });

  const stage = $("stage");
  stage.addEventListener("dragover", (event) => { event.preventDefault(); stage.classList.add("dragging"); });
  stage.addEventListener("dragleave", () => stage.classList.remove("dragging"));
  stage.addEventListener("drop", (event) => {
    event.preventDefault();
    stage.classList.remove("dragging");
    const file = event.dataTransfer.files[0];
    if (file) openSource({ file });
  });

  document.addEventListener("keydown", (event) => {
    if (event.target instanceof HTMLInputElement) return;
    if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z") { event.preventDefault(); action("/api/undo"); }
    else if (!event.ctrlKey && !event.metaKey && event.key.toLowerCase() === "n" && !$("next").disabled) action("/api/next");
  });
  window.addEventListener("resize", fitCanvas);
  window.addEventListener("pagehide", () => {
    if (state.tab) navigator.sendBeacon("/api/close", new Blob([JSON.stringify({ tab: state.tab })], { type: "application/json" }));
  });

  async function start() {
    const healthy = checkHealth();
    setInterval(checkHealth, 15000);
    try {
      const config = await apiJson("/api/config", { method: "GET" });
      for (const sample of config.samples) {
        const button = document.createElement("button");
        button.type = "button";
        button.title = `${sample.name}: ${sample.credit}`;
        button.dataset.sample = sample.name;
        const thumb = document.createElement("img");
        thumb.src = sample.url;
        thumb.alt = sample.name;
        button.appendChild(thumb);
        button.addEventListener("click", () => openSource({ sample: sample.name, url: sample.url }));
        $("samples").appendChild(button);
      }
    } catch (error) {
      showError(error);
    }
    if (!(await healthy)) {
      showMessage("The model server is not reachable yet: start it with 'clickmask serve' (or run 'clickmask demo --start-server'). This page will notice when it is up.", "error");
    }
  }

  // For scripts and tests: the state, and a promise that settles when every request is done.
  window.clickmaskDemo = {
    get state() { return state; },
    idle: () => queue.then(() => undefined, () => undefined),
    open: openSource, click, undo: () => action("/api/undo"), next: () => action("/api/next"),
  };
  start();
})();
