// What the page adds for screen readers, run once when the page loads (app.py:
// demo.load(js=...); Gradio's js steps are one function expression, so this file is one).
//  - each example button is named after its digit ("Load the MNIST test digit 7");
//  - the answer line is a polite live region, so a new answer is read out after a stroke;
//  - the move buttons (arrows) say what they do.
// (The maps and the filters are canvases named by the scripts that draw them: maps.js, filters.js.)
// Gradio re-renders parts of the page: a MutationObserver names the new ones. It watches
// element additions and `src` changes only, so its own `aria-label` writes never re-run it.
() => {
  const name = () => {
    for (const img of document.querySelectorAll("#examples img")) {
      const digit = /_digit_(\d)\./.exec(img.getAttribute("src") || "");
      const button = img.closest("button");
      const text = digit ? `Load the MNIST test digit ${digit[1]}` : "Load an MNIST test digit";
      if (button && button.getAttribute("aria-label") !== text) button.setAttribute("aria-label", text);
    }
    for (const [dir, text] of [["left", "Move the drawing one pixel left"], ["right", "Move the drawing one pixel right"],
                               ["up", "Move the drawing one pixel up"], ["down", "Move the drawing one pixel down"],
                               ["back", "Put the drawing back where it was drawn"]]) {
      const b = document.querySelector(`#move-${dir}`);
      const button = b && (b.tagName === "BUTTON" ? b : b.querySelector("button"));
      if (button && button.getAttribute("aria-label") !== text) button.setAttribute("aria-label", text);
    }
    const answer = document.getElementById("answer");
    if (answer && answer.getAttribute("aria-live") !== "polite") {
      answer.setAttribute("aria-live", "polite");
      answer.setAttribute("role", "status");
    }
  };
  new MutationObserver(name).observe(document.body,
    { childList: true, subtree: true, attributes: true, attributeFilter: ["src"] });
  name();
}
