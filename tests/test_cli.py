import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adaptok.cli.main import COMMANDS, main
from adaptok.errors import AdaptokError
from adaptok.visualize import titled


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
    picture = np.asarray(Image.open(out)).astype(np.int64)
    assert picture.shape == (64, 64 * 2 + 4, 3)  # image | gap | mosaic
    source = np.asarray(Image.open(image_files[0])).astype(np.float64)
    mosaic = picture[:, 64 + 4 :]
    # The mosaic fills every 16x16 token with its mean colour (inside its drawn boundary).
    means = source.reshape(4, 16, 4, 16, 3).mean((1, 3))
    inside = mosaic.reshape(4, 16, 4, 16, 3)[:, 2:14, :, 2:14]
    assert np.abs(inside - means[:, None, :, None]).max() <= 1
    left = picture[:, :64]
    assert (
        np.abs(
            left.reshape(4, 16, 4, 16, 3)[:, 4:12, :, 4:12]
            - source.reshape(4, 16, 4, 16, 3)[:, 4:12, :, 4:12]
        ).max()
        <= 1
    )  # the image itself, boundaries aside


def test_tokenize_pads_crops_back_and_says_so(image_files, tmp_path, capsys) -> None:
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
    assert "padded 40x72 -> 48x80 and cropped back" in capsys.readouterr().out
    # The same any-size policy as vectorize: the picture has the image's own size.
    with Image.open(tmp_path / "x.png") as picture:
        assert picture.size[1] == 40


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


