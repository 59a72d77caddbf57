"""Issue 13: an input problem is never a result. Each case through the CLI: exit code 2, one
message matched in full (whitespace aside: the console wraps lines) with the value, no traceback,
and the user's files byte for byte as they were."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from collapselab.cli import app

TEXT = "data: {source: builtin, block_len: 64, size: 8}\n"
GAUSS = "model: {family: gaussian}\ndata: {source: normal, size: 20}\n"


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def squash(text: str) -> str:
    return "".join(text.split())


def cli(tmp_path: Path, body: str, *args: str, command: str = "run") -> str:
    """Run ``body`` as a config; assert exit 2, no traceback and an untouched folder."""
    (tmp_path / "mine").mkdir(exist_ok=True)
    (tmp_path / "mine" / "precious.txt").write_text("thesis\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(body)
    before = snapshot(tmp_path)
    extra = ["--no-report"] if command == "run" else []
    result = CliRunner().invoke(app, [command, str(cfg), *args, *extra])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.count("error:") == 1, result.output
    assert snapshot(tmp_path) == before
    return result.output


def config_error(*problems: str) -> str:
    n = len(problems)
    return squash(f"error: invalid config ({n} problem{'s' * (n > 1)}):"
                  + "".join(f"\n  - {p}" for p in problems))


def expect(output: str, *problems: str) -> None:
    assert squash(output) == config_error(*problems), output


def body(tmp_path: Path, text: str) -> str:
    return f"name: t\nout_dir: {tmp_path / 'mine'}\n{text}"


# ------------------------------------------------------------ what the config alone shows


PROMPT = ("must be < data.block_len=64 (a sampled block continues its prompt by at least one "
          "token); got 64")


@pytest.mark.parametrize("model,problem", [
    ("{family: gpt, prompt_tokens: 64}", f"model.prompt_tokens: {PROMPT}"),
    ("{family: ngram, prompt_tokens: 64}", f"model.prompt_tokens: {PROMPT}"),
    ("{family: gpt, context_len: 32}",
     "model.context_len: must be >= data.block_len=64 (the model reads whole blocks); got 32"),
])
def test_lm_lengths_that_cannot_work_are_config_errors(tmp_path, model, problem):
    expect(cli(tmp_path, body(tmp_path, f"model: {model}\n{TEXT}")), problem)


def test_cuda_without_cuda_is_a_config_error(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    expect(cli(tmp_path, body(tmp_path, f"model: {{family: gpt, device: cuda}}\n{TEXT}")),
           "model.device: 'cuda' but CUDA is not available on this machine; use 'auto' or "
           "'cpu'; got 'cuda'")


def test_one_sample_is_too_few_for_the_gaussian(tmp_path):
    expect(cli(tmp_path, body(tmp_path, GAUSS), "data.size=1"),
           "data.size: the gaussian family estimates a covariance, so it needs at least 2 "
           "samples per chain; got 1")


@pytest.mark.parametrize("override,problem", [
    ("data.mean=.nan", "data.mean: must be a finite number; got nan"),
    ("data.mean=.inf", "data.mean: must be a finite number; got inf"),
    ("data.std=.inf", "data.std: must be a finite number; got inf"),
    ("data.mean=1e308", "data.mean: must be at most 1e+50 in magnitude (a fourth power of the "
                        "samples must stay finite in float64); got 1e+308"),
    ("generations=true", "generations: must be a number, not a boolean; got True"),
    ("chains=false", "chains: must be a number, not a boolean; got False"),
])
def test_numbers_that_are_not_numbers_are_config_errors(tmp_path, override, problem):
    expect(cli(tmp_path, body(tmp_path, GAUSS), override), problem)


def test_a_watermark_on_data_without_tokens_is_a_config_error(tmp_path):
    expect(cli(tmp_path, body(tmp_path, GAUSS), "watermark={gamma: 0.25}"),
           "watermark: needs token data (it biases the LM families' sampling); data.source "
           "'normal' gives continuous data; got {'gamma': 0.25}")


def test_one_pixel_images_with_the_vae_are_a_config_error(tmp_path):
    folder = tmp_path / "mine" / "pixels"
    folder.mkdir(parents=True)
    np.save(folder / "x.npy", np.full((10, 1, 1), 0.5))
    expect(cli(tmp_path, body(tmp_path, f"model: {{family: vae}}\n"
                                        f"data: {{source: folder, path: {folder}, size: 4}}\n")),
           "data: the vae family needs images whose height and width are multiples of 4 (two "
           f"stride-2 convolutions); got 1x1 images from folder '{folder}'")


# ------------------------------------------------------------ YAML read strictly


LAUGHS = "".join(f"{c}: &{c} [{', '.join([f'*{p}' if p else 'lol'] * 9)}]\n"
                 for p, c in zip(["", *"abcdefg"], "abcdefgh", strict=True))  # 9**9 values in 9 lines


@pytest.mark.parametrize("field", ["name", "generations", "metrics"])
def test_a_billion_laughs_fails_fast(tmp_path, field):
    start = time.monotonic()
    out = cli(tmp_path, LAUGHS + f"{field}: [{', '.join(['*h'] * 9)}]\n")
    assert time.monotonic() - start < 10
    assert squash(out) == config_error(
        f"config file '{tmp_path / 'c.yaml'}': anchors and aliases expand to more than 100,000 "
        "values (a 'billion laughs'?); a config needs far fewer")
    assert len((tmp_path / "c.yaml").read_bytes()) < 420  # the was 394 bytes


def test_a_duplicate_key_is_an_error(tmp_path):
    out = cli(tmp_path, "generations: 3\nseed: 1\ngenerations: 5\n")
    assert squash(out) == config_error(
        f"config file '{tmp_path / 'c.yaml'}': duplicate key 'generations' on line 3 (first "
        "on line 1)")


def test_an_empty_config_file_is_an_error(tmp_path):
    out = cli(tmp_path, "")
    assert squash(out) == config_error(
        f"config file '{tmp_path / 'c.yaml'}' is empty; write the experiment's fields (e.g. "
        "name: ..., model: ..., data: ...) or start from a shipped config")


def test_a_tilde_in_out_dir_is_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: t\nout_dir: ~/runs\n")
    result = CliRunner().invoke(app, ["validate", str(cfg)])
    assert result.exit_code == 0, result.output
    assert f"out_dir: {tmp_path / 'runs'}\n" in result.output


# ------------------------------------------------------------ sizes: estimated, not attempted


NUMBER = r"[0-9.,]+ (?:B|KiB|MiB|GiB|TiB|PiB)"


@pytest.mark.parametrize("override,shown", [
    ("chains=1000000000", "chains=1,000,000,000"),
    ("data.size=1e10", "data.size=10,000,000,000"),
    ("synthetic_size=1e10", "synthetic_size=10,000,000,000"),
    ("data.heldout_size=1e11", "data.size=20"),
])
def test_a_run_too_large_for_this_machine_is_refused_with_the_numbers(tmp_path, override, shown):
    out = " ".join(cli(tmp_path, body(tmp_path, GAUSS), override).split())
    memory = (rf"resources: the run needs at least {NUMBER} of memory \({NUMBER} per "
              rf"generation; chains=[0-9,]+, data.size=[0-9,]+, synthetic_size=[0-9,]+, "
              rf"{NUMBER} per sample\); {NUMBER} is available")
    disk = (rf"resources: the run writes at least {NUMBER} \({NUMBER} per generation; "
            rf"keep_samples='last', generations=10\); {NUMBER} is free under "
            rf"'{re.escape(str(tmp_path / 'mine'))}'")
    hint = ("resources: lower chains, data.size, synthetic_size or generations, or pass "
            "--no-resource-check to run anyway")
    lines = [line for line in out.split(" - ")[1:]]
    assert re.fullmatch(memory, lines[0]), lines[0]
    assert all(re.fullmatch(disk, line) for line in lines[1:-1]), lines
    assert lines[-1] == hint and shown in out


def test_a_huge_sweep_grid_is_counted_not_expanded(tmp_path):
    values = "[" + ", ".join(map(str, range(1000))) + "]"
    start = time.monotonic()
    out = cli(tmp_path, f"base: {{generations: 2}}\ngrid:\n  seed: {values}\n  chains: {values}\n",
              command="sweep")
    assert time.monotonic() - start < 10
    expect(out, "grid: 1,000 x 1,000 = 1,000,000 points; a sweep holds at most 10,000 (split "
                "it into several sweeps)")


# ------------------------------------------------------------ files name themselves


def png_bytes() -> bytes:
    import io

    import matplotlib.image as mpimg

    buf = io.BytesIO()
    mpimg.imsave(buf, np.random.default_rng(0).random((8, 8)), format="png")
    return buf.getvalue()


def npy_claiming_a_huge_shape(path: Path) -> None:
    with path.open("wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 1000, 1000)})
        f.write(b"\0" * 64)


@pytest.mark.parametrize("name,make,problem", [
    ("a.png", lambda p: p.write_bytes(b"not an image at all"),
     "'{p}' is not a readable PNG image: not a PNG file"),
    ("a.png", lambda p: p.write_bytes(b""), "'{p}' is empty (0 bytes), not a PNG image"),
    ("a.png", lambda p: p.write_bytes(png_bytes()[: len(png_bytes()) // 2]),
     "'{p}' is not a readable PNG image: image file is truncated"),
    ("x.npy", npy_claiming_a_huge_shape,
     "'{p}': its header says shape (1000000, 1000, 1000) of float64 (8,000,000,000,000 bytes); "
     "the file holds 64 bytes"),
    ("x.npy", lambda p: p.write_text("hello, I am text\n"),
     "'{p}' is not a NumPy .npy file: the magic string is not correct; expected "
     "b'\\x93NUMPY', got b'hello,'"),
    ("x.npy", lambda p: np.save(p, np.where(np.eye(8)[None] > 0, np.nan, 0.5).repeat(3, 0)),
     "'{p}': 24 of its 192 pixel values are NaN or infinite"),
])
def test_a_bad_image_file_is_named_with_what_is_wrong(tmp_path, name, make, problem):
    folder = tmp_path / "mine" / "images"
    folder.mkdir(parents=True)
    if name.endswith(".png"):
        (folder / "good.png").write_bytes(png_bytes())
    make(folder / name)
    out = cli(tmp_path, body(tmp_path, f"model: {{family: vae}}\n"
                                       f"data: {{source: folder, path: {folder}, size: 2}}\n"))
    assert squash(out) == config_error(f"data: {problem.format(p=folder / name)}"), out
