"""The report's figures: pure data extraction from a :class:`Result`, then matplotlib.

The ``*_data`` / ``lineage_segments`` functions only read stored rows, so tests can
check them against the events; the ``*_figure`` functions draw them on a bare
``matplotlib.figure.Figure`` (Agg, no pyplot state, no display needed).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from ..algorithm.space import Choice, Domain, Float, Int, Space
from ..analysis.lineage import finite_number

GREY, BEST, DONOR = "#a0a0a0", "#d62728", "#606060"


def best_member(result: Any) -> dict[str, Any] | None:
    """The best member, or None while no member has a finite score yet."""
    if not result.members:
        return None
    best = result.best_member
    return best if finite_number(best["score"]) else None


def member_points(result: Any) -> dict[int, list[tuple[int, float]]]:
    """Each member's valid scores as (step, score), in step order."""
    out: dict[int, list[tuple[int, float]]] = {}
    for s in sorted(result.scores, key=lambda s: (s["step"], s["id"])):
        if finite_number(s["score"]):
            out.setdefault(s["member_id"], []).append((s["step"], float(s["score"])))
    return out


def lineage_segments(result: Any) -> dict[str, Any]:
    """What the lineage figure draws.

    ``segments``: one per member per stretch of weights, ``{"member_id", "start"
    ("init" | "exploit" | "reinit"), "points": [(step, score)]}``; a member's line
    breaks at every exploit and reinit. ``branches``: one per exploit event, from the
    donor's point ``(donor_step, donor score)`` to the receiver's next point
    (``to`` is None while that score is not in yet). ``mix_branches``: the second
    parent of an architecture mix. ``best_path``: ``(member_id, step, score)`` along
    the intervals that made the best member's weights. ``first``/``last``: each
    member's first and latest point.
    """
    points = member_points(result)
    lookup = {(m, st): sc for m, pts in points.items() for st, sc in pts}
    cuts: dict[int, list[tuple[int, str]]] = {}
    for e in result.events:
        if e["kind"] in ("exploit", "reinit"):
            cuts.setdefault(e["member_id"], []).append((e["step"], e["kind"]))
    segments: list[dict[str, Any]] = []
    for m in sorted(points):
        pending = sorted(cuts.get(m, []))
        seg: dict[str, Any] = {"member_id": m, "start": "init", "points": []}
        for st, sc in points[m]:
            kind = None
            while pending and pending[0][0] < st:  # a cut before this point
                kind = pending.pop(0)[1]
            if kind is not None:
                if seg["points"]:
                    segments.append(seg)
                seg = {"member_id": m, "start": kind, "points": []}
            seg["points"].append((st, sc))
        if seg["points"]:
            segments.append(seg)

    def next_point(member: int, step: int) -> tuple[int, float] | None:
        return next(((st, sc) for st, sc in points.get(member, []) if st > step), None)

    def donor_point(donor: int | None, step: int | None, fallback: Any):
        if donor is None or step is None:
            return None
        sc = lookup.get((donor, step), fallback)
        return (step, float(sc)) if finite_number(sc) else None

    branches, mix_branches = [], []
    for e in result.exploits:
        detail = e.get("detail") or {}
        to = next_point(e["member_id"], e["step"])
        branches.append({"member_id": e["member_id"], "step": e["step"],
                         "donor_id": e["donor_id"], "donor_step": e["donor_step"],
                         "from": donor_point(e["donor_id"], e["donor_step"],
                                             detail.get("donor_score")), "to": to})
        mix = detail.get("mix") or {}
        if mix.get("donor_id") is not None:
            mix_branches.append({"member_id": e["member_id"], "step": e["step"],
                                 "donor_id": mix["donor_id"], "donor_step": mix.get("donor_step"),
                                 "from": donor_point(mix["donor_id"], mix.get("donor_step"), None),
                                 "to": to})
    best = best_member(result)
    path = []
    if best is not None:
        for iv in result.trace(best["member_id"]):
            if finite_number(iv.get("score")):
                path.append((iv["member_id"], iv["end_step"], float(iv["score"])))
    return {"segments": segments, "branches": branches, "mix_branches": mix_branches,
            "best_path": path, "best_member_id": None if best is None else best["member_id"],
            "first": {m: pts[0] for m, pts in points.items()},
            "last": {m: pts[-1] for m, pts in points.items()}}


