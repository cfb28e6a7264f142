"""CLI behaviour on bad input: one clear line, non-zero exit, no traceback (in process; what the
terminal sees, in subprocesses: test_cli_errors.py)."""

import argparse
import os

import pytest

from singan_tf.cli import command_main, main


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--iters", "-3"], "--iters must be >= 1"),
        (["--scale-factor", "1.5"], "--scale-factor must be in (0, 1)"),
        (["--min-size", "300"], "--max-size must be >= --min-size"),
        (["--cpu-threads", "two"], "--cpu-threads must be auto, tf or INTRA,INTER"),
        (["--cpu-threads", "0,2"], "--cpu-threads must be auto, tf or INTRA,INTER"),
    ],
)
def test_invalid_options(tmp_path, capsys, args, message):
    code = command_main("train", [*args, "--out", str(tmp_path / "run")])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_tiny_image_says_the_minimum(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (30, 20)).save(tmp_path / "tiny.png")
    code = command_main("train", [str(tmp_path / "tiny.png"), "--out", str(tmp_path / "run")])
    assert code == 2
    assert "must be larger than min_size=25" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_not_an_image(tmp_path, capsys):
    (tmp_path / "x.jpg").write_bytes(b"\x00" * 100)
    assert command_main("train", [str(tmp_path / "x.jpg"), "--out", str(tmp_path / "run")]) == 2
    assert "not an image" in capsys.readouterr().err


def test_sample_needs_a_run_directory(tmp_path, capsys):
    assert command_main("sample", [str(tmp_path)]) == 2
    assert "not a singan-tf run directory" in capsys.readouterr().err


def test_refuses_to_overwrite_a_run(trained_run, capsys):
    assert command_main("train", ["--out", trained_run]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_sample_rejects_bad_values(trained_run, capsys):
    assert command_main("sample", [trained_run, "--scale-h", "0"]) == 2
    assert command_main("sample", [trained_run, "--start-scale", "9"]) == 2
    assert "start scale must be in 0..2" in capsys.readouterr().err


def test_console_entry_point_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "train" in out and "sample" in out


def _truncated(tmp_path):
    from PIL import Image

    Image.new("RGB", (300, 200), "red").save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    return tmp_path / "t.png"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.png", "no such file"),
        (lambda p: p, "is a directory"),
        (lambda p: (p / "notes.txt").write_text("hi") and p / "notes.txt", "not an image Pillow can read"),
        (_truncated, "unreadable image"),
    ],
)
def test_each_bad_input_exits_2_and_leaves_no_run(tmp_path, capsys, make, message):
    out = tmp_path / "run"
    assert command_main("train", [str(make(tmp_path)), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_decompression_bomb_exits_2(tmp_path, capsys, monkeypatch):
    from PIL import Image

    Image.new("RGB", (300, 200)).save(tmp_path / "b.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert command_main("train", [str(tmp_path / "b.png"), "--out", str(tmp_path / "run")]) == 2
    assert "decompression bomb" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_large_grayscale_is_converted_and_resized_with_messages(tmp_path, caplog, monkeypatch):
    """Conversions are said, then training proceeds (stopped here by a tiny memory budget)."""
    from PIL import Image

    from singan_tf import runtime

    Image.new("L", (1000, 600), 128).save(tmp_path / "g.png")
    monkeypatch.setattr(runtime, "available_memory", lambda: 2**20)
    assert command_main("train", [str(tmp_path / "g.png"), "--out", str(tmp_path / "run")]) == 2
    assert "grayscale image, converted to RGB" in caplog.text
    assert "1000x600 resized to 250x150 (max size 250)" in caplog.text


def test_resume_with_precision_auto_keeps_the_recorded_choice():
    import argparse

    from singan_tf.cli import add_train_arguments, resumed_config
    from singan_tf.config import TrainConfig
    from singan_tf.errors import ConfigError

    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    stored = TrainConfig(precision="mixed_bfloat16", iters=50)
    args = parser.parse_args(["--out", "r", "--resume", "--precision", "auto", "--checkpoint-every", "7"])
    config = resumed_config(args, stored)
    assert config.precision == "mixed_bfloat16" and config.checkpoint_every == 7
    with pytest.raises(ConfigError, match="--precision float32 differs"):
        resumed_config(parser.parse_args(["--out", "r", "--precision", "float32"]), stored)


def test_fast_preset_trains_and_records_each_scales_precision(tmp_path):
    import json

    from singan_tf.cli import command_main
    from singan_tf.runtime import precision_candidates

    out = tmp_path / "run"
    args = ["--preset", "fast", "--max-size", "40", "--iters", "8", "--iters-decay", "0.5", "--no-progress"]
    assert command_main("train", [*args, "--num-samples", "2", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["preset"], config["max_channels"], config["iters"], config["precision"]) == (
        "fast",
        32,
        8,
        "auto",
    )
    assert config["concurrent"] == 2
    scales = json.loads((out / "pyramid.json").read_text())["scales"]
    assert [s["iters"] for s in scales] == [8, 4, 2][: len(scales)] and len(scales) >= 2
    # Scale 1 on trains G_{n-1} too: its refined weights are what the pyramid loads.
    assert all(
        (out / "scales" / f"{n:02d}" / "coarser_generator.weights.h5").is_file()
        for n in range(1, len(scales))
    )
    assert all(s["runtime"]["precision"] in precision_candidates() for s in scales)
    assert len(list((out / "samples").glob("sample_*.png"))) == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--out", "{run}", "--resume"],
        ["harmonize", "{run}", "--naive", "n.png", "--inject-scale", "1", "--fine-tune", "5", "-o", "o.png"],
        ["edit", "{run}", "--edited", "e.png", "--inject-scale", "1", "--fine-tune", "5", "-o", "o.png"],
    ],
)
def test_training_more_of_a_deterministic_run_turns_onednn_off_before_tensorflow_loads(
    tmp_path, monkeypatch, argv
):
    # oneDNN's kernels differ run to run in the last bits: the run's own --deterministic decides,
    # as the flag does for a new run.
    from singan_tf import cli
    from singan_tf.config import TrainConfig

    parser = argparse.ArgumentParser()
    cli._add_command(parser, argv[0])

    def parsed(run):
        args = parser.parse_args([a.format(run=run) for a in argv[1:]])
        vars(args).pop("jit", None)  # the oneDNN setting is under test here, not the XLA cache
        return args

    for deterministic in (False, True):
        run = tmp_path / f"run_{deterministic}"
        run.mkdir()
        (run / "config.json").write_text(TrainConfig(deterministic=deterministic).to_json())
        env: dict[str, str] = {}
        with monkeypatch.context() as m:
            m.setattr(os, "environ", env)
            cli._prepare_tensorflow(parsed(run))
        assert env.get("TF_ENABLE_ONEDNN_OPTS") == ("0" if deterministic else None)
    assert cli._trains_deterministic_run(parsed(tmp_path / "missing")) is False  # its command reports it
