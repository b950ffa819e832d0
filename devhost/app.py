"""The real function app as the Functions host indexes it, shared by the HTTP and queue stand-ins."""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def indexed_functions() -> tuple[Any, ...]:
    """The real function app's functions (function_app.app), as the host indexes them: taken once per process
    (`get_functions()` a second time fails on duplicate names)."""
    import function_app

    return tuple(function_app.app.get_functions())
