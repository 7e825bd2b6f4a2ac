"""A preloading fork server for the stage commands: `python -m pipeline.STAGE` pays the import of
torch, Lightning, torchmetrics, MLflow and scipy once per user, not once per stage process.

The command does not change, and works with no server. The package's __init__.py calls `handover()`
while the interpreter is still locating the stage module: when the command is exactly
`python -m pipeline.STAGE ARGS` and a server for this interpreter, these installed packages, this
file and this environment is listening, the client sends it the command's argv, working directory,
environment, umask, sys.path and standard streams (the file descriptors themselves); the server
forks a child that runs the stage with them, and the client ends as the child ends (its exit code,
or killed by the same signal). With no server, the client starts one in the background and runs
cold this time: it never waits for the preload.

What a cold process gives, kept:
- The server imports third-party libraries only (PRELOAD). The child drops every `pipeline` and
  `modules` module before running the stage with runpy, so the files on disk now are what runs. The
  one exception is this module (the server's own code, and in its key).
- The server's key (the socket's name) hashes the interpreter, the installed distributions (names
  and mtimes of *.dist-info, *.egg-info, *.pth on sys.path), this file, the environment but for the
  variables that differ from run to run and that nothing reads at start-up or import (PER_RUN), and the
  process's CPU affinity, nice value, resource limits, groups and cgroup: a change starts another
  server, and an old one exits when idle, or at once when its installation changed.
- No CUDA, no Python thread, no torch op before the fork: the server checks and refuses to serve
  otherwise. Python's `random` reseeds itself at fork; numpy's global generator is reseeded in the
  child, as each cold process seeds it anew.
- Launchers and distributed runs (LAUNCHED in the environment), interpreter options, `-c`, and any
  command other than `python -m pipeline.STAGE` go cold.
- SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2 and SIGQUIT sent to the client reach the child; when
  the client dies (kill -9), the server kills the child's process group.
- The socket lies in a directory only its user can enter ($XDG_RUNTIME_DIR/medl-forkserver, else
  /tmp/medl-forkserver-UID; MEDL_FORKSERVER_DIR overrides it), and the server checks each peer's
  uid (SO_PEERCRED).
- The server exits after MEDL_FORKSERVER_IDLE seconds (default 600) without a connection, removing
  its socket, lock and log. MEDL_FORKSERVER=0: no server is started and none is asked.

What differs from a cold process: the traceback of an uncaught exception starts with this file's
and runpy's frames; the child's parent is a server's process (`client_pid()` names the command's),
and it is in a process group and session of its own; its sys.modules holds every preloaded library,
imported or not by the stage (a KeyboardInterrupt then ends with status 1, as once Lightning is
imported, not by SIGINT); its hash seed, and the ids libraries draw at import (MLflow's telemetry
session), are the server's; SIGTSTP (Ctrl-Z) stops the command, not the child.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import sys

SWITCH = "MEDL_FORKSERVER"  # "0": off
DIRECTORY = "MEDL_FORKSERVER_DIR"
IDLE = "MEDL_FORKSERVER_IDLE"  # seconds
IDLE_DEFAULT = 600.0
MAX_SERVERS = 4  # per user: each holds the libraries' memory; more keys than this run cold
# A launcher or a distributed run: its processes are started and watched by something else.
LAUNCHED = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "SLURM_PROCID", "TORCHELASTIC_RUN_ID", "MASTER_ADDR")
# Variables that differ from one stage run to the next and that nothing reads at start-up or import
# (the project's own code reads them when it runs); every other variable is in the key. MLflow reads
# PYTEST_CURRENT_TEST at import, only to turn its telemetry off, which pipeline/__init__.py turns off.
PER_RUN = ("DVC_", "MLFLOW_TRACKING_", "MLFLOW_EXPERIMENT_", "MLFLOW_RUN_ID", "PYTEST_CURRENT_TEST")
PER_RUN_NAMES = ("PWD", "OLDPWD", "SHLVL", "_", SWITCH, DIRECTORY, IDLE, "MEDL_STAGE_STATS", "MEDL_WATCHED_PARENT")
PRELOAD = (
    "numpy", "scipy", "scipy.signal", "torch", "lightning", "lightning.pytorch", "torchmetrics", "mlflow",
    "sklearn", "matplotlib", "matplotlib.pyplot", "networkx", "gymnasium", "torch_geometric",
    # MLflow imports its SQL stores (SQLAlchemy, alembic) at a run's first client call: train and evaluate pay it
    "mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store",
)
FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGQUIT", "SIGWINCH")
HEADER = struct.Struct("!I")

_client = None  # in a served child: the pid of the command's process


def client_pid() -> int:
    """The process the user's command started: this one, or, in a served child, the client."""
    return _client if _client is not None else os.getpid()


