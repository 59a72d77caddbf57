"""The run directory belongs to collapselab only where collapselab made it: a user's folder is never
deleted or overwritten, and a failed start removes exactly what it created."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from collapselab import registry
from collapselab.cli import app
from collapselab.errors import DataError
from collapselab.models.gaussian import Gaussian
from collapselab.store import RunStore


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() else None
            for p in sorted(root.rglob("*"))}


class Refuses(Gaussian):
    """Fails inside generation 0's fit: as a data problem, or as Ctrl-C."""

    def __init__(self, how: str = "data") -> None:
        super().__init__()
        self.how = how

    def fit(self, data, *, rng=None):
        if self.how == "interrupt":
            raise KeyboardInterrupt
        raise DataError("the data is unusable")


@pytest.fixture
def refuses(monkeypatch):
    monkeypatch.setitem(registry.families._entries, "_refuses", Refuses)


def test_a_folder_that_is_not_a_run_is_refused_and_left_byte_for_byte(tmp_path):
    mine = tmp_path / "important"
    (mine / "notes").mkdir(parents=True)
    (mine / "precious.txt").write_text("thesis")
    (mine / "notes" / "a.md").write_text("draft")
    before = tree(mine)
    result = cli("run", "configs/gaussian/replace.yaml", f"out_dir={tmp_path}", "name=important",
                 "generations=2", "chains=2")
    assert result.exit_code == 2
    assert " ".join(result.output.split()) == (
        f"error: {mine} exists and is not a collapselab run (it holds notes, precious.txt); "
        "choose another name or out_dir")
    assert tree(mine) == before


@pytest.mark.parametrize("how, code, said", [
    ("data", 2, "error: the data is unusable"),
    ("interrupt", 130, "interrupted before any generation was committed: nothing was kept"),
])
def test_a_failed_start_removes_what_it_created_and_nothing_else(tmp_path, refuses, how, code,
                                                                 said):
    args = [f"model={{family: _refuses, how: {how}}}", "generations=2", "metrics=[w2]"]
    made = cli("run", "configs/gaussian/replace.yaml", f"out_dir={tmp_path}", "name=new", *args)
    assert made.exit_code == code and said in " ".join(made.output.split())
    assert not (tmp_path / "new").exists()  # collapselab made it: it is gone
    (tmp_path / "empty").mkdir()  # the user made this one
    result = cli("run", "configs/gaussian/replace.yaml", f"out_dir={tmp_path}", "name=empty",
                 *args)
    assert result.exit_code == code
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())


def test_an_interrupt_after_a_commit_says_what_was_kept_and_how_to_resume(tmp_path, monkeypatch):
    calls = {"n": 0}
    real_fit = Gaussian.fit

    def fit(self, data, *, rng=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_fit(self, data, rng=rng)

    monkeypatch.setattr(Gaussian, "fit", fit)
    result = cli("run", "configs/gaussian/replace.yaml", f"out_dir={tmp_path}", "name=r",
                 "generations=5", "chains=2")
    assert result.exit_code == 130
    assert " ".join(result.output.split()).endswith(
        f"interrupted: generations 0-1 are kept in {tmp_path / 'r'}; rerun with --resume to "
        "continue")
    store = RunStore(tmp_path / "r")
    assert store.completed() == 2 and store.manifest()["status"] == "interrupted"
    monkeypatch.undo()
    assert cli("run", "configs/gaussian/replace.yaml", f"out_dir={tmp_path}", "name=r",
               "generations=5", "chains=2", "--resume", "--no-report").exit_code == 0
    assert store.completed() == 5 and store.manifest()["status"] == "complete"


@pytest.mark.parametrize("keep, on_disk", [("last", [0, 5]), ("none", []), (2, [0, 2, 4, 5]),
                                           ("all", [0, 1, 2, 3, 4, 5])])
def test_keep_samples_decides_what_stays_once_the_run_ends(tmp_path, keep, on_disk):
    result = cli("run", "configs/gaussian/replace.yaml", f"out_dir={tmp_path}", "name=k",
                 "generations=6", "chains=2", f"keep_samples={keep}", "--no-report")
    assert result.exit_code == 0, result.output
    store = RunStore(tmp_path / "k")
    assert [g for g in range(6) if store.has_samples(g)] == on_disk
    assert all(np.isfinite(store.samples(g)).all() for g in on_disk)


def test_a_run_of_an_older_layout_is_refused_with_a_message_not_a_traceback(tmp_path):
    store_dir = tmp_path / "old"
    assert cli("run", "configs/gaussian/replace.yaml", f"out_dir={tmp_path}", "name=old",
               "generations=2", "chains=2", "--no-report").exit_code == 0
    text = (store_dir / "config.yaml").read_text().replace("keep_samples: last",
                                                           "keep_samples: needed")
    (store_dir / "config.yaml").write_text(text)
    result = cli("report", str(store_dir))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert " ".join(result.output.split()).startswith(
        f"error: {store_dir} was written by another version of collapselab: its config.yaml "
        "does not validate (keep_samples")