def test_demo_writes_into_its_own_folder_and_prints_what_it_asked(
    tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--size", "128"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["adaptok-demo"]  # nothing else in the cwd
    out = tmp_path / "adaptok-demo"
    strip = titled(torch.zeros(1, 3, 128, 128), "title").shape[2] - 128  # the title's height
    for method in ("grid", "quadtree", "dht", "slic"):
        picture = np.asarray(Image.open(out / f"demo_{method}.png"))
        assert picture.shape == (strip + 128, 2 * 128 + 4, 3)
        title = picture[:strip, :128]  # black text on white above the token panel
        assert (title == 255).mean() > 0.5 and (title < 64).any()
    assert (out / "demo.svg").read_text().startswith("<svg")
    printed = capsys.readouterr().out
    assert "16 tokens (budget=16, min_patch=16, max_patch=128)" in printed  # (128 / 32)^2
    assert "asked for 683 = one per 24 pixels" in printed  # vectorize's default budget
    assert "start-up" in printed
    # The flat-background item: dHT without a cap spends fewer tokens than the 8x8 grid.
    flat = np.asarray(Image.open(out / "demo_flat_background.png"))
    strip = titled(torch.zeros(1, 3, 256, 256), "title").shape[2] - 256
    assert flat.shape == (strip + 4 * 64, 4 * (4 * 64 + 3 * 4), 3)
    counts = re.search(r"grid (\d+) tokens \| dht without a cap (\d+) regions", printed)
    assert counts is not None and int(counts[2]) < int(counts[1]) == 64


@pytest.mark.parametrize("size", [0, 100, 129, -128])
def test_demo_and_bench_sizes_must_be_multiples_of_128(size) -> None:
    from adaptok.cli.demo import check_size
    from adaptok.errors import AdaptokError

    with pytest.raises(AdaptokError, match=f"multiple of 128, got {size}"):
        check_size(size)


def test_bench_prints_a_table_at_matched_token_counts(capsys) -> None:
    args = ["bench", "--size", "128", "--batch", "2", "--repeats", "1", "--methods", "grid",
            "quadtree"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| grid")
            or line.startswith("| quadtree")]  # fmt: skip
    assert len(rows) == 2 and all(row.split("|")[3].strip() == "16" for row in rows)
    if hasattr(os, "getloadavg"):  # the header says how busy the machine was
        assert re.search(r"load \d+\.\d on \d+ cores", out)


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


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("adaptok")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tokenize", "{img}", "--method", "grid", "--budget", "7"], "does not take --budget"),
        (["tokenize", "{img}", "--method", "dht", "--patch-size", "8"], "--patch-size"),
        (["tokenize", "{img}", "--method", "slic", "--max-patch", "32"], "--max-patch"),
        (["tokenize", "{img}", "--method", "grid", "--patch-size", "0"], "positive integer"),
        (["tokenize", "{img}", "--scorer", "feature"], "--scorer-weights PATH"),
        (["vectorize", "{img}", "-o", "{tmp}/out.png"], "name the output NAME.svg"),
        (["tokenize", "{img}", "-o", "{tmp}/out.jpg"], "writes PNG, not .jpg"),
        (["vectorize", "{img}", "--method", "grid", "--budget", "9"], "does not take --budget"),
        (["train", "--dataset", "folder", "--data-root", "{tmp}/nowhere", "--out", "{tmp}/r"],
         "nowhere"),
        (["train", "--dataset", "shapes", "--steps", "0", "--out", "{tmp}/r"], "steps"),
        (["train", "--dataset", "shapes", "--partition-options", "{{bad", "--out", "{tmp}/r"],
         "not valid JSON"),
        pytest.param(["train", "--dataset", "shapes", "--device", "cuda", "--out", "{tmp}/r"],
                     "no CUDA device", marks=pytest.mark.no_cuda),
        (["eval", "{tmp}/missing.pt"], "missing.pt"),
    ],
)  # fmt: skip
def test_ordinary_mistakes_end_in_one_line(argv, message, image_files, tmp_path, capsys):
    argv = [a.format(img=image_files[0], tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    assert message in _error_line(capsys)


def test_debug_shows_the_traceback(image_files):
    from adaptok.errors import AdaptokError

    with pytest.raises(AdaptokError):
        main(["--debug", "tokenize", str(image_files[0]), "--method", "grid", "--budget", "7"])


def test_missing_output_folder_is_created_for_every_file(image_files, tmp_path):
    for command in ("tokenize", "vectorize"):
        out = tmp_path / command / "new" / "deeper"
        argv = [command, *map(str, image_files), "--method", "grid", "-o", str(out)]
        assert main(argv) == 0
        assert len(list(out.iterdir())) == 2
        single = tmp_path / command / "one" / ("x.svg" if command == "vectorize" else "x.png")
        assert main([command, str(image_files[0]), "--method", "grid", "-o", str(single)]) == 0
        assert single.is_file()
        # One image and a name without extension: a folder, as for several images.
        folder = tmp_path / command / "folder"
        assert main([command, str(image_files[0]), "--method", "grid", "-o", str(folder)]) == 0
        assert len(list(folder.iterdir())) == 1


def test_train_refuses_to_overwrite_and_to_resume_another_config(tmp_path, capsys):
    base = ["train", "--dataset", "shapes", "--image-size", "16", "--patch-size", "8",
            "--embed-dim", "16", "--depth", "1", "--heads", "2", "--batch-size", "4",
            "--train-limit", "8", "--eval-limit", "4", "--no-progress", "--device", "cpu",
            "--out", str(tmp_path / "run")]  # fmt: skip
    assert main([*base, "--steps", "2"]) == 0
    capsys.readouterr()
    assert main([*base, "--steps", "2"]) == 2
    assert "--overwrite" in _error_line(capsys)
    assert main([*base, "--steps", "2", "--lr", "0.01", "--resume"]) == 2
    assert "lr: 0.001 -> 0.01" in _error_line(capsys)
    assert main([*base, "--steps", "3", "--overwrite"]) == 0


def test_help_is_fast_and_loads_no_torch() -> None:
    code = "import sys; from adaptok.cli import main; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    code = (
        "import sys, contextlib, io\n"
        "from adaptok.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "torch" not in done.stderr


def _train_configs(*flags: str):
    from adaptok.cli.main import build_parser
    from adaptok.cli.train import configs_from_args

    return configs_from_args(build_parser("train").parse_args(["train", "--out", "r", *flags]))


def test_train_backbone_keeps_its_position_table_and_refuses_ignored_flags() -> None:
    model, _ = _train_configs("--backbone", "vit_tiny_patch16_224")
    assert model.position_kind == "learned"  # the ViT's own table, as retrofit's default
    scratch, _ = _train_configs()
    assert scratch.position_kind == "sincos" and scratch.patch_size == 8
    # Token counts follow the image and patch size (SLIC's own 196 suits 224x224 photos).
    slic, _ = _train_configs("--method", "slic", "--image-size", "32")
    assert slic.partition_options == {"budget": 16}
    assert scratch.encoder.embed_dim == 192
    explicit, _ = _train_configs("--backbone", "vit_tiny_patch16_224", "--position", "sincos")
    assert explicit.position_kind == "sincos"
    with pytest.raises(AdaptokError, match="drop --patch-size, --depth"):
        _train_configs("--backbone", "vit_tiny_patch16_224", "--patch-size", "8", "--depth", "2")
    with pytest.raises(AdaptokError, match="name the backbone too"):
        _train_configs("--weights", "w.pth")
    assert _train_configs("--val-images", "500")[1].val_images == 500
    with pytest.raises(AdaptokError, match="val_images must be 0 or more"):
        _train_configs("--val-images", "-1")


def test_train_help_shows_defaults(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "(default: 1000)" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["tokenize", "vectorize"])
def test_each_failed_file_is_named_once_and_the_batch_goes_on(
    command, image_files, tmp_path, capsys
) -> None:
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not an image")
    folder = tmp_path / "a folder"
    folder.mkdir()
    inputs = [corrupt, folder, tmp_path / "missing.png", image_files[0]]
    argv = [command, *map(str, inputs), "--method", "grid", "-o", str(tmp_path / "out")]
    assert main(argv) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 3, errors
    for path, line in zip(inputs, errors, strict=False):
        assert line.count(str(path)) == 1, line
        assert "''" not in line
    assert len(list((tmp_path / "out").iterdir())) == 1  # the good image was still written


def test_tokenize_takes_max_pixels_as_its_message_says(image_files, tmp_path, capsys) -> None:
    argv = ["tokenize", str(image_files[0]), "--method", "grid", "-o", str(tmp_path / "t.png")]
    assert main([*argv, "--max-pixels", "100"]) == 1
    assert "--max-pixels" in capsys.readouterr().err
    assert main([*argv, "--max-pixels", str(64 * 64)]) == 0


def test_vectorize_says_which_default_budget_it_used(image_files, tmp_path, capsys) -> None:
    argv = ["vectorize", str(image_files[0]), "-o", str(tmp_path / "v.svg")]
    assert main([*argv, "--method", "slic"]) == 0
    assert "slic: one region per 24 pixels (the default budget)" in capsys.readouterr().err
    assert main([*argv, "--method", "slic", "--budget", "10"]) == 0
    assert "default budget" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "--size", "128", "--batch", "0"], "--batch must be a positive integer, got 0"),
        (["bench", "--size", "128", "--repeats", "0"], "--repeats must be a positive integer"),
        (["bench", "--size", "128", "--threads", "0"], "--threads must be a positive integer"),
        (["bench", "--size", "128", "--device", "gpu"], "unknown --device 'gpu'"),
        pytest.param(
            ["bench", "--size", "128", "--device", "cuda"],
            "no CUDA device",
            marks=pytest.mark.no_cuda,
        ),
        (["train", "--dataset", "shapes", "--threads", "0", "--out", "{tmp}/r"], "--threads"),
        (["train", "--dataset", "shapes", "--device", "gpu", "--out", "{tmp}/r"], "'gpu'"),
        (["eval", "{tmp}/missing.pt", "--threads", "0"], "--threads"),
    ],
)
def test_options_that_would_crash_or_be_ignored_are_refused(argv, message, tmp_path, capsys):
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    assert message in _error_line(capsys)


