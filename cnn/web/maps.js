// The maps, the inspector and the evidence picture, drawn in the browser from one value per
// drawing (cnn/payload.py: the network input, the four layers' activations, the kept cells, the
// evidence maps, the answer) and the model's weights, received once with the page. A pointer,
// a tap or a key inspects any cell with no request: every number shown is the model's own
// activation from that value, or the products of its weights and inputs computed here in float32
// as torch does (tests/test_browser.py compares every number with /inspect).
//
// This file is the body of a gr.HTML js_on_load (app.py; cnn/web/draw.js in front of it):
// `element` is the component, `props` holds `value` (null before the first drawing), `network` (weights and geometry) and `look`
// (colour scales, titles, the grids' layout); `watch("value", ...)` runs after each new value.
const NET = props.network, LOOK = props.look;
const LAYERS = ["conv1", "pool1", "conv2", "pool2"];
const SHAPES = LOOK.shapes;                // layer -> [channels, rows, cols]
const BEFORE = { pool1: "conv1", pool2: "conv2" }, AFTER = { conv1: "pool1", conv2: "pool2" };
const GAP = 4, LABEL = 12;                 // CSS px: gutter between tiles, tile-number band
const $ = (sel, root = element) => root.querySelector(sel);
const host = { get dataset() { return (element.closest("#maps") || element).dataset; } };  // carries data-shown, data-pinned, data-drawn for the page and tests
// The focus view lives on <body>: fixed over everything (the page's sticky answer line included),
// whatever stacking the blocks around this component make.
const FOCUS = element.querySelector("#focus");
document.getElementById("focus")?.remove();  // one focus view a page, also if this component is mounted again
document.body.appendChild(FOCUS);
const inFocusView = (sel) => FOCUS.querySelector(sel);

// ------------------------------------------------------------------ the weights, once
function unpackWeights(net) {  // {"conv1.0.weight": Float32Array, ...} from cnn/payload.py's weights()
  const all = new Float32Array(bytes(net.data).buffer), out = {};
  let at = 0;
  net.names.forEach((name, i) => {
    const n = net.shapes[i].reduce((a, b) => a * b, 1);
    out[name] = all.subarray(at, at + n);
    at += n;
  });
  return out;
}
// Each network's weights, by name: the shipped ones with the page, a training snapshot's with the
// value that switched to it (cnn/replay.py); W is the drawing's network's.
const WEIGHTS = { shipped: unpackWeights(NET) };
let W = WEIGHTS.shipped;
// What each map looks for (cnn/patches.py), by network as the weights: per conv layer, TOP patches
// a map (uint8), or null where that network has no patches file; P is the drawing's network's.
const unpackPatches = (p) => p ? { ...p, bytes: { conv1: bytes(p.conv1.patch), conv2: bytes(p.conv2.patch) }, sheets: {} } : null;
const PATCHES = { shipped: unpackPatches(props.patches) };
let P = PATCHES.shipped;
const GEOMETRY = Object.fromEntries(NET.geometry.map(([name, k, s, p, d]) => [name, { k, s, p, d }]));

// ------------------------------------------------------------------ one drawing's value
let D = null;          // the decoded drawing, or null (nothing drawn)
let pinned = null;     // [layer, channel, row, col] the visitor clicked or tapped, kept across strokes
let shown = null;      // the cell the inspector shows now
let hovering = null;   // the grid the mouse is over
let lastShown = null, lastDrawn = null;  // what the inspector last drew: a pointer inside the same cell redraws nothing
let focused = null;    // [layer, channel] open in the focus view, or null

