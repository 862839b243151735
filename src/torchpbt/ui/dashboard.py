"""``torchpbt dashboard RUN_DIR``: a live web page of a run, read from its store.

Built on Dash (Plotly's web framework): interactive, zoomable figures with hover
out of the box, a table component, and a timer that refreshes the page while a
run goes, all served by one Python process with no JavaScript to write. The page
shows the member table, the lineage tree (as in the PBT paper's figure: one line
per member per stretch of weights, a dashed branch per exploit, the best
member's lineage in red), each hparam's schedule, the score bands and the latest
events. Every refresh loads the run with :meth:`Result.load`, which only reads.
The figures reuse the report's data functions (``report_figures``), so the page
and the HTML report draw the same things.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..analysis.result import Result
from .display import fmt, fmt_hparams
from .report_figures import BEST, DONOR, GREY, hparam_data, lineage_segments, score_bands

EVENTS_SHOWN = 30


def _hover(result: Result) -> dict[tuple[int, int], str]:
    """Hover text per (member, step): the hparams its interval ending there trained with."""
    return {(iv["member_id"], iv["end_step"]): fmt_hparams(iv["hparams"])
            for iv in result.intervals}


def lineage_figure(result: Result) -> Any:
    import plotly.graph_objects as go

    d, hover = lineage_segments(result), _hover(result)
    best_steps = {(m, st) for m, st, _ in d["best_path"]}
    fig = go.Figure()
    for seg in d["segments"]:
        m, pts = seg["member_id"], seg["points"]
        on_best = all((m, st) in best_steps for st, _ in pts)
        fig.add_trace(go.Scatter(
            x=[st for st, _ in pts], y=[sc for _, sc in pts], mode="lines+markers",
            line={"color": BEST if on_best else GREY, "width": 2.5 if on_best else 1},
            marker={"size": 4}, name=f"member {m}", showlegend=False,
            text=[f"member {m}<br>step {st}<br>score {fmt(sc)}<br>{hover.get((m, st), '')}"
                  for st, sc in pts], hoverinfo="text"))
    for b in d["branches"] + d["mix_branches"]:
        if b["from"] is not None and b["to"] is not None:
            fig.add_trace(go.Scatter(
                x=[b["from"][0], b["to"][0]], y=[b["from"][1], b["to"][1]], mode="lines",
                line={"color": DONOR, "dash": "dot", "width": 1}, showlegend=False,
                hoverinfo="text", text=[f"member {b['member_id']} copied member "
                                        f"{b['donor_id']} at step {b['step']}"] * 2))
    fig.update_layout(title="lineage (zoom: drag; hover: member, step, score, hparams)",
                      xaxis_title="step", yaxis_title="score", height=420,
                      margin={"l": 50, "r": 20, "t": 40, "b": 40})
    return fig


def hparams_figure(result: Result) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    data = hparam_data(result)
    names = list(data) or ["(no hparams yet)"]
    fig = make_subplots(rows=len(names), cols=1, shared_xaxes=True, subplot_titles=names)
    for row, name in enumerate(data, start=1):
        info, xs, ys = data[name], [], []
        for _, start, end, value in info["population"]:
            xs += [start, end, None]
            ys += [value, value, None]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": GREY, "width": 1},
                                 showlegend=False, hoverinfo="skip"), row=row, col=1)
        bx, by = [], []
        for _, start, end, value in info["best"]:
            bx += [start, end]
            by += [value, value]
        fig.add_trace(go.Scatter(x=bx, y=by, mode="lines", line={"color": BEST, "width": 2.5},
                                 showlegend=False, name=f"best: {name}"), row=row, col=1)
        if info["scale"] == "log":
            fig.update_yaxes(type="log", row=row, col=1)
    fig.update_layout(title="hparam schedules (red: the best member's lineage)",
                      height=max(250, 180 * len(names)), margin={"l": 50, "r": 20, "t": 60})
    return fig


def scores_figure(result: Result) -> Any:
    import plotly.graph_objects as go

    b = score_bands(result)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=b["steps"], y=b["worst"], mode="lines", name="worst",
                             line={"color": GREY, "width": 1}))
    fig.add_trace(go.Scatter(x=b["steps"], y=b["best"], mode="lines", name="best",
                             line={"color": BEST}, fill="tonexty",
                             fillcolor="rgba(160,160,160,0.2)"))
    fig.add_trace(go.Scatter(x=b["steps"], y=b["median"], mode="lines", name="median",
                             line={"color": DONOR, "dash": "dash"}))
    fig.update_layout(title="population scores per step", xaxis_title="step",
                      yaxis_title="score", height=320, margin={"l": 50, "r": 20, "t": 40})
    return fig


def member_rows(result: Result) -> list[dict[str, Any]]:
    return [{"member": m["member_id"], "status": m["status"], "step": m["step"],
             "score": fmt(m["score"]) if m["score"] is not None else "—",
             "exploits": m.get("exploits", 0), "hparams": fmt_hparams(m["hparams"])}
            for m in sorted(result.members, key=lambda m: m["member_id"])]


def event_rows(result: Result, last: int = EVENTS_SHOWN) -> list[dict[str, Any]]:
    rows = []
    for e in result.events[-last:][::-1]:
        what = ""
        if e["kind"] == "exploit":
            what = f"copied member {e['donor_id']} (step {e['donor_step']})"
        elif e["kind"] == "fail":
            what = ((e.get("detail") or {}).get("error") or "").strip().splitlines()[-1:] or [""]
            what = what[0]
        rows.append({"kind": e["kind"], "member": e["member_id"], "step": e["step"],
                     "what": what})
    return rows


def summary(result: Result) -> str:
    best = result.best_member
    return (f"run {result.run['name']} · {result.run['status']} · {len(result.members)} "
            f"members · {len(result.intervals)} intervals · {len(result.exploits)} exploits "
            f"· {result.settings.steps} steps each · best member {best['member_id']} "
            f"score {fmt(best['score'])}")


def make_app(run_dir: str | Path, storage: str | None = None, interval_s: float = 2.0) -> Any:
    """The Dash app for one run; every ``interval_s`` it reloads the run and redraws."""
    from dash import Dash, Input, Output, dcc, html

    Result.load(run_dir, storage)  # a bad path or URL fails here, before serving
    app = Dash(__name__, title="torchpbt dashboard")
    cell = {"textAlign": "left", "fontFamily": "monospace", "fontSize": 12,
            "padding": "2px 10px", "borderBottom": "1px solid #ddd"}

    def table(rows: list[dict[str, Any]]) -> Any:
        if not rows:
            return html.P("none yet")
        head = html.Thead(html.Tr([html.Th(c, style=cell) for c in rows[0]]))
        body = html.Tbody([html.Tr([html.Td(str(v), style=cell) for v in r.values()])
                           for r in rows])
        return html.Table([head, body], style={"borderCollapse": "collapse"})

    app.layout = html.Div([
        html.H2("torchpbt"), html.Div(id="summary"),
        dcc.Interval(id="tick", interval=int(interval_s * 1000)),
        dcc.Graph(id="lineage"), dcc.Graph(id="scores"),
        html.H3("members"), html.Div(id="members"),
        dcc.Graph(id="hparams"),
        html.H3("latest events"), html.Div(id="events"),
    ], style={"fontFamily": "sans-serif", "margin": "1em 2em"})

    @app.callback(Output("summary", "children"), Output("members", "children"),
                  Output("events", "children"), Output("lineage", "figure"),
                  Output("scores", "figure"), Output("hparams", "figure"),
                  Input("tick", "n_intervals"))
    def refresh(_: Any) -> tuple[Any, ...]:
        result = Result.load(run_dir, storage)
        members = member_rows(result)
        return (summary(result), table(members), table(event_rows(result)),
                lineage_figure(result), scores_figure(result), hparams_figure(result))

    return app


def serve(run_dir: str | Path, storage: str | None = None, port: int = 8050,
          host: str = "127.0.0.1", interval_s: float = 2.0) -> None:
    import logging

    app = make_app(run_dir, storage, interval_s)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    print(f"torchpbt dashboard: http://{host}:{port}/  (Ctrl-C stops it)", flush=True)
    app.run(host=host, port=port, debug=False)
