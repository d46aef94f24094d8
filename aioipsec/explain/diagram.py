"""``--state-diagram``: the IKE SA and Child SA state machines of ``ikev2.states`` as a
PNG (matplotlib, the ``docs`` extra, imported only here and only when drawing)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from aioipsec.explain.runner import (
    ExplainError,
)
from ikev2.states import CHILD_TRANSITIONS, IKE_TRANSITIONS, ChildState, IkeState


def _layout(
    transitions: dict[tuple[Any, str], Any], initial: Any
) -> dict[Any, tuple[float, float]]:
    """Top-down layers: the longest path from the initial state over the edges that do
    not close a cycle; states of one layer side by side, lone states zig-zag so that
    long edges do not run through boxes."""
    edges = [(s, t) for (s, trigger), t in transitions.items() if s != t]
    # depth-first in table order: an edge back to a state on the current path closes a
    # cycle (rekey_failed, ...) and does not count for the layers
    forward: list[tuple[Any, Any]] = []
    seen: set[Any] = set()

    def visit(state: Any, path: list[Any]) -> None:
        seen.add(state)
        for source, target in edges:
            if source != state or target in path:
                continue
            forward.append((source, target))
            if target not in seen:
                visit(target, [*path, target])

    visit(initial, [initial])
    bfs = dict.fromkeys(seen, 0)
    layer = dict.fromkeys(bfs, 0)
    for _ in range(len(layer)):
        for source, target in forward:
            layer[target] = max(layer[target], layer[source] + 1)
    rows: dict[int, list[Any]] = {}
    for state in type(initial):
        rows.setdefault(layer.get(state, 0), []).append(state)
    singles = [index for index, states in sorted(rows.items()) if len(states) == 1]

    def place(choice: tuple[float, ...]) -> dict[Any, tuple[float, float]]:
        offsets = dict(zip(singles, choice, strict=True))
        positions = {}
        for index, states in sorted(rows.items()):
            for column, state in enumerate(states):
                x = offsets.get(index, (column - (len(states) - 1) / 2) * 6.4)
                positions[state] = (x, -index * 1.5)
        return positions

    def score(positions: dict[Any, tuple[float, float]]) -> float:
        """Edges running through other states' boxes, then total edge length."""
        hits, length = 0, 0.0
        for source, target in edges:
            (x1, y1), (x2, y2) = positions[source], positions[target]
            length += ((x2 - x1) ** 2 + (y2 - y1) ** 2) ** 0.5
            for state, (x, y) in positions.items():
                if state in (source, target):
                    continue
                for step in range(1, 10):
                    t = step / 10
                    px, py = x1 + t * (x2 - x1), y1 + t * (y2 - y1)
                    if abs(px - x) < BOX_HALF_WIDTH and abs(py - y) < BOX_HALF_HEIGHT:
                        hits += 1
                        break
        return hits * 100 + length

    best = min(itertools.product((0.0, -3.2, 3.2), repeat=len(singles)),
               key=lambda choice: score(place(choice)))  # fmt: skip
    return place(best)


BOX_HALF_WIDTH, BOX_HALF_HEIGHT = 1.25, 0.32


def _label_spot(
    start: tuple[float, float],
    end: tuple[float, float],
    rad: float,
    label: str,
    placed: list[tuple[float, float, float]],
) -> tuple[float, float]:
    """A point on the arc3 curve (a quadratic Bezier, control point as matplotlib puts it)
    where the label does not cover an earlier one; ``placed`` is updated."""
    (x1, y1), (x2, y2) = start, end
    cx, cy = (x1 + x2) / 2 + rad * (y2 - y1), (y1 + y2) / 2 - rad * (x2 - x1)
    half = 0.075 * len(label)
    spot = (0.0, 0.0)
    for t in (0.5, 0.35, 0.65, 0.25, 0.75, 0.5):
        u = 1 - t
        spot = (u * u * x1 + 2 * u * t * cx + t * t * x2, u * u * y1 + 2 * u * t * cy + t * t * y2)
        if all(abs(spot[1] - y) > 0.22 or abs(spot[0] - x) > half + w for x, y, w in placed):
            break
    placed.append((spot[0], spot[1], half))
    return spot


def _box_edge(center: tuple[float, float], toward: tuple[float, float]) -> tuple[float, float]:
    """Where the straight line from a state's centre to ``toward`` leaves its box."""
    dx, dy = toward[0] - center[0], toward[1] - center[1]
    scale = min(BOX_HALF_WIDTH / abs(dx) if dx else 1e9, BOX_HALF_HEIGHT / abs(dy) if dy else 1e9)
    return center[0] + dx * scale, center[1] + dy * scale


