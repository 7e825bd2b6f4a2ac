"""pipeline.files: what the project may write or delete, and writes that replace a file or a folder whole.

Each test points files.ROOT at a temporary folder laid out as the repository is. A real full disk is in
tests/e2e/test_disk_full.py; here a full disk is an ENOSPC raised where a filesystem that allocates late
reports it (at fsync).
"""

from __future__ import annotations

import errno
import os
import stat

import pytest

from pipeline import files


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "ROOT", tmp_path)
    return tmp_path


def test_owned_paths_lie_strictly_inside_a_folder_the_project_writes(root, monkeypatch):
    assert files.owned(root / "models" / "mlp_digits") == root / "models" / "mlp_digits"
    assert files.owned(root / "data" / "prepared" / "digits" / ".." / "karate") == root / "data" / "prepared" / "karate"
    monkeypatch.chdir(root)
    assert files.owned("checkpoints/x/last.ckpt") == root / "checkpoints" / "x" / "last.ckpt"
    refused = [root / "models", root / "data" / "prepared", root / "data", root, root / "params.yaml",
               root / "models" / ".." / "pipeline", root / "checkpoints" / ".." / ".." / "elsewhere", root / "modelsx" / "a",
               "/etc/passwd"]
    for path in refused:
        with pytest.raises(ValueError, match=r"^refusing to write or delete .*: outside the folders the project owns "
                                             r"\(checkpoints, models, data/prepared, data/raw, scorers, baselines, plots, "):
            files.owned(path)


def test_owned_judges_the_path_as_written_not_where_a_symlink_leads(root, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("user_disk")
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "x").symlink_to(elsewhere)  # the user's: checkpoints of x on another disk
    assert files.owned(root / "checkpoints" / "x" / "last.ckpt") == root / "checkpoints" / "x" / "last.ckpt"


