"""The text-action grammar the real simulators speak: verb + direction + optional amount.

The imagined envs take any text; a real simulator must turn text into an exact motion,
so it accepts a small grammar and raises `ValueError` on anything else (naming the text
and listing the accepted forms). Every canonical action of `bagel_world.simulator.tasks`
parses, and so do the same phrases with other amounts and units:

    navigate      move|go|walk forward|backward|back [N m|cm]   (default 0.5 m)
                  strafe left|right [N m|cm]                    (default 0.5 m)
                  turn|rotate left|right [N degrees]            (default 30 degrees)
    multiview     orbit left|right [N degrees]                  (default 30 degrees)
                  orbit up|down [N degrees]                     (default 15 degrees)
                  zoom in|out [N m|cm]                          (default 0.5 m)
    future_frame  wait [N s|ms]                                 (default 0.1 s)
                  push [the] <colour> <shape> left|right|forward|backward [N m/s]
                                                                (default 1 m/s)
    manipulate    move [the] gripper left|right|forward|backward|up|down [N cm|m]
                                                                (default 5 cm)
                  open|close [the] gripper

Amounts are normalised to SI units and degrees: a parsed `Command` holds metres,
degrees, seconds or metres per second. This module imports nothing heavy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from bagel_world.simulator.tasks import CANONICAL_ACTIONS, TASK_NAMES

# unit word -> (quantity, factor to SI / degrees)
_UNITS: dict[str, tuple[str, float]] = {
    **{u: ("angle", 1.0) for u in ("deg", "degs", "degree", "degrees", "°")},
    **{u: ("length", 1.0) for u in ("m", "meter", "meters", "metre", "metres")},
    **{u: ("length", 0.01) for u in ("cm", "centimeter", "centimeters", "centimetre", "centimetres")},
    **{u: ("time", 1.0) for u in ("s", "sec", "secs", "second", "seconds")},
    **{u: ("time", 0.001) for u in ("ms", "millisecond", "milliseconds")},
    **{u: ("speed", 1.0) for u in ("m/s", "mps")},
}
_NUM = r"(?P<num>\d+(?:\.\d*)?|\.\d+)"
_UNIT = r"(?P<unit>m/s|°|[a-z]+)"
_AMOUNT = rf"(?:\s*{_NUM}\s*{_UNIT})?"

# colour + shape names of objects a push can name; shapes have synonyms
SHAPE_SYNONYMS = {"ball": "ball", "sphere": "ball", "box": "box", "cube": "box", "block": "box",
                  "cylinder": "cylinder", "capsule": "capsule"}
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "cyan", "white")


@dataclass(frozen=True)
class Command:
    """One parsed action. `amount` is in SI units (m, s, m/s) or degrees."""

    verb: str  # "move", "strafe", "turn", "orbit", "zoom", "wait", "push", "open", "close"
    direction: str | None = None  # "left", "right", "forward", "backward", "up", "down", "in", "out"
    amount: float | None = None
    target: str | None = None  # "red ball" for a push


@dataclass(frozen=True)
class _Rule:
    verb: str  # canonical verb of the parsed Command
    pattern: str  # regex over normalised text; groups: dir, obj, num, unit
    form: str  # how the accepted form is shown in error messages
    quantity: str | None  # "angle", "length", "time", "speed" or None (no amount)
    defaults: dict[str, float]  # direction -> default amount (key "" when there is no direction)
    limit: float = 0.0  # largest amount accepted (SI)


def _rules(task: str) -> tuple[_Rule, ...]:
    if task == "navigate":
        return (
            _Rule("move", rf"(?:move|go|walk)\s+(?P<dir>forwards?|backwards?|back){_AMOUNT}",
                  "move forward|backward [N m|cm]", "length", {"forward": 0.5, "backward": 0.5}, 5.0),
            _Rule("strafe", rf"strafe\s+(?P<dir>left|right){_AMOUNT}",
                  "strafe left|right [N m|cm]", "length", {"left": 0.5, "right": 0.5}, 5.0),
            _Rule("turn", rf"(?:turn|rotate)\s+(?P<dir>left|right){_AMOUNT}",
                  "turn left|right [N degrees]", "angle", {"left": 30.0, "right": 30.0}, 360.0),
        )
    if task == "multiview":
        return (
            _Rule("orbit", rf"orbit\s+(?P<dir>left|right|up|down){_AMOUNT}",
                  "orbit left|right|up|down [N degrees]", "angle",
                  {"left": 30.0, "right": 30.0, "up": 15.0, "down": 15.0}, 360.0),
            _Rule("zoom", rf"zoom\s+(?P<dir>in|out){_AMOUNT}",
                  "zoom in|out [N m|cm]", "length", {"in": 0.5, "out": 0.5}, 4.0),
        )
    if task == "future_frame":
        shapes = "|".join(SHAPE_SYNONYMS)
        return (
            _Rule("wait", rf"wait{_AMOUNT}", "wait [N s|ms]", "time", {"": 0.1}, 10.0),
            _Rule("push", rf"push\s+(?:the\s+)?(?P<obj>[a-z]+\s+(?:{shapes}))\s+"
                          rf"(?P<dir>left|right|forwards?|backwards?){_AMOUNT}",
                  "push [the] <colour> <shape> left|right|forward|backward [N m/s]", "speed",
                  {"left": 1.0, "right": 1.0, "forward": 1.0, "backward": 1.0}, 5.0),
        )
    if task == "manipulate":
        dirs = {d: 0.05 for d in ("left", "right", "forward", "backward", "up", "down")}
        return (
            _Rule("move", rf"move\s+(?:the\s+)?gripper\s+"
                          rf"(?P<dir>left|right|forwards?|backwards?|back|up|down){_AMOUNT}",
                  "move [the] gripper left|right|forward|backward|up|down [N cm|m]", "length", dirs, 0.5),
            _Rule("open", r"open\s+(?:the\s+)?gripper", "open [the] gripper", None, {"": 0.0}),
            _Rule("close", r"close\s+(?:the\s+)?gripper", "close [the] gripper", None, {"": 0.0}),
        )
    raise ValueError(f"unknown task {task!r}; known: {TASK_NAMES}")


_COMPILED: dict[str, tuple[tuple[_Rule, re.Pattern], ...]] = {}


def _compiled(task: str) -> tuple[tuple[_Rule, re.Pattern], ...]:
    if task not in _COMPILED:
        _COMPILED[task] = tuple((r, re.compile(rf"^{r.pattern}$")) for r in _rules(task))
    return _COMPILED[task]


def accepted_forms(task: str) -> list[str]:
    """The accepted phrasings of a task, as shown in error messages."""
    return [r.form for r, _ in _compiled(task)]


def _normalise(text: str) -> str:
    t = text.strip().lower().rstrip(".!")
    t = t.replace("°", " ° ")
    return re.sub(r"\s+", " ", t).strip()


def _canonical_direction(d: str) -> str:
    return {"forwards": "forward", "backwards": "backward", "back": "backward"}.get(d, d)


def parse_action(task: str, text: str) -> Command:
    """Parse `text` into a `Command` for `task`, or raise ValueError naming the accepted forms."""
    if not isinstance(text, str):
        raise ValueError(f"a text action must be a str, got {type(text).__name__} {text!r}")
    norm = _normalise(text)
    for rule, rx in _compiled(task):
        m = rx.match(norm)
        if m is None:
            continue
        groups = m.groupdict()
        direction = _canonical_direction(groups["dir"]) if groups.get("dir") else None
        target = _canonical_object(groups["obj"]) if groups.get("obj") else None
        amount = rule.defaults[direction or ""] if rule.quantity else None
        if groups.get("num") is not None:
            amount = _amount(text, task, rule, groups["num"], groups["unit"])
        return Command(rule.verb, direction, amount, target)
    forms = "; ".join(repr(f) for f in accepted_forms(task))
    raise ValueError(f"cannot parse action {text!r} for task {task!r}; accepted forms: {forms} "
                     f"(e.g. {CANONICAL_ACTIONS[task][0]!r})")


def _amount(text: str, task: str, rule: _Rule, num: str, unit: str) -> float:
    quantity, factor = _UNITS.get(unit, (None, 0.0))
    if quantity != rule.quantity:
        allowed = sorted(u for u, (q, _) in _UNITS.items() if q == rule.quantity)
        raise ValueError(f"action {text!r}: unit {unit!r} is not a unit of {rule.quantity} for "
                         f"{rule.form!r}; accepted units: {allowed}")
    value = float(num) * factor
    if value > rule.limit:
        raise ValueError(f"action {text!r}: amount {value:g} exceeds the largest accepted "
                         f"{rule.limit:g} for {rule.form!r} in task {task!r}")
    return value


def _canonical_object(name: str) -> str:
    colour, shape = name.split()
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r} in {name!r}; known colours: {list(COLOURS)}")
    return f"{colour} {SHAPE_SYNONYMS[shape]}"


# ---- formatting and sampling -----------------------------------------------------------------
_DEFAULT_UNIT = {"angle": "degrees", "length": "m", "time": "s", "speed": "m/s"}


def _num(x: float) -> str:
    return f"{x:.4f}".rstrip("0").rstrip(".")


def format_command(task: str, c: Command) -> str:
    """Text for a Command of `task` in the grammar's own words (parses back to an equal Command)."""
    if c.verb in ("open", "close"):
        return f"{c.verb} gripper"
    if c.verb == "wait":
        return f"wait {_num(c.amount)} s"
    if c.verb == "push":
        return f"push the {c.target} {c.direction} {_num(c.amount)} m/s"
    if task == "manipulate":  # gripper moves are small: say them in centimetres
        return f"move gripper {c.direction} {_num(c.amount * 100)} cm"
    unit = "degrees" if c.verb in ("turn", "orbit") else "m"
    return f"{c.verb} {c.direction} {_num(c.amount)} {unit}"


def varied_action(task: str, rng: np.random.Generator, targets: tuple[str, ...] = ()) -> str:
    """A random well-formed action of `task` with a random amount (for grammar coverage).

    `targets` names the objects a push may name (future_frame); by default the canonical ones.
    """
    canon = CANONICAL_ACTIONS[task]
    base = parse_action(task, canon[int(rng.integers(len(canon)))])
    if base.amount is None:
        return canon[int(rng.integers(len(canon)))]
    scale = float(rng.choice([0.5, 1.5, 2.0, 3.0]))
    if base.verb == "push" and targets:
        base = Command("push", base.direction, base.amount, targets[int(rng.integers(len(targets)))])
    amount = round(base.amount * scale, 4)
    if base.verb in ("turn", "orbit"):
        amount = float(round(amount))  # whole degrees keep orbits exactly periodic
    return format_command(task, Command(base.verb, base.direction, amount, base.target))
