"""A team's MLflow tracking server: runs and users in PostgreSQL, artifacts proxied by the server, MLflow's
basic-auth app.

    MLFLOW_AUTH_ADMIN_PASSWORD=... python team/tracking_server.py FOLDER [--host HOST] [--port PORT]

FOLDER holds all the server keeps: postgres/ (a PostgreSQL cluster of its own), artifacts/ (what clients log,
uploaded through the server, so they need no storage credentials), basic_auth.ini (MLflow's auth config) and
flask_secret_key. The first start creates the cluster with two databases, `mlflow` (experiments, runs, models)
and `mlflow_auth` (users and permissions, which MLflow keeps apart), and the admin user: named
MLFLOW_AUTH_ADMIN_USERNAME (default admin), with the password MLFLOW_AUTH_ADMIN_PASSWORD. Later starts reuse
them and ignore both variables (the admin changes passwords through MLflow's API). Every user can read
every experiment; writing to one takes a permission the admin grants (the README's "Team setup").

The server runs in the foreground until Ctrl-C or SIGTERM, then stops PostgreSQL too. PostgreSQL listens
only on a Unix socket inside its own folder (mode 0700), on no network port: just the cluster's owner and root
reach it, so it needs no password. PostgreSQL refuses to run as root: started by root, the cluster belongs
to the `postgres` user that Debian's package creates.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

DATABASES = ("mlflow", "mlflow_auth")  # runs, users: MLflow's auth app wants a database of its own
DB_USER = "mlflow"  # the cluster's superuser, the role the server connects as
ROOT_CLUSTER_USER = "postgres"  # Debian's package creates it
ADMIN_PASSWORD = "MLFLOW_AUTH_ADMIN_PASSWORD"  # MLflow's own variables, read by the server itself
ADMIN_USERNAME = "MLFLOW_AUTH_ADMIN_USERNAME"
MIN_PASSWORD = 12  # MLflow's minimum length of a user's password
SOCKET_PATH_MAX = 107  # sun_path, less its terminating NUL
SOCKET_NAME = ".s.PGSQL.5432"  # the port names the socket file even when no TCP port is open
START_TIMEOUT = 120  # seconds for PostgreSQL or the server to answer on a loaded machine
STOP_TIMEOUT = 30  # seconds for the server, then PostgreSQL, to stop by themselves


class UsageError(Exception):
    """A mistake in the arguments or the environment, described in one line."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(message)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = Parser(prog="python team/tracking_server.py", description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("folder", type=Path, help="where the server keeps its database, artifacts and auth config "
                        "(created on the first start)")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on: 0.0.0.0 for every interface "
                        "(default 127.0.0.1, this machine only)")
    parser.add_argument("--port", default="5000", help="the port to listen on (default 5000)")
    parser.add_argument("--workers", default="4", help="the server's worker processes (default 4)")
    parser.add_argument("--allowed-hosts", help="the Host names clients may use, comma-separated, when they are "
                        "not localhost or a private address (mlflow server --allowed-hosts)")
    parser.add_argument("--postgres-bin", type=Path, help="the folder of PostgreSQL's initdb and postgres "
                        "(default: from PATH, else the newest /usr/lib/postgresql/*/bin)")
    args = parser.parse_args(argv)
    args.port = number("--port", args.port, 1, 65535)
    args.workers = number("--workers", args.workers, 1, 64)
    return args


def number(option: str, text: str, low: int, high: int) -> int:
    if not text.isdigit() or not low <= int(text) <= high:
        raise UsageError(f"{option} {text!r}: not a whole number from {low} to {high}")
    return int(text)


# ---------------------------------------------------------------------------------------------
# Checks, all before anything is created or started

def find_postgres(given: Path | None = None) -> Path | None:
    """The folder holding PostgreSQL's server programs: `given`, else PATH's, else the newest of Debian's
    /usr/lib/postgresql/VERSION/bin (which it keeps off PATH); None when there is none."""
    def complete(folder: Path) -> bool:
        return all(os.access(folder / name, os.X_OK) for name in ("initdb", "postgres"))

    if given is not None:
        return given if complete(given) else None
    on_path = shutil.which("initdb")
    if on_path and complete(Path(on_path).parent):
        return Path(on_path).parent
    def version(folder: Path) -> tuple[int, ...]:  # 15, or 9.6 before PostgreSQL 10
        return tuple(int(part) for part in folder.parent.name.split(".") if part.isdigit())

    found = [folder for folder in map(Path, glob.glob("/usr/lib/postgresql/*/bin")) if complete(folder)]
    return max(found, key=version) if found else None


