"""Model FLOPs utilisation: measured FLOPs of a step against the device's datasheet peak."""
from __future__ import annotations

import torch

# Dense bf16 tensor-core peak per device (datasheet, no sparsity); devices not listed get no MFU.
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12}


def peak_bf16_flops(device: torch.device) -> float | None:
    """Datasheet bf16 peak of a CUDA device, None on CPU or an unlisted device."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
