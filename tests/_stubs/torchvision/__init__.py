"""Test-only stand-in for the few torchvision pieces the reference `sam2` package imports.

No torchvision wheel works with the CPU torch build used here, and the parity tests only need
the reference's preprocessing (``Normalize``, ``Resize``, ``ToTensor``) and its NMS helpers.
These follow torchvision's tensor semantics; they are never imported by sam2ui itself.
"""

from . import ops, transforms

__version__ = "0.0.0+sam2ui-test-stub"
__all__ = ["ops", "transforms"]
