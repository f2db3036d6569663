"""One bar chart of success rates from several `bagel-world evaluate-agent --out DIR` runs.

Each row is `LABEL=DIR[:AGENT]`: the row of AGENT (default: the planner row, else the
first row) in DIR/results.json, drawn with its Wilson 95% interval. The README's agent chart:

    python examples/plot_agents.py --out docs/agents/success_one_room.png --target 0.6 \\
        --title "navigate one_room, held-out seeds 0-19" \\
        "random=out/ea-L6:random" "planner, L4=out/ea-L4:planner" "planner, L6=out/ea-L6:planner"
"""

from __future__ import annotations

import argparse

from bagel_world.evaluate_agents import load_results, success_chart


def pick(spec: str):
    label, sep, where = spec.partition("=")
    if not sep or not label or not where:
        raise SystemExit(f"a row is LABEL=DIR[:AGENT], got {spec!r}")
    folder, _, agent = where.partition(":")
    rows = load_results(folder)
    if agent:
        match = [r for r in rows if r.agent == agent]
        if not match:
            raise SystemExit(f"{folder} has no {agent!r} row; it has {[r.agent for r in rows]}")
        return label, match[0]
    return label, next((r for r in rows if r.agent == "planner"), rows[0])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rows", nargs="+", help="LABEL=DIR[:AGENT], one bar each, top to bottom")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--target", type=float, default=None, help="a success rate to draw as a dashed line")
    p.add_argument("--title", default=None)
    args = p.parse_args(argv)
    labels, results = zip(*(pick(s) for s in args.rows))
    print(success_chart(list(results), args.out, labels=list(labels), target=args.target, title=args.title))


if __name__ == "__main__":
    main()
