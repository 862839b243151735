"""Rich views: the live progress of a run, the end-of-run summary, member tables."""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


def fmt(v: Any) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4g}"
    return str(v)


def fmt_hparams(h: Mapping[str, Any] | None) -> str:
    return ", ".join(f"{k}={fmt(v)}" for k, v in (h or {}).items())


def members_table(rows: Sequence[Mapping[str, Any]], steps: int | None = None,
                  title: str = "members") -> Table:
    """One row per member. ``last_exploit`` is ``(step, donor)``: at which of its own steps
    the member last copied whom (rows without it fall back to ``parent_id``)."""
    t = Table(title=title, title_justify="left")
    for col in ("member", "status", "step", "score", "exploits", "last exploit", "hparams"):
        t.add_column(col, overflow="fold")
    for r in rows:
        step = f"{r['step']}/{steps}" if steps else str(r["step"])
        score = "—" if r.get("score") is None else fmt(r["score"])
        t.add_row(str(r["member_id"]), r.get("status", ""), step, score,
                  str(r.get("exploits", 0)), fmt_exploit(r), fmt_hparams(r.get("hparams")))
    return t


def fmt_exploit(row: Mapping[str, Any]) -> str:
    last = row.get("last_exploit")
    if last is not None:
        step, donor = last
        return f"step {step} ← {donor}"
    return "—" if row.get("parent_id") is None else f"← {row['parent_id']}"


def last_exploits(events: Sequence[Mapping[str, Any]]) -> dict[int, tuple[int, int | None]]:
    """Each member's latest exploit as ``(its step, donor)``, from a run's event rows."""
    return {e["member_id"]: (e["step"], e["donor_id"]) for e in events if e["kind"] == "exploit"}


class LiveDisplay:
    """Progress bar over all member steps plus a member table, refreshed as reports arrive."""

    def __init__(self, total_steps: int, steps: int, enabled: bool = True,
                 console: Console | None = None) -> None:
        self.enabled, self.steps = enabled, steps
        self.rows: dict[int, dict[str, Any]] = {}
        self.progress = Progress(TextColumn("[bold]PBT"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("steps"), TimeElapsedColumn())
        self.task = self.progress.add_task("pbt", total=total_steps)
        self.live = Live(console=console or Console(), refresh_per_second=4, transient=False)
        self._shown = -math.inf  # when the table was last rebuilt

    def __enter__(self) -> LiveDisplay:
        if self.enabled:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self._show()
            self.live.__exit__(*exc)

    def update(self, member_id: int, **fields: Any) -> None:
        row = self.rows.setdefault(member_id, {"member_id": member_id, "exploits": 0, "step": 0})
        if fields.get("parent_id") is not None:  # the controller reports an exploit this way
            row["last_exploit"] = (fields.get("step", row["step"]), fields["parent_id"])
        row.update(fields)

    def advance(self, steps: int) -> None:
        self.progress.advance(self.task, steps)
        now = time.monotonic()
        if self.enabled and now - self._shown >= 0.25:  # Live redraws 4 times a second
            self._shown = now
            self._show()

    def _show(self) -> None:
        """Rebuild the table (the first 20 members): not per event, since that costs
        O(population) and a 10,000-member run handles thousands of events a second."""
        rows = [self.rows[k] for k in heapq.nsmallest(20, self.rows)]
        self.live.update(Group(self.progress, members_table(rows, self.steps)))


def print_summary(result: Any, console: Console | None = None) -> None:
    """Best member, its score and schedule, exploit count, and where the run is stored."""
    console = console or Console()
    best = result.best_member
    init = sorted(s for s in result.initial_scores())
    t = Table(title="torchpbt run summary", title_justify="left", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("best member", str(best["member_id"]))
    t.add_row("best score", fmt(best["score"]))
    if init:
        t.add_row("median initial score", fmt(init[len(init) // 2]))
    t.add_row("best hparams", fmt_hparams(best["hparams"]))
    t.add_row("lineage", " → ".join(str(m) for m in result.lineage()))
    t.add_row("exploits", str(len(result.exploits)))
    t.add_row("run directory", str(result.run_dir.resolve()))
    t.add_row("store", result.storage)
    console.print(t)
    s = Table(title=f"hparam schedule of member {best['member_id']}'s weights",
              title_justify="left")
    for col in ("steps", "trained as member", "score at end", "hparams"):
        s.add_column(col, overflow="fold")
    for seg in result.schedule():
        score = "—" if seg.score is None else fmt(seg.score)
        s.add_row(f"{seg.from_step}–{seg.to_step}", str(seg.member_id), score,
                  fmt_hparams(seg.hparams))
    console.print(s)
