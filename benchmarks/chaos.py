"""Chaos soak: the local backend under random faults, and the log still adds up.

Each run trains a population with ``backend="local"`` (2 worker processes)
while faults are injected at random:

* worker kills: a member's train() SIGKILLs (or ``os._exit``s) its own process;
* NaNs: a member's train() returns a NaN loss;
* corrupted checkpoints: a thread in this process flips a byte in, truncates or
  deletes a random checkpoint file while the run goes on;
* one controller kill per run: the controller runs in a child process that
  SIGKILLs itself at a random committed step (``TORCHPBT_CRASH_AT``); this
  process then resumes the run with ``torchpbt.resume``.

Faults are drawn with ``random.SystemRandom``, not the seeded generators, so a
retried interval is not doomed to repeat its fault. Reported per run and in
total: faults injected and survived, runs completed, and **events lost**: every
problem ``torchpbt.check_log`` finds (an interval that does not follow its
member's decisions, a decision that follows no interval, a final model not
exactly ``steps`` old) plus members not done. Then two more parts: runs whose every interval fails (they must stop
loudly, marked failed) and runs with deduplicated checkpoints racing a slowed
deleter (serial logs identical run to run, nothing lost on the local backend).
The goals are: every run completes or stops as it must, and nothing is lost.

    python benchmarks/chaos.py            # 5 runs × 6 members × 30 intervals
    python benchmarks/chaos.py --quick
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import _common as C
import torch
import torch.nn.functional as F
from torch import nn

import torchpbt as pbt

NAME = "chaos"
SPACE = {"lr": pbt.Float(1e-3, 0.5, log=True), "momentum": pbt.Float(0.0, 0.95)}


class ChaosMember(pbt.TorchMember):
    """A small MLP on Gaussian blobs whose train() injects faults at the rates in the env."""

    def setup(self, hparams):
        g = torch.Generator().manual_seed(0)
        y = torch.randint(0, 4, (512,), generator=g)
        centers = torch.randn(4, 8, generator=g) * 2
        self.x, self.y = centers[y] + torch.randn(512, 8, generator=g), y
        self.model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=hparams["lr"],
                                         momentum=hparams["momentum"])

    def train(self, steps):
        chance = random.SystemRandom()
        if chance.random() < float(os.environ.get("CHAOS_KILL", 0)):
            _log("kill")
            if chance.random() < 0.5:
                os.kill(os.getpid(), signal.SIGKILL)
            os._exit(3)
        for _ in range(steps):
            idx = torch.randint(len(self.y), (32,))
            loss = F.cross_entropy(self.model(self.x[idx]), self.y[idx])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        time.sleep(0.02)  # a little wall time per interval, so the corruption thread races it
        if chance.random() < float(os.environ.get("CHAOS_NAN", 0)):
            _log("nan")
            return float("nan")
        return loss.item()

    def evaluate(self):
        with torch.no_grad():
            return (self.model(self.x).argmax(1) == self.y).float().mean().item()


class FailingMember(ChaosMember):
    """Every interval fails: the run must stop loudly, not end as "done"."""

    def train(self, steps):
        raise RuntimeError("chaos: this member always fails")


class DedupMember(pbt.Member):
    """Weights take one of 4 values: members keep writing files that were collected a
    moment ago (dedup'd checkpoints), racing the deleter."""

    def setup(self, hparams):
        self.w = 0

    def train(self, steps):
        self.w = (self.w + (1 if self.hparams["lr"] > 0.05 else 2)) % 4
        return 0.0

    def evaluate(self):
        return self.hparams["lr"] + 0.1 * self.w

    def state_dict(self):
        return {"w": self.w}

    def load_state_dict(self, state):
        self.w = int(state["w"])


def _log(kind: str) -> None:
    path = os.environ.get("CHAOS_LOG")
    if path:
        with open(path, "a") as f:  # one short O_APPEND write per fault: safe across processes
            f.write(f"{kind} {os.getpid()}\n")


class Corrupter(threading.Thread):
    """Damages a random checkpoint file every ``every`` seconds until stopped."""

    def __init__(self, run_dir: Path, every: float, log: Path) -> None:
        super().__init__(daemon=True)
        self.dir, self.every, self.log = run_dir / "checkpoints", every, log
        self.stop = threading.Event()

    def run(self) -> None:
        chance = random.SystemRandom()
        while not self.stop.wait(self.every * chance.uniform(0.5, 1.5)):
            files = [p for p in self.dir.glob("*.pt")] if self.dir.exists() else []
            if not files:
                continue
            target = chance.choice(files)
            how = chance.choice(["flip", "truncate", "delete"])
            try:
                if how == "delete":
                    target.unlink()
                else:
                    raw = bytearray(target.read_bytes())
                    if how == "truncate":
                        raw = raw[: len(raw) // 2]
                    else:
                        raw[len(raw) // 2] ^= 0xFF
                    target.write_bytes(bytes(raw))
            except FileNotFoundError:  # garbage-collected meanwhile: not an injected fault
                continue
            with open(self.log, "a") as f:
                f.write(f"corrupt {target.stem[:12]} {how}\n")


CHILD = """
import sys
sys.path.insert(0, {bench!r})
import torchpbt as pbt
from chaos import SPACE, ChaosMember

if __name__ == "__main__":
    pbt.run(ChaosMember, SPACE, population={population}, ready_every={ready_every},
            steps={steps}, seed={seed}, backend="local", workers=2, max_retries=3,
            exploit=pbt.Truncation(0.25), progress=False, run_dir={run_dir!r})
"""


def audit(result: pbt.Result, steps: int) -> dict[str, int]:
    """Count what the store says happened, and everything missing from it."""
    # each member's chain of intervals must follow its decisions (a copy continues from
    # the donor's checkpoint at the donor's age), from 0 to exactly ``steps``
    problems = pbt.check_log(result.intervals, result.events, steps)
    lost = len(problems) + sum(m["status"] != "done" for m in result.members)
    fails = [e for e in result.events if e["kind"] == "fail"]
    return {
        "events_lost": lost, "problems": problems[:5],
        "retries": sum(e["kind"] == "retry" for e in result.events),
        "fail_died": sum("died" in (e["detail"].get("error") or "") for e in fails),
        "fail_nan": sum("is nan" in (e["detail"].get("error") or "") for e in fails),
        "fail_bad_checkpoint": sum("bad_checkpoint" in e["detail"] for e in fails),
        "resumes": sum(e["kind"] == "resume" for e in result.events),
        "intervals": len(result.intervals),
    }


def dangling(result: pbt.Result, ends: set | None = None) -> int:
    """Decisions that follow no recorded interval end."""
    ends = ends if ends is not None else {(i["member_id"], i["end_step"])
                                          for i in result.intervals}
    return sum(1 for e in result.events
               if e["kind"] in ("continue", "exploit", "explore", "reinit", "stop", "fail")
               and e["step"] > 0 and (e["member_id"], e["step"]) not in ends)


def failing_run(seed: int, cfg: dict) -> dict:
    """All members always fail (local backend): the run must stop as failed, saying why."""
    with C.temp_run_dir(f"chaos-fail-{seed}") as tmp:
        try:
            pbt.run(FailingMember, SPACE, population=cfg["population"], steps=cfg["steps"],
                    ready_every=cfg["ready_every"], seed=seed, backend="local", workers=2,
                    progress=False, run_dir=tmp / "run")
            raised = ""
        except pbt.NoProgress as exc:
            raised = str(exc)
        result = pbt.load(tmp / "run")
        stopped = (result.run.get("scheduler_state") or {}).get("stopped") or ""
        return {"seed": seed, "part": "all_failing", "status": result.run["status"],
                "stopped_loudly": int(result.run["status"] == "failed" and bool(raised)
                                      and "always fails" in stopped),
                "intervals": len(result.intervals), "events_lost": dangling(result)}


def dedup_runs(seed: int, cfg: dict) -> dict:
    """Two identical serial runs with dedup'd checkpoints on a slow disk: the same log,
    no interval re-run; then one local run of the same members: nothing lost."""
    slow = pbt.CheckpointDir.delete

    def slow_delete(self, key):  # a slow disk: the background deleter lags behind
        time.sleep(0.002)
        slow(self, key)

    logs, lost, retries = [], 0, 0
    pbt.CheckpointDir.delete = slow_delete
    try:
        with C.temp_run_dir(f"chaos-dedup-{seed}") as tmp:
            for i, backend in enumerate(("serial", "serial", "local")):
                r = pbt.run(DedupMember, {"lr": pbt.Float(0.0, 0.1)}, population=12,
                            steps=cfg["steps"], ready_every=5, seed=seed, backend=backend,
                            workers=2, progress=False, run_dir=tmp / f"r{i}")
                lost += len(pbt.check_log(r.intervals, r.events, cfg["steps"])) + sum(
                    m["status"] != "done" for m in r.members)
                retries += backend == "serial" and sum(e["kind"] == "retry" for e in r.events)
                if backend == "serial":
                    logs.append([(e["kind"], e["member_id"], e["step"], e["donor_id"])
                                 for e in r.events])
    finally:
        pbt.CheckpointDir.delete = slow
    return {"seed": seed, "part": "dedup", "serial_logs_equal": int(logs[0] == logs[1]),
            "serial_retries": retries, "events": len(logs[0]), "events_lost": lost}


def one_run(seed: int, cfg: dict, bar, task) -> dict:
    bench = str(Path(__file__).resolve().parent)
    chance = random.SystemRandom()
    with C.temp_run_dir(f"chaos-{seed}") as tmp:
        run_dir, log = tmp / "run", tmp / "faults.log"
        log.touch()
        env = {**os.environ, "CHAOS_KILL": str(cfg["kill"]), "CHAOS_NAN": str(cfg["nan"]),
               "CHAOS_LOG": str(log), "PYTHONPATH": bench}
        os.environ.update({k: env[k] for k in ("CHAOS_KILL", "CHAOS_NAN", "CHAOS_LOG")})
        total_intervals = cfg["population"] * cfg["steps"] // cfg["ready_every"]
        crash_at = chance.randint(total_intervals // 4, total_intervals // 2)
        script = tmp / "child.py"
        script.write_text(CHILD.format(bench=bench, run_dir=str(run_dir), seed=seed, **{
            k: cfg[k] for k in ("population", "ready_every", "steps")}))
        corrupter = Corrupter(run_dir, cfg["corrupt_every"], log)
        corrupter.start()
        t0 = time.perf_counter()
        child = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                               env={**env, "TORCHPBT_CRASH_AT": f"after_commit:{crash_at}"})
        controller_killed = child.returncode == -signal.SIGKILL
        completed, error = True, None
        try:
            result = pbt.resume(run_dir, member=ChaosMember, progress=False)
            completed = result.run["status"] == "done"
        except Exception as exc:  # a run that does not finish is reported, not hidden
            completed, error = False, f"{type(exc).__name__}: {exc}"
            result = pbt.load(run_dir)
        corrupter.stop.set()
        corrupter.join()
        faults = log.read_text().split()
        row = {
            "seed": seed, "seconds": round(time.perf_counter() - t0, 1),
            "controller_killed": int(controller_killed), "child_returncode": child.returncode,
            "worker_kills": faults.count("kill"), "nans": faults.count("nan"),
            "corruptions": faults.count("corrupt"), "completed": int(completed),
            **audit(result, cfg["steps"]),
        }
        if error:
            row["error"] = error
        if not controller_killed:
            row["child_stderr"] = child.stderr[-1500:]
        bar.advance(task)
        return row


def main(argv=None) -> int:
    args = C.parse_args(__doc__.splitlines()[0], argv)
    cfg = {"runs": 2 if args.quick else 5, "population": 4 if args.quick else 6,
           "ready_every": 10, "steps": 150 if args.quick else 300, "kill": 0.04, "nan": 0.04,
           "corrupt_every": 1.5, "max_retries": 3, "workers": 2}
    rows, extra = [], []
    with C.progress() as bar:
        task = bar.add_task("chaos runs", total=cfg["runs"])
        for seed in range(cfg["runs"]):
            rows.append(one_run(seed, cfg, bar, task))
        for seed in range(2):
            extra += [failing_run(seed, cfg), dedup_runs(seed, cfg)]
    failing = [r for r in extra if r["part"] == "all_failing"]
    dedup = [r for r in extra if r["part"] == "dedup"]
    injected = sum(r["worker_kills"] + r["nans"] + r["corruptions"] + r["controller_killed"]
                   for r in rows)
    completed = sum(r["completed"] for r in rows)
    summary = {
        "runs": len(rows), "runs_completed": completed,
        "faults_injected": injected,
        "faults_survived": injected if completed == len(rows) else 0,
        "worker_kills": sum(r["worker_kills"] for r in rows),
        "nans": sum(r["nans"] for r in rows),
        "corrupted_checkpoints": sum(r["corruptions"] for r in rows),
        "controller_kills": sum(r["controller_killed"] for r in rows),
        "events_lost": sum(r["events_lost"] for r in rows + extra),
        "all_failing_runs": len(failing),
        "all_failing_stopped_loudly": sum(r["stopped_loudly"] for r in failing),
        "dedup_serial_logs_equal": sum(r["serial_logs_equal"] for r in dedup),
        "dedup_serial_retries": sum(r["serial_retries"] for r in dedup),
    }
    goals = {"runs_completed": C.goal(len(rows), "=="), "events_lost": C.goal(0, "=="),
             "all_failing_stopped_loudly": C.goal(len(failing), "=="),
             "dedup_serial_logs_equal": C.goal(len(dedup), "=="),
             "dedup_serial_retries": C.goal(0, "==")}
    notes = ("A fault is survived when its run completes with every member's interval chain "
             "whole. Worker kills break the whole process pool, so every interval running at "
             "that moment is retried (retries > kills). A corrupted checkpoint is only detected "
             "if someone loads it later (fail_bad_checkpoint); an owner that keeps training from "
             "memory, or garbage collection, makes the rest harmless. all_failing: runs whose "
             "every interval raises must stop with NoProgress, status failed and the error as "
             "the reason. dedup: members whose weights coincide share content-addressed files "
             "that the deleter (slowed down) collects and the next interval writes again; two "
             "serial runs must log the same events with no interval re-run, and a local run "
             "must lose nothing.")
    path = C.write_result(NAME, args.quick, config=cfg, summary=summary, goals=goals,
                          runs=rows + extra, notes=notes)
    print(f"wrote {path}")
    for k, v in summary.items():
        print(f"  {k}: {v}")
    met = all(C.goal_met(summary[k], g) for k, g in goals.items())
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
