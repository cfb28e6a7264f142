"""The reference algorithm in PyTorch, timed on this machine.

The speed targets of the training and export issues are stated against
timings of the PyTorch original "on these 2 cores". This probe measures
what PyTorch itself does here: the same networks (5 conv blocks, 3x3,
BatchNorm, LeakyReLU 0.2; tanh + residual for G), the same iteration
structure as the original (per critic step: D on real, a fresh random
``prev`` from the frozen coarser generators, G's fake, D on the detached
fake, the WGAN-GP penalty with a double backward; per generator step: D on
the last critic step's fake, backward through D and G with the graph
retained, and the reconstruction pass), and the same sampling pass (every
scale's G plus a bicubic upsampling). Weights are random: speed does not
depend on them. Written from the paper's description, not the original's
code.

Needs PyTorch, which the project does not depend on: a venv of its own
(torch and numpy only), run from the repository's root::

    python3 -m venv ../tvenv && ../tvenv/bin/pip install torch==2.13.0 numpy
    ../tvenv/bin/python -m bench torch-reference [--scales 0,2,4,6,8] [--iters 3]
    ../tvenv/bin/python -m bench torch-reference --sizes 25x38,33x50,... --max-channels 32 --no-sampling

Writes ``results/torch_reference.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from bench.common import MIN_TIMED_S, write_result  # the standard library only, as singan_tf.runtime
from singan_tf.runtime import MAX_TIMED_ITERS, cpu_model  # no TensorFlow: this runs in a venv with torch only

# Paper preset on a 186x248 image (min size 25, max 250, r = 0.75), as
# singan_tf.pyramid.pyramid_geometry computes it; bench/train_speed.py
# times the same scales.
SIZES = [(25, 34), (33, 43), (42, 56), (54, 71), (69, 91), (88, 117), (113, 151), (145, 193), (186, 248)]
PAD = 5  # (kernel - 1) * layers / 2


def channels(scale: int, max_channels: int = 128) -> int:
    return min(32 * 2 ** (scale // 4), max_channels)


def build(torch, ch: int, out: int, tanh: bool):
    nn = torch.nn

    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)]

    layers = block(3, ch) + block(ch, ch) + block(ch, ch) + block(ch, ch) + [nn.Conv2d(ch, out, 3)]
    if tanh:
        layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class Generator:
    def __init__(self, torch, ch):
        self.torch = torch
        self.net = build(torch, ch, 3, tanh=True)

    def __call__(self, x, prev):
        # x = amp * z + prev and prev arrive padded by PAD; the output has the unpadded size.
        return self.net(x) + prev[:, :, PAD:-PAD, PAD:-PAD]

    def parameters(self):
        return self.net.parameters()


def upsample(torch, x, size):
    return torch.nn.functional.interpolate(x, size=size, mode="bicubic", align_corners=False)


def pad(torch, x):
    return torch.nn.functional.pad(x, (PAD,) * 4)


def random_prev(torch, frozen, sizes, scale):
    """A random pass of the frozen coarser pyramid, upsampled to ``scale``'s size."""
    out = torch.zeros(1, 3, *sizes[0])
    with torch.no_grad():
        for m, g in enumerate(frozen):
            z = torch.randn(1, 1 if m == 0 else 3, *sizes[m]).expand(1, 3, *sizes[m])
            prev = torch.zeros(1, 3, *sizes[m]) if m == 0 else upsample(torch, out, sizes[m])
            out = g(pad(torch, 0.1 * z + prev), pad(torch, prev))
        return upsample(torch, out, sizes[scale]) if frozen else torch.zeros(1, 3, *sizes[scale])


def gradient_penalty(torch, critic, real, fake, weight=0.1):
    mix = torch.rand(())
    x = (mix * real + (1 - mix) * fake).requires_grad_(True)
    out = critic(x)
    (grad,) = torch.autograd.grad(out, x, torch.ones_like(out), create_graph=True)
    return weight * ((grad.norm(2, dim=1) - 1) ** 2).mean()


