"""A run's records as flat tables: one row per interval, score or event.

One flattening serves :meth:`Result.dataframe` (pandas) and ``torchpbt export``
(CSV, JSON), so a column means the same thing in both: each hparam is its own
column (``hparams.lr``; ``old_hparams.lr`` and ``operations.lr`` on events), and
other nested values are JSON text.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..store.sql import strict_json

if TYPE_CHECKING:
    import pandas

    from .result import Result

KINDS = ("intervals", "scores", "events")
_SPREAD = ("hparams", "old_hparams", "new_hparams", "operations")


def flat(row: dict[str, Any]) -> dict[str, Any]:
    """One column per hparam/operation; other nested values as JSON text."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, dict) and k in _SPREAD:
            for hk, hv in v.items():
                out[f"{k}.{hk}"] = hv
        elif isinstance(v, (dict, list)):
            out[k] = json.dumps(strict_json(v))
        else:
            out[k] = v
    return out


def table(result: Result, kind: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The columns (in first-seen order) and the flat rows of one kind of record."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: choose one of {', '.join(map(repr, KINDS))}.")
    rows = [flat(r) for r in getattr(result, kind)]
    cols: dict[str, None] = {}
    for r in rows:
        cols.update(dict.fromkeys(r))
    return list(cols), rows


def dataframe(result: Result, kind: str) -> pandas.DataFrame:
    columns, rows = table(result, kind)  # the kind is checked before pandas is needed
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("Result.dataframe needs pandas: pip install 'torchpbt[dataframe]' "
                          "(or pip install pandas).") from None
    return pd.DataFrame(rows, columns=columns)


def export(result: Result, fmt: str, out: Path) -> list[Path]:
    """Write every interval, score and event (``csv``: a file per kind; ``json``: one
    file with the run and its members too); return the files written."""
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        doc = {"run": result.run, "members": result.members,
               **{k: getattr(result, k) for k in KINDS}}
        target = out / "run.json"
        target.write_text(json.dumps(strict_json(doc), indent=1))
        return [target]
    written = []
    for kind in KINDS:
        columns, rows = table(result, kind)
        target = out / f"{kind}.csv"
        with target.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns)
            w.writeheader()
            w.writerows(rows)
        written.append(target)
    return written
