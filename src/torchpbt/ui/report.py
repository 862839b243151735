"""A run's report: one static HTML page with PNG figures, written from the store.

    torchpbt report RUN_DIR            # -> RUN_DIR/report/report.html
    torchpbt.write_report(run_dir)

Works on a finished run and on one still running (it shows what is recorded so far).
The page is plain HTML with inline CSS: no JavaScript, nothing fetched from a network.
"""

from __future__ import annotations

import datetime as _dt
import html
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from ..analysis.result import Result
from . import report_figures as rf
from .display import fmt

FIGURES = (
    ("lineage.png", rf.lineage_figure,
     "Lineage, as in the PBT paper. Each grey line is one member's weights, scored at every "
     "ready step; a line ends where an exploit replaced its weights, and the dashed branch "
     "joins the donor's point it copied to the receiver's next score. Red: the surviving "
     "lineage of the best member (labels name the member training each stretch). Hollow "
     "circles: the first generation; squares: each member's latest score."),
    ("hparams.png", rf.hparams_figure,
     "Hyperparameters over training. Grey: each member's value during each of its intervals "
     "(categorical values are spread a little so overlaps stay visible). Red: the values the "
     "best member's weights were trained with, stretch by stretch (its schedule). Log-scale "
     "hyperparameters have a log axis; the axes span the search space's bounds."),
    ("scores.png", rf.scores_figure,
     "Population score at each step: the best, median and worst member that reported it."),
)

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1150px; padding: 0 1.5em; color: #222; line-height: 1.45; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.8em; }
.sub { color: #666; margin-top: 0; }
.status { display: inline-block; padding: 0.1em 0.6em; border-radius: 0.8em; color: #fff;
          font-size: 0.8em; vertical-align: middle; background: #777; }
.status.done { background: #2a7d2a; } .status.running { background: #c77700; }
.status.failed, .status.interrupted { background: #b22; }
.note { background: #fff6e0; border-left: 4px solid #c77700; padding: 0.5em 0.9em; }
.cols { display: flex; flex-wrap: wrap; column-gap: 3em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.7em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
table.kv th { width: 11em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 0.92em; }
figure { margin: 1.2em 0 2em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.92em; max-width: 60em; }
footer { color: #888; font-size: 0.85em; margin: 3em 0 1em 0; }
"""


def _e(v: Any) -> str:
    return html.escape(str(v))


def _kv(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def _table(header: list[str], rows: list[list[Any]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(
        f'<td class="num">{_e(c)}</td>' if i in numeric else f"<td>{_e(c)}</td>"
        for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _score(v: Any) -> str:
    return "—" if v is None else fmt(v)


def render_html(result: Result, figures: list[tuple[str, str]], generated: str) -> str:
    """The page, given the figure files (relative names) and captions."""
    run, cfg = result.run, result.settings
    best = rf.best_member(result)
    kinds = Counter(e["kind"] for e in result.events)
    done_steps = sum(m["step"] for m in result.members)
    total = cfg.total_steps
    status = str(run.get("status", "?"))
    parts = [f"<h1>torchpbt report: {_e(run['name'])} "
             f'<span class="status {_e(status)}">{_e(status)}</span></h1>',
             f'<p class="sub">run directory <code>{_e(result.run_dir.resolve())}</code></p>']
    if status == "running":
        parts.append('<p class="note">The store marks this run as running: the report shows '
                     f"what it held at {_e(generated)} ({done_steps} of {total} member steps "
                     "done). Write the report again for newer data. If the run's process died, "
                     f"<code>torchpbt resume {_e(result.run_dir)}</code> continues it.</p>")
    summary = [("status", status), ("best member", "none yet" if best is None else
                                    f"member {best['member_id']}"),
               ("best score", "—" if best is None else _score(best["score"])),
               ("mode", f"{result.mode} (score {'higher' if result.mode == 'max' else 'lower'} "
                        "is better)"),
               ("exploits", kinds["exploit"])]
    if best is not None:
        summary.insert(3, ("lineage of its weights",
                           " → ".join(f"m{m}" for m in result.lineage(best["member_id"]))))
    init = sorted(result.initial_scores())
    if init:
        summary.append(("median first score", fmt(init[len(init) // 2])))
    other = ", ".join(f"{k} {kinds[k]}" for k in ("explore", "reinit", "fail", "retry", "resume")
                      if kinds[k])
    summary += [("other events", other or "none"), ("intervals recorded", len(result.intervals)),
                ("created", run.get("created_at", "")), ("last update", run.get("updated_at", ""))]
    parts += ['<div class="cols"><div><h2>Summary</h2>', _kv(summary), "</div>"]
    parts += ["<div><h2>Configuration</h2>", _kv([
        ("population", cfg.population), ("steps per member", cfg.steps),
        ("ready every", cfg.ready_every), ("exploit", cfg.exploit),
        ("explore", cfg.explore), ("asynchrony", "sync (generations)" if cfg.sync
                                   else "async (the paper's)"),
        ("backend", cfg.backend if cfg.backend == "serial"
         else f"{cfg.backend} ({cfg.workers} workers)"),
        ("seed", cfg.seed), ("store", result.storage)]), "</div></div>"]
    space = rf.run_space(result)
    if space is not None:
        parts += ["<h2>Search space</h2>",
                  _table(["hyperparameter", "domain"], [[n, repr(d)] for n, d in space.items()])]
    parts.append("<h2>Schedule of the best member</h2>")
    if best is None:
        parts.append("<p>No member has a score yet.</p>")
    else:
        sched = result.schedule(best["member_id"])
        names = list(sched[0].hparams)
        rows = [[f"{s.from_step}–{s.to_step}", f"m{s.member_id}", _score(s.score),
                 *(fmt(s.hparams.get(n)) for n in names)] for s in sched]
        parts += [f"<p>The hyperparameters member {best['member_id']}'s final weights were "
                  "trained with, across exploits. Steps count the weights' own training (a "
                  "copy resumes at the donor's step).</p>",
                  _table(["steps", "trained as", "score at end", *names], rows,
                         numeric={2, *range(3, 3 + len(names))})]
    parts.append("<h2>Figures</h2>")
    for name, caption in figures:
        parts.append(f'<figure><img src="{_e(name)}" alt="{_e(name)}">'
                     f"<figcaption>{_e(caption)}</figcaption></figure>")
    parts.append(f"<footer>generated {_e(generated)} by torchpbt from {_e(result.storage)}"
                 "</footer>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>torchpbt report: {_e(run['name'])}</title><style>{CSS}</style></head>"
            "<body>\n" + "\n".join(parts) + "\n</body></html>\n")


def write_report(run_dir: str | Path, storage: str | None = None,
                 out: str | Path | None = None) -> Path:
    """Write ``report.html`` and its PNG figures to ``out`` (default RUN_DIR/report).

    Returns the absolute path of report.html. Reads the store only, so it is safe while the run
    is still going. Needs matplotlib (``pip install torchpbt[report]``).
    """
    result = Result.load(run_dir, storage)
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError("torchpbt report needs matplotlib: pip install matplotlib "
                          "(or torchpbt[report]).") from exc
    target = Path(out) if out is not None else Path(run_dir) / "report"
    target.mkdir(parents=True, exist_ok=True)
    figures = []
    for name, draw, caption in FIGURES:
        fig = draw(result)
        fig.savefig(target / name)
        figures.append((name, caption))
    generated = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    page = target / "report.html"
    tmp = page.with_suffix(".html.tmp")
    tmp.write_text(render_html(result, figures, generated), encoding="utf-8")
    tmp.replace(page)
    return page.resolve()


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars")


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(html_path: str | Path, png: str | Path, width: int = 1400, height: int = 3000,
               timeout: float = 120) -> Path:
    """Render a page in headless Chromium and save a PNG of it (a check that it displays)."""
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("no chromium found on PATH; install it (apt-get install chromium)")
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="torchpbt-chromium-") as profile:
        cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}",
               f"--window-size={width},{height}", Path(html_path).resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not png.is_file():
        raise RuntimeError(f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return png
