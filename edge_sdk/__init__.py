"""Edge feature-crafting SDK: encode faces on the device and release only crafted features."""

__version__ = "0.1.0"

__all__ = ["__version__"]
