// pansynth painter: paint a panoptic map (class + instance id per pixel), see the synthesized image.
//
// The map lives here as two Int32Arrays at the model's resolution. After each stroke (debounced)
// both maps are sent to the server as PNGs in the Folder layout (semantic: 8/16-bit class indices;
// panoptic: 16-bit ids, or RGB-encoded ids R + 256 G + 65536 B when an id exceeds 65535).
// Segment ids follow the Cityscapes convention where they can: stuff class c has id c, instance k of
// thing class c has id c * 1000 + k; any free id is used otherwise.
"use strict";

(() => {
  const MAX_ID = 256 ** 3 - 1;
  const UNDO_LIMIT = 100;
  const DEBOUNCE_MS = 150;
  const BRUSH_SIZES = [1, 2, 3, 5, 8, 13, 21, 34];

  const $ = (id) => document.getElementById(id);
  const state = {
    height: 0,
    width: 0,
    scale: 1,
    semantic: null, // Int32Array(H * W): class index per pixel
    panoptic: null, // Int32Array(H * W): segment id per pixel
    classes: new Map(), // class index -> {index, name, thing, color}
    background: 0,
    selected: 0,
    usedIds: new Set(),
    stuffIds: new Map(), // class -> the id of its one segment
    lastInstance: new Map(), // thing class -> id of its latest instance
    undo: [],
    redo: [],
    stroke: null,
    maxUploadBytes: 0,
    // synthesis requests: one in flight at a time; edits made meanwhile are sent when it returns
    timer: null,
    inFlight: false,
    dirty: false,
    resultUrl: null,
    resultPanoptic: null,
    imageLoading: false,
    mapLoading: false,
    renderQueued: false,
  };

  // ------------------------------------------------------------------ status and server calls
  function setStatus(text, kind = "") {
    const status = $("status");
    status.textContent = text;
    status.dataset.kind = kind;
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      if (body && body.error) return body.error;
    } catch (_) {
      // not JSON: fall through
    }
    return `${response.status} ${response.statusText}`;
  }

  async function getJson(url) {
    const response = await fetch(url, { cache: "no-store" });
    if (!response.ok) throw new Error(await errorText(response));
    return response.json();
  }

  // ------------------------------------------------------------------ PNG encoding (Folder layout)
  const CRC_TABLE = (() => {
    const table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
    return table;
  })();

  function crc32(bytes) {
    let c = 0xffffffff;
    for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  }

  function pngChunk(type, data) {
    const chunk = new Uint8Array(12 + data.length);
    const view = new DataView(chunk.buffer);
    view.setUint32(0, data.length);
    for (let i = 0; i < 4; i++) chunk[4 + i] = type.charCodeAt(i);
    chunk.set(data, 8);
    view.setUint32(8 + data.length, crc32(chunk.subarray(4, 8 + data.length)));
    return chunk;
  }

  // zlib stream of stored (uncompressed) deflate blocks: the fallback without CompressionStream.
  function zlibStored(bytes) {
    const blocks = Math.max(1, Math.ceil(bytes.length / 65535));
    const out = new Uint8Array(2 + bytes.length + 5 * blocks + 4);
    out[0] = 0x78;
    out[1] = 0x01;
    let o = 2;
    for (let b = 0; b < blocks; b++) {
      const start = b * 65535;
      const length = Math.min(65535, bytes.length - start);
      out[o++] = b === blocks - 1 ? 1 : 0;
      out[o++] = length & 0xff;
      out[o++] = length >>> 8;
      out[o++] = ~length & 0xff;
      out[o++] = (~length >>> 8) & 0xff;
      out.set(bytes.subarray(start, start + length), o);
      o += length;
    }
    let a = 1;
    let s = 0;
    for (let i = 0; i < bytes.length; i++) {
      a = (a + bytes[i]) % 65521;
      s = (s + a) % 65521;
    }
    new DataView(out.buffer).setUint32(o, ((s << 16) | a) >>> 0);
    return out;
  }

  async function zlibCompress(bytes) {
    if (typeof CompressionStream === "function") {
      const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("deflate"));
      return new Uint8Array(await new Response(stream).arrayBuffer());
    }
    return zlibStored(bytes);
  }

  // format: "gray8" | "gray16" (one value per pixel) | "rgb8" (value = R + 256 G + 65536 B)
  async function encodePng(width, height, values, format) {
    const channels = format === "rgb8" ? 3 : 1;
    const sampleBytes = format === "gray16" ? 2 : 1;
    const stride = 1 + width * channels * sampleBytes;
    const raw = new Uint8Array(stride * height);
    for (let y = 0; y < height; y++) {
      let o = y * stride;
      raw[o++] = 0; // filter type: none
      for (let x = 0; x < width; x++) {
        const v = values[y * width + x];
        if (format === "gray8") {
          raw[o++] = v;
        } else if (format === "gray16") {
          raw[o++] = v >>> 8;
          raw[o++] = v & 0xff;
        } else {
          raw[o++] = v & 0xff;
          raw[o++] = (v >>> 8) & 0xff;
          raw[o++] = (v >>> 16) & 0xff;
        }
      }
    }
    const header = new Uint8Array(13);
    const view = new DataView(header.buffer);
    view.setUint32(0, width);
    view.setUint32(4, height);
    header[8] = 8 * sampleBytes; // bit depth
    header[9] = format === "rgb8" ? 2 : 0; // colour type: truecolour or greyscale
    const signature = Uint8Array.of(137, 80, 78, 71, 13, 10, 26, 10);
    const idat = await zlibCompress(raw);
    return new Blob([signature, pngChunk("IHDR", header), pngChunk("IDAT", idat), pngChunk("IEND", new Uint8Array(0))], {
      type: "image/png",
    });
  }

  function maxOf(values) {
    let max = 0;
    for (let i = 0; i < values.length; i++) if (values[i] > max) max = values[i];
    return max;
  }

  function semanticPng(semantic) {
    return encodePng(state.width, state.height, semantic, maxOf(semantic) < 256 ? "gray8" : "gray16");
  }

  function panopticPng(panoptic) {
    return encodePng(state.width, state.height, panoptic, maxOf(panoptic) < 65536 ? "gray16" : "rgb8");
  }

  // ------------------------------------------------------------------ segment ids
  function isThing(cls) {
    const entry = state.classes.get(cls);
    return Boolean(entry && entry.thing);
  }

  function freeId() {
    let candidate = 1;
    for (const id of state.usedIds) if (id >= candidate) candidate = id + 1;
    if (candidate <= MAX_ID) return candidate;
    for (candidate = 1; state.usedIds.has(candidate); candidate++);
    return candidate;
  }

  function claim(id) {
    state.usedIds.add(id);
    return id;
  }

  // stuff (and the background) paint into their class's one segment
  function stuffId(cls) {
    if (state.stuffIds.has(cls)) return state.stuffIds.get(cls);
    const id = claim(cls >= 0 && cls <= MAX_ID && !state.usedIds.has(cls) ? cls : freeId());
    state.stuffIds.set(cls, id);
    return id;
  }

  function newInstanceId(cls) {
    if (cls >= 1) {
      for (let k = 1; k < 1000; k++) {
        const id = cls * 1000 + k;
        if (id > MAX_ID) break;
        if (!state.usedIds.has(id)) return claim(id);
      }
    }
    return claim(freeId());
  }

  // ids present in the map, each stuff class's segment, after the map changed wholesale
  function reindex() {
    state.usedIds = new Set();
    state.stuffIds = new Map();
    const { semantic, panoptic } = state;
    for (let i = 0; i < panoptic.length; i++) {
      const id = panoptic[i];
      if (!state.usedIds.has(id)) {
        state.usedIds.add(id);
        const cls = semantic[i];
        if (!isThing(cls) && !state.stuffIds.has(cls)) state.stuffIds.set(cls, id);
      }
    }
    for (const [cls, id] of state.lastInstance) if (!state.usedIds.has(id)) state.lastInstance.delete(cls);
  }

  // ------------------------------------------------------------------ edits and history
  function snapshot() {
    return { semantic: state.semantic.slice(), panoptic: state.panoptic.slice() };
  }

  function pushUndo() {
    state.undo.push(snapshot());
    if (state.undo.length > UNDO_LIMIT) state.undo.shift();
    state.redo = [];
    updateHistoryButtons();
  }

  function restore(from, to) {
    if (!from.length) return;
    to.push(snapshot());
    const previous = from.pop();
    state.semantic = previous.semantic;
    state.panoptic = previous.panoptic;
    reindex();
    updateHistoryButtons();
    queueRender();
    scheduleSynthesis();
  }

  function updateHistoryButtons() {
    $("undo").disabled = state.undo.length === 0;
    $("redo").disabled = state.redo.length === 0;
  }

  function setMaps(semantic, panoptic) {
    state.semantic = Int32Array.from(semantic);
    state.panoptic = Int32Array.from(panoptic);
    state.lastInstance = new Map();
    reindex();
    queueRender();
  }

  function clearMaps() {
    const size = state.height * state.width;
    state.semantic = new Int32Array(size).fill(state.background);
    state.panoptic = new Int32Array(size);
    state.usedIds = new Set();
    state.stuffIds = new Map();
    state.lastInstance = new Map();
    state.panoptic.fill(stuffId(state.background));
    queueRender();
  }

  function currentTool() {
    return document.querySelector('input[name="tool"]:checked').value;
  }

  function brushSize() {
    return Number($("brush-size").value);
  }

  // (class, id) a stroke or fill starting at pixel index `at` paints with
  function paintTarget(at, continuing) {
    if (currentTool() === "eraser") return { cls: state.background, id: stuffId(state.background) };
    const cls = state.selected;
    if (!isThing(cls)) return { cls, id: stuffId(cls) };
    let id;
    if (continuing) {
      if (at >= 0 && state.semantic[at] === cls) id = state.panoptic[at];
      else if (state.lastInstance.has(cls)) id = state.lastInstance.get(cls);
    }
    if (id === undefined) id = newInstanceId(cls);
    state.lastInstance.set(cls, id);
    return { cls, id };
  }

  function stamp(cx, cy, target) {
    const radius = brushSize() / 2;
    const { width, height, semantic, panoptic } = state;
    const x0 = Math.max(0, Math.floor(cx - radius));
    const x1 = Math.min(width - 1, Math.ceil(cx + radius));
    const y0 = Math.max(0, Math.floor(cy - radius));
    const y1 = Math.min(height - 1, Math.ceil(cy + radius));
    for (let y = y0; y <= y1; y++) {
      for (let x = x0; x <= x1; x++) {
        const dx = x + 0.5 - cx;
        const dy = y + 0.5 - cy;
        if (dx * dx + dy * dy <= radius * radius) {
          semantic[y * width + x] = target.cls;
          panoptic[y * width + x] = target.id;
        }
      }
    }
    // the pixel under the pointer is always painted, whatever the brush size
    const px = Math.floor(cx);
    const py = Math.floor(cy);
    if (px >= 0 && px < width && py >= 0 && py < height) {
      semantic[py * width + px] = target.cls;
      panoptic[py * width + px] = target.id;
    }
  }

  function strokeTo(x, y) {
    const stroke = state.stroke;
    const dx = x - stroke.x;
    const dy = y - stroke.y;
    const steps = Math.max(1, Math.ceil(Math.hypot(dx, dy) / Math.max(0.5, brushSize() / 4)));
    for (let s = 1; s <= steps; s++) stamp(stroke.x + (dx * s) / steps, stroke.y + (dy * s) / steps, stroke.target);
    stroke.x = x;
    stroke.y = y;
  }

  // 4-connected flood fill of the segment (same class and id) under (x, y)
  function fill(x, y, target) {
    const { width, height, semantic, panoptic } = state;
    const seed = y * width + x;
    const seedClass = semantic[seed];
    const seedId = panoptic[seed];
    if (seedClass === target.cls && seedId === target.id) return false;
    const stack = [seed];
    const seen = new Uint8Array(width * height);
    seen[seed] = 1;
    while (stack.length) {
      const i = stack.pop();
      semantic[i] = target.cls;
      panoptic[i] = target.id;
      const px = i % width;
      const neighbours = [px > 0 ? i - 1 : -1, px < width - 1 ? i + 1 : -1, i - width, i + width];
      for (const j of neighbours) {
        if (j >= 0 && j < width * height && !seen[j] && semantic[j] === seedClass && panoptic[j] === seedId) {
          seen[j] = 1;
          stack.push(j);
        }
      }
    }
    return true;
  }

  // ------------------------------------------------------------------ drawing
  function instanceShade(id) {
    // golden-ratio steps: consecutive ids get clearly different shades
    return 0.55 + 0.45 * ((id * 0.6180339887) % 1);
  }

  function mapImageData() {
    const { width, height, semantic, panoptic } = state;
    const image = new ImageData(width, height);
    const data = image.data;
    for (let i = 0; i < width * height; i++) {
      const entry = state.classes.get(semantic[i]);
      const color = entry ? entry.color : [255, 0, 255];
      const shade = entry && entry.thing ? instanceShade(panoptic[i]) : 1;
      data[4 * i] = color[0] * shade;
      data[4 * i + 1] = color[1] * shade;
      data[4 * i + 2] = color[2] * shade;
      data[4 * i + 3] = 255;
    }
    return image;
  }

  // outline of every thing instance: edges between different ids with a thing on either side
  function drawOutlines(canvas, semantic, panoptic) {
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (!$("show-outlines").checked || !panoptic) return;
    const { width, height, scale } = state;
    const line = scale >= 4 ? 2 : 1;
    ctx.fillStyle = "rgba(255, 255, 255, 0.95)";
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const i = y * width + x;
        const thing = isThing(semantic[i]);
        if (x + 1 < width && panoptic[i] !== panoptic[i + 1] && (thing || isThing(semantic[i + 1]))) {
          ctx.fillRect((x + 1) * scale - line / 2, y * scale, line, scale);
        }
        if (y + 1 < height && panoptic[i] !== panoptic[i + width] && (thing || isThing(semantic[i + width]))) {
          ctx.fillRect(x * scale, (y + 1) * scale - line / 2, scale, line);
        }
      }
    }
  }

  function render() {
    state.renderQueued = false;
    $("map-canvas").getContext("2d").putImageData(mapImageData(), 0, 0);
    drawOutlines($("map-outline"), state.semantic, state.panoptic);
    if (state.resultPanoptic) drawOutlines($("result-outline"), state.resultPanoptic.semantic, state.resultPanoptic.panoptic);
  }

  function queueRender() {
    if (!state.renderQueued) {
      state.renderQueued = true;
      requestAnimationFrame(render);
    }
  }

  // ------------------------------------------------------------------ synthesis
  function setPending() {
    const pending =
      state.timer !== null ||
      state.inFlight ||
      state.dirty ||
      state.stroke !== null ||
      state.imageLoading ||
      state.mapLoading;
    document.body.dataset.pending = pending ? "1" : "0";
  }

  function scheduleSynthesis(delay = DEBOUNCE_MS) {
    if (state.timer !== null) clearTimeout(state.timer);
    state.timer = setTimeout(() => {
      state.timer = null;
      sendSynthesis();
    }, delay);
    setPending();
  }

  async function sendSynthesis() {
    if (state.inFlight) {
      state.dirty = true;
      setPending();
      return;
    }
    state.inFlight = true;
    state.dirty = false;
    setPending();
    const sent = snapshot();
    try {
      // A page that brings its own backend (the static in-browser painter of `pansynth export --painter`)
      // synthesizes through it instead of the server.
      if (window.PANSYNTH_BACKEND) {
        document.body.dataset.requests = String(Number(document.body.dataset.requests) + 1);
        setStatus("synthesizing…");
        const started = performance.now();
        const blob = await window.PANSYNTH_BACKEND.synthesize({
          semantic: sent.semantic, panoptic: sent.panoptic, height: state.height, width: state.width, style: null,
        });
        showResult(blob, sent, String(Math.round(performance.now() - started)));
        return;
      }
      const form = new FormData();
      form.append("semantic", await semanticPng(sent.semantic), "semantic.png");
      form.append("panoptic", await panopticPng(sent.panoptic), "panoptic.png");
      document.body.dataset.requests = String(Number(document.body.dataset.requests) + 1);
      setStatus("synthesizing…");
      const response = await fetch("/api/synthesize", { method: "POST", body: form });
      if (response.ok) {
        showResult(await response.blob(), sent, response.headers.get("X-Synthesis-Ms"));
      } else if (response.status === 409) {
        setStatus("superseded by a newer map");
      } else {
        setStatus(`synthesis refused: ${await errorText(response)}`, "error");
      }
    } catch (error) {
      setStatus(`synthesis failed: ${error.message}`, "error");
    } finally {
      state.inFlight = false;
      if (state.dirty) sendSynthesis();
      setPending();
    }
  }

  function showResult(blob, maps, milliseconds) {
    const url = URL.createObjectURL(blob);
    const previous = state.resultUrl;
    const image = $("result-image");
    // "pending" lasts until the new image is decoded and shown
    state.imageLoading = true;
    image.onload = image.onerror = () => {
      if (previous) URL.revokeObjectURL(previous);
      state.imageLoading = false;
      document.body.dataset.results = String(Number(document.body.dataset.results) + 1);
      setPending();
    };
    image.src = url;
    state.resultUrl = url;
    state.resultPanoptic = maps;
    const download = $("download-image");
    download.href = url;
    download.classList.remove("disabled");
    download.setAttribute("aria-disabled", "false");
    $("timing").textContent = milliseconds ? `(${milliseconds} ms)` : "";
    setStatus("ready");
    queueRender();
  }

  // ------------------------------------------------------------------ pointer input
  function pointerPosition(event) {
    const rect = $("map-canvas").getBoundingClientRect();
    return {
      x: ((event.clientX - rect.left) / rect.width) * state.width,
      y: ((event.clientY - rect.top) / rect.height) * state.height,
    };
  }

  function pixelIndex(x, y) {
    const px = Math.floor(x);
    const py = Math.floor(y);
    if (px < 0 || py < 0 || px >= state.width || py >= state.height) return -1;
    return py * state.width + px;
  }

  function onPointerDown(event) {
    if (event.button !== 0 || !state.semantic) return;
    event.preventDefault();
    const { x, y } = pointerPosition(event);
    const at = pixelIndex(x, y);
    if (at < 0) return;
    const continuing = $("continue-instance").checked || event.shiftKey;
    if (currentTool() === "fill") {
      const snap = snapshot();
      const target = paintTarget(at, continuing);
      if (fill(Math.floor(x), Math.floor(y), target)) {
        state.undo.push(snap);
        if (state.undo.length > UNDO_LIMIT) state.undo.shift();
        state.redo = [];
        updateHistoryButtons();
        queueRender();
        scheduleSynthesis();
      }
      return;
    }
    pushUndo();
    $("map-canvas").setPointerCapture(event.pointerId);
    state.stroke = { x, y, target: paintTarget(at, continuing) };
    stamp(x, y, state.stroke.target);
    if (state.timer !== null) {
      clearTimeout(state.timer);
      state.timer = null;
    }
    setPending();
    queueRender();
  }

  function onPointerMove(event) {
    moveCursor(event);
    if (!state.stroke) return;
    const { x, y } = pointerPosition(event);
    strokeTo(x, y);
    queueRender();
  }

  function onPointerUp(event) {
    if (!state.stroke) return;
    const { x, y } = pointerPosition(event);
    strokeTo(x, y);
    state.stroke = null;
    queueRender();
    scheduleSynthesis();
  }

  function moveCursor(event) {
    const cursor = $("brush-cursor");
    if (currentTool() === "fill") {
      cursor.hidden = true;
      return;
    }
    const rect = $("map-canvas").getBoundingClientRect();
    const diameter = brushSize() * state.scale;
    cursor.hidden = false;
    cursor.style.width = `${diameter}px`;
    cursor.style.height = `${diameter}px`;
    cursor.style.left = `${event.clientX - rect.left - diameter / 2}px`;
    cursor.style.top = `${event.clientY - rect.top - diameter / 2}px`;
  }

  // ------------------------------------------------------------------ controls
  function selectClass(cls) {
    if (!state.classes.has(cls)) return;
    state.selected = cls;
    for (const button of document.querySelectorAll(".swatch")) {
      button.setAttribute("aria-checked", String(Number(button.dataset.class) === cls));
    }
    if (currentTool() === "eraser") $("tool-brush").checked = true;
  }

  function buildPalette(info) {
    const palette = $("palette");
    palette.textContent = "";
    info.classes.forEach((entry, position) => {
      state.classes.set(entry.index, entry);
      const button = document.createElement("button");
      button.type = "button";
      button.className = `swatch ${entry.thing ? "thing" : "stuff"}`;
      button.dataset.class = String(entry.index);
      button.setAttribute("role", "radio");
      button.title = entry.thing ? "thing: each stroke paints a new instance" : "stuff: one segment for the class";
      const key = document.createElement("span");
      key.className = "key";
      key.textContent = position < 10 ? String((position + 1) % 10) : "";
      const chip = document.createElement("span");
      chip.className = "chip";
      chip.style.background = `rgb(${entry.color.join(",")})`;
      const name = document.createElement("span");
      name.textContent = entry.name;
      const kind = document.createElement("span");
      kind.className = "kind";
      kind.textContent = entry.index === info.ignore_index ? "ignore" : entry.thing ? "thing" : "stuff";
      button.append(key, chip, name, kind);
      button.addEventListener("click", () => selectClass(entry.index));
      palette.append(button);
    });
    const eraser = state.classes.get(info.background);
    const things = info.classes.some((entry) => entry.thing);
    $("class-legend").textContent =
      (things
        ? "thing (round chip): every stroke starts a new instance; stuff (square chip): one segment per class. "
        : "No thing classes known: every class paints as stuff (one segment per class). ") +
      `The eraser and Clear paint "${eraser ? eraser.name : info.background}".`;
  }

  function buildBrushSizes() {
    const select = $("brush-size");
    const preferred = Math.max(state.width, state.height) / 12;
    let best = BRUSH_SIZES[0];
    for (const size of BRUSH_SIZES) {
      const option = document.createElement("option");
      option.value = String(size);
      option.textContent = `${size} px`;
      select.append(option);
      if (Math.abs(size - preferred) < Math.abs(best - preferred)) best = size;
    }
    select.value = String(best);
  }

  function stepBrush(direction) {
    const select = $("brush-size");
    const index = BRUSH_SIZES.indexOf(Number(select.value)) + direction;
    if (index >= 0 && index < BRUSH_SIZES.length) select.value = String(BRUSH_SIZES[index]);
  }

  async function loadMapsFrom(responsePromise, label) {
    setStatus(`loading ${label}…`);
    state.mapLoading = true;
    setPending();
    try {
      const response = await responsePromise;
      if (!response.ok) throw new Error(await errorText(response));
      const maps = await response.json();
      pushUndo();
      setMaps(maps.semantic, maps.panoptic);
      setStatus(`loaded ${maps.name || label}`);
      scheduleSynthesis(0);
    } catch (error) {
      setStatus(`could not load ${label}: ${error.message}`, "error");
    } finally {
      state.mapLoading = false;
      setPending();
    }
  }

  function loadUpload() {
    const semantic = $("upload-semantic").files[0];
    const panoptic = $("upload-panoptic").files[0];
    if (!semantic || !panoptic) {
      setStatus("choose a semantic PNG and a panoptic PNG first", "error");
      return;
    }
    if (semantic.size + panoptic.size > state.maxUploadBytes) {
      setStatus(`the files are larger than the server's limit of ${state.maxUploadBytes} bytes`, "error");
      return;
    }
    const form = new FormData();
    form.append("semantic", semantic, semantic.name);
    form.append("panoptic", panoptic, panoptic.name);
    loadMapsFrom(fetch("/api/maps", { method: "POST", body: form }), "the uploaded map");
  }

  function download(blob, name) {
    const url = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = url;
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  function downloadMapView() {
    const canvas = document.createElement("canvas");
    canvas.width = state.width;
    canvas.height = state.height;
    canvas.getContext("2d").putImageData(mapImageData(), 0, 0);
    canvas.toBlob((blob) => download(blob, "map_view.png"), "image/png");
  }

  function onKey(event) {
    if (event.target instanceof HTMLInputElement && event.target.type === "file") return;
    if (event.target instanceof HTMLSelectElement) return;
    const key = event.key;
    if ((event.ctrlKey || event.metaKey) && key.toLowerCase() === "z") {
      event.preventDefault();
      if (event.shiftKey) restore(state.redo, state.undo);
      else restore(state.undo, state.redo);
    } else if ((event.ctrlKey || event.metaKey) && key.toLowerCase() === "y") {
      event.preventDefault();
      restore(state.redo, state.undo);
    } else if (event.ctrlKey || event.metaKey || event.altKey) {
      return;
    } else if (/^[0-9]$/.test(key)) {
      const buttons = document.querySelectorAll(".swatch");
      const button = buttons[(Number(key) + 9) % 10];
      if (button) selectClass(Number(button.dataset.class));
    } else if (key === "b" || key === "f" || key === "e") {
      $({ b: "tool-brush", f: "tool-fill", e: "tool-eraser" }[key]).checked = true;
    } else if (key === "[" || key === "]") {
      stepBrush(key === "]" ? 1 : -1);
    } else if (key === "o") {
      $("show-outlines").checked = !$("show-outlines").checked;
      queueRender();
    }
  }

  // the largest whole enlargement that shows map and image side by side (at most 512 px a side)
  function fitScale() {
    const available = $("views").clientWidth - 24;
    const fit = Math.floor(Math.min(512 / Math.max(state.width, state.height), available / 2 / state.width));
    return Math.max(1, fit);
  }

  function sizeViews() {
    state.scale = fitScale();
    const { width, height, scale } = state;
    const canvas = $("map-canvas");
    canvas.width = width;
    canvas.height = height;
    for (const element of [canvas, $("result-image")]) {
      element.style.width = `${width * scale}px`;
      element.style.height = `${height * scale}px`;
    }
    for (const overlay of [$("map-outline"), $("result-outline")]) {
      overlay.width = width * scale;
      overlay.height = height * scale;
    }
  }

  async function start() {
    let info;
    try {
      info = window.PANSYNTH_BACKEND ? await window.PANSYNTH_BACKEND.info() : await getJson("/api/info");
    } catch (error) {
      setStatus(`cannot reach the server: ${error.message}`, "error");
      return;
    }
    state.height = info.height;
    state.width = info.width;
    state.background = info.background;
    state.maxUploadBytes = info.max_upload_bytes;
    $("model-info").textContent = `${info.title ? info.title + " · " : ""}${info.width}×${info.height}, ${info.num_classes} classes`;
    $("notes").textContent = info.notes.join(" ");
    buildPalette(info);
    buildBrushSizes();
    sizeViews();
    const firstPaintable = info.classes.find((entry) => entry.thing) || info.classes[0];
    selectClass(firstPaintable.index);
    if (info.samples.length) {
      const select = $("sample-select");
      info.samples.forEach((name, index) => {
        const option = document.createElement("option");
        option.value = String(index);
        option.textContent = name;
        select.append(option);
      });
      $("samples").hidden = false;
    }

    const canvas = $("map-canvas");
    canvas.addEventListener("pointerdown", onPointerDown);
    canvas.addEventListener("pointermove", onPointerMove);
    canvas.addEventListener("pointerup", onPointerUp);
    canvas.addEventListener("pointercancel", onPointerUp);
    canvas.addEventListener("pointerleave", () => {
      $("brush-cursor").hidden = true;
    });
    $("undo").addEventListener("click", () => restore(state.undo, state.redo));
    $("redo").addEventListener("click", () => restore(state.redo, state.undo));
    $("clear").addEventListener("click", () => {
      pushUndo();
      clearMaps();
      scheduleSynthesis(0);
    });
    $("show-outlines").addEventListener("change", queueRender);
    $("upload-load").addEventListener("click", loadUpload);
    $("sample-load").addEventListener("click", () => {
      const index = Number($("sample-select").value);
      loadMapsFrom(fetch(`/api/samples/${index}`, { cache: "no-store" }), `sample ${info.samples[index]}`);
    });
    $("download-map-view").addEventListener("click", downloadMapView);
    $("download-semantic").addEventListener("click", async () => download(await semanticPng(state.semantic), "semantic.png"));
    $("download-panoptic").addEventListener("click", async () => download(await panopticPng(state.panoptic), "panoptic.png"));
    document.addEventListener("keydown", onKey);
    window.addEventListener("resize", () => {
      sizeViews();
      render();
    });

    clearMaps();
    updateHistoryButtons();
    scheduleSynthesis(0);
  }

  document.addEventListener("DOMContentLoaded", start);
})();
