"""A real single-node SLURM cluster on localhost, for tests that submit jobs with sbatch/srun.

    with SlurmCluster(tmp_path) as cluster:
        job_id = cluster.submit(script)          # sbatch --parsable, run in the script's folder
        assert cluster.wait(job_id, timeout=60) == "COMPLETED"

`SlurmCluster` writes a slurm.conf into its folder (state, spool, logs and pid files all live
there), makes sure munged runs (starting it, and stopping it again on exit, only when it was not
running), starts slurmctld and slurmd in the foreground (`-D`) as its own child processes, and waits
for the node to be idle. On exit it cancels every job, stops both daemons and kills any process that
still carries the cluster's marker variable (a slurmstepd or a job's process), so nothing is left
running. Client commands must see `cluster.env` (SLURM_CONF points at the generated config).

There is no accounting storage (no slurmdbd), so `sacct` does not work: job states come from
`scontrol show job`, which keeps a finished job for MinJobAge (600 s) seconds.

Timings on a 2-core machine: start-up about 0.3 s; slurmctld's first scheduling pass comes about
3 s after it starts, later jobs start about 0.8 s after sbatch. Jobs are requeueable (JobRequeue=1);
a requeued job is held back for cred_expire + 1 s (11 s by default) before it runs again, and
`#SBATCH --open-mode=append` keeps the first run's output.

Needs root and the Debian packages slurm-wlm (slurmctld, slurmd, slurm-client) and munge;
`ensure_binaries()` installs them with apt-get when they are missing and it may.
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

DAEMONS = ("slurmctld", "slurmd", "munged")
CLIENTS = ("sbatch", "srun", "squeue", "scontrol")
REQUIRED = DAEMONS + CLIENTS
PACKAGES = ("slurm-wlm", "munge")  # Debian: slurm-wlm pulls in slurmctld, slurmd and slurm-client
SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")  # daemons live here, often not on a user's PATH

MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
MUNGE_USER = "munge"

# A job in one of these states will not change again by itself (a requeued job goes back to PENDING).
FINAL_STATES = frozenset({
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
    "OUT_OF_MEMORY", "PREEMPTED", "SPECIAL_EXIT", "TIMEOUT",
})
MARKER = "PYTEST_SLURM_CLUSTER"  # set in the daemons' (so every slurmstepd's) and the jobs' environment
SOCKET_PATH_MAX = 107  # sun_path; slurmd makes "<SlurmdSpoolDir>/<node>_<job>.<step>" sockets


class SlurmClusterError(RuntimeError):
    """The cluster could not be set up, started, or did not do what was asked in time."""


class SlurmMissing(SlurmClusterError):
    """SLURM or munge binaries are not installed."""


def which(name: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN])
    return shutil.which(name, path=path)


def missing_binaries() -> list[str]:
    return [name for name in REQUIRED if which(name) is None]


def ensure_binaries(install: bool = True, timeout: float = 900) -> tuple[list[str], str]:
    """Install the Debian packages if binaries are missing and we may (root, apt-get present).

    Returns the binaries still missing and, when some are, a short note on why. Set
    PYTEST_SLURM_NO_INSTALL=1 to never install.
    """
    missing = missing_binaries()
    if not missing:
        return [], ""
    packages = " ".join(PACKAGES)
    if not install or os.environ.get("PYTEST_SLURM_NO_INSTALL"):
        return missing, f"not installing (install Debian packages: {packages})"
    if os.geteuid() != 0:
        return missing, f"not root, cannot install Debian packages: {packages}"
    if shutil.which("apt-get") is None:
        return missing, f"no apt-get to install Debian packages: {packages}"
    environ = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    command = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    result = None
    for attempt in ([command], [["apt-get", "update", "-q"], command]):  # lists may be absent or stale
        for args in attempt:
            try:
                result = subprocess.run(args, env=environ, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                return missing_binaries(), f"'{' '.join(args)}' timed out after {timeout:.0f} s"
            if result.returncode != 0:
                break
        if result.returncode == 0 and not missing_binaries():
            return [], ""
    missing = missing_binaries()
    last = (result.stderr or result.stdout).strip().splitlines()[-1:] if result else []
    return missing, f"apt-get install {packages} failed: {last[0] if last else 'no output'}"


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as error:
        return f"  ({path}: {error.strerror})"
    return "\n".join(f"  {line}" for line in text[-lines:]) or f"  ({path} is empty)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def memory_mib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20


def parse_record(line: str) -> dict[str, str]:
    """One `scontrol show ... -o` line: space-separated Key=Value pairs, values may hold spaces."""
    record: dict[str, str] = {}
    key = None
    for token in line.split():
        match = re.match(r"^([A-Za-z][\w:/]*)=(.*)$", token)
        if match:
            key, value = match.groups()
            record[key] = value
        elif key is not None:
            record[key] += " " + token
    return record


def munge_socket_alive(path: Path = MUNGE_SOCKET) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state letter) for every process in /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            table[int(entry.name)] = (int(fields[1]), fields[0])
        except (OSError, IndexError, ValueError):
            continue
    return table


def zombie_stepds() -> list[int]:
    """slurmstepd processes that have exited but are not yet reaped by their parent."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)
            if fields[0].endswith("(slurmstepd") and fields[1].split()[0] == "Z":
                pids.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return pids