def draw_state_diagrams(path: str | Path) -> None:
    """Both state machines of ``ikev2.states`` as one PNG (needs matplotlib)."""
    try:  # optional (the docs extra): imported here, only when drawing
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import FancyBboxPatch
    except ImportError:
        raise ExplainError(
            "the state diagram needs matplotlib: pip install 'aioipsec[docs]'"
        ) from None
    panels: list[tuple[str, dict[tuple[Any, str], Any], Any, tuple[Any, ...]]] = [
        ("IKE SA: ikev2.states.IKE_TRANSITIONS", IKE_TRANSITIONS, IkeState.CREATED,
         (IkeState.ESTABLISHED, IkeState.DELETING)),
        ("Child SA: ikev2.states.CHILD_TRANSITIONS", CHILD_TRANSITIONS, ChildState.CREATING,
         (ChildState.INSTALLED, ChildState.DELETING)),
    ]  # fmt: skip
    figure, axes = plt.subplots(1, 2, figsize=(17, 11), gridspec_kw={"width_ratios": [1, 1]})
    for ax, (title, table, initial, keep) in zip(axes, panels, strict=True):
        positions = _layout(table, initial)
        drawn: dict[tuple[Any, Any], list[str]] = {}
        placed: list[tuple[float, float, float]] = []  # label centres and half widths
        for (source, trigger), target in table.items():
            if trigger in ("fail", "deleted") and source not in keep:
                continue  # one note instead of an arrow from every state
            drawn.setdefault((source, target), []).append(trigger)
        for (source, target), triggers in drawn.items():
            label = " / ".join(triggers)
            (x1, y1), (x2, y2) = positions[source], positions[target]
            style = {
                "fontsize": 9,
                "color": "#7a2e00",
                "ha": "center",
                "va": "center",
                "bbox": {"fc": "white", "ec": "none", "alpha": 0.85, "pad": 0.6},
                "zorder": 5,
            }
            if source == target:
                ax.annotate(
                    "",
                    xy=(x1 + 1.22, y1 - 0.12),
                    xytext=(x1 + 1.22, y1 + 0.12),
                    arrowprops={
                        "arrowstyle": "-|>",
                        "color": "#444",
                        "shrinkA": 0,
                        "shrinkB": 0,
                        "connectionstyle": "arc3,rad=-3.5",
                    },
                )
                ax.text(x1 + 2.3, y1, label, **style)
                continue
            back = y2 > y1  # upwards: a retry or a failed rekey going back
            skip = abs(y2 - y1) > 1.6 and x1 == x2
            rad = -0.35 if back else (0.3 if skip else 0.12)
            start = _box_edge((x1, y1), (x2, y2))
            end = _box_edge((x2, y2), (x1, y1))
            ax.annotate("", xy=end, xytext=start,
                        arrowprops={"arrowstyle": "-|>", "shrinkA": 1, "shrinkB": 1,
                                    "mutation_scale": 16,
                                    "color": "#2b5d9b" if back else "#444",
                                    "connectionstyle": f"arc3,rad={rad}"})  # fmt: skip
            ax.text(*_label_spot(start, end, rad, label, placed), label, **style)
        for state, (x, y) in positions.items():
            ax.add_patch(FancyBboxPatch((x - 1.2, y - 0.27), 2.4, 0.54,
                                        boxstyle="round,pad=0.04", fc="#e8f0fe", ec="#1a4480",
                                        zorder=3))  # fmt: skip
            ax.text(x, y, state.value, ha="center", va="center", fontsize=11, weight="bold",
                    zorder=4)  # fmt: skip
        xs = [p[0] for p in positions.values()]
        ys = [p[1] for p in positions.values()]
        ax.set_xlim(min(xs) - 3.5, max(xs) + 3.5)
        ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)
        ax.set_title(f"{title}\n('fail' / 'deleted' lead to DELETED from every live state)",
                     fontsize=12)  # fmt: skip
        ax.set_aspect("equal")
        ax.axis("off")
    figure.suptitle("aioipsec state machines, drawn from the transition tables in "
                    "ikev2/states.py by python -m aioipsec.explain --state-diagram",
                    fontsize=13)  # fmt: skip
    figure.tight_layout()
    # No date in the PNG metadata: the same table gives the same file.
    figure.savefig(str(path), dpi=72, metadata={"Software": None})
    plt.close(figure)
