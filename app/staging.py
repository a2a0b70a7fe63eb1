"""A build's output folder, replaced whole: `fusionrank build` writes into a fresh staging
folder beside --out and switches it in only once it is complete.

Why: `fusionrank deploy` hard-links a build's files into the serving repository. A build that
wrote into the files of an --out that had been deployed would write into the serving version
under the server's feet (its SHA-256 manifests would no longer match: the next model load
fails). Switching folders only moves and unlinks names, so the serving repository's links keep
the old files, byte for byte. A build that fails or is interrupted leaves the previous --out as
it was and removes its staging folder.

    with staged_output(Path("build")) as staging:
        ...write the build into `staging`...
    # now build/ is the new build; the old one's files live on only where linked
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import psutil

from fusionrank.app import control
from fusionrank.core import artefacts

# The folders a build writes: an existing --out holding neither is not a build's, and is refused
# rather than replaced.
BUILD_FOLDERS = ("artefacts", "model_repository")
REPOSITORY = "model_repository"  # rewritten whole by every build: never carried over
# ...nor the control records of the servers that served it (app/control.py).
OWN_FOLDERS = (REPOSITORY, control.control_folder(Path(REPOSITORY)).name)
STAGING_PREFIX = ".{name}.staging-{pid}-"  # beside --out; the pid tells whether it is abandoned


class OutputError(ValueError):
    """An --out a build must not replace; the message says why and what to do."""


@contextlib.contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """A fresh, empty folder beside `out` (same file system, so the switch is a rename) to
    build into. When the block completes, the files of the old `out` that the build did not
    write are linked into it (they are what the build keeps from the last one: an engine built
    beside the encoder, say; never the old model repository) and it is switched in as `out`;
    when the block raises, it is removed and `out` is left untouched."""
    out = Path(out)
    refuse_unsafe_output(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_staging(out)
    staging = out.parent / (STAGING_PREFIX.format(name=out.name, pid=os.getpid())
                            + secrets.token_hex(4))
    staging.mkdir()  # with the mode a new --out would have (the umask's)
    try:
        yield staging
        refuse_unsafe_output(out)  # again: a server may have started on it meanwhile
        if out.exists():
            carry_over(out, staging)
        switch_in(staging, out)
    finally:
        # The failed build's folder, or (after an exchange) the old --out.
        shutil.rmtree(staging, ignore_errors=True)


def refuse_unsafe_output(out: Path) -> None:
    """An --out a build may replace: new, empty, or an earlier build's folder that no running
    server serves from directly."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not any(
            (out / name).is_dir() for name in BUILD_FOLDERS):
        raise OutputError(f"--out {out} holds files that are not a build's (no "
                          f"{' or '.join(f'{n}/' for n in BUILD_FOLDERS)}): a build replaces "
                          "the whole folder; choose a new or empty one")
    servers = servers_inside(out)
    if servers:
        pid, repository = next(iter(servers.items()))
        raise OutputError(
            f"--out {out} holds {repository}, which a running server serves directly "
            f"(tritonserver pid {pid}): build into another folder and roll it out with "
            f"`fusionrank deploy --repository {repository} --source NEW/{REPOSITORY}`")


def servers_inside(out: Path) -> dict[int, Path]:
    """{tritonserver pid: the repository it serves} for each running server whose model
    repository lies in `out`: those `fusionrank serve` recorded beside out/model_repository
    (control.py), and any other tritonserver by its command line (one still loading its models
    has no record yet; one started by hand never has)."""
    found = {record.server_pid: Path(record.repository)
             for record in control.live_records(out / REPOSITORY)}
    folder = out.resolve()
    for pid, repository in served_repositories():
        if repository == folder or folder in repository.parents:
            found[pid] = repository
    return found


def carry_over(old: Path, new: Path) -> None:
    """Link into `new` each file of `old` that `new` lacks (symbolic links re-created as
    such), the old model repository aside: it is what a build has always kept of the last one
    (a stale model in the repository would be served, so that is rewritten whole)."""
    for folder, subfolders, files in os.walk(old):
        here = Path(folder)
        target = new / here.relative_to(old)
        if here == old:  # the old repository, and its servers' control records
            subfolders[:] = [d for d in subfolders if d not in OWN_FOLDERS]
        if not target.exists():
            target.mkdir()
            shutil.copystat(here, target)  # a folder of mode 0700 stays 0700
        for name in [*files, *(d for d in subfolders if (here / d).is_symlink())]:
            source, destination = here / name, target / name
            if destination.exists() or destination.is_symlink():
                continue  # this build wrote its own
            if source.is_symlink():
                destination.symlink_to(os.readlink(source))
            else:
                artefacts.link_or_copy(source, destination)


def switch_in(staging: Path, out: Path) -> None:
    """Make `staging` the folder `out`. Where `out` exists, the two are exchanged in one step
    where the system can (`staging` then names the old build, for the caller to remove), else
    the old one is renamed aside and removed: no file of it is ever written to."""
    if not out.exists():
        staging.rename(out)
        return
    if exchange(staging, out):
        return
    aside = staging.with_name(staging.name + ".old")
    out.rename(aside)
    staging.rename(out)
    shutil.rmtree(aside, ignore_errors=True)


AT_FDCWD = -100
RENAME_EXCHANGE = 2  # linux/fs.h


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux `renameat2(RENAME_EXCHANGE)`), so that `b` is never
    missing, not even for an instant; False where the system or the file system cannot."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def remove_abandoned_staging(out: Path) -> None:
    """The staging folders beside `out` of builds that were killed (their process is gone)."""
    for folder in out.parent.glob(STAGING_PREFIX.format(name=out.name, pid="*") + "*"):
        pid = folder.name[len(f".{out.name}.staging-"):].split("-")[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def served_repositories() -> Iterator[tuple[int, Path]]:
    """(pid, model repository) of each tritonserver running on this machine, read from its
    command line: any server, started by `fusionrank serve`, a test or by hand."""
    # process_iter fills in None for what it may not read (another user's process, a zombie).
    for process in psutil.process_iter(["cmdline", "cwd"]):
        argv, cwd = process.info["cmdline"], process.info["cwd"]
        if not argv or not cwd or Path(argv[0]).name != "tritonserver":
            continue
        cwd = Path(cwd)  # where a relative repository path starts
        for i, arg in enumerate(argv):
            for flag in ("--model-repository", "--model-store"):
                if arg.startswith(flag + "="):
                    yield process.pid, (cwd / arg.split("=", 1)[1]).resolve()
                elif arg == flag and i + 1 < len(argv):
                    yield process.pid, (cwd / argv[i + 1]).resolve()
