"""python -m singan_tf.tune: timing every candidate, the probes, the cache they fill."""

import json

from singan_tf import runtime
from singan_tf.config import TrainConfig
from singan_tf.pyramid import pyramid_geometry
from singan_tf.tune import time_geometry

TINY = ["--preset", "quick", "--max-size", "40", "--iters", "5", "--jit", "off"]


def test_time_geometry_times_the_real_step_and_caches_it(tmp_path):
    config = TrainConfig(max_size=40, iters=5, precision="float32", jit_compile="off")
    geometry = pyramid_geometry((60, 90), config.min_size, config.max_size)
    cache = runtime.TuningCache(tmp_path / "t.json", machine="m")
    rows = time_geometry(config, geometry, cache, timed=2)
    assert [r["scale"] for r in rows] == list(range(geometry.num_scales))
    assert all(r["ms_per_iter"] > 0 and r["precision"] == "float32" for r in rows)
    # Iterations of a few ms: timed for at least MIN_TIMED_S, not only 2 of them.
    for r in rows:
        timed_ms = r["timed_iters"] * r["ms_per_iter"]
        assert r["timed_iters"] == runtime.MAX_TIMED_ITERS or timed_ms >= runtime.MIN_TIMED_S * 1e3
        assert r["timed_iters"] > 2
    assert all(r["achieved_gflops"] > 0 for r in rows)
    assert rows[0]["first_call_s"] > rows[0]["ms_per_iter"] / 1e3  # the first call traced
    again = time_geometry(config, geometry, runtime.TuningCache(tmp_path / "t.json", machine="m"), timed=2)
    assert [r["ms_per_iter"] for r in again] == [r["ms_per_iter"] for r in rows]  # from the cache


def test_time_geometry_times_for_as_long_as_asked(monkeypatch):
    # The benchmarks time every choice for longer than the tuner's probes: at the coarse scales
    # half a second read the same step 1.4x apart between two processes.
    monkeypatch.setattr(runtime, "MAX_TIMED_ITERS", 100_000)  # a tiny step: no cap on the count
    config = TrainConfig(max_size=40, iters=5, precision="float32", jit_compile="off")
    geometry = pyramid_geometry((60, 90), config.min_size, config.max_size)
    (row,) = time_geometry(config, geometry, None, scales=[0], timed=2, min_s=1.5)
    assert row["timed_iters"] * row["ms_per_iter"] >= 1.5e3
    assert row["timed_iters"] > 2


def test_tune_cli_probes_every_thread_plan_and_prints_the_choices(tmp_path, run_cli):
    cache = {"SINGAN_TF_CACHE_DIR": str(tmp_path)}
    r = run_cli("singan_tf.tune", *TINY, "--precision", "float32", env=cache, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "| scale | size | ch |" in r.stdout and "scale 0: float32 (as asked)" in r.stdout
    assert "CPU threads: " in r.stdout
    entries = json.loads((tmp_path / "tuning.json").read_text())["machines"]
    (timings,) = entries.values()
    plans = {key.rsplit("threads=", 1)[1] for key in timings}
    assert plans == {runtime.thread_label(p) for p in runtime.thread_candidates(runtime.core_count(), 0)}


def test_tune_cli_bad_input_is_one_line(tmp_path, run_cli):
    r = run_cli("singan_tf.tune", str(tmp_path / "nope.png"), env={"SINGAN_TF_CACHE_DIR": str(tmp_path)})
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == f"singan-tf: error: {tmp_path / 'nope.png'}: no such file"
    assert "Traceback" not in r.stderr


def test_decide_geometry_decides_like_training(tmp_path, monkeypatch):
    from singan_tf.tune import decide_geometry

    monkeypatch.setattr(runtime, "precision_candidates", lambda: ["float32", "mixed_bfloat16"])
    config = TrainConfig(max_size=40, iters=20000, precision="auto", jit_compile="off")  # budget to measure
    geometry = pyramid_geometry((60, 90), config.min_size, config.max_size)
    cache = runtime.TuningCache(tmp_path / "t.json", machine="m")
    decisions = decide_geometry(config, geometry, cache)
    assert [d["scale"] for d in decisions] == list(range(geometry.num_scales))
    assert decisions[0]["source"] == "measured" and set(decisions[0]["ms_per_iter"]) == {
        "float32",
        "bfloat16",
    }
    assert all(d["precision"] in ("float32", "mixed_bfloat16") for d in decisions)
    assert decisions[0]["line"].startswith(("float32 (measured", "bfloat16 (measured"))
