// The last part of sam2ui's canvas module (after canvas_parts.js and canvas.js; `canvas_js()`
// joins them): the two hosts that mount the canvas, the web app's and the notebook's.

// The web app: a gradio.HTML whose js_on_load hands over gradio's helpers. Python's updates
// arrive as the component's value (JSON); actions go back as gradio events named as in EVENTS.
export function mountGradio(element, api, options) {
  const root = element.querySelector(".sam2ui-canvas-root") || element;
  const host = {
    send: (type, data) => api.trigger(type, data),
    upload: api.upload ? async (f) => (await api.upload(f)).path : null,
  };
  const canvas = mount(root, host, options);
  let last = null;
  const onValue = () => {
    const raw = api.props.value;
    if (!raw || raw === last) return;
    last = raw;
    try {
      canvas.update(JSON.parse(raw));
    } catch (err) {
      console.error("sam2ui canvas: bad update", err);
    }
  };
  api.watch("value", onValue);
  onValue();
  return canvas;
}

// The notebook widgets: an anywidget front end. Updates arrive as custom messages
// {type: "update", update}; actions go back as {type, ...data}.
function render({ model, el: node }) {
  // Keys typed on the canvas are its own (J, K, L, space, Ctrl+Z), not JupyterLab's (J would
  // also select the next cell): Lumino skips its shortcuts for a key whose target, or an
  // element between it and the one a shortcut names, has this attribute. The focused element
  // is the target, and legend buttons are made anew, so each one gets it as it takes focus.
  const quiet = (ev) => ev.target.setAttribute?.("data-lm-suppress-shortcuts", "true");
  node.setAttribute("data-lm-suppress-shortcuts", "true");
  node.addEventListener("focusin", quiet);
  const host = {
    send: (type, data) => model.send({ type, ...data }),
    upload: null,
  };
  const canvas = mount(node, host, { kind: model.get("kind"), prefix: model.get("prefix") });
  const onMsg = (msg) => {
    if (msg && msg.type === "update") canvas.update(msg.update);
  };
  model.on("msg:custom", onMsg);
  model.send({ type: "sync" });
  return () => {
    model.off("msg:custom", onMsg);
    node.removeEventListener("focusin", quiet);
    canvas.destroy();
  };
}

export default { render };
