import os
import sys

# tests/helpers.py and every test folder (one test module may import another's constants),
# also for spawned workers, which inherit sys.path
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_HERE] + sorted(
    os.path.join(_HERE, d) for d in os.listdir(_HERE)
    if os.path.isdir(os.path.join(_HERE, d)) and d not in ("data", "__pycache__"))

from pg import pg_server, pg_url, store_url  # noqa: E402, F401  (fixtures)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say it in capitals when the PostgreSQL half of the suite did not run."""
    skipped = terminalreporter.stats.get("skipped", [])
    if any("POSTGRESQL TESTS NOT RUN" in str(getattr(r, "longrepr", "")) for r in skipped):
        terminalreporter.write_sep("!", "PostgreSQL store tests were SKIPPED (see reasons above)",
                                   red=True, bold=True)
