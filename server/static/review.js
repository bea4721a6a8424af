// The review page's interactivity (vendored; no build step, no CDN). The page works without
// it: pictures, cells, tables and forms are all server-rendered.
"use strict";
(function () {
  function $(id) { return document.getElementById(id); }

  var printBtn = $("print");
  if (printBtn) { printBtn.addEventListener("click", function () { window.print(); }); }

  var viewer = $("viewer");
  if (!viewer) { return; }
  var stage = $("stage");
  var imgA = $("img-a"), imgB = $("img-b"), imgO = $("img-overlay");
  var cellsA = $("cells-a"), cellsB = $("cells-b");
  var split = $("split"), overlay = $("overlay-toggle"), rot = $("rot"), rotOut = $("rot-out");
  var az = $("azimuth"), azOut = $("az-out"), shade = $("shade-toggle");
  var cellsToggle = $("cells-toggle"), bcells = $("bcells-toggle");
  var a = viewer.getAttribute("data-a"), b = viewer.getAttribute("data-b");

  function src(view, extra) {
    var q = new URLSearchParams({ a: a, b: b, view: view });
    if (extra) { Object.keys(extra).forEach(function (k) { q.set(k, extra[k]); }); }
    return "/render.png?" + q.toString();
  }

  // split view: B is drawn over A and clipped to the right of the split line
  function applySplit() {
    var p = Number(split.value);
    imgB.style.clipPath = "inset(0 0 0 " + p + "%)";
    $("split-line").style.left = p + "%";
  }
  split.addEventListener("input", applySplit);
  applySplit();

  function refresh() {
    var shaded = shade && shade.checked;
    var extra = { rot: rot.value };
    if (shaded) { extra.az = az.value; }
    imgA.src = shaded ? src("shaded_a", { az: az.value }) : src("a");
    imgB.src = src(shaded ? "shaded_b" : "b", extra);
    imgO.src = src("overlay", { rot: rot.value });
  }
  var timer = null;
  function later() { if (timer) { clearTimeout(timer); } timer = setTimeout(refresh, 200); }

  rot.addEventListener("input", function () {
    var v = Number(rot.value);
    rotOut.textContent = (v >= 0 ? "+" : "") + v.toFixed(2) + "\u00b0";
    later();
  });
  if (az) {
    az.addEventListener("input", function () { azOut.textContent = az.value + "\u00b0"; later(); });
    shade.addEventListener("change", refresh);
  }

  overlay.addEventListener("change", function () {
    var on = overlay.checked;
    imgO.classList.toggle("hidden", !on);
    imgA.classList.toggle("hidden", on);
    imgB.classList.toggle("hidden", on);
    $("split-line").classList.toggle("hidden", on);
    split.disabled = on;
  });
  cellsToggle.addEventListener("change", function () {
    cellsA.classList.toggle("hidden", !cellsToggle.checked);
  });
  bcells.addEventListener("change", function () {
    cellsB.classList.toggle("hidden", !bcells.checked);
  });

  // zoom and pan: one transform on the stage (pictures and cell outlines move together)
  var zoom = 1, tx = 0, ty = 0, drag = null;
  function applyZoom() {
    stage.style.transform = "translate(" + tx + "px," + ty + "px) scale(" + zoom + ")";
  }
  function zoomBy(f) { zoom = Math.min(16, Math.max(1, zoom * f)); if (zoom === 1) { tx = ty = 0; } applyZoom(); }
  $("zoom-in").addEventListener("click", function () { zoomBy(1.5); });
  $("zoom-out").addEventListener("click", function () { zoomBy(1 / 1.5); });
  $("zoom-reset").addEventListener("click", function () { zoom = 1; tx = ty = 0; applyZoom(); });
  viewer.addEventListener("wheel", function (e) {
    e.preventDefault();
    zoomBy(e.deltaY < 0 ? 1.2 : 1 / 1.2);
  }, { passive: false });
  viewer.addEventListener("pointerdown", function (e) {
    if (zoom === 1) { return; }
    drag = { x: e.clientX - tx, y: e.clientY - ty };
    viewer.setPointerCapture(e.pointerId);
  });
  viewer.addEventListener("pointermove", function (e) {
    if (!drag) { return; }
    tx = e.clientX - drag.x; ty = e.clientY - drag.y; applyZoom();
  });
  viewer.addEventListener("pointerup", function () { drag = null; });
})();