def major_version(postgres_bin: Path) -> str:
    """`postgres --version` prints e.g. `postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`."""
    out = subprocess.run([postgres_bin / "postgres", "--version"], capture_output=True, text=True, check=True).stdout
    return out.split()[2].split(".")[0]


def cluster_user() -> pwd.struct_passwd:
    """Who runs PostgreSQL: whoever runs this script, or, for root, the `postgres` user."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam(ROOT_CLUSTER_USER)
    except KeyError:
        raise UsageError(f"PostgreSQL refuses to run as root, and there is no user {ROOT_CLUSTER_USER!r} to run it; "
                         "install Debian's postgresql, which creates it, or run this script as another user") from None


def can_enter(user: pwd.struct_passwd, folder: Path) -> bool:
    info = folder.stat()
    if info.st_uid == user.pw_uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid in os.getgrouplist(user.pw_name, user.pw_gid):
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def check_folder(folder: Path, user: pwd.struct_passwd) -> None:
    """FOLDER is new, empty, or a server folder of this script's; its cluster's owner can reach it; the
    cluster's socket path fits in a socket address."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder}: not a folder; give a new or empty folder, or one this script made")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / "postgres" / "PG_VERSION").is_file():
        raise UsageError(f"{folder}: neither empty nor a tracking server's folder (no postgres/PG_VERSION); "
                         "give a new or empty folder, or one this script made")
    socket_path = folder / "postgres" / SOCKET_NAME
    if len(str(socket_path)) > SOCKET_PATH_MAX:
        raise UsageError(f"{folder}: too long a path for PostgreSQL's socket {socket_path} (at most {SOCKET_PATH_MAX} "
                         "characters); choose a shorter one")
    existing = folder if folder.exists() else next(p for p in folder.parents if p.exists())
    for ancestor in [existing, *existing.parents]:
        if not can_enter(user, ancestor):
            mode = stat.S_IMODE(ancestor.stat().st_mode)
            raise UsageError(f"{folder}: PostgreSQL runs as user {user.pw_name!r}, who may not enter {ancestor} "
                             f"(mode {mode:o}); choose a folder it can reach, e.g. under /srv")


def check_cluster_version(folder: Path, postgres_bin: Path) -> None:
    cluster = folder / "postgres"
    if (cluster / "PG_VERSION").is_file():
        made_by, have = (cluster / "PG_VERSION").read_text().strip(), major_version(postgres_bin)
        if made_by != have:
            raise UsageError(f"{cluster}: a PostgreSQL {made_by} cluster, but {postgres_bin} is PostgreSQL {have}; give "
                             f"--postgres-bin the folder of PostgreSQL {made_by}'s programs (or upgrade it with pg_upgrade)")


def check_port(host: str, port: int) -> None:
    try:
        with socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET):
            pass
    except OSError as error:
        raise UsageError(f"--host {host} --port {port}: cannot listen there ({error.strerror or error}); "
                         "choose a free port, or an address of this machine") from None


def check_admin_password(folder: Path) -> None:
    """The first start creates the admin user, so it needs a password MLflow accepts; later ones do not."""
    if (folder / "postgres" / "PG_VERSION").is_file():
        return
    if len(os.environ.get(ADMIN_PASSWORD, "")) < MIN_PASSWORD:
        raise UsageError(f"{ADMIN_PASSWORD}: {'too short' if os.environ.get(ADMIN_PASSWORD) else 'not set'}; the first "
                         f"start creates the admin user with this password (at least {MIN_PASSWORD} characters)")


# ---------------------------------------------------------------------------------------------
# PostgreSQL

