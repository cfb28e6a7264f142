"""Progress reporting: the overall ETA counts progress within the running scale."""

from __future__ import annotations

import io

from singan_tf import callbacks
from singan_tf.callbacks import ProgressBar


def test_total_eta_follows_progress_within_a_scale(monkeypatch):
    clock = {"t": 0.0}
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: clock["t"])
    # Costs h*w*c^2: 1 for scale 0, 3 for scale 1; 100 iterations each at a steady pace.
    bar = ProgressBar([(1, 1), (1, 3)], [1, 1], file=io.StringIO())
    info = {"size": (1, 1), "num_scales": 2, "channels": 1, "noise_amp": 1.0, "iters": 100}
    bar.on_scale_begin(0, info)
    assert bar._eta() == "?"
    clock["t"] = 10.0
    bar.on_iterations(0, 50, None)
    assert bar._eta() == f"{10 * 3.5 / 0.5 / 60:.1f} min"  # half of cost 1 done in 10 s
    clock["t"] = 20.0
    bar.on_iterations(0, 100, None)
    bar.on_scale_end(0, info, None)
    assert bar._eta() == f"{20 * 3 / 1 / 60:.1f} min"
    bar.on_scale_begin(1, {**info, "size": (1, 3)})
    clock["t"] = 50.0
    bar.on_iterations(1, 50, None)
    eta_half = bar._eta()
    clock["t"] = 70.0
    bar.on_iterations(1, 75, None)
    assert float(bar._eta().split()[0]) < float(eta_half.split()[0])  # shrinks as the scale runs
    assert eta_half == f"{50 * 1.5 / 2.5 / 60:.1f} min"


def test_total_eta_weighs_scales_by_their_iterations(monkeypatch):
    clock = {"t": 0.0}
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: clock["t"])
    # Scale 0 runs 300 iterations, scale 1 (3x the pixels) 100: equal costs.
    bar = ProgressBar([(1, 1), (1, 3)], [1, 1], [300, 100], file=io.StringIO())
    bar.on_scale_begin(0, {"size": (1, 1), "num_scales": 2, "channels": 1, "noise_amp": 1.0, "iters": 300})
    clock["t"] = 30.0
    bar.on_iterations(0, 300, None)
    assert bar._eta() == f"{30 / 60:.1f} min"  # half the total cost done in 30 s
