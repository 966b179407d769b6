// pansynth in-browser backend: the painter's synthesis runs model.onnx with onnxruntime-web (WebAssembly),
// in this page, with no server. It implements the painter's backend interface:
//   info(): Promise<the /api/info JSON, read from info.json>
//   synthesize({semantic, panoptic, height, width, style}): Promise<Blob (image/png)>
// and keeps the last synthesis in window.PANSYNTH_LAST ({semantic, panoptic, image (Float32Array, CHW in
// [-1, 1]), milliseconds}) for tests and measurements.
(function () {
  "use strict";
  let infoPromise = null;
  let sessionPromise = null;

  function info() {
    if (!infoPromise) {
      infoPromise = fetch("info.json", { cache: "no-store" }).then((response) => {
        if (!response.ok) throw new Error(`info.json: HTTP ${response.status}`);
        return response.json();
      });
    }
    return infoPromise;
  }

  function session() {
    if (!sessionPromise) {
      if (typeof ort === "undefined") throw new Error("onnxruntime-web (ort/ort.wasm.min.js) did not load");
      ort.env.wasm.wasmPaths = new URL("ort/", document.baseURI).href;
      // Threads need a cross-origin isolated page (COOP/COEP headers), which a plain static server does not send.
      ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
      sessionPromise = ort.InferenceSession.create("model.onnx", { executionProviders: ["wasm"] });
    }
    return sessionPromise;
  }

  function int64(values) {
    const out = new BigInt64Array(values.length);
    for (let i = 0; i < values.length; i++) out[i] = BigInt(values[i]);
    return out;
  }

  function toPng(image, height, width) {
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    const context = canvas.getContext("2d");
    const pixels = context.createImageData(width, height);
    const plane = height * width;
    for (let i = 0; i < plane; i++) {
      for (let c = 0; c < 3; c++) {
        // as pansynth.viz: round((x + 1) * 127.5) of x clamped to [-1, 1]
        const value = Math.min(1, Math.max(-1, image[c * plane + i]));
        pixels.data[4 * i + c] = Math.round((value + 1) * 127.5);
      }
      pixels.data[4 * i + 3] = 255;
    }
    context.putImageData(pixels, 0, 0);
    return new Promise((resolve, reject) =>
      canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("PNG encoding failed"))), "image/png"),
    );
  }

  async function synthesize({ semantic, panoptic, height, width }) {
    const model = await info();
    if (height !== model.height || width !== model.width) {
      throw new Error(`the model takes ${model.width}×${model.height} maps, got ${width}×${height}`);
    }
    const loaded = await session();
    const shape = [1, height, width];
    const started = performance.now();
    // unknown pixels (the painter sends info.unknown.value with id 0) go to the graph as class and id -1
    const unknown = model.unknown && Number.isInteger(model.unknown.value) ? model.unknown.value : null;
    const semantic64 = int64(semantic);
    const panoptic64 = int64(panoptic);
    if (unknown !== null) {
      for (let i = 0; i < semantic.length; i++) {
        if (semantic[i] === unknown) {
          semantic64[i] = -1n;
          panoptic64[i] = -1n;
        }
      }
    }
    const outputs = await loaded.run({
      semantic: new ort.Tensor("int64", semantic64, shape),
      panoptic: new ort.Tensor("int64", panoptic64, shape),
    });
    const milliseconds = performance.now() - started;
    const image = outputs.image.data;
    window.PANSYNTH_LAST = {
      semantic: Array.from(semantic),
      panoptic: Array.from(panoptic),
      image: Float32Array.from(image),
      milliseconds,
    };
    return toPng(image, height, width);
  }

  window.PANSYNTH_BACKEND = { info, synthesize, name: "onnxruntime-web" };
})();
