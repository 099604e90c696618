"""The C allocator's settings for CPU inference: keep freed blocks, don't map new pages.

A forward pass on the CPU allocates and frees the same few activation buffers (a few MB
each: ``tokens x hidden`` floats, the padded Q/K/V, the FFN's inner layer) in every layer
of every batch. glibc's ``malloc`` serves blocks above its mmap threshold (128 KiB at
start, raised on the fly up to 32 MiB) with fresh ``mmap`` pages and gives them back on
``free``, and trims the top of the heap when more than 128 KiB is free there; either way
the next batch page-faults the same memory in again, which costs a small model's pass a
noticeable share of its time (profiled: ``aten::fill_`` of a new zero tensor took 8% of a
2-layer int8 student's pass). jemalloc and tcmalloc keep such blocks; so does glibc with
three ``mallopt`` settings, which :func:`tune_for_inference` makes once per process:

- ``M_MMAP_THRESHOLD`` 32 MiB (glibc's ceiling): blocks up to that come from the heap;
- ``M_TRIM_THRESHOLD`` 512 MiB: free memory at the heap's top is kept up to that;
- ``M_TOP_PAD`` 64 MiB: the heap grows in steps of at least that.

The cost is memory a process keeps after its peak (at most the trim threshold above
what it uses); the numbers are in ``benchmarks/allocator.py``. The settings are left
alone where the user chose otherwise: ``DISTILKIT_MALLOC=system`` (or ``off``), glibc's
own ``MALLOC_*_`` variables or ``GLIBC_TUNABLES`` malloc settings, or another allocator
in ``LD_PRELOAD``; and on other platforms than Linux with glibc.

Only processes whose job is inference are tuned: the command line's inference commands
(``embed``, ``search``, ``serve``, ``bench``, the pipelines; :mod:`distilkit.cli.main`),
and ``compress``'s timing process. Training is not: short training runs measured no gain
from the settings, and a compress run that trained with them saw its 2-layer student train
at 1,900-2,450 tokens/s against 2,400-2,730 in one without (docs/RESULTS.md). In your own
inference process call ``distilkit.tune_for_inference()`` once, early.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
SETTINGS = {  # parameter -> value, in the order they are applied
    M_MMAP_THRESHOLD: 32 * 2**20,
    M_TRIM_THRESHOLD: 512 * 2**20,
    M_TOP_PAD: 64 * 2**20,
}
OPT_OUT = "DISTILKIT_MALLOC"
OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")
GLIBC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")

_state: dict[str, str | None] = {"outcome": None}


def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (it has ``gnu_get_libc_version``)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def reason_to_leave(environ: dict[str, str] | None = None) -> str | None:
    """Why the allocator is left as it is (a phrase), or None when it may be tuned."""
    environ = os.environ if environ is None else environ
    choice = environ.get(OPT_OUT, "").strip().lower()
    if choice in ("system", "off", "0", "no"):
        return f"{OPT_OUT}={choice}"
    preload = environ.get("LD_PRELOAD", "")
    for name in OTHER_ALLOCATORS:
        if name in preload:
            return f"{name} is preloaded"
    for name in GLIBC_VARIABLES:
        if name in environ:
            return f"{name} is set"
    if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES sets glibc.malloc"
    return None


def applied() -> str | None:
    """The outcome of this process's :func:`tune_for_inference`, None when not called."""
    return _state["outcome"]


def tune_for_inference() -> str:
    """Apply :data:`SETTINGS` once per process; returns what happened: ``"tuned"``, or
    ``"left: <why>"`` (the user's choice, or not glibc). Later calls return the first
    call's outcome and change nothing."""
    if _state["outcome"] is not None:
        return _state["outcome"]
    why = reason_to_leave()
    libc = None if why else _glibc()
    if why is None and libc is None:
        why = "not glibc"
    if why is None:
        refused = [name for name, value in SETTINGS.items() if libc.mallopt(name, value) != 1]
        why = f"mallopt refused parameter(s) {refused}" if refused else None
    _state["outcome"] = "tuned" if why is None else f"left: {why}"
    return _state["outcome"]


__all__ = ["OPT_OUT", "SETTINGS", "applied", "reason_to_leave", "tune_for_inference"]
