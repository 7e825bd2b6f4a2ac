"""The folders the project writes, and how it writes and deletes in them.

Names from params.yaml (experiments, sweeps) become paths. They are validated when params are read;
`owned` is the guard behind that check: nothing is written or deleted outside the folders below, so a
bug that lets `..` through cannot empty a folder of the user's.

A file is written to a temporary file in its own folder, synced, then renamed over the old one: a
kill, a preemption or a full disk leaves the old file or the new one, never part of either. (A
temporary file under $TMPDIR would not do: where $TMPDIR is another filesystem, the final move is a
copy in place.) A folder is replaced the same way, as a whole.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import secrets
import shutil
from pathlib import Path
from typing import BinaryIO, Iterator

from pipeline.base import ROOT, ConfigError

# Relative to ROOT. A path strictly inside one of these may be written or deleted; the folder itself may not.
OWNED = ("checkpoints", "models", "data/prepared", "data/raw", "scorers", "baselines", "plots", "metrics", "reports",
         "sweeps", "mlruns", "codedeps", "runs")
# Where the benchmark scripts (bench/*.py --out) write their reports, which people read and commit.
BENCH_REPORTS = ("BENCHMARKS.md", "bench/results")  # the file itself; any file strictly inside the folder
FULL = (errno.ENOSPC, errno.EDQUOT)  # the errors of a full disk or an exhausted quota


class DiskFull(ConfigError):
    """A write that found no space; the file it would have replaced is intact."""

    def __init__(self, path: Path, needed: int):
        self.path = Path(path)
        self.needed = needed
        self.free = free_space(self.path)
        super().__init__(f"{shown(self.path)}: no space left on device ({human_size(needed)} to write, "
                         f"{human_size(self.free)} free there); free some space, then rerun: nothing was replaced")


def owned(path: str | os.PathLike) -> Path:
    """`path` made absolute and normalized lexically, if it lies strictly inside one of OWNED.

    Lexically, not resolved: a symlink the user placed (checkpoints/ on another disk) is theirs to
    keep, and its target is not ours to judge."""
    absolute = Path(os.path.abspath(path))  # abspath normalizes: a/b/../c -> a/c
    for folder in OWNED:
        base = ROOT / folder
        if absolute != base and absolute.is_relative_to(base):
            return absolute
    raise ValueError(f"refusing to write or delete {path}: outside the folders the project owns "
                     f"({', '.join(OWNED)} under {ROOT})")


def remove(path: str | os.PathLike) -> None:
    """Delete a file or a folder the project owns; a symlink is unlinked, never followed. Missing is fine."""
    path = owned(path)
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)  # unlinks the symlinks inside too, without following them
        else:
            path.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace the owned file `path` by `data`, all at once; DiskFull, with the old file intact, on a full disk."""
    with replacing(owned(path), size=len(data)) as handle:
        handle.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def bench_report(value: str | os.PathLike) -> Path:
    """A bench script's --out, checked where it is read (an argparse `type`): BENCHMARKS.md or a file in
    bench/results/, so a mistyped path can never overwrite a file of the user's."""
    absolute = Path(os.path.abspath(value))
    summary, folder = (ROOT / name for name in BENCH_REPORTS)
    if absolute == summary or (absolute != folder and absolute.is_relative_to(folder)):
        return absolute
    raise argparse.ArgumentTypeError(f"{value}: a benchmark report goes to {shown(summary)} or into {shown(folder)}/")


# In a benchmark report, the line after which people write by hand: a script's rewrite keeps it and what follows.
KEPT_BELOW = "<!-- Written by hand from here on: the bench scripts keep it when they rewrite what is above. -->"


def write_report(path: str | os.PathLike, text: str) -> None:
    """Replace a benchmark report (see bench_report), creating its folder: whole, but for what follows
    its KEPT_BELOW line, if it has one (the measurements written by hand that sit beside the tables)."""
    path = bench_report(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if KEPT_BELOW in old:
        text = f"{text.rstrip()}\n\n{old[old.index(KEPT_BELOW):]}"
    data = text.encode("utf-8")
    with replacing(path, size=len(data)) as handle:
        handle.write(data)


@contextlib.contextmanager
def replacing(path: str | os.PathLike, size: int | None = None) -> Iterator[BinaryIO]:
    """A binary file to write `path`'s new content into. It is a temporary file beside `path`; when the
    block ends without error it is synced and renamed over `path`, otherwise deleted.

    For a path its caller chose rather than one made of a name (the checkpoint folder Lightning is
    given, a download, a report folder); `write_bytes` checks ownership first. `size`: the bytes to be
    written, for DiskFull's message (else the bytes written when the disk was found full)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")  # a random name: only ours
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # 0o666 less the umask, as a plain open would make it (mkstemp's 0o600 would stay on the final file)
        with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        sync_folder(path.parent)
    except BaseException as error:
        written = 0
        if temporary.exists():  # not yet renamed: deleted, before the free space is measured
            written = temporary.stat().st_size
            temporary.unlink()
        if isinstance(error, OSError) and error.errno in FULL:
            raise DiskFull(path, size if size is not None else written) from error
        raise


def replace_dir(staging: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put the complete folder `staging` in the place of `target` (if any), both owned.

    The old folder is renamed aside to .NAME.old, `staging` renamed to `target`, then the old one
    deleted: whatever stops this, `target` is the old folder or the new one in full, or (between the
    two renames) missing with the old one beside it, never a mix. Its files are synced first, so that
    a crash after the rename cannot leave them empty."""
    staging, target = owned(staging), owned(target)
    try:
        sync_tree(staging)
    except OSError as error:
        if error.errno in FULL:
            raise DiskFull(target, tree_size(staging)) from error
        raise
    aside = owned(target.with_name(f".{target.name}.old"))
    remove(aside)  # left by a replacement that was killed between its renames
    had_target = os.path.lexists(target)
    if had_target:
        os.rename(target, aside)
    try:
        os.rename(staging, target)
    except BaseException:
        if had_target:
            os.rename(aside, target)
        raise
    sync_folder(target.parent)
    remove(aside)


def sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (its directory entry synced)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP):  # a filesystem that cannot sync a folder
            raise
    finally:
        os.close(descriptor)


def sync_tree(folder: Path) -> None:
    """Sync every file under `folder`, then the folders themselves."""
    for where, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(where, name)
            if not os.path.islink(path):
                descriptor = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(descriptor)
                finally:
                    os.close(descriptor)
        sync_folder(Path(where))


def tree_size(folder: Path) -> int:
    return sum(os.path.getsize(os.path.join(where, name)) for where, _, names in os.walk(folder) for name in names)


def free_space(path: Path) -> int:
    """The bytes free on the filesystem that holds `path` (or its nearest existing folder)."""
    for folder in (path, *path.parents):
        if folder.exists():
            return shutil.disk_usage(folder).free
    return 0


def human_size(count: int) -> str:
    """1536 -> "1.5 KiB"."""
    if count < 1024:
        return f"{count} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        count /= 1024
        if count < 1024 or unit == "TiB":
            return f"{count:.1f} {unit}"


def shown(path: str | os.PathLike) -> str:
    """A path as a message shows it: relative to the repository when inside it."""
    path = Path(os.path.abspath(path))
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
