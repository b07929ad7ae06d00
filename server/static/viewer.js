// Quire's document viewer (server/viewer.py renders the page; this draws PDFs with PDF.js, marks images' boxes,
// and scrolls to what is cited). It reads its data from the page's JSON block; no document text reaches the DOM
// except through textContent, and the page's CSP runs only this server's scripts.
const data = JSON.parse(document.getElementById("q-data").textContent || "{}");
const dark = (() => {
  try {
    const top = window.parent.document;
    if (top.body.classList.contains("dark") || top.documentElement.classList.contains("dark")) return true;
  } catch (e) { /* not framed by the app */ }
  return new URLSearchParams(location.search).get("theme") === "dark";
})();
if (dark) document.body.classList.add("q-dark");

const $ = (id) => document.getElementById(id);

function mark(parent, box, scale, cls) {
  const el = document.createElement("div");
  el.className = cls;
  el.style.left = `${box[0] * scale - 2}px`;
  el.style.top = `${box[1] * scale - 2}px`;
  el.style.width = `${(box[2] - box[0]) * scale + 4}px`;
  el.style.height = `${(box[3] - box[1]) * scale + 4}px`;
  parent.appendChild(el);
  return el;
}

async function showPdf() {
  const pdfjs = await import("/viewer/static/pdf.min.mjs");
  pdfjs.GlobalWorkerOptions.workerSrc = "/viewer/static/pdf.worker.min.mjs";
  const pdf = await pdfjs.getDocument({ url: data.file, isEvalSupported: false, enableXfa: false }).promise;
  const box = $("q-pages-box");
  const pages = [];
  for (let n = 1; n <= pdf.numPages; n++) pages.push({ n, page: await pdf.getPage(n), el: null, drawn: 0 });
  $("q-pages").textContent = `of ${pdf.numPages}`;
  $("q-page").max = String(pdf.numPages);
  const base = pages[0].page.getViewport({ scale: 1 }).width;
  let scale = Math.max(0.5, Math.min(2, (box.clientWidth - 24) / base));
  let fitted = scale;

  const observer = new IntersectionObserver((entries) => {
    for (const e of entries) if (e.isIntersecting) draw(pages[Number(e.target.dataset.page) - 1]);
  }, { rootMargin: "600px 0px" });

  async function draw(p) {
    if (p.drawn === scale) return;
    p.drawn = scale;
    const viewport = p.page.getViewport({ scale: scale * (window.devicePixelRatio || 1) });
    const canvas = document.createElement("canvas");
    canvas.width = Math.floor(viewport.width);
    canvas.height = Math.floor(viewport.height);
    canvas.className = "q-canvas";
    canvas.setAttribute("aria-hidden", "true");
    try {
      await p.page.render({ canvasContext: canvas.getContext("2d"), viewport }).promise;
    } catch (e) { p.drawn = 0; return; }
    if (p.drawn !== scale) return; // zoomed meanwhile
    const old = p.el.querySelector("canvas");
    if (old) old.replaceWith(canvas); else p.el.prepend(canvas);
  }

  function layout() {
    box.replaceChildren();
    let first = null;
    for (const p of pages) {
      const vp = p.page.getViewport({ scale });
      const el = document.createElement("div");
      el.className = "q-page";
      el.dataset.page = String(p.n);
      el.id = `q-page-${p.n}`;
      el.style.width = `${vp.width}px`;
      el.style.height = `${vp.height}px`;
      el.setAttribute("aria-label", `Page ${p.n}`);
      for (const b of data.boxes || []) {
        if (b.page !== p.n) continue;
        const m = mark(el, b.box, scale, b.quote ? "q-hl q-hl-quote" : "q-hl");
        if (!first) first = m;
      }
      p.el = el;
      p.drawn = 0;
      box.appendChild(el);
      observer.observe(el);
    }
    $("q-zoom").textContent = `${Math.round((scale / fitted) * 100)}%`;
    return first;
  }

  function current() {
    const top = box.getBoundingClientRect().top;
    let best = 1;
    for (const p of pages) if (p.el.getBoundingClientRect().top - top <= box.clientHeight / 2) best = p.n;
    return best;
  }
  function go(n) {
    n = Math.max(1, Math.min(pdf.numPages, n));
    pages[n - 1].el.scrollIntoView({ block: "start" });
    $("q-page").value = String(n);
  }
  function zoom(factor) {
    const at = current();
    scale = Math.max(0.3, Math.min(5, scale * factor));
    layout();
    go(at);
  }
  box.addEventListener("scroll", () => { $("q-page").value = String(current()); }, { passive: true });
  $("q-prev-page").addEventListener("click", () => go(current() - 1));
  $("q-next-page").addEventListener("click", () => go(current() + 1));
  $("q-page").addEventListener("change", (e) => go(Number(e.target.value) || 1));
  $("q-zoom-in").addEventListener("click", () => zoom(1.25));
  $("q-zoom-out").addEventListener("click", () => zoom(0.8));

  const first = layout();
  if (first) first.scrollIntoView({ block: "center" });
  else go(data.page || 1);
  $("q-page").value = String(data.page || current());
  document.body.dataset.ready = "1";
}

function showImage() {
  const img = $("q-image");
  const place = () => {
    const [w, h] = data.size || [img.naturalWidth, img.naturalHeight];
    let first = null;
    for (const b of data.boxes || []) {
      const el = document.createElement("div");
      el.className = b.cited ? "q-hl q-hl-quote" : "q-ocr";
      el.style.left = `${(b.box[0] / w) * 100}%`;
      el.style.top = `${(b.box[1] / h) * 100}%`;
      el.style.width = `${((b.box[2] - b.box[0]) / w) * 100}%`;
      el.style.height = `${((b.box[3] - b.box[1]) / h) * 100}%`;
      $("q-image-box").appendChild(el);
      if (b.cited && !first) first = el;
    }
    if (first) first.scrollIntoView({ block: "center" });
    document.body.dataset.ready = "1";
  };
  if (img.complete) place(); else img.addEventListener("load", place);
}

function showText() {
  const first = document.querySelector(".q-code .hll");
  if (first) first.scrollIntoView({ block: "center" });
  document.body.dataset.ready = "1";
}

// Esc inside the viewer stops the answer as it does in the app (the app's Stop button).
document.addEventListener("keydown", (e) => {
  if (e.key !== "Escape") return;
  try { window.parent.document.getElementById("quire-stop")?.click(); } catch (err) { /* not framed */ }
});

if (data.kind === "pdf") showPdf().catch((e) => {
  const p = document.createElement("p");
  p.className = "q-empty";
  p.textContent = `The PDF could not be drawn: ${e && e.message ? e.message : e}`;
  $("q-pages-box").replaceChildren(p);
  document.body.dataset.ready = "error";
});
else if (data.kind === "image") showImage();
else showText();
