"""scaler: compound scaling of CNNs with FReLU and FLGC variants."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["build", "load_study", "scaled_spec"]


def __getattr__(name: str) -> Any:
    """`scaler.build`, `scaler.load_study` and `scaler.scaled_spec`, imported when first used (torch is heavy)."""
    if name in __all__:
        from scaler import api

        return getattr(api, name)
    raise AttributeError(f"module 'scaler' has no attribute {name!r}")
