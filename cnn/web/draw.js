// What every picture of the page is drawn with, shared by maps.js and filters.js. A gr.HTML
// js_on_load is one function body and cannot import, so app.py puts this file in front of each.
const dpr = () => window.devicePixelRatio || 1;
const bytes = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));  // base64 -> bytes
function fmt(v) {  // a colour-bar end: 3 significant digits (cnn/render.py's fmt)
  return v === 0 ? "0" : Math.abs(v) >= 1e-2 && Math.abs(v) < 1e4 ? String(Number(v.toPrecision(3))) : v.toExponential(1);
}
// cnn/render.py's levels(): [lo, hi] onto the n entries of a colour scale, rounded
const level = (v, lo, hi, n) => Math.min(n - 1, Math.max(0, Math.floor((v - lo) * (hi > lo ? (n - 1) / (hi - lo) : 0) + 0.5)));
function colourBar(bar, scale, lo, hi) {  // the scale as a CSS gradient, its ends in page text
  const stops = Array.from({ length: 9 }, (_, i) => `rgb(${scale[Math.round(i * (scale.length - 1) / 8)].join(",")})`);
  bar.innerHTML = `<span class="strip" style="background:linear-gradient(to right,${stops.join(",")})"></span>` +
    `<span class="ends"><span>${fmt(lo)}</span>${lo < 0 ? "<span>0</span>" : ""}<span>${fmt(hi)}</span></span>`;
}