def stage_module() -> str | None:
    """The module of a `python -m pipeline.STAGE ...` command being started now, else None."""
    argv = sys.orig_argv
    if (len(argv) < 3 or argv[1] != "-m" or not argv[2].startswith("pipeline.") or argv[2] == __name__
            or sys.argv[:1] != ["-m"] or argv[3:] != sys.argv[1:]):
        return None
    return argv[2]


def private_directory() -> str:
    """The directory of the sockets, created 0700; an OSError if it is not this user's alone."""
    where = os.environ.get(DIRECTORY)
    if not where:
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        where = os.path.join(runtime, "medl-forkserver") if runtime else f"/tmp/medl-forkserver-{os.getuid()}"
    try:
        os.mkdir(where, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(where)
    if not os.path.isdir(where) or os.path.islink(where) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{where}: not a directory of this user's alone")
    return where


def installed(path: list) -> list:
    """Each distribution on `path` by name and mtime: pip rewrites these on any install."""
    found = []
    for entry in path:
        try:
            with os.scandir(entry or ".") as listing:
                found.extend((entry, item.name, item.stat().st_mtime_ns) for item in listing
                             if item.name.endswith((".dist-info", ".egg-info", ".pth", ".egg-link")))
        except OSError:
            continue
    return sorted(found)


def key(environ: dict | None = None, path: list | None = None) -> str:
    """The name of the server that may run this process's stage (see the module's docstring); `path`:
    sys.path but its first entry (the command's directory)."""
    return hashlib.sha256(json.dumps(key_parts(environ, path), sort_keys=True).encode()).hexdigest()[:24]


def key_parts(environ: dict | None, path: list | None) -> dict:
    import resource

    environ = os.environ if environ is None else environ
    path = sys.path[1:] if path is None else path
    with open(__file__, "rb") as source:
        code = hashlib.sha256(source.read()).hexdigest()
    try:
        with open("/proc/self/cgroup") as handle:
            cgroup = handle.read()
    except OSError:
        cgroup = ""
    limits = {name: resource.getrlimit(getattr(resource, name)) for name in dir(resource) if name.startswith("RLIMIT_")}
    return {
        "python": [sys.executable, sys.version, path],
        "code": code,
        "packages": installed(path),  # not the command's directory: a project's own egg-info is not the server's
        "environment": sorted((name, value) for name, value in environ.items()
                              if not name.startswith(PER_RUN) and name not in PER_RUN_NAMES),
        "process": [os.getuid(), os.getgid(), sorted(os.getgroups()), sorted(os.sched_getaffinity(0)),
                    os.getpriority(os.PRIO_PROCESS, 0), limits, cgroup],
    }


# ---------------------------------------------------------------------------------------------- client


def handover() -> None:
    """Run this `python -m pipeline.STAGE` command in a server's child and end as it ends; return
    (the cold path) when that is not possible or not wanted."""
    module = stage_module()
    if module is None or os.environ.get(SWITCH) == "0" or any(name in os.environ for name in LAUNCHED):
        return
    if idle_seconds() is None:  # here, in the command, not in the detached server, which has no terminal
        print(f"error: {IDLE}: must be a positive number of seconds, got {os.environ[IDLE]!r} "
              f"(unset: {IDLE_DEFAULT:g}; {SWITCH}=0 turns the server off)", file=sys.stderr, flush=True)
        raise SystemExit(2)
    try:
        where = private_directory()
        name = key()
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.connect(os.path.join(where, f"{name}.sock"))
    except FileNotFoundError:  # none yet, or one starting; or one that refused, which its log says why
        log = os.path.join(where, f"{name}.log")
        if not held(os.path.join(where, f"{name}.lock")) and not (os.path.exists(log) and os.path.getsize(log)):
            start_server(where, name)
        return
    except ConnectionRefusedError:  # a server killed without cleaning up: a new one takes its place
        start_server(where, name)
        return
    except OSError:  # a directory that is not private
        return
    with connection:
        replies = connection.makefile("rb")
        pid = send_request(connection, replies, module)
        if pid is None:
            return
        status = wait_for(connection, replies, pid)
    end_as(status)


def send_request(connection: socket.socket, replies, module: str) -> int | None:
    """Send the command and its streams; the child's pid once the server has started it, else None."""
    import signal

    try:
        here = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    umask = os.umask(0o022)
    os.umask(umask)
    request = json.dumps({"module": module, "argv": sys.argv[1:], "orig_argv": sys.orig_argv, "path": sys.path,
                          "environ": dict(os.environ), "umask": umask, "pid": os.getpid(),
                          # a background job or nohup ignores some: the stage must too
                          "ignored": [name for name in FORWARDED if signal.getsignal(getattr(signal, name)) == signal.SIG_IGN]}).encode()
    try:
        socket.send_fds(connection, [HEADER.pack(len(request))], [0, 1, 2, here])
        connection.sendall(request)
        reply = replies.readline()
    except OSError:  # a standard stream closed, or the server went away
        return None
    finally:
        os.close(here)
    return json.loads(reply)["pid"] if reply else None


def wait_for(connection: socket.socket, replies, pid: int) -> dict:
    """Forward signals to the child until the server reports how it ended."""
    import signal

    def forward(number, frame):
        try:
            connection.send(bytes([number]))
        except OSError:
            pass

    # Every one, those the command ignored too: the child starts ignoring them as a cold process would,
    # but a stage may install its own handler (the train stage does for SIGINT and SIGTERM), and then
    # a cold process would receive them.
    for name in FORWARDED:
        signal.signal(getattr(signal, name), forward)
    reply = replies.readline()
    if not reply:  # the server's side died: the child must not outlive the command
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        return {"error": "the fork server ended before the stage did"}
    return json.loads(reply)


def end_as(status: dict) -> None:
    """Exit as the child did: its code, or its signal."""
    import signal

    sys.stdout.flush()
    if "signal" in status:
        number = status["signal"]
        signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)
        raise SystemExit(128 + number)  # a signal whose default is not to end a process
    if "error" in status:
        print(f"error: {status['error']}", file=sys.stderr)
        raise SystemExit(1)
    raise SystemExit(status["exit"])


