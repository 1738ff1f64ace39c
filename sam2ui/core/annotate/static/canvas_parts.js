// The first part of sam2ui's canvas module (canvas.js follows it; `canvas_js()` in
// sam2ui/core/annotate/canvas.py joins the two): drawing helpers, mask layers from run
// lengths, the legend, the candidate masks and the timeline. Plain functions of what they are
// given; the state they read is the one canvas.js's mount() keeps.

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

function rgb(c, a = 1) {
  return `rgba(${c[0]}, ${c[1]}, ${c[2]}, ${a})`;
}

// Run lengths from base64 varints (7 bits a byte, low first; a set high bit: more bytes).
function unpackRuns(text) {
  const raw = atob(text);
  const runs = [];
  let value = 0, shift = 0;
  for (let i = 0; i < raw.length; i++) {
    const b = raw.charCodeAt(i);
    value += (b & 0x7f) * 2 ** shift;
    if (b & 0x80) shift += 7;
    else { runs.push(value); value = 0; shift = 0; }
  }
  return runs;
}

// A canvas of the mask in its colour: runs alternate off / on pixels, row-major.
function maskLayer(runs, w, h, color) {
  const layer = el("canvas");
  layer.width = w;
  layer.height = h;
  const ctx = layer.getContext("2d");
  const data = ctx.createImageData(w, h);
  const px = new Uint32Array(data.data.buffer);
  const value = ((255 << 24) | (color[2] << 16) | (color[1] << 8) | color[0]) >>> 0;
  let at = 0;
  let on = false;
  for (const run of runs) {
    if (on && run > 0) px.fill(value, at, at + run);
    at += run;
    on = !on;
  }
  ctx.putImageData(data, 0, 0);
  return layer;
}

// The mask's border drawn at w x h, `t` pixels wide: the scaled layer minus its erosion.
function outlineOf(layer, w, h, t) {
  const scaled = el("canvas");
  scaled.width = w;
  scaled.height = h;
  scaled.getContext("2d").drawImage(layer, 0, 0, w, h);
  const eroded = el("canvas");
  eroded.width = w;
  eroded.height = h;
  const e = eroded.getContext("2d");
  e.drawImage(scaled, 0, 0);
  e.globalCompositeOperation = "destination-in";
  for (const [dx, dy] of [[t, 0], [-t, 0], [0, t], [0, -t]]) e.drawImage(scaled, dx, dy);
  const o = scaled.getContext("2d");
  o.globalCompositeOperation = "destination-out";
  o.drawImage(eroded, 0, 0);
  return scaled;
}

// The object legend: a row per object (colour, "<id>: name", the frames holding its prompts,
// hide and remove), click a row to make it active, double-click a name to rename, and "+ Add".
function legendView(legend, st, prefix, send, redraw) {
  const rows = st.objects.map((o) => {
    const swatch = el("span", { class: "s2-swatch" });
    swatch.style.background = rgb(o.color);
    const name = el("span", { class: "s2-name", text: `${o.id}: ${o.name}` });
    name.title = "Double-click to rename";
    const where = o.frames && o.frames.length ? `prompts on frames ${o.frames.join(", ")}` : "";
    const hidden = st.hidden.has(o.id);
    const hide = el("button", {
      type: "button", class: "s2-hide", title: hidden ? "Show" : "Hide", text: hidden ? "◌" : "◉",
    });
    const remove = el("button", { type: "button", class: "s2-remove", title: "Remove", text: "✕" });
    const row = el("div", { class: "s2-row", "data-obj-id": String(o.id) }, swatch, name,
      el("small", { text: where }), hide, remove);
    if (o.id === st.active) row.classList.add("s2-active");
    row.addEventListener("click", () => { if (o.id !== st.active) send("select", { obj: o.id }); });
    name.addEventListener("dblclick", () => {
      const text = window.prompt(`Name of object ${o.id}`, o.name);
      if (text && text.trim()) send("rename", { obj: o.id, name: text.trim() });
    });
    hide.addEventListener("click", (ev) => {
      ev.stopPropagation();
      if (st.hidden.has(o.id)) st.hidden.delete(o.id);
      else st.hidden.add(o.id);
      redraw();
    });
    remove.addEventListener("click", (ev) => {
      ev.stopPropagation();
      send("remove", { obj: o.id });
    });
    return row;
  });
  if (!rows.length) rows.push(el("em", { text: "No objects yet: click on the picture." }));
  const add = el("button", { type: "button", id: `${prefix}-add`, text: "+ Add object" });
  add.addEventListener("click", () => send("add", {}));
  legend.replaceChildren(...rows, add);
}