async function inflate(b64) {
  const stream = new Blob([bytes(b64)]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

async function decode(v) {
  const blob = await inflate(v.blob);
  const floats = new Float32Array(blob.buffer, 0, LOOK.float_count);
  const out = { input: bytes(v.input), layers: {}, v };
  let at = 0;
  for (const name of LAYERS) {
    const n = SHAPES[name].reduce((a, b) => a * b, 1);
    out.layers[name] = floats.subarray(at, at + n);
    at += n;
  }
  out.evidence = floats.subarray(at, at + 490);
  const places = blob.subarray(4 * LOOK.float_count);
  const n1 = SHAPES.pool1.reduce((a, b) => a * b, 1);
  out.kept = { pool1: places.subarray(0, n1), pool2: places.subarray(n1) };
  out.x = Float32Array.from(out.input, (u) => u / 255);  // ToTensor: float32(u / 255)
  out.hi = {};
  for (const name of ["conv1", "conv2"]) {  // one colour scale per block, 0 .. its largest value
    let m = 0;
    for (const a of out.layers[name]) if (a > m) m = a;
    out.hi[name] = out.hi[AFTER[name]] = m > 0 ? m : 1;
  }
  return out;
}

const at = (layer, c, r, q) => {
  const [, h, w] = SHAPES[layer];
  return D.layers[layer][(c * h + r) * w + q];
};

// ------------------------------------------------------------------ numbers and words
function num(v) {  // as cnn/explain.py prints: 3 decimals, a true minus, never "−0.000"
  const s = v.toFixed(3);
  return (s === "-0.000" ? "0.000" : s).replace("-", "−");
}
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function receptiveField(layer, row, col) {  // [top, left, bottom, right), clipped to the input
  let spans = [[row, row], [col, col]];
  for (const name of LAYERS.slice(0, LAYERS.indexOf(layer) + 1).reverse()) {
    const g = GEOMETRY[name];
    spans = spans.map(([lo, hi], a) => [lo * g.s[a] - g.p[a], hi * g.s[a] - g.p[a] + (g.k[a] - 1) * g.d[a]]);
  }
  const [[t, b], [l, r]] = spans;
  return { box: [Math.max(0, t), Math.max(0, l), Math.min(28, b + 1), Math.min(28, r + 1)], raw: [t, l, b + 1, r + 1] };
}

// A cell's arithmetic: the same quantities /inspect returns (cnn/inspector.py), from the value
// above and the weights. Products are float32 (Math.fround), as torch multiplies.
function details(layer, c, r, q) {
  const out = { layer, channel: c, row: r, col: q, value: at(layer, c, r, q) };
  const rf = receptiveField(layer, r, q);
  out.receptive_field = rf.box;
  out.clipped = rf.raw.some((v, i) => v !== rf.box[i]);
  if (layer === "conv1" || layer === "conv2") {
    const g = GEOMETRY[layer];
    const [cin, h, w] = layer === "conv1" ? [1, 28, 28] : SHAPES.pool1;
    const src = layer === "conv1" ? D.x : D.layers.pool1;
    const weight = W[layer + ".0.weight"], k0 = g.k[0], k1 = g.k[1];
    const patch = [], pad = [], weights = [], products = [], terms = [];
    let total = 0;
    for (let m = 0; m < cin; m++) {
      let term = 0;
      for (let i = 0; i < k0; i++) {
        for (let j = 0; j < k1; j++) {
          const y = r * g.s[0] - g.p[0] + i * g.d[0], x = q * g.s[1] - g.p[1] + j * g.d[1];
          const inside = y >= 0 && y < h && x >= 0 && x < w;
          const a = inside ? src[(m * h + y) * w + x] : 0;
          const wt = weight[((c * cin + m) * k0 + i) * k1 + j];
          const p = Math.fround(a * wt);
          term += p;
          if (layer === "conv1") {
            (patch[i] ||= []).push(a); (pad[i] ||= []).push(!inside);
            (weights[i] ||= []).push(wt); (products[i] ||= []).push(p);
          }
        }
      }
      terms.push(term);
      total += term;
    }
    out.bias = W[layer + ".0.bias"][c];
    out.sum = total;
    out.pre_activation = total + out.bias;
    if (layer === "conv1") Object.assign(out, { patch, pad, weights, products });
    else out.channel_terms = terms;
  } else {
    const before = BEFORE[layer], g = GEOMETRY[layer];
    const top = r * g.s[0], left = q * g.s[1];
    out.window = [[0, 1].map((j) => at(before, c, top, left + j)), [0, 1].map((j) => at(before, c, top + 1, left + j))];
    out.window_origin = [top, left];
    const place = D.kept[layer][(c * SHAPES[layer][1] + r) * SHAPES[layer][2] + q];
    out.kept = [top + (place >> 1), left + (place & 1)];
    out.kept_receptive_field = receptiveField(before, ...out.kept).box;
    if (layer === "pool2") {
      const n = SHAPES.pool2[0] * SHAPES.pool2[1] * SHAPES.pool2[2], idx = (c * 7 + r) * 7 + q;
      out.class_terms = Array.from({ length: 10 }, (_, d) => Math.fround(W["out.weight"][d * n + idx] * out.value));
    }
  }
  return out;
}

function field(box) {
  const [t, l, b, r] = box;
  return `input rows ${t}–${b - 1}, columns ${l}–${r - 1} (${b - t}×${r - l} pixels)`;
}
function signed(v, hi, extra = "") {
  const a = hi > 0 ? Math.min(1, Math.abs(v) / hi) * 0.55 : 0;
  const rgb = v > 0 ? "214,39,40" : "31,119,180";
  return `<td${extra} style="background:rgba(${rgb},${a.toFixed(2)})">${num(v)}</td>`;
}
function table(a, caption, { isSigned = true, mark = null, pad = null, name = "" } = {}) {
  const hi = Math.max(...a.flat().map(Math.abs)) || 1;
  const rows = a.map((row, i) => "<tr>" + row.map((v, j) => {
    const cls = [mark && mark[0] === i && mark[1] === j ? "won" : "", pad && pad[i][j] ? "pad" : ""].filter(Boolean).join(" ");
    const extra = (cls ? ` class="${cls}"` : "") + ` data-i="${i}" data-j="${j}"`;
    return isSigned ? signed(v, hi, extra) : `<td${extra}>${num(v)}</td>`;
  }).join("") + "</tr>").join("");
  return `<table class="cells" data-table="${name}"><caption>${caption}</caption>${rows}</table>`;
}
function sumLine(cell, what) {
  const pre = cell.pre_activation;
  return `<p class="sum">sum of the ${what} <span data-sum>${num(cell.sum)}</span> + bias <span data-bias>${num(cell.bias)}</span> = ` +
    `<span data-pre>${num(pre)}</span>; ReLU keeps ${pre > 0 ? "it" : "nothing below 0"}: <b data-relu>${num(cell.value)}</b></p>`;
}

// The receptive fields on which map `c` of `conv` (conv1 or conv2) responded most over the MNIST
// test set; a canvas that drawPatches fills in once the HTML is in place.
function looksForHTML(conv, c) {
  if (!P) return "";  // this network has no patches file
  const L = P[conv], n = P.top;
  const values = L.value[c].map((v) => num(v)).join(", ");
  return `<div class="looks-for" data-conv="${conv}" data-map="${c}"><p>What ${conv}'s map ${c} looks for: the ${n} ` +
    `MNIST test digits (of ${P.count.toLocaleString("en")}) on which it responds most, each cut to the ` +
    `${L.side}×${L.side} pixels its strongest cell sees (responses ${values}):</p>` +
    `<canvas class="patches" role="img" aria-label="The ${n} MNIST test patches that make ${conv} map ${c} respond most" ` +
    `data-indices="${L.index[c].join(",")}"></canvas></div>`;
}
// One map's patches as a 3x3 grid of its own pixels (largest first, row by row), made once a map
// and network.
function patchSheet(conv, map) {
  const key = conv + ":" + map;
  if (P.sheets[key]) return P.sheets[key];
  const n = P.top, side = P[conv].side, cols = 3, rows = Math.ceil(n / cols), per = side * side;
  const sheet = document.createElement("canvas");
  sheet.width = cols * side; sheet.height = rows * side;
  const g = sheet.getContext("2d"), img = g.createImageData(sheet.width, sheet.height), all = P.bytes[conv];
  for (let k = 0; k < n; k++) {
    const off = (map * n + k) * per, ox = (k % cols) * side, oy = Math.floor(k / cols) * side;
    for (let i = 0; i < per; i++) {
      const v = all[off + i], at = 4 * ((oy + Math.floor(i / side)) * sheet.width + ox + (i % side));
      img.data[at] = img.data[at + 1] = img.data[at + 2] = v; img.data[at + 3] = 255;
    }
  }
  g.putImageData(img, 0, 0);
  return (P.sheets[key] = sheet);
}
function drawPatches(box) {
  for (const canvas of box.querySelectorAll("canvas.patches")) {
    const { conv, map } = canvas.parentElement.dataset, n = P.top, side = P[conv].side;
    const scale = Math.max(3, Math.round(48 / side)), gap = 4, ratio = dpr(), cols = 3, rows = Math.ceil(n / cols);
    const w = cols * side * scale + (cols - 1) * gap, h = rows * side * scale + (rows - 1) * gap;
    canvas.width = Math.round(w * ratio); canvas.height = Math.round(h * ratio);
    canvas.style.width = w + "px"; canvas.style.height = h + "px";
    const ctx = canvas.getContext("2d"), sheet = patchSheet(conv, +map);
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.imageSmoothingEnabled = false;
    for (let k = 0; k < n; k++) {  // each patch from the sheet, scaled, with a gap between
      const sx = (k % cols) * side, sy = Math.floor(k / cols) * side;
      ctx.drawImage(sheet, sx, sy, side, side, (k % cols) * (side * scale + gap), Math.floor(k / cols) * (side * scale + gap),
                    side * scale, side * scale);
    }
  }
}

function inspectorHTML(cell, isDefault) {
  const { layer, channel: c, row: r, col: q, value: v } = cell;
  const why = isDefault ? " — the cell that voted most for the answer; point at any other cell" : "";
  let html = `<h3 data-layer="${layer}" data-channel="${c}" data-row="${r}" data-col="${q}">` +
    `${esc(LOOK.titles[layer])}, map ${c}, row ${r}, column ${q}: <b data-value="${v}">${num(v)}</b>${why}</h3>` +
    `<p>It looks at ${field(cell.receptive_field)} of the network input: the <span class="green">green box</span>; ` +
    `nothing outside it can change this value.${cell.clipped ? " Part of its window lies outside the 28×28 input, where" +
      " the convolution reads zeros (its padding)." : ""}</p>`;
  if (layer === "conv1") {
    html += `<div class="row">${table(cell.patch, "input patch" + (cell.clipped ? " (faded: padding zeros outside the input)" : ""),
      { isSigned: false, pad: cell.pad, name: "patch" })}<span class="op">×</span>` +
      `${table(cell.weights, `filter ${c}`, { name: "weights" })}<span class="op">=</span>` +
      `${table(cell.products, "products", { name: "products" })}</div>` + sumLine(cell, "25 products");
  } else if (layer === "conv2") {
    const t = cell.channel_terms, hi = Math.max(...t.map(Math.abs)) || 1;
    const order = t.map((_, k) => k).sort((a, b) => Math.abs(t[b]) - Math.abs(t[a]));
    html += `<p>conv2's filter ${c} holds a 5×5 slice for each of the 16 pooled conv1 maps; each slice times ` +
      `its map's 5×5 patch gives one term (largest first):</p><table class="cells terms">` +
      order.map((k) => `<tr data-term="${k}"><td>map ${k}</td>${signed(t[k], hi)}</tr>`).join("") + "</table>" +
      sumLine(cell, "16 terms");
  } else {
    const [top, left] = cell.window_origin, [kr, kc] = cell.kept, before = BEFORE[layer];
    html += table(cell.window, `the 2×2 window of ${before}, rows ${top}–${top + 1}, columns ${left}–${left + 1}`,
      { isSigned: false, mark: [kr - top, kc - left], name: "window" }) +
      `<p>Max-pooling keeps the largest of the four: <span data-kept="${kr},${kc}">row ${kr}, column ${kc}</span> ` +
      `(the dot on ${layer === "pool1" ? "③" : "⑤"}). It looks at ${field(cell.kept_receptive_field)}: the ` +
      `<span class="cyan">cyan box</span>, inside the window's own field.</p>`;
    if (layer === "pool2") {
      const t = cell.class_terms, hi = Math.max(...t.map(Math.abs)) || 1;
      html += "<p>The linear layer reads this cell directly. Its weight for each digit times its value is what it " +
        "adds to that digit's score:</p><table class=\"cells votes\">" + t.map((v, d) =>
          `<tr data-digit="${d}"><td>${d}</td><td class="bar"><span class="${v > 0 ? "pos" : "neg"}" ` +
          `style="width:${(Math.abs(v) / hi * 100).toFixed(0)}%"></span></td><td>${num(v)}</td></tr>`).join("") + "</table>";
    }
  }
  return html + looksForHTML(BEFORE[layer] || layer, c);  // a pooled map's: its conv map's
}

// ------------------------------------------------------------------ drawing
const SCALE = LOOK.activation, SIGNED = LOOK.weight, N = SCALE.length;

function layout(canvas, layer, cell, tileCols, channels, label = LABEL, gap = GAP) {
  const [, h, w] = SHAPES[layer];
  const rows = Math.ceil(channels / tileCols);
  const g = { layer, cell, tileCols, channels, label, gap, h, w,
              width: tileCols * w * cell + (tileCols - 1) * gap, height: rows * (h * cell + label) + (rows - 1) * gap };
  const ratio = dpr();
  for (const c of [canvas, canvas.nextElementSibling]) {
    c.width = Math.round(g.width * ratio);
    c.height = Math.round(g.height * ratio);
    c.style.width = g.width + "px";
    c.style.height = g.height + "px";
  }
  Object.assign(canvas.dataset, { layer, channels, rows: h, cols: w, tileCols, cell, gap, label });
  canvas._g = g;
  return g;
}
const origin = (g, t) => [(t % g.tileCols) * (g.w * g.cell + g.gap), Math.floor(t / g.tileCols) * (g.h * g.cell + g.label + g.gap) + g.label];

// One grid: every tile's cells in its layer's colours, kept cells dotted, map numbers above.
function paint(canvas, g, first = 0) {
  const ctx = canvas.getContext("2d"), ratio = dpr();
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!D) return;
  const hi = D.hi[g.layer], img = ctx.createImageData(canvas.width, canvas.height), px = img.data;
  const kept = AFTER[g.layer] ? keptMask(g.layer) : null;
  const dim = LOOK.kept_dim, bright = LOOK.kept;
  for (let t = 0; t < g.channels; t++) {
    const ch = first + t, [ox, oy] = origin(g, t);
    for (let r = 0; r < g.h; r++) {
      const y0 = Math.round((oy + r * g.cell) * ratio), y1 = Math.round((oy + (r + 1) * g.cell) * ratio);
      for (let q = 0; q < g.w; q++) {
        const x0 = Math.round((ox + q * g.cell) * ratio), x1 = Math.round((ox + (q + 1) * g.cell) * ratio);
        const rgb = SCALE[level(at(g.layer, ch, r, q), 0, hi, N)];
        for (let y = y0; y < y1; y++) {
          for (let x = x0, i = (y * img.width + x0) * 4; x < x1; x++, i += 4) {
            px[i] = rgb[0]; px[i + 1] = rgb[1]; px[i + 2] = rgb[2]; px[i + 3] = 255;
          }
        }
        const k = kept && kept[(ch * g.h + r) * g.w + q];
        if (k) {  // the centred dot, half the cell
          const s = Math.max(1, Math.round((x1 - x0) / 2)), dx = x0 + Math.floor((x1 - x0 - s) / 2), dy = y0 + Math.floor((y1 - y0 - s) / 2);
          const c = k === 2 ? dim : bright;
          for (let y = dy; y < dy + s; y++) for (let x = dx, i = (y * img.width + dx) * 4; x < dx + s; x++, i += 4) {
            px[i] = c[0]; px[i + 1] = c[1]; px[i + 2] = c[2];
          }
        }
      }
    }
  }
  ctx.putImageData(img, 0, 0);
  if (g.label) {  // map numbers, in the page's text colour (light and dark themes)
    ctx.scale(ratio, ratio);
    ctx.fillStyle = getComputedStyle(canvas).color;
    ctx.font = `${LABEL - 2}px sans-serif`;
    ctx.textBaseline = "bottom";
    for (let t = 0; t < g.channels; t++) {
      const [ox, oy] = origin(g, t);
      ctx.fillText(String(first + t), ox, oy - 1);
    }
  }
}

// 1 where a window kept this cell, 2 if that window looks flat (its colours within LOOK.flat levels).
const keptCache = {};
function keptMask(layer) {
  if (keptCache[layer]?.D === D) return keptCache[layer].m;
  const after = AFTER[layer], [c, h, w] = SHAPES[layer], hi = D.hi[layer];
  const m = new Uint8Array(c * h * w), places = D.kept[after];
  for (let ch = 0; ch < c; ch++) for (let r = 0; r < h / 2; r++) for (let q = 0; q < w / 2; q++) {
    const p = places[(ch * h / 2 + r) * w / 2 + q];
    const lv = [0, 1, 2, 3].map((i) => level(at(layer, ch, 2 * r + (i >> 1), 2 * q + (i & 1)), 0, hi, N));
    const flat = Math.max(...lv) - Math.min(...lv) < LOOK.flat;
    m[(ch * h + 2 * r + (p >> 1)) * w + 2 * q + (p & 1)] = flat ? 2 : 1;
  }
  keptCache[layer] = { D, m };
  return m;
}

// Frames on a grid's overlay: the inspected cell (green) and its linked window or pooled cell.
function frames(canvas, boxes) {
  const over = canvas.nextElementSibling, g = canvas._g, ctx = over.getContext("2d"), ratio = dpr();
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, g.width, g.height);
  for (const { channel, row, col, size = 1, colour } of boxes) {
    const t = channel - (g.first || 0);
    if (t < 0 || t >= g.channels) continue;
    const [ox, oy] = origin(g, t);
    ctx.strokeStyle = colour;
    ctx.lineWidth = Math.max(1.5, Math.min(2, g.cell / 2));
    ctx.strokeRect(ox + col * g.cell - 1, oy + row * g.cell - 1, size * g.cell + 2, size * g.cell + 2);
  }
}

