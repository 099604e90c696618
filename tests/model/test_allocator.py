"""The C allocator's inference settings (distilkit/model/allocator.py): when they apply,
that glibc really keeps mid-sized blocks on the heap after them, and that vectors do not
depend on them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from distilkit.model.allocator import OPT_OUT, _glibc, reason_to_leave

GLIBC = _glibc() is not None
needs_glibc = pytest.mark.skipif(not GLIBC, reason="the settings are glibc's")


def _clean_environ(**extra: str) -> dict[str, str]:
    environ = {
        k: v
        for k, v in os.environ.items()
        if k != OPT_OUT
        and not k.startswith("MALLOC_")
        and k not in ("LD_PRELOAD", "GLIBC_TUNABLES")
    }
    return {**environ, **extra}


def _run(code: str, **extra: str) -> dict:
    """Run ``code`` in a fresh interpreter (the settings are per process); its last stdout
    line is JSON."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=_clean_environ(**extra),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({OPT_OUT: "system"}, f"{OPT_OUT}=system"),
        ({OPT_OUT: "OFF"}, f"{OPT_OUT}=off"),
        ({OPT_OUT: "glibc-tuned"}, None),
        ({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, "jemalloc is preloaded"),
        ({"LD_PRELOAD": "libtcmalloc_minimal.so.4"}, "tcmalloc is preloaded"),
        ({"LD_PRELOAD": "libfoo.so"}, None),
        ({"MALLOC_TRIM_THRESHOLD_": "0"}, "MALLOC_TRIM_THRESHOLD_ is set"),
        ({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1"}, "GLIBC_TUNABLES sets glibc.malloc"),
        ({"GLIBC_TUNABLES": "glibc.rtld.nns=2"}, None),
    ],
)
def test_the_users_choice_is_left_alone(environ, expected):
    assert reason_to_leave(environ) == expected


# mallinfo2 (glibc >= 2.33) counts the blocks served by mmap: hblks
PROBE = """
import ctypes, json, sys
from distilkit.model.allocator import tune_for_inference
outcome = tune_for_inference() if sys.argv[-1] == "tune" else "untouched"
again = tune_for_inference() if sys.argv[-1] == "tune" else "untouched"
libc = ctypes.CDLL("libc.so.6")
class Info(ctypes.Structure):
    names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    _fields_ = [(n, ctypes.c_size_t) for n in names.split()]
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
before = libc.mallinfo2().hblks
block = libc.malloc(16 * 2**20)
during = libc.mallinfo2().hblks
libc.free(block)
print(json.dumps({"outcome": outcome, "again": again, "mapped": during - before}))
"""


@needs_glibc
def test_tuned_glibc_serves_a_16_mib_block_from_the_heap():
    """Untouched, glibc maps a fresh 16 MiB block (its threshold starts at 128 KiB);
    tuned, the block comes from the heap, so freeing it keeps its pages."""
    tuned = _run(PROBE.replace("sys.argv[-1]", "'tune'"))
    untouched = _run(PROBE.replace("sys.argv[-1]", "'no'"))
    opted_out = _run(PROBE.replace("sys.argv[-1]", "'tune'"), **{OPT_OUT: "system"})
    assert tuned == {"outcome": "tuned", "again": "tuned", "mapped": 0}
    assert untouched["mapped"] == 1
    assert opted_out["outcome"] == f"left: {OPT_OUT}=system"
    assert opted_out["again"] == opted_out["outcome"]
    assert opted_out["mapped"] == 1


EMBED = """
import json, sys
import distilkit
from distilkit.model.allocator import applied
tuned = sys.argv[-1] == "tune" and distilkit.tune_for_inference()
encoder = distilkit.load(sys.argv[1], device="cpu")
texts = ["the book was read", "a", "this is that; it was read."] * 7
vectors = encoder.embed(texts, batch_size=4)
print(json.dumps({"outcome": applied(), "vectors": vectors.tolist()}))
"""


@needs_glibc
def test_vectors_are_the_same_with_the_allocator_tuned_and_not(hf_checkpoint):
    """Loading and embedding alone tune nothing (a training process stays as it was)."""
    code = EMBED.replace("sys.argv[1]", repr(str(hf_checkpoint("BertModel"))))
    tuned = _run(code.replace("sys.argv[-1]", "'tune'"))
    untouched = _run(code.replace("sys.argv[-1]", "'no'"))
    assert tuned["outcome"] == "tuned"
    assert untouched["outcome"] is None
    np.testing.assert_array_equal(np.array(tuned["vectors"]), np.array(untouched["vectors"]))


CLI = """
import json
from distilkit.cli.main import main
from distilkit.model.allocator import applied
code = main(ARGS)
print(json.dumps({"code": code, "outcome": applied()}))
"""


@needs_glibc
def test_inference_commands_tune_the_allocator_and_training_commands_do_not(
    hf_checkpoint, tmp_path
):
    folder = str(hf_checkpoint("BertModel"))
    texts = tmp_path / "texts.txt"
    texts.write_text("the book was read\na\n", encoding="utf-8")
    embed = ["embed", folder, "--input", str(texts), "--output", str(tmp_path / "v.npy")]
    cut = ["init-student", folder, "--out", str(tmp_path / "cut"), "--num-layers", "1"]
    inference = _run(CLI.replace("ARGS", repr(embed)))
    training = _run(CLI.replace("ARGS", repr(cut)))
    assert inference == {"code": 0, "outcome": "tuned"}
    assert training == {"code": 0, "outcome": None}


def test_the_inference_commands_exist():
    from distilkit.cli.main import INFERENCE_COMMANDS, build_parser

    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert set(commands) >= INFERENCE_COMMANDS
    assert not INFERENCE_COMMANDS & {"distill", "finetune", "compress", "distill-task"}
