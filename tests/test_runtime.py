"""The runtime choices: priors, the tuning cache, the tuner's decisions, the thread pools."""

import json
import logging
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from singan_tf import runtime
from singan_tf.config import TrainConfig
from singan_tf.errors import ConfigError
from singan_tf.runtime import Choice, Timing, Tuner, TuningCache

SIZES = [(25, 34), (33, 43), (42, 56)]
F32, BF16 = Choice("float32", False), Choice("mixed_bfloat16", False)


@pytest.fixture
def two_precisions(monkeypatch):
    """A machine where auto chooses between float32 and bfloat16, with bfloat16 the prior."""
    monkeypatch.setattr(runtime, "precision_candidates", lambda: ["float32", "mixed_bfloat16"])
    monkeypatch.setattr(runtime, "prior_precision", lambda: "mixed_bfloat16")


def test_thread_plans():
    # the prior: one thread per op, one op per core, on CPU-only machines with up to 4 cores
    assert runtime.thread_plan("auto", cores=2, gpus=0) == (1, 2)
    assert runtime.thread_plan("auto", cores=4, gpus=0) == (1, 4)
    assert runtime.thread_plan("auto", cores=16, gpus=0) is None  # TensorFlow's pools
    assert runtime.thread_plan("auto", cores=2, gpus=1) is None
    assert runtime.thread_plan("tf", cores=2, gpus=0) is None
    assert runtime.thread_plan("2,1", cores=2, gpus=0) == (2, 1)
    assert runtime.thread_candidates(2, 0) == [(1, 2), None]
    assert runtime.thread_candidates(16, 0) == [None, (1, 16)]
    assert runtime.thread_candidates(2, 1) == [None]
    for bad in ("two", "1", "0,2", "1,2,3", "-1,2"):
        with pytest.raises(ConfigError, match="--cpu-threads"):
            runtime.thread_plan(bad, cores=2, gpus=0)


def test_xla_prior():
    pools = None  # TensorFlow's pools: XLA can use every core
    assert runtime.xla_prior(TrainConfig(), (25, 34), 2000, pools)
    assert not runtime.xla_prior(TrainConfig(), (186, 248), 2000, pools)
    assert not runtime.xla_prior(TrainConfig(), (25, 34), 400, pools)  # compile time would not pay off
    assert runtime.xla_prior(TrainConfig(jit_compile="on"), (186, 248), 10, pools)
    assert not runtime.xla_prior(TrainConfig(jit_compile="off"), (25, 34), 2000, pools)
    # One thread per op: XLA's single program would run on one core.
    assert not runtime.xla_prior(TrainConfig(), (25, 34), 2000, (1, 2))
    assert runtime.xla_prior(TrainConfig(jit_compile="on"), (25, 34), 2000, (1, 2))  # asked for explicitly
    assert not runtime.xla_prior(TrainConfig(deterministic=True), (25, 34), 2000, pools)


def test_precision_prior_follows_the_hardware(monkeypatch):
    monkeypatch.setattr(runtime, "gpu_devices", lambda: [])
    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert runtime.prior_precision() == "mixed_bfloat16"
    assert runtime.precision_candidates() == ["float32", "mixed_bfloat16"]
    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx2", "fma"})
    assert runtime.prior_precision() == "float32"
    assert runtime.precision_candidates() == ["float32"]  # emulated bfloat16 is never tried
    assert runtime.resolve_precision("mixed_float16") == "mixed_float16"  # explicit choices stand
    monkeypatch.setattr(runtime, "gpu_devices", lambda: ["gpu0"])
    for capability, want, candidates in [
        ((8, 6), "mixed_bfloat16", ["float32", "mixed_bfloat16", "mixed_float16"]),
        ((7, 5), "mixed_float16", ["float32", "mixed_float16"]),
        ((6, 1), "float32", ["float32"]),
    ]:
        monkeypatch.setattr(runtime, "gpu_capability", lambda gpu, c=capability: c)
        assert runtime.prior_precision() == want
        assert runtime.precision_candidates() == candidates
    monkeypatch.undo()
    assert runtime.resolve_precision("auto") in ("float32", "mixed_bfloat16", "mixed_float16")