const GREEN = `rgb(${LOOK.highlight})`, CYAN = `rgb(${LOOK.kept})`;  // cnn/render.py's frame and dot colours
function linkedBoxes(cell, layer) {  // what to frame on `layer`'s grid for the inspected cell
  const [l, c, r, q] = cell;
  if (l === layer) return [{ channel: c, row: r, col: q, colour: GREEN }];
  if (BEFORE[l] === layer) return [{ channel: c, row: 2 * r, col: 2 * q, size: 2, colour: CYAN }];
  if (AFTER[l] === layer) return [{ channel: c, row: r >> 1, col: q >> 1, colour: CYAN }];
  return [];
}

// The input as two 28x28 bitmaps made once a drawing (as is, and dimmed), so a pointer's picture is
// two scaled copies and two frames, not 784 rectangles.
const inputCache = { D: null };
function inputBitmaps() {
  if (inputCache.D === D) return inputCache;
  const make = (k) => {
    const c = document.createElement("canvas");
    c.width = c.height = 28;
    const g = c.getContext("2d"), img = g.createImageData(28, 28);
    D.input.forEach((u, i) => { const v = Math.round(u * k); img.data.set([v, v, v, 255], 4 * i); });
    g.putImageData(img, 0, 0);
    return c;
  };
  Object.assign(inputCache, { D, bright: make(1), dim: make(0.35) });
  return inputCache;
}