def test_eval_of_an_image_file_is_one_line(image_files, capsys):
    assert main(["eval", str(image_files[0])]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "cannot be read as weights-only tensors" in err[0], err


def test_tokenize_and_vectorize_count_one_region_in_the_singular(tmp_path, capsys) -> None:
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((32, 32, 3), 90, dtype=np.uint8)).save(flat)
    assert (
        main(["tokenize", str(flat), "--method", "dht", "--budget", "none", "-o", str(tmp_path)])
        == 0
    )
    assert ": 1 token (dht)" in capsys.readouterr().out
    assert main(["vectorize", str(flat), "--budget", "none", "-o", str(tmp_path / "f.svg")]) == 0
    assert ": 1 region (dht)" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["tokenize", "vectorize"])
def test_budget_none_means_no_cap_for_dht_and_is_refused_elsewhere(
    command, tmp_path, capsys
) -> None:
    halves = np.zeros((40, 64, 3), dtype=np.uint8)
    halves[:, 32:] = 200
    path = tmp_path / "halves.png"
    Image.fromarray(halves).save(path)
    out = str(tmp_path / ("o.png" if command == "tokenize" else "o.svg"))
    assert main([command, str(path), "--method", "dht", "--budget", "None", "-o", out]) == 0
    assert ": 2 " in capsys.readouterr().out  # two flat halves, two regions
    assert main([command, str(path), "--method", "slic", "--budget", "none", "-o", out]) == 2
    assert "--budget none (no cap) is for methods whose budget is a cap (dht)" in (
        capsys.readouterr().err
    )
    assert main([command, str(path), "--method", "dht", "--budget", "many", "-o", out]) == 2
    assert "--budget takes a whole number or 'none' (no cap), got 'many'" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("option", "flag"),
    [
        (["--smoothness", "-1"], "--smoothness"),
        (["--tolerance", "nan"], "--tolerance"),
        (["--background-color", "red"], "--background-color"),
    ],
)
def test_vectorize_refuses_a_bad_style_once_before_reading_images(
    image_files, tmp_path, capsys, option, flag
) -> None:
    argv = ["vectorize", *map(str, image_files), *option, "-o", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("error") == 1 and f"{flag}: " in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--max-patch", "48"], "must be a power of two"),
        (["--scorer", "nope"], "unknown scorer 'nope'"),
    ],
)
def test_tokenize_refuses_a_bad_quadtree_option_once(
    image_files, tmp_path, capsys, option, message
):
    argv = [
        "tokenize",
        *map(str, image_files),
        "--method",
        "quadtree",
        *option,
        "-o",
        str(tmp_path / "t"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count(message) == 1 and "images failed" not in err


# ----------------------------------------------------------- options every command takes
@pytest.mark.parametrize("command", list(COMMANDS))
def test_threads_and_debug_are_declared_once_and_taken_before_or_after_the_command(
    command,
) -> None:
    from adaptok.cli.main import build_parser

    parser = build_parser(command)
    sub = parser._subparsers._group_actions[0].choices[command]
    for flag in ("--threads", "--debug"):
        assert sum(flag in action.option_strings for action in sub._actions) == 1, flag
    positional = {"tokenize": ["x.png"], "vectorize": ["x.png"], "eval": ["x.pt"]}.get(command, [])
    if command == "train":
        positional = ["--dataset", "shapes"]
    after = parser.parse_args([command, *positional, "--threads", "3", "--debug"])
    before = parser.parse_args(["--threads", "3", "--debug", command, *positional])
    plain = parser.parse_args([command, *positional])
    assert (after.threads, after.debug) == (before.threads, before.debug) == (3, True)
    assert (plain.threads, plain.debug) == (None, False)


def test_debug_after_the_command_shows_the_traceback(image_files):
    argv = ["tokenize", str(image_files[0]), "--method", "grid", "--budget", "7"]
    assert main(argv) == 2
    with pytest.raises(AdaptokError):
        main([*argv, "--debug"])


def test_threads_is_applied_before_the_command_runs(image_files, tmp_path, monkeypatch) -> None:
    import adaptok.cli.tokenize as tokenize

    seen = []
    monkeypatch.setattr(tokenize, "run", lambda args: seen.append(torch.get_num_threads()) or 0)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert main(["tokenize", str(image_files[0]), "--threads", "2"]) == 0
    monkeypatch.setattr(sys.modules["adaptok.cli.main"], "default_threads", lambda: 3)
    assert main(["tokenize", str(image_files[0])]) == 0
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # an explicit environment is left to torch
    torch.set_num_threads(5)
    assert main(["tokenize", str(image_files[0])]) == 0
    assert seen == [2, 3, 5]


@pytest.mark.parametrize(
    ("cpus", "torch_default", "load", "expected"),
    [
        (2, 2, 0.1, 2),  # idle: every CPU
        (2, 2, 1.0, 1),  # one busy process on 2 cores: 1 thread
        (2, 2, 0.4, 1),  # a busy process started seconds ago (the load average lags)
        (2, 2, 6.3, 1),  # crowded: never below 1
        (16, 8, 2.0, 6),  # at most torch's own default (physical cores), less the busy ones
        (16, 16, 2.0, 14),
    ],
)
def test_default_threads_leaves_the_busy_cpus_alone(
    cpus, torch_default, load, expected, monkeypatch
) -> None:
    cli_main = sys.modules["adaptok.cli.main"]  # (adaptok.cli.main is also the function)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(torch, "get_num_threads", lambda: torch_default)
    assert cli_main.default_threads() == expected


def test_warnings_print_as_one_line(image_files, monkeypatch, capsys) -> None:
    import warnings

    import adaptok.cli.tokenize as tokenize

    def run(args) -> int:
        warnings.warn("vit.pth: classifier head has another number of classes", stacklevel=1)
        warnings.warn("an old option", DeprecationWarning, stacklevel=1)
        return 0

    monkeypatch.setattr(tokenize, "run", run)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main(["tokenize", str(image_files[0])]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "adaptok tokenize: warning: vit.pth: classifier head has another number of classes",
        "adaptok tokenize: warning: an old option (DeprecationWarning)",
    ]


@pytest.mark.parametrize("command", ["tokenize", "vectorize"])
def test_no_progress_bar_where_it_would_only_clutter_a_log(
    command, image_files, tmp_path, capsys
) -> None:
    argv = [command, *map(str, image_files), "--method", "grid", "-o", str(tmp_path / command)]
    assert main(argv) == 0  # stderr is captured here, not a terminal: no bar
    assert "\r" not in capsys.readouterr().err
    assert main([*argv, "--no-progress"]) == 0
    assert "\r" not in capsys.readouterr().err


def test_progress_bar_shows_on_a_terminal_unless_switched_off(monkeypatch) -> None:
    import argparse

    from adaptok.cli.outputs import progress_bar

    class Terminal:
        def isatty(self) -> bool:
            return True

        def write(self, text: str) -> None: ...

        def flush(self) -> None: ...

    monkeypatch.setattr(sys, "stderr", Terminal())
    shown = argparse.Namespace(no_progress=False)
    assert not progress_bar(range(3), 3, shown).disable
    assert progress_bar(range(1), 1, shown).disable  # one file: nothing to follow
    assert progress_bar(range(3), 3, argparse.Namespace(no_progress=True)).disable


def test_tokenize_runs_dht_at_a_working_resolution(
    image_files, tmp_path, capsys, monkeypatch
) -> None:
    """--resolution reaches dHT's hierarchy, and is refused for other methods and outside
    (0, 1], once."""
    from adaptok.partitioners.dht import DHTTokenizer

    seen = []
    partition = DHTTokenizer.partition

    def spy(self, images, **options):
        seen.append(options["resolution"])
        return partition(self, images, **options)

    monkeypatch.setattr(DHTTokenizer, "partition", spy)
    out = tmp_path / "half"
    argv = ["tokenize", str(image_files[0]), "--method", "dht", "--budget", "12"]
    assert main([*argv, "--resolution", "0.5", "-o", str(out)]) == 0
    assert "12 tokens (dht)" in capsys.readouterr().out and seen == [0.5]
    assert main([*argv, "--resolution", "1.5", "-o", str(tmp_path / "bad")]) == 2
    assert capsys.readouterr().err.count("resolution must be a fraction") == 1
    quadtree = ["tokenize", str(image_files[0]), "--resolution", "0.5", "-o", str(tmp_path / "q")]
    assert main(quadtree) == 2
    assert "does not take --resolution" in capsys.readouterr().err


def test_tokenize_aligns_dht_regions_to_cells(image_files, tmp_path, capsys) -> None:
    """--cell makes dHT's regions whole blocks; refused for other methods and below 1."""
    out = tmp_path / "cells"
    argv = ["tokenize", str(image_files[0]), "--method", "dht", "--budget", "12"]
    assert main([*argv, "--cell", "8", "-o", str(out)]) == 0
    assert "12 tokens (dht)" in capsys.readouterr().out
    assert main([*argv, "--cell", "0", "-o", str(tmp_path / "bad")]) == 2
    assert "--cell must be a positive integer" in capsys.readouterr().err
    quadtree = ["tokenize", str(image_files[0]), "--cell", "8", "-o", str(tmp_path / "q")]
    assert main(quadtree) == 2
    assert "does not take --cell" in capsys.readouterr().err
