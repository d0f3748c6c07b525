"""Tests for loop/lock.py: one run per output directory (a clear line naming the holder), waiting on a shared cache
entry, release on exit; and the CLI refusing a second run on a busy --out."""

import os
import subprocess
import sys
import threading
import time

import pytest

from prmloop.loop.cli import main
from prmloop.loop.lock import exclusive, waiting
from prmloop.utils.errors import UserError

HOLD = """
import sys, time
from prmloop.loop.lock import exclusive
with exclusive(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_held_directory_refuses_a_second_run_naming_the_holder(tmp_path):
    busy = rf"out: in use by another prmloop run \(pid {os.getpid()}\)"
    with exclusive(tmp_path / "out"), pytest.raises(UserError, match=busy), exclusive(tmp_path / "out"):
        pass
    with exclusive(tmp_path / "out"):  # released on exit: free again
        pass


def test_the_cli_refuses_a_busy_out_and_a_killed_holder_frees_it(tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "out")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code = main(["demo", "--quick", "--out", str(tmp_path / "out"), "--set", "tracking.mode=disabled"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and f"in use by another prmloop run (pid {holder.pid})" in err[0]
    finally:
        holder.kill()
        holder.wait()
    with exclusive(tmp_path / "out"):  # a SIGKILLed holder leaves no stale lock
        pass


def test_waiting_waits_for_the_holder_then_proceeds(tmp_path):
    lock, events = tmp_path / "entry.lock", []

    def second():
        with waiting(lock, log=events.append):
            events.append("second in")

    with waiting(lock):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)
        assert events and events[0].endswith("which is preparing the same entry") and "second in" not in events
    thread.join(timeout=10)
    assert events[-1] == "second in"
