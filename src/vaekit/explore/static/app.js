// vaekit explore: the page. Vanilla JS and canvas, no build step, nothing fetched but vaekit's own JSON API
// (docs/explore.md). Every element the browser test drives has a stable id; the body's data-* counters
// (ready, decoded, uploaded, sampled, interpolated) tell a test when an answer has been drawn.
"use strict";

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf"];
const MAP_SIZE = 520; // CSS pixels, square
const HIT_RADIUS = 5; // CSS pixels: how close the pointer must be to a point to hover or pick it
const SLIDER_RANGE = 3; // sliders span [-3, 3], the prior's +-3 standard deviations
const INACTIVE_KL = 0.01; // nats: a dimension below this carries no information (shown faded)
const SAMPLE_COUNT = 16;

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- errors: one line on the page, never a stack

function oneLine(message) {
  const text = String(message == null ? "unknown error" : message).split("\n")[0].trim();
  return text.length > 300 ? text.slice(0, 297) + "..." : text;
}

function showError(err) {
  const message = err && err.userMessage ? err.userMessage : err && err.message ? err.message : err;
  const box = $("error");
  box.textContent = oneLine(message);
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

window.addEventListener("unhandledrejection", (event) => { event.preventDefault(); showError(event.reason); });
window.addEventListener("error", (event) => { event.preventDefault(); showError(event.message); });

class ApiError extends Error {
  constructor(message) { super(message); this.userMessage = oneLine(message); }
}

// Every call to the API goes through here: a 4xx/5xx becomes an ApiError carrying the server's one line.
async function api(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {
    throw new ApiError("the vaekit server did not answer (is `vaekit explore` still running?)");
  }
  const type = response.headers.get("content-type") || "";
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    if (type.includes("json")) {
      try { const body = await response.json(); if (body && body.error) message = body.error; } catch (e) { /* keep */ }
    }
    throw new ApiError(message);
  }
  if (!type.includes("json")) throw new ApiError(`${path.split("?")[0]}: expected JSON, got ${type || "nothing"}`);
  return response.json();
}

const getJSON = (path, params) => api(params ? `${path}?${new URLSearchParams(params)}` : path);
const postJSON = (path, body) => api(path, {method: "POST", headers: {"Content-Type": "application/json"},
  body: JSON.stringify(body)});

function bump(counter) {
  document.body.dataset[counter] = String(Number(document.body.dataset[counter] || 0) + 1);
}

// At most one request in flight; while it runs only the latest request is kept, older ones are dropped.
class Latest {
  constructor(fn) { this.fn = fn; this.busy = false; this.pending = null; }
  request(arg) {
    this.pending = {arg};
    if (!this.busy) this.pump();
  }
  async pump() {
    this.busy = true;
    while (this.pending) {
      const {arg} = this.pending;
      this.pending = null;
      try { await this.fn(arg); } catch (e) { showError(e); }
    }
    this.busy = false;
  }
}

// ---------------------------------------------------------------- images

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new ApiError("the server sent an image the browser cannot read"));
    img.src = src;
  });
}

async function drawInto(canvas, src) {
  const img = await loadImage(src);
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
}

function clearCanvas(canvas) {
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
}

function imgElement(src, title) {
  const img = document.createElement("img");
  img.src = src;
  if (title) img.title = title;
  img.alt = title || "";
  return img;
}

// ---------------------------------------------------------------- latent vectors

const dot = (a, b) => a.reduce((s, v, i) => s + v * b[i], 0);

function lerp(a, b, t) { return a.map((v, i) => (1 - t) * v + t * b[i]); }

// Spherical interpolation (Shoemake 1985; White 2016 for VAE latents): along the great circle between the
// directions of a and b; linear where they are (nearly) parallel.
function slerp(a, b, t) {
  const na = Math.sqrt(dot(a, a));
  const nb = Math.sqrt(dot(b, b));
  if (na === 0 || nb === 0) return lerp(a, b, t);
  const omega = Math.acos(Math.min(1, Math.max(-1, dot(a, b) / (na * nb))));
  const s = Math.sin(omega);
  if (s < 1e-6) return lerp(a, b, t);
  const wa = Math.sin((1 - t) * omega) / s;
  const wb = Math.sin(t * omega) / s;
  return a.map((v, i) => wa * v + wb * b[i]);
}

// ---------------------------------------------------------------- state

const state = {
  runs: [],            // /api/runs
  a: null,             // the main view: {run, map: MapView}
  b: null,             // the side-by-side view, or null
  current: null,       // {z, what, index?}: what the decoded canvas shows, for run a
  picks: {a: null, b: null},
  lastFile: null,      // the last upload, re-encoded when the runs change
  uploadPoint: null,   // [x, y] of the upload on map a
  uploadPointB: null,
  samplesSeed: 0,
  imageCache: new Map(),
};

const maps = {a: null, b: null}; // the two map canvases' views, made once

function runByName(name) { return state.runs.find((r) => r.name === name); }

