"""Cloud side of the product: serves the head on crafted features, collects features, verifies models.

The HTTP service and the vicious-classifier detector are built on top of ``edge_sdk``
kits (DESIGN section 6).
"""

__all__: list[str] = []
