"""A run never claims what its files don't hold: every commit lists what it wrote (rows, sizes,
CRC-32s, the config), and ``report``, ``run --resume``, ``collapselab.load`` and ``verify`` refuse a
run whose files disagree, exit 2, naming the file and the problem, without changing a byte of it.
A run that fails ends with status ``failed`` and its error."""

from __future__ import annotations

import json
import shutil
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import collapselab
from collapselab import store
from collapselab.cli import app
from collapselab.errors import RunError
from collapselab.models.gaussian import Gaussian
from collapselab.store import RunStore

CONFIG = """
name: r
generations: 6
seed: 3
chains: 3
model: {family: gaussian}
data: {source: normal, size: 20, dim: 2}
policy: {name: replace}
metrics: [variance_ratio, w2]
"""


def cli(*args: object):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, [str(a) for a in args])


def squash(text: str) -> str:
    return " ".join(text.split())


def files(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of a run: its bytes and modification time."""
    return {p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def is_damaged(root: Path, *problems: str) -> str:
    if len(problems) == 1:
        return f"{root} is damaged: {problems[0]}"
    return f"{root} is damaged: " + " ".join(f"- {p}" for p in problems)


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    """A finished 6-generation run, committed at once (one records chunk)."""
    tmp = tmp_path_factory.mktemp("clean")
    (tmp / "r.yaml").write_text(CONFIG + f"out_dir: {tmp / 'runs'}\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(store, "COMMIT_EVERY_S", 3600.0)
        result = cli("run", tmp / "r.yaml", "--no-report")
    assert result.exit_code == 0, result.output
    return tmp


@pytest.fixture
def run(clean, tmp_path) -> tuple[Path, Path]:
    """A copy of the clean run: (its config file, its run directory)."""
    shutil.copytree(clean / "runs", tmp_path / "runs")
    config = tmp_path / "r.yaml"
    config.write_text(CONFIG + f"out_dir: {tmp_path / 'runs'}\n")
    return config, tmp_path / "runs" / "r"


# --- the damage: each changes a run's files and returns the message that refuses it -------------


def metrics_lines(root: Path) -> list[str]:
    return (root / "metrics.jsonl").read_text().splitlines(keepends=True)


def cut_to_two_rows(root: Path) -> str:
    (root / "metrics.jsonl").write_text("".join(metrics_lines(root)[:2]))
    return is_damaged(root, "metrics.jsonl holds 2 rows; the manifest committed 6")


def torn_last_line(root: Path) -> str:
    text = (root / "metrics.jsonl").read_text()
    (root / "metrics.jsonl").write_text(text[: len(text) - len(metrics_lines(root)[-1]) // 2])
    return is_damaged(root, "metrics.jsonl holds 5 rows and a torn line; the manifest committed 6")


def last_row_twice(root: Path) -> str:
    with open(root / "metrics.jsonl", "a") as f:
        f.write(metrics_lines(root)[-1])
    return is_damaged(root, "metrics.jsonl holds 7 rows; the manifest committed 6")


def emptied(root: Path) -> str:
    (root / "metrics.jsonl").write_text("")
    return is_damaged(root, "metrics.jsonl holds 0 rows; the manifest committed 6")


def chunk_deleted(root: Path) -> str:
    (root / "records" / "000000-000005.npz").unlink()
    return is_damaged(root, "records/000000-000005.npz is missing; the manifest committed it")


def random_bytes_in_a_chunk(root: Path) -> str:
    path = root / "records" / "000000-000005.npz"
    data = bytearray(path.read_bytes())
    data[100:164] = np.random.default_rng(0).bytes(64)
    path.write_bytes(bytes(data))
    committed = json.loads((root / "manifest.json").read_text())["files"]
    return is_damaged(root, f"records/000000-000005.npz has crc32 {zlib.crc32(data):08x}; "
                            f"the manifest committed {committed['records/000000-000005.npz']['crc32']}")


def edit_manifest(root: Path, edit: Callable[[dict], None]) -> None:
    manifest = json.loads((root / "manifest.json").read_text())
    edit(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))


def completed_raised_by_5(root: Path) -> str:
    edit_manifest(root, lambda m: m.update(completed_generations=11))
    return is_damaged(root, "metrics.jsonl holds 6 rows; the manifest committed 11",
                      "the manifest committed 11 generations; config.yaml has generations: 6")


def generations_edited(root: Path) -> str:
    text = (root / "config.yaml").read_text()
    assert "generations: 6\n" in text
    (root / "config.yaml").write_text(text.replace("generations: 6\n", "generations: 9\n"))
    committed = json.loads((root / "manifest.json").read_text())["files"]["config.yaml"]
    return is_damaged(root, f"config.yaml has crc32 "
                            f"{zlib.crc32((root / 'config.yaml').read_bytes()):08x}; "
                            f"the manifest committed {committed['crc32']}")


def malformed_manifest(root: Path) -> str:
    text = (root / "manifest.json").read_text()[:-20]
    (root / "manifest.json").write_text(text)
    with pytest.raises(json.JSONDecodeError) as err:
        json.loads(text)
    return f"{root / 'manifest.json'} is not valid JSON ({err.value}); the run cannot be read"


def manifest_without_completed_generations(root: Path) -> str:
    edit_manifest(root, lambda m: m.pop("completed_generations"))
    return (f"{root / 'manifest.json'} is malformed (no completed_generations); the run cannot "
            "be read")


DAMAGE = [cut_to_two_rows, torn_last_line, last_row_twice, emptied, chunk_deleted,
          random_bytes_in_a_chunk, completed_raised_by_5, generations_edited, malformed_manifest,
          manifest_without_completed_generations]


def refused(config: Path, root: Path, how: str) -> str:
    """Exit 2 (or a RunError for ``load``) with one message, no traceback, every file of the
    run unchanged; the message, whitespace squashed."""
    before = files(root)
    if how == "load":
        with pytest.raises(RunError) as err:
            collapselab.load(root)
        said = str(err.value)
    else:
        args = {"report": ["report", root], "resume": ["run", config, "--resume", "--no-report"],
                "verify": ["verify", root]}[how]
        result = cli(*args)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and result.output.count("error:") == 1
        said = result.output.removeprefix("error:")
    assert files(root) == before
    return squash(said)


@pytest.mark.parametrize("how", ["report", "resume", "load", "verify"])
@pytest.mark.parametrize("damage", DAMAGE, ids=[d.__name__ for d in DAMAGE])
def test_a_damaged_run_is_refused_naming_the_file_and_the_problem(run, damage, how):
    config, root = run
    message = damage(root)
    assert refused(config, root, how) == squash(message)


@pytest.mark.parametrize("args", [["theory", "{run}"], ["samples", "{run}"],
                                  ["provenance", "{run}", "-g", "1"],
                                  ["compare", "{run}", "{clean}"], ["compare", "{clean}", "{run}"]])
def test_every_reading_command_refuses_a_damaged_run(run, clean, args):
    config, root = run
    message = chunk_deleted(root)
    before = files(root)
    result = cli(*[a.format(run=root, clean=clean / "runs" / "r") for a in args])
    assert result.exit_code == 2 and squash(result.output) == squash(f"error: {message}")
    assert files(root) == before


def test_a_clean_run_verifies_and_reads(run):
    config, root = run
    result = cli("verify", root)
    assert result.exit_code == 0 and result.output == f"{root}: ok\n"
    assert collapselab.load(root).status == "complete"
    assert cli("report", root).exit_code == 0
    manifest = json.loads((root / "manifest.json").read_text())
    assert sorted(manifest["files"]) == [
        "config.yaml", "gen_000/model.pkl", "gen_000/samples.npy", "gen_005/samples.npy",
        "metrics.jsonl", "records/000000-000005.npz"]  # keep_samples=last: 1-4 deleted, unlisted
    assert manifest["files"]["metrics.jsonl"]["rows"] == 6


def test_an_interrupted_run_resumed_commit_by_commit_verifies(tmp_path, monkeypatch):
    """Each commit lists what it wrote, the rows' checksum goes on from the committed ones, and
    samples that keep_samples deletes leave the listing."""
    config = tmp_path / "r.yaml"
    config.write_text(CONFIG + f"out_dir: {tmp_path / 'runs'}\n")
    root = tmp_path / "runs" / "r"
    monkeypatch.setattr(store, "COMMIT_EVERY_S", 0.0)
    fit, fits = Gaussian.fit, []

    def interrupted(self, data, *, rng=None):  # Ctrl-C in the third fit
        fits.append(1)
        if len(fits) == 3:
            raise KeyboardInterrupt
        return fit(self, data, rng=rng)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Gaussian, "fit", interrupted)
        assert cli("run", config, "--no-report").exit_code == 130
    assert RunStore(root).manifest()["status"] == "interrupted"
    assert cli("verify", root).output == f"{root}: ok\n"
    result = cli("run", config, "--resume", "--no-report")
    assert result.exit_code == 0, result.output
    assert RunStore(root).verify() == [] and RunStore(root).completed() == 6
    listed = json.loads((root / "manifest.json").read_text())["files"]
    assert sorted(k for k in listed if k.endswith("samples.npy")) == sorted(
        p.relative_to(root).as_posix() for p in root.glob("gen_*/samples.npy")) == [
        "gen_000/samples.npy", "gen_005/samples.npy"]


def test_a_run_killed_mid_commit_verifies_and_resumes(tmp_path):
    """A killed writer's uncommitted rows, torn line and files are not damage: no commit
    claimed them, and the resume removes them."""
    from tests.test_reliability import crash, write_config

    config = write_config(tmp_path, "gaussian", "replace")
    root = tmp_path / "runs" / "r"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(store, "COMMIT_EVERY_S", 0.0)
        crash(config, "gaussian", "torn", 3)
    assert (root / "metrics.jsonl").read_text().count("\n") == 2  # and half of a third line
    assert RunStore(root).verify() == []
    result = cli("run", config, "--resume", "--takeover", "--no-report")
    assert result.exit_code == 0, result.output
    assert RunStore(root).verify() == [] and RunStore(root).completed() == 4


def test_a_run_written_before_integrity_records_is_read_and_its_rows_checked(run):
    config, root = run
    edit_manifest(root, lambda m: m.pop("files"))
    result = cli("verify", root)
    assert result.exit_code == 0
    assert squash(result.output) == squash(
        f"{root}: ok (no integrity record: an earlier collapselab wrote it; its rows and "
        "generations were checked, not its files)")
    assert collapselab.load(root).generations == 6
    message = cut_to_two_rows(root)
    assert refused(config, root, "verify") == squash(message)


def test_verify_checks_every_run_of_a_sweep(tmp_path):
    sweep = tmp_path / "s.yaml"
    sweep.write_text("base:" + CONFIG.replace("\n", "\n  ") + "\ngrid: {seed: [0, 1]}\n"
                     f"workers: 1\nout_dir: {tmp_path / 'sweep'}\n")
    result = cli("sweep", sweep, "--no-report")
    assert result.exit_code == 0, result.output
    a, b = tmp_path / "sweep" / "seed-0", tmp_path / "sweep" / "seed-1"
    assert cli("verify", tmp_path / "sweep").output == f"{a}: ok\n{b}: ok\n"
    message = emptied(b)
    result = cli("verify", tmp_path / "sweep")
    assert result.exit_code == 2
    assert squash(result.output) == squash(f"{a}: ok error: {message}")
    result = cli("report", tmp_path / "sweep")
    assert result.exit_code == 2 and squash(result.output) == squash(f"error: {message}")


# --- a run that fails -----------------------------------------------------------------------------


class Explodes(Gaussian):
    """A plugin family (by import path) whose third fit in this process raises."""

    fits = 0

    def fit(self, data: np.ndarray, *, rng: np.random.Generator | None = None) -> Explodes:
        Explodes.fits += 1
        if Explodes.fits == 3:
            raise ValueError("the plugin broke")
        return super().fit(data, rng=rng)


def test_a_run_that_fails_ends_failed_with_its_error_and_resumes(run, monkeypatch):
    config, _ = run
    monkeypatch.setattr(Explodes, "fits", 0)
    config.write_text(config.read_text().replace("name: r\n", "name: f\n").replace(
        "family: gaussian", "family: tests.test_integrity:Explodes"))
    root = config.parent / "runs" / "f"
    result = cli("run", config)  # a plugin's own exception: raised (a traceback, exit 1)
    assert result.exit_code == 1 and repr(result.exception) == "ValueError('the plugin broke')"
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["completed_generations"] == 2
    assert manifest["error"] == {"type": "ValueError", "message": "the plugin broke"}
    failed = collapselab.load(root)
    assert (failed.status, failed.error) == ("failed", "ValueError: the plugin broke")
    assert "<td>failed: ValueError: the plugin broke</td>" in failed.report().read_text()
    (root / "report.html").unlink()
    assert cli("verify", root).exit_code == 0
    result = cli("run", config, "--resume", "--no-report")  # the plugin works again
    assert result.exit_code == 0, result.output
    resumed = collapselab.load(root)
    assert (resumed.status, resumed.error, resumed.generations) == ("complete", None, 6)