function drawInput(canvas, box = null, inner = null) {  // the 28x28 input; outside `box` dimmed
  const cell = canvas._cell || 8, ratio = dpr(), side = 28 * cell, size = Math.round(side * ratio);  // _cell: the focus view's
  if (canvas.width !== size || canvas.style.width !== side + "px") {
    canvas.width = canvas.height = size; canvas.style.width = canvas.style.height = side + "px";
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, side, side);
  if (!D) return;
  const { bright, dim } = inputBitmaps();
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(box ? dim : bright, 0, 0, side, side);
  if (box) {
    const [t, l, b, r] = box;
    ctx.drawImage(bright, l, t, r - l, b - t, l * cell, t * cell, (r - l) * cell, (b - t) * cell);
  }
  ctx.lineWidth = 2;
  for (const [b, colour] of [[box, GREEN], [inner, CYAN]]) {
    if (!b) continue;
    ctx.strokeStyle = colour;
    ctx.strokeRect(b[1] * cell + 1, b[0] * cell + 1, (b[3] - b[1]) * cell - 2, (b[2] - b[0]) * cell - 2);
  }
}

function drawEvidence(canvas) {  // answer's map | answer minus runner-up, over the faint input
  const cell = 8, side = 28, up = 4, ratio = dpr(), width = 2 * side * cell + GAP * 2;
  canvas.width = Math.round(width * ratio); canvas.height = Math.round(side * cell * ratio);
  canvas.style.width = width + "px"; canvas.style.height = side * cell + "px";
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, side * cell);
  const bar = canvas.parentElement.querySelector(".bar");
  if (!D) { bar.innerHTML = ""; return; }
  const [top, second] = D.v.ranked;
  const ev = (d) => D.evidence.subarray(d * 49, d * 49 + 49);
  const maps = [Array.from(ev(top)), Array.from(ev(top), (v, i) => v - ev(second)[i])];
  const hi = Math.max(...maps.flat().map(Math.abs)) || 1;
  maps.forEach((m, k) => {
    const ox = k * (side * cell + 2 * GAP);
    for (let r = 0; r < side; r++) for (let q = 0; q < side; q++) {
      const rgb = SIGNED[level(m[Math.floor(r / up) * 7 + Math.floor(q / up)], -hi, hi, N)];
      const faint = 1 - 0.45 * D.input[r * side + q] / 255;
      ctx.fillStyle = `rgb(${rgb.map((v) => Math.round(v * faint)).join(",")})`;
      ctx.fillRect(ox + q * cell, r * cell, cell, cell);
    }
  });
  colourBar(bar, SIGNED, -hi, hi);
}

