// Front end of sam2ui's PromptCanvas: a plain ES module loaded by anywidget (no bundler).
//
// It shows the picture Python renders (the `image` trait: PNG or JPEG bytes of the frame with
// masks and prompts drawn) and turns the mouse into prompts sent to Python as custom messages:
//   {type: "click", x, y, modifier}   a short press; modifier = shift, alt or the right button
//   {type: "box", x0, y0, x1, y1}     a drag of more than DRAG_PX screen pixels
// Coordinates are image pixels (x right, y down) with pixel i's centre at i, so a click in the
// middle of the top-left pixel is (0, 0). Python decides what the modifier means.

const DRAG_PX = 5; // screen pixels a press must move before it counts as a box drag

function imageCoords(event, img, model) {
  const rect = img.getBoundingClientRect();
  const width = model.get("width");
  const height = model.get("height");
  const fx = ((event.clientX - rect.left) / rect.width) * width - 0.5;
  const fy = ((event.clientY - rect.top) / rect.height) * height - 0.5;
  return {
    x: Math.min(Math.max(fx, 0), width - 1),
    y: Math.min(Math.max(fy, 0), height - 1),
  };
}

function render({ model, el }) {
  el.classList.add("sam2ui-canvas");
  const frame = document.createElement("div");
  frame.className = "sam2ui-canvas-frame";
  const img = document.createElement("img");
  img.draggable = false;
  // Counts pictures shown, so a test (or a curious user) can tell when a new one arrived.
  img.addEventListener("load", () => {
    el.dataset.shown = String(Number(el.dataset.shown || 0) + 1);
  });
  img.alt = "image to segment";
  const rubber = document.createElement("div");
  rubber.className = "sam2ui-canvas-box";
  rubber.style.display = "none";
  frame.append(img, rubber);
  el.append(frame);

  let url = null;
  function showImage() {
    const data = model.get("image");
    if (!data || data.byteLength === 0) {
      img.removeAttribute("src");
      return;
    }
    // The picture on screen stays decoded after its URL is revoked, so revoke at once.
    if (url !== null) URL.revokeObjectURL(url);
    url = URL.createObjectURL(new Blob([data], { type: `image/${model.get("image_format")}` }));
    img.src = url;
  }
  function applySize() {
    const w = model.get("display_width");
    img.style.width = w > 0 ? `${w}px` : "";
  }
  function applyBusy() {
    frame.classList.toggle("sam2ui-busy", model.get("busy"));
  }

  let press = null; // {x, y (screen), start (image coords), modifier, dragging}
  function onDown(event) {
    if (event.button !== 0 && event.button !== 2) return;
    event.preventDefault();
    img.setPointerCapture?.(event.pointerId);
    press = {
      x: event.clientX,
      y: event.clientY,
      start: imageCoords(event, img, model),
      modifier: event.shiftKey || event.altKey || event.button === 2,
      dragging: false,
    };
  }
  function onMove(event) {
    if (press === null) return;
    const moved = Math.hypot(event.clientX - press.x, event.clientY - press.y);
    if (!press.dragging && moved < DRAG_PX) return;
    press.dragging = true;
    const imgRect = img.getBoundingClientRect();
    const left = Math.max(Math.min(press.x, event.clientX), imgRect.left) - imgRect.left;
    const top = Math.max(Math.min(press.y, event.clientY), imgRect.top) - imgRect.top;
    const right = Math.min(Math.max(press.x, event.clientX), imgRect.right) - imgRect.left;
    const bottom = Math.min(Math.max(press.y, event.clientY), imgRect.bottom) - imgRect.top;
    Object.assign(rubber.style, {
      display: "block",
      left: `${left}px`,
      top: `${top}px`,
      width: `${Math.max(right - left, 0)}px`,
      height: `${Math.max(bottom - top, 0)}px`,
    });
  }
  function onUp(event) {
    if (press === null) return;
    const end = imageCoords(event, img, model);
    if (press.dragging) {
      model.send({ type: "box", x0: press.start.x, y0: press.start.y, x1: end.x, y1: end.y });
    } else {
      model.send({ type: "click", x: press.start.x, y: press.start.y, modifier: press.modifier });
    }
    press = null;
    rubber.style.display = "none";
  }
  function onCancel() {
    press = null;
    rubber.style.display = "none";
  }
  const noMenu = (event) => event.preventDefault(); // the right button is a background click

  img.addEventListener("pointerdown", onDown);
  img.addEventListener("pointermove", onMove);
  img.addEventListener("pointerup", onUp);
  img.addEventListener("pointercancel", onCancel);
  img.addEventListener("contextmenu", noMenu);
  model.on("change:image", showImage);
  model.on("change:display_width", applySize);
  model.on("change:busy", applyBusy);
  showImage();
  applySize();
  applyBusy();

  return () => {
    model.off("change:image", showImage);
    model.off("change:display_width", applySize);
    model.off("change:busy", applyBusy);
    if (url !== null) URL.revokeObjectURL(url);
  };
}

export default { render };
