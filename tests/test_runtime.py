"""glibc malloc tuning (dwrec/runtime.py): large freed blocks stay in the heap, opt-outs work."""

from __future__ import annotations

import ctypes
import json
import os
import platform
import subprocess
import sys

import pytest

from dwrec import runtime

glibc = pytest.mark.skipif(
    platform.system() != "Linux"
    or platform.libc_ver()[0] != "glibc"
    or not hasattr(ctypes.CDLL(None), "mallinfo2"),
    reason="needs glibc >= 2.33 (mallopt and mallinfo2)",
)

# In a fresh process: optionally import what applies the tuning, then malloc 200 MiB, read
# where glibc put it (mallinfo2: `arena` = heap bytes, `hblkhd` = bytes in mmapped blocks),
# free it, and read again.
PROBE = """
import ctypes, json, sys
{setup}
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 200 << 20
block = libc.malloc(size)
ctypes.memset(block, 1, size)
held = libc.mallinfo2()
libc.free(block)
freed = libc.mallinfo2()
print(json.dumps({{"held_mmapped": held.hblkhd, "held_heap": held.arena,
                  "freed_mmapped": freed.hblkhd, "freed_heap": freed.arena}}))
"""


def probe(setup: str, **env: str) -> dict:
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", runtime.OPT_OUT)
    }
    environment.update(env)
    code = PROBE.format(setup=setup)
    out = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


MIB_200 = 200 << 20


@glibc
def test_tuned_malloc_serves_and_keeps_large_blocks_in_the_heap():
    tuned = probe("from dwrec.runtime import tune_malloc; assert tune_malloc()")
    assert tuned["held_mmapped"] < MIB_200 <= tuned["held_heap"]
    assert tuned["freed_heap"] >= MIB_200  # kept for the next step, not trimmed


@glibc
def test_glibc_defaults_mmap_a_large_block_and_return_it():
    """The control: without the tuning the same block is mmapped and unmapped on free."""
    default = probe("")
    assert default["held_mmapped"] >= MIB_200
    assert default["freed_mmapped"] < MIB_200 and default["freed_heap"] < MIB_200


@glibc
def test_the_dwrec_command_applies_it_on_import():
    assert probe("import dwrec.cli")["held_mmapped"] < MIB_200


@glibc
@pytest.mark.parametrize(
    "env",
    [
        {runtime.OPT_OUT: "0"},
        {"MALLOC_TRIM_THRESHOLD_": "131072"},
        {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"},
    ],
)
def test_opt_outs_leave_glibc_alone(env):
    assert probe("import dwrec.cli", **env)["held_mmapped"] >= MIB_200


def test_opt_out_is_reported(monkeypatch):
    monkeypatch.setenv(runtime.OPT_OUT, "0")
    assert runtime.tune_malloc() is False
    monkeypatch.delenv(runtime.OPT_OUT)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")
    assert runtime.tune_malloc() is False
