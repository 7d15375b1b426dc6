"""Where torch computations run: the CPU (the default) or a CUDA GPU when one is there and asked for."""

from __future__ import annotations

import torch

from edge_sdk.errors import EdgeSDKError

__all__ = ["DeviceUnavailableError", "resolve_device"]


class DeviceUnavailableError(EdgeSDKError):
    """The device asked for is not a torch device or is not available on this machine."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The torch device for ``device`` (``None``: the CPU), checked to be usable here.

    Random draws stay on the CPU's seeded generators and are moved to the device, so
    a seed gives the same draws on every device; the floating-point sums still differ
    between devices, as they do between thread counts.

    Raises:
        DeviceUnavailableError: Not a device name, or a CUDA device this machine lacks.

    Example:
        >>> resolve_device("cpu"), resolve_device(None)
        (device(type='cpu'), device(type='cpu'))
    """
    try:
        resolved = torch.device("cpu" if device is None else device)
    except (RuntimeError, TypeError) as exc:
        raise DeviceUnavailableError(f"{device!r} is not a torch device (use 'cpu' or 'cuda[:N]')") from exc
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = torch.cuda.current_device() if resolved.index is None and count else (resolved.index or 0)
        if index >= count:
            raise DeviceUnavailableError(f"{device!r} asked for, but this machine has {count} usable CUDA device(s)")
        return torch.device("cuda", index)  # "cuda" and "cuda:0" name one device: one copy of a kit
    if resolved.type != "cpu":
        raise DeviceUnavailableError(f"{device!r}: only 'cpu' and 'cuda' devices are supported")
    return torch.device("cpu")
