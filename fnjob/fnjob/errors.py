"""The root of fnjob's exception hierarchy.

Every error the library raises on purpose is a ``FnJobError``; the CLI maps them to
messages and exit codes. Modules define their specific errors next to the code that
raises them and re-export them from ``fnjob``.
"""

from __future__ import annotations


class FnJobError(Exception):
    """Base class of every error fnjob raises on purpose."""
