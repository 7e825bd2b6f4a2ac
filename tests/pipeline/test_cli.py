"""pipeline.cli.run_and_exit: a stage process's exit skips the garbage collector's work over the
libraries' objects (gc.freeze), and keeps everything else of an exit: threads that are not daemons
finish, atexit handlers run, stdout and stderr are flushed, and the exit code is main's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import atexit, sys, threading, time
from pathlib import Path
from pipeline import cli
from pipeline.params import ConfigError

out = Path(sys.argv[1])

def main(argv):
    def late():
        time.sleep(0.3)
        out.write_text("thread done")
    threading.Thread(target=late).start()  # not a daemon: the interpreter would wait for it
    atexit.register(lambda: print("atexit ran", flush=False))
    sys.stdout.write("no newline, still buffered")
    if sys.argv[2] == "error":
        raise ConfigError("experiments.x.lr: must be a positive number")
    return int(sys.argv[2])

cli.run_and_exit(main)
print("never reached")
"""


def stage(tmp_path, outcome: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "thread.txt"), outcome], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_the_exit_code_output_threads_and_atexit_handlers_survive_the_cheap_exit(tmp_path):
    for code in (0, 3):
        result = stage(tmp_path, str(code))
        assert result.returncode == code
        assert result.stdout == "no newline, still bufferedatexit ran\n"
        assert (tmp_path / "thread.txt").read_text() == "thread done"
        (tmp_path / "thread.txt").unlink()


def test_a_user_error_exits_2_with_its_one_line(tmp_path):
    result = stage(tmp_path, "error")
    assert result.returncode == 2
    assert result.stderr == "error: experiments.x.lr: must be a positive number\n"
    assert result.stdout == "no newline, still bufferedatexit ran\n"
    assert (tmp_path / "thread.txt").read_text() == "thread done"


QUIET = """
import logging, warnings
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from pipeline import cli

cli.quiet()
rank_zero_info("GPU available: False, used: False")
rank_zero_warn("The `srun` command is available on your system but is not used. HINT: ...")
rank_zero_warn("The dataloader does not have many workers which may be a bottleneck.")
warnings.warn("a warning of the project's own")
logging.getLogger("lightning.pytorch.utilities.rank_zero").warning("a Lightning warning through its logger")
"""


def test_quiet_stages_still_show_the_warnings_a_user_acts_on():
    """What pipeline.cli.quiet turns off is named: any other warning, Lightning's too, still shows."""
    result = subprocess.run([sys.executable, "-c", QUIET], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert "GPU available" not in result.stderr and "srun" not in result.stderr
    for shown in ("does not have many workers", "a warning of the project's own", "a Lightning warning through its logger"):
        assert shown in result.stderr, result.stderr
