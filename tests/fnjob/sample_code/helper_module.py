"""A sibling module: the preprocessor must ship it with train_module."""

from __future__ import annotations


def loss_after(lr: float, epochs: int) -> float:
    return round(1.0 / (1.0 + lr * epochs), 6)
