"""``torchpbt`` command line: run an example file, show a run's status, export its log,
write its report."""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from .backends import load_module_from_path
from .display import members_table
from .result import Result
from .store import StoreError

TABLES = ("intervals", "scores", "events")


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
    main(list(args.args))
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from .resume import resume

    result = resume(args.run_dir, storage=args.storage, backend=args.backend,
                    workers=args.workers, progress=not args.quiet)
    if args.quiet:
        best = result.best_member
        print(f"run {result.run['name']} {result.run['status']}; best member "
              f"{best['member_id']} score {best['score']}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    result = Result.load(args.run_dir, args.storage)
    cfg = result.run["config"]
    console = Console()
    console.print(f"run [bold]{result.run['name']}[/] — {result.run['status']}, "
                  f"{len(result.exploits)} exploits, store {result.storage}")
    console.print(members_table(result.members, cfg.get("steps")))
    failures = [e for e in result.events if e["kind"] == "fail"]
    if failures:
        last = failures[-1]
        console.print(f"[red]{len(failures)} failed interval(s)[/]; last: member "
                      f"{last['member_id']} at step {last['step']}:")
        console.print((last["detail"] or {}).get("error", ""), markup=False)
    return 0


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    """One CSV column per hparam/operation; nested values as JSON text."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, dict) and k in ("hparams", "old_hparams", "new_hparams", "operations"):
            for hk, hv in v.items():
                out[f"{k}.{hk}"] = hv
        elif isinstance(v, (dict, list)):
            out[k] = json.dumps(v)
        else:
            out[k] = v
    return out


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_safe(x) for x in v]
    return v


def export(result: Result, fmt: str, out: Path) -> list[Path]:
    """Write every interval, score and event; return the files written."""
    out.mkdir(parents=True, exist_ok=True)
    tables = {t: getattr(result, t) for t in TABLES}
    if fmt == "json":
        doc = {"run": result.run, "members": result.members, **tables}
        target = out / "run.json"
        target.write_text(json.dumps(_json_safe(doc), indent=1))
        return [target]
    written = []
    for name, rows in tables.items():
        flat = [_flat(r) for r in rows]
        cols: list[str] = []
        for r in flat:
            cols += [c for c in r if c not in cols]
        target = out / f"{name}.csv"
        with target.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(flat)
        written.append(target)
    return written


def cmd_export(args: argparse.Namespace) -> int:
    result = Result.load(args.run_dir, args.storage)
    out = Path(args.out) if args.out else Path(args.run_dir) / "export"
    for path in export(result, args.format, out):
        print(path)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    try:
        print(write_report(args.run_dir, args.storage, args.out))
    except ImportError as exc:  # matplotlib missing: say what to install
        raise SystemExit(f"torchpbt report: {exc}") from exc
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="torchpbt", description="Population Based Training for PyTorch")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run an example/job file (calls its main(argv))")
    r.add_argument("file", help="a .py file defining main(argv)")
    r.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the file, after --")
    r.set_defaults(fn=cmd_run)
    for name, fn, help_ in (("status", cmd_status, "table of a run's members"),
                            ("resume", cmd_resume, "continue a crashed or interrupted run"),
                            ("export", cmd_export, "write intervals, scores and events"),
                            ("report", cmd_report, "write an HTML report with figures")):
        s = sub.add_parser(name, help=help_)
        s.add_argument("run_dir", help="the run directory (holds torchpbt.db and checkpoints/)")
        s.add_argument("--storage", default=None, help="store URL if not the run directory's SQLite")
        s.set_defaults(fn=fn)
        if name == "resume":
            s.add_argument("--backend", choices=("serial", "local"), default=None,
                           help="default: the run's own")
            s.add_argument("--workers", type=int, default=None)
            s.add_argument("--quiet", action="store_true", help="no progress display")
        if name == "export":
            s.add_argument("--format", choices=("csv", "json"), default="csv")
            s.add_argument("--out", default=None, help="output directory (default RUN_DIR/export)")
        if name == "report":
            s.add_argument("--out", default=None, help="output directory (default RUN_DIR/report)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "args", None) and args.args[0] == "--":
        args.args = args.args[1:]
    try:
        return args.fn(args)
    except StoreError as exc:
        print(f"torchpbt {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # RunInterrupted says how to resume
        print(f"\ntorchpbt {args.command}: {exc or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
