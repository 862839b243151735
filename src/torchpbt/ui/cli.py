"""``torchpbt`` command line: run an example file, show (or watch) a run's status, export its
log (CSV, JSON, TensorBoard), write its report, resume it, replay a member's schedule."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..analysis.result import Result
from ..analysis.schedule import ScheduleError
from ..analysis.tables import export
from ..backends import BACKENDS, load_module_from_path
from ..store import StoreError
from .display import fmt as fmt_value
from .display import fmt_hparams, last_exploits, members_table


def cmd_run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file() or path.suffix != ".py":
        raise SystemExit(f"torchpbt run: {path} is not a Python file; give e.g. examples/mnist.py.")
    sys.path.insert(0, str(path.resolve().parent))
    module = load_module_from_path(str(path.resolve()))
    main = getattr(module, "main", None)
    if not callable(main):
        raise SystemExit(
            f"torchpbt run: {path} has no main(argv) function; define one that calls torchpbt.run."
        )
    from ..engine.runner import run_overrides

    with run_overrides(storage=args.storage, backend=args.backend, name=args.name,
                       workers=args.workers, worker_timeout=args.worker_timeout):
        main(list(args.args))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from ..backends.worker_service import serve

    if args.threads is not None and args.threads < 1:
        raise SystemExit(f"torchpbt worker: --threads {args.threads}: give a positive int.")
    if args.wait < 0 or not args.poll > 0:
        raise SystemExit("torchpbt worker: --wait must be >= 0 and --poll > 0 seconds.")
    try:
        serve(args.storage, args.run, run_dir=args.run_dir, member=args.member,
              device=args.device, threads=args.threads, wait=args.wait, poll=args.poll,
              log=None if args.quiet else lambda msg: print(msg, flush=True))
    except ValueError as exc:
        raise SystemExit(f"torchpbt worker: {exc}") from None
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from ..engine.resume import resume

    result = resume(args.run_dir, storage=args.storage, backend=args.backend,
                    workers=args.workers, progress=not args.quiet)
    if args.quiet:
        best = result.best_member
        print(f"run {result.run['name']} {result.run['status']}; best member "
              f"{best['member_id']} score {best['score']}")
    return 0


def status_view(result: Result, note: str = "") -> Group:
    """The status of a run as one renderable: header, member table, last failure."""
    parts: list[Any] = [Text.from_markup(
        f"run [bold]{escape(result.run['name'])}[/] — {result.run['status']}, "
        f"{len(result.exploits)} exploits, {result.member_steps} member-steps, "
        f"store {escape(result.storage)}{note}")]
    stopped = (result.run.get("scheduler_state") or {}).get("stopped")
    if stopped:
        parts.append(Text(f"stopped: {stopped}", style="red"))
    last = last_exploits(result.events)
    rows = [{**m, "last_exploit": last.get(m["member_id"])} for m in result.members]
    parts.append(members_table(rows, result.settings.steps))
    failures = [e for e in result.events if e["kind"] == "fail"]
    if failures:
        fail = failures[-1]
        parts.append(Text.from_markup(
            f"[red]{len(failures)} failed interval(s)[/]; last: member "
            f"{fail['member_id']} at step {fail['step']}:"))
        parts.append(Text((fail["detail"] or {}).get("error", "")))
    return Group(*parts)


def watch_status(run_dir: str | Path, storage: str | None = None, interval: float = 2.0,
                 console: Console | None = None) -> int:
    """Show the status every ``interval`` seconds until the run is no longer running
    (or Ctrl-C); return the number of frames shown. On a terminal the table is redrawn
    in place; otherwise (a pipe, a log file) each frame is printed after the last."""
    console = console or Console()
    live = Live(console=console, auto_refresh=False) if console.is_terminal else None
    frames = 0
    try:
        with live if live is not None else contextlib.nullcontext():
            while True:
                result = Result.load(run_dir, storage)
                running = result.run["status"] == "running"
                note = (f" · refreshed {time.strftime('%H:%M:%S')}"
                        + (f", every {interval:g}s (Ctrl-C to stop)" if running else ""))
                view = status_view(result, note)
                frames += 1
                if live is not None:
                    live.update(view, refresh=True)
                else:
                    console.print(view)
                if not running:
                    break
                time.sleep(interval)
    except KeyboardInterrupt:
        pass
    return frames


def _check_interval(args: argparse.Namespace) -> None:
    if args.watch and not args.interval > 0:
        raise SystemExit(f"torchpbt {args.command}: --interval {args.interval:g}: give a "
                         "number of seconds > 0.")


def cmd_status(args: argparse.Namespace) -> int:
    _check_interval(args)
    if args.watch:
        watch_status(args.run_dir, args.storage, args.interval)
        return 0
    Console().print(status_view(Result.load(args.run_dir, args.storage)))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from ..analysis.replay import replay_run

    console = Console()
    table = Table(title="replay", title_justify="left")
    for col in ("steps", "trained as", "original score", "replayed", "same weights",
                "hparams"):
        table.add_column(col, overflow="fold")

    def row(seg: Any, score: float, same: bool | None) -> None:
        table.add_row(f"{seg.from_step}–{seg.to_step}",
                      f"member {seg.member_id} from step {seg.member_step}",
                      "—" if seg.score is None else fmt_value(seg.score), fmt_value(score),
                      {True: "yes", False: "[red]no[/]", None: "—"}[same],
                      fmt_hparams(seg.hparams))

    with console.status("replaying ..."):
        done = replay_run(args.run_dir, args.member, storage=args.storage, device=args.device,
                          on_segment=row)
    console.print(table)
    original, score = done.original_score, done.score
    if original is None:
        verdict = "the original has no score to compare"
    elif score == original:
        verdict = "[green]identical[/]"
    else:
        verdict = f"[yellow]differs by {score - original:+.3g}[/]"
    console.print(f"member {done.schedule.member_id} of run {escape(done.schedule.run or '?')}: "
                  f"replayed score {score!r}, original {original!r}: {verdict}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if args.format == "tensorboard":
        return _export_tensorboard(args)
    if args.watch:
        raise SystemExit("torchpbt export: --watch is for --format tensorboard.")
    result = Result.load(args.run_dir, args.storage)
    out = Path(args.out) if args.out else Path(args.run_dir) / "export"
    for path in export(result, args.format, out):
        print(path)
    return 0


def _export_tensorboard(args: argparse.Namespace) -> int:
    from ..analysis.tensorboard import TensorBoardExport

    _check_interval(args)
    with TensorBoardExport(args.run_dir, args.out, args.storage) as tb:
        while True:
            result = tb.update()
            if not args.watch or result.run["status"] != "running":
                break
            try:
                time.sleep(args.interval)
            except KeyboardInterrupt:
                break
    print(f"{tb.logdir}  (view with: tensorboard --logdir {tb.logdir})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    try:
        print(write_report(args.run_dir, args.storage, args.out))
    except ImportError as exc:  # matplotlib missing: say what to install
        raise SystemExit(f"torchpbt report: {exc}") from exc
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    try:
        from .dashboard import serve
    except ImportError as exc:
        raise SystemExit(f"torchpbt dashboard needs Dash: pip install 'torchpbt[dashboard]' "
                         f"({exc}).") from exc
    if not 0 < args.port < 65536:
        raise SystemExit(f"torchpbt dashboard: --port {args.port} is not a TCP port; give "
                         "one in 1..65535, e.g. 8050.")
    if not args.interval > 0:
        raise SystemExit(f"torchpbt dashboard: --interval {args.interval:g}: give a number "
                         "of seconds > 0.")
    with contextlib.suppress(KeyboardInterrupt):
        serve(args.run_dir, args.storage, port=args.port, host=args.host,
              interval_s=args.interval)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="torchpbt", description="Population Based Training for PyTorch")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run an example/job file (calls its main(argv))")
    r.add_argument("file", help="a .py file defining main(argv)")
    r.add_argument("args", nargs="*", help="arguments for the file, after --")
    r.add_argument("--storage", default=None,
                   help="store URL for the file's run (e.g. postgresql+psycopg://USER@HOST/DB)")
    r.add_argument("--backend", choices=BACKENDS, default=None,
                   help="'workers': queue intervals for `torchpbt worker` processes")
    r.add_argument("--name", default=None, help="run name (workers find the run by it)")
    r.add_argument("--workers", type=int, default=None, help="processes of the local backend")
    r.add_argument("--worker-timeout", type=float, default=None,
                   help="seconds without a heartbeat before a worker's interval is rerun")
    r.set_defaults(fn=cmd_run)
    w = sub.add_parser("worker", help="train a run's queued intervals (backend='workers')")
    w.add_argument("--storage", required=True, help="the run's store URL")
    w.add_argument("--run", required=True, help="the run's name")
    w.add_argument("--run-dir", default=None,
                   help="where the run directory is mounted here (default: its stored path)")
    w.add_argument("--member", default=None,
                   help="FILE.py:Class or module:Class if not importable as stored")
    w.add_argument("--device", default="cpu", help="torch device to train on (default cpu)")
    w.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    w.add_argument("--wait", type=float, default=0.0,
                   help="seconds to wait for the run to be created (default 0)")
    w.add_argument("--poll", type=float, default=0.5,
                   help="longest pause between looks at an empty queue (default 0.5 s)")
    w.add_argument("--quiet", action="store_true", help="no line per interval")
    w.set_defaults(fn=cmd_worker)
    for name, fn, help_ in (("status", cmd_status, "table of a run's members"),
                            ("resume", cmd_resume, "continue a crashed or interrupted run"),
                            ("export", cmd_export, "write intervals, scores and events"),
                            ("replay", cmd_replay,
                             "train one fresh model along a member's schedule"),
                            ("report", cmd_report, "write an HTML report with figures"),
                            ("dashboard", cmd_dashboard,
                             "a live web page of the run (Dash), refreshed as it goes")):
        s = sub.add_parser(name, help=help_)
        s.add_argument("run_dir", help="the run directory (holds torchpbt.db and checkpoints/)")
        s.add_argument("--storage", default=None, help="store URL if not the run directory's SQLite")
        s.set_defaults(fn=fn)
        if name in ("status", "export"):
            s.add_argument("--watch", action="store_true",
                           help="refresh until the run is no longer running (or Ctrl-C)")
            s.add_argument("--interval", type=float, default=2.0,
                           help="seconds between refreshes with --watch (default 2)")
        if name == "resume":
            s.add_argument("--backend", choices=BACKENDS, default=None,
                           help="default: the run's own")
            s.add_argument("--workers", type=int, default=None)
            s.add_argument("--quiet", action="store_true", help="no progress display")
        if name == "export":
            s.add_argument("--format", choices=("csv", "json", "tensorboard"), default="csv")
            s.add_argument("--out", default=None, help="output directory (default "
                           "RUN_DIR/export, RUN_DIR/tensorboard for tensorboard)")
        if name == "replay":
            s.add_argument("--member", type=int, default=None,
                           help="whose weights to replay (default: the best member)")
            s.add_argument("--device", default=None, help="default: the run's first device")
        if name == "report":
            s.add_argument("--out", default=None, help="output directory (default RUN_DIR/report)")
        if name == "dashboard":
            s.add_argument("--port", type=int, default=8050, help="default 8050")
            s.add_argument("--host", default="127.0.0.1",
                           help="address to serve on (default 127.0.0.1: this machine only)")
            s.add_argument("--interval", type=float, default=2.0,
                           help="seconds between refreshes (default 2)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    tail = None
    if argv[:1] == ["run"] and "--" in argv:  # run's own options before --, the file's after
        cut = argv.index("--")
        argv, tail = argv[:cut], argv[cut + 1:]
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.command != "run":
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "run":  # options torchpbt does not know belong to the file
        args.args = [*unknown, *args.args, *(tail or [])]
    try:
        return args.fn(args)
    except (StoreError, ScheduleError) as exc:
        print(f"torchpbt {args.command}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        # bad input found before any work, or a run that stopped and says why: one line
        from ..algorithm.scheduler import NoProgress
        from ..engine.controller import WorkersKeepDying
        from ..engine.validate import BAD_INPUT

        if getattr(exc, BAD_INPUT, False) or isinstance(exc, (NoProgress, WorkersKeepDying)):
            if getattr(exc, "traceback", None):
                print(exc.traceback.rstrip(), file=sys.stderr)  # the first failure, in full
            print(f"torchpbt {args.command}: {exc}", file=sys.stderr)
            return 2 if getattr(exc, BAD_INPUT, False) else 1
        raise
    except KeyboardInterrupt as exc:  # RunInterrupted says how to resume
        print(f"\ntorchpbt {args.command}: {exc or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
