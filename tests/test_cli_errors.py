"""What a user's terminal shows for an ordinary mistake: exactly one line on stderr and exit
code 2, decided before TensorFlow loads; and no TensorFlow start-up lines when all goes well.

Every command runs in a subprocess. Mistakes run with TensorFlow made unimportable, so a check
that moved behind TensorFlow's import fails here with a traceback instead of passing slowly;
a missing optional extra is simulated the same way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from singan_tf.images import bundled_image

# Runs ``python -m MODULE ARGS`` as if the comma-separated modules were not installed.
WITHOUT = """
import runpy, sys
for name in filter(None, sys.argv[1].split(",")):
    sys.modules[name] = None  # import fails, importlib.util.find_spec says None
sys.argv = sys.argv[2:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""
NO_TENSORFLOW = ("tensorflow", "keras")


def run(module: str, *args, missing=NO_TENSORFLOW, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user runs it
    return subprocess.run(
        [sys.executable, "-c", WITHOUT, ",".join(missing), module, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def assert_one_line(r: subprocess.CompletedProcess, line: str) -> None:
    assert (r.returncode, r.stderr) == (2, line + "\n")


def fake_run(path, sizes, finished: int):
    """A run directory as far as the CLIs read it before TensorFlow loads: its manifest."""
    path.mkdir()
    manifest = {"geometry": {"sizes": sizes}, "scales": [{"scale": n} for n in range(finished)]}
    (path / "pyramid.json").write_text(json.dumps(manifest))
    return path


@pytest.fixture
def files(tmp_path):
    """A missing file, a directory, a text file named .png, a real image, an 8x8 image, a folder
    without a run, a run directory whose training finished no scale, and a finished one (3 scales)."""
    from PIL import Image

    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.png").write_text("not a picture\n")
    Image.new("RGB", (8, 8)).save(tmp_path / "tiny.png")
    return {
        "missing": tmp_path / "missing.png",
        "dir": tmp_path / "folder",
        "text": tmp_path / "notes.png",
        "image": bundled_image(),
        "tiny": tmp_path / "tiny.png",
        "norun": tmp_path / "folder",
        "unfinished": fake_run(tmp_path / "unfinished", [[25, 37], [33, 49]], finished=0),
        "finished": fake_run(tmp_path / "finished", [[25, 37], [33, 49], [43, 64]], finished=3),
        "out": tmp_path / "out",
    }


NO_SUCH = "singan-tf: error: {missing}: no such file"
IS_DIR = "singan-tf: error: {dir}: is a directory, expected an image file"
NOT_IMAGE = "singan-tf: error: {text}: not an image Pillow can read"
NO_RUN = "singan-tf: error: {norun}: not a singan-tf run directory (no pyramid.json)"
UNFINISHED = (
    "singan-tf: error: {unfinished}: training finished 0 of 2 scales; "
    "resume it with `python -m singan_tf.train --resume`"
)


def inject_at(scale: int) -> list[str]:
    return ["--inject-scale", str(scale), "--out", "{out}.png"]


INJECT = inject_at(1)
TINY = (
    "singan-tf: error: image is 8x8 (WxH); after capping the longer side at 250 its shorter side "
    "is 8 px, but it must be larger than min_size=25 px"
)
ANIMATE = ["singan_tf", "animate", "{finished}", "--start-scale", "1"]


@pytest.mark.parametrize(
    ("command", "line"),
    [
        (["singan_tf.train", "{missing}", "--out", "{out}"], NO_SUCH),
        (["singan_tf.train", "{dir}", "--out", "{out}"], IS_DIR),
        (["singan_tf.train", "{text}", "--out", "{out}"], NOT_IMAGE),
        (["singan_tf.train", "--out", "{out}", "--iters", "0"], "singan-tf: error: --iters must be >= 1"),
        (["singan_tf.train", "--out", "{out}", "--resume"], "singan-tf: error: {out}: no run to resume"),
        (["singan_tf", "train", "{text}", "--out", "{out}"], NOT_IMAGE),
        (["singan_tf.train", "{tiny}", "--out", "{out}"], TINY),
        (["singan_tf.tune", "{missing}"], NO_SUCH),
        (["singan_tf", "tune", "{dir}"], IS_DIR),
        (["singan_tf.sample", "{norun}"], NO_RUN),
        (["singan_tf", "sample", "{unfinished}"], UNFINISHED),
        (
            ["singan_tf.sample", "{finished}", "--start-scale", "99"],
            "singan-tf: error: start scale must be in 0..2, got 99",
        ),
        (
            ["singan_tf.sample", "{norun}", "--num", "0"],
            "singan-tf: error: --num and --batch-size must be >= 1",
        ),
        (["singan_tf.evaluate", "{norun}"], NO_RUN),
        (
            ["singan_tf", "evaluate", "{norun}", "--num", "1"],
            "singan-tf: error: --num must be >= 2 (diversity compares samples)",
        ),
        (
            ["singan_tf.evaluate", "{finished}", "--start-scale", "-1"],
            "singan-tf: error: start scale must be in 0..2, got -1",
        ),
        (
            ["singan_tf", "evaluate", "{finished}", "--inception-weights", "{missing}.h5"],
            "singan-tf: error: {missing}.h5: no such Inception-V3 weights file",
        ),
        (["singan_tf", "paint2image", "{norun}", "--paint", "{text}", *INJECT], NOT_IMAGE),
        (["singan_tf", "paint2image", "{norun}", "--paint", "{image}", *INJECT], NO_RUN),
        (["singan_tf", "harmonize", "{norun}", "--naive", "{dir}", *INJECT], IS_DIR),
        (
            ["singan_tf", "harmonize", "{norun}", "--naive", "{image}", "--mask", "{missing}", *INJECT],
            NO_SUCH,
        ),
        (["singan_tf", "edit", "{unfinished}", "--edited", "{image}", *INJECT], UNFINISHED),
        (
            ["singan_tf", "paint2image", "{finished}", "--paint", "{image}", *inject_at(3)],
            "singan-tf: error: injection scale must be in 1..2, got 3",
        ),
        (
            ["singan_tf", "harmonize", "{finished}", "--naive", "{image}", *inject_at(0)],
            "singan-tf: error: injection scale must be in 1..2, got 0",
        ),
        (["singan_tf", "sr", "{missing}", "--factor", "2", "--out", "{out}"], NO_SUCH),
        (["singan_tf", "sr", "{text}", "--factor", "2", "--out", "{out}"], NOT_IMAGE),
        (["singan_tf", "sr", "{unfinished}", "--factor", "2"], UNFINISHED),
        (
            ["singan_tf", "sr", "{image}", "--factor", "0.5", "--out", "{out}"],
            "singan-tf: error: --factor must be > 1, got 0.5",
        ),
        (["singan_tf", "sr", "{finished}", "--factor", "1"], "singan-tf: error: --factor must be > 1, got 1"),
        (["singan_tf", "sr", "{tiny}", "--factor", "2", "--out", "{out}"], TINY),
        (["singan_tf", "animate", "{norun}", "--start-scale", "1", "--out", "{out}.gif"], NO_RUN),
        ([*ANIMATE, "--frames", "1", "--out", "{out}.gif"], "singan-tf: error: --frames must be >= 2"),
        (
            [*ANIMATE, "--alpha", "2", "--out", "{out}.gif"],
            "singan-tf: error: --alpha must be in [0, 1] and --beta in [0, 1)",
        ),
        (
            [*ANIMATE, "--beta", "1", "--out", "{out}.gif"],
            "singan-tf: error: --alpha must be in [0, 1] and --beta in [0, 1)",
        ),
        (
            [*ANIMATE, "--start-scale", "4", "--out", "{out}.gif"],
            "singan-tf: error: animation start scale must be in 1..3, got 4",
        ),
        (
            [*ANIMATE, "--scale-h", "0", "--out", "{out}.gif"],
            "singan-tf: error: --scale-h and --scale-v must be > 0",
        ),
        (
            [*ANIMATE, "--out", "{out}.avi"],
            "singan-tf: error: out.avi: animations are written as .gif or .mp4",
        ),
        (["export", "{norun}", "--out", "{out}"], NO_RUN.replace("singan-tf:", "export:")),
        (["export", "{unfinished}", "--out", "{out}"], UNFINISHED.replace("singan-tf:", "export:")),
        (
            ["export", "{norun}", "--out", "{out}", "--format", "tflite"],
            "export: error: unknown format(s) tflite; use savedmodel, onnx, onnx-int8",
        ),
        (["export", "{norun}", "--out", "{out}", "--version", "0"], "export: error: --version must be >= 1"),
        (
            ["export", "{finished}", "--out", "{out}", "--name", "bad name"],
            "export: error: model name 'bad name' must be letters, digits, '_', '.', '-'",
        ),
        (
            ["serving", "--models", "{missing}"],
            "serving: error: {missing}: no such folder (export a run with `python -m export RUN --out DIR`)",
        ),
        (["serving", "--models", "{dir}", "--port", "0"], "serving: error: --port must be positive"),
        (
            ["serving.page", "{out}", "--models", "{missing}"],
            "serving.page: error: {missing}: no such folder",
        ),
        # Usage mistakes: argparse's own, also one line (the usage is behind --help).
        (
            ["singan_tf.sample", "{norun}", "--num", "abc"],
            "python -m singan_tf.sample: error: argument --num/-n: invalid int value: 'abc' (see --help)",
        ),
        (
            ["singan_tf", "sample"],
            "singan-tf sample: error: the following arguments are required: run_dir (see --help)",
        ),
        (
            ["export", "{norun}"],
            "python -m export: error: the following arguments are required: --out/-o (see --help)",
        ),
        (
            ["serving", "--models", "{dir}", "--port", "x"],
            "python -m serving: error: argument --port: invalid int value: 'x' (see --help)",
        ),
    ],
)
def test_a_mistake_is_one_line_before_tensorflow_loads(files, command, line):
    module, *args = (arg.format(**files) for arg in command)
    assert_one_line(run(module, *args), line.format(**files))


def test_a_real_terminal_sees_the_same_one_line(files):
    """With TensorFlow installed as usual: no start-up lines, no traceback."""
    r = run("singan_tf.train", files["missing"], "--out", files["out"], missing=())
    assert_one_line(r, NO_SUCH.format(**files))
    assert not files["out"].exists()


EXPORT_EXTRA = "export: error: ONNX export needs the export extra: pip install 'singan-tf[export]'"
SERVING_EXTRA = (
    "serving: error: the HTTP endpoint needs the serving extra: "
    "pip install 'singan-tf[serving]' (or singan-serving)"
)


@pytest.mark.parametrize(
    ("missing", "args", "line"),
    [
        (("onnx",), [], EXPORT_EXTRA),
        (("tf2onnx",), ["--format", "onnx"], EXPORT_EXTRA),
        (("onnxruntime",), ["--format", "savedmodel,onnx-int8"], EXPORT_EXTRA),
        # SavedModel alone needs no extra: the run directory is checked next.
        (
            ("onnx", "tf2onnx", "onnxruntime"),
            ["--format", "savedmodel"],
            NO_RUN.replace("singan-tf:", "export:"),
        ),
    ],
)
def test_export_without_its_extra(files, missing, args, line):
    r = run("export", files["norun"], "--out", files["out"], *args, missing=(*NO_TENSORFLOW, *missing))
    assert_one_line(r, line.format(**files))


def test_animate_mp4_without_imageio_ffmpeg(files):
    module, *args = (arg.format(**files) for arg in [*ANIMATE, "--out", "{out}.mp4"])
    r = run(module, *args, missing=(*NO_TENSORFLOW, "imageio_ffmpeg"))
    assert_one_line(
        r, "singan-tf: error: writing MP4 needs imageio-ffmpeg (pip install imageio-ffmpeg); or write a .gif"
    )


@pytest.mark.parametrize("module", ["uvicorn", "fastapi", "onnxruntime"])
def test_serving_without_its_extra(files, module):
    assert_one_line(run("serving", "--models", files["dir"], missing=(*NO_TENSORFLOW, module)), SERVING_EXTRA)


def test_importing_the_cli_loads_neither_tensorflow_nor_numpy():
    code = "import sys, singan_tf.cli; print(sorted({'numpy', 'tensorflow', 'keras'} & set(sys.modules)))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout == "[]\n"


def test_a_successful_command_shows_no_tensorflow_start_up_lines(trained_run, tmp_path):
    from PIL import Image

    out = tmp_path / "samples"
    r = run("singan_tf", "sample", trained_run, "--num", "2", "--out", out, missing=())
    assert r.returncode == 0, r.stderr
    w, h = Image.open(out / "sample_000.png").size
    assert r.stderr.splitlines() == [f"wrote 2 samples of {w}x{h} to {out}"]


def test_export_shows_no_tensorflow_start_up_lines(trained_run, tmp_path):
    r = run("export", trained_run, "--out", tmp_path, "--format", "savedmodel", missing=())
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == f"savedmodel: {tmp_path / 'savedmodel' / 'singan' / '1'}\n"


def test_an_unreadable_weights_file_is_named_in_one_line(trained_run, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    last = sorted((run_dir / "scales").iterdir())[-1] / "generator.weights.h5"
    last.write_bytes(b"not hdf5")
    r = run("singan_tf", "sample", run_dir, "--num", "1", "--out", tmp_path / "samples", missing=())
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"singan-tf: error: {last}: not a readable weights file"), r.stderr


def test_a_resumed_run_with_other_settings_is_refused_before_tensorflow_loads(tmp_path):
    from singan_tf.config import TrainConfig
    from singan_tf.pyramid import pyramid_geometry

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    geometry = pyramid_geometry((54, 80), max_size=80)
    manifest = {"geometry": geometry.to_dict(), "scales": [{"scale": 0}]}
    (run_dir / "pyramid.json").write_text(json.dumps(manifest))
    (run_dir / "config.json").write_text(json.dumps(TrainConfig.from_preset("quick").to_dict()))
    r = run("singan_tf.train", "--out", run_dir, "--resume", "--iters", "50")
    assert_one_line(
        r, "singan-tf: error: --iters 50 differs from the run's 400; a resumed run keeps its settings"
    )
    (run_dir / "config.json").unlink()
    r = run("singan_tf.train", "--out", run_dir, "--resume")
    missing = run_dir / "config.json"
    assert_one_line(r, f"singan-tf: error: {missing}: missing (the run directory is incomplete)")