def as_user(user: pwd.struct_passwd) -> dict:
    """subprocess arguments that run a program as `user` (no extra groups: root's are dropped)."""
    if os.geteuid() == user.pw_uid:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def create_cluster(folder: Path, postgres_bin: Path, user: pwd.struct_passwd) -> None:
    """initdb into postgres.partial, then renamed: an interrupted first start leaves no cluster that looks made."""
    cluster, partial = folder / "postgres", folder / "postgres.partial"
    if (cluster / "PG_VERSION").is_file():
        return
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(mode=0o700)
    os.chown(partial, user.pw_uid, user.pw_gid)
    # Local connections are trusted: only the owner of the socket's folder (and root) can reach them.
    # TCP is off; were it turned on, it would ask for a password, which no role has.
    result = subprocess.run(
        [postgres_bin / "initdb", "--pgdata", partial, "--username", DB_USER, "--auth-local", "trust",
         "--auth-host", "scram-sha-256", "--encoding", "UTF8", "--locale", "C"],
        cwd=partial, capture_output=True, text=True, **as_user(user),
    )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise UsageError(f"{partial}: initdb failed: {last}")
    partial.rename(cluster)


@contextlib.contextmanager
def running_postgres(folder: Path, postgres_bin: Path, user: pwd.struct_passwd):
    """PostgreSQL on the cluster in folder/postgres, listening on its socket there only; stopped (fast
    shutdown: open sessions are ended) on exit. Yields the socket's folder."""
    cluster = folder / "postgres"
    log = (folder / "postgres.log").open("a")
    server = subprocess.Popen(
        [postgres_bin / "postgres", "-D", cluster, "-c", "listen_addresses=", "-c", f"unix_socket_directories={cluster}"],
        cwd=cluster, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **as_user(user),
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not connectable(cluster):
            if server.poll() is not None:
                lines = (folder / "postgres.log").read_text().strip().splitlines() or ["no message"]
                raise UsageError(f"{cluster}: PostgreSQL exited with status {server.returncode}: {lines[-1]}")
            if time.monotonic() > deadline:
                raise UsageError(f"{cluster}: PostgreSQL did not answer within {START_TIMEOUT} s; "
                                 f"see {folder / 'postgres.log'}")
            time.sleep(0.2)
        yield cluster
    finally:
        stop(server, signal.SIGINT, group=False)
        log.close()


def connect(socket_folder: Path, database: str = "postgres"):
    import psycopg2  # the team extra's psycopg2-binary

    return psycopg2.connect(host=str(socket_folder), user=DB_USER, dbname=database, connect_timeout=5)


def connectable(socket_folder: Path) -> bool:
    import psycopg2

    try:
        connect(socket_folder).close()
        return True
    except psycopg2.OperationalError:
        return False


def create_databases(socket_folder: Path) -> None:
    from psycopg2 import sql

    connection = connect(socket_folder)
    connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
    try:
        with connection.cursor() as cursor:
            for name in DATABASES:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone() is None:
                    cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        connection.close()


def database_uri(socket_folder: Path, database: str) -> str:
    """SQLAlchemy's URI of a database reached through the socket; psycopg2 named, as MLflow's plain
    `postgresql://` means psycopg 3."""
    return f"postgresql+psycopg2://{DB_USER}@/{database}?host={urllib.parse.quote(str(socket_folder))}"


# ---------------------------------------------------------------------------------------------
# MLflow

def write_private(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    with open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(text)
    partial.rename(path)


def server_environment(folder: Path, socket_folder: Path) -> dict[str, str]:
    """The auth config (written on every start: it names the socket, which moves with FOLDER) and the Flask
    secret that signs the UI's forms, the same in every worker and across restarts."""
    config = folder / "basic_auth.ini"
    auth_uri = database_uri(socket_folder, "mlflow_auth").replace("%", "%%")  # configparser's escape
    write_private(config, "[mlflow]\n"
                          "default_permission = READ\n"
                          f"database_uri = {auth_uri}\n"
                          "admin_username = admin\n"
                          "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    key_file = folder / "flask_secret_key"
    if not key_file.exists():
        write_private(key_file, secrets.token_hex(32) + "\n")
    environment = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(config)}
    environment.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no network at run time by default (pipeline/__init__.py)
    environment.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", key_file.read_text().strip())
    return environment


def shown_address(host: str, port: int) -> str:
    name = socket.gethostname() if host in ("0.0.0.0", "::") else host
    return f"http://[{name}]:{port}" if ":" in name else f"http://{name}:{port}"


def answers(host: str, port: int) -> bool:
    local = "127.0.0.1" if host == "0.0.0.0" else "::1" if host == "::" else host
    url = f"http://[{local}]:{port}/health" if ":" in local else f"http://{local}:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def stop(process: subprocess.Popen, sig: int, group: bool) -> None:
    """Send `sig` to the process (with `group`, to its whole session: the server's workers and job runners
    too) and wait until it, or its whole group, is gone; SIGKILL what lingers after STOP_TIMEOUT seconds."""
    def alive() -> bool:
        if not group:
            return process.poll() is None
        process.poll()  # reaps the leader; the rest of the group is reaped by whoever adopted it
        try:
            os.killpg(process.pid, 0)
            return True
        except ProcessLookupError:
            return False

    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(process.pid, sig)
        elif process.poll() is None:
            process.send_signal(sig)
    deadline = time.monotonic() + STOP_TIMEOUT
    while alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def serve(args: argparse.Namespace, socket_folder: Path) -> int:
    (args.folder / "artifacts").mkdir(mode=0o700, exist_ok=True)
    command = [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
               "--backend-store-uri", database_uri(socket_folder, "mlflow"),
               "--serve-artifacts", "--artifacts-destination", str(args.folder / "artifacts"),
               "--host", args.host, "--port", str(args.port), "--workers", str(args.workers)]
    if args.allowed_hosts:
        command += ["--allowed-hosts", args.allowed_hosts]
    # A session of its own: the server's workers are its children, and stopping it means stopping them all.
    server = subprocess.Popen(command, env=server_environment(args.folder, socket_folder), start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not answers(args.host, args.port):
            if server.poll() is not None:
                print(f"error: mlflow server exited with status {server.returncode} (its messages are above)",
                      file=sys.stderr)
                return 1
            if time.monotonic() > deadline:
                print(f"error: mlflow server did not answer within {START_TIMEOUT} s", file=sys.stderr)
                return 1
            time.sleep(0.5)
        print(f"tracking server ready: MLFLOW_TRACKING_URI={shown_address(args.host, args.port)}; PostgreSQL in "
              f"{args.folder / 'postgres'}, artifacts in {args.folder / 'artifacts'}; Ctrl-C stops both", flush=True)
        return server.wait()
    finally:
        stop(server, signal.SIGTERM, group=True)


class Stopped(Exception):
    """SIGTERM: stop as Ctrl-C does, through the `finally` clauses that stop the server and PostgreSQL."""


def raise_stopped(signum, frame):
    raise Stopped


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse(argv)
        args.folder = args.folder.absolute()
        check_admin_password(args.folder)
        check_port(args.host, args.port)
        user = cluster_user()
        check_folder(args.folder, user)
        postgres_bin = find_postgres(args.postgres_bin)
        if postgres_bin is None:
            where = args.postgres_bin or "PATH or /usr/lib/postgresql/*/bin"
            raise UsageError(f"PostgreSQL's initdb and postgres not found in {where}; install Debian's postgresql "
                             "(apt-get install postgresql), or give their folder with --postgres-bin")
        check_cluster_version(args.folder, postgres_bin)
        try:
            import psycopg2  # noqa: F401  (the server's database driver, here too)
        except ImportError:
            raise UsageError("psycopg2 is not installed: `pip install -e '.[team]'` (psycopg2-binary) in this "
                             "environment") from None
        args.folder.mkdir(mode=0o711, parents=True, exist_ok=True)  # 0711: the cluster's owner passes through
        create_cluster(args.folder, postgres_bin, user)
        signal.signal(signal.SIGTERM, raise_stopped)
        with running_postgres(args.folder, postgres_bin, user) as socket_folder:
            create_databases(socket_folder)
            return serve(args, socket_folder)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Stopped):
        return 0


if __name__ == "__main__":
    sys.exit(main())