// ---------------------------------------------------------------- the map

// [r, g, b] of any CSS colour, as the canvas parses it (#rrggbb, hsl(...))
function cssRgb(colour) {
  const ctx = document.createElement("canvas").getContext("2d");
  ctx.fillStyle = colour;
  const hex = ctx.fillStyle;
  return [1, 3, 5].map((k) => parseInt(hex.slice(k, k + 2), 16));
}

class MapView {
  constructor(canvas, side) {
    this.canvas = canvas;
    this.side = side; // "a" or "b"
    this.data = null;
    this.hovered = -1;
    this.marker = null; // [x, y] of the decoded point
    this.path = null;   // [[x, y], ...] of the interpolation path
    this.dpr = window.devicePixelRatio || 1;
    canvas.width = MAP_SIZE * this.dpr;
    canvas.height = MAP_SIZE * this.dpr;
    this.base = document.createElement("canvas");
    this.base.width = canvas.width;
    this.base.height = canvas.height;
  }

  async load(runName) {
    const asked = performance.now();
    const data = await getJSON("/api/map", {run: runName});
    const received = performance.now();
    const n = data.points.length;
    const xs = new Float32Array(n);
    const ys = new Float32Array(n);
    for (let i = 0; i < n; i++) { xs[i] = data.points[i][0]; ys[i] = data.points[i][1]; }
    this.data = data;
    this.xs = xs;
    this.ys = ys;
    this.fit();
    this.buildIndex();
    this.drawBase();
    this.render();
    // milliseconds: the map's request and answer (JSON parsed), and its drawing; read by benchmarks/explore_page.py
    this.timing = {fetch: received - asked, draw: performance.now() - received};
  }