// ------------------------------------------------------------------ "move it" (cnn/shift.py)
const LAYER_NAMES = { conv1: "③ conv1", pool1: "④ after pooling", conv2: "⑤ conv2", pool2: "⑥ after pooling" };
function moveHTML() {
  if (!D) return "";
  const m = D.v.move;
  if (!m) return "<p class='hint'>Move your drawing a pixel at a time with the arrows: the maps follow it, " +
    "and this says how much each layer's maps changed.</p>";
  const where = [m.dx ? `${Math.abs(m.dx)} px ${m.dx > 0 ? "right" : "left"}` : "",
                 m.dy ? `${Math.abs(m.dy)} px ${m.dy > 0 ? "down" : "up"}` : ""].filter(Boolean).join(", ");
  const lost = m.lost ? ` <span class="lost">${m.lost} inked pixel${m.lost === 1 ? "" : "s"} went out of the frame.</span>` : "";
  const rows = LAYERS.map((l) => {
    const v = m.similarity[l];
    return `<tr data-layer="${l}"><td>${LAYER_NAMES[l]}</td><td class="bar"><span style="width:${Math.max(0, v * 100).toFixed(0)}%"></span></td>` +
      `<td data-value="${v}">${v.toFixed(2)}</td></tr>`;
  }).join("");
  const pct = (p) => `${(100 * p).toFixed(1)} %`;
  const b = m.before, a = m.after;
  // a training snapshot has no calibration (cnn/replay.py): its percentages are a plain softmax
  const plain = D.v.calibrated === false;
  const sure = plain ? "(uncalibrated softmax)" : "sure";
  const answer = a.digit === b.digit
    ? `The network still reads <b>${a.digit}</b>: ${pct(b.p)} ${sure} unmoved, <span data-after>${pct(a.p)}</span> moved.`
    : `The answer changed: <b>${b.digit}</b> (${pct(b.p)}) unmoved, <b>${a.digit}</b> (${pct(a.p_own)}) moved; ` +
      `${b.digit} is now <span data-after>${pct(a.p)}</span>` + (plain ? " (uncalibrated softmax)." : ".");
  return `<p>Moved <b>${where}</b> (⟲ puts it back).${lost}</p>` +
    `<table class="similarity"><caption>How similar each layer's maps are to the unmoved drawing's ` +
    `(cosine similarity, same positions; 1 = unchanged)</caption>${rows}</table><p>${answer}</p>` +
    "<p class='why'>Pooling keeps the strongest response in each 2×2 window, so a feature moved by a pixel " +
    "often stays in its window: the maps after pooling change less than the ones before. It does not make " +
    "the network blind to position: moved a few pixels more, even the pooled maps change, and so can the answer.</p>";
}

// ------------------------------------------------------------------ the page
const grids = () => Array.from(element.querySelectorAll(".maps canvas.grid"));
const netInput = () => document.querySelector("#network-input canvas");

