import os
import sys

sys.path.insert(0, os.path.dirname(__file__))  # tests/helpers.py, also for spawned workers

from pg import pg_server, pg_url, store_url  # noqa: E402, F401  (fixtures)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say it in capitals when the PostgreSQL half of the suite did not run."""
    skipped = terminalreporter.stats.get("skipped", [])
    if any("POSTGRESQL TESTS NOT RUN" in str(getattr(r, "longrepr", "")) for r in skipped):
        terminalreporter.write_sep("!", "PostgreSQL store tests were SKIPPED (see reasons above)",
                                   red=True, bold=True)
