"""cloudpickle with the same bytes in every process, so a pickled function keeps its digest.

cloudpickle's own output changes from one Python process to the next in two ways, each of
which would give a notebook session a new image for unchanged code:

- a class defined in ``__main__`` or a notebook is pickled with a random tracker id
  (``uuid4``); here the id is derived from the class's module, qualified name and its order
  of appearance in the pickle, and registered with cloudpickle so later pickles in this
  process (the call's arguments) name the same class;
- sets and frozensets are written in hash order, which follows the process's random string
  hash seed (``x in {"a", "b"}`` compiles to such a frozenset); here they are written sorted.

(cloudpickle itself already drops code objects' file names, which name the notebook
kernel's process.) What stays process-specific is state the user's objects really hold, such
as the docstring a dataclass generates from a set default.

The C pickler never asks ``reducer_override`` about sets, so this runs cloudpickle's reducers
on the pure-Python pickler. The result is ordinary cloudpickle output: ``pickle.load`` reads
it wherever cloudpickle is importable. It uses cloudpickle internals (its class tracker),
which is why cloudpickle is pinned exactly; ``tests/fnjob`` checks the result
across processes.
"""

from __future__ import annotations

import collections
import hashlib
import io
import pickle
import threading
import types
import typing
from typing import Any

import cloudpickle
from cloudpickle import cloudpickle as _internals

__all__ = ["dumps"]

# Serialises changes to cloudpickle's process-wide class tracker made by concurrent dumps.
_LOCK = threading.Lock()


def _sorted_items(items: Any) -> list[Any]:
    try:
        return sorted(items)
    except TypeError:  # mixed element types: order by type, then by text
        return sorted(items, key=lambda item: (type(item).__qualname__, repr(item)))


class _StablePickler(pickle._Pickler):
    """The pure-Python pickler with cloudpickle's reducers and the rules above."""

    # The standard library's own savers, named here: other libraries (dill) replace entries
    # of the shared pure-Python table, and their output would need them in the image.
    dispatch: typing.ClassVar[dict[type, Any]] = {
        kind: getattr(pickle._Pickler, name)
        for kind, name in (
            (type(None), "save_none"),
            (bool, "save_bool"),
            (int, "save_long"),
            (float, "save_float"),
            (bytes, "save_bytes"),
            (bytearray, "save_bytearray"),
            (pickle.PickleBuffer, "save_picklebuffer"),
            (str, "save_str"),
            (tuple, "save_tuple"),
            (list, "save_list"),
            (dict, "save_dict"),
            (set, "save_set"),
            (frozenset, "save_frozenset"),
            (types.FunctionType, "save_global"),
            (type, "save_type"),
        )
    }
    _dynamic_function_reduce = cloudpickle.Pickler._dynamic_function_reduce
    _function_reduce = cloudpickle.Pickler._function_reduce
    _function_getnewargs = cloudpickle.Pickler._function_getnewargs

    def __init__(self, file: io.BytesIO, protocol: int) -> None:
        super().__init__(file, protocol=protocol)
        self.dispatch_table = cloudpickle.Pickler.dispatch_table
        self.globals_ref: dict[int, dict[str, Any]] = {}
        self.proto = protocol
        self._names_seen: collections.Counter[str] = collections.Counter()
        self._tracked: set[int] = set()

    def _track(self, obj: Any) -> None:
        """Give a by-value class (or TypeVar) a tracker id that does not change between
        processes, and make cloudpickle use it from now on in this process."""
        if id(obj) in self._tracked:
            return
        self._tracked.add(id(obj))
        name = f"{getattr(obj, '__module__', '')}:{getattr(obj, '__qualname__', obj.__name__)}"
        ordinal = self._names_seen[name]
        self._names_seen[name] += 1
        tracker_id = hashlib.sha256(f"fnjob:{name}:{ordinal}".encode()).hexdigest()[:32]
        with _internals._DYNAMIC_CLASS_TRACKER_LOCK:
            previous = _internals._DYNAMIC_CLASS_TRACKER_BY_CLASS.get(obj)
            if previous is not None and previous != tracker_id:
                _internals._DYNAMIC_CLASS_TRACKER_BY_ID.pop(previous, None)
            _internals._DYNAMIC_CLASS_TRACKER_BY_CLASS[obj] = tracker_id
            _internals._DYNAMIC_CLASS_TRACKER_BY_ID[tracker_id] = obj

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if kind in (set, frozenset):
            return kind, (_sorted_items(obj),)
        if isinstance(obj, type | typing.TypeVar) and not _internals._should_pickle_by_reference(
            obj
        ):
            self._track(obj)
        reducer = cloudpickle.Pickler.dispatch_table.get(kind)
        if reducer is not None:
            return reducer(obj)
        return cloudpickle.Pickler.reducer_override(self, obj)


def dumps(obj: Any, protocol: int) -> bytes:
    """``cloudpickle.dumps(obj, protocol)``, the same bytes in every process."""
    buffer = io.BytesIO()
    with _LOCK:
        try:
            _StablePickler(buffer, protocol).dump(obj)
        except RecursionError as error:
            raise pickle.PicklingError(
                "Could not pickle object as excessively deep recursion required."
            ) from error
    return buffer.getvalue()