  // one scale for both axes (distances on the map mean the same in x and y), 5% margins
  fit() {
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let i = 0; i < this.xs.length; i++) {
      x0 = Math.min(x0, this.xs[i]); x1 = Math.max(x1, this.xs[i]);
      y0 = Math.min(y0, this.ys[i]); y1 = Math.max(y1, this.ys[i]);
    }
    if (!isFinite(x0)) { x0 = -1; x1 = 1; y0 = -1; y1 = 1; }
    const span = Math.max(x1 - x0, y1 - y0, 1e-6) * 1.1;
    this.cx = (x0 + x1) / 2;
    this.cy = (y0 + y1) / 2;
    this.scale = MAP_SIZE / span; // CSS pixels per map unit
  }

  toPixel(x, y) { return [MAP_SIZE / 2 + (x - this.cx) * this.scale, MAP_SIZE / 2 - (y - this.cy) * this.scale]; }
  toPoint(px, py) { return [this.cx + (px - MAP_SIZE / 2) / this.scale, this.cy - (py - MAP_SIZE / 2) / this.scale]; }

  // a grid of HIT_RADIUS-sized cells, each a linked list of its points: hover hit-tests touch a few cells
  buildIndex() {
    const cells = Math.ceil(MAP_SIZE / HIT_RADIUS);
    this.cells = cells;
    this.head = new Int32Array(cells * cells).fill(-1);
    this.next = new Int32Array(this.xs.length).fill(-1);
    this.px = new Float32Array(this.xs.length);
    this.py = new Float32Array(this.xs.length);
    for (let i = 0; i < this.xs.length; i++) {
      const [px, py] = this.toPixel(this.xs[i], this.ys[i]);
      this.px[i] = px; this.py[i] = py;
      const cx = Math.floor(px / HIT_RADIUS), cy = Math.floor(py / HIT_RADIUS);
      if (cx < 0 || cy < 0 || cx >= cells || cy >= cells) continue;
      const c = cy * cells + cx;
      this.next[i] = this.head[c];
      this.head[c] = i;
    }
  }

  hit(px, py) {
    if (!this.data) return -1;
    let best = -1, bestD = HIT_RADIUS * HIT_RADIUS;
    const cx = Math.floor(px / HIT_RADIUS), cy = Math.floor(py / HIT_RADIUS);
    for (let gy = cy - 1; gy <= cy + 1; gy++) {
      for (let gx = cx - 1; gx <= cx + 1; gx++) {
        if (gx < 0 || gy < 0 || gx >= this.cells || gy >= this.cells) continue;
        for (let i = this.head[gy * this.cells + gx]; i !== -1; i = this.next[i]) {
          const d = (this.px[i] - px) ** 2 + (this.py[i] - py) ** 2;
          if (d <= bestD) { bestD = d; best = i; }
        }
      }
    }
    return best;
  }

  nearest(px, py) {
    let best = -1, bestD = Infinity;
    for (let i = 0; i < this.px.length; i++) {
      const d = (this.px[i] - px) ** 2 + (this.py[i] - py) ** 2;
      if (d < bestD) { bestD = d; best = i; }
    }
    return best;
  }

  colourOf(label) {
    if (label == null) return PALETTE[0];
    if (!this.labelColours) {
      const distinct = [...new Set(this.data.labels)].sort((p, q) => (p < q ? -1 : p > q ? 1 : 0));
      this.labelColours = new Map(distinct.map((l, k) => [l, distinct.length <= PALETTE.length
        ? PALETTE[Number.isInteger(l) && l >= 0 && l < PALETTE.length ? l : k]
        : `hsl(${Math.round((360 * k) / distinct.length)}, 65%, 48%)`]));
    }
    return this.labelColours.get(label) || PALETTE[0];
  }

  // The points are written straight into an ImageData (10,000 points in a few ms even where the canvas is
  // rasterized on the CPU), each a small square blended over the white background at 75% opacity.
  drawBase() {
    const width = this.base.width, height = this.base.height;
    const image = new ImageData(width, height);
    const pixels = image.data;
    pixels.fill(255);
    const put = (x, y, [r, g, b], alpha) => {
      if (x < 0 || y < 0 || x >= width || y >= height) return;
      const o = 4 * (y * width + x);
      pixels[o] += alpha * (r - pixels[o]);
      pixels[o + 1] += alpha * (g - pixels[o + 1]);
      pixels[o + 2] += alpha * (b - pixels[o + 2]);
    };
    // axes through the map's origin, faint
    const [ox, oy] = this.toPixel(0, 0).map((v) => Math.round(v * this.dpr));
    for (let k = 0; k < Math.max(width, height); k++) { put(ox, k, [236, 238, 242], 1); put(k, oy, [236, 238, 242], 1); }
    const labels = this.data.labels;
    const rgb = new Map();
    const side = Math.max(2, Math.round(2.5 * this.dpr));
    for (let i = 0; i < this.px.length; i++) {
      const colour = this.colourOf(labels ? labels[i] : null);
      if (!rgb.has(colour)) rgb.set(colour, cssRgb(colour));
      const c = rgb.get(colour);
      const x0 = Math.round(this.px[i] * this.dpr - side / 2), y0 = Math.round(this.py[i] * this.dpr - side / 2);
      for (let dy = 0; dy < side; dy++) for (let dx = 0; dx < side; dx++) put(x0 + dx, y0 + dy, c, 0.75);
    }
    this.base.getContext("2d").putImageData(image, 0, 0);
  }

  render() {
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.drawImage(this.base, 0, 0);
    if (!this.data) return;
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    if (this.path && this.path.length > 1) {
      ctx.strokeStyle = "#1d2330";
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      this.path.forEach(([x, y], k) => { const [px, py] = this.toPixel(x, y); k ? ctx.lineTo(px, py) : ctx.moveTo(px, py); });
      ctx.stroke();
    }
    const picks = this.side === "a" ? state.picks : {};
    for (const [key, pick] of Object.entries(picks)) {
      if (pick && pick.point) this.label(pick.point, key.toUpperCase());
    }
    const upload = this.side === "a" ? state.uploadPoint : state.uploadPointB;
    if (upload) this.diamond(upload);
    if (this.marker) this.cross(this.marker);
    if (this.hovered >= 0) {
      ctx.strokeStyle = "#1d2330";
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.arc(this.px[this.hovered], this.py[this.hovered], 5, 0, 2 * Math.PI);
      ctx.stroke();
    }
  }

  cross([x, y]) {
    const ctx = this.canvas.getContext("2d");
    const [px, py] = this.toPixel(x, y);
    ctx.lineWidth = 4; ctx.strokeStyle = "#ffffff";
    ctx.beginPath(); ctx.moveTo(px - 8, py); ctx.lineTo(px + 8, py); ctx.moveTo(px, py - 8); ctx.lineTo(px, py + 8); ctx.stroke();
    ctx.lineWidth = 2; ctx.strokeStyle = "#1d2330";
    ctx.beginPath(); ctx.moveTo(px - 7, py); ctx.lineTo(px + 7, py); ctx.moveTo(px, py - 7); ctx.lineTo(px, py + 7); ctx.stroke();
  }

  diamond([x, y]) {
    const ctx = this.canvas.getContext("2d");
    const [px, py] = this.toPixel(x, y);
    ctx.beginPath(); ctx.moveTo(px, py - 9); ctx.lineTo(px + 9, py); ctx.lineTo(px, py + 9); ctx.lineTo(px - 9, py); ctx.closePath();
    ctx.fillStyle = "#ffd400"; ctx.fill();
    ctx.lineWidth = 2; ctx.strokeStyle = "#1d2330"; ctx.stroke();
  }

  label([x, y], text) {
    const ctx = this.canvas.getContext("2d");
    const [px, py] = this.toPixel(x, y);
    ctx.fillStyle = "#1d2330";
    ctx.beginPath(); ctx.arc(px, py, 9, 0, 2 * Math.PI); ctx.fill();
    ctx.fillStyle = "#ffffff";
    ctx.font = "bold 11px system-ui, sans-serif";
    ctx.textAlign = "center"; ctx.textBaseline = "middle";
    ctx.fillText(text, px, py + 0.5);
  }

  get linear() { return this.data && this.data.inverse && this.data.inverse.kind === "linear"; }

  // the latent point a map point maps back to: mean + x * components[0] + y * components[1]
  backProject(x, y) {
    const {mean, components} = this.data.inverse;
    return mean.map((m, i) => m + x * components[0][i] + y * components[1][i]);
  }

  // where a latent point lands on the PCA map: its offset from the mean along the two orthonormal components
  // (a t-SNE or UMAP map's least-squares inverse has no such projection: no marker there)
  project(z) {
    if (!this.linear || this.data.method !== "pca" || z.length !== this.data.inverse.mean.length) return null;
    const {mean, components} = this.data.inverse;
    const d = z.map((v, i) => v - mean[i]);
    return [dot(d, components[0]), dot(d, components[1])];
  }
}