def test_cache_is_per_machine_and_survives_a_reload(tmp_path):
    path = tmp_path / "tuning.json"
    cache = TuningCache(path, machine="cpu A | 2 cores")
    cache.put("k", Timing(12.5, 1.5, 3))
    assert TuningCache(path, machine="cpu A | 2 cores").get("k") == Timing(12.5, 1.5, 3)
    assert TuningCache(path, machine="cpu B | 2 cores").get("k") is None
    TuningCache(path, machine="cpu B | 2 cores").put("k", Timing(9.0, 1.0, 3))  # merged, not replaced
    assert TuningCache(path, machine="cpu A | 2 cores").get("k").ms_per_iter == 12.5
    path.write_text("not json")
    assert TuningCache(path, machine="cpu A | 2 cores").get("k") is None  # a broken cache is ignored
    assert "cores" in runtime.machine_key() and "TensorFlow" in runtime.machine_key()


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("SINGAN_TF_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert runtime.cache_dir() == tmp_path / "singan-tf"
    monkeypatch.setenv("SINGAN_TF_CACHE_DIR", str(tmp_path / "x"))
    assert runtime.cache_dir() == tmp_path / "x"


def _fake_measure(ms: dict[str, float], calls: list):
    def measure(choice, timed):
        calls.append(choice)
        return Timing(ms[choice.precision], 0.5, timed)

    return measure


def test_tuner_measures_keeps_the_fastest_and_caches_it(two_precisions, tmp_path):
    config = TrainConfig(precision="auto", jit_compile="off", iters=2000)
    cache = TuningCache(tmp_path / "t.json", machine="m")
    calls = []
    tuner = Tuner(config, SIZES, (1, 2), cache, budget=0.5)
    decision = tuner.decide(1, _fake_measure({"float32": 30.0, "mixed_bfloat16": 41.0}, calls))
    assert decision.choice == F32 and decision.source == "measured"
    assert calls == [BF16, F32]  # the prior first
    assert set(decision.timings) == {"float32", "bfloat16"} and decision.tuning_s > 0
    assert "float32 (measured in" in decision.describe() and "bfloat16 41" in decision.describe()
    record = decision.to_dict((1, 2))
    assert record["precision"] == "float32" and record["threads"] == "1,2" and record["source"] == "measured"
    # A second run of the geometry decides from the cache, measuring nothing.
    calls.clear()
    again = Tuner(config, SIZES, (1, 2), TuningCache(tmp_path / "t.json", machine="m"), budget=0.5)
    decision = again.decide(1, _fake_measure({}, calls))
    assert decision.choice == F32 and decision.source == "cache" and calls == []
    # Other thread pools: not the same timings.
    calls.clear()
    Tuner(config, SIZES, None, cache, budget=0.5).decide(
        1, _fake_measure({"float32": 1, "mixed_bfloat16": 2}, calls)
    )
    assert len(calls) == 2
    # Another scale of the width: scale 1 is the width's sample (its middle scale), and its clear
    # winner (37% faster) decides, unmeasured.
    assert runtime.sample_scales(config, SIZES) == {32: 1}
    decision = Tuner(config, SIZES, (1, 2), cache, budget=0.5).decide(2, _fake_measure({}, calls))
    assert len(calls) == 2 and (decision.source, decision.choice) == ("inferred", F32)


def test_a_clear_winner_at_two_scales_of_a_width_decides_the_next(two_precisions, tmp_path):
    sizes = [(25, 34), (33, 43), (42, 56), (54, 71)]
    config = TrainConfig(precision="auto", jit_compile="off", iters=2000)
    for ms, measured in (
        ({"float32": 40.0, "mixed_bfloat16": 25.0}, 2),
        ({"float32": 26.0, "mixed_bfloat16": 25.0}, 4),
    ):
        calls = []
        tuner = Tuner(
            config, sizes, (1, 2), TuningCache(tmp_path / f"{measured}.json", machine="m"), budget=1.0
        )
        decisions = [tuner.decide(n, _fake_measure(ms, calls)) for n in range(4)]
        assert len(calls) == 2 * measured and all(d.choice == BF16 for d in decisions)
        if measured == 2:  # bfloat16 60% faster at scales 0 and 1: scales 2 and 3 are not measured
            assert [d.source for d in decisions] == ["measured", "measured", "inferred", "inferred"]
            assert (
                decisions[3].describe()
                == "bfloat16 (not measured; 60%-60% faster than the rest at scales 0 and 1)"
            )
        else:  # 4% apart: every scale is measured
            assert {d.source for d in decisions} == {"measured"}


def test_a_choice_is_planned_ahead_only_where_deciding_measures_nothing(two_precisions, tmp_path):
    # What training compiles ahead for the next scale (``_Session.prepare_ahead``).
    sizes = [(25, 34), (33, 43), (42, 56), (54, 71)]
    config = TrainConfig(precision="auto", jit_compile="off", iters=2000)
    cache = TuningCache(tmp_path / "t.json", machine="m")
    tuner = Tuner(config, sizes, (1, 2), cache, budget=1.0)
    assert tuner.planned(0) is None  # nothing cached: scale 0 will measure
    calls = []
    measure = _fake_measure({"float32": 40.0, "mixed_bfloat16": 25.0}, calls)
    tuner.decide(0, measure)
    assert tuner.planned(1) is None
    tuner.decide(1, measure)
    state = (tuner.gflops, list(tuner.history), tuner.spent_s)
    assert tuner.planned(2) == BF16  # a clear winner at scales 0 and 1: inferred
    assert (tuner.gflops, tuner.history, tuner.spent_s) == state  # planning changed nothing
    decision = tuner.decide(2, measure)
    assert (decision.choice, decision.source) == (BF16, "inferred") and len(calls) == 4
    # A second run of the geometry: every candidate cached at scale 0, so it is planned.
    again = Tuner(config, sizes, (1, 2), TuningCache(tmp_path / "t.json", machine="m"), budget=1.0)
    assert again.planned(0) == BF16
    # Only one candidate cached: deciding would measure the other.
    partial = TuningCache(tmp_path / "p.json", machine="m")
    partial.put(tuner.key(0, F32), Timing(30.0, 0.5, 3))
    assert Tuner(config, sizes, (1, 2), partial, budget=1.0).planned(0) is None
    # Fixed choices are always known.
    fixed = TrainConfig(precision="float32", jit_compile="on", iters=2000)
    assert Tuner(fixed, sizes, (1, 2), None).planned(3) == Choice("float32", True)


def test_a_scale_is_compiled_ahead_only_where_two_iterations_fit_in_memory(monkeypatch):
    from singan_tf.pyramid import geometry_for

    config = TrainConfig()
    geometry = geometry_for(config, (427, 640))
    last = geometry.num_scales - 2  # the two finest scales, side by side
    pair = runtime.scale_memory(config, geometry, last) + runtime.scale_memory(config, geometry, last + 1)
    assert runtime.scale_memory(config, geometry, last) < runtime.scale_memory(config, geometry, last + 1)
    need = runtime.RUNTIME_BASE_BYTES + pair
    assert need > runtime.estimate_memory(config, geometry)  # more than one scale's peak
    monkeypatch.setattr(runtime, "available_memory", lambda: need)
    assert runtime.fits_beside(config, geometry, last)
    monkeypatch.setattr(runtime, "available_memory", lambda: need - 1)
    assert not runtime.fits_beside(config, geometry, last)
    assert runtime.fits_beside(config, geometry, 0)  # the coarse scales fit


def test_tuner_stays_within_its_budget(two_precisions, tmp_path):
    config = TrainConfig(precision="auto", jit_compile="off", iters=10)  # a few seconds of training
    calls = []
    tuner = Tuner(config, SIZES, (1, 2), TuningCache(tmp_path / "t.json", machine="m"))
    decision = tuner.decide(0, _fake_measure({"float32": 1.0, "mixed_bfloat16": 2.0}, calls))
    assert calls == [] and decision.source == "prior" and decision.choice == BF16
    assert "over the budget" in decision.describe()


def test_fixed_choices_are_not_measured(two_precisions, tmp_path):
    calls = []
    for config, want in [
        (TrainConfig(precision="float32", jit_compile="off"), ("fixed", F32)),
        (TrainConfig(precision="auto", deterministic=True), ("prior", F32)),  # deterministic: float32
    ]:
        tuner = Tuner(config, SIZES, (1, 2), TuningCache(tmp_path / "t.json", machine="m"), budget=1.0)
        decision = tuner.decide(0, _fake_measure({}, calls))
        assert (decision.source, decision.choice) == want
    assert calls == []


def test_threads_from_cached_timings_and_probes(two_precisions, tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "core_count", lambda: 2)
    monkeypatch.setattr(runtime, "gpu_devices", lambda: [])
    config = TrainConfig(precision="auto", jit_compile="off", iters=4000)
    cache = TuningCache(tmp_path / "t.json", machine="m")

    def fill(plan, ms):
        tuner = Tuner(config, SIZES, plan, cache)
        for n in range(len(SIZES)):
            for choice in tuner.candidates(n):
                cache.put(tuner.key(n, choice), Timing(ms * (n + 1), 1.0, 3))

    probed = []

    def probe(plan):
        probed.append(plan)
        fill(plan, 20.0 if plan is None else 30.0)  # TensorFlow's pools faster here

    plan, why = runtime.choose_threads("auto", config, SIZES, cache, probe, budget=1.0)
    assert probed == [(1, 2), None] and plan is None and why.startswith("measured")
    # Now cached: no probe.
    plan, why = runtime.choose_threads("auto", config, SIZES, TuningCache(cache.path, "m"), probe, budget=1.0)
    assert len(probed) == 2 and plan is None and why.startswith("cached")
    # Over the budget: the prior, unprobed.
    empty = TuningCache(tmp_path / "empty.json", machine="m")
    plan, why = runtime.choose_threads("auto", config, SIZES, empty, probe, budget=1e-4)
    assert plan == (1, 2) and "over the budget" in why and len(probed) == 2
    assert runtime.choose_threads("2,1", config, SIZES, cache, probe) == ((2, 1), "as asked")
    deterministic = config.replace(deterministic=True)
    assert runtime.choose_threads("auto", deterministic, SIZES, cache, probe)[0] == (1, 2)


SIX = [(25, 34), (33, 43), (42, 56), (54, 71), (69, 91), (88, 117)]  # widths 32 (0-3) and 64 (4-5)
PLAIN, XLA = Choice("float32", False), Choice("float32", True)


def test_each_width_is_sampled_at_its_middle_scale():
    assert runtime.sample_scales(TrainConfig(), SIX) == {32: 2, 64: 5}
    assert runtime.sample_scales(TrainConfig(max_channels=32), SIX) == {32: 3}
    assert runtime.sample_scales(TrainConfig(), SIX[:1]) == {32: 0}


def _xla_machine(cache: TuningCache, config: TrainConfig, xla_speedup: float) -> None:
    """What the thread probes of a machine like the AMD EPYC Zen 3 leave in the cache: one thread
    per op times the prior (no XLA there) 20% faster than TensorFlow's pools at every scale; the
    pools time their prior everywhere and XLA too at each width's sample scale."""
    samples = set(runtime.sample_scales(config, SIX).values())
    for plan, factor in (((1, 2), 1.0), (None, 1.2)):
        tuner = Tuner(config, SIX, plan, cache)
        for n in range(len(SIX)):
            plain = 100.0 * 1.8**n * factor
            cache.put(tuner.key(n, PLAIN), Timing(plain, 1.0, 3))
            if plan is None and n in samples:
                cache.put(tuner.key(n, XLA), Timing(plain / xla_speedup, 30.0, 3))


@pytest.mark.parametrize("xla_speedup", [1.6, 1.05])
def test_threads_are_judged_by_their_best_candidate_not_their_prior(tmp_path, monkeypatch, xla_speedup):
    monkeypatch.setattr(runtime, "core_count", lambda: 2)
    monkeypatch.setattr(runtime, "gpu_devices", lambda: [])
    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx2", "fma"})  # float32 alone, its prior too
    config = TrainConfig(precision="auto", iters=1000, iters_decay=0.9)
    cache = TuningCache(tmp_path / "t.json", machine="m")
    _xla_machine(cache, config, xla_speedup)
    plan, why = runtime.choose_threads("auto", config, SIX, cache)
    pools = runtime.Tuner(config, SIX, None, cache)
    if xla_speedup == 1.6:  # XLA, a candidate with the pools only, makes them the faster plan
        assert plan is None and why.startswith("cached timings")
        # Scales with no XLA timing are estimated from their width's sample: plain x (XLA / plain there).
        est = pools.estimate(4, XLA)
        assert est.ms_per_iter == pytest.approx(100.0 * 1.8**4 * 1.2 / 1.6) and est.first_call_s == 30.0
        decisions = [pools.decide(n, measure=None, measure_allowed=False) for n in range(len(SIX))]
        assert [d.choice for d in decisions] == [XLA] * 6
        assert [d.source for d in decisions] == [
            "inferred",
            "inferred",
            "cache",
            "inferred",
            "inferred",
            "cache",
        ]
        assert "60% faster than the rest at scale 5, where this width was sampled" in decisions[4].describe()
        few = Tuner(config.replace(iters=20), SIX, None, cache).decide(3, measure=None, measure_allowed=False)
        assert (few.choice, few.source) == (PLAIN, "cache")  # 15 iterations do not repay a 30 s compile
    else:  # 5% is not worth the pools' 20%: one thread per op
        assert plan == (1, 2)
        # With the pools, an unmeasured XLA is judged on its estimate, compile included: at scale 3
        # 5% of 729 iterations saves 24 s, under its 30 s compile; at scale 4 (656) 39 s, over it.
        decision = pools.decide(3, measure=None, measure_allowed=False)
        assert (decision.choice, decision.source) == (PLAIN, "cache")
        decision = pools.decide(4, measure=None, measure_allowed=False)
        assert (decision.choice, decision.source) == (XLA, "estimated")
        assert "float32 XLA estimated 1200 from scale 5" in decision.describe()
    assert sum(runtime.predicted_scale_s(config, SIX, plan, cache)) == min(
        sum(runtime.predicted_scale_s(config, SIX, p, cache)) for p in ((1, 2), None)
    )


@pytest.mark.parametrize("pools_finest_ms", [2800.0, 2000.0])
def test_a_tie_between_thread_plans_goes_to_the_one_nearest_the_best_at_every_scale(
    tmp_path, monkeypatch, pools_finest_ms
):
    # The Intel Xeon with AMX (2026-12-04): TensorFlow's pools were 1.5-2.2x slower than one
    # thread per op at the 32-wide scales and read a hair faster at the finest one, which is most
    # of the run: the sums came out 0.2% apart and the pools won them, by noise.
    monkeypatch.setattr(runtime, "core_count", lambda: 2)
    monkeypatch.setattr(runtime, "gpu_devices", lambda: [])
    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx2", "fma"})  # float32 alone, its prior too
    config = TrainConfig(precision="auto", jit_compile="off", iters=1000, iters_decay=1.0)
    cache = TuningCache(tmp_path / "t.json", machine="m")
    per_op = [30.0, 45.0, 70.0, 110.0, 450.0, 3000.0]
    pools = [60.0, 90.0, 140.0, 160.0, 450.0, pools_finest_ms]
    for plan, ms in (((1, 2), per_op), (None, pools)):
        tuner = Tuner(config, SIX, plan, cache)
        for n in range(len(SIX)):
            cache.put(tuner.key(n, PLAIN), Timing(ms[n], 1.0, 3))
    plan, why = runtime.choose_threads("auto", config, SIX, cache)
    if pools_finest_ms == 2800.0:  # 0.1% faster in sum, 2x slower at scale 0: a tie, to one per op
        assert sum(runtime.predicted_scale_s(config, SIX, None, cache)) < sum(
            runtime.predicted_scale_s(config, SIX, (1, 2), cache)
        )
        assert plan == (1, 2)
        assert "within 5%" in why and "1 per op, up to 2 ops at a time 1.07x" in why
        assert "TensorFlow's pools 2.00x" in why
    else:  # 22% faster in sum (2900 s against 3705 s): the pools, however slow the coarse scales
        assert plan is None and "within" not in why


def test_a_candidate_the_budget_leaves_unmeasured_is_judged_on_its_estimate(tmp_path, monkeypatch):
    # A fast-preset run on an AMD EPYC Zen 3 (2026-12-03): XLA read 14.5% faster than the plain
    # step at the width's sample scale, under the margin that infers a winner, the budget was
    # spent, and the three finest scales trained in the timed plain step at 2-3x XLA's time.
    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx2", "fma"})  # float32 alone, its prior too
    monkeypatch.setattr(runtime, "gpu_devices", lambda: [])
    config = TrainConfig(precision="auto", iters=1000, iters_decay=0.8, max_channels=32)
    cache = TuningCache(tmp_path / "t.json", machine="m")
    tuner = Tuner(config, SIX, None, cache, budget=0.0)  # nothing more may be measured
    assert tuner.samples == {32: 3}
    for n in range(len(SIX)):
        cache.put(tuner.key(n, PLAIN), Timing(100.0 * 1.8**n, 1.0, 3))
    cache.put(tuner.key(3, XLA), Timing(100.0 * 1.8**3 / 1.145, 17.0, 3))
    calls = []
    decisions = {n: tuner.decide(n, _fake_measure({}, calls)) for n in (4, 5)}
    assert calls == []
    for n, decision in decisions.items():
        assert (decision.choice, decision.source) == (XLA, "estimated")
        saved_s = config.scale_iters(n) * 100.0 * 1.8**n * (1 - 1 / 1.145) / 1e3
        assert saved_s > 17.0  # the compile is charged, and repaid
        assert decision.to_dict(None)["source"] == "estimated"
    assert "estimated, not measured" in decisions[5].describe()
    # Known ahead (the budget measures nothing), so the scale's XLA program is compiled ahead.
    assert tuner.planned(5) == XLA
    # With budget left, the next scale measures XLA: not planned.
    assert Tuner(config, SIX, None, cache, budget=1.0).planned(5) is None


def test_the_thread_probe_times_every_candidate_at_the_sample_scales_and_scale_0(tmp_path, monkeypatch):
    from singan_tf.pyramid import geometry_for
    from singan_tf.tune import time_geometry

    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx2", "fma"})  # float32 alone, its prior too
    monkeypatch.setattr(runtime, "active_thread_plan", lambda: None)  # TensorFlow's pools: XLA a candidate
    config = TrainConfig(precision="auto", iters=10, max_size=60, max_channels=32)
    geometry = geometry_for(config, (45, 60))
    calls = []

    def fake_scales(config, geometry):  # the real step's timing is test_tune's; here, what is timed
        for n in range(geometry.num_scales):
            yield (
                n,
                lambda choice, timed, n=n, min_s=0.5: (
                    calls.append((n, choice)) or Timing(1.0 + n, 0.1, timed)
                ),
            )

    monkeypatch.setattr("singan_tf.tune._synthetic_scales", fake_scales)
    time_geometry(config, geometry, TuningCache(tmp_path / "t.json", machine="m"), prior_only=True)
    (sample,) = runtime.sample_scales(config, geometry.sizes).values()
    assert geometry.num_scales >= 3 and 0 < sample < geometry.num_scales - 1
    assert calls == [
        (n, c) for n in range(geometry.num_scales) for c in ([PLAIN, XLA] if n in (0, sample) else [PLAIN])
    ]
    assert runtime.fully_timed_scales(config, geometry.sizes) == {0, sample}


@pytest.mark.parametrize("xla_ms", [78.0, 50.0])
def test_a_first_call_still_to_pay_counts_against_its_candidate(tmp_path, xla_ms):
    # Scale 0 of the fast preset on the AMD EPYC Zen 3: XLA 78 ms per iteration after a 28 s
    # compile, the plain step 80 ms after a 4 s trace; 1000 iterations.
    config = TrainConfig(precision="float32", jit_compile="auto", iters=1000, max_channels=32)
    cache = TuningCache(tmp_path / "t.json", machine="m")
    tuner = Tuner(config, SIX, None, cache)
    assert tuner.candidates(0) == [XLA, PLAIN]  # the prior: XLA on small maps trained long
    cache.put(tuner.key(0, XLA), Timing(xla_ms, 28.0, 3))
    cache.put(tuner.key(0, PLAIN), Timing(80.0, 4.0, 3))
    decision = tuner.decide(0, measure=None, measure_allowed=False)
    assert decision.source == "cache" and set(decision.timings) == {"float32", "float32 XLA"}
    if xla_ms == 78.0:  # saves 2 s of iterations for a 28 s compile
        assert decision.choice == PLAIN
        assert "float32 XLA would save 2 s of iterations for a 28 s first call" in decision.describe()
        assert tuner.planned(0) == PLAIN  # what is compiled ahead is what is decided
    else:  # saves 30 s: worth its compile
        assert decision.choice == XLA and "would save" not in decision.describe()
    # Measured in this process, XLA's compile is paid: the faster per iteration wins.
    calls = []
    measured = Tuner(config, SIX, None, TuningCache(tmp_path / "m.json", machine="m"), budget=1.0)
    timing = {XLA: Timing(xla_ms, 28.0, 3), PLAIN: Timing(80.0, 4.0, 3)}
    decision = measured.decide(0, lambda c, timed: calls.append(c) or timing[c])
    assert calls == [XLA, PLAIN] and (decision.source, decision.choice) == ("measured", XLA)


def test_a_concurrent_scale_is_a_step_of_its_own(tmp_path):
    """Scale 1 of a --concurrent 2 run trains G_0 too: its step is traced anew though scale 0 is as
    wide, so its first call is still to pay, and scale 0's timings infer nothing for it."""
    config = TrainConfig(precision="float32", jit_compile="off", iters=100, max_channels=32, concurrent=2)
    tuner = Tuner(config, SIX, None, TuningCache(tmp_path / "t.json", machine="m"))
    assert tuner.step_width(0) == (32, 0) and tuner.step_width(1) == tuner.step_width(2) == (32, 32)
    assert Tuner(config.replace(concurrent=1), SIX, None, None).step_width(1) == (32, 0)
    tuner.traced.add((tuner.step_width(0), PLAIN))
    timing = Timing(80.0, 4.0, 3)
    assert tuner._scale_s(1, PLAIN, timing, measured=False) == pytest.approx(4.0 + 100 * 0.08)
    tuner.traced.add((tuner.step_width(1), PLAIN))
    assert tuner._scale_s(2, PLAIN, timing, measured=False) == pytest.approx(100 * 0.08)


def test_iteration_flops_match_the_step_structure():
    config = TrainConfig()
    sizes = [(25, 34), (33, 43)]
    g = runtime.conv_flops(33, 43, 32, pad=True)
    d = runtime.conv_flops(33, 43, 32, out_last=1, pad=False)
    prev = runtime.conv_flops(25, 34, 32, pad=True)
    want = 3 * (g + 6 * d) + 3 * 3 * d + 3 * (6 * g + 3 * d) + prev
    assert runtime.iteration_flops(config, sizes, 1) == want
    lazy = config.replace(gp_every=3)  # the GP on one critic step of three
    assert runtime.iteration_flops(lazy, sizes, 1) == want - 2 * 3 * d
    # G_0 trained along: its forward + backward in both passes of each generator step.
    concurrent = config.replace(concurrent=2)
    assert runtime.iteration_flops(concurrent, sizes, 1) == want + 3 * 2 * 3 * prev
    assert runtime.iteration_flops(concurrent, sizes, 0) == runtime.iteration_flops(config, sizes, 0)


# -- in training -------------------------------------------------------------------
def _train(rocket, out, cache, **config):
    from singan_tf.training import train_pyramid

    base = {
        "max_size": 40,
        "iters": 6,
        "log_every": 3,
        "checkpoint_every": 3,
        "precision": "auto",
        "jit_compile": "off",
    }
    return train_pyramid(TrainConfig(**{**base, **config}), rocket, out, cache=cache)


def _prefill(cache, config, sizes, faster: str):
    plan = runtime.active_thread_plan()
    tuner = Tuner(config, sizes, plan, cache)
    for n in range(len(sizes)):
        for choice in tuner.candidates(n):
            ms = 10.0 if choice.precision == faster else 20.0
            cache.put(tuner.key(n, choice), Timing(ms + (5.0 if choice.xla else 0.0), 1.0, 3))


def test_training_logs_and_records_each_choice(rocket, tmp_path, two_precisions, caplog):
    from singan_tf.pyramid import geometry_for
    from singan_tf.rundir import RunDir

    config = TrainConfig(max_size=40, iters=6, precision="auto", jit_compile="off")
    sizes = geometry_for(config, rocket.shape[:2]).sizes
    cache = TuningCache(tmp_path / "t.json", machine=runtime.machine_key())
    _prefill(cache, config, sizes, faster="float32")  # against the prior, bfloat16
    with caplog.at_level(logging.INFO, logger="singan_tf"):
        _train(rocket, tmp_path / "run", cache)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("scale 0: ")]
    assert lines == ["scale 0: float32 (cached timings; ms/iteration: float32 10, bfloat16 20)"]
    scales = RunDir(tmp_path / "run").read_manifest()["scales"]
    for s in scales:
        assert s["runtime"]["precision"] == "float32" and s["runtime"]["source"] == "cache"
        assert s["runtime"]["ms_per_iter"]["bfloat16"] == 20.0
        assert s["first_call_s"] > 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["precision"] == "auto"