def test_remove_unlinks_a_symlink_and_never_deletes_what_it_points_to(root, tmp_path_factory):
    outside = tmp_path_factory.mktemp("keep")
    (outside / "precious.txt").write_text("mine")
    (root / "models" / "a").mkdir(parents=True)
    (root / "models" / "a" / "inner").symlink_to(outside)
    (root / "models" / "b").symlink_to(outside)
    files.remove(root / "models" / "b")
    files.remove(root / "models" / "a")
    files.remove(root / "models" / "never_there")
    assert not os.path.lexists(root / "models" / "b") and not (root / "models" / "a").exists()
    assert (outside / "precious.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="refusing to write or delete"):
        files.remove(outside)
    assert (outside / "precious.txt").exists()


def test_write_bytes_replaces_the_file_whole_with_a_plain_file_mode(root):
    path = root / "metrics" / "x.json"
    files.write_text(path, "old\n")
    files.write_bytes(path, b"new\n")
    assert path.read_bytes() == b"new\n"
    assert os.listdir(path.parent) == ["x.json"]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # as open() makes it, not mkstemp's 0o600
    with pytest.raises(ValueError, match="refusing to write or delete"):
        files.write_bytes(root / "params.yaml", b"")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_at_sync_keeps_the_old_file_and_says_what_was_needed(root, monkeypatch, code):
    path = root / "models" / "x" / "best.ckpt"
    files.write_bytes(path, b"old weights")

    def full(descriptor):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(files.DiskFull, match=r"^models/x/best\.ckpt: no space left on device \(2\.0 KiB to write, "
                                              r"[0-9.]+ [KMGT]iB free there\); free some space, then rerun: "
                                              r"nothing was replaced$") as raised:
        files.write_bytes(path, bytes(2048))
    assert raised.value.needed == 2048 and raised.value.__cause__.errno == code
    assert path.read_bytes() == b"old weights"
    assert os.listdir(path.parent) == ["best.ckpt"]


def test_an_error_while_writing_deletes_the_temporary_file(root):
    path = root / "plots" / "curve.csv"
    with pytest.raises(RuntimeError):
        with files.replacing(path) as handle:
            handle.write(b"half")
            raise RuntimeError("the writer failed")
    assert os.listdir(path.parent) == []


def test_replace_dir_puts_the_new_folder_in_place_of_the_old(root):
    target = root / "data" / "prepared" / "digits"
    for folder, content in ((target, "old"), (root / "data" / "prepared" / ".digits.partial", "new")):
        folder.mkdir(parents=True)
        (folder / "train.pt").write_text(content)
    (root / "data" / "prepared" / ".digits.old").mkdir()  # a replacement killed between its renames left it
    files.replace_dir(root / "data" / "prepared" / ".digits.partial", target)
    assert (target / "train.pt").read_text() == "new"
    assert sorted(os.listdir(target.parent)) == ["digits"]
    staging = root / "data" / "prepared" / ".karate.partial"
    staging.mkdir()
    files.replace_dir(staging, root / "data" / "prepared" / "karate")  # no old folder: just moved in
    assert (root / "data" / "prepared" / "karate").is_dir()
    with pytest.raises(ValueError, match="refusing to write or delete"):
        files.replace_dir(root / "data" / "prepared" / "karate", root / "data" / "prepared")


def test_a_replacement_that_fails_puts_the_old_folder_back(root, monkeypatch):
    target = root / "models" / "x"
    staging = root / "models" / ".x.partial"
    for folder, content in ((target, "old"), (staging, "new")):
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(content)
    renames = []
    rename = os.rename

    def failing_second(source, destination):
        renames.append(source)
        if len(renames) == 2:  # the old folder is aside, the new one not yet in place
            raise OSError(errno.EIO, "input/output error")
        rename(source, destination)

    monkeypatch.setattr(files.os, "rename", failing_second)
    with pytest.raises(OSError):
        files.replace_dir(staging, target)
    assert (target / "run.json").read_text() == "old" and (staging / "run.json").read_text() == "new"


def test_sizes_read_as_people_write_them():
    assert [files.human_size(n) for n in (0, 1023, 1536, 5 << 20, 3 << 30)] == [
        "0 bytes", "1023 bytes", "1.5 KiB", "5.0 MiB", "3.0 GiB"]


def test_a_benchmark_report_goes_to_benchmarks_md_or_into_bench_results_only(root, monkeypatch):
    import argparse

    assert files.bench_report(root / "BENCHMARKS.md") == root / "BENCHMARKS.md"
    assert files.bench_report(root / "bench" / "results" / "gpu.md") == root / "bench" / "results" / "gpu.md"
    monkeypatch.chdir(root)
    assert files.bench_report("bench/results/x/loop.json") == root / "bench" / "results" / "x" / "loop.json"
    for path in (root / "bench" / "results", root / "bench" / "gpu_check.py", root / "README.md", root / "params.yaml",
                 root / "bench" / "results" / ".." / "iteration.py", "/etc/passwd", root / "BENCHMARKS.md" / "x"):
        with pytest.raises(argparse.ArgumentTypeError, match=r": a benchmark report goes to BENCHMARKS.md or into bench/results/$"):
            files.bench_report(path)
    files.write_report(root / "bench" / "results" / "new" / "r.md", "table")  # creates its folder
    assert (root / "bench" / "results" / "new" / "r.md").read_text() == "table"
    with pytest.raises(argparse.ArgumentTypeError):
        files.write_report(root / "notes.md", "table")
    assert not (root / "notes.md").exists()


def test_a_rewritten_benchmark_report_keeps_what_is_written_by_hand_below_its_marker(root):
    report = root / "BENCHMARKS.md"
    hand = f"{files.KEPT_BELOW}\n## Issue 24\n\nmeasured by hand\n"
    report.write_text(f"# Benchmarks\n\nold table\n\n{hand}")
    files.write_report(report, "# Benchmarks\n\nnew table\n")
    assert report.read_text() == f"# Benchmarks\n\nnew table\n\n{hand}"
    files.write_report(root / "bench" / "results" / "r.md", "table")  # no marker: replaced whole
    files.write_report(root / "bench" / "results" / "r.md", "other")
    assert (root / "bench" / "results" / "r.md").read_text() == "other"