// ---------------------------------------------------------------- decoding

async function decodeRows(runName, rows) {
  const answer = await postJSON("/api/decode", {run: runName, z: rows, format: "json"});
  if (!answer || !Array.isArray(answer.images) || answer.images.length !== rows.length) {
    throw new ApiError("/api/decode: the answer does not hold one image per row");
  }
  return answer.images;
}

const decoderA = new Latest(async ({run, z}) => {
  const [image] = await decodeRows(run, [z]);
  await drawInto($("decoded"), image);
  bump("decoded");
});

const decoderB = new Latest(async ({run, z}) => {
  const [image] = await decodeRows(run, [z]);
  await drawInto($("decoded-b"), image);
  bump("decoded");
});

function setCurrent(z, what, extra) {
  state.current = Object.assign({z: z.slice(), what}, extra || {});
  $("decoded-caption").textContent = what;
  syncSliders();
  state.a.map.marker = state.current.point || state.a.map.project(state.current.z);
  state.a.map.render();
  decoderA.request({run: state.a.run.name, z: state.current.z});
}

async function imageInfo(runName, index) {
  const key = `${runName}\u0000${index}`;
  if (!state.imageCache.has(key)) {
    if (state.imageCache.size > 500) state.imageCache.clear();
    state.imageCache.set(key, getJSON("/api/image", {run: runName, index: String(index)}).catch((e) => {
      state.imageCache.delete(key);
      throw e;
    }));
  }
  return state.imageCache.get(key);
}

function labelText(label) { return label == null ? "" : ` (label ${label})`; }

// A test image picked on a map: each run shows its own posterior mean of that same image.
async function selectTestImage(index) {
  const info = await imageInfo(state.a.run.name, index);
  const point = Array.isArray(info.point) ? info.point : null; // its place on the map (any method)
  setCurrent(info.mu, `test image #${index}${labelText(info.label)}: its posterior mean`, {index, point});
  if (state.b) {
    const infoB = await imageInfo(state.b.run.name, index);
    state.b.map.marker = Array.isArray(infoB.point) ? infoB.point : state.b.map.project(infoB.mu);
    state.b.map.render();
    $("decoded-b-caption").textContent = `${state.b.run.name}: the same test image #${index}`;
    decoderB.request({run: state.b.run.name, z: infoB.mu});
  }
}

function mapPointCaption(x, y) {
  return `map point (${x.toFixed(2)}, ${y.toFixed(2)}) mapped back to the latent space`;
}

// ---------------------------------------------------------------- map interaction

function attachMap(view) {
  const canvas = view.canvas;
  let down = null;
  const position = (event) => {
    const rect = canvas.getBoundingClientRect(); // its border box: the drawing starts inside the border
    return [(event.clientX - rect.left - canvas.clientLeft) * (MAP_SIZE / canvas.clientWidth),
      (event.clientY - rect.top - canvas.clientTop) * (MAP_SIZE / canvas.clientHeight)];
  };
  const decodeAt = (px, py) => {
    const [x, y] = view.toPoint(px, py);
    if (!view.linear) return false;
    const z = view.backProject(x, y);
    if (view.side === "a") {
      setCurrent(z, mapPointCaption(x, y), {point: [x, y]});
    } else {
      view.marker = [x, y];
      view.render();
      $("decoded-b-caption").textContent = `${state.b.run.name}: ${mapPointCaption(x, y)}`;
      decoderB.request({run: state.b.run.name, z});
    }
    return true;
  };
  canvas.addEventListener("mousedown", (event) => {
    if (event.button !== 0 || !view.data) return;
    clearError();
    down = {at: position(event), moved: false};
    event.preventDefault();
  });
  canvas.addEventListener("mousemove", (event) => {
    if (!view.data) return;
    const [px, py] = position(event);
    if (down) {
      // dragging: decode the point under the pointer continuously (the decoder keeps only the latest)
      if (Math.hypot(px - down.at[0], py - down.at[1]) > 3) down.moved = true;
      if (down.moved) { hideHover(view); decodeAt(px, py); }
      return;
    }
    const hit = view.hit(px, py);
    if (hit !== view.hovered) {
      view.hovered = hit;
      view.render();
    }
    if (hit >= 0) showHover(view, hit, event); else hideHover(view);
  });
  const finish = (event) => {
    if (!down) return;
    const [px, py] = position(event);
    const moved = down.moved;
    down = null;
    if (moved) return;
    const hit = view.hit(px, py);
    if (hit >= 0) {
      selectTestImage(view.data.indices[hit]).catch(showError);
    } else if (!decodeAt(px, py)) {
      // a non-linear map (t-SNE, UMAP) has no inverse: decode the nearest point's image instead
      const near = view.nearest(px, py);
      if (near >= 0) selectTestImage(view.data.indices[near]).catch(showError);
    }
  };
  canvas.addEventListener("mouseup", finish);
  canvas.addEventListener("mouseleave", (event) => {
    if (down) finish(event);
    view.hovered = -1;
    view.render();
    hideHover(view);
  });
}