function draw() {
  const widths = {};
  for (const canvas of grids()) {
    const layer = canvas.dataset.layer, before = BEFORE[layer] || layer;
    const fig = canvas.closest("figure"), row = fig.parentElement;
    const avail = Math.min(...Array.from(row.children, (f) => f.clientWidth)) - 2;
    const cols = LOOK.tile_cols[layer], [, , w] = SHAPES[before];
    const ratio = dpr();
    widths[before] ||= Math.max(1 / ratio, Math.floor((avail - (cols - 1) * GAP) / (cols * w) * ratio) / ratio);
    const cell = layer === before ? widths[before] : 2 * widths[before];  // pooled tiles line up
    const g = layout(canvas, layer, cell, cols, SHAPES[layer][0]);
    paint(canvas, g);
    canvas.setAttribute("aria-label", `${LOOK.titles[layer]}: ${SHAPES[layer][0]} maps of ${SHAPES[layer][1]}×${SHAPES[layer][2]}.` +
      (D ? " Arrow keys move the inspected cell, Page Up and Page Down change the map, Enter keeps it." : " Draw a digit first."));
    const bar = fig.querySelector(".bar");
    if (D) colourBar(bar, SCALE, 0, D.hi[layer]); else bar.innerHTML = "";
  }
  const input = netInput();
  if (input) drawInput(input);
  drawEvidence($("canvas.evidence"));
  $("#evidence-text").innerHTML = D ? D.v.words : "";
  const info = document.querySelector("#move-info .move-info");
  if (info) info.innerHTML = moveHTML();
  for (const c of element.querySelectorAll(".maps .grid-block")) c.classList.toggle("empty", !D);
  lastShown = null;  // the grids were repainted: their frames go back on
  if (focused && D) openFocus(...focused, false);
  else inspect(null);
}

// The inspector: `cell` ([layer, c, r, q]) or, with none, the pinned cell or the default one.
function inspect(cell) {
  const boxes = [...element.querySelectorAll(".inspector"), FOCUS.querySelector(".inspector")];
  if (!D) {
    shown = null; lastShown = null;
    for (const b of boxes) b.innerHTML = "<p class='hint'>Draw a digit first: then point at any cell of the maps to inspect it.</p>";
    drawInput($("canvas.field"));
    grids().forEach((g) => g._g && frames(g, []));
    return;
  }
  const isDefault = !cell && !pinned;
  cell = cell || pinned || D.v.default;
  const key = cell.join(",") + (isDefault ? " default" : "") + (focused ? " focus" : "");
  if (key === lastShown && lastDrawn === D) return;  // the pointer moved inside the same cell
  lastShown = key; lastDrawn = D;
  shown = cell;
  const d = details(...cell);
  const html = inspectorHTML(d, isDefault);
  // The page's inspector always; the focus view's only while it is open.
  const open = focused !== null;
  $("#inspector").innerHTML = html;
  if (P) drawPatches($("#inspector"));
  if (open) { FOCUS.querySelector(".inspector").innerHTML = html; if (P) drawPatches(FOCUS.querySelector(".inspector")); }
  for (const canvas of open ? [$("canvas.field"), inFocusView("canvas.field")] : [$("canvas.field")])
    drawInput(canvas, d.receptive_field, d.kept_receptive_field);
  for (const canvas of open ? [...grids(), ...FOCUS.querySelectorAll("canvas.grid")] : grids())
    if (canvas._g) frames(canvas, linkedBoxes(cell, canvas._g.layer));
  host.dataset.shown = cell.join(",");
}

function pin(cell) {
  pinned = cell;
  host.dataset.pinned = cell ? cell.join("-") : "";  // the link's `cell` parameter
  inspect(cell);
}

// Which cell is under (x, y) (CSS px inside the canvas); a gutter or a number band gives the
// nearest cell of the nearest map, so a tap that misses by a little still means something.
function cellAt(canvas, x, y) {
  const g = canvas._g;
  if (!g || !D) return null;
  const tw = g.w * g.cell + g.gap, th = g.h * g.cell + g.label + g.gap;
  const tc = Math.min(g.tileCols - 1, Math.max(0, Math.floor((x + g.gap / 2) / tw)));
  const tr = Math.max(0, Math.floor((y + g.gap / 2) / th));
  const t = Math.min(g.channels - 1, tr * g.tileCols + tc);
  const [ox, oy] = origin(g, t);
  const clamp = (v, n) => Math.min(n - 1, Math.max(0, v));
  return [g.layer, (g.first || 0) + t, clamp(Math.floor((y - oy) / g.cell), g.h), clamp(Math.floor((x - ox) / g.cell), g.w)];
}
const point = (canvas, e) => {
  const r = canvas.getBoundingClientRect();
  return cellAt(canvas, e.clientX - r.left, e.clientY - r.top);
};

function move(canvas, cell, key) {  // arrow keys within a map, Page Up/Down across maps
  const [layer, c, r, q] = cell, [n, h, w] = SHAPES[layer];
  const step = { ArrowLeft: [0, 0, -1], ArrowRight: [0, 0, 1], ArrowUp: [0, -1, 0], ArrowDown: [0, 1, 0],
                 PageUp: [-1, 0, 0], PageDown: [1, 0, 0] }[key];
  if (!step) return null;
  const clamp = (v, m) => Math.min(m - 1, Math.max(0, v));
  const g = canvas._g, lo = g.first || 0, hi = lo + g.channels;
  return [layer, Math.min(hi - 1, Math.max(lo, clamp(c + step[0], n))), clamp(r + step[1], h), clamp(q + step[2], w)];
}