def test_tuning_measures_in_training(rocket, tmp_path, two_precisions):
    from singan_tf.rundir import RunDir
    from singan_tf.training import train_pyramid

    cache = TuningCache(tmp_path / "t.json", machine=runtime.machine_key())
    config = TrainConfig(max_size=40, iters=6, precision="auto", jit_compile="off")
    train_pyramid(config, rocket, tmp_path / "run", cache=cache, tuning_budget=100.0)
    record = RunDir(tmp_path / "run").read_manifest()["scales"][0]["runtime"]
    assert record["source"] == "measured" and set(record["ms_per_iter"]) == {"float32", "bfloat16"}
    assert record["precision"] == min(record["ms_per_iter"], key=record["ms_per_iter"].get).replace(
        "bfloat16", "mixed_bfloat16"
    )
    scales = len(RunDir(tmp_path / "run").read_manifest()["scales"])
    assert len(TuningCache(cache.path, cache.machine)) == 2 * scales  # both candidates at every scale


def test_resumed_scale_keeps_its_recorded_precision(rocket, tmp_path, two_precisions, monkeypatch):
    from singan_tf import training
    from singan_tf.pyramid import geometry_for
    from singan_tf.rundir import RunDir

    config = TrainConfig(max_size=64, iters=6, precision="auto", jit_compile="off")
    sizes = geometry_for(config, rocket.shape[:2]).sizes
    cache = TuningCache(tmp_path / "t.json", machine=runtime.machine_key())
    _prefill(cache, config, sizes, faster="mixed_bfloat16")
    original = training.ScaleTrainer.run

    def interrupted(self, start, stop, on_metrics=None, on_checkpoint=None):
        if self.scale == 1 and start == 0:
            original(self, 0, 3, on_metrics, on_checkpoint)
            on_checkpoint(3)
            raise KeyboardInterrupt
        return original(self, start, stop, on_metrics, on_checkpoint)

    monkeypatch.setattr(training.ScaleTrainer, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _train(rocket, tmp_path / "run", cache, max_size=64)
    monkeypatch.setattr(training.ScaleTrainer, "run", original)
    run = RunDir(tmp_path / "run")
    assert run.read_checkpoint_runtime(1)["precision"] == "mixed_bfloat16"
    # The machine's timings change (say, another machine): float32 is faster now.
    _prefill(cache, config, sizes, faster="float32")
    training.train_pyramid(config, None, run, resume=True, cache=cache)
    records = [s["runtime"] for s in run.read_manifest()["scales"]]
    assert [r["precision"] for r in records] == ["mixed_bfloat16", "mixed_bfloat16", "float32"]
    assert [r["source"] for r in records] == ["cache", "recorded", "cache"]
    generators = training.load_nets(run, run.read_config(), 3)
    assert len(generators) == 3 and np.isfinite(generators[2].get_weights()[0]).all()


def test_a_reduced_precision_that_goes_non_finite_falls_back_to_float32(
    rocket, tmp_path, monkeypatch, caplog
):
    """The scale goes on in float32 from its last good checkpoint, and says so."""
    from singan_tf import training
    from singan_tf.rundir import RunDir

    original = training.ScaleTrainer.iterate

    def poisoned(self, iteration):
        metrics = dict(original(self, iteration))
        if self.scale == 1 and iteration >= 4 and self.step.precision != "float32":
            metrics["d_loss"] = metrics["d_loss"] * np.nan
        return metrics

    monkeypatch.setattr(training.ScaleTrainer, "iterate", poisoned)
    config = TrainConfig(
        max_size=64, iters=6, log_every=1, checkpoint_every=3, precision="mixed_bfloat16", jit_compile="off"
    )
    with caplog.at_level(logging.WARNING, logger="singan_tf"):
        training.train_pyramid(config, rocket, tmp_path / "run", cache=None)
    records = [s["runtime"] for s in RunDir(tmp_path / "run").read_manifest()["scales"]]
    assert [r["precision"] for r in records] == ["mixed_bfloat16", "float32", "float32"]  # sticky
    assert [r["source"] for r in records] == ["fixed", "fallback", "fallback"]
    assert (
        "scale 1: non-finite loss in bfloat16 at iteration 4; going on in float32 from iteration 3"
        in caplog.text
    )


# -- XLA's compiled programs, kept between runs ---------------------------------------
def test_the_xla_program_cache_is_set_before_tensorflow_and_left_to_the_user(tmp_path, monkeypatch):
    monkeypatch.setenv("SINGAN_TF_CACHE_DIR", str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)  # a command that has not loaded it
    env = {"TF_XLA_FLAGS": "--tf_xla_auto_jit=0"}
    path = runtime.enable_xla_cache(env)
    assert path.parent == tmp_path / "xla" and path.is_dir()  # one folder per CPU and TensorFlow
    assert env == {
        "TF_XLA_FLAGS": f"--tf_xla_auto_jit=0 --tf_xla_persistent_cache_directory={path}",
        "TF_CPP_MIN_LOG_LEVEL": "3",  # TensorFlow logs an error line for every program it loads
    }
    assert runtime.without_xla_cache(env["TF_XLA_FLAGS"]) == "--tf_xla_auto_jit=0"  # probes compile
    mine = {"TF_XLA_FLAGS": "--tf_xla_persistent_cache_directory=/mine", "TF_CPP_MIN_LOG_LEVEL": "1"}
    assert runtime.enable_xla_cache(dict(mine)) is None  # the user's cache and log level win
    verbose = {}
    assert runtime.enable_xla_cache(verbose, quiet=False) == path and "TF_CPP_MIN_LOG_LEVEL" not in verbose
    off = {"SINGAN_TF_XLA_CACHE": "0"}
    assert runtime.enable_xla_cache(off) is None and off == {"SINGAN_TF_XLA_CACHE": "0"}
    monkeypatch.setitem(sys.modules, "tensorflow", object())
    assert runtime.enable_xla_cache({}) is None  # loaded: its flags may be read already


def test_the_xla_program_cache_keeps_its_newest_programs(tmp_path):
    for age, name in enumerate(["new", "mid", "old"]):
        program = tmp_path / f"{name}.pb"
        program.write_bytes(b"x" * 100)
        os.utime(program, (1e9 - age * 1000, 1e9 - age * 1000))
    for age, name in ((7200, "killed.pb.x.tmp"), (10, "writing.pb.y.tmp")):  # a write's temp files
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (time.time() - age, time.time() - age))
    trimmed = runtime.trim_xla_cache(tmp_path, max_bytes=250)
    assert sorted(p.name for p in trimmed) == ["killed.pb.x.tmp", "old.pb"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mid.pb", "new.pb", "writing.pb.y.tmp"]
    assert runtime.trim_xla_cache(tmp_path, max_bytes=250) == []


def test_only_our_own_xla_program_cache_is_emptied_after_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SINGAN_TF_CACHE_DIR", str(tmp_path))
    ours, theirs = tmp_path / "xla" / "machine", tmp_path / "theirs"
    for folder in (ours, theirs):
        folder.mkdir(parents=True)
        (folder / "program.pb").write_bytes(b"cut short")
    monkeypatch.setenv("TF_XLA_FLAGS", f"--tf_xla_persistent_cache_directory={theirs}")
    assert not runtime.clear_xla_cache(OSError("Read less bytes than requested"))
    assert (theirs / "program.pb").exists()
    monkeypatch.setenv("TF_XLA_FLAGS", f"--tf_xla_persistent_cache_directory={ours}")
    assert runtime.clear_xla_cache(OSError("Read less bytes than requested"))
    assert list(ours.iterdir()) == []


def test_probes_time_xla_compiling_not_loading(tmp_path, monkeypatch):
    from singan_tf import tune
    from singan_tf.pyramid import geometry_for

    seen = {}
    monkeypatch.setenv("TF_XLA_FLAGS", f"--tf_xla_persistent_cache_directory={tmp_path} --xla_x=1")
    monkeypatch.setattr(tune.subprocess, "run", lambda *a, env, **k: seen.update(env) or _Done())
    config = TrainConfig(max_size=40)
    tune.probe(config, geometry_for(config, (40, 60)), (1, 2))
    assert seen["TF_XLA_FLAGS"] == "--xla_x=1"


class _Done:
    returncode, stderr = 0, ""


def _weights(run_dir) -> dict[str, np.ndarray]:
    import h5py

    out = {}
    for path in sorted(run_dir.glob("scales/*/*.weights.h5")):
        with h5py.File(path) as f:
            f.visititems(
                lambda name, o, p=path: (
                    out.update({f"{p.parent.name}/{p.stem}/{name}": o[()]})
                    if isinstance(o, h5py.Dataset)
                    else None
                )
            )
    return out


@pytest.mark.slow  # three training processes, each compiling or loading XLA programs: ~3 min
def test_a_second_run_loads_the_first_runs_xla_programs_and_trains_the_same(tmp_path):
    # As a user starts it: TensorFlow's log level and XLA flags left to the command.
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_XLA_FLAGS")}
    env["SINGAN_TF_CACHE_DIR"] = str(tmp_path / "cache")
    command = [sys.executable, "-m", "singan_tf.train", "--preset", "quick", "--max-size", "40"]
    command += ["--iters", "6", "--jit", "on", "--cpu-threads", "tf", "--num-samples", "1", "--no-progress"]

    def train(name: str) -> str:
        out = ["--out", str(tmp_path / name)]
        done = subprocess.run([*command, *out], env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        return done.stderr

    train("first")
    programs = sorted((tmp_path / "cache" / "xla").glob("*/*.pb"))
    scales = json.loads((tmp_path / "first" / "pyramid.json").read_text())["scales"]
    assert len(programs) == len(scales) >= 2  # one program per scale's shape
    stderr = train("second")
    assert sorted((tmp_path / "cache" / "xla").glob("*/*.pb")) == programs  # all loaded, none compiled
    assert "E0000" not in stderr and "text_format" not in stderr, stderr  # TensorFlow's load errors
    first, second = _weights(tmp_path / "first"), _weights(tmp_path / "second")
    assert len(first) > 20 and first.keys() == second.keys()
    assert all(np.array_equal(first[k], second[k]) for k in first)  # the loaded programs computed the same

    for program in programs:  # a damaged cache costs a compile, not the run
        program.write_bytes(program.read_bytes()[:50_000])
    stderr = train("third")
    assert "XLA's program cache" in stderr and "could not be used" in stderr, stderr
    third = _weights(tmp_path / "third")
    assert all(np.array_equal(first[k], third[k]) for k in first)
    assert len(list((tmp_path / "cache" / "xla").glob("*/*.pb"))) == len(programs)  # kept anew


@pytest.mark.slow  # two training processes compiling 3 XLA programs each: ~3 min
def test_compiling_the_next_scale_ahead_changes_only_when_it_is_compiled(tmp_path):
    # 3 scales of one width: scale 1 trains on the spare step compiled ahead, scale 2 on the first.
    env = {k: v for k, v in os.environ.items() if k not in ("TF_XLA_FLAGS", "SINGAN_TF_COMPILE_AHEAD")}
    command = [sys.executable, "-m", "singan_tf.train", "--preset", "quick", "--max-size", "50"]
    command += ["--iters", "6", "--jit", "on", "--cpu-threads", "tf", "--num-samples", "1", "--no-progress"]
    runs = {}
    for name, ahead in (("ahead", "1"), ("not-ahead", "0")):
        cache = tmp_path / f"cache-{name}"
        run_env = {**env, "SINGAN_TF_CACHE_DIR": str(cache), "SINGAN_TF_COMPILE_AHEAD": ahead}
        out = ["--out", str(tmp_path / name)]
        done = subprocess.run([*command, *out], env=run_env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        scales = json.loads((tmp_path / name / "pyramid.json").read_text())["scales"]
        assert len(list(cache.glob("xla/*/*.pb"))) == len(scales) == 3  # each scale compiled once
        runs[name] = [s["compiled_ahead"] for s in scales]
    assert runs == {"ahead": [False, True, True], "not-ahead": [False, False, False]}
    ahead, alone = _weights(tmp_path / "ahead"), _weights(tmp_path / "not-ahead")
    assert len(ahead) > 20 and ahead.keys() == alone.keys()
    assert all(np.array_equal(ahead[k], alone[k]) for k in ahead)  # the same programs, the same state
