// pansynth painter: paint a panoptic map (class + instance id per pixel), see the synthesized image.
//
// The map lives here as two Int32Arrays at the model's resolution. After each edit both maps go to
// the synthesis backend: `window.PANSYNTH_BACKEND` when a page defines one (the static in-browser
// painter), else the HTTP backend below, which posts them to /api/synthesize as PNGs in the Folder
// layout (semantic: 8/16-bit class indices; panoptic: 16-bit ids, or RGB-encoded ids
// R + 256 G + 65536 B when an id exceeds 65535).
// Segment ids follow the Cityscapes convention where they can: stuff class c has id c, instance k of
// thing class c has id c * 1000 + k; any free id is used otherwise. Unknown pixels have id 0.
"use strict";

(() => {
  const MAX_ID = 256 ** 3 - 1;
  const UNDO_LIMIT = 100;
  const PARAMS = new URLSearchParams(window.location.search);
  // Measured (docs/serve.md): with one request in flight at a time and the newest map sent when it
  // returns, a debounce only delays the image; 0 unless the page is opened with ?debounce=MS.
  const DEBOUNCE_MS = PARAMS.has("debounce") ? Math.max(0, Number(PARAMS.get("debounce")) || 0) : 0;
  const BRUSH_SIZES = [1, 2, 3, 5, 8, 13, 21, 34, 55];
  const MAP_CHUNK = "pnMp"; // private ancillary PNG chunk of a map view: the ids, exactly
  const MAP_MAGIC = 0x50534d31; // "PSM1"
  const SAVE_DELAY_MS = 300;
  const ZOOM_MAX = 32;

  const $ = (id) => document.getElementById(id);
  const body = document.body;
  const state = {
    info: null,
    backend: null,
    height: 0,
    width: 0,
    fit: 1, // screen px per model px at zoom 1
    zoom: 1,
    panX: 0,
    panY: 0,
    semantic: null, // Int32Array(H * W): class index per pixel
    panoptic: null, // Int32Array(H * W): segment id per pixel
    baseSemantic: null, // the maps as last committed: undo entries are diffs against them
    basePanoptic: null,
    underSemantic: null, // the stuff a thing pixel was painted over (-1: none known)
    underPanoptic: null,
    classes: new Map(), // class index -> {index, name, thing, color, group}
    lut: null, // class index -> packed RGBA
    thingLut: null, // class index -> 1 when thing
    background: 0,
    unknown: null, // the semantic value meaning "unknown", or null
    selected: 0,
    selectedId: null, // segment id of the selected object
    picked: null, // {cls, id}: the next stroke of cls continues instance id (Alt-click)
    recent: [],
    usedIds: new Set(),
    stuffIds: new Map(),
    lastInstance: new Map(),
    undo: [],
    redo: [],
    op: null, // the pointer operation in progress
    edit: null, // bounding box of the uncommitted edit {x0, y0, x1, y1}
    dirtyBox: null, // region to redraw
    fullRender: true,
    polygon: null, // [[x, y], ...] corners of the polygon being drawn
    pointer: null,
    spaceHeld: false,
    mapVersion: 0, // counts map (and style) changes
    shownVersion: -1, // the version whose image is shown
    editEndedAt: null, // performance.now() of the last finished edit: mouseup-to-image latency
    timer: null,
    inFlight: false,
    dirty: false,
    resultUrl: null,
    resultMaps: null,
    imageLoading: false,
    mapLoading: false,
    renderQueued: false,
    objectsQueued: false,
    style: { enabled: false, seed: 0, restyle: {}, sample: null },
    storeKey: "",
    savedVersion: 0,
    saveTimer: null,
    saveFailed: false,
    maxUploadBytes: 0,
  };

  // ------------------------------------------------------------------ status (stays until replaced)
  function setStatus(text, kind = "") {
    const status = $("status");
    const time = new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    status.textContent = `${text} · ${time}`;
    status.title = text;
    status.dataset.kind = kind;
  }

  async function errorText(response) {
    try {
      const content = await response.json();
      if (content && content.error) return content.error;
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

  async function zlibDecompress(bytes) {
    if (typeof DecompressionStream !== "function") throw new Error("this browser cannot decompress (no DecompressionStream)");
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
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

  function semanticPng(semantic, width, height) {
    return encodePng(width, height, semantic, maxOf(semantic) < 256 ? "gray8" : "gray16");
  }

  function panopticPng(panoptic, width, height) {
    return encodePng(width, height, panoptic, maxOf(panoptic) < 65536 ? "gray16" : "rgb8");
  }

  // ------------------------------------------------------------------ the synthesis backend
  // The interface: { info(): Promise<info JSON as /api/info>,
  //                  synthesize({semantic, panoptic, height, width, style}): Promise<Blob image/png> }.
  // A backend may reject with an Error whose `superseded` is true (a newer map is on its way).
  const httpBackend = {
    http: true,
    info: () => getJson("api/info"),
    async synthesize({ semantic, panoptic, height, width, style }) {
      const form = new FormData();
      form.append("semantic", await semanticPng(semantic, width, height), "semantic.png");
      form.append("panoptic", await panopticPng(panoptic, width, height), "panoptic.png");
      if (style) {
        form.append("style_seed", String(style.seed));
        if (Object.keys(style.restyle).length) form.append("style_restyle", JSON.stringify(style.restyle));
        if (style.sample !== null && style.sample !== undefined) form.append("style_sample", String(style.sample));
      }
      const response = await fetch("api/synthesize", { method: "POST", body: form });
      if (response.status === 409) {
        const error = new Error("superseded by a newer map");
        error.superseded = true;
        throw error;
      }
      if (!response.ok) throw new Error(await errorText(response));
      const blob = await response.blob();
      blob.synthesisMs = Number(response.headers.get("X-Synthesis-Ms")) || null;
      return blob;
    },
  };

  // ------------------------------------------------------------------ classes and segment ids
  function isThing(cls) {
    return cls >= 0 && cls < state.thingLut.length && state.thingLut[cls] === 1;
  }

  function className(cls) {
    if (cls === state.unknown) return state.info.unknown.name || "unknown";
    const entry = state.classes.get(cls);
    return entry ? entry.name : `class ${cls}`;
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
    if (state.unknown !== null) state.usedIds.add(0); // id 0 belongs to unknown pixels
    const { semantic, panoptic } = state;
    for (let i = 0; i < panoptic.length; i++) {
      const id = panoptic[i];
      if (!state.usedIds.has(id)) {
        state.usedIds.add(id);
        const cls = semantic[i];
        if (!isThing(cls) && cls !== state.unknown && !state.stuffIds.has(cls)) state.stuffIds.set(cls, id);
      }
    }
    for (const [cls, id] of state.lastInstance) if (!state.usedIds.has(id)) state.lastInstance.delete(cls);
    if (state.selectedId !== null && !state.usedIds.has(state.selectedId)) selectSegment(null);
  }

  // ------------------------------------------------------------------ edits, commits, history
  // Every change of pixels goes through touch(): the uncommitted edit's box, the redraw box, "stale".
  function touch(x0, y0, x1, y1) {
    x0 = Math.max(0, Math.floor(x0));
    y0 = Math.max(0, Math.floor(y0));
    x1 = Math.min(state.width - 1, Math.ceil(x1));
    y1 = Math.min(state.height - 1, Math.ceil(y1));
    if (x1 < x0 || y1 < y0) return;
    state.edit = unionBox(state.edit, { x0, y0, x1, y1 });
    state.dirtyBox = unionBox(state.dirtyBox, { x0, y0, x1, y1 });
    mapChanged();
    queueRender();
  }

  function unionBox(a, b) {
    if (!a) return { ...b };
    return { x0: Math.min(a.x0, b.x0), y0: Math.min(a.y0, b.y0), x1: Math.max(a.x1, b.x1), y1: Math.max(a.y1, b.y1) };
  }

  // run-length code of the maps over a box, row-major: [length, class, id, length, class, id, ...]
  function encodeRegion(semantic, panoptic, box) {
    const runs = [];
    const width = state.width;
    let length = 0;
    let cls = 0;
    let id = 0;
    for (let y = box.y0; y <= box.y1; y++) {
      for (let i = y * width + box.x0, end = y * width + box.x1; i <= end; i++) {
        const s = semantic[i];
        const p = panoptic[i];
        if (length && s === cls && p === id) {
          length++;
        } else {
          if (length) runs.push(length, cls, id);
          length = 1;
          cls = s;
          id = p;
        }
      }
    }
    if (length) runs.push(length, cls, id);
    return Int32Array.from(runs);
  }

  function decodeRegion(runs, box, targets) {
    const width = state.width;
    const rowLength = box.x1 - box.x0 + 1;
    let k = 0;
    let left = 0;
    let cls = 0;
    let id = 0;
    for (let y = box.y0; y <= box.y1; y++) {
      let i = y * width + box.x0;
      for (let x = 0; x < rowLength; x++, i++) {
        if (left === 0) {
          left = runs[k];
          cls = runs[k + 1];
          id = runs[k + 2];
          k += 3;
        }
        for (const [semantic, panoptic] of targets) {
          semantic[i] = cls;
          panoptic[i] = id;
        }
        left--;
      }
    }
  }

  // Commit the edit in progress as one undo step holding only its changed region (run-length coded).
  function commit() {
    const box = state.edit;
    state.edit = null;
    if (!box) return false;
    const { width, semantic, panoptic, baseSemantic, basePanoptic, underSemantic, underPanoptic } = state;
    let changed = null;
    for (let y = box.y0; y <= box.y1; y++) {
      for (let x = box.x0, i = y * width + box.x0; x <= box.x1; x++, i++) {
        if (semantic[i] === baseSemantic[i] && panoptic[i] === basePanoptic[i]) continue;
        changed = unionBox(changed, { x0: x, y0: y, x1: x, y1: y });
        // the stuff under a thing: kept when a thing covers stuff, forgotten when stuff is painted
        if (isThing(semantic[i])) {
          if (!isThing(baseSemantic[i])) {
            underSemantic[i] = baseSemantic[i];
            underPanoptic[i] = basePanoptic[i];
          }
        } else {
          underSemantic[i] = -1;
        }
      }
    }
    if (!changed) {
      scheduleSynthesis(); // the map is back to what it was: its image is asked for again
      return false;
    }
    const entry = {
      box: changed,
      before: encodeRegion(baseSemantic, basePanoptic, changed),
      after: encodeRegion(semantic, panoptic, changed),
    };
    copyBox(changed, [semantic, panoptic], [baseSemantic, basePanoptic]);
    state.undo.push(entry);
    if (state.undo.length > UNDO_LIMIT) state.undo.shift();
    state.redo = [];
    afterCommit();
    return true;
  }

  function copyBox(box, from, to) {
    const width = state.width;
    for (let y = box.y0; y <= box.y1; y++) {
      const start = y * width + box.x0;
      const end = y * width + box.x1 + 1;
      to[0].set(from[0].subarray(start, end), start);
      to[1].set(from[1].subarray(start, end), start);
    }
  }

  // drop the uncommitted edit (a preview) by copying the committed maps back
  function revertEdit() {
    if (!state.edit) return;
    const box = state.edit;
    copyBox(box, [state.baseSemantic, state.basePanoptic], [state.semantic, state.panoptic]);
    state.dirtyBox = unionBox(state.dirtyBox, box);
    state.edit = null;
    queueRender();
  }

  function afterCommit() {
    updateHistoryButtons();
    queueObjects();
    scheduleSave();
    state.editEndedAt = performance.now();
    scheduleSynthesis();
  }

  function undoBytes() {
    let bytes = 0;
    for (const entry of [...state.undo, ...state.redo]) bytes += entry.before.byteLength + entry.after.byteLength;
    return bytes;
  }

  function restore(from, to, forward) {
    if (state.op || !from.length) return;
    revertEdit();
    const entry = from.pop();
    decodeRegion(forward ? entry.after : entry.before, entry.box, [
      [state.semantic, state.panoptic],
      [state.baseSemantic, state.basePanoptic],
    ]);
    to.push(entry);
    reindex();
    state.dirtyBox = unionBox(state.dirtyBox, entry.box);
    mapChanged();
    queueRender();
    afterCommit();
  }

  function updateHistoryButtons() {
    $("undo").disabled = state.undo.length === 0;
    $("redo").disabled = state.redo.length === 0;
    body.dataset.undoBytes = String(undoBytes());
  }

  // replace the whole map as one undo step
  function replaceMaps(semantic, panoptic) {
    revertEdit();
    state.semantic.set(semantic);
    state.panoptic.set(panoptic);
    state.lastInstance = new Map();
    reindex();
    state.edit = { x0: 0, y0: 0, x1: state.width - 1, y1: state.height - 1 };
    state.fullRender = true;
    mapChanged();
    queueRender();
    if (!commit()) scheduleSynthesis(0);
    // a new map: what lies under its objects is not known (deleting one fills in from around it)
    state.underSemantic.fill(-1);
    state.underPanoptic.fill(-1);
  }

  function blankMaps() {
    const size = state.height * state.width;
    state.usedIds = new Set();
    state.stuffIds = new Map();
    if (state.unknown !== null) state.usedIds.add(0);
    const id = stuffId(state.background);
    return { semantic: new Int32Array(size).fill(state.background), panoptic: new Int32Array(size).fill(id) };
  }

  function currentTool() {
    return document.querySelector('input[name="tool"]:checked').value;
  }

  function setTool(tool) {
    const input = $(`tool-${tool}`);
    if (!input || (tool === "unknown" && state.unknown === null)) return;
    input.checked = true;
    onToolChange();
  }

  function brushSize() {
    return Number($("brush-size").value);
  }

  // (class, id) a stroke, fill or shape starting at pixel index `at` paints with
  function paintTarget(at, continuing) {
    const tool = currentTool();
    // the eraser paints unknown (the model fills it in) when the model has an unknown value, else the background
    if (tool === "eraser" && state.unknown === null) return { cls: state.background, id: stuffId(state.background) };
    if (tool === "eraser" || tool === "unknown") return { cls: state.unknown, id: 0 };
    const cls = state.selected;
    if (!isThing(cls)) return { cls, id: stuffId(cls) };
    let id;
    if (state.picked && state.picked.cls === cls) {
      id = state.picked.id;
      state.picked = null;
    } else if (continuing) {
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
    touch(Math.min(x0, px), Math.min(y0, py), Math.max(x1, px), Math.max(y1, py));
  }

  function strokeTo(x, y) {
    const stroke = state.op;
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
    if (seedClass === target.cls && seedId === target.id) return;
    const stack = [seed];
    const seen = new Uint8Array(width * height);
    seen[seed] = 1;
    const box = { x0: x, y0: y, x1: x, y1: y };
    while (stack.length) {
      const i = stack.pop();
      semantic[i] = target.cls;
      panoptic[i] = target.id;
      const px = i % width;
      const py = (i - px) / width;
      if (px < box.x0) box.x0 = px;
      if (px > box.x1) box.x1 = px;
      if (py < box.y0) box.y0 = py;
      if (py > box.y1) box.y1 = py;
      const neighbours = [px > 0 ? i - 1 : -1, px < width - 1 ? i + 1 : -1, i - width, i + width];
      for (const j of neighbours) {
        if (j >= 0 && j < width * height && !seen[j] && semantic[j] === seedClass && panoptic[j] === seedId) {
          seen[j] = 1;
          stack.push(j);
        }
      }
    }
    touch(box.x0, box.y0, box.x1, box.y1);
  }

  function paintRect(px0, py0, px1, py1, target) {
    const { width, semantic, panoptic } = state;
    const x0 = Math.max(0, Math.min(px0, px1));
    const x1 = Math.min(width - 1, Math.max(px0, px1));
    const y0 = Math.max(0, Math.min(py0, py1));
    const y1 = Math.min(state.height - 1, Math.max(py0, py1));
    for (let y = y0; y <= y1; y++) {
      semantic.fill(target.cls, y * width + x0, y * width + x1 + 1);
      panoptic.fill(target.id, y * width + x0, y * width + x1 + 1);
    }
    touch(x0, y0, x1, y1);
  }

  // pixels whose centre lies inside the polygon (even-odd rule), scanline by scanline
  function paintPolygon(points, target) {
    const { width, height, semantic, panoptic } = state;
    const ys = points.map((p) => p[1]);
    const y0 = Math.max(0, Math.floor(Math.min(...ys)));
    const y1 = Math.min(height - 1, Math.ceil(Math.max(...ys)));
    let box = null;
    for (let y = y0; y <= y1; y++) {
      const cy = y + 0.5;
      const crossings = [];
      for (let k = 0; k < points.length; k++) {
        const [ax, ay] = points[k];
        const [bx, by] = points[(k + 1) % points.length];
        if (ay <= cy !== by <= cy) crossings.push(ax + ((cy - ay) / (by - ay)) * (bx - ax));
      }
      crossings.sort((a, b) => a - b);
      for (let k = 0; k + 1 < crossings.length; k += 2) {
        const xa = Math.max(0, Math.ceil(crossings[k] - 0.5));
        const xb = Math.min(width - 1, Math.ceil(crossings[k + 1] - 0.5) - 1);
        if (xb < xa) continue;
        semantic.fill(target.cls, y * width + xa, y * width + xb + 1);
        panoptic.fill(target.id, y * width + xa, y * width + xb + 1);
        box = unionBox(box, { x0: xa, y0: y, x1: xb, y1: y });
      }
    }
    if (box) touch(box.x0, box.y0, box.x1, box.y1);
  }

  // ------------------------------------------------------------------ objects
  function segmentPixels(id) {
    const pixels = [];
    const { panoptic } = state;
    for (let i = 0; i < panoptic.length; i++) if (panoptic[i] === id) pixels.push(i);
    return Int32Array.from(pixels);
  }

  function boxOf(pixels) {
    const width = state.width;
    let box = null;
    for (const i of pixels) {
      const x = i % width;
      const y = (i - x) / width;
      box = unionBox(box, { x0: x, y0: y, x1: x, y1: y });
    }
    return box;
  }

  // What lies beneath an object's pixels: the stuff it was painted over where that is known, else
  // the nearest stuff pixel outside it (breadth-first from its border; other objects do not spread).
  function beneath(pixels) {
    const { width, height, semantic, panoptic, underSemantic, underPanoptic } = state;
    const size = width * height;
    const inside = new Uint8Array(size);
    for (const i of pixels) inside[i] = 1;
    const cls = new Int32Array(pixels.length);
    const ids = new Int32Array(pixels.length);
    const slot = new Map();
    pixels.forEach((i, k) => slot.set(i, k));
    const resolved = new Uint8Array(pixels.length);
    let queue = [];
    pixels.forEach((i, k) => {
      if (underSemantic[i] >= 0 && !isThing(underSemantic[i])) {
        cls[k] = underSemantic[i];
        ids[k] = underPanoptic[i];
        resolved[k] = 1;
        queue.push(i);
      }
    });
    const value = (j) => (inside[j] ? [cls[slot.get(j)], ids[slot.get(j)]] : [semantic[j], panoptic[j]]);
    for (const i of pixels) {
      const x = i % width;
      for (const j of [x > 0 ? i - 1 : -1, x < width - 1 ? i + 1 : -1, i - width, i + width]) {
        if (j >= 0 && j < size && !inside[j] && !isThing(semantic[j])) {
          queue.push(j);
          break;
        }
      }
    }
    while (queue.length) {
      const next = [];
      for (const i of queue) {
        const [c, d] = value(i);
        const x = i % width;
        for (const j of [x > 0 ? i - 1 : -1, x < width - 1 ? i + 1 : -1, i - width, i + width]) {
          if (j < 0 || j >= size || !inside[j]) continue;
          const k = slot.get(j);
          if (resolved[k]) continue;
          resolved[k] = 1;
          cls[k] = c;
          ids[k] = d;
          next.push(j);
        }
      }
      queue = next;
    }
    for (let k = 0; k < pixels.length; k++) {
      if (!resolved[k]) {
        cls[k] = state.background;
        ids[k] = stuffId(state.background);
      }
    }
    return { cls, ids };
  }

  function selectSegment(id) {
    state.selectedId = id;
    state.fullRender = true;
    queueRender();
    queueObjects();
  }

  function deleteSelected() {
    const id = state.selectedId;
    if (id === null || state.op) return;
    const pixels = segmentPixels(id);
    if (!pixels.length) return;
    const name = className(state.semantic[pixels[0]]);
    const box = boxOf(pixels);
    if ($("delete-fill").value === "class") {
      const target = paintTarget(-1, false);
      for (const i of pixels) {
        state.semantic[i] = target.cls;
        state.panoptic[i] = target.id;
      }
    } else {
      const { cls, ids } = beneath(pixels);
      pixels.forEach((i, k) => {
        state.semantic[i] = cls[k];
        state.panoptic[i] = ids[k];
      });
    }
    touch(box.x0, box.y0, box.x1, box.y1);
    selectSegment(null);
    commit();
    setStatus(`deleted ${name} #${id} (${pixels.length} px)`);
  }

  function changeSelectedClass() {
    const id = state.selectedId;
    if (id === null || state.op) return;
    const cls = state.selected;
    const pixels = segmentPixels(id);
    if (!pixels.length) return;
    const newId = isThing(cls) ? id : stuffId(cls);
    for (const i of pixels) {
      state.semantic[i] = cls;
      state.panoptic[i] = newId;
    }
    const box = boxOf(pixels);
    touch(box.x0, box.y0, box.x1, box.y1);
    commit();
    selectSegment(newId);
    setStatus(`#${id} is now ${className(cls)}`);
  }

  function moveTo(op, x, y) {
    const dx = Math.floor(x) - Math.floor(op.startX);
    const dy = Math.floor(y) - Math.floor(op.startY);
    if (dx === op.dx && dy === op.dy) return;
    const { width, height, semantic, panoptic } = state;
    if (!op.lifted) {
      const under = beneath(op.pixels);
      op.liftedSemantic = semantic.slice();
      op.liftedPanoptic = panoptic.slice();
      op.pixels.forEach((i, k) => {
        op.liftedSemantic[i] = under.cls[k];
        op.liftedPanoptic[i] = under.ids[k];
      });
      op.lifted = true;
      op.placed = op.pixels;
    }
    for (const j of op.placed) {
      semantic[j] = op.liftedSemantic[j];
      panoptic[j] = op.liftedPanoptic[j];
    }
    const placed = [];
    for (const i of op.pixels) {
      const px = (i % width) + dx;
      const py = Math.floor(i / width) + dy;
      if (px < 0 || py < 0 || px >= width || py >= height) continue;
      const j = py * width + px;
      semantic[j] = op.cls;
      panoptic[j] = op.id;
      placed.push(j);
    }
    op.placed = placed;
    op.dx = dx;
    op.dy = dy;
    touch(op.box.x0 + Math.min(0, dx), op.box.y0 + Math.min(0, dy), op.box.x1 + Math.max(0, dx), op.box.y1 + Math.max(0, dy));
  }

  function queueObjects() {
    if (!state.objectsQueued) {
      state.objectsQueued = true;
      requestAnimationFrame(updateObjects);
    }
  }

  // the object list (thing instances with class and area) and the selection panel
  function updateObjects() {
    state.objectsQueued = false;
    const { semantic, panoptic } = state;
    const areas = new Map();
    for (let i = 0; i < panoptic.length; i++) {
      const id = panoptic[i];
      const entry = areas.get(id);
      if (entry) entry.area++;
      else areas.set(id, { id, cls: semantic[i], area: 1 });
    }
    const objects = [...areas.values()].filter((o) => isThing(o.cls)).sort((a, b) => b.area - a.area);
    $("object-count").textContent = String(objects.length);
    const list = $("object-list");
    list.textContent = "";
    for (const object of objects.slice(0, 300)) {
      const item = document.createElement("li");
      item.dataset.id = String(object.id);
      item.setAttribute("aria-selected", String(object.id === state.selectedId));
      const chip = document.createElement("span");
      chip.className = "chip";
      chip.style.background = cssColor(object.cls);
      const name = document.createElement("span");
      name.textContent = `${className(object.cls)} #${object.id}`;
      const area = document.createElement("span");
      area.className = "area";
      area.textContent = `${object.area} px`;
      item.append(chip, name, area);
      item.addEventListener("click", () => selectSegment(object.id));
      list.append(item);
    }
    const selected = state.selectedId === null ? null : areas.get(state.selectedId);
    const info = $("selection-info");
    if (selected) {
      const share = ((100 * selected.area) / panoptic.length).toFixed(1);
      info.textContent = `${className(selected.cls)} #${selected.id} (${isThing(selected.cls) ? "thing" : "stuff"}): ${selected.area} px, ${share}% of the map`;
      body.dataset.selectedId = String(selected.id);
    } else {
      info.textContent = "No object selected: use Select (V) and click one.";
      body.dataset.selectedId = "";
    }
    $("delete-object").disabled = !selected;
    $("change-class").disabled = !selected;
    $("style-restyle").disabled = !selected;
  }

  // ------------------------------------------------------------------ drawing
  function cssColor(cls) {
    const entry = state.classes.get(cls);
    return entry ? `rgb(${entry.color.join(",")})` : "#f0f";
  }

  function pack(r, g, b) {
    return ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0;
  }

  function buildLuts(entries) {
    let max = 0;
    for (const entry of entries) max = Math.max(max, entry.index);
    if (state.unknown !== null) max = Math.max(max, state.unknown);
    state.lut = new Uint32Array(max + 1).fill(pack(255, 0, 255));
    state.thingLut = new Uint8Array(max + 1);
    for (const entry of entries) {
      state.lut[entry.index] = pack(...entry.color);
      state.thingLut[entry.index] = entry.thing ? 1 : 0;
    }
  }

  function instanceShade(id) {
    // golden-ratio steps: consecutive ids get clearly different shades
    return 0.55 + 0.45 * ((id * 0.6180339887) % 1);
  }

  const UNKNOWN_A = pack(150, 150, 150);
  const UNKNOWN_B = pack(90, 90, 90);
  const OUTLINE = pack(255, 255, 255);
  const SELECTED = pack(255, 212, 0);

  // the colour of pixel i; decorated: instance outlines and the selection drawn in
  function pixelColor(i, x, y, decorated, outlines) {
    const { semantic, panoptic, lut, width, height } = state;
    const cls = semantic[i];
    const id = panoptic[i];
    if (cls === state.unknown) return ((x >> 2) + (y >> 2)) & 1 ? UNKNOWN_A : UNKNOWN_B;
    let color = cls < lut.length && cls >= 0 ? lut[cls] : pack(255, 0, 255);
    const thing = isThing(cls);
    if (thing) {
      const shade = instanceShade(id);
      color = pack((color & 0xff) * shade, ((color >>> 8) & 0xff) * shade, ((color >>> 16) & 0xff) * shade);
    }
    if (!decorated) return color;
    const selected = id === state.selectedId;
    if (selected || (outlines && thing)) {
      const edge =
        (x > 0 && panoptic[i - 1] !== id) ||
        (x < width - 1 && panoptic[i + 1] !== id) ||
        (y > 0 && panoptic[i - width] !== id) ||
        (y < height - 1 && panoptic[i + width] !== id);
      if (edge) return selected ? SELECTED : OUTLINE;
      if (selected) {
        return pack(
          ((color & 0xff) + 255) / 2,
          (((color >>> 8) & 0xff) + 212) / 2,
          ((color >>> 16) & 0xff) / 2,
        );
      }
    }
    return color;
  }

  function paintImageData(image, box, decorated) {
    const pixels = new Uint32Array(image.data.buffer);
    const width = state.width;
    const outlines = $("show-outlines").checked;
    for (let y = box.y0; y <= box.y1; y++) {
      for (let x = box.x0, i = y * width + box.x0; x <= box.x1; x++, i++) pixels[i] = pixelColor(i, x, y, decorated, outlines);
    }
  }

  function render() {
    state.renderQueued = false;
    if (!state.semantic) return;
    const { width, height } = state;
    if (!state.mapImage) state.mapImage = new ImageData(width, height);
    let box = state.dirtyBox;
    if (state.fullRender || !box) box = { x0: 0, y0: 0, x1: width - 1, y1: height - 1 };
    else box = { x0: Math.max(0, box.x0 - 1), y0: Math.max(0, box.y0 - 1), x1: Math.min(width - 1, box.x1 + 1), y1: Math.min(height - 1, box.y1 + 1) };
    state.dirtyBox = null;
    state.fullRender = false;
    paintImageData(state.mapImage, box, true);
    $("map-canvas").getContext("2d").putImageData(state.mapImage, 0, 0, box.x0, box.y0, box.x1 - box.x0 + 1, box.y1 - box.y0 + 1);
    const overlay = $("result-map");
    if (Number($("overlay-opacity").value) > 0) {
      const context = overlay.getContext("2d");
      context.clearRect(0, 0, width, height);
      context.drawImage($("map-canvas"), 0, 0);
    }
    overlay.style.opacity = String(Number($("overlay-opacity").value) / 100);
    drawVector();
  }

  function queueRender() {
    if (!state.renderQueued) {
      state.renderQueued = true;
      requestAnimationFrame(render);
    }
  }

  // outlines of the thing instances (and the selection) of the map the shown image was made from
  function drawResultOutlines() {
    const canvas = $("result-outline");
    const context = canvas.getContext("2d");
    const { width, height } = state;
    context.clearRect(0, 0, width, height);
    if (!state.resultMaps || !$("show-outlines").checked) return;
    const image = context.createImageData(width, height);
    const pixels = new Uint32Array(image.data.buffer);
    const { semantic, panoptic } = state.resultMaps;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const i = y * width + x;
        const id = panoptic[i];
        if (!isThing(semantic[i])) continue;
        if ((x < width - 1 && panoptic[i + 1] !== id) || (y < height - 1 && panoptic[i + width] !== id) || (x > 0 && panoptic[i - 1] !== id) || (y > 0 && panoptic[i - width] !== id)) {
          pixels[i] = id === state.selectedId ? SELECTED : pack(255, 255, 255) & 0xe6ffffff;
        }
      }
    }
    context.putImageData(image, 0, 0);
  }

  function drawVector() {
    const svg = $("map-vector");
    svg.textContent = "";
    const ns = "http://www.w3.org/2000/svg";
    if (state.polygon && state.polygon.length) {
      const points = [...state.polygon, ...(state.pointer ? [[state.pointer.x, state.pointer.y]] : [])];
      const line = document.createElementNS(ns, "polyline");
      line.setAttribute("points", points.map((p) => `${p[0]},${p[1]}`).join(" "));
      svg.append(line);
    }
  }

  // ------------------------------------------------------------------ view: fit, zoom, pan
  function sizeViews() {
    const { width, height } = state;
    const stacked = window.innerWidth < 1000;
    const panes = $("panes");
    const captions = 24;
    const gap = 13;
    let fit;
    if (stacked) {
      const available = panes.clientWidth - 2;
      fit = Math.min(available / width, (window.innerHeight * 0.75) / height);
    } else {
      const availableWidth = (panes.clientWidth - gap) / 2 - 2;
      const availableHeight = $("views").clientHeight - $("view-controls").offsetHeight - 8 - captions - 2;
      fit = Math.min(availableWidth / width, availableHeight / height);
    }
    state.fit = Math.max(0.05, fit);
    const shownWidth = Math.floor(width * state.fit);
    const shownHeight = Math.floor(height * state.fit);
    const canvas = $("map-canvas");
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    for (const overlay of [$("map-outline"), $("result-outline"), $("result-map")]) {
      overlay.width = width;
      overlay.height = height;
    }
    $("map-vector").setAttribute("viewBox", `0 0 ${width} ${height}`);
    $("map-vector").setAttribute("preserveAspectRatio", "none");
    for (const viewport of [$("map-viewport"), $("result-viewport")]) {
      viewport.style.width = `${shownWidth + 2}px`; // + its border
      viewport.style.height = `${shownHeight + 2}px`;
    }
    for (const element of [$("map-content"), $("result-content"), canvas, $("result-image")]) {
      element.style.width = `${shownWidth}px`;
      element.style.height = `${shownHeight}px`;
    }
    applyView();
    drawResultOutlines();
    state.fullRender = true;
    queueRender();
  }

  function applyView() {
    const shownWidth = state.width * state.fit;
    const shownHeight = state.height * state.fit;
    state.zoom = Math.min(ZOOM_MAX, Math.max(1, state.zoom));
    state.panX = Math.min(0, Math.max(shownWidth - shownWidth * state.zoom, state.panX));
    state.panY = Math.min(0, Math.max(shownHeight - shownHeight * state.zoom, state.panY));
    const transform = `translate(${state.panX}px, ${state.panY}px) scale(${state.zoom})`;
    $("map-content").style.transform = transform;
    $("result-content").style.transform = transform;
    $("zoom-level").textContent = `${Math.round(state.fit * state.zoom * 100)}% (${state.zoom.toFixed(2).replace(/\.?0+$/, "")}× fit)`;
    body.dataset.scale = String(state.fit * state.zoom);
  }

  // zoom by `factor` keeping the point (vx, vy) of the viewport in place
  function zoomBy(factor, vx, vy) {
    const before = state.zoom;
    const after = Math.min(ZOOM_MAX, Math.max(1, before * factor));
    if (vx === undefined) {
      vx = (state.width * state.fit) / 2;
      vy = (state.height * state.fit) / 2;
    }
    state.panX = vx - ((vx - state.panX) * after) / before;
    state.panY = vy - ((vy - state.panY) * after) / before;
    state.zoom = after;
    applyView();
  }

  function zoomFit() {
    state.zoom = 1;
    state.panX = 0;
    state.panY = 0;
    applyView();
  }

  // ------------------------------------------------------------------ synthesis and its feedback
  function mapChanged() {
    state.mapVersion++;
    updateStale();
  }

  // The image is "out of date" from the moment the map changes until its new image is shown.
  function updateStale() {
    const stale = state.shownVersion !== state.mapVersion;
    body.dataset.stale = stale ? "1" : "0";
    $("stale-badge").hidden = !stale;
    setPending();
  }

  function setPending() {
    const pending =
      state.timer !== null ||
      state.inFlight ||
      state.dirty ||
      state.op !== null ||
      state.imageLoading ||
      state.mapLoading ||
      state.edit !== null;
    body.dataset.pending = pending ? "1" : "0";
  }

  function scheduleSynthesis(delay = DEBOUNCE_MS) {
    if (state.timer !== null) clearTimeout(state.timer);
    state.timer = setTimeout(() => {
      state.timer = null;
      sendSynthesis();
    }, delay);
    setPending();
  }

  function styleRequest() {
    if (!state.style.enabled) return null;
    return { seed: state.style.seed, restyle: { ...state.style.restyle }, sample: state.style.sample };
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
    const version = state.mapVersion;
    const sent = { semantic: state.semantic.slice(), panoptic: state.panoptic.slice() };
    const editEndedAt = state.editEndedAt;
    try {
      body.dataset.requests = String(Number(body.dataset.requests) + 1);
      const started = performance.now();
      const blob = await state.backend.synthesize({
        semantic: sent.semantic,
        panoptic: sent.panoptic,
        height: state.height,
        width: state.width,
        style: styleRequest(),
      });
      showResult(blob, sent, version, performance.now() - started, editEndedAt);
    } catch (error) {
      if (!error.superseded) setStatus(`synthesis failed: ${error.message}`, "error");
    } finally {
      state.inFlight = false;
      if (state.dirty || (state.mapVersion !== version && state.timer === null && !state.op && !state.edit)) sendSynthesis();
      setPending();
    }
  }

  function showResult(blob, maps, version, requestMs, editEndedAt) {
    const url = URL.createObjectURL(blob);
    const previous = state.resultUrl;
    const image = $("result-image");
    // "pending" and "out of date" last until the new image is decoded and shown
    state.imageLoading = true;
    setPending();
    image.onload = image.onerror = () => {
      if (previous) URL.revokeObjectURL(previous);
      state.imageLoading = false;
      state.resultMaps = maps;
      state.shownVersion = version;
      const now = performance.now();
      const latency = editEndedAt !== null ? now - editEndedAt : null;
      if (latency !== null) body.dataset.latencyMs = latency.toFixed(1);
      const synthesis = blob.synthesisMs ? `synthesis ${blob.synthesisMs} ms, ` : "";
      $("timing").textContent = `(${synthesis}request ${Math.round(requestMs)} ms${latency !== null ? `, edit to image ${Math.round(latency)} ms` : ""})`;
      body.dataset.results = String(Number(body.dataset.results) + 1);
      drawResultOutlines();
      updateStale();
    };
    image.src = url;
    state.resultUrl = url;
    const download = $("download-image");
    download.href = url;
    download.classList.remove("disabled");
    download.setAttribute("aria-disabled", "false");
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

  function eyedropper(at) {
    const cls = state.semantic[at];
    const id = state.panoptic[at];
    if (cls === state.unknown) {
      setTool("unknown");
      setStatus("picked unknown");
      return;
    }
    selectClass(cls);
    if (isThing(cls)) {
      state.picked = { cls, id };
      state.lastInstance.set(cls, id);
      selectSegment(id);
      setStatus(`picked ${className(cls)}, instance #${id}: the next stroke continues it`);
    } else {
      setStatus(`picked ${className(cls)}`);
    }
  }

  function onPointerDown(event) {
    if (!state.semantic || state.op) return;
    if (event.button === 1 || (event.button === 0 && state.spaceHeld)) {
      event.preventDefault();
      state.op = { kind: "pan", startX: event.clientX, startY: event.clientY, panX: state.panX, panY: state.panY };
      $("map-viewport").classList.add("panning");
      $("map-viewport").setPointerCapture(event.pointerId);
      return;
    }
    if (event.button !== 0) return;
    event.preventDefault();
    const { x, y } = pointerPosition(event);
    const at = pixelIndex(x, y);
    if (at < 0) return;
    if (event.altKey) {
      eyedropper(at);
      return;
    }
    const continuing = $("continue-instance").checked || event.shiftKey;
    const tool = currentTool();
    if (tool === "fill") {
      fill(Math.floor(x), Math.floor(y), paintTarget(at, continuing));
      commit();
      setPending();
      return;
    }
    if (tool === "polygon") {
      const point = [x, y];
      const polygon = state.polygon || [];
      if (polygon.length >= 3) {
        const [fx, fy] = polygon[0];
        const close = Math.hypot(fx - x, fy - y) * state.fit * state.zoom < 8;
        if (close) {
          finishPolygon();
          return;
        }
      }
      polygon.push(point);
      state.polygon = polygon;
      drawVector();
      return;
    }
    $("map-viewport").setPointerCapture(event.pointerId);
    if (tool === "select") {
      const id = state.panoptic[at];
      const cls = state.semantic[at];
      selectSegment(id);
      if (isThing(cls)) {
        const pixels = segmentPixels(id);
        state.op = { kind: "move", id, cls, pixels, box: boxOf(pixels), startX: x, startY: y, dx: 0, dy: 0, lifted: false };
      }
      setPending();
      return;
    }
    if (tool === "rect") {
      state.op = { kind: "rect", px: Math.floor(x), py: Math.floor(y), target: paintTarget(at, continuing) };
      paintRect(state.op.px, state.op.py, state.op.px, state.op.py, state.op.target);
      setPending();
      return;
    }
    state.op = { kind: "stroke", x, y, target: paintTarget(at, continuing) };
    if (state.timer !== null) {
      clearTimeout(state.timer);
      state.timer = null;
    }
    stamp(x, y, state.op.target);
    setPending();
  }

  function onPointerMove(event) {
    moveCursor(event);
    const { x, y } = pointerPosition(event);
    state.pointer = { x, y };
    if (state.polygon) drawVector();
    const op = state.op;
    if (!op) return;
    if (op.kind === "pan") {
      state.panX = op.panX + event.clientX - op.startX;
      state.panY = op.panY + event.clientY - op.startY;
      applyView();
    } else if (op.kind === "stroke") {
      strokeTo(x, y);
    } else if (op.kind === "rect") {
      revertEdit();
      const px = Math.max(0, Math.min(state.width - 1, Math.floor(x)));
      const py = Math.max(0, Math.min(state.height - 1, Math.floor(y)));
      paintRect(op.px, op.py, px, py, op.target);
    } else if (op.kind === "move") {
      moveTo(op, x, y);
    }
  }

  function onPointerUp(event) {
    const op = state.op;
    if (!op) return;
    onPointerMove(event);
    state.op = null;
    $("map-viewport").classList.remove("panning");
    if (op.kind === "move" && (op.dx || op.dy)) {
      commit();
      setStatus(`moved ${className(op.cls)} #${op.id} by (${op.dx}, ${op.dy}) px`);
    } else if (op.kind !== "pan") {
      commit();
    }
    setPending();
  }

  function finishPolygon() {
    const polygon = state.polygon;
    state.polygon = null;
    drawVector();
    if (!polygon || polygon.length < 3) return;
    const [x, y] = polygon[0];
    paintPolygon(polygon, paintTarget(pixelIndex(x, y), $("continue-instance").checked));
    commit();
    setPending();
  }

  function moveCursor(event) {
    const cursor = $("brush-cursor");
    const tool = currentTool();
    if (!["brush", "eraser", "unknown"].includes(tool) || state.spaceHeld) {
      cursor.hidden = true;
      return;
    }
    const rect = $("map-viewport").getBoundingClientRect();
    const diameter = brushSize() * state.fit * state.zoom;
    cursor.hidden = false;
    cursor.style.width = `${diameter}px`;
    cursor.style.height = `${diameter}px`;
    cursor.style.left = `${event.clientX - rect.left - diameter / 2}px`;
    cursor.style.top = `${event.clientY - rect.top - diameter / 2}px`;
  }

  function onWheel(event) {
    event.preventDefault();
    const rect = $("map-viewport").getBoundingClientRect();
    zoomBy(Math.exp(-event.deltaY * 0.0015), event.clientX - rect.left, event.clientY - rect.top);
  }

  function onToolChange() {
    state.polygon = null;
    drawVector();
    $("brush-cursor").hidden = true;
  }

  // ------------------------------------------------------------------ classes: list, search, recent
  function selectClass(cls, { scroll = true } = {}) {
    if (!state.classes.has(cls)) return;
    if (state.picked && state.picked.cls !== cls) state.picked = null;
    const previous = document.querySelector(`.swatch[data-class="${state.selected}"]`);
    if (previous) previous.setAttribute("aria-selected", "false");
    state.selected = cls;
    const option = document.querySelector(`.swatch[data-class="${cls}"]`);
    if (option) {
      option.setAttribute("aria-selected", "true");
      $("palette").setAttribute("aria-activedescendant", option.id);
      if (scroll) revealOption(option);
    }
    const tool = currentTool();
    if (tool === "eraser" || tool === "unknown") setTool("brush");
    const index = state.recent.indexOf(cls);
    if (index < 0) {
      state.recent.unshift(cls);
      state.recent = state.recent.slice(0, 10);
    }
    buildRecent();
    const entry = state.classes.get(cls);
    body.dataset.selectedClass = String(cls);
    $("class-legend").textContent = `Painting ${entry.name} (${entry.thing ? "thing: each stroke a new instance" : "stuff: one segment"}${entry.group ? `, ${entry.group}` : ""}). ${state.legendTail}`;
  }

  // scroll the class list (only it, not the page or the sidebar) so that the option shows
  function revealOption(option) {
    const palette = $("palette");
    const top = option.offsetTop;
    const bottom = top + option.offsetHeight;
    if (top < palette.scrollTop) palette.scrollTop = top - 16;
    else if (bottom > palette.scrollTop + palette.clientHeight) palette.scrollTop = bottom - palette.clientHeight + 2;
  }

  function buildRecent() {
    const recent = $("recent");
    recent.textContent = "";
    state.recent.forEach((cls, position) => {
      const entry = state.classes.get(cls);
      const button = document.createElement("button");
      button.type = "button";
      button.className = `recent ${entry.thing ? "thing" : "stuff"}`;
      button.title = `${entry.name} (key ${(position + 1) % 10})`;
      button.setAttribute("aria-pressed", String(cls === state.selected));
      button.tabIndex = -1;
      const chip = document.createElement("span");
      chip.className = "chip";
      chip.style.background = cssColor(cls);
      const label = document.createElement("span");
      label.textContent = `${(position + 1) % 10} ${entry.name}`;
      button.append(chip, label);
      button.addEventListener("click", () => selectClass(cls));
      recent.append(button);
    });
  }

  function buildPalette(info) {
    const palette = $("palette");
    palette.textContent = "";
    const entries = info.classes;
    const grouped = entries.some((entry) => entry.group);
    const groups = new Map();
    for (const entry of entries) {
      const kind = entry.index === info.ignore_index ? "Other" : entry.thing ? "Things" : "Stuff";
      const key = grouped && entry.group ? `${kind} · ${entry.group}` : kind;
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(entry);
    }
    const order = (key) => (key.startsWith("Things") ? 0 : key.startsWith("Stuff") ? 1 : 2);
    const keys = [...groups.keys()].sort((a, b) => order(a) - order(b));
    for (const key of keys) {
      const group = document.createElement("div");
      group.className = "group";
      group.setAttribute("role", "group");
      group.setAttribute("aria-label", key);
      const heading = document.createElement("div");
      heading.className = "group-heading";
      heading.textContent = key;
      heading.setAttribute("aria-hidden", "true");
      group.append(heading);
      for (const entry of groups.get(key)) {
        const option = document.createElement("div");
        option.className = `swatch ${entry.thing ? "thing" : "stuff"}`;
        option.id = `class-option-${entry.index}`;
        option.dataset.class = String(entry.index);
        option.dataset.search = `${entry.name} ${entry.group || ""}`.toLowerCase();
        option.setAttribute("role", "option");
        option.setAttribute("aria-selected", "false");
        option.title = `${entry.name}: ${entry.index === info.ignore_index ? "the model's ignore value" : entry.thing ? "thing, each stroke paints a new instance" : "stuff, one segment for the class"}${entry.group ? ` (${entry.group})` : ""}`;
        const chip = document.createElement("span");
        chip.className = "chip";
        chip.style.background = `rgb(${entry.color.join(",")})`;
        const name = document.createElement("span");
        name.className = "name";
        name.textContent = entry.name;
        option.append(chip, name);
        option.addEventListener("click", () => {
          selectClass(entry.index);
          $("palette").focus({ preventScroll: true });
        });
        group.append(option);
      }
      palette.append(group);
    }
    const eraser = state.classes.get(info.background);
    const unknown = info.unknown && Number.isInteger(info.unknown.value);
    const erases = unknown ? info.unknown.name || "unknown" : eraser ? eraser.name : info.background;
    const things = entries.some((entry) => entry.thing);
    state.legendTail =
      (things ? "" : "No thing classes known: every class paints as stuff. ") +
      `The eraser paints "${erases}". Colours: ${info.palette_source || "generated"}.`;
  }

  function visibleOptions() {
    return [...document.querySelectorAll(".swatch")].filter((option) => !option.hidden);
  }

  function onPaletteKey(event) {
    const options = visibleOptions();
    if (!options.length) return;
    let index = options.findIndex((option) => Number(option.dataset.class) === state.selected);
    const moves = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 10, PageUp: -10 };
    if (event.key in moves) index = Math.max(0, Math.min(options.length - 1, (index < 0 ? 0 : index) + moves[event.key]));
    else if (event.key === "Home") index = 0;
    else if (event.key === "End") index = options.length - 1;
    else return;
    event.preventDefault();
    event.stopPropagation();
    selectClass(Number(options[index].dataset.class));
  }

  function filterPalette(query) {
    const text = query.trim().toLowerCase();
    for (const option of document.querySelectorAll(".swatch")) option.hidden = text !== "" && !option.dataset.search.includes(text);
    for (const group of document.querySelectorAll("#palette .group")) {
      group.hidden = ![...group.querySelectorAll(".swatch")].some((option) => !option.hidden);
    }
    if (!text) return null;
    // best match: the exact name, then a name starting with the text, then any match
    const options = visibleOptions();
    const nameOf = (option) => state.classes.get(Number(option.dataset.class)).name.toLowerCase();
    return (
      options.find((option) => nameOf(option) === text) ||
      options.find((option) => nameOf(option).startsWith(text)) ||
      options[0] ||
      null
    );
  }

  function onSearchInput() {
    const best = filterPalette($("class-search").value);
    if (best && state.classes.get(Number(best.dataset.class)).name.toLowerCase() === $("class-search").value.trim().toLowerCase()) {
      selectClass(Number(best.dataset.class));
    }
  }

  function onSearchKey(event) {
    if (event.key === "Enter") {
      const best = filterPalette($("class-search").value);
      if (best) {
        selectClass(Number(best.dataset.class));
        setStatus(`painting ${className(state.selected)}`);
      } else {
        setStatus(`no class matches "${$("class-search").value}"`, "error");
      }
      event.preventDefault();
    } else if (event.key === "ArrowDown") {
      event.preventDefault();
      $("palette").focus();
    } else if (event.key === "Escape") {
      $("class-search").value = "";
      filterPalette("");
      $("class-search").blur();
    }
    event.stopPropagation();
  }

  // ------------------------------------------------------------------ brush sizes
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

  // ------------------------------------------------------------------ loading maps
  function checkMaps(semantic, panoptic, label) {
    const size = state.width * state.height;
    if (semantic.length !== size || panoptic.length !== size) throw new Error(`${label}: expected ${state.height}x${state.width} maps`);
    for (let i = 0; i < size; i++) {
      const cls = semantic[i];
      if (!state.classes.has(cls) && cls !== state.unknown) {
        throw new Error(`${label}: class ${cls} at pixel (y=${Math.floor(i / state.width)}, x=${i % state.width}) is not one of this model's classes`);
      }
      if (panoptic[i] < 0 || panoptic[i] > MAX_ID) throw new Error(`${label}: segment id ${panoptic[i]} is outside 0..${MAX_ID}`);
    }
  }

  function loadMaps(semantic, panoptic, label) {
    checkMaps(semantic, panoptic, label);
    replaceMaps(semantic, panoptic);
    selectSegment(null);
    setStatus(`loaded ${label}`);
  }

  async function loadMapsFrom(responsePromise, label) {
    state.mapLoading = true;
    setPending();
    try {
      const response = await responsePromise;
      if (!response.ok) throw new Error(await errorText(response));
      const maps = await response.json();
      loadMaps(Int32Array.from(maps.semantic), Int32Array.from(maps.panoptic), maps.name || label);
    } catch (error) {
      setStatus(`could not load ${label}: ${error.message}`, "error");
    } finally {
      state.mapLoading = false;
      setPending();
    }
  }

  // A map PNG of the Folder layout read in the page (where no server checks it): 8/16-bit grey or
  // palette indices, or (panoptic) 8-bit RGB(A) ids R + 256 G + 65536 B; not interlaced.
  async function decodeMapPng(file, kind) {
    const bytes = new Uint8Array(await file.arrayBuffer());
    const signature = [137, 80, 78, 71, 13, 10, 26, 10];
    if (bytes.length < 8 || signature.some((value, i) => bytes[i] !== value)) throw new Error(`${kind} ${file.name}: not a PNG file`);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let header = null;
    const idat = [];
    for (let offset = 8; offset + 12 <= bytes.length; ) {
      const length = view.getUint32(offset);
      const type = String.fromCharCode(...bytes.subarray(offset + 4, offset + 8));
      const data = bytes.subarray(offset + 8, offset + 8 + length);
      if (type === "IHDR") {
        header = { width: view.getUint32(offset + 8), height: view.getUint32(offset + 12), depth: data[8], color: data[9], interlace: data[12] };
        if (header.width !== state.width || header.height !== state.height) {
          throw new Error(`${kind} ${file.name}: the map is ${header.height}x${header.width} (HxW) but this model takes ${state.height}x${state.width} maps`);
        }
      } else if (type === "IDAT") {
        idat.push(data);
      } else if (type === "IEND") {
        break;
      }
      offset += 12 + length;
    }
    if (!header || !idat.length) throw new Error(`${kind} ${file.name}: a truncated PNG`);
    const channels = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 }[header.color];
    const single = header.color === 0 || header.color === 3;
    if (header.interlace || !channels || (header.depth !== 8 && header.depth !== 16) || (!single && (kind !== "panoptic" || header.depth !== 8 || header.color === 4))) {
      const expected = kind === "panoptic" ? "an 8/16-bit single-channel PNG or an 8-bit RGB PNG of ids" : "an 8/16-bit single-channel PNG";
      throw new Error(`${kind} ${file.name}: expected ${expected}, not interlaced`);
    }
    const sampleBytes = header.depth / 8;
    const pixelBytes = channels * sampleBytes;
    const stride = state.width * pixelBytes;
    const raw = await zlibDecompress(new Uint8Array(await new Blob(idat).arrayBuffer()));
    if (raw.length < (stride + 1) * state.height) throw new Error(`${kind} ${file.name}: truncated pixel data`);
    const rows = new Uint8Array(stride * state.height);
    for (let y = 0; y < state.height; y++) {
      const filter = raw[y * (stride + 1)];
      const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
      const out = rows.subarray(y * stride, (y + 1) * stride);
      const up = y > 0 ? rows.subarray((y - 1) * stride, y * stride) : new Uint8Array(stride);
      for (let i = 0; i < stride; i++) {
        const left = i >= pixelBytes ? out[i - pixelBytes] : 0;
        const upLeft = i >= pixelBytes ? up[i - pixelBytes] : 0;
        let predictor = 0;
        if (filter === 1) predictor = left;
        else if (filter === 2) predictor = up[i];
        else if (filter === 3) predictor = (left + up[i]) >> 1;
        else if (filter === 4) {
          const p = left + up[i] - upLeft;
          const pa = Math.abs(p - left);
          const pb = Math.abs(p - up[i]);
          const pc = Math.abs(p - upLeft);
          predictor = pa <= pb && pa <= pc ? left : pb <= pc ? up[i] : upLeft;
        } else if (filter !== 0) throw new Error(`${kind} ${file.name}: unknown PNG row filter ${filter}`);
        out[i] = (line[i] + predictor) & 0xff;
      }
    }
    const values = new Int32Array(state.width * state.height);
    for (let k = 0; k < values.length; k++) {
      const o = k * pixelBytes;
      if (single) values[k] = sampleBytes === 2 ? (rows[o] << 8) | rows[o + 1] : rows[o];
      else values[k] = rows[o] + 256 * rows[o + 1] + 65536 * rows[o + 2];
    }
    return values;
  }

  async function loadFolderPngsHere(semantic, panoptic) {
    state.mapLoading = true;
    setPending();
    try {
      const [semanticValues, panopticValues] = await Promise.all([decodeMapPng(semantic, "semantic"), decodeMapPng(panoptic, "panoptic")]);
      loadMaps(semanticValues, panopticValues, `${semantic.name} + ${panoptic.name}`);
    } catch (error) {
      setStatus(`could not load the uploaded map: ${error.message}`, "error");
    } finally {
      state.mapLoading = false;
      setPending();
    }
  }

  function loadFolderPngs(semantic, panoptic) {
    if (!state.backend.http) {
      loadFolderPngsHere(semantic, panoptic); // no server to read them: the page does
      return;
    }
    if (semantic.size + panoptic.size > state.maxUploadBytes) {
      setStatus(`the files are larger than the server's limit of ${state.maxUploadBytes} bytes`, "error");
      return;
    }
    const form = new FormData();
    form.append("semantic", semantic, semantic.name);
    form.append("panoptic", panoptic, panoptic.name);
    loadMapsFrom(fetch("api/maps", { method: "POST", body: form }), "the uploaded map");
  }

  function loadUpload() {
    const semantic = $("upload-semantic").files[0];
    const panoptic = $("upload-panoptic").files[0];
    if (!semantic || !panoptic) {
      setStatus("choose a semantic PNG and a panoptic PNG first", "error");
      return;
    }
    loadFolderPngs(semantic, panoptic);
  }

  // A map view is an RGB PNG of the colours as shown, with the maps themselves in its chunk MAP_CHUNK:
  // "PSM1", width, height (uint32 big-endian), then the zlib-compressed semantic and panoptic maps
  // (int32 little-endian each, row-major).
  async function mapViewPng() {
    const canvas = document.createElement("canvas");
    canvas.width = state.width;
    canvas.height = state.height;
    const image = new ImageData(state.width, state.height);
    paintImageData(image, { x0: 0, y0: 0, x1: state.width - 1, y1: state.height - 1 }, false);
    canvas.getContext("2d").putImageData(image, 0, 0);
    const png = new Uint8Array(await (await new Promise((resolve) => canvas.toBlob(resolve, "image/png"))).arrayBuffer());
    const size = state.width * state.height;
    const raw = new Uint8Array(8 * size);
    const view = new DataView(raw.buffer);
    for (let i = 0; i < size; i++) {
      view.setInt32(4 * i, state.semantic[i], true);
      view.setInt32(4 * (size + i), state.panoptic[i], true);
    }
    const packed = await zlibCompress(raw);
    const payload = new Uint8Array(12 + packed.length);
    const header = new DataView(payload.buffer);
    header.setUint32(0, MAP_MAGIC);
    header.setUint32(4, state.width);
    header.setUint32(8, state.height);
    payload.set(packed, 12);
    const afterHeader = 8 + 12 + 13; // signature + IHDR chunk
    return new Blob([png.subarray(0, afterHeader), pngChunk(MAP_CHUNK, payload), png.subarray(afterHeader)], { type: "image/png" });
  }

  async function readMapView(file) {
    const bytes = new Uint8Array(await file.arrayBuffer());
    const signature = [137, 80, 78, 71, 13, 10, 26, 10];
    if (bytes.length < 8 || signature.some((value, i) => bytes[i] !== value)) throw new Error(`${file.name}: not a PNG file`);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let offset = 8;
    while (offset + 12 <= bytes.length) {
      const length = view.getUint32(offset);
      const type = String.fromCharCode(...bytes.subarray(offset + 4, offset + 8));
      if (offset + 12 + length > bytes.length) break;
      if (type === MAP_CHUNK) {
        const data = bytes.subarray(offset + 8, offset + 8 + length);
        if (crc32(bytes.subarray(offset + 4, offset + 8 + length)) !== view.getUint32(offset + 8 + length)) {
          throw new Error(`${file.name}: its map is damaged (CRC mismatch)`);
        }
        const header = new DataView(data.buffer, data.byteOffset, 12);
        if (header.getUint32(0) !== MAP_MAGIC) throw new Error(`${file.name}: unknown map format`);
        const width = header.getUint32(4);
        const height = header.getUint32(8);
        if (width !== state.width || height !== state.height) {
          throw new Error(`${file.name}: the map is ${height}x${width} (HxW) but this model takes ${state.height}x${state.width} maps`);
        }
        const raw = await zlibDecompress(data.subarray(12));
        const size = width * height;
        if (raw.length !== 8 * size) throw new Error(`${file.name}: its map is truncated`);
        const values = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
        const semantic = new Int32Array(size);
        const panoptic = new Int32Array(size);
        for (let i = 0; i < size; i++) {
          semantic[i] = values.getInt32(4 * i, true);
          panoptic[i] = values.getInt32(4 * (size + i), true);
        }
        return { semantic, panoptic };
      }
      if (type === "IEND") break;
      offset += 12 + length;
    }
    throw new Error(`${file.name}: this PNG carries no map (only map views downloaded from the painter do; load Folder PNGs as semantic + panoptic)`);
  }

  async function loadMapView(file) {
    state.mapLoading = true;
    setPending();
    try {
      const { semantic, panoptic } = await readMapView(file);
      loadMaps(semantic, panoptic, file.name);
    } catch (error) {
      setStatus(`could not load ${file.name}: ${error.message}`, "error");
    } finally {
      state.mapLoading = false;
      setPending();
    }
  }

  function onDrop(event) {
    event.preventDefault();
    body.classList.remove("dragging");
    const files = [...event.dataTransfer.files].filter((file) => /\.png$/i.test(file.name) || file.type === "image/png");
    if (files.length === 1) {
      loadMapView(files[0]);
    } else if (files.length === 2) {
      let semantic = files.find((file) => /sem|label/i.test(file.name));
      let panoptic = files.find((file) => file !== semantic && /pan|inst|id/i.test(file.name));
      if (!semantic || !panoptic) [semantic, panoptic] = files;
      loadFolderPngs(semantic, panoptic);
    } else {
      setStatus("drop one map view PNG, or a semantic and a panoptic PNG", "error");
    }
  }

  // ------------------------------------------------------------------ downloads
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

  // ------------------------------------------------------------------ autosave (IndexedDB)
  let database = null;

  function openDatabase() {
    if (database) return database;
    database = new Promise((resolve, reject) => {
      const request = indexedDB.open("pansynth-painter", 1);
      request.onupgradeneeded = () => request.result.createObjectStore("maps");
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
    return database;
  }

  async function storeRequest(mode, action) {
    const db = await openDatabase();
    return new Promise((resolve, reject) => {
      const transaction = db.transaction("maps", mode);
      const request = action(transaction.objectStore("maps"));
      transaction.oncomplete = () => resolve(request.result);
      transaction.onerror = () => reject(transaction.error);
      transaction.onabort = () => reject(transaction.error);
    });
  }

  function scheduleSave() {
    body.dataset.saved = "0";
    if (state.saveTimer !== null) clearTimeout(state.saveTimer);
    state.saveTimer = setTimeout(saveNow, SAVE_DELAY_MS);
  }

  async function saveNow() {
    state.saveTimer = null;
    const version = state.mapVersion;
    try {
      await storeRequest("readwrite", (store) =>
        store.put(
          {
            semantic: state.semantic.slice(),
            panoptic: state.panoptic.slice(),
            selected: state.selected,
            style: { seed: state.style.seed, restyle: state.style.restyle, sample: state.style.sample },
            savedAt: Date.now(),
          },
          state.storeKey,
        ),
      );
      state.saveFailed = false;
      state.savedVersion = Math.max(state.savedVersion, version);
      if (state.saveTimer === null && state.edit === null) body.dataset.saved = "1";
    } catch (error) {
      state.saveFailed = true;
      setStatus(`autosave failed (${error && error.message}); download the map to keep it`, "error");
    }
  }

  async function restoreSaved() {
    let record;
    try {
      record = await storeRequest("readonly", (store) => store.get(state.storeKey));
    } catch (_) {
      return false;
    }
    if (!record) return false;
    try {
      checkMaps(record.semantic, record.panoptic, "the autosaved map");
    } catch (error) {
      setStatus(`the autosaved map was not restored: ${error.message}`, "error");
      return false;
    }
    state.semantic.set(record.semantic);
    state.panoptic.set(record.panoptic);
    if (record.style && state.style.enabled) {
      state.style.seed = Number(record.style.seed) || 0;
      state.style.restyle = record.style.restyle || {};
      $("style-seed").value = String(state.style.seed);
    }
    if (state.classes.has(record.selected)) selectClass(record.selected);
    setStatus(`restored the map autosaved at ${new Date(record.savedAt).toLocaleTimeString()}`);
    return true;
  }

  function storeKeyOf(info) {
    const text = JSON.stringify([info.title, info.height, info.width, info.classes.map((entry) => entry.name)]);
    let hash = 0x811c9dc5;
    for (let i = 0; i < text.length; i++) hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193) >>> 0;
    return `${info.height}x${info.width}:${info.classes.length}:${hash.toString(16)}`;
  }

  // edits not yet in the browser's storage (the autosave runs SAVE_DELAY_MS after each edit)
  function unsaved() {
    return state.saveFailed || state.saveTimer !== null || state.edit !== null || body.dataset.saved !== "1";
  }

  // ------------------------------------------------------------------ style (when the model has style inputs)
  function styleChanged() {
    mapChanged();
    scheduleSave();
    state.editEndedAt = performance.now();
    scheduleSynthesis(0);
  }

  function newStyles() {
    state.style.seed = Math.floor(Math.random() * 2 ** 31);
    state.style.restyle = {};
    $("style-seed").value = String(state.style.seed);
    setStatus(`new styles: seed ${state.style.seed}`);
    styleChanged();
  }

  function restyleSelected() {
    if (state.selectedId === null) return;
    const seed = Math.floor(Math.random() * 2 ** 31);
    state.style.restyle[String(state.selectedId)] = seed;
    setStatus(`restyled #${state.selectedId} (seed ${seed})`);
    styleChanged();
  }

  // ------------------------------------------------------------------ keyboard
  const SHORTCUTS = [
    ["B / F / R / P / V / E", "brush, fill, rectangle, polygon, select and move, eraser"],
    ["U", "unknown brush (when the model knows 'unknown')"],
    ["1 … 9, 0", "the recently used classes, in the order shown"],
    ["/", "search the classes (Enter picks the best match, ↓ goes to the list)"],
    ["↑ ↓ ← → Home End", "move in the class list (when it has the focus)"],
    ["Alt + click", "pick the class and instance under the pointer"],
    ["[ / ]", "smaller / larger brush"],
    ["Shift + stroke", "continue the instance under the pointer"],
    ["Enter, double-click", "close the polygon; Esc cancels it"],
    ["Delete, Backspace", "delete the selected object"],
    ["C", "give the selected object the selected class"],
    ["Esc", "cancel the polygon, or clear the selection"],
    ["O", "instance outlines on / off"],
    ["M", "map over the image on / off"],
    ["N", "new styles (when the model has style inputs)"],
    ["+ / − / Z", "zoom in / out / fit; the wheel zooms, middle button or Space + drag pans"],
    ["Ctrl+Z, Ctrl+Y (Ctrl+Shift+Z)", "undo, redo"],
    ["?", "this help"],
  ];

  function buildHelp() {
    const table = $("help-table");
    for (const [keys, what] of SHORTCUTS) {
      const row = table.insertRow();
      row.insertCell().textContent = keys;
      row.insertCell().textContent = what;
    }
  }

  function toggleHelp() {
    const help = $("help");
    if (help.open) help.close();
    else help.showModal();
  }

  function isTyping(target) {
    if (target instanceof HTMLTextAreaElement || target instanceof HTMLSelectElement) return true;
    return target instanceof HTMLInputElement && !["checkbox", "radio", "range", "button"].includes(target.type);
  }

  function onKey(event) {
    if ($("help").open) return;
    if (isTyping(event.target)) return;
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    const control = event.ctrlKey || event.metaKey;
    if (control && key === "z") {
      event.preventDefault();
      if (event.shiftKey) restore(state.redo, state.undo, true);
      else restore(state.undo, state.redo, false);
      return;
    }
    if (control && key === "y") {
      event.preventDefault();
      restore(state.redo, state.undo, true);
      return;
    }
    if (control || event.altKey) return;
    const tools = { b: "brush", f: "fill", r: "rect", p: "polygon", v: "select", e: "eraser", u: "unknown" };
    if (key === "?") {
      toggleHelp();
    } else if (key === "/") {
      $("class-search").focus();
    } else if (/^[0-9]$/.test(key)) {
      const cls = state.recent[(Number(key) + 9) % 10];
      if (cls !== undefined) selectClass(cls);
    } else if (key in tools) {
      setTool(tools[key]);
    } else if (key === "[" || key === "]") {
      stepBrush(key === "]" ? 1 : -1);
    } else if (key === "o") {
      $("show-outlines").checked = !$("show-outlines").checked;
      redrawDecorations();
    } else if (key === "m") {
      const slider = $("overlay-opacity");
      slider.value = Number(slider.value) > 0 ? "0" : "50";
      state.fullRender = true;
      queueRender();
    } else if (key === "n" && state.style.enabled) {
      newStyles();
    } else if (key === "c") {
      changeSelectedClass();
    } else if (key === "Delete" || key === "Backspace") {
      deleteSelected();
    } else if (key === "Escape") {
      if (state.polygon) {
        state.polygon = null;
        drawVector();
      } else {
        selectSegment(null);
      }
    } else if (key === "Enter" && state.polygon) {
      finishPolygon();
    } else if (key === "+" || key === "=") {
      zoomBy(1.25);
    } else if (key === "-") {
      zoomBy(0.8);
    } else if (key === "z") {
      zoomFit();
    } else if (key === " ") {
      state.spaceHeld = true;
    } else {
      return;
    }
    event.preventDefault();
  }

  function redrawDecorations() {
    state.fullRender = true;
    queueRender();
    drawResultOutlines();
  }

  // ------------------------------------------------------------------ start
  function showInfo(info) {
    state.info = info;
    state.height = info.height;
    state.width = info.width;
    state.background = info.background;
    state.maxUploadBytes = info.max_upload_bytes || 0;
    state.unknown = info.unknown && Number.isInteger(info.unknown.value) ? info.unknown.value : null;
    for (const entry of info.classes) state.classes.set(entry.index, entry);
    buildLuts(info.classes);
    $("model-info").textContent = `${info.title ? info.title + " · " : ""}${info.width}×${info.height}, ${info.num_classes} classes`;
    $("notes").textContent = (info.notes || []).join(" ");
    $("tool-unknown-label").hidden = state.unknown === null;
    const samples = Array.isArray(info.samples) ? info.samples : [];
    if (samples.length && state.backend.http) {
      const select = $("sample-select");
      samples.forEach((name, index) => {
        const option = document.createElement("option");
        option.value = String(index);
        option.textContent = name;
        select.append(option);
      });
      $("samples").hidden = false;
    }
    if (info.style && info.style.enabled) {
      state.style.enabled = true;
      $("style-section").hidden = false;
      if (samples.length) {
        const select = $("style-sample");
        samples.forEach((name, index) => {
          const option = document.createElement("option");
          option.value = String(index);
          option.textContent = name;
          select.append(option);
        });
        $("style-sample-row").hidden = false;
      }
    }
  }

  function wire() {
    const viewport = $("map-viewport");
    viewport.addEventListener("pointerdown", onPointerDown);
    viewport.addEventListener("pointermove", onPointerMove);
    viewport.addEventListener("pointerup", onPointerUp);
    viewport.addEventListener("pointercancel", onPointerUp);
    viewport.addEventListener("pointerleave", () => {
      $("brush-cursor").hidden = true;
    });
    viewport.addEventListener("dblclick", (event) => {
      if (state.polygon) {
        event.preventDefault();
        finishPolygon();
      }
    });
    viewport.addEventListener("wheel", onWheel, { passive: false });
    viewport.addEventListener("auxclick", (event) => event.preventDefault());
    $("result-viewport").addEventListener("wheel", (event) => {
      event.preventDefault();
      const rect = $("result-viewport").getBoundingClientRect();
      zoomBy(Math.exp(-event.deltaY * 0.0015), event.clientX - rect.left, event.clientY - rect.top);
    }, { passive: false });
    $("zoom-in").addEventListener("click", () => zoomBy(1.25));
    $("zoom-out").addEventListener("click", () => zoomBy(0.8));
    $("zoom-fit").addEventListener("click", zoomFit);
    for (const input of document.querySelectorAll('input[name="tool"]')) input.addEventListener("change", onToolChange);
    $("undo").addEventListener("click", () => restore(state.undo, state.redo, false));
    $("redo").addEventListener("click", () => restore(state.redo, state.undo, true));
    $("clear").addEventListener("click", () => {
      const blank = blankMaps();
      replaceMaps(blank.semantic, blank.panoptic);
      setStatus("cleared");
    });
    $("show-outlines").addEventListener("change", redrawDecorations);
    $("overlay-opacity").addEventListener("input", () => {
      state.fullRender = true;
      queueRender();
    });
    $("delete-object").addEventListener("click", deleteSelected);
    $("change-class").addEventListener("click", changeSelectedClass);
    $("upload-load").addEventListener("click", loadUpload);
    $("upload-map-view").addEventListener("change", () => {
      const file = $("upload-map-view").files[0];
      if (file) loadMapView(file);
      $("upload-map-view").value = "";
    });
    $("sample-load").addEventListener("click", () => {
      const index = Number($("sample-select").value);
      loadMapsFrom(fetch(`api/samples/${index}`, { cache: "no-store" }), `sample ${state.info.samples[index]}`);
    });
    $("download-map-view").addEventListener("click", async () => download(await mapViewPng(), "map_view.png"));
    $("download-semantic").addEventListener("click", async () => download(await semanticPng(state.semantic, state.width, state.height), "semantic.png"));
    $("download-panoptic").addEventListener("click", async () => download(await panopticPng(state.panoptic, state.width, state.height), "panoptic.png"));
    $("class-search").addEventListener("input", onSearchInput);
    $("class-search").addEventListener("keydown", onSearchKey);
    $("palette").addEventListener("keydown", onPaletteKey);
    $("help-button").addEventListener("click", toggleHelp);
    $("help-close").addEventListener("click", () => $("help").close());
    $("style-seed").addEventListener("change", () => {
      state.style.seed = Math.max(0, Math.floor(Number($("style-seed").value) || 0));
      $("style-seed").value = String(state.style.seed);
      styleChanged();
    });
    $("style-new").addEventListener("click", newStyles);
    $("style-restyle").addEventListener("click", restyleSelected);
    $("style-sample").addEventListener("change", () => {
      const value = $("style-sample").value;
      state.style.sample = value === "" ? null : Number(value);
      styleChanged();
    });
    document.addEventListener("keydown", onKey);
    document.addEventListener("keyup", (event) => {
      if (event.key === " ") state.spaceHeld = false;
    });
    window.addEventListener("resize", sizeViews);
    window.addEventListener("dragover", (event) => {
      event.preventDefault();
      body.classList.add("dragging");
    });
    window.addEventListener("dragleave", () => body.classList.remove("dragging"));
    window.addEventListener("drop", onDrop);
    window.addEventListener("beforeunload", (event) => {
      if (unsaved()) {
        event.preventDefault();
        event.returnValue = "";
      }
    });
  }

  async function start() {
    state.backend = window.PANSYNTH_BACKEND || httpBackend;
    let info;
    try {
      info = await state.backend.info();
    } catch (error) {
      setStatus(`cannot reach the server: ${error.message}`, "error");
      return;
    }
    showInfo(info);
    buildPalette(info);
    buildBrushSizes();
    buildHelp();
    wire();
    const size = state.width * state.height;
    state.semantic = new Int32Array(size);
    state.panoptic = new Int32Array(size);
    state.underSemantic = new Int32Array(size).fill(-1);
    state.underPanoptic = new Int32Array(size).fill(-1);
    sizeViews();
    const firstPaintable = info.classes.find((entry) => entry.thing) || info.classes[0];
    selectClass(firstPaintable.index, { scroll: false });
    state.storeKey = storeKeyOf(info);
    let restored = false;
    try {
      restored = await restoreSaved();
    } catch (_) {
      restored = false;
    }
    if (!restored) {
      const blank = blankMaps();
      state.semantic.set(blank.semantic);
      state.panoptic.set(blank.panoptic);
      setStatus("ready: pick a class and paint; ? lists the shortcuts");
    }
    state.baseSemantic = state.semantic.slice();
    state.basePanoptic = state.panoptic.slice();
    reindex();
    state.fullRender = true;
    mapChanged();
    queueRender();
    queueObjects();
    updateHistoryButtons();
    body.dataset.saved = "1";
    scheduleSynthesis(0);
  }

  document.addEventListener("DOMContentLoaded", start);
})();
