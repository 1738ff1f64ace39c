// sam2ui's annotation canvas: one plain ES module (no bundler) for the web app and the widgets.
// `canvas_js()` (sam2ui/core/annotate/canvas.py) serves it as canvas_parts.js (drawing helpers,
// the legend, the candidates, the timeline), this file, then canvas_hosts.js (the web app's
// and the notebook's hosts).
//
// mount(root, host, options) builds the canvas inside `root`:
//   host.send(type, data)    an action for Python (see EVENTS below)
//   host.upload(file)        optional: sends a dropped or chosen file, resolves to its handle
//   options.kind             "image" or "video"; options.prefix names the element ids
// and returns {update(u), destroy()}: `update` applies what Python sent (described in
// sam2ui/core/annotate/canvas.py). The browser composites the masks over the picture, so an
// update carries only the masks that changed.
//
// Events sent to Python, with their data:
//   click {x, y, positive, frame}  box {x0, y0, x1, y1, frame}  remove_point {obj, index, frame}
//   select {obj}  add {}  remove {obj}  rename {obj, name}  undo {frame}  redo {}  choose {index}
//   seek {frame}  play {frame}  pause {}  propagate {direction, frame}  cancel {}
//   load {file}  sync {}  (sync asks for everything again, after a missed update)
// Coordinates are image pixels, x right and y down, pixel i's centre at i.

export const EVENTS = [
  "click", "box", "remove_point", "select", "add", "remove", "rename", "undo", "redo", "choose",
  "seek", "play", "pause", "propagate", "cancel", "load", "sync",
];
// The canvas the user touched last (kept on the window: each copy of this module shares it),
// which keys typed on the page itself go to.
const LAST = "__sam2uiLastCanvas";
const DRAG_PX = 5; // screen pixels a press must move to become a box
const MARK_PX = 6; // radius of a click marker on screen

