"""Names the OS threads of the service, so that `/proc`, `top -H` and profilers tell the event
loop, the codec threads and each model's engine thread apart (Python 3.11 names only its own
thread objects). Threads a named thread starts (XNNPACK's workers) inherit its name."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_PR_SET_NAME = 15
_libc = (
    ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform == "linux" else None
)


def name_this_thread(name: str) -> None:
    """Sets the calling thread's OS name (at most 15 bytes are kept); a no-op off Linux."""
    if _libc is not None:
        _libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