const hoverLoader = new Latest(async ({view, index}) => {
  const run = view.side === "a" ? state.a.run : state.b.run;
  const other = state.b ? (view.side === "a" ? state.b.run : state.a.run) : null;
  const info = await imageInfo(run.name, index);
  if (view.hovered < 0 || view.data.indices[view.hovered] !== index) return;
  await Promise.all([drawInto($("hover-image"), info.image), drawInto($("hover-recon"), info.reconstruction)]);
  $("hover-caption").textContent = `test image #${index}${labelText(info.label)} \u00b7 ${run.name}; click: decode its posterior mean`;
  $("hover-recon-b-box").hidden = !other;
  if (other) {
    $("hover-recon-b-label").textContent = other.name;
    const infoOther = await imageInfo(other.name, index);
    await drawInto($("hover-recon-b"), infoOther.reconstruction);
  }
});

function showHover(view, hit, event) {
  const card = $("hover");
  card.hidden = false;
  const x = Math.min(event.clientX + 18, window.innerWidth - 320);
  const y = Math.min(event.clientY + 18, window.innerHeight - 150);
  card.style.left = `${x}px`;
  card.style.top = `${y}px`;
  hoverLoader.request({view, index: view.data.indices[hit]});
}

function hideHover() { $("hover").hidden = true; }

// ---------------------------------------------------------------- sliders

function buildSliders(run) {
  const box = $("sliders");
  box.textContent = "";
  const layers = Array.isArray(run.layers) && run.layers.length ? run.layers : [run.latent_dims];
  const order = Array.isArray(run.dims_by_kl) && run.dims_by_kl.length === run.latent_dims
    ? run.dims_by_kl : [...Array(run.latent_dims).keys()];
  const kl = Array.isArray(run.kl) ? run.kl : [];
  let offset = 0;
  layers.forEach((size, layer) => {
    if (layers.length > 1) {
      const title = document.createElement("div");
      title.className = "layer-title";
      const names = Array.isArray(run.layer_names) && run.layer_names.length === layers.length ? run.layer_names : null;
      title.textContent = `${names ? names[layer] : `layer ${layer + 1} of ${layers.length}`}: ${size} dimensions`;
      box.appendChild(title);
    }
    for (const d of order.filter((i) => i >= offset && i < offset + size)) {
      const row = document.createElement("div");
      row.className = "slider";
      if (kl[d] != null && kl[d] < INACTIVE_KL) row.classList.add("inactive");
      const name = document.createElement("span");
      name.textContent = `z${d}`;
      const input = document.createElement("input");
      Object.assign(input, {type: "range", min: -SLIDER_RANGE, max: SLIDER_RANGE, step: 0.01, value: 0});
      input.id = `slider-${d}`;
      input.dataset.dim = String(d);
      const value = document.createElement("span");
      value.className = "value";
      value.textContent = "0.00";
      const klText = document.createElement("span");
      klText.className = "kl";
      klText.textContent = kl[d] != null ? `${Number(kl[d]).toFixed(2)} nats` : "";
      klText.title = "average KL of this dimension on the test set";
      input.addEventListener("input", () => {
        clearError();
        const z = state.current.z.slice();
        z[d] = Number(input.value);
        value.textContent = z[d].toFixed(2);
        state.current = {z, what: `dimension z${d} set to ${z[d].toFixed(2)}`};
        $("decoded-caption").textContent = state.current.what;
        state.a.map.marker = state.a.map.project(z);
        state.a.map.render();
        decoderA.request({run: state.a.run.name, z});
      });
      row.append(name, input, value, klText);
      box.appendChild(row);
    }
    offset += size;
  });
}

function syncSliders() {
  for (const input of $("sliders").querySelectorAll("input[type=range]")) {
    const v = state.current.z[Number(input.dataset.dim)];
    input.value = String(Math.max(-SLIDER_RANGE, Math.min(SLIDER_RANGE, v)));
    input.parentElement.querySelector(".value").textContent = v.toFixed(2);
  }
}

