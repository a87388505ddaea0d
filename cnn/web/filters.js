// conv1's 16 learned 5×5 filters, drawn in the browser from their weights (cnn/render.py's
// filters(): float32, base64, shape) on the page's blue-white-red weight scale, symmetric about 0.
// The canvas is transparent between tiles (the gutters are the page's own background in both
// themes), the tile numbers are painted in the page's text colour and the colour bar's ends are
// page text: nothing white is left in dark mode. Cells are whole device pixels (crisp at any
// devicePixelRatio).
//
// This file is the body of a gr.HTML js_on_load (app.py; cnn/web/draw.js in front of it): `element` is the component, `props`
// holds `value` (the weights of the network the page reads with: the shipped ones with the page,
// a training snapshot's when the picker or a link chooses one) and `colours` (cnn/render.py's
// WEIGHT_SCALE, 240 rgb rows); `watch("value", ...)` runs after each new value.
const SCALE = props.colours, N = SCALE.length;
const GAP = 4, LABEL = 12, COLS = 4, MAX_CELL = 12;  // CSS px: gutter, tile-number band; tiles across; largest cell
const canvas = element.querySelector("canvas.filters-grid"), bar = element.querySelector(".bar");
const host = () => element.closest("#filters") || element;  // carries data-drawn (a count) for tests

function unpack(value) {  // {weights: Float32Array (n*k*k), n, k} or null
  if (!value || !value.data || !Array.isArray(value.shape)) return null;
  const raw = bytes(value.data);
  const weights = new Float32Array(raw.buffer), [n, , k] = value.shape;
  return weights.length === n * k * value.shape[3] ? { weights, n, k } : null;
}

function draw() {
  const f = unpack(props.value), ratio = dpr();
  const ctx = canvas.getContext("2d");
  if (!f) { canvas.width = canvas.height = 0; bar.innerHTML = ""; return; }
  const rows = Math.ceil(f.n / COLS), avail = Math.max(40, element.clientWidth - 2);
  // the largest cell, in whole device pixels, that fits 4 tiles across
  const cell = Math.max(1 / ratio, Math.min(MAX_CELL, Math.floor((avail - (COLS - 1) * GAP) / (COLS * f.k) * ratio) / ratio));
  const tile = f.k * cell, width = COLS * tile + (COLS - 1) * GAP, height = rows * (tile + LABEL) + (rows - 1) * GAP;
  canvas.width = Math.round(width * ratio); canvas.height = Math.round(height * ratio);
  canvas.style.width = width + "px"; canvas.style.height = height + "px";
  Object.assign(canvas.dataset, { channels: f.n, rows: f.k, cols: f.k, tileCols: COLS, cell, gap: GAP, label: LABEL });
  let hi = 0;
  for (const w of f.weights) hi = Math.max(hi, Math.abs(w));
  hi = hi || 1;
  const img = ctx.createImageData(canvas.width, canvas.height), px = img.data;  // transparent: the gutters
  const origin = (t) => [(t % COLS) * (tile + GAP), Math.floor(t / COLS) * (tile + LABEL + GAP) + LABEL];
  for (let t = 0; t < f.n; t++) {
    const [ox, oy] = origin(t);
    for (let r = 0; r < f.k; r++) {
      const y0 = Math.round((oy + r * cell) * ratio), y1 = Math.round((oy + (r + 1) * cell) * ratio);
      for (let q = 0; q < f.k; q++) {
        const x0 = Math.round((ox + q * cell) * ratio), x1 = Math.round((ox + (q + 1) * cell) * ratio);
        const rgb = SCALE[level(f.weights[(t * f.k + r) * f.k + q], -hi, hi, N)];
        for (let y = y0; y < y1; y++) for (let x = x0, i = (y * img.width + x0) * 4; x < x1; x++, i += 4) {
          px[i] = rgb[0]; px[i + 1] = rgb[1]; px[i + 2] = rgb[2]; px[i + 3] = 255;
        }
      }
    }
  }
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.putImageData(img, 0, 0);
  ctx.scale(ratio, ratio);  // filter numbers, in the page's text colour (both themes)
  ctx.fillStyle = getComputedStyle(canvas).color;
  ctx.font = `${LABEL - 2}px sans-serif`;
  ctx.textBaseline = "bottom";
  for (let t = 0; t < f.n; t++) { const [ox, oy] = origin(t); ctx.fillText(String(t), ox, oy - 1); }
  bar.style.width = width + "px";
  colourBar(bar, SCALE, -hi, hi);
  canvas.setAttribute("aria-label", `conv1's ${f.n} learned ${f.k}×${f.k} filters, numbered 0 to ${f.n - 1}: ` +
    `blue cells are negative weights, red positive, white near 0; the scale runs from ${fmt(-hi)} to ${fmt(hi)}.`);
  host().dataset.drawn = String(++drawn);
}

let drawn = 0, lastWidth = 0;
watch("value", draw);
new ResizeObserver(() => {  // a new column width (or zoom: a new devicePixelRatio) redraws it
  const w = element.clientWidth + "/" + dpr();
  if (w !== lastWidth) { lastWidth = w; draw(); }
}).observe(element);
draw();
