"""Plot time per iteration vs scale from the train-speed results (matplotlib).

python -m bench plot     # writes bench/results/train_speed.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fp32", default="bench/results/train_speed_fp32.json")
    parser.add_argument("--bf16", default="bench/results/train_speed_bf16.json")
    parser.add_argument("--out", default="bench/results/train_speed.png")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    rows = json.loads(Path(args.fp32).read_text())["rows"]
    labels = {}
    for mode, style in (("plain", "o-"), ("xla", "s--")):
        pts = [(r["scale"], r["ms_per_iter"]) for r in rows if r["mode"] == mode]
        ax.plot(*zip(*pts, strict=True), style, label=f"float32 {mode}")
        labels.update(
            {r["scale"]: f"{r['scale']}\n{r['size'][0]}x{r['size'][1]}\n{r['channels']}ch" for r in rows}
        )
    if Path(args.bf16).is_file():
        pts = [(r["scale"], r["ms_per_iter"]) for r in json.loads(Path(args.bf16).read_text())["rows"]]
        ax.plot(*zip(*pts, strict=True), "^", markersize=9, label="bfloat16 plain")
    ref = sorted({(r["scale"], r["reference_ms_per_iter"]) for r in rows if "reference_ms_per_iter" in r})
    ax.plot(*zip(*ref, strict=True), "kx", markersize=9, label="reference (PyTorch)")
    ax.set_yscale("log")
    ax.set_xticks(sorted(labels), [labels[k] for k in sorted(labels)], fontsize=7)
    ax.set_ylabel("ms per iteration (3 critic + 3 generator steps)")
    ax.set_title("SinGAN training speed per scale, paper preset, 186x248, 2 CPU cores", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(args.out)
    fig.savefig(out)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