function wire(canvas, inFocus = false) {
  // A mouse hovering: Chromium holds `pointermove` until the next frame (up to 16.7 ms);
  // `pointerrawupdate` (where there is one) comes as the mouse moves, so the inspector is
  // already updated when that frame is drawn.
  const RAW = "onpointerrawupdate" in window;
  const hover = (e) => { hovering = canvas; inspect(point(canvas, e)); };
  if (RAW) canvas.addEventListener("pointerrawupdate", (e) => {
    if (D && e.pointerType === "mouse" && e.buttons === 0 && !inFocus) hover(e);
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!D || (e.pointerType === "touch" && !inFocus)) return;
    if (e.pointerType === "mouse" && e.buttons === 0 && !inFocus) { if (!RAW) hover(e); return; }
    if (inFocus && (e.pointerType !== "mouse" || e.buttons)) pin(point(canvas, e));  // a finger sliding
    else if (inFocus) hover(e);  // a mouse over the large map: as over the page's grids
  });
  // Leaving a grid goes back to the kept cell, unless the mouse is already over another grid
  // (its raw update can come before this grid's leave).
  canvas.addEventListener("pointerleave", (e) => {
    if (D && e.pointerType === "mouse" && hovering === canvas) { hovering = null; inspect(null); }
  });
  canvas.addEventListener("pointerdown", (e) => {
    if (!D) return;
    if (inFocus) { canvas.setPointerCapture?.(e.pointerId); canvas.releasePointerCapture?.(e.pointerId); pin(point(canvas, e)); }
  });
  canvas.addEventListener("click", (e) => {
    if (!D || inFocus) return;
    const cell = point(canvas, e);
    if (!cell) return;
    if (e.pointerType === "touch" || (e.pointerType !== "mouse" && matchMedia("(pointer: coarse)").matches)) {
      pin(cell); openFocus(cell[0], cell[1], true, canvas);  // a tap: that map, large
    } else pin(cell);
  });
  canvas.addEventListener("dblclick", (e) => {  // a mouse: a double-click opens the map large
    if (!D || inFocus) return;
    const cell = point(canvas, e);
    if (cell) { e.preventDefault(); pin(cell); openFocus(cell[0], cell[1], true, canvas); }
  });
  canvas.addEventListener("focus", () => {
    if (!D) return;
    const layer = canvas._g.layer;
    if (!shown || shown[0] !== layer) inspect([layer, canvas._g.first || 0, 0, 0]);
  });
  canvas.addEventListener("keydown", (e) => {
    if (!D || !shown) return;
    // Keys the grid uses stop here: the sketchpad has page-wide shortcuts of its own.
    const used = () => { e.preventDefault(); e.stopPropagation(); };
    if (e.key === "Enter" || e.key === " ") { pin(shown); used(); return; }
    if (e.key === "Escape" && focused) { closeFocus(); used(); return; }
    if (inFocus && (e.key === "PageUp" || e.key === "PageDown")) {  // the focus view: the previous or next map
      step(e.key === "PageUp" ? -1 : 1); used(); return;
    }
    if ((e.key === "f" || e.key === "F") && !inFocus && !e.ctrlKey && !e.metaKey && !e.altKey) {  // F: this map, large
      const cell = shown[0] === canvas._g.layer ? shown : [canvas._g.layer, 0, 0, 0];
      openFocus(cell[0], cell[1], true, canvas); used(); return;
    }
    const next = shown[0] === canvas._g.layer ? move(canvas, shown, e.key) : null;
    if (next) { used(); inspect(next); if (inFocus) pin(next); }
  });
}

// ------------------------------------------------------------------ the focus view
// One map as large as the screen allows with the whole map in view: opened by a tap (a phone), a
// double-click or F (a mouse, a keyboard). A phone: the map across the width, its pooled partner
// and the field under it, then the inspector; a wide screen (900 px and up, maps.css): the map on
// the left, the rest in a column on the right. Either way no larger than the screen's height.
let opener = null;  // the page's grid it was opened from: it takes the keys back on close
function openFocus(layer, channel, fresh = true, from = null) {
  const box = FOCUS;
  focused = [layer, channel];
  if (from) opener = from;
  if (box.hidden) { box.hidden = false; box.scrollTop = 0; }  // opened: the map at the top
  const partner = AFTER[layer] || BEFORE[layer];
  const wide = window.innerWidth >= 900;
  box.classList.toggle("wide", wide);  // maps.css
  const head = inFocusView(".focus-head"), right = inFocusView(".focus-right");
  const width = Math.min(box.clientWidth || window.innerWidth, window.innerWidth) - 16;
  const height = window.innerHeight - 16 - head.offsetHeight - 6;
  const room = Math.min(wide ? width - right.offsetWidth - 16 : width, height);  // the whole map on screen
  const [, h, w] = SHAPES[layer], [, , pw] = SHAPES[partner];
  const ratio = dpr(), fit = (n, space) => Math.max(1 / ratio, Math.floor(space / n * ratio) / ratio);
  const main = inFocusView(".focus-main canvas.grid"), side = inFocusView(".focus-partner canvas.grid");
  const g = layout(main, layer, fit(w, room), 1, 1, 0, 0);
  g.first = channel;
  main.dataset.channel = channel;
  paint(main, g, channel);
  const sideRoom = wide ? right.clientWidth : width;  // the partner and the field share this row
  const sg = layout(side, partner, fit(pw, Math.min(sideRoom / 2 - 8, 200)), 1, 1, 0, 0);
  sg.first = channel;
  side.dataset.channel = channel;
  paint(side, sg, channel);
  // the field: whole input pixels, 8 px at most, in what the partner leaves of the row
  inFocusView("canvas.field")._cell = Math.max(2, Math.min(8, Math.floor((sideRoom - sg.width - 8) / 28)));
  const title = `${LOOK.titles[layer]}, map ${channel} of ${SHAPES[layer][0]}`;
  inFocusView(".focus-title").textContent = title;
  const keys = " Arrow keys move the inspected cell, Page Up and Page Down change the map, Enter keeps it, Escape closes.";
  main.setAttribute("aria-label", `${title}, large: ${h}×${w} cells.${keys}`);
  side.setAttribute("aria-label", `${LOOK.titles[partner]}, map ${channel}: ${SHAPES[partner][1]}×${pw} cells, ` +
    `${AFTER[layer] ? "what pooling made of it" : "the map it pools"}.${keys}`);
  if (fresh) main.focus({ preventScroll: true });
  lastShown = null;  // its canvases were repainted
  inspect(pinned && pinned[0] === layer && pinned[1] === channel ? pinned
    : [layer, channel, Math.floor(h / 2), Math.floor(w / 2)]);
}
function closeFocus() {
  const was = focused;
  focused = null;
  FOCUS.hidden = true;
  if (was && opener && opener.isConnected) opener.focus({ preventScroll: true });
  opener = null;
}

