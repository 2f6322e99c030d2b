"""`bayesde info`: what a bug report needs."""

from __future__ import annotations

import sys
from typing import Optional

from ._common import DEVICE, Device, cpu_cores, default_chains, setup


def info(device: Optional[Device] = DEVICE):
    """Print the versions, the JAX platform and devices, and the CPU cores (what a bug report needs).

    Example:

        bayesde info --device cpu
    """
    bd = setup(device)
    import jax

    print(f"bayesde {bd.__version__}, jax {jax.__version__}, python {sys.version.split()[0]}")
    print(f"backend: {jax.default_backend()}")
    print(f"devices: {', '.join(f'{d.platform}:{d.id} ({d.device_kind})' for d in jax.devices())}")
    chains, note = default_chains()
    print(f"cpu cores: {cpu_cores()}; NUTS from the command line runs {note or f'{chains} chains'}")
