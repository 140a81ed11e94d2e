"""A local cloud server does not outlive the process that started it, even one killed without cleanup."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")

PARENT = """
import sys, time
from floe_edge.cloud.local import LocalCloud
with LocalCloud(sys.argv[1], n_ctx=256) as cloud:
    print(cloud._proc.pid, flush=True)
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead too (its parent is gone: init reaps it)
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_the_server_dies_with_a_killed_parent(smollm2_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(smollm2_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)  # no __exit__, no atexit: only the kernel can tell the child
        parent.wait(timeout=10)
        deadline = time.monotonic() + 30
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child), "the cloud server outlived its parent"
    finally:
        parent.kill()