// The active object's candidate masks (after a single click): thumbnails, pick one.
function candidatesView(cands, list, send) {
  cands.hidden = !list.length;
  const items = list.map((c) => {
    const img = el("img", { src: c.src, alt: `candidate ${c.index}` });
    const button = el("button", { type: "button", title: "Show this mask" }, img,
      el("span", { text: `${c.index}: ${c.score.toFixed(3)}${c.shown ? " (shown)" : ""}` }));
    if (c.shown) button.classList.add("s2-active");
    button.addEventListener("click", () => { if (!c.shown) send("choose", { index: c.index }); });
    return button;
  });
  cands.replaceChildren(el("div", { text: "Candidate masks: pick one" }), ...items);
}

const LANE_PX = 14;
const RULER_PX = 16;

// The video timeline: a ruler, a lane per object (shaded where it has masks, a mark on each
// frame with prompts), propagation progress along the top and the playhead at `shown`.
function timelineView(tl, timeline, st, shown) {
  const dpr = window.devicePixelRatio || 1;
  const cssW = timeline.clientWidth || 600;
  const lanes = Math.max(st.objects.length, 1);
  const cssH = RULER_PX + lanes * LANE_PX + 2;
  tl.width = Math.round(cssW * dpr);
  tl.height = Math.round(cssH * dpr);
  tl.style.height = `${cssH}px`;
  const ctx = tl.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = "#f3f4f6";
  ctx.fillRect(0, 0, cssW, cssH);
  const n = Math.max(st.numFrames, 1);
  const fx = (f) => (f / n) * cssW;
  const fw = Math.max(cssW / n, 1);
  ctx.fillStyle = "#9ca3af";
  const every = Math.max(1, Math.ceil(n / 20));
  for (let f = 0; f < n; f += every) ctx.fillRect(fx(f), RULER_PX - 5, 1, 5);
  st.objects.forEach((o, i) => {
    const y = RULER_PX + i * LANE_PX;
    ctx.fillStyle = i % 2 ? "#e5e7eb" : "#eef0f3";
    ctx.fillRect(0, y, cssW, LANE_PX);
    ctx.fillStyle = rgb(o.color, 0.6);
    for (const [a, b] of st.lanes[String(o.id)] || []) {
      ctx.fillRect(fx(a), y + 2, fx(b + 1) - fx(a), LANE_PX - 4);
    }
    ctx.fillStyle = "#111827";
    for (const f of o.frames || []) {
      const cx = fx(f) + fw / 2;
      ctx.beginPath();
      ctx.moveTo(cx, y + 2);
      ctx.lineTo(cx + 4, y + LANE_PX / 2);
      ctx.lineTo(cx, y + LANE_PX - 2);
      ctx.lineTo(cx - 4, y + LANE_PX / 2);
      ctx.fill();
    }
  });
  if (st.progress && st.progress.total) {
    ctx.fillStyle = "#3b82f6";
    ctx.fillRect(0, 0, (st.progress.done / st.progress.total) * cssW, 3);
  }
  ctx.fillStyle = "#dc2626";
  ctx.fillRect(fx(shown) + fw / 2 - 1, 0, 2, cssH);
  timeline.dataset.frame = String(shown);
  // For tests and scripts: "id:first-last,..." per object, as drawn.
  timeline.dataset.lanes = st.objects.map((o) => `${o.id}:` + (st.lanes[String(o.id)] || [])
    .map(([a, b]) => `${a}-${b}`).join(",")).join(" ");
}
