import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adaptok.cli.main import COMMANDS, main


@pytest.fixture
def image_files(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for name, size in [("a.png", (64, 64)), ("b b.jpg", (40, 72))]:
        path = tmp_path / name
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_tokenize_writes_picture_with_boundaries_and_mosaic(image_files, tmp_path) -> None:
    out = tmp_path / "out.png"
    assert main(["tokenize", str(image_files[0]), "--method", "grid", "-o", str(out)]) == 0
    picture = np.asarray(Image.open(out))
    assert picture.shape == (64, 64 * 2 + 4, 3)  # image | gap | mosaic


def test_tokenize_pads_and_says_so(image_files, tmp_path, capsys) -> None:
    code = main(
        [
            "tokenize",
            str(image_files[1]),
            "--method",
            "grid",
            "--patch-size",
            "16",
            "-o",
            str(tmp_path / "x.png"),
        ]
    )
    assert code == 0
    assert "padded 40x72 -> 48x80" in capsys.readouterr().out


def test_tokenize_names_unreadable_files_and_goes_on(image_files, tmp_path, capsys) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    out = tmp_path / "many"
    files = [str(broken), str(image_files[0]), str(tmp_path / "missing.png")]
    assert main(["tokenize", *files, "--method", "grid", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "broken.png: not a readable image" in err
    assert "missing.png: no such file" in err
    assert "2 of 3 images failed" in err
    assert (out / "a_grid.png").is_file()


def test_help_lists_every_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "adaptok.cli.main", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for name in COMMANDS:
        assert name in result.stdout


def test_no_command_prints_help_and_fails(capsys) -> None:
    assert main([]) == 2
    assert "usage: adaptok" in capsys.readouterr().out


def test_demo_writes_every_picture_and_an_svg(tmp_path, capsys) -> None:
    assert main(["demo", "--size", "128", "-o", str(tmp_path)]) == 0
    for method in ("grid", "quadtree", "dht", "slic"):
        picture = np.asarray(Image.open(tmp_path / f"demo_{method}.png"))
        assert picture.shape == (128, 2 * 128 + 4, 3)
    assert (tmp_path / "demo.svg").read_text().startswith("<svg")
    assert "16 tokens" in capsys.readouterr().out  # (128 / 32)^2 for grid and quadtree


def test_bench_prints_a_table_at_matched_token_counts(capsys) -> None:
    args = ["bench", "--size", "128", "--batch", "2", "--repeats", "1", "--methods", "grid",
            "quadtree"]  # fmt: skip
    assert main(args) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| grid")
            or line.startswith("| quadtree")]  # fmt: skip
    assert len(rows) == 2 and all(row.split("|")[3].strip() == "16" for row in rows)


def test_tokenize_names_outputs_like_vectorize(image_files, tmp_path) -> None:
    twin = tmp_path / "other" / "a.png"
    twin.parent.mkdir()
    twin.write_bytes(image_files[0].read_bytes())
    out = tmp_path / "pictures"
    assert (
        main(["tokenize", str(image_files[0]), str(twin), "--method", "grid", "-o", str(out)]) == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["a-2_grid.png", "a_grid.png"]
    many = ["tokenize", str(image_files[0]), str(twin), "--method", "grid"]
    assert main([*many, "-o", str(tmp_path / "one.png")]) == 2  # several images need a folder
