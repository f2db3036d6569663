"""Side-by-side pictures of two or more `bagel-world eval` runs (e.g. model v1 and v2).

    bagel-world eval --checkpoint old/ --out out/eval-v1
    bagel-world eval --out out/eval-v2
    python examples/compare_evals.py v1=out/eval-v1 v2=out/eval-v2 --out docs/eval

Writes, into --out: `compare_<task>.png` (the real episode on top, each run's imagined
frames below, at horizons 0, 1, 2, 4, ... 64), `psnr_vs_horizon.png` (PSNR of every run and
of copy-last against the horizon, one panel per task), and prints a markdown table of
controllability, PSNR gain over copy-last and persistence per run. Every run must have
evaluated the same seeds (the real episodes are checked to be identical). A run folder with
only its eval.json (e.g. a committed docs/eval/v1) joins the plot and the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def load(run: Path) -> dict:
    """A run's eval.json and, where they were kept, its rollouts (`rollout_<task>.npz`)."""
    res = json.loads((run / "eval.json").read_text())
    paths = {t: run / f"rollout_{t}.npz" for t in res["tasks"]}
    res["rollouts"] = {t: np.load(p) for t, p in paths.items() if p.is_file()}
    return res


def psnr_plot(runs: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(next(iter(runs.values()))["tasks"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.0), dpi=100, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for i, (name, res) in enumerate(runs.items()):
            per = res["tasks"][task]["per_horizon"]
            hs = [int(h) for h in per]
            ax.plot(hs, [per[str(h)]["psnr"] for h in hs], marker="o", label=name)
            if i == 0:
                ax.plot(hs, [per[str(h)]["copy_psnr"] for h in hs], "k--", marker=".", label="copy last")
        ax.set_xscale("log", base=2)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("horizon (steps)", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("PSNR dB vs real", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def table(runs: dict[str, dict]) -> str:
    names = list(runs)
    head = "| task | " + " | ".join(f"{n} controllability (chance) | {n} PSNR gain h=1/4/8/32/64 dB | "
                                     f"{n} persistence h=1/4/16/64" for n in names) + " |"
    lines = [head, "|---|" + "---|---|---|" * len(names)]
    for task in next(iter(runs.values()))["tasks"]:
        cells = []
        for n in names:
            r = runs[n]["tasks"][task]
            c, per = r["controllability"], r["per_horizon"]
            gain = "/".join(f"{per[h]['psnr'] - per[h]['copy_psnr']:+.1f}" for h in ("1", "4", "8", "32", "64") if h in per)
            pers = "/".join(f"{per[h]['persistence']:.2f}" for h in ("1", "4", "16", "64") if h in per)
            cells += [f"{c['accuracy']:.2f} ({c['chance']:.2f}, {c['pairs']} pairs)", gain, pers]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    from bagel_world.training.evaluate import strip

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="NAME=EVAL_DIR, in the order to show them")
    p.add_argument("--out", default="docs/eval")
    args = p.parse_args()
    runs = {}
    for spec in args.runs:
        name, _, folder = spec.partition("=")
        if not folder:
            raise SystemExit(f"give each run as NAME=EVAL_DIR, got {spec!r}")
        runs[name] = load(Path(folder))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    first = next(iter(runs.values()))
    for task in first["tasks"]:
        # Runs whose rollouts were not kept (only eval.json) join the plot and table, not the strips.
        with_frames = {n: r["rollouts"][task] for n, r in runs.items() if task in r["rollouts"]}
        if not with_frames:
            continue
        real = next(iter(with_frames.values()))["real"]
        for name, ro in with_frames.items():
            if not np.array_equal(ro["real"], real):
                raise SystemExit(f"run {name!r} evaluated a different {task} episode; use the same --seed")
        strip(real, {n: ro["imagined"] for n, ro in with_frames.items()}).save(out / f"compare_{task}.png")
    psnr_plot(runs, out / "psnr_vs_horizon.png")
    print(table(runs))
    print(f"\nwritten to {out}/compare_<task>.png and psnr_vs_horizon.png")


if __name__ == "__main__":
    main()