def wait_for_reaped_stepds(timeout: float = 3) -> None:
    """slurmstepd double-forks, so init reaps it; some sandboxes' init does so only after a while.

    Nothing to kill (they have exited): wait a little so `pgrep slurm` right after stop() is empty.
    """
    deadline = time.monotonic() + timeout
    while zombie_stepds() and time.monotonic() < deadline:
        time.sleep(0.1)


class SlurmCluster:
    """A one-node SLURM cluster (controller and node on localhost) living in `root`."""

    def __init__(
        self,
        root: Path | str,
        *,
        cluster_name: str = "pytest",
        partition: str = "debug",
        cpus: int | None = None,
        cred_expire: int = 10,
        kill_wait: int = 10,
        start_timeout: float = 60,
    ):
        self.root = Path(root).resolve()
        self.cluster_name = cluster_name
        self.partition = partition
        self.node = socket.gethostname().split(".")[0]  # `hostname -s`: what slurmd calls itself
        self.cpus = cpus or os.cpu_count() or 1
        self.memory = max(256, int(memory_mib() * 0.9))  # RealMemory a bit below the real one
        self.cred_expire = cred_expire  # also how long a requeued job waits before it may start again
        self.kill_wait = kill_wait
        self.start_timeout = start_timeout
        self.conf = self.root / "slurm.conf"
        self.logs = self.root / "log"
        self.state_dir = self.root / "state"
        self.spool = self.root / "spool"
        self._own_spool = False
        self.ctld_port = self.slurmd_port = 0
        self._procs: dict[str, subprocess.Popen] = {}
        self._munged: subprocess.Popen | None = None
        self.started_seconds: float | None = None
        self.killed_leftovers: list[str] = []

    # ------------------------------------------------------------------ environment

    @property
    def env(self) -> dict[str, str]:
        """The environment for client commands (sbatch, srun, squeue, scontrol, ...)."""
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))}
        environ["SLURM_CONF"] = str(self.conf)
        environ[MARKER] = str(self.root)
        environ["PATH"] = os.pathsep.join([environ.get("PATH", ""), *SBIN])
        return environ

    def run(self, *args: str, check: bool = True, timeout: float = 30, cwd: Path | str | None = None) -> subprocess.CompletedProcess:
        """Run a SLURM client command against this cluster."""
        result = subprocess.run(list(args), env=self.env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise SlurmClusterError(
                f"{' '.join(args)} exited {result.returncode}: {(result.stderr or result.stdout).strip()}"
            )
        return result

    # ------------------------------------------------------------------ config

    def slurm_conf(self) -> str:
        r = self.root
        return "\n".join([
            f"# Generated by tests/slurm_cluster.py for a throw-away one-node cluster in {r}",
            f"ClusterName={self.cluster_name}",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={self.ctld_port}",
            f"SlurmdPort={self.slurmd_port}",
            f"SlurmUser={pwd.getpwuid(os.geteuid()).pw_name}",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={MUNGE_SOCKET},cred_expire={self.cred_expire}",
            "MpiDefault=none",
            # A container/VM without systemd: no cgroups, so no cgroup.conf either.
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SchedulerType=sched/backfill",
            # sbatch jobs are not started at submit but by the scheduler within batch_sched_delay
            # (3 s by default): 0 lets them start on its next pass, about a second later.
            "SchedulerParameters=batch_sched_delay=0,sched_interval=1",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            # Trust the node line below rather than the detected topology (no INVAL/drain on mismatch).
            "SlurmdParameters=config_overrides",
            "ReturnToService=2",
            "JobRequeue=1",
            "MinJobAge=600",
            f"KillWait={self.kill_wait}",
            "InactiveLimit=0",
            "MailProg=/bin/true",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            f"StateSaveLocation={self.state_dir}",
            f"SlurmdSpoolDir={self.spool}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.logs / 'slurmctld.log'}",
            f"SlurmdLogFile={self.logs / 'slurmd.log'}",
            f"NodeName={self.node} NodeHostname={self.node} NodeAddr=127.0.0.1 "
            f"CPUs={self.cpus} RealMemory={self.memory} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
            "",
        ])

    def write_config(self) -> Path:
        if len(str(self.spool)) + 30 > SOCKET_PATH_MAX:  # step sockets would not fit in sun_path
            self.spool = Path(tempfile.mkdtemp(prefix="slurmd-"))
            self._own_spool = True
        for folder in (self.root, self.logs, self.state_dir, self.spool):
            folder.mkdir(parents=True, exist_ok=True)
        self.ctld_port = free_port()
        self.slurmd_port = free_port()
        while self.slurmd_port == self.ctld_port:
            self.slurmd_port = free_port()
        self.conf.write_text(self.slurm_conf())
        return self.conf

    # ------------------------------------------------------------------ munge

    def ensure_munge(self) -> None:
        """munged must answer on its default socket; start it (as the munge user) if it does not."""
        if munge_socket_alive():
            return
        if os.geteuid() != 0:
            raise SlurmClusterError(f"munged is not running ({MUNGE_SOCKET} does not answer) and only root can start it")
        try:
            user = pwd.getpwnam(MUNGE_USER)
        except KeyError:
            raise SlurmClusterError(f"no '{MUNGE_USER}' user: is the Debian package munge installed?") from None
        uid, gid = user.pw_uid, user.pw_gid
        # The package makes these, but /run is often a fresh tmpfs; munged wants them owned by munge.
        for folder, mode in ((MUNGE_KEY.parent, 0o700), (MUNGE_SOCKET.parent, 0o755),
                             (Path("/var/lib/munge"), 0o711), (Path("/var/log/munge"), 0o700)):
            if not folder.is_dir():
                folder.mkdir(parents=True)
                os.chown(folder, uid, gid)
                os.chmod(folder, mode)
        if not MUNGE_KEY.exists():
            mungekey = which("mungekey")
            if mungekey:
                subprocess.run([mungekey, "--create", f"--keyfile={MUNGE_KEY}"], check=True, capture_output=True)
            else:
                MUNGE_KEY.write_bytes(os.urandom(1024))
        info = MUNGE_KEY.stat()
        if info.st_uid != uid or info.st_gid != gid:
            os.chown(MUNGE_KEY, uid, gid)
        if stat.S_IMODE(info.st_mode) & 0o077:  # munged refuses a key others may read
            os.chmod(MUNGE_KEY, 0o400)
        out = self.logs / "munged.out"
        with out.open("ab") as log:
            self._munged = subprocess.Popen(
                [which("munged"), "--foreground"], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                user=uid, group=gid, extra_groups=[], start_new_session=True,
            )
        deadline = time.monotonic() + 15
        while not munge_socket_alive():
            if self._munged.poll() is not None or time.monotonic() > deadline:
                self._stop_process(self._munged, "munged")
                self._munged = None
                raise SlurmClusterError(
                    f"munged did not start:\n{tail(out)}\n/var/log/munge/munged.log:\n{tail(Path('/var/log/munge/munged.log'))}"
                )
            time.sleep(0.05)

    # ------------------------------------------------------------------ life cycle

    def start(self) -> "SlurmCluster":
        missing = missing_binaries()
        if missing:
            raise SlurmMissing(
                f"SLURM/munge binaries missing: {', '.join(missing)} (Debian packages: {' '.join(PACKAGES)})"
            )
        began = time.monotonic()
        self.logs.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)
        try:
            self.ensure_munge()
            self.write_config()
            self._spawn("slurmctld", [which("slurmctld"), "-D", "-c", "-f", str(self.conf)])
            self._until(lambda: self.run("scontrol", "ping", check=False, timeout=10).stdout.count("is UP") > 0,
                        "slurmctld to answer `scontrol ping`")
            self._spawn("slurmd", [which("slurmd"), "-D", "-N", self.node, "-f", str(self.conf)])
            self._until(self._node_idle, f"node {self.node} to be idle")
        except BaseException:
            self.stop()
            raise
        self.started_seconds = time.monotonic() - began
        return self

    def _spawn(self, name: str, args: list[str]) -> None:
        environ = self.env
        with (self.logs / f"{name}.out").open("ab") as log:
            self._procs[name] = subprocess.Popen(
                args, env=environ, cwd=self.root, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True,
            )

    def node_state(self) -> str:
        result = self.run("scontrol", "show", "node", "-o", self.node, check=False, timeout=10)
        return parse_record(result.stdout).get("State", "") if result.returncode == 0 else ""

    def _node_idle(self) -> bool:
        state = self.node_state()
        return state.split("+")[0] == "IDLE" and not any(f in state for f in ("DRAIN", "NOT_RESPONDING", "INVAL"))

    def _until(self, done, what: str, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.start_timeout)
        while True:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise SlurmClusterError(f"{name} exited {proc.returncode} while waiting for {what}\n{self.diagnostics()}")
            if done():
                return
            if time.monotonic() > deadline:
                raise SlurmClusterError(f"timed out waiting for {what}\n{self.diagnostics()}")
            time.sleep(0.1)

    def diagnostics(self) -> str:
        ctld = self._procs.get("slurmctld")
        parts = [f"node state: {self.node_state() if ctld is not None and ctld.poll() is None else '-'}"]
        for name in ("slurmctld", "slurmd", "munged"):
            for path in (self.logs / f"{name}.log", self.logs / f"{name}.out"):
                if path.exists():
                    parts.append(f"{path}:\n{tail(path)}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel every job, stop slurmd and slurmctld (and munged if we started it); idempotent."""
        atexit.unregister(self.stop)
        ctld = self._procs.get("slurmctld")
        if ctld is not None and ctld.poll() is None and self._procs.get("slurmd") is not None:
            try:
                self.run("scancel", "--quiet", f"--partition={self.partition}", check=False, timeout=10)
                # A task that ignores SIGTERM holds its job COMPLETING for KillWait: give jobs a few
                # seconds, then stop the daemons and SIGKILL what is left.
                active = {"RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STOPPED"}
                deadline = time.monotonic() + 3
                while True:
                    left = self.run("squeue", "--noheader", "--states=all", "--format=%T", check=False, timeout=10)
                    if left.returncode != 0 or not active & set(left.stdout.split()):
                        break
                    if time.monotonic() > deadline:
                        self._kill_leftovers()  # slurmd would wait for them before it shuts down
                        break
                    time.sleep(0.2)
            except (subprocess.SubprocessError, OSError):
                pass
        for name in ("slurmd", "slurmctld"):
            proc = self._procs.pop(name, None)
            if proc is not None:
                self._stop_process(proc, name)
        self._kill_leftovers()
        if self._munged is not None:
            self._stop_process(self._munged, "munged")
            self._munged = None
        if self._own_spool:
            shutil.rmtree(self.spool, ignore_errors=True)
            self._own_spool = False
        wait_for_reaped_stepds()

    @staticmethod
    def _stop_process(proc: subprocess.Popen, name: str, timeout: float = 15) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait()

    def _kill_leftovers(self) -> None:
        """SIGKILL what still carries this cluster's marker (a slurmstepd, a job's processes) and their
        descendants; never this process or its ancestors."""
        mine = f"{MARKER}={self.root}".encode()
        for _ in range(5):
            table = process_table()
            children: dict[int, list[int]] = {}
            for pid, (ppid, _) in table.items():
                children.setdefault(ppid, []).append(pid)

            def with_descendants(pids) -> set[int]:
                found = set(pids)
                stack = list(found)
                while stack:
                    for child in children.get(stack.pop(), []):
                        if child not in found:
                            found.add(child)
                            stack.append(child)
                return found

            # Daemons still running (and their helpers, e.g. slurmscriptd) stop on their own.
            spared, pid = with_descendants(p.pid for p in self._procs.values() if p.poll() is None), os.getpid()
            while pid in table and pid not in spared:
                spared.add(pid)
                pid = table[pid][0]
            doomed = set()
            for pid in table:
                try:
                    if mine in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                        doomed.add(pid)
                except OSError:
                    continue
            doomed = with_descendants(doomed)
            doomed = {pid for pid in doomed - spared if table[pid][1] != "Z"}
            if not doomed:
                return
            for pid in doomed:
                try:
                    command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    os.kill(pid, signal.SIGKILL)
                    self.killed_leftovers.append(f"{pid} {command.strip()}")
                except OSError:
                    continue
            time.sleep(0.2)

    def __enter__(self) -> "SlurmCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ jobs

    def submit(self, script: Path | str, *sbatch_args: str, cwd: Path | str | None = None) -> str:
        """sbatch the script (working directory: `cwd`, else the script's folder); returns the job id."""
        script = Path(script).resolve()
        result = self.run("sbatch", "--parsable", *sbatch_args, str(script), cwd=cwd or script.parent)
        job_id = result.stdout.strip().split(";")[0]
        if not job_id.isdigit():
            raise SlurmClusterError(f"sbatch printed no job id: {result.stdout!r} {result.stderr!r}")
        return job_id

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, ExitCode, Restarts, StdOut, NodeList, ...)."""
        result = self.run("scontrol", "show", "job", "-o", str(job_id), check=False, timeout=10)
        if result.returncode != 0 or not result.stdout.strip():
            raise SlurmClusterError(f"scontrol show job {job_id}: {(result.stderr or result.stdout).strip()}")
        return parse_record(result.stdout.splitlines()[0])

    def state(self, job_id: str) -> str:
        return self.job(job_id)["JobState"]

    def wait_for(self, job_id: str, states, timeout: float = 120, poll: float = 0.2) -> str:
        """Poll until the job's state is one of `states` (or any final state); return it."""
        wanted = set(states) | FINAL_STATES
        deadline = time.monotonic() + timeout
        while True:
            state = self.state(job_id)
            if state in wanted:
                return state
            if time.monotonic() > deadline:
                info = self.job(job_id)
                raise SlurmClusterError(
                    f"job {job_id} still {state} (Reason={info.get('Reason')}) after {timeout:.0f} s\n{self.diagnostics()}"
                )
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise SlurmClusterError(f"{name} exited {proc.returncode} while job {job_id} was {state}\n{self.diagnostics()}")
            time.sleep(poll)

    def wait(self, job_id: str, timeout: float = 120) -> str:
        """Wait until the job ends; return its final state (COMPLETED, FAILED, CANCELLED, TIMEOUT, ...)."""
        return self.wait_for(job_id, (), timeout)

    def output(self, job_id: str) -> str:
        """The job's standard output file, as text ('' if absent)."""
        path = Path(self.job(job_id).get("StdOut", ""))
        return path.read_text(errors="replace") if path.is_file() else ""