def axis_scale(domain: Domain | None, values: list[Any] | None = None) -> str:
    """'log' for Float/Int declared log=True, 'category' for Choice/Gene, else 'linear'."""
    if isinstance(domain, Choice):
        return "category"
    if isinstance(domain, (Float, Int)):
        return "log" if domain.log else "linear"
    if values and not all(finite_number(v) for v in values):
        return "category"
    return "linear"


def run_space(result: Any) -> Space | None:
    try:
        return Space.from_dict(result.run.get("space") or {})
    except Exception:  # no space stored (or an unknown domain): infer scales from values
        return None


def hparam_data(result: Any) -> dict[str, Any]:
    """Per hparam: every member's value per interval, and the best lineage's intervals."""
    space = run_space(result)
    names = list(space) if space is not None else []
    for iv in result.intervals:
        names += [n for n in iv["hparams"] if n not in names]
    best = best_member(result)
    trace = result.trace(best["member_id"]) if best is not None else []
    out: dict[str, Any] = {}
    for n in names:
        pop = [(iv["member_id"], iv["start_step"], iv["end_step"], iv["hparams"][n])
               for iv in result.intervals if n in iv["hparams"]]
        dom = space[n] if space is not None and n in space else None
        values = [v for *_, v in pop]
        out[n] = {"domain": dom, "scale": axis_scale(dom, values), "population": pop,
                  "best": [(iv["member_id"], iv["start_step"], iv["end_step"], iv["hparams"][n])
                           for iv in trace if n in iv["hparams"]]}
    return out


def score_bands(result: Any) -> dict[str, list[Any]]:
    """Best, median and worst valid score of the population at each reported step."""
    by_step: dict[int, list[float]] = {}
    for pts in member_points(result).values():
        for st, sc in pts:
            by_step.setdefault(st, []).append(sc)
    steps = sorted(by_step)
    hi = result.mode == "max"
    return {"steps": steps,
            "best": [(max if hi else min)(by_step[s]) for s in steps],
            "median": [statistics.median(by_step[s]) for s in steps],
            "worst": [(min if hi else max)(by_step[s]) for s in steps],
            "count": [len(by_step[s]) for s in steps]}


# -- drawing ---------------------------------------------------------------------------------

def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=110, layout="constrained")


def _empty(ax: Any, text: str = "no scores recorded yet") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#666",
            fontsize=12)


def zoom_range(d: Mapping[str, Any], share: float = 0.5) -> tuple[float, float] | None:
    """From the lowest score of the run's later half to the highest score overall, if that
    is less than ``share`` of the whole range (early scores often squash the part where
    exploits happen); else None."""
    pts = [p for seg in d["segments"] for p in seg["points"]]
    if len({p[0] for p in pts}) < 4:
        return None
    lo_x, hi_x = min(p[0] for p in pts), max(p[0] for p in pts)
    late = [p[1] for p in pts if p[0] >= (lo_x + hi_x) / 2]
    full = max(p[1] for p in pts) - min(p[1] for p in pts)
    lo, hi = min(late), max(p[1] for p in pts)
    if hi_x == lo_x or full <= 0 or hi - lo >= share * full:
        return None
    pad = max(0.08 * (hi - lo), 1e-3 * full)
    return lo - pad, hi + pad


