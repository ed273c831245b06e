"""Functions shipped as source by the build tests (a plain module with a sibling import)."""

from __future__ import annotations

import helper_module


class TrainingDiverged(Exception):
    """Raised on purpose; the caller must get this very type back."""


def train(lr: float, epochs: int = 2) -> dict[str, float]:
    print(f"training with lr={lr}", flush=True)
    return {"loss": helper_module.loss_after(lr, epochs), "epochs": float(epochs)}


def diverge(lr: float) -> None:
    print("about to diverge", flush=True)
    raise TrainingDiverged(f"loss exploded at lr={lr}")


def fail_plainly() -> None:
    raise ValueError("a plain ValueError from the container")


def raise_remote_only() -> None:
    # remote_only_errors exists only in the image (shipped as an extra file).
    import remote_only_errors

    raise remote_only_errors.OnlyThereError("raised from a module the caller does not have")