// ---------------------------------------------------------------- interpolation

function pick(key) {
  if (!state.current) return;
  const c = state.current;
  const point = c.point || state.a.map.project(c.z);
  state.picks[key] = {z: c.z.slice(), what: c.what, point, index: c.index};
  $(`interp-${key}`).textContent = c.what;
  state.a.map.render();
}

let animation = null;

function drawStrip(strip, images) {
  const cell = 56;
  strip.width = cell * images.length;
  strip.height = cell;
  const ctx = strip.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  images.forEach((img, k) => ctx.drawImage(img, k * cell, 0, cell, cell));
}

async function playInterpolation() {
  const {a, b} = state.picks;
  if (!a || !b) throw new ApiError("pick both ends first: A and B, with the buttons under the decoded image");
  const steps = Math.max(3, Math.min(32, Math.round(Number($("interp-steps").value) || 10)));
  $("interp-steps").value = String(steps);
  const method = $("interp-method").value === "slerp" ? slerp : lerp;
  const path = [];
  for (let k = 0; k < steps; k++) path.push(method(a.z, b.z, k / (steps - 1)));
  const images = await Promise.all((await decodeRows(state.a.run.name, path)).map(loadImage));
  drawStrip($("interp-strip"), images);
  // side by side: run B between the same two test images (its own posterior means of them)
  const same = state.b && a.index != null && b.index != null;
  $("interp-b-box").hidden = !same;
  if (same) {
    const [ia, ib] = await Promise.all([imageInfo(state.b.run.name, a.index), imageInfo(state.b.run.name, b.index)]);
    const pathB = [];
    for (let k = 0; k < steps; k++) pathB.push(method(ia.mu, ib.mu, k / (steps - 1)));
    drawStrip($("interp-strip-b"), await Promise.all((await decodeRows(state.b.run.name, pathB)).map(loadImage)));
    $("interp-b-title").textContent = `${state.b.run.name}, between the same test images #${a.index} and #${b.index}`;
  }
  const view = state.a.map;
  const projected = path.map((z) => view.project(z)); // (none on a t-SNE or UMAP map)
  view.path = projected.every(Boolean) ? projected : null;
  view.render();
  // the animation runs there and back, 8 frames a second
  if (animation) clearInterval(animation);
  const anim = $("interp-anim").getContext("2d");
  anim.imageSmoothingEnabled = false;
  let frame = 0;
  const show = () => {
    const k = frame < steps ? frame : 2 * steps - 2 - frame;
    anim.clearRect(0, 0, 168, 168);
    anim.drawImage(images[k], 0, 0, 168, 168);
    frame = (frame + 1) % (2 * steps - 2);
  };
  show();
  animation = setInterval(show, 125);
  bump("interpolated");
}

// ---------------------------------------------------------------- your image

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})[c]);
}

function scoreLine(answer, runName) {
  if (answer.score == null) return `<b>${escapeHtml(runName)}</b>: no finite score for this image`;
  const method = answer.score_method ? ` (${escapeHtml(answer.score_method)})` : "";
  const parts = [`<b>${escapeHtml(runName)}</b>: score <b class="number">${Number(answer.score).toFixed(2)}</b> nats${method}`];
  if (answer.threshold == null || answer.anomaly == null) {
    parts.push("&middot; this run has no calibrated threshold");
  } else {
    const verdict = answer.anomaly ? '<span class="anomaly">anomaly</span>' : '<span class="normal">normal</span>';
    parts.push(`&middot; threshold ${Number(answer.threshold).toFixed(2)} &middot; ${verdict}`);
  }
  return parts.join(" ");
}

async function encodeFile(runName, file) {
  const form = new FormData();
  form.append("file", file, file.name || "upload");
  form.append("run", runName);
  const invert = $("upload-invert").value;
  return api(`/api/encode?${new URLSearchParams({run: runName, invert})}`, {method: "POST", body: form});
}

