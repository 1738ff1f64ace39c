"""A lean client for a Gradio app's queue, as a browser's JavaScript client speaks it.

``gradio_client`` adds tens of milliseconds of its own to every call (its threads hand each
message over by polling), which a browser does not pay. This client does what the browser
does and nothing more: one kept-alive HTTP connection per user, ``POST queue/join`` with the
session's hash, then the event stream ``GET queue/data`` until the event completes. Files go
up through ``POST upload`` first, as the browser uploads a dropped picture.

    client = WireClient("http://127.0.0.1:7860/")
    out = client.predict("/image_click", 0, 10.0, 20.0, True)

Inputs are given as ``gradio_client`` takes them: in the endpoint's order, without its
``gr.State`` inputs (the server keeps those per session; the client sends ``None``). The
outputs come back as Gradio sends them: JSON values as they are, pictures and files as
``FileData`` dicts (not downloaded).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import httpx


class WireError(RuntimeError):
    """The server answered an event with an error."""


class WireClient:
    def __init__(self, url: str, timeout: float = 600.0) -> None:
        self.url = url.rstrip("/") + "/"
        self.session_hash = secrets.token_hex(6)
        self.http = httpx.Client(timeout=timeout)
        config = self.http.get(self.url + "config").raise_for_status().json()
        self.api = self.url + config.get("api_prefix", "/gradio_api").strip("/") + "/"
        state = {c["id"] for c in config["components"] if c.get("type") == "state"}
        self.endpoints = {
            "/" + d["api_name"]: (d["id"], [i in state for i in d["inputs"]])
            for d in config["dependencies"]
            if isinstance(d.get("api_name"), str)
        }

    def upload(self, path: str | Path) -> dict[str, Any]:
        """Send a file as the browser does; the ``FileData`` an input takes."""
        path = Path(path)
        with path.open("rb") as f:
            r = self.http.post(self.api + "upload", files=[("files", (path.name, f))])
        return {
            "path": r.raise_for_status().json()[0],
            "orig_name": path.name,
            "meta": {"_type": "gradio.FileData"},
        }

    def predict(self, api_name: str, *data: Any) -> list[Any]:
        """Run one event; its outputs (a generator's last ones)."""
        return self.run(api_name, *data)[0]

    def steps(self, api_name: str, *data: Any) -> int:
        """Run one event; how many updates it sent before its end (a generator's steps)."""
        return self.run(api_name, *data)[1]

    def run(self, api_name: str, *data: Any) -> tuple[list[Any], int]:
        """Run one event: its outputs, and the number of updates sent before them."""
        if api_name not in self.endpoints:
            raise WireError(f"the app has no endpoint {api_name}")
        fn_index, stateful = self.endpoints[api_name]
        if len(data) != stateful.count(False):
            raise TypeError(f"{api_name} takes {stateful.count(False)} inputs, not {len(data)}")
        given = iter(data)
        body = {
            "data": [None if s else next(given) for s in stateful],
            "fn_index": fn_index,
            "session_hash": self.session_hash,
            "event_data": None,
            "trigger_id": None,
        }
        event_id = self.http.post(self.api + "queue/join", json=body).raise_for_status().json()
        event_id = event_id["event_id"]
        params = {"session_hash": self.session_hash}
        updates = 0
        with self.http.stream("GET", self.api + "queue/data", params=params) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("event_id") not in (None, event_id):
                    continue
                kind = msg.get("msg")
                # A generator's first update holds its outputs, the next ones what changed;
                # the completion holds its last outputs in full.
                if kind == "process_generating":
                    updates += 1
                elif kind == "process_completed":
                    out = msg.get("output") or {}
                    if not msg.get("success", False):
                        raise WireError(str(out.get("error") or out or msg))
                    return list(out.get("data") or []), updates
        raise WireError(f"{api_name}: the event stream ended before the event completed")

    def close(self) -> None:
        self.http.close()
