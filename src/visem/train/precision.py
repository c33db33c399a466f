"""Training precision: float32, or autocast to bfloat16 / float16 (with a gradient scaler for float16).

``train.precision`` takes ``fp32`` (the default), ``bf16`` or ``fp16``. The
low-precision settings run the forward of each training phase under
``torch.autocast`` on the model's device: matrix products and convolutions
in the low dtype, reductions and losses in float32, parameters and optimiser
state in float32. ``fp16`` has a narrow exponent range, so its loss is
scaled by ``torch.amp.GradScaler`` (steps with Inf/NaN gradients are skipped
and the scale lowered, as the scaler does); ``bf16`` has float32's range and
needs no scaler. On a CPU ``bf16`` is fast only where the CPU has bf16
matrix units (AMX, AVX512-BF16); ``fp16`` autocast exists on CPUs but is
rarely faster there.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import Tensor

__all__ = ["PRECISIONS", "Precision"]

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """Autocast and gradient scaling for one device and one ``train.precision`` setting."""

    def __init__(self, name: str, device: torch.device | str) -> None:
        if name not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
        self.name = name
        self.device = torch.device(device)
        self.dtype = PRECISIONS[name]
        self.scaler = torch.amp.GradScaler(self.device.type) if name == "fp16" else None

    @property
    def enabled(self) -> bool:
        return self.name != "fp32"

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        with torch.autocast(device_type=self.device.type, dtype=self.dtype):
            yield

    def scale(self, loss: Tensor) -> Tensor:
        return self.scaler.scale(loss) if self.scaler is not None else loss

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.step(optimizer)
        else:
            optimizer.step()

    def update(self) -> None:
        if self.scaler is not None:
            self.scaler.update()

    def state_dict(self) -> dict[str, float]:
        """The scaler's scale and growth tracker (empty without a scaler), for checkpoints."""
        if self.scaler is None:
            return {}
        sd = self.scaler.state_dict()
        return {k: float(v) if isinstance(v, (int, float)) else v for k, v in sd.items()} if sd else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(dict(state))