def _draw_lineage(ax: Any, d: Mapping[str, Any]) -> None:
    for seg in d["segments"]:
        xs, ys = zip(*seg["points"], strict=True)
        ax.plot(xs, ys, color=GREY, lw=1.1, alpha=0.8, zorder=2)
    for kind, ls in (("branches", "--"), ("mix_branches", ":")):
        for b in d[kind]:
            if b["from"] and b["to"]:
                ax.plot([b["from"][0], b["to"][0]], [b["from"][1], b["to"][1]], color=DONOR,
                        ls=ls, lw=0.8, alpha=0.7, zorder=1)
    path = d["best_path"]
    if path:
        ax.plot([p[1] for p in path], [p[2] for p in path], color=BEST, lw=2.6, zorder=4)
        prev = None
        for m, st, sc in path:  # name the member at the start of each stretch
            if m != prev:
                ax.annotate(f"m{m}", (st, sc), xytext=(-4, 6), textcoords="offset points",
                            ha="right", fontsize=8, color=BEST, zorder=6, annotation_clip=True)
            prev = m
        ax.plot(path[-1][1], path[-1][2], marker="*", ms=16, color=BEST, mec="black",
                mew=0.6, zorder=7, ls="none")
    if d["first"]:
        fx, fy = zip(*d["first"].values(), strict=True)
        lx, ly = zip(*d["last"].values(), strict=True)
        ax.plot(lx, ly, "s", ms=5, color="#1f77b4", zorder=5, ls="none")
        # hollow and larger, on top: a member with one score shows both marks
        ax.plot(fx, fy, "o", ms=8, mfc="none", mec="#1f77b4", mew=1.4, zorder=6, ls="none")
    else:
        _empty(ax)
    ax.grid(alpha=0.3)


def lineage_figure(result: Any, data: Mapping[str, Any] | None = None):
    """Score of every member's weights over its steps, exploits as branches (PBT paper).

    A second panel zooms on the later half's score range when early scores squash it.
    """
    from matplotlib.lines import Line2D

    d = data or lineage_segments(result)
    zoom = zoom_range(d)
    fig = _figure(10.5, 9.6 if zoom else 5.6)
    axes = fig.subplots(2 if zoom else 1, 1, sharex=True, squeeze=False)[:, 0]
    for ax in axes:
        _draw_lineage(ax, d)
        ax.set_ylabel(f"score ({'higher' if result.mode == 'max' else 'lower'} is better)")
    if zoom:
        axes[1].set_ylim(*zoom)
        axes[1].set_title("zoom: from the lowest score of the run's later half to the top", fontsize=10)
    path = d["best_path"]
    handles = [Line2D([], [], color=GREY, lw=1.1, label="a member's weights\n(one line per stretch)"),
               Line2D([], [], color=DONOR, ls="--", lw=0.8, label="exploit: copy from\nthe donor's point"),
               Line2D([], [], color=BEST, lw=2.6,
                      label=f"lineage of the best\nmember (m{d['best_member_id']})"
                      if path else "lineage of the best\nmember (none yet)"),
               Line2D([], [], marker="o", ms=8, ls="none", mfc="none", mec="#1f77b4", mew=1.4,
                      label="first generation\n(first scores)"),
               Line2D([], [], marker="s", ms=5, ls="none", color="#1f77b4",
                      label="last generation\n(latest scores)")]
    if d["mix_branches"]:
        handles.insert(2, Line2D([], [], color=DONOR, ls=":", lw=0.8,
                                 label="architecture mix:\nsecond parent"))
    if path:
        handles.append(Line2D([], [], marker="*", ms=12, ls="none", color=BEST, mec="black",
                              mew=0.6, label="best member now"))
    axes[0].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9,
                   frameon=False, labelspacing=0.9)
    axes[-1].set_xlabel("member's training step")
    axes[0].set_title("Lineage: every member's score, exploits branching from their donors")
    return fig


def _category_axis(ax: Any, info: Mapping[str, Any]) -> dict[Any, int]:
    dom = info["domain"]
    values = list(dom.values) if isinstance(dom, Choice) else []
    for *_, v in info["population"]:
        if v not in values:
            values.append(v)
    ax.set_yticks(range(len(values)), [str(v) for v in values])
    ax.set_ylim(-0.6, len(values) - 0.4)
    return {_key(v): i for i, v in enumerate(values)}


def _key(v: Any) -> Any:
    return (type(v).__name__, v)


