"""Issue 22, point 6: what the command line says when the file system or the memory says no. Each
case is refused with exit code 2 and one whole message (value included), no traceback, and no file
of the user's changed: a run name too long for a file name, a run too large for the memory with
the resource check off, a read-only or unwritable folder (the path, in words, not an errno), a
report whose target cannot be written (the target, not its temporary file), a full disk (said so,
also when NumPy reports only "32000 requested and 4592 written"). The file system faults are
injected (the tests run as root, whom permissions do not stop); where this process may mount a
tmpfs, the read-only and the full disk are also real."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections import namedtuple
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from collapselab import store
from collapselab.cli import app

GAUSS = "generations: 3\nchains: 5\nmodel: {family: gaussian}\ndata: {source: normal, size: 20}\n"
EROFS = os.strerror(errno.EROFS)  # Read-only file system
EACCES = os.strerror(errno.EACCES)  # Permission denied
ENOSPC = os.strerror(errno.ENOSPC)  # No space left on device


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def refused(root: Path, *args: Any) -> str:
    """Exit 2, one error, no traceback, nothing under ``root`` changed; the output, whole."""
    before = snapshot(root)
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.count("error:") == 1, result.output
    assert snapshot(root) == before
    return result.output


@pytest.fixture
def user(tmp_path) -> Path:
    """A user's folder: a config and a finished tiny run (runs/done) to report."""
    (tmp_path / "g.yaml").write_text(GAUSS)
    result = CliRunner().invoke(app, ["run", str(tmp_path / "g.yaml"), "name=done",
                                      f"out_dir={tmp_path / 'runs'}", "--no-report"])
    assert result.exit_code == 0, result.output
    return tmp_path


# ----------------------------------------------------------------- names and memory


def test_a_run_name_too_long_for_a_file_name_is_a_config_error(user):
    name = "a" * 300
    out = refused(user, "run", user / "g.yaml", f"name={name}", f"out_dir={user / 'runs'}")
    assert out == ("error: invalid config (1 problem):\n"
                   f"  - name: String should have at most 200 characters; got '{name}'\n")


def test_a_run_too_large_for_the_memory_is_refused_in_words(user):
    """The resource check off: the allocation fails (14.2 PiB: more than any address space, so
    it fails whatever the kernel's overcommit policy) and is said to be memory, not a traceback."""
    out = refused(user, "run", user / "g.yaml", "chains=100000000000000", "--no-resource-check",
                  f"out_dir={user / 'runs'}", "name=huge")
    assert out == ("error: out of memory: unable to allocate 14.2 PiB for an array with shape "
                   "(100000000000000, 20, 1) and data type float64; lower chains, data.size or "
                   "synthetic_size (the resource check, on unless --no-resource-check, "
                   "estimates a run's memory before it starts)\n")
    assert not (user / "runs" / "huge").exists()


# ----------------------------------------------------------------- read-only, unwritable


