"""The run directory belongs to collapselab only where collapselab made it: a user's folder is never
deleted or overwritten, and a failed start removes exactly what it created."""

from __future__ import annotations

import json

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


@pytest.mark.parametrize("files, holds", [
    ({"notes/a.md": "draft", "precious.txt": "thesis"}, "notes, precious.txt"),
    # names like a run's own (gen_XXX, a temporary) without collapselab's lock record
    ({"gen_001/notes.txt": "precious", ".thesis.tmp-draft": "x"}, ".thesis.tmp-draft, gen_001"),
])
def test_a_folder_that_is_not_a_run_is_refused_and_left_byte_for_byte(tmp_path, files, holds):
    mine = tmp_path / "gaussian-replace"
    for name, text in files.items():
        (mine / name).parent.mkdir(parents=True, exist_ok=True)
        (mine / name).write_text(text)
    before = tree(mine)
    result = cli("run", "configs/gaussian/replace.yaml", f"out_dir={tmp_path}", "generations=2",
                 "chains=2")
    assert result.exit_code == 2
    assert " ".join(result.output.split()) == (
        f"error: {mine} exists and is not a collapselab run (it holds {holds}); "
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


def interrupt_fit(monkeypatch, at: int) -> None:
    """Ctrl-C during the ``at``-th Gaussian fit of this process."""
    calls = {"n": 0}
    real_fit = Gaussian.fit

    def fit(self, data, *, rng=None):
        calls["n"] += 1
        if calls["n"] == at:
            raise KeyboardInterrupt
        return real_fit(self, data, rng=rng)

    monkeypatch.setattr(Gaussian, "fit", fit)


def test_an_interrupt_after_a_commit_says_what_was_kept_and_how_to_resume(tmp_path, monkeypatch):
    interrupt_fit(monkeypatch, at=3)
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
    manifest = json.loads((store_dir / "manifest.json").read_text())
    del manifest["files"]  # as runs were written before they listed their files
    (store_dir / "manifest.json").write_text(json.dumps(manifest))
    result = cli("report", str(store_dir))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert " ".join(result.output.split()).startswith(
        f"error: {store_dir} was written by another version of collapselab: its config.yaml "
        "does not validate (keep_samples")


def test_a_run_begun_by_another_writer_meanwhile_is_not_continued_without_resume(tmp_path,
                                                                                 monkeypatch):
    """The checks are made again under the lock: a second `run` whose set-up was slow does not
    silently finish (and rewrite the config of) a run another writer began meanwhile."""
    from collapselab import loop
    from collapselab.config import load_config
    from collapselab.errors import RunError

    first = load_config("configs/gaussian/replace.yaml", [f"out_dir={tmp_path}", "name=r",
                                                          "generations=2", "chains=2"])
    second = first.model_copy(update={"generations": 4})
    build = loop.Experiment.build

    def slow_build(cfg):
        monkeypatch.setattr(loop.Experiment, "build", build)
        loop.run(first)  # another writer, while this one is still setting up
        return build(cfg)

    monkeypatch.setattr(loop.Experiment, "build", slow_build)
    with pytest.raises(RunError, match=r"already holds a run; pass --resume"):
        loop.run(second)
    assert RunStore(tmp_path / "r").config() == first


def test_generations_committed_on_ctrl_c_reach_the_observers(tmp_path, monkeypatch):
    from collapselab import loop
    from collapselab.config import load_config

    seen: list[int] = []

    class Observer:
        def committed(self, rows):
            seen.extend(r["generation"] for r in rows)

    interrupt_fit(monkeypatch, at=4)
    cfg = load_config("configs/gaussian/replace.yaml", [f"out_dir={tmp_path}", "name=r",
                                                        "generations=6", "chains=2"])
    with pytest.raises(KeyboardInterrupt):
        loop.run(cfg, observers=[Observer()])
    assert seen == [0, 1, 2] and RunStore(tmp_path / "r").completed() == 3


def test_a_commit_interrupted_while_appending_rows_leaves_each_row_once(tmp_path):
    store = RunStore(tmp_path / "r")
    with store.writer() as writer:
        writer.start("name: r\n", seeds={})
        for g in range(3):
            writer.stage(g, {"generation": g}, record={"a": np.arange(2)}, samples={}, models={})
        writer._append_rows([], "")  # opens the log
        real = writer._log.write
        state = {"n": 0}

        def once(text):
            state["n"] += 1
            if state["n"] == 1:
                real(text[: len(text) // 2])  # half of the rows reach the disk
                raise KeyboardInterrupt
            return real(text)

        writer._log.write = once
        with pytest.raises(KeyboardInterrupt):
            writer.flush()
        assert writer.flush() == [{"generation": g} for g in range(3)]  # the retry
    assert [r["generation"] for r in store.metrics()] == [0, 1, 2]
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["generation"] for line in lines] == [0, 1, 2]


@pytest.mark.parametrize("key", ["chain.recall@5", "a/b", "gens#x", "all/y"])
def test_record_chunks_keep_any_key(key):
    from collapselab.store import stack, unstack

    records = {4: {key: np.arange(3.0), "k": np.arange(2)}, 5: {key: np.arange(3.0) + 1},
               7: {key: np.arange(4.0)}}
    arrays = stack(records)
    for gen, record in records.items():
        got = unstack(arrays, gen)
        assert sorted(got) == sorted(record)
        for k, v in record.items():
            np.testing.assert_array_equal(got[k], v)
    assert unstack(arrays, 6) == {}


def test_a_refused_writer_is_told_what_holds_the_lock(tmp_path):
    import subprocess
    import sys

    root = tmp_path / "s"
    root.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom pathlib import Path\n"
         "from collapselab.store import locked\n"
         "with locked(Path(sys.argv[1]), what='sweep'):\n"
         "    print('locked', flush=True)\n    sys.stdin.read()\n", str(root)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        from collapselab.errors import RunError
        from collapselab.store import locked

        with pytest.raises(RunError, match=rf"is locked: sweep pid {holder.pid} on "):
            with locked(root):
                pass
    finally:
        holder.communicate("")