async function upload(file) {
  clearError();
  state.lastFile = file;
  const answer = await encodeFile(state.a.run.name, file);
  await Promise.all([drawInto($("upload-input"), answer.input), drawInto($("upload-recon"), answer.reconstruction)]);
  $("score").innerHTML = scoreLine(answer, state.a.run.name);
  $("upload-note").textContent = answer.note ? oneLine(answer.note) : "";
  const nearest = $("nearest");
  nearest.textContent = "";
  for (const item of answer.nearest || []) {
    const fig = document.createElement("figure");
    const caption = document.createElement("figcaption");
    const split = item.split === "train" ? "training" : "test";
    caption.textContent = `#${item.index} \u00b7 ${Number(item.distance).toFixed(2)}`;
    fig.append(imgElement(item.image, `${split} image #${item.index}, distance ${Number(item.distance).toFixed(3)}; click to decode it`), caption);
    fig.addEventListener("click", () => {
      if (item.split === "train") setCurrent(item.mu, `training image #${item.index}: its posterior mean`);
      else selectTestImage(item.index).catch(showError);
    });
    nearest.appendChild(fig);
  }
  state.uploadPoint = Array.isArray(answer.point) ? answer.point : state.a.map.project(answer.mu);
  setCurrent(answer.mu, `your image (${file.name || "upload"}): its posterior mean`, {point: state.uploadPoint});
  if (state.b) {
    const answerB = await encodeFile(state.b.run.name, file);
    await drawInto($("upload-recon-b"), answerB.reconstruction);
    $("upload-recon-b-caption").textContent = `reconstruction by ${state.b.run.name}`;
    $("score-b").innerHTML = scoreLine(answerB, state.b.run.name);
    state.uploadPointB = Array.isArray(answerB.point) ? answerB.point : state.b.map.project(answerB.mu);
    state.b.map.render();
    $("decoded-b-caption").textContent = `${state.b.run.name}: your image's posterior mean`;
    decoderB.request({run: state.b.run.name, z: answerB.mu});
  }
  bump("uploaded");
}

function attachUpload() {
  const zone = $("upload");
  const input = $("upload-file");
  input.addEventListener("change", () => {
    if (input.files && input.files[0]) upload(input.files[0]).catch(showError);
    input.value = "";
  });
  $("upload-invert").addEventListener("change", () => { if (state.lastFile) upload(state.lastFile).catch(showError); });
  zone.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") input.click(); });
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => { event.preventDefault(); zone.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    zone.addEventListener(name, (event) => { event.preventDefault(); zone.classList.remove("over"); });
  }
  zone.addEventListener("drop", (event) => {
    const file = event.dataTransfer && event.dataTransfer.files && event.dataTransfer.files[0];
    if (file) upload(file).catch(showError);
  });
  // a file dropped anywhere else must not make the browser navigate away from the page
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
}

// ---------------------------------------------------------------- samples

async function fillSamples(box, run, sampler, seed) {
  const answer = await getJSON("/api/samples", {run: run.name, count: String(SAMPLE_COUNT), seed: String(seed), sampler});
  box.textContent = "";
  for (const src of answer.images || []) box.appendChild(imgElement(src, `${run.name}, ${sampler}, seed ${seed}`));
}

async function refreshSamples() {
  const sampler = $("sampler-select").value || "prior";
  const seed = state.samplesSeed;
  $("samples-title-a").textContent = `${state.a.run.name}: ${sampler === "prior" ? "the prior" : sampler}, seed ${seed}`;
  const jobs = [fillSamples($("samples"), state.a.run, sampler, seed)];
  if (state.b) {
    const samplerB = (state.b.run.samplers || []).includes(sampler) ? sampler : "prior";
    $("samples-title-b").textContent = `${state.b.run.name}: ${samplerB === "prior" ? "the prior" : samplerB}, seed ${seed}`
      + (samplerB !== sampler ? ` (it has no ${sampler} sampler)` : "");
    jobs.push(fillSamples($("samples-b"), state.b.run, samplerB, seed));
  }
  await Promise.all(jobs);
  bump("sampled");
}

function fillSamplerSelect(run) {
  const select = $("sampler-select");
  const keep = select.value;
  select.textContent = "";
  const names = ["prior", ...(run.samplers || []).filter((s) => s !== "prior")];
  for (const name of names) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name === "prior" ? "the prior" : `the ${name} sampler`;
    select.appendChild(option);
  }
  select.value = names.includes(keep) ? keep : "prior";
}

// ---------------------------------------------------------------- runs

function describe(run) {
  const shape = Array.isArray(run.image_shape) ? run.image_shape.join("\u00d7") : "?";
  const layers = Array.isArray(run.layers) && run.layers.length > 1 ? ` in ${run.layers.length} layers (${run.layers.join(", ")})` : "";
  const threshold = run.threshold == null ? "no calibrated threshold" : `threshold ${Number(run.threshold).toFixed(2)} nats`;
  const note = run.threshold_note ? ` (${run.threshold_note})` : "";
  return `${run.family}, ${run.latent_dims} latent dimensions${layers}, images ${shape}, ${threshold}${note}`;
}

function fillRunSelects() {
  const select = $("run-select");
  const compare = $("compare-select");
  const keepCompare = compare.value;
  select.textContent = "";
  compare.textContent = "";
  compare.appendChild(new Option("(none)", ""));
  for (const run of state.runs) {
    select.appendChild(new Option(run.name, run.name));
    compare.appendChild(new Option(run.name, run.name));
  }
  compare.value = keepCompare;
  compare.disabled = state.runs.length < 2;
}

function mapNote(view) {
  const note = view.data.note ? `${view.data.note} ` : "";
  const how = view.linear
    ? "On this page: click a point to decode that test image's own posterior mean; click or drag anywhere else to " +
      "decode the 2-D point mapped back to the latent space as above. The cross marks what the decoded image shows."
    : "On this page: a click decodes the posterior mean of the nearest test image.";
  return note + how;
}

