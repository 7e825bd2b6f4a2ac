"""team/tracking_server.py's checks: each mistake is one line, found before anything is created or started.
The server itself, on PostgreSQL, is tested in tests/e2e/test_team.py."""

from __future__ import annotations

import os
import pwd
import re
import socket
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from slurm_cluster import free_port

from team import tracking_server

PASSWORD = "a-long-admin-password"


def refused(argv: list[str], capsys) -> str:
    """The script's one line for `argv` (on a free port unless it names one: 5000 may be busy here)."""
    if "--port" not in argv:
        argv = [*argv, "--port", free_port()]
    assert tracking_server.main([str(a) for a in argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1, err
    return err.strip()


@pytest.fixture
def admin_password(monkeypatch):
    monkeypatch.setenv(tracking_server.ADMIN_PASSWORD, PASSWORD)


@pytest.fixture
def reachable():
    """A folder outside pytest's (mode 0700, which the postgres user cannot enter when the tests run as root)."""
    folder = Path(tempfile.mkdtemp(prefix="medl-team-"))
    folder.chmod(0o711)
    yield folder
    shutil.rmtree(folder)


@pytest.mark.parametrize("option, value, allowed", [("--port", "0", "1 to 65535"), ("--port", "http", "1 to 65535"),
                                                     ("--workers", "0", "1 to 64"), ("--workers", "2.5", "1 to 64")])
def test_a_number_out_of_range_is_named(option, value, allowed, tmp_path, capsys):
    assert refused([tmp_path / "server", option, value], capsys) == f"error: {option} {value!r}: not a whole number from {allowed}"


def test_an_unknown_option_is_one_line(tmp_path, capsys):
    assert refused([tmp_path / "server", "--post", "5000"], capsys) == "error: unrecognized arguments: --post 5000"


def test_the_first_start_needs_an_admin_password_mlflow_accepts(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(tracking_server.ADMIN_PASSWORD, raising=False)
    assert refused([tmp_path / "server"], capsys).startswith(f"error: {tracking_server.ADMIN_PASSWORD}: not set; the first start")
    monkeypatch.setenv(tracking_server.ADMIN_PASSWORD, "short")
    assert refused([tmp_path / "server"], capsys).startswith(f"error: {tracking_server.ADMIN_PASSWORD}: too short")
    assert "short" not in refused([tmp_path / "server"], capsys).replace("too short", "")  # the value is never shown
    assert not (tmp_path / "server").exists()


def test_a_folder_of_something_else_is_refused(tmp_path, capsys, admin_password):
    (tmp_path / "notes.txt").write_text("not a tracking server's")
    message = refused([tmp_path], capsys)
    assert message == (f"error: {tmp_path}: neither empty nor a tracking server's folder (no postgres/PG_VERSION); "
                       "give a new or empty folder, or one this script made")
    assert refused([tmp_path / "notes.txt"], capsys).startswith(f"error: {tmp_path / 'notes.txt'}: not a folder")


def test_a_port_in_use_is_named(tmp_path, capsys, admin_password):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        message = refused([tmp_path / "server", "--port", port], capsys)
    assert re.fullmatch(rf"error: --host 127\.0\.0\.1 --port {port}: cannot listen there \(.+\); choose a free port, "
                        "or an address of this machine", message), message
    assert not (tmp_path / "server").exists()


def test_a_socket_path_too_long_is_refused(tmp_path, capsys, admin_password):
    deep = tmp_path / ("x" * 100)
    assert refused([deep], capsys).startswith(f"error: {deep}: too long a path for PostgreSQL's socket")


def test_missing_postgresql_programs_are_named(reachable, tmp_path, capsys, admin_password):
    message = refused([reachable / "server", "--postgres-bin", tmp_path], capsys)
    assert message == (f"error: PostgreSQL's initdb and postgres not found in {tmp_path}; install Debian's postgresql "
                       "(apt-get install postgresql), or give their folder with --postgres-bin")


@pytest.mark.skipif(os.geteuid() != 0, reason="as root only: PostgreSQL then runs as the postgres user")
def test_as_root_a_folder_the_postgres_user_cannot_reach_is_refused(tmp_path, capsys, admin_password):
    try:
        pwd.getpwnam(tracking_server.ROOT_CLUSTER_USER)
    except KeyError:
        pytest.skip("no postgres user (Debian's postgresql creates it)")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    message = refused([private / "server"], capsys)
    assert message.startswith(f"error: {private / 'server'}: PostgreSQL runs as user 'postgres', who may not enter ")
    assert not (private / "server").exists()


def test_a_cluster_of_another_postgresql_version_is_named(reachable, capsys, admin_password):
    postgres_bin = tracking_server.find_postgres()
    if postgres_bin is None:
        pytest.skip("PostgreSQL unavailable (install Debian's postgresql)")
    (reachable / "server" / "postgres").mkdir(parents=True)
    (reachable / "server" / "postgres" / "PG_VERSION").write_text("9\n")
    have = tracking_server.major_version(postgres_bin)
    assert refused([reachable / "server"], capsys) == (
        f"error: {reachable / 'server' / 'postgres'}: a PostgreSQL 9 cluster, but {postgres_bin} is PostgreSQL {have}; "
        "give --postgres-bin the folder of PostgreSQL 9's programs (or upgrade it with pg_upgrade)")
