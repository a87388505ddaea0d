// The drawing pad in the browser (cnn/sketch.py: SKETCH_JS, run once when the page loads; Gradio's
// js steps are one function expression, so this file is one).
//  - Gradio 6.31's Sketchpad opens with no tool selected and an overlay saying "select the draw
//    tool to start", and goes back to that state after Clear: a visitor's first stroke would draw
//    nothing. Whenever that overlay shows in our pad, press the Brush button for the visitor (the
//    first tool: the pad has no upload sources and no crop). Each overlay is pressed at most once,
//    so this can never loop.
//  - Any press inside the pad (a stroke, a tool, Undo) starts a new drawing after a Clear: see
//    CLEARED_JS and STALE_JS in cnn/sketch.py.
//  - The pad says when it is narrow (data-narrow, under NARROW_PAD px): page.css then lays the
//    tool palette in the bottom border instead of over the drawing square's left edge.
() => {
  const pressed = new WeakSet();
  const arm = () => {
    const pad = document.getElementById("sketch");
    const overlay = pad && pad.querySelector(".empty.wrap");
    const brush = pad && pad.querySelector(".toolbar-wrap button");
    if (!overlay || !brush || pressed.has(overlay)) return;
    pressed.add(overlay);
    brush.click();
  };
  new MutationObserver(arm).observe(document.body, { childList: true, subtree: true });
  arm();
  // Capture phase, on the document: the pad's own nodes are re-rendered.
  document.addEventListener("pointerdown", (e) => {
    if (e.target instanceof Element && e.target.closest("#sketch")) window.cnnCleared = false;
  }, true);
  // Below this width the 400 px canvas, fitted with Gradio's 30 px border, starts under 45 px from
  // the pad's left edge: inside the palette's column (15-45 px).
  const NARROW_PAD = 490, pad = document.getElementById("sketch");
  const narrow = () => {
    const value = String(pad.clientWidth < NARROW_PAD);
    if (pad.dataset.narrow !== value) pad.dataset.narrow = value;
  };
  if (pad) { new ResizeObserver(narrow).observe(pad); narrow(); }
}