export function mount(root, host, options = {}) {
  const kind = options.kind === "video" ? "video" : "image";
  const prefix = options.prefix || kind;
  const video = kind === "video";
  const st = {
    picture: null, masks: new Map(), objects: [], active: null, prompts: [], hidden: new Set(),
    opacity: 0.5, outline: true, frame: 0, numFrames: 0, fps: 30, lanes: {}, progress: null,
    seq: 0, playing: false, pending: null, press: null, wantFrame: null, canUndo: false,
    canRedo: false,
  };
  let chain = Promise.resolve();

  // ------------------------------------------------------------------ layout
  const file = el("input", { type: "file", accept: video ? "video/*" : "image/*" });
  file.hidden = true;
  const view = el("canvas", { class: "s2-view", "aria-label": `${kind} to annotate` });
  const hint = el("div", {
    class: "s2-hint",
    text: host.upload
      ? `Drop ${video ? "a video" : "an image"} here, or click to choose one`
      : `No ${video ? "video" : "image"} yet`,
  });
  const stage = el("div", { id: `${prefix}-canvas`, class: "s2-stage s2-empty" }, view, hint, file);
  const undoBtn = el("button", { type: "button", title: "Undo (Ctrl+Z)", text: "↶ Undo" });
  const redoBtn = el("button", { type: "button", title: "Redo (Ctrl+Shift+Z)", text: "↷ Redo" });
  const openBtn = el("button", { type: "button", text: video ? "Open video…" : "Open image…" });
  const opacity = el("input", { type: "range", min: "0", max: "100", value: "50" });
  const outline = el("input", { type: "checkbox" });
  outline.checked = true;
  const tools = el(
    "div", { class: "s2-tools" }, openBtn, undoBtn, redoBtn,
    el("label", {}, "opacity ", opacity), el("label", {}, outline, " outline"),
  );
  const main = el("div", { class: "s2-main" }, tools, stage);
  const legend = el("div", { id: `${prefix}-legend`, class: "s2-legend" });
  const status = el("div", { id: `${prefix}-status`, class: "s2-status", role: "status" });
  const cands = el("div", { id: `${prefix}-candidates`, class: "s2-cands" });
  cands.hidden = true;
  const side = el("div", { class: "s2-side" }, legend, cands, status);
  const shell = el("div", { class: "s2-root", tabindex: "0" }, main, side);
  let number = null, timeline = null, tl = null, playBtn = null, direction = null;
  if (video) {
    number = el("input", { id: `${prefix}-frame-number`, type: "number", min: "0", value: "0" });
    const count = el("span", { class: "s2-count", text: "/ 0" });
    playBtn = el("button", { type: "button", title: "Play / pause (space or K)", text: "▶ Play" });
    const back = el("button", { type: "button", title: "Previous frame (J)", text: "◀" });
    const next = el("button", { type: "button", title: "Next frame (L)", text: "▶" });
    direction = el("select", { "aria-label": "direction" });
    for (const d of ["both", "forward", "backward"]) direction.append(el("option", { text: d }));
    const propagate = el("button", { type: "button", class: "s2-primary", text: "Propagate" });
    const cancel = el("button", { type: "button", text: "Cancel" });
    const transport = el(
      "div", { class: "s2-tools" }, playBtn, back, next, el("label", {}, "frame ", number), count,
      direction, propagate, cancel,
    );
    tl = el("canvas");
    timeline = el("div", { id: `${prefix}-timeline`, class: "s2-timeline" }, tl);
    main.append(transport, timeline);
    back.addEventListener("click", () => step(-1));
    next.addEventListener("click", () => step(1));
    playBtn.addEventListener("click", togglePlay);
    propagate.addEventListener("click", () => {
      send("propagate", { direction: direction.value, frame: targetFrame() });
    });
    cancel.addEventListener("click", () => send("cancel", {}));
    number.addEventListener("input", () => {
      clearTimeout(number.timer);
      number.timer = setTimeout(() => seek(Number(number.value)), 300);
    });
    number.addEventListener("change", () => seek(Number(number.value)));
    st.count = count;
    bindTimeline();
  }
  root.replaceChildren(shell);

  // ------------------------------------------------------------------ talking to Python
  // Quick actions go one at a time, in order: the next leaves when the reply to the previous
  // (which echoes its ticket) has arrived, so two fast clicks reach Python in the order made.
  const LONG = new Set(["load", "play", "propagate", "pause", "cancel"]);
  const waiting = [];
  let ticket = 0, inflight = null, stuck = null;
  function dispatch() {
    if (inflight !== null || !waiting.length) return;
    const [type, data] = waiting.shift();
    inflight = ++ticket;
    clearTimeout(stuck);
    stuck = setTimeout(() => { inflight = null; dispatch(); }, 30000); // no reply: go on
    host.send(type, { ...data, ticket: inflight });
  }
  function send(type, data) {
    if (type !== "pause" && type !== "cancel" && type !== "sync" && st.playing) {
      st.playing = false;
      host.send("pause", {});
    }
    shell.classList.add("s2-busy");
    if (LONG.has(type)) { host.send(type, data); return; }
    if (type === "seek") { // only the latest frame asked for matters
      for (let i = waiting.length - 1; i >= 0; i--) if (waiting[i][0] === "seek") waiting.splice(i, 1);
    }
    waiting.push([type, data]);
    dispatch();
  }
  function answered(u) {
    if (u.ticket === undefined || u.ticket === null || u.ticket !== inflight) return;
    inflight = null;
    clearTimeout(stuck);
    dispatch();
  }
  function say(text, error = false) {
    status.textContent = text || "";
    status.classList.toggle("s2-error", !!error);
  }

  // ------------------------------------------------------------------ drawing
  function scale() {
    const w = view.getBoundingClientRect().width;
    return st.picture && w > 0 ? st.picture.width / w : 1;
  }
  // The canvas is drawn at the resolution it is shown at (never above the picture's): a
  // 1080p frame shown 1000 px wide costs a quarter of the pixels per redraw.
  function fit() {
    const cssW = view.getBoundingClientRect().width;
    const dpr = window.devicePixelRatio || 1;
    const pw = st.picture.width, ph = st.picture.height;
    const w = cssW > 0 ? Math.max(1, Math.min(pw, Math.round(cssW * dpr))) : pw;
    const h = Math.max(1, Math.round((w * ph) / pw));
    if (view.width !== w || view.height !== h) {
      view.width = w;
      view.height = h;
      for (const m of st.masks.values()) m.outline = null;
    }
    return [w, h];
  }
  function draw() {
    if (!st.picture) return;
    const ctx = view.getContext("2d");
    const [w, h] = fit();
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.globalAlpha = 1;
    ctx.drawImage(st.picture.img, 0, 0, w, h);
    for (const obj of st.objects) {
      const m = st.masks.get(obj.id);
      if (!m || st.hidden.has(obj.id)) continue;
      ctx.globalAlpha = st.opacity;
      ctx.drawImage(m.layer, 0, 0, w, h);
      if (st.outline) {
        ctx.globalAlpha = 1;
        const t = Math.max(1, Math.round(1.5 * (window.devicePixelRatio || 1)));
        if (!m.outline) m.outline = outlineOf(m.layer, w, h, t);
        ctx.drawImage(m.outline, 0, 0);
      }
    }
    ctx.globalAlpha = 1;
    ctx.setTransform(w / st.picture.width, 0, 0, h / st.picture.height, 0, 0);
    const s = scale();
    const colors = new Map(st.objects.map((o) => [o.id, o.color]));
    for (const p of st.prompts) {
      if (st.hidden.has(p.obj) || !p.box) continue;
      ctx.lineWidth = 2 * s;
      ctx.strokeStyle = rgb(colors.get(p.obj) || [255, 255, 0]);
      ctx.strokeRect(p.box[0], p.box[1], p.box[2] - p.box[0], p.box[3] - p.box[1]);
    }
    const marks = st.prompts.filter((p) => !p.box && !st.hidden.has(p.obj));
    if (st.pending) marks.push(st.pending);
    for (const p of marks) {
      ctx.beginPath();
      ctx.arc(p.x + 0.5, p.y + 0.5, MARK_PX * s, 0, 2 * Math.PI);
      ctx.fillStyle = p.positive ? "#22c55e" : "#ef4444";
      ctx.fill();
      ctx.lineWidth = 1.5 * s;
      ctx.strokeStyle = "#ffffff";
      ctx.stroke();
    }
    if (st.press && st.press.dragging) {
      const a = st.press.start, b = st.press.now;
      ctx.setLineDash([6 * s, 4 * s]);
      ctx.lineWidth = 2 * s;
      ctx.strokeStyle = "#ffd400";
      ctx.strokeRect(Math.min(a.x, b.x), Math.min(a.y, b.y), Math.abs(b.x - a.x), Math.abs(b.y - a.y));
      ctx.setLineDash([]);
    }
  }

  // ------------------------------------------------------------------ updates
  async function apply(u) {
    answered(u);
    if (inflight === null) shell.classList.remove("s2-busy");
    if (u.note) { // a reply that changes nothing on screen
      say(u.message);
      return;
    }
    if (u.error) { // a failed action: say why; what is on screen stays
      st.pending = null;
      say(u.message, true);
      draw();
      return;
    }
    if (u.seq !== undefined && st.seq && u.seq !== st.seq + 1 && !u.picture && !u.masks_reset) {
      st.seq = u.seq;
      host.send("sync", {}); // an update went missing: ask for everything
      return;
    }
    if (u.seq !== undefined) st.seq = u.seq;
    if (u.picture) {
      const img = new Image();
      img.src = u.picture.src;
      await img.decode();
      st.picture = { img, width: u.picture.width, height: u.picture.height, key: u.picture.key };
      stage.classList.remove("s2-empty");
    }
    if (u.masks_reset) st.masks.clear();
    if (u.objects) st.objects = u.objects;
    const colors = new Map(st.objects.map((o) => [o.id, o.color]));
    for (const [key, m] of Object.entries(u.masks || {})) {
      const id = Number(key);
      if (m === null) st.masks.delete(id);
      else if (st.picture) {
        const c = colors.get(id) || [255, 255, 0];
        const runs = m.rle !== undefined ? unpackRuns(m.rle) : m.runs;
        st.masks.set(id, { layer: maskLayer(runs, st.picture.width, st.picture.height, c) });
      }
    }
    for (const id of [...st.hidden]) if (!colors.has(id)) st.hidden.delete(id);
    if ("active" in u) st.active = u.active;
    if (u.prompts) st.prompts = u.prompts;
    if ("can_undo" in u) st.canUndo = u.can_undo;
    if ("can_redo" in u) st.canRedo = u.can_redo;
    undoBtn.disabled = !st.canUndo;
    redoBtn.disabled = !st.canRedo;
    if (video) {
      if ("frame" in u) st.frame = u.frame;
      if ("num_frames" in u) st.numFrames = u.num_frames;
      if ("fps" in u) st.fps = u.fps;
      if (u.lanes) st.lanes = u.lanes;
      if ("progress" in u) st.progress = u.progress;
      if ("playing" in u) st.playing = u.playing;
      playBtn.textContent = st.playing ? "❚❚ Pause" : "▶ Play";
      if (st.wantFrame === st.frame) st.wantFrame = null;
      if (st.wantFrame === null && document.activeElement !== number) number.value = st.frame;
      number.max = Math.max(st.numFrames - 1, 0);
      st.count.textContent = `/ ${Math.max(st.numFrames - 1, 0)}`;
      drawTimeline();
    }
    if (u.candidates) candidatesView(cands, u.candidates, send);
    if ("message" in u) say(u.message);
    st.pending = null;
    renderLegend();
    draw();
    root.dataset.seq = String(st.seq); // for tests: which update is on screen
    requestAnimationFrame(() => { root.dataset.painted = String(performance.now()); });
    if (video) root.dataset.frame = String(st.frame);
  }
  function update(u) {
    root.dataset.received = String(performance.now()); // for the latency benchmark
    chain = chain.then(() => apply(u)).catch((err) => say(`Display error: ${err}`, true));
    return chain;
  }

  function renderLegend() {
    legendView(legend, st, prefix, send, () => { renderLegend(); draw(); });
  }

  // ------------------------------------------------------------------ pointer on the picture
  function imageXY(ev) {
    const r = view.getBoundingClientRect();
    const w = st.picture.width, h = st.picture.height;
    const x = ((ev.clientX - r.left) / r.width) * w - 0.5;
    const y = ((ev.clientY - r.top) / r.height) * h - 0.5;
    return { x: Math.min(Math.max(x, 0), w - 1), y: Math.min(Math.max(y, 0), h - 1) };
  }
  function hit(p) {
    const reach = (MARK_PX + 3) * scale();
    let best = null;
    for (const q of st.prompts) {
      if (q.box || st.hidden.has(q.obj)) continue;
      const d = Math.hypot(q.x - p.x, q.y - p.y);
      if (d <= reach && (!best || d < best.d)) best = { d, q };
    }
    return best && best.q;
  }
  // The frame a prompt goes to: the one asked for (timeline, typed number) or else the one shown.
  function targetFrame() {
    if (st.wantFrame !== null) return st.wantFrame;
    if (number && number.value !== "") {
      const v = Number(number.value);
      if (Number.isInteger(v) && v >= 0 && v < st.numFrames) return v;
    }
    return st.frame;
  }
  view.addEventListener("pointerdown", (ev) => {
    if (!st.picture || (ev.button !== 0 && ev.button !== 2)) return;
    ev.preventDefault();
    shell.focus({ preventScroll: true }); // keys act here now; a typed frame number is taken
    view.setPointerCapture?.(ev.pointerId);
    const start = imageXY(ev);
    st.press = {
      sx: ev.clientX, sy: ev.clientY, start, now: start, dragging: false,
      negative: ev.shiftKey || ev.altKey || ev.button === 2,
    };
  });
  view.addEventListener("pointermove", (ev) => {
    const p = st.press;
    if (!p) return;
    if (!p.dragging && Math.hypot(ev.clientX - p.sx, ev.clientY - p.sy) < DRAG_PX) return;
    p.dragging = true;
    p.now = imageXY(ev);
    draw();
  });
  view.addEventListener("pointerup", (ev) => {
    const p = st.press;
    if (!p) return;
    st.press = null;
    root.dataset.sent = String(performance.now()); // for the latency benchmark
    const frame = targetFrame();
    if (p.dragging) {
      const e = imageXY(ev);
      send("box", { x0: p.start.x, y0: p.start.y, x1: e.x, y1: e.y, frame });
      say("Box sent…");
    } else {
      const q = frame === st.frame ? hit(p.start) : null;
      if (q) {
        send("remove_point", { obj: q.obj, index: q.index, frame });
        say(`Removing a point of object ${q.obj}…`);
      } else {
        st.pending = { x: p.start.x, y: p.start.y, positive: !p.negative };
        send("click", { x: p.start.x, y: p.start.y, positive: !p.negative, frame });
      }
    }
    draw();
  });
  view.addEventListener("pointercancel", () => { st.press = null; draw(); });
  view.addEventListener("contextmenu", (ev) => ev.preventDefault());

  // ------------------------------------------------------------------ files
  async function openFile(f) {
    if (!f) return;
    if (!host.upload) { say("Opening files is not available here.", true); return; }
    say(`Uploading ${f.name}…`);
    shell.classList.add("s2-busy");
    try {
      const handle = await host.upload(f);
      say(`Reading ${f.name}…`);
      send("load", { file: handle, name: f.name });
    } catch (err) {
      shell.classList.remove("s2-busy");
      say(`Could not upload ${f.name}: ${err && err.message ? err.message : err}`, true);
    }
  }
  file.addEventListener("change", () => { openFile(file.files[0]); file.value = ""; });
  openBtn.addEventListener("click", () => file.click());
  hint.addEventListener("click", () => { if (host.upload) file.click(); });
  if (!host.upload) openBtn.hidden = true;
  stage.addEventListener("dragover", (ev) => { ev.preventDefault(); stage.classList.add("s2-drop"); });
  stage.addEventListener("dragleave", () => stage.classList.remove("s2-drop"));
  stage.addEventListener("drop", (ev) => {
    ev.preventDefault();
    stage.classList.remove("s2-drop");
    openFile(ev.dataTransfer && ev.dataTransfer.files[0]);
  });

  // ------------------------------------------------------------------ controls
  undoBtn.addEventListener("click", () => send("undo", { frame: st.frame }));
  redoBtn.addEventListener("click", () => send("redo", {}));
  opacity.addEventListener("input", () => { st.opacity = Number(opacity.value) / 100; draw(); });
  outline.addEventListener("change", () => { st.outline = outline.checked; draw(); });
  function seek(f) {
    if (!video || !Number.isFinite(f) || st.numFrames === 0) return;
    f = Math.min(Math.max(Math.round(f), 0), st.numFrames - 1);
    st.wantFrame = f === st.frame ? null : f;
    drawTimeline();
    if (f !== st.frame) send("seek", { frame: f });
  }
  function step(d) { seek(targetFrame() + d); }
  function togglePlay() {
    if (st.playing) { st.playing = false; host.send("pause", {}); playBtn.textContent = "▶ Play"; }
    else if (st.numFrames) { send("play", { frame: targetFrame() }); st.playing = true; }
  }
  function onKey(ev) {
    if (!shell.isConnected || shell.offsetParent === null) return; // a hidden tab
    const t = ev.target;
    const typing = t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT"
      || t.isContentEditable);
    const mine = shell.contains(t) || (t === document.body && window[LAST] === shell);
    if (!mine) return;
    const k = ev.key.toLowerCase();
    if ((ev.ctrlKey || ev.metaKey) && (k === "z" || k === "y")) {
      if (typing && t !== number) return;
      ev.preventDefault();
      if (k === "y" || ev.shiftKey) send("redo", {});
      else send("undo", { frame: st.frame });
      return;
    }
    if (!video || typing || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (k === " " || k === "k") { ev.preventDefault(); togglePlay(); }
    else if (k === "j") { ev.preventDefault(); step(-1); }
    else if (k === "l") { ev.preventDefault(); step(1); }
  }
  document.addEventListener("keydown", onKey);
  const touched = () => { window[LAST] = shell; };
  shell.addEventListener("pointerdown", touched, true);
  shell.addEventListener("focusin", touched);

  // ------------------------------------------------------------------ timeline
  function drawTimeline() {
    if (tl) timelineView(tl, timeline, st, targetFrame());
  }
  function bindTimeline() {
    let dragging = false, timer = null;
    const frameAt = (ev) => {
      const r = tl.getBoundingClientRect();
      return Math.floor(((ev.clientX - r.left) / Math.max(r.width, 1)) * st.numFrames);
    };
    const move = (ev) => {
      if (!dragging || !st.numFrames) return;
      const f = Math.min(Math.max(frameAt(ev), 0), st.numFrames - 1);
      st.wantFrame = f;
      number.value = f;
      drawTimeline();
      if (!timer) timer = setTimeout(() => { timer = null; seek(st.wantFrame ?? st.frame); }, 120);
    };
    tl.addEventListener("pointerdown", (ev) => {
      dragging = true;
      tl.setPointerCapture?.(ev.pointerId);
      move(ev);
    });
    tl.addEventListener("pointermove", move);
    tl.addEventListener("pointerup", (ev) => {
      if (!dragging) return;
      move(ev);
      dragging = false;
      clearTimeout(timer);
      timer = null;
      seek(Math.min(Math.max(frameAt(ev), 0), st.numFrames - 1));
    });
  }
  const resize = new ResizeObserver(() => { draw(); drawTimeline(); });
  resize.observe(shell);
  renderLegend();
  say(options.greeting || "");
  if (video) drawTimeline();

  return {
    update,
    destroy() {
      document.removeEventListener("keydown", onKey);
      resize.disconnect();
    },
  };
}
