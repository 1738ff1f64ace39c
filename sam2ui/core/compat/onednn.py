"""Bounded oneDNN kernel caches.

On the CPU, PyTorch runs the engine's matrix products through oneDNN, which builds a kernel
for every new combination of tensor shapes and keeps it in two caches: PyTorch's own (ideep,
sized by the environment variable ``LRU_CACHE_CAPACITY``) and oneDNN's primitive cache
(``ONEDNN_PRIMITIVE_CACHE_CAPACITY``), 1024 entries each by default, at about 1 MB an entry.
Video tracking meets new shapes all the time: the memory attention reads one more frame for
every conditioning frame (each correction adds one) and a growing number of object pointers
on the first frames of every pass. With the default sizes, every new pass over a video left
tens of MB more resident, up to about 2 GB.

Building a kernel takes well under a millisecond against a second or more for a frame, so
sam2ui caps both caches at :data:`KERNEL_CACHE_ENTRIES` entries (measured: no slower at 16
entries than at 1024). Both variables are read by oneDNN the first time it runs in the process;
they are set (unless already set: a user's value wins) when the engine is imported, so the cap
holds when sam2ui is imported before anything else in the process has run a oneDNN kernel.
torch has no call that resizes the caches later (PyTorch 2.13 exports none, and oneDNN's
``dnnl_set_primitive_cache_capacity`` is not visible in its libraries): where other CPU work
ran first, set both variables before Python starts. The prompt path does not depend on the
cap: the mask decoder's products with one row per prompt token run at a few bucketed row
counts (:func:`sam2ui.core.modeling.layers.bucket_rows`), so 2,000 predictions with 1 to 200
points leave the process within a few MB even with oneDNN's default 1024 entries.
"""

from __future__ import annotations

import os

KERNEL_CACHE_ENTRIES = 32
CACHE_VARIABLES = ("LRU_CACHE_CAPACITY", "ONEDNN_PRIMITIVE_CACHE_CAPACITY")


def bound_kernel_caches(entries: int = KERNEL_CACHE_ENTRIES) -> dict[str, str]:
    """Set the cache sizes oneDNN will read, where the environment does not already say.
    Returns the sizes in effect."""
    for name in CACHE_VARIABLES:
        os.environ.setdefault(name, str(int(entries)))
    return {name: os.environ[name] for name in CACHE_VARIABLES}
