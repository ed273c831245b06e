"""What a returned value is, when it cannot be rebuilt here (``ResultNotLoadable``).

The value's pickle has been authenticated (signed with the run's key) before it reaches
here, so it is loaded as the normal path loads it, except that each class missing here
(module not installed, or another version without it) becomes a stand-in that keeps the
class's full name and the state the pickle gives it. That is enough to say what the function
returned: its type and a repr, for ``--json`` and error messages.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

__all__ = ["describe_unloadable"]

# A repr longer than this is cut (and says so): it goes into one JSON field.
MAX_REPR = 2000


class _StandIn:
    """An object of a class that does not exist here."""

    _fnjob_origin = "?"

    _fnjob_args: tuple[Any, ...]
    _fnjob_state: Any
    _fnjob_items: list[Any]

    # __new__, not __init__: pickle's NEWOBJ calls only cls.__new__(cls, *args).
    def __new__(cls, *args: Any, **kwargs: Any) -> _StandIn:
        self = super().__new__(cls)
        self._fnjob_args = args
        self._fnjob_state = kwargs or None
        self._fnjob_items = []
        return self

    def __setstate__(self, state: Any) -> None:
        self._fnjob_state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self._fnjob_items.append((key, value))

    def append(self, item: Any) -> None:
        self._fnjob_items.append(item)

    def extend(self, items: Any) -> None:
        self._fnjob_items.extend(items)

    def __repr__(self) -> str:
        parts = [repr(arg) for arg in self._fnjob_args]
        state = self._fnjob_state
        if isinstance(state, tuple) and len(state) == 2 and state[0] is None:
            state = state[1]  # (None, slots) from __slots__ classes
        if isinstance(state, dict):
            parts += [f"{key}={value!r}" for key, value in state.items()]
        elif state is not None:
            parts.append(repr(state))
        if self._fnjob_items:
            parts.append(repr(self._fnjob_items))
        return f"{self._fnjob_origin}({', '.join(parts)})"


class _DescribingUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            origin = f"{module}.{name}"
            return type(name.rpartition(".")[2], (_StandIn,), {"_fnjob_origin": origin})


def describe_unloadable(data: bytes) -> tuple[str, str]:
    """``(type, repr)`` of the value in ``data``, an authenticated pickle; classes missing
    here are named by their full dotted name. When even that fails, the reason stands in
    for the repr."""
    try:
        value = _DescribingUnpickler(io.BytesIO(data)).load()
    except Exception as error:
        return "?", f"<not readable here: {type(error).__name__}: {error}>"
    if isinstance(value, _StandIn):
        type_name = value._fnjob_origin
    else:
        kind = type(value)
        type_name = f"{kind.__module__}.{kind.__qualname__}"
    try:
        text = repr(value)
    except Exception as error:
        text = f"<repr failed: {type(error).__name__}: {error}>"
    if len(text) > MAX_REPR:
        text = text[:MAX_REPR] + f"... ({len(text):,} characters in all)"
    return type_name, text