def time_training(
    torch, scale: int, iters: int, sizes=SIZES, max_channels: int = 128, min_s: float = MIN_TIMED_S
) -> dict:
    ch = channels(scale, max_channels)
    h, w = sizes[scale]
    gen, critic = Generator(torch, ch), build(torch, ch, 1, tanh=False)
    frozen = [Generator(torch, channels(m, max_channels)) for m in range(scale)]
    g_opt = torch.optim.Adam(gen.parameters(), lr=5e-4, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(critic.parameters(), lr=5e-4, betas=(0.5, 0.999))
    real = torch.rand(1, 3, h, w) * 2 - 1
    rec_prev = pad(torch, random_prev(torch, frozen, sizes, scale))
    rec_in = rec_prev

    def iteration():
        noise = torch.randn(1, 1 if scale == 0 else 3, h, w).expand(1, 3, h, w)
        for _ in range(3):
            critic.zero_grad()
            (-critic(real).mean()).backward()
            prev = random_prev(torch, frozen, sizes, scale)
            fake = gen(pad(torch, 0.1 * noise + prev), pad(torch, prev))
            critic(fake.detach()).mean().backward()
            gradient_penalty(torch, critic, real, fake.detach()).backward()
            d_opt.step()
        # The original back-propagates 3 times through the last critic step's
        # fake, updating G in between; PyTorch now rejects that (G's weights
        # changed in place), so the 3 Adam updates follow the 3 backward
        # passes here: the same work.
        for p in gen.parameters():
            p.grad = None
        for _ in range(3):
            (-critic(fake).mean()).backward(retain_graph=True)
            (10 * ((gen(rec_in, rec_prev) - real) ** 2).mean()).backward()
        for _ in range(3):
            g_opt.step()

    t0 = time.perf_counter()
    iteration()
    first = time.perf_counter() - t0
    iteration()
    t0 = time.perf_counter()
    done = 0
    while done < iters or (time.perf_counter() - t0 < min_s and done < MAX_TIMED_ITERS):
        iteration()
        done += 1
    per_iter = (time.perf_counter() - t0) / done
    return {
        "scale": scale,
        "size": [h, w],
        "channels": ch,
        "first_call_s": round(first, 3),
        "timed_iters": done,
        "ms_per_iter": round(per_iter * 1000, 2),
    }


def time_sampling(torch, width_factor: float, reps: int) -> dict:
    gens = [Generator(torch, channels(m)) for m in range(len(SIZES))]
    for g in gens:
        g.net.eval()
    sizes = [(h, round(w * width_factor)) for h, w in SIZES]

    def sample():
        with torch.no_grad():
            out = torch.zeros(1, 3, *sizes[0])
            for m, g in enumerate(gens):
                prev = out if m == 0 else upsample(torch, out, sizes[m])
                z = torch.randn(1, 3, *sizes[m])
                out = g(pad(torch, 0.1 * z + prev), pad(torch, prev))
            return out

    sample()
    sample()
    t0 = time.perf_counter()
    for _ in range(reps):
        sample()
    return {
        "width_factor": width_factor,
        "size": list(sizes[-1]),
        "ms_per_sample": round((time.perf_counter() - t0) / reps * 1000, 1),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="0,2,4,6,8")
    parser.add_argument(
        "--sizes", default="", help="a pyramid's scale sizes, HxW,HxW,... (default: the 186x248 image's)"
    )
    parser.add_argument("--max-channels", type=int, default=128, help="width cap (the fast preset's: 32)")
    parser.add_argument("--no-sampling", action="store_true", help="time training only")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument(
        "--min-seconds", type=float, default=MIN_TIMED_S, help="timed seconds per scale, at least"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench/results/torch_reference.json")
    args = parser.parse_args(argv)
    sizes = SIZES
    if args.sizes:
        sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    result = {
        "benchmark": "torch_reference",
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": args.threads,
        },
        "sizes": [list(size) for size in sizes],
        "max_channels": args.max_channels,
        "training": [],
        "sampling": [],
    }
    for scale in (int(s) for s in args.scales.split(",")):
        row = time_training(torch, scale, args.iters, sizes, args.max_channels, args.min_seconds)
        result["training"].append(row)
        print(json.dumps(row), flush=True)
    for factor in () if args.no_sampling else (1.0, 2.0):
        row = time_sampling(torch, factor, reps=10)
        result["sampling"].append(row)
        print(json.dumps(row), flush=True)
    write_result(Path(args.out), result)
    return result


if __name__ == "__main__":
    main()