function drawLegend(view) {
  const legend = $("legend");
  legend.textContent = "";
  if (!view.data.labels) return;
  const names = view.data.label_names || null;
  view.colourOf(null);
  view.colourOf(view.data.labels[0]);
  for (const [label, colour] of view.labelColours) {
    const item = document.createElement("span");
    item.style.setProperty("--c", colour);
    item.textContent = names && names[label] != null ? String(names[label]) : String(label);
    legend.appendChild(item);
  }
}

async function showRun(name) {
  document.body.dataset.ready = "0";
  clearError();
  const run = runByName(name);
  if (!run) throw new ApiError(`no run named ${name}`);
  const map = maps.a;
  map.data = null; map.labelColours = null; map.marker = null; map.path = null; map.hovered = -1;
  state.a = {run, map};
  state.picks = {a: null, b: null};
  $("interp-a").textContent = "(none)";
  $("interp-b").textContent = "(none)";
  state.uploadPoint = null;
  $("run-info").textContent = describe(run);
  $("map-title-a").textContent = state.b ? run.name : "";
  await map.load(run.name);
  const method = {pca: "PCA", tsne: "t-SNE", umap: "UMAP"}[map.data.method] || map.data.method || "PCA";
  $("map-method").textContent = `(${method} of ${map.xs.length.toLocaleString("en")} test posterior means)`;
  $("map-note").textContent = mapNote(map);
  drawLegend(map);
  buildSliders(run);
  fillSamplerSelect(run);
  const start = map.linear ? map.data.inverse.mean.slice() : new Array(run.latent_dims).fill(0);
  setCurrent(start, map.linear ? "the test set's mean latent point" : "z = 0, the prior's mean");
  document.body.dataset.ready = "1";
  // since the navigation began: the page is interactive (map drawn, sliders built); benchmarks/explore_page.py
  window.vaekitTiming = Object.assign({ready: performance.now(), points: map.xs.length}, map.timing);
  await refreshSamples();
  if (state.lastFile) await upload(state.lastFile);
}

async function showCompare(name) {
  clearError();
  const run = name ? runByName(name) : null;
  document.body.classList.toggle("compare", Boolean(run));
  for (const id of ["map-box-b", "decoded-b-box", "upload-recon-b-box", "score-b", "samples-b-box"]) $(id).hidden = !run;
  state.uploadPointB = null;
  if (!run) {
    state.b = null;
    $("interp-b-box").hidden = true;
    $("map-title-a").textContent = "";
    $("samples-title-b").textContent = "";
    return refreshSamples();
  }
  const map = maps.b;
  map.data = null; map.labelColours = null; map.marker = null; map.path = null; map.hovered = -1;
  state.b = {run, map};
  $("map-title-a").textContent = `${state.a.run.name} (sliders, interpolation)`;
  $("map-title-b").textContent = run.name;
  await map.load(run.name);
  clearCanvas($("decoded-b"));
  $("decoded-b-caption").textContent = `${run.name}: pick a test image on either map to see both runs decode it`;
  await refreshSamples();
  if (state.current && state.current.index != null) await selectTestImage(state.current.index);
  if (state.picks.a && state.picks.b) await playInterpolation();
  if (state.lastFile) await upload(state.lastFile);
}

async function main() {
  const answer = await getJSON("/api/runs");
  if (!answer || !Array.isArray(answer.runs) || !answer.runs.length) throw new ApiError("the server has no runs");
  state.runs = answer.runs;
  fillRunSelects();
  $("run-select").addEventListener("change", (e) => showRun(e.target.value)
    .then(() => state.b && state.b.run.name === e.target.value ? showCompare("") : null).catch(showError));
  $("compare-select").addEventListener("change", (e) => {
    if (e.target.value === state.a.run.name) { e.target.value = ""; }
    showCompare(e.target.value).catch(showError);
  });
  $("pick-a").addEventListener("click", () => pick("a"));
  $("pick-b").addEventListener("click", () => pick("b"));
  $("reset-sliders").addEventListener("click", () => setCurrent(new Array(state.a.run.latent_dims).fill(0), "z = 0, the prior's mean"));
  $("interp-play").addEventListener("click", () => { clearError(); playInterpolation().catch(showError); });
  $("interp-method").addEventListener("change", () => { if (state.picks.a && state.picks.b) playInterpolation().catch(showError); });
  $("samples-refresh").addEventListener("click", () => {
    clearError();
    state.samplesSeed = Math.floor(Math.random() * 2 ** 31);
    refreshSamples().catch(showError);
  });
  $("sampler-select").addEventListener("change", () => refreshSamples().catch(showError));
  attachUpload();
  maps.a = new MapView($("map"), "a");
  maps.b = new MapView($("map-b"), "b");
  attachMap(maps.a);
  attachMap(maps.b);
  await showRun(state.runs[0].name);
}

main().catch(showError);
