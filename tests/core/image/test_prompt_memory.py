"""Clicks with ever new numbers of points do not grow the process.

oneDNN builds and caches a kernel for every new shape of a product; the mask decoder's
products have as many rows as prompt tokens, so every new number of points was a new shape,
and memory grew with the variety of prompts (sam2ui.core.modeling.layers: products of a few
rows run at bucketed row counts). The check runs in a fresh interpreter, where nothing else
has run oneDNN, with oneDNN's own cache sizes (1024 kernels each, as when sam2ui is imported
too late to bound them), so it holds without the cap of sam2ui.core.compat.onednn too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = r"""
import json
import sam2ui.core
from dataclasses import replace
import numpy as np, torch
from sam2ui.core.image.predictor import SAM2ImagePredictor
from sam2ui.core.loading.build import build_sam2
from sam2ui.core.modeling.config import get_config

def rss_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

torch.manual_seed(0)
predictor = SAM2ImagePredictor(build_sam2(replace(get_config("sam2.1-hiera-tiny"), image_size=256)))
rng = np.random.default_rng(0)
predictor.set_image(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
sizes = {}
for k in range(2000):
    n = 1 + k // 10  # as an object clicked on 200 times: 1 to 20 points, then up to 200
    points = rng.uniform(0, 120, (n, 2)).astype(np.float32)
    labels = rng.integers(0, 2, n).astype(np.int32)
    predictor.predict(point_coords=points, point_labels=labels, multimask_output=n == 1)
    if k + 1 in (200, 2000):
        sizes[k + 1] = rss_mb()
print(json.dumps(sizes))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc")
def test_varying_point_counts_leave_memory_flat() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["LRU_CACHE_CAPACITY"] = env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = "1024"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    sizes = json.loads(done.stdout.strip().splitlines()[-1])
    assert sizes["2000"] - sizes["200"] <= 30, sizes
