"""A training script as users write it: it imports fnjob at the top (fnjob is not in the
image, so the function has to travel by value, not by ``import`` of this module)."""

from __future__ import annotations

from fnjob import Job  # noqa: F401  (used by the script's own __main__ block in real life)


def fit(steps: int) -> str:
    print(f"fitting {steps} steps")
    return f"fitted {steps}"
