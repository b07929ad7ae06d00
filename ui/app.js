() => {
  // Quire's few browser behaviours (passed to Gradio as the page's js; no handler is inline in any markup):
  // a citation marker in an answer opens in the viewer beside the chat instead of leaving the page,
  // Enter asks, and Esc stops the answer (or the matrix run) as the Stop button does.
  const FRAME = "chat-viewer-frame";
  document.addEventListener("click", (event) => {
    const link = event.target.closest && event.target.closest("a[href]");
    if (!link || !link.closest("#chat")) return;
    const url = new URL(link.getAttribute("href"), location.href);
    if (url.origin !== location.origin || url.pathname !== "/viewer/") return;
    event.preventDefault();
    event.stopPropagation();
    const holder = document.getElementById("chat-viewer");
    if (!holder) return;
    let frame = document.getElementById(FRAME);
    if (!frame) {
      frame = document.createElement("iframe");
      frame.id = FRAME;
      frame.name = FRAME;
      frame.className = "quire-viewer";
      frame.title = "Document viewer";
      const empty = holder.querySelector(".quire-viewer-empty");
      (empty ? empty.parentElement : holder).replaceChildren(frame);
    }
    frame.src = url.pathname + url.search;
    const shown = holder.getBoundingClientRect();
    if (shown.bottom < 0 || shown.top > window.innerHeight) holder.scrollIntoView({ block: "start" });  // stacked
  }, true);
  // Enter in the question box asks through the Ask button (one event chain for both; Shift+Enter: a new line).
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
    if (!event.target.closest || !event.target.closest("#question")) return;
    event.preventDefault();
    event.stopPropagation();
    document.getElementById("quire-ask")?.click();
  }, true);
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || event.defaultPrevented) return;
    for (const id of ["quire-stop", "matrix-stop"]) {
      const button = document.getElementById(id);
      if (button && button.offsetParent !== null) { button.click(); return; }
    }
  });
}
