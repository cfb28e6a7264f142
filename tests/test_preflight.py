"""preflight: run directories read without TensorFlow, the option ranges the library shares with
the CLIs, and TensorFlow's quiet import (shown with a stand-in ``tensorflow`` that writes to file
descriptor 2 as the real one's C++ side does)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from singan_tf.errors import ConfigError, InputError
from singan_tf.preflight import (
    check_animation_path,
    check_injection_scale,
    check_start_scale,
    check_walk,
    read_manifest,
    trained_manifest,
)

IMPORT = """
import sys
from singan_tf.preflight import import_tensorflow
import_tensorflow(verbose=sys.argv[1] == "verbose")
print("after the import", file=sys.stderr)
"""


def import_fake_tensorflow(tmp_path, body: str, verbose: bool = False, env=None):
    (tmp_path / "tensorflow").mkdir()
    (tmp_path / "tensorflow" / "__init__.py").write_text("import os, sys\n" + body)
    base = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-c", IMPORT, "verbose" if verbose else "quiet"],
        capture_output=True,
        text=True,
        env={**base, "PYTHONPATH": str(tmp_path), **(env or {})},
        check=False,
    )


NOISE = 'os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called\\n")\n'


def test_start_up_lines_are_hidden(tmp_path):
    r = import_fake_tensorflow(tmp_path, NOISE)
    assert (r.returncode, r.stderr) == (0, "after the import\n")


def test_verbose_shows_them(tmp_path):
    r = import_fake_tensorflow(tmp_path, NOISE, verbose=True)
    assert r.stderr.splitlines() == [
        "WARNING: All log messages before absl::InitializeLog() is called",
        "after the import",
    ]


def test_a_failing_import_shows_them_and_its_traceback(tmp_path):
    r = import_fake_tensorflow(
        tmp_path, NOISE + 'raise ImportError("libtensorflow_framework.so.2: missing")\n'
    )
    assert r.returncode == 1
    assert r.stderr.startswith("WARNING: All log messages before absl::InitializeLog()")
    assert r.stderr.endswith("ImportError: libtensorflow_framework.so.2: missing\n")


@pytest.mark.parametrize(("given", "seen"), [(None, "2"), ("0", "0")])
def test_later_cpp_logging_defaults_to_errors_only(tmp_path, given, seen):
    body = 'print(os.environ.get("TF_CPP_MIN_LOG_LEVEL"))\n'
    r = import_fake_tensorflow(tmp_path, body, env={"TF_CPP_MIN_LOG_LEVEL": given} if given else None)
    assert r.stdout == f"{seen}\n"


def test_manifest_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(InputError, match=r"not a singan-tf run directory \(no pyramid.json\)"):
        read_manifest(tmp_path)
    (tmp_path / "pyramid.json").write_text("{")
    with pytest.raises(InputError, match="pyramid.json: unreadable"):
        read_manifest(tmp_path)
    manifest = {"geometry": {"sizes": [[25, 37], [33, 49]]}, "scales": [{"scale": 0}]}
    (tmp_path / "pyramid.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="training finished 1 of 2 scales"):
        trained_manifest(tmp_path)
    assert trained_manifest(tmp_path, allow_partial=True) == manifest


def test_scale_ranges_of_a_three_scale_run():
    # The ends of each range pass.
    check_start_scale(0, 3)
    check_start_scale(2, 3)
    check_injection_scale(1, 3)
    check_injection_scale(2, 3)
    check_walk(2, 1, 3, alpha=0.0, beta=0.0)
    check_walk(2, 3, 3, alpha=1.0, beta=0.99)
    with pytest.raises(ConfigError, match=r"^start scale must be in 0\.\.2, got 3$"):
        check_start_scale(3, 3)
    with pytest.raises(ConfigError, match=r"^injection scale must be in 1\.\.2, got 0$"):
        check_injection_scale(0, 3)
    with pytest.raises(ConfigError, match=r"^animation start scale must be in 1\.\.3, got 0$"):
        check_walk(2, 0, 3, 0.1, 0.9)


def test_animation_formats():
    assert check_animation_path("a/b.GIF").name == "b.GIF"
    with pytest.raises(ConfigError, match=r"^b\.avi: animations are written as \.gif or \.mp4$"):
        check_animation_path("a/b.avi")