def refuse_under(mp: pytest.MonkeyPatch, folder: Path, code: int) -> None:
    """Creating, writing or removing anything under ``folder`` fails with ``code``, as on a
    read-only file system (which refuses an unlink even of a file that is not there)."""
    folder = folder.absolute()

    def under(path: Any) -> bool:
        return Path(os.path.abspath(os.fspath(path))).is_relative_to(folder)

    def fail(path: Any) -> OSError:
        return OSError(code, os.strerror(code), os.fspath(path))

    mkdir, open_, unlink = Path.mkdir, open, Path.unlink

    def mkdir_(self: Path, *args: Any, **kwargs: Any) -> None:
        if under(self) and self.parent.is_dir():  # else: its parent first (ENOENT), as a kernel
            raise fail(self)
        return mkdir(self, *args, **kwargs)

    def open_store(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if under(path) and any(m in mode for m in "wax+"):
            raise fail(path)
        return open_(path, mode, *args, **kwargs)

    def unlink_(self: Path, *args: Any, **kwargs: Any) -> None:
        if under(self):
            raise fail(self)
        return unlink(self, *args, **kwargs)

    mp.setattr(Path, "mkdir", mkdir_)
    mp.setattr(Path, "unlink", unlink_)
    mp.setattr(store, "open", open_store, raising=False)


@pytest.mark.parametrize("code,words", [(errno.EROFS, EROFS), (errno.EACCES, EACCES)])
def test_a_run_into_a_folder_it_cannot_write_names_the_folder(user, monkeypatch, code, words):
    (user / "shelf").mkdir()
    refuse_under(monkeypatch, user / "shelf", code)
    out = refused(user, "run", user / "g.yaml", f"out_dir={user / 'shelf' / 'runs'}")
    assert out == f"error: cannot write {user / 'shelf' / 'runs'}: {words}\n"


@pytest.mark.parametrize("code,words", [(errno.EROFS, EROFS), (errno.EACCES, EACCES)])
def test_a_sweep_into_a_folder_it_cannot_write_names_the_folder(user, monkeypatch, code, words):
    (user / "s.yaml").write_text(f"base: {user / 'g.yaml'}\ngrid: {{seed: [0, 1]}}\n"
                                 f"out_dir: {user / 'shelf' / 'sweep'}\n")
    (user / "shelf").mkdir()
    refuse_under(monkeypatch, user / "shelf", code)
    out = refused(user, "sweep", user / "s.yaml")
    assert out.endswith(f"error: cannot write {user / 'shelf' / 'sweep'}: {words}\n"), out


@pytest.mark.parametrize("code,words", [(errno.EROFS, EROFS), (errno.EACCES, EACCES)])
def test_a_report_whose_target_cannot_be_written_names_the_target(user, monkeypatch, code,
                                                                  words):
    """Not its temporary file (``.r.html.tmp-<pid>``), which a read-only file system also
    refuses to remove."""
    (user / "shelf").mkdir()
    refuse_under(monkeypatch, user / "shelf", code)
    target = user / "shelf" / "r.html"
    out = refused(user, "report", user / "runs" / "done", "-o", target)
    assert out == f"error: cannot write {target}: {words}\n"


def test_an_os_error_anywhere_else_is_its_path_and_its_cause(user, monkeypatch):
    """The CLI's last word on an OSError that no layer put in words: the path, then the cause
    (``[Errno 30]`` and the quoted path are for programs)."""
    import collapselab.report

    def render(*args: Any, **kwargs: Any) -> str:
        raise OSError(errno.EROFS, EROFS, "/mnt/photos/plot.png")

    monkeypatch.setattr(collapselab.report, "render", render)
    out = refused(user, "report", user / "runs" / "done", "-o", user / "r.html")
    assert out == f"error: /mnt/photos/plot.png: {EROFS}\n"


# ----------------------------------------------------------------- a full disk


def test_a_short_write_on_a_full_disk_says_no_space_left(user, monkeypatch):
    """NumPy's ``tofile`` reports a short write as ``OSError('32000 requested and 4592
    written')`` (no errno); with the disk then full, the message says so, naming the file."""
    open_ = open

    def open_store(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = open_(path, mode, *args, **kwargs)
        if "w" in mode and Path(path).name.startswith(".samples.npy"):
            def short(data: Any) -> int:
                raise OSError("32000 requested and 4592 written")
            f.write = short
        return f

    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(store, "open", open_store, raising=False)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 10**9, 0))
    out = refused(user, "run", user / "g.yaml", "name=full", f"out_dir={user / 'runs'}",
                  "--no-resource-check", "--no-report")
    assert out == (f"error: cannot write {user / 'runs' / 'full' / 'gen_000' / 'samples.npy'}: "
                   f"{ENOSPC} (4592 of 32000 bytes written)\n")
    assert not (user / "runs" / "full").exists()


def test_a_short_write_with_room_left_says_it_stopped_short():
    err = store.cannot_write(Path("/tmp/x.npy"), OSError("32000 requested and 4592 written"))
    assert str(err) == ("cannot write /tmp/x.npy: the write stopped short (a full disk or a quota "
                        "reached?) (4592 of 32000 bytes written)")


# ----------------------------------------------------------------- real file systems (root)


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a 64 KiB tmpfs (read-write) at tmp_path/fs, where this process may; else skip."""
    mount = tmp_path / "fs"
    mount.mkdir()

    def mounted(*options: str) -> Path:
        opts = ",".join(["size=64k", *options])
        if os.geteuid() != 0 or subprocess.run(
                ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mount)],
                capture_output=True).returncode != 0:
            pytest.skip("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)")
        return mount

    yield mounted
    subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_real_read_only_file_system(user, tmpfs):
    ro = tmpfs("ro")
    out = refused(user, "run", user / "g.yaml", f"out_dir={ro / 'runs'}")
    assert out == f"error: cannot write {ro / 'runs'}: {EROFS}\n"
    out = refused(user, "report", user / "runs" / "done", "-o", ro / "r.html")
    assert out == f"error: cannot write {ro / 'r.html'}: {EROFS}\n"


def test_a_real_full_disk(user, tmpfs):
    """2000 chains x 20 samples: generation 0's samples (320 KB) do not fit in 64 KiB."""
    full = tmpfs()
    out = refused(user, "run", user / "g.yaml", "chains=2000", "metrics=[w2]",
                  f"out_dir={full}", "name=full", "--no-resource-check", "--no-report")
    assert out == f"error: cannot write {full / 'full' / 'gen_000' / 'samples.npy'}: {ENOSPC}\n"
    assert not (full / "full").exists()