def idle_seconds() -> float | None:
    """MEDL_FORKSERVER_IDLE as seconds (IDLE_DEFAULT when unset); None when it is not a positive number."""
    import math

    try:
        seconds = float(os.environ.get(IDLE, IDLE_DEFAULT))
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


def start_server(where: str, name: str) -> None:
    """Start this key's server in the background (a new session, no standard stream of ours, no other
    inherited descriptor that a caller may be waiting on), unless there are MAX_SERVERS already."""
    if live_servers(where) >= MAX_SERVERS:
        return
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        return
    try:  # the intermediate process: its child, the server, is nobody's child but init's
        os.setsid()
        if os.fork() == 0:
            null = os.open(os.devnull, os.O_RDWR)
            log = os.open(os.path.join(where, f"{name}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.closerange(3, os.sysconf("SC_OPEN_MAX"))
            os.execv(sys.executable, [sys.executable, "-c", "from pipeline.forkserver import main; main()", name,
                                      sys.path[0] or os.getcwd()])
    finally:
        os._exit(0)


def held(lock: str) -> bool:
    """Whether a server (starting or serving) holds the lock file `lock`."""
    import fcntl

    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def live_servers(where: str) -> int:
    return sum(held(os.path.join(where, entry)) for entry in os.listdir(where) if entry.endswith(".lock"))


# ---------------------------------------------------------------------------------------------- server


def main() -> None:
    """The server: `python -c "from pipeline.forkserver import main; main()" KEY PROJECT`."""
    import fcntl

    where, name = private_directory(), sys.argv[1]
    idle = idle_seconds() or IDLE_DEFAULT  # the client checked it
    path = sys.path[1:]  # the key's, as the client saw it
    for variable in [v for v in os.environ if v.startswith(PER_RUN) or v in PER_RUN_NAMES]:
        del os.environ[variable]  # one run's values must not reach what the libraries keep from import
    sys.path[:] = [entry for entry in sys.path if entry not in ("", sys.argv[2])]  # nothing of the project's
    os.chdir("/")  # hold no user's directory
    lock = os.open(os.path.join(where, f"{name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # a server ending removes its lock file: one opened before that is no lock any more
        if os.stat(os.path.join(where, f"{name}.lock")).st_ino != os.fstat(lock).st_ino:
            os._exit(0)
    except OSError:  # another client started this key's server first
        os._exit(0)
    os.ftruncate(lock, 0)
    os.write(lock, f"{os.getpid()}\n".encode())  # who to stop (kill PID: it cleans up)
    printed = os.fstat(1).st_size + os.fstat(2).st_size
    environ = dict(os.environ)
    # another pipeline/forkserver.py than the client's (it found the package elsewhere on sys.path)
    problem = "this server's key is not the client's" if key(environ, path) != name else preload(printed)
    if problem:  # the log stays: clients of this key run cold and do not start it again
        print(f"not serving: {problem}", file=sys.stderr, flush=True)
        cleanup(where, name, None, keep_log=True)
        os._exit(0)
    # What the imports did to the environment (libraries set defaults there), done again over each
    # command's environment, as the same imports would in a cold process
    imported = {variable: os.environ.get(variable) for variable in set(environ) | set(os.environ)
                if os.environ.get(variable) != environ.get(variable)}
    request = serve(where, name, environ, path, idle, lock)
    if request is None:
        # The server's end. The atexit handlers it holds (the libraries', a sitecustomize's) are the
        # stages' children's, which run them as a cold process would; here they would act for no stage.
        os._exit(0)
    run_stage(request, imported)


def preload(printed: int) -> str | None:
    """Import the third-party libraries; what makes forking unsafe or unfaithful, if anything."""
    import importlib
    import threading

    for module in PRELOAD:
        try:
            importlib.import_module(module)
        except ImportError:
            continue
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fstat(1).st_size + os.fstat(2).st_size != printed:  # a cold process would show it on every run
        return "the libraries printed at import"
    if threading.active_count() != 1:
        return f"{threading.active_count()} threads after the imports"
    if "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized():
        return "CUDA is initialised"
    with open("/proc/self/maps") as maps:
        if any("libcuda.so" in line for line in maps):
            return "the CUDA driver is loaded"
    return None


def serve(where: str, name: str, environ: dict, path: list, idle: float, lock: int):
    """Accept clients until idle; in a stage child, return its request (and never in the server)."""
    import select
    import signal
    import time

    address = os.path.join(where, f"{name}.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(f"{address}.{os.getpid()}")
    listener.listen(64)
    os.rename(f"{address}.{os.getpid()}", address)  # clients see the socket only once it is ready
    bound = os.stat(address).st_ino
    stopping = []
    signal.signal(signal.SIGTERM, lambda number, frame: stopping.append(number))
    handlers: set[int] = set()
    last = checked = time.monotonic()
    while not stopping:
        ready, _, _ = select.select([listener], [], [], 1.0)
        for pid in list(handlers):
            if os.waitpid(pid, os.WNOHANG)[0]:
                handlers.discard(pid)
        now = time.monotonic()
        if ready:
            try:
                connection, _ = listener.accept()
            except OSError:  # the client gave up meanwhile
                continue
            uid = struct.unpack("3i", connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[1]
            if uid != os.getuid():
                connection.close()
                continue
            try:
                pid = os.fork()
            except OSError:  # no process to spare: the client, seeing no pid, runs cold
                connection.close()
                continue
            if pid == 0:
                listener.close()
                os.close(lock)  # the lock must end with the server, not with a long stage
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                return handle(connection)
            connection.close()
            handlers.add(pid)
            last = now
        elif not handlers and now - last > idle:
            break
        elif now - checked > 5.0:  # a reinstalled package or an edited server: a new key, never used here
            checked = now
            if key(environ, path) != name:
                break
    cleanup(where, name, bound)
    return None


def cleanup(where: str, name: str, bound: int | None, keep_log: bool = False) -> None:
    """Remove this server's socket (if still its own), lock and log, and the directory once empty."""
    path = os.path.join(where, f"{name}.sock")
    try:
        if bound is not None and os.stat(path).st_ino == bound:
            os.unlink(path)
    except OSError:
        pass
    for suffix in (".lock",) if keep_log else (".lock", ".log"):
        try:
            os.unlink(os.path.join(where, name + suffix))
        except OSError:
            pass
    try:
        os.rmdir(where)
    except OSError:
        pass


def handle(connection: socket.socket):
    """A connection's process: fork the stage child, relay signals, report its end. Returns the request
    in the child; exits in this process."""
    import select
    import signal

    try:
        connection.settimeout(60)  # a client that never sends must not keep the server from idling
        size_bytes, fds, _, _ = socket.recv_fds(connection, HEADER.size, 4)
        size = HEADER.unpack(size_bytes)[0]
        data = b""
        while len(data) < size:
            chunk = connection.recv(size - len(data))
            if not chunk:
                os._exit(0)
            data += chunk
        connection.settimeout(None)
        request = json.loads(data)
        request["fds"] = fds
        go_read, go_write = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(go_write)
            connection.close()
            os.setpgid(0, 0)
            if os.read(go_read, 1) != b"1":  # the client is gone before the stage began
                os._exit(1)
            os.close(go_read)
            return request
        os.setpgid(child, child)  # here too: no race with the child's own call
        for fd in fds:
            os.close(fd)
        os.close(go_read)
        connection.sendall(json.dumps({"pid": child}).encode() + b"\n")
        os.write(go_write, b"1")
        os.close(go_write)
        child_ended = os.pidfd_open(child)
        while True:
            ready, _, _ = select.select([connection, child_ended], [], [])
            if child_ended in ready:
                status = os.waitpid(child, 0)[1]
                if os.WIFSIGNALED(status):
                    reply = {"signal": os.WTERMSIG(status)}
                else:
                    reply = {"exit": os.waitstatus_to_exitcode(status)}
                connection.sendall(json.dumps(reply).encode() + b"\n")
                break
            received = connection.recv(64)
            if not received:  # the command died without passing a signal on (kill -9)
                try:
                    os.killpg(child, signal.SIGKILL)
                except OSError:
                    pass
                os.waitpid(child, 0)
                break
            for number in received:
                try:
                    os.kill(child, number)
                except OSError:
                    pass
    except (OSError, ValueError):  # a client gone, or not one of ours
        pass
    os._exit(0)


def run_stage(request: dict, imported: dict) -> None:
    """In the child: become the command's process, then run its stage module as `python -m` would."""
    global _client
    import importlib
    import runpy
    import signal

    stdin, stdout, stderr, here = request["fds"]
    for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
        os.dup2(fd, target)
    os.fchdir(here)
    for fd in request["fds"]:
        if fd > 2:
            os.close(fd)
    os.umask(request["umask"])
    for name in FORWARDED:  # as the interpreter sets them at start-up, from what the command inherited
        number = getattr(signal, name)
        default = signal.default_int_handler if number == signal.SIGINT else signal.SIG_DFL
        signal.signal(number, signal.SIG_IGN if name in request["ignored"] else default)
    os.environ.clear()
    os.environ.update(request["environ"])
    for variable, value in imported.items():
        if value is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = value
    sys.stdin, sys.stdout, sys.stderr = (standard_stream(0, "<stdin>", "r", sys.__stdin__),
                                         standard_stream(1, "<stdout>", "w", sys.__stdout__),
                                         standard_stream(2, "<stderr>", "w", sys.__stderr__))
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
    sys.argv = [request["module"], *request["argv"]]  # runpy puts the module's file first, as -m does
    sys.orig_argv = request["orig_argv"]
    sys.path[:] = request["path"]
    for name in list(sys.modules):
        if name.split(".")[0] in ("pipeline", "modules") and name != __name__:
            del sys.modules[name]
    importlib.invalidate_caches()
    if "numpy.random" in sys.modules:
        sys.modules["numpy.random"].seed()  # a cold process seeds numpy's global generator anew
    _client = request["pid"]
    runpy.run_module(request["module"], run_name="__main__", alter_sys=True)


def standard_stream(fd: int, name: str, mode: str, template):
    """sys.stdin/stdout/stderr over `fd`, built as the interpreter builds them at start-up: line
    buffered on a terminal (stderr always), encoding and errors as this interpreter's (the same
    environment, in the key)."""
    import io

    unbuffered = template.write_through  # PYTHONUNBUFFERED
    binary = io.open(fd, mode + "b", buffering=0 if unbuffered and mode == "w" else -1, closefd=False)
    raw = binary if unbuffered and mode == "w" else binary.raw
    raw.name = name
    return io.TextIOWrapper(binary, encoding=template.encoding, errors=template.errors, newline="\n",
                            line_buffering=not unbuffered and (raw.isatty() or fd == 2), write_through=unbuffered)