def hparams_figure(result: Any, data: Mapping[str, Any] | None = None):
    """One panel per hyperparameter: every member's value per interval, the best lineage bold."""
    from matplotlib import ticker
    from matplotlib.lines import Line2D

    d = data or hparam_data(result)
    n = max(len(d), 1)
    fig = _figure(10, 0.9 + 2.1 * n)
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    if not d:
        _empty(axes[0], "no hyperparameters recorded yet")
    for ax, (name, info) in zip(axes, d.items(), strict=False):  # no hparams: 1 axes
        cat = _category_axis(ax, info) if info["scale"] == "category" else None

        def y(v: Any, member: int = 0, jitter: bool = False, cat: Any = cat) -> float:
            if cat is None:
                return float(v)
            # spread members a little around their category so overlaps stay countable
            return cat[_key(v)] + (((member * 7) % 11) / 10 - 0.5) * 0.3 * jitter

        for m, a, b, v in info["population"]:
            yy = y(v, m, True)
            ax.plot([a, b], [yy, yy], color=GREY, lw=1.2, alpha=0.7, solid_capstyle="butt")
        prev = None
        for _m, a, b, v in info["best"]:
            ax.plot([a, b], [y(v), y(v)], color=BEST, lw=2.6, zorder=4, solid_capstyle="butt")
            if prev is not None:  # the weights moved on: same step (solid) or a copy (dotted)
                ax.plot([prev[0], a], [prev[1], y(v)], color=BEST, lw=1.2, zorder=4,
                        ls="-" if prev[0] == a else ":")
            prev = (b, y(v))
        if info["scale"] == "log":
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
            dom = info["domain"]
            values = [float(v) for *_, v in info["population"]] or [1.0]
            low, high = (dom.low, dom.high) if dom is not None else (min(values), max(values))
            if high / max(low, 1e-300) < 10**1.6:  # few decades: label 2 and 5 as well
                ax.yaxis.set_minor_formatter(ticker.FuncFormatter(
                    lambda v, _pos: f"{v:g}" if f"{v:.1g}"[0] in "25" else ""))
            else:
                ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        dom = info["domain"]
        if isinstance(dom, (Float, Int)):
            pad = (dom.high / dom.low) ** 0.04 if dom.log else 0.04 * (dom.high - dom.low)
            ax.set_ylim(*((dom.low / pad, dom.high * pad) if dom.log
                          else (dom.low - pad, dom.high + pad)))
            if isinstance(dom, Int) and not dom.log:
                ax.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        label = {"log": "log scale", "category": "categorical", "linear": "linear"}[info["scale"]]
        ax.set_ylabel(f"{name}\n({label})", fontsize=9)
        ax.grid(alpha=0.3, which="major")
        if not info["population"]:
            _empty(ax, "no intervals recorded yet")
    axes[-1].set_xlabel("member's training step")
    fig.suptitle("Hyperparameters over training: population (grey) and the best member's lineage")
    fig.legend(handles=[Line2D([], [], color=GREY, lw=1.2, label="a member's value per interval"),
                        Line2D([], [], color=BEST, lw=2.6,
                               label="best member's lineage (its schedule)"),
                        Line2D([], [], color=BEST, lw=1.2, ls=":",
                               label="its weights copied into another member")],
               loc="outside lower center", ncols=3, frameon=False, fontsize=9)
    return fig


def scores_figure(result: Any, data: Mapping[str, Any] | None = None):
    """Best, median and worst score of the population per step."""
    d = data or score_bands(result)
    fig = _figure(10, 4.4)
    ax = fig.add_subplot()
    if d["steps"]:
        ax.fill_between(d["steps"], d["worst"], d["best"], color="#1f77b4", alpha=0.12, lw=0,
                        label="range of the population")
        for key, color, lw in (("best", "#2ca02c", 2.2), ("median", "#1f77b4", 1.6),
                               ("worst", "#d62728", 1.2)):
            ax.plot(d["steps"], d[key], color=color, lw=lw, marker="o", ms=3, label=key)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=9)
    else:
        _empty(ax)
    ax.set_xlabel("member's training step")
    ax.set_ylabel(f"score ({'higher' if result.mode == 'max' else 'lower'} is better)")
    ax.set_title("Population score per step: best, median, worst")
    ax.grid(alpha=0.3)
    return fig