// ------------------------------------------------------------------ start
for (const canvas of element.querySelectorAll(".maps canvas.grid")) wire(canvas);
for (const canvas of FOCUS.querySelectorAll("canvas.grid")) wire(canvas, true);
// The focus view's buttons act on a finger's lift as well as on click: after a finger slid across
// the map, Chromium sends no click for the next tap (seen in tests/test_browser.py).
function button(sel, act) {
  let lifted = 0;
  const el = inFocusView(sel);
  el.addEventListener("pointerup", (e) => { if (e.pointerType === "touch") { lifted = performance.now(); act(); } });
  el.addEventListener("click", () => { if (performance.now() - lifted > 600) act(); });
}
const step = (k) => focused && openFocus(focused[0], (focused[1] + k + SHAPES[focused[0]][0]) % SHAPES[focused[0]][0]);
button(".focus-close", closeFocus);
// Escape closes the view wherever the keys are (its inspector, a button, the page behind it).
document.addEventListener("keydown", (e) => { if (e.key === "Escape" && focused) { e.preventDefault(); closeFocus(); } });
button(".focus-prev", () => step(-1));
button(".focus-next", () => step(1));

let version = 0;
async function show(value) {
  const mine = ++version;
  if (value && value.weights) WEIGHTS[value.network] = unpackWeights(value.weights);
  if (value && typeof value === "object" && "patches" in value) PATCHES[value.network] = unpackPatches(value.patches);
  const next = value && typeof value === "object" && value.blob ? await decode(value) : null;
  if (mine !== version) return;  // a newer drawing arrived while this one was inflating
  D = next;
  W = (D && WEIGHTS[D.v.network]) || WEIGHTS.shipped;
  P = PATCHES[(D && D.v.network) || "shipped"] || null;
  host.dataset.network = (D && D.v.network) || (value && value.network) || "shipped";
  if (!D) { pinned = null; host.dataset.pinned = ""; closeFocus(); }
  else if (D.v.pinned) pin(D.v.pinned);
  draw();
  host.dataset.drawn = String(mine);
  host.dataset.drawnDigit = D ? (D.v.not_a_digit ? "" : String(D.v.digit)) : "none";
}
watch("value", () => show(props.value));
let lastWidth = 0;
new ResizeObserver(() => {
  const w = element.clientWidth;
  if (w !== lastWidth) { lastWidth = w; draw(); }
}).observe(element);
// The desktop's inspector column is sticky beside the maps (maps.css). Near the end of the maps'
// column their end would push it up, its top (the green-box picture) and then its heading off the
// screen, while the maps still show: instead it gets shorter (its numbers scroll inside it), down
// to its heading, and only then leaves with the maps. Never taller than the maps' column either,
// so the page's height never changes as it scrolls.
const column = $(".inspector-col"), mapsMain = $(".maps-main");
let fitting = 0;
function fitColumn() {
  fitting = 0;
  if (getComputedStyle(column).position !== "sticky") { column.style.maxHeight = ""; return; }
  const head = column.querySelector("#inspector h3");
  const floor = head ? head.getBoundingClientRect().bottom - column.getBoundingClientRect().top + column.scrollTop + 8 : 0;
  const end = mapsMain.getBoundingClientRect().bottom;
  const most = Math.min(window.innerHeight - 16, mapsMain.offsetHeight);
  column.style.maxHeight = Math.max(Math.min(most, floor), Math.min(most, end - 8)) + "px";
}
const fitSoon = () => { fitting ||= requestAnimationFrame(fitColumn); };
addEventListener("scroll", fitSoon, { passive: true });
addEventListener("resize", () => { fitSoon(); if (focused && D) openFocus(...focused, false); });
new ResizeObserver(fitSoon).observe(mapsMain);
fitSoon();
// The network input sits in another column (app.py): draw it once it exists. Focused, its arrow
// keys move the drawing (they press the move buttons under it: cnn/shift.py), Escape puts it back;
// on a touch screen a sideways swipe across it moves it one pixel left or right (an upward or
// downward one scrolls the page, as anywhere else: up and down are the buttons).
const MOVE_KEYS = { ArrowLeft: "left", ArrowRight: "right", ArrowUp: "up", ArrowDown: "down", Escape: "back" };
function press(move) {  // true when a drawing is there to move and the button was pressed
  const button = document.querySelector(`#move-${move}`);
  const target = button && (button.tagName === "BUTTON" ? button : button.querySelector("button"));
  if (target && D) target.click();
  return Boolean(target && D);
}
function wireInput(canvas) {
  if (canvas.dataset.keys) return;
  canvas.dataset.keys = "move";
  canvas.tabIndex = 0;
  canvas.setAttribute("aria-label", "What the network receives: the 28×28 input. The arrow keys move it one pixel " +
    "(a sideways swipe left or right), Escape puts it back.");
  canvas.addEventListener("keydown", (e) => {
    if (MOVE_KEYS[e.key] && press(MOVE_KEYS[e.key])) { e.preventDefault(); e.stopPropagation(); }
  });
  // The first finger down (a second one is ignored); sideways pans are the page's to handle here
  // (page.css: touch-action: pan-y), an upward or downward one the browser's, which cancels it.
  let start = null;
  canvas.addEventListener("pointerdown", (e) => {
    if (e.pointerType === "touch" && !start) start = { id: e.pointerId, x: e.clientX, y: e.clientY };
  });
  canvas.addEventListener("pointercancel", (e) => { if (start && e.pointerId === start.id) start = null; });
  canvas.addEventListener("pointerup", (e) => {
    if (!start || e.pointerId !== start.id) return;
    const dx = e.clientX - start.x, dy = e.clientY - start.y;
    start = null;
    if (Math.abs(dx) >= 20 && Math.abs(dx) > Math.abs(dy)) press(dx > 0 ? "right" : "left");  // else a tap
  });
}
const waitInput = () => (netInput() ? (wireInput(netInput()), draw()) : setTimeout(waitInput, 100));
show(props.value).then(waitInput);
