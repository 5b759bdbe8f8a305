"""Process-wide settings the ``dwrec`` command applies before it does any work.

glibc's ``malloc`` serves every block above its mmap threshold (128 KiB, rising to at most
32 MiB as large blocks are freed) with a fresh ``mmap`` and gives it back to the kernel on
``free``. A training step allocates and frees tensors of tens to hundreds of MiB (the
logits of a full softmax over the catalogue, activations, gradients), so every step asks the
kernel for fresh pages and the kernel zeroes each one on first touch: in the ML-1M SASRec
benchmark that page traffic took about 40% of a CPU training step. :func:`tune_malloc` raises
the mmap threshold and the trim threshold to 1 GiB, so freed blocks stay in the heap and the
next step reuses them (docs/performance.md section 8).

The price is that memory freed inside a run is kept by the process until it ends (up to 1
GiB above what it holds), and a few percent more peak RSS from heap fragmentation.
Library calls (``dwrec.train(...)``) leave the allocator alone; call :func:`tune_malloc`
first to get the command's behaviour.
"""

from __future__ import annotations

import ctypes
import os
import platform

THRESHOLD = 1 << 30
"""Bytes: blocks below this come from (and return to) the heap; freed heap memory above the
top is kept up to this much (a C ``int``, as ``mallopt`` takes)."""
OPT_OUT = "DWREC_MALLOC_TUNING"
"""Set to ``0`` to keep glibc's defaults."""
_GLIBC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
applied = False
"""Whether :func:`tune_malloc` took effect in this process (``--nproc`` workers follow it)."""


def tune_malloc() -> bool:
    """Raise glibc's mmap and trim thresholds to :data:`THRESHOLD`; True when applied.

    Does nothing (and returns False) when ``DWREC_MALLOC_TUNING=0``, when the user set
    glibc's own malloc variables or ``GLIBC_TUNABLES`` malloc tunables (their choice wins),
    or when the C library is not glibc.
    """
    if os.environ.get(OPT_OUT, "").strip() == "0":
        return False
    if any(name in os.environ for name in _GLIBC_VARIABLES):
        return False
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    global applied
    ok = mallopt(_M_MMAP_THRESHOLD, THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, THRESHOLD) == 1
    applied = applied or ok
    return ok
