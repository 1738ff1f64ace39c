"""oneDNN's kernel caches are bounded once the engine is imported (RSS stays flat when
tensor shapes keep changing, as in the memory attention of a video correction loop)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from sam2ui.core.compat.onednn import CACHE_VARIABLES, KERNEL_CACHE_ENTRIES, bound_kernel_caches

# 240 products of shapes never seen before, through the engine's CPU linear layer (oneDNN).
SCRIPT = """
import json, sys
if sys.argv[1] == "engine":
    import sam2ui.core.modeling.layers as layers
    def product(x, w):
        return layers.linear(x, w, None)
else:
    import torch.nn.functional as F
    def product(x, w):
        return F.linear(x, w)
import ctypes
import torch
try:
    _trim = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):
    _trim = None
def rss():
    # Freed heap pages handed back first, so that only memory still held is counted.
    if _trim is not None:
        _trim(0)
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
torch.set_num_threads(1)
w = torch.randn(256, 64, dtype=torch.bfloat16)
def rows(n):
    # Row counts above those the engine rounds up to a few sizes, so each is a new shape.
    return 1024 + 8 * n
with torch.inference_mode():
    # Warm up: the allocator's first pools, and the kernel caches filled to their cap with
    # kernels of the same family as those measured (on some CPUs, AMX among them, a kernel's
    # size depends on the shape; the steady state is what must stay flat).
    for n in range(241, 321):
        product(torch.randn(rows(n), 64, dtype=torch.bfloat16), w)
    start = rss()
    for n in range(1, 241):
        product(torch.randn(rows(n), 64, dtype=torch.bfloat16), w)
print(json.dumps({"grown_mb": rss() - start}))
"""


def _grown_mb(mode: str, env: dict[str, str]) -> float:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return float(json.loads(done.stdout.strip().splitlines()[-1])["grown_mb"])


def test_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "7")
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    assert bound_kernel_caches() == {
        "LRU_CACHE_CAPACITY": "7",
        "ONEDNN_PRIMITIVE_CACHE_CAPACITY": str(KERNEL_CACHE_ENTRIES),
    }


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.skipif(
    not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()),
    reason="no oneDNN bfloat16 kernels on this CPU",
)
def test_new_shapes_do_not_grow_resident_memory() -> None:
    env = {k: v for k, v in os.environ.items() if k not in CACHE_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    bounded = _grown_mb("engine", env)
    # The same products with oneDNN's default caches (1024 entries each), for comparison.
    unbounded = _grown_mb("plain", env)
    assert bounded < 60, f"RSS grew {bounded:.0f} MB over 240 new shapes with bounded caches"
    assert unbounded > 2 * bounded + 40, (bounded, unbounded)
