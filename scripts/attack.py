"""The attack run of issue 19 as one command (`make attack`), bounded in time, on 127.0.0.1 only:

1. a small signed model (trained here in ~20 s, or `--run RUN`),
2. hostile-request fuzzing of a real `jointcredit serve` (tests/attacks/fuzz_decisions.py's
   requests over HTTP): requests sent, status counts, 5xx and dropped connections,
3. kill -9 durability trials (scripts/attack_kill.py): acknowledged vs logged decisions,
4. tampering of a decision log and attacks on the model artifact (scripts/attack_files.py),
5. the attack suite's tampering and artifact tests (pytest).

Writes OUT/summary.json and OUT/summary.md, prints the table; exits 1 if any goal is missed
(a 5xx or dropped connection, fewer requests sent than asked, an acknowledged decision not
logged, a failed `audit verify`, a tampering not caught, an attack not refused, a failed
test) and 2 on bad arguments.

    .venv/bin/python scripts/attack.py [--minutes 15] [--requests 100000] [--trials 3]
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from attack_serve import HOST, Model, Server, client, kill_all

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "attacks"))
import fuzz_decisions  # noqa: E402
from attack_files import attack_artifact, make_log, tamper_log  # noqa: E402
from attack_kill import SETUPS, audit_verify, run_trials  # noqa: E402

from jointcredit.service.auth import new_key  # noqa: E402
from jointcredit.trust.pins import HOME_ENV, pinned_key, record_pin  # noqa: E402

ISSUE_BAR = 100_000  # fuzz requests issue 19 asks for
GRACE = 300  # seconds past --minutes before the run is stopped
MARK = ".attack-run"
SUITE = ["test_audit_truncation.py", "test_rollback.py", "test_unpinned_trust.py",
         "test_hostile_cli.py", "test_files.py", "test_review_race.py"]  # fmt: skip


def _say(text: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


def model_run(args: argparse.Namespace, out: Path) -> Path:
    """The run to attack: `--run`, or a 3-lender logistic run trained now."""
    if args.run is not None:
        trust = json.loads((args.run / "trust.json").read_bytes())
        if pinned_key(trust["federation"]) is None:
            # The operator named this run: its coordinator key is the one to expect.
            record_pin(trust["federation"], trust["coordinator"]["key_id"])
            _say(f"pinned {trust['federation']} to the key {args.run}/trust.json names")
        return Path(args.run)
    run = out / "run"
    _say("training a small signed model (3 synthetic lenders, logistic, 2 rounds)")
    cmd = [sys.executable, "-m", "jointcredit.cli", "simulate", "--dataset", "synthetic",
           "--institutions", "3", "--model", "logreg", "--rounds", "2", "--no-baselines",
           "--no-audit", "--out", str(run), "--force"]  # fmt: skip
    with (out / "simulate.log").open("wb") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True, timeout=600)
    return run


def _fuzz_worker(base: str, token: str, requests: int, seed: int, deadline: float,
                 results: Any) -> None:  # fmt: skip
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler: just end
    with client(base, timeout=60) as http:
        statuses = fuzz_decisions.fuzz(http, {"Authorization": f"Bearer {token}"}, requests,
                                       seed, deadline)  # fmt: skip
    results.put(dict(statuses))


def fuzz(model: Model, token: str, out: Path, requests: int, clients: int,
         deadline: float) -> dict[str, Any]:  # fmt: skip
    """`requests` hostile requests from `clients` processes to one `serve` (one worker)."""
    d = out / "fuzz"
    d.mkdir()
    server = Server(model, d / "decisions.sqlite", d / "serve.log").start()
    start = time.monotonic()
    procs: list[multiprocessing.Process] = []
    try:
        server.wait_ready()
        results: Any = multiprocessing.Queue()
        shares = [requests // clients + (k < requests % clients) for k in range(clients)]
        procs += [multiprocessing.Process(target=_fuzz_worker,
                                         args=(server.base, token, n, 1000 + k, deadline, results))
                 for k, n in enumerate(shares)]  # fmt: skip
        for p in procs:
            p.daemon = True  # ended with this process, whatever ends it
        for p in procs:
            p.start()
        statuses: collections.Counter[int] = collections.Counter()
        for _ in procs:  # a worker that died sends nothing: wait past its deadline, no longer
            statuses.update(results.get(timeout=max(0.0, deadline - time.monotonic()) + 120))
        for p in procs:
            p.join()
        alive = server.proc is not None and server.proc.poll() is None
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        server.stop()
    seconds = time.monotonic() - start
    verified, output = audit_verify(server)
    sent = sum(statuses.values())
    return {
        "requested": requests, "sent": sent, "seconds": round(seconds, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "server_errors_5xx": sum(n for s, n in statuses.items() if s >= 500),
        "dropped_connections": statuses.get(fuzz_decisions.DROPPED, 0),
        "server_alive_after": alive,
        "tracebacks_in_server_log": server.log.read_text(errors="replace").count("Traceback"),
        "audit_verify_ok": verified, "audit_verify": output.splitlines()[-1:],
    }  # fmt: skip


def kill_trials(model: Model, token: str, out: Path, trials: int, setups: list[str],
                deadline: float) -> dict[str, Any]:  # fmt: skip
    done = run_trials(model, token, out / "kill", trials, deadline, setups)
    per: dict[str, dict[str, Any]] = {}
    for t in done:
        s = per.setdefault(t.setup, {"trials": 0})
        s["trials"] += 1
        s["acknowledged"], s["logged"] = t.acknowledged, t.logged  # cumulative per setup
        s["lost"], s["other_outcome"] = t.lost, t.other_outcome  # checked after each trial
    return {
        "trials_requested": trials * len(setups), "trials": len(done),
        "acknowledged": sum(s["acknowledged"] for s in per.values()),
        "logged": sum(s["logged"] for s in per.values()),
        "lost": sum(len(s["lost"]) for s in per.values()),
        "other_outcome": sum(len(s["other_outcome"]) for s in per.values()),
        "audit_verify_failures": sum(not t.verify_ok for t in done),
        "restarts_not_deciding": sum(not t.decides_after_restart for t in done),
        "setups": per, "runs": [asdict(t) for t in done],
    }  # fmt: skip


def files(model: Model, run: Path, token: str, out: Path) -> dict[str, Any]:
    """Tampering of a log a real service wrote, and attacks on the run's artifact."""
    d = out / "tamper"
    d.mkdir()
    server = make_log(model, token, d)
    log_control, log_cases = tamper_log(server)
    artifact_controls, artifact_cases = attack_artifact(run)
    return {
        "tampering": {
            "cases": len(log_cases), "caught": sum(c.caught for c in log_cases),
            "untouched_log_verifies": not log_control.caught,
            "truncations_caught_by_chain_alone": sum(
                bool(c.chain_alone_caught) for c in log_cases if c.chain_alone_caught is not None
            ),
            "needing_anchors": sum(c.chain_alone_caught is not None for c in log_cases),
            "results": [asdict(c) for c in [log_control, *log_cases]],
        },
        "artifact": {
            "cases": len(artifact_cases), "refused": sum(c.caught for c in artifact_cases),
            "untouched_model_accepted": not any(c.caught for c in artifact_controls),
            "results": [asdict(c) for c in [*artifact_controls, *artifact_cases]],
        },
    }  # fmt: skip


def suite(out: Path, deadline: float) -> dict[str, Any]:
    """The attack suite's tampering and artifact tests, counted from pytest's JUnit XML."""
    xml = out / "suite.xml"
    cmd = [sys.executable, "-m", "pytest", *(f"tests/attacks/{f}" for f in SUITE), "-q",
           "-p", "no:cacheprovider", f"--junitxml={xml}"]  # fmt: skip
    start = time.monotonic()
    try:
        with (out / "suite.log").open("wb") as log:
            limit = max(1.0, deadline - time.monotonic())
            done = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=limit)  # fmt: skip
        code = done.returncode
    except subprocess.TimeoutExpired:
        return {"files": SUITE, "completed": False, "exit_code": None}
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if xml.is_file():
        for node in ET.parse(xml).getroot().iter("testsuite"):
            for k in counts:
                counts[k] += int(node.get(k, 0))
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {"files": SUITE, "completed": True, "exit_code": code, "passed": passed, **counts,
            "seconds": round(time.monotonic() - start, 1)}  # fmt: skip


def goals(summary: dict[str, Any]) -> list[str]:
    """Every goal the run missed, in words (empty: all met)."""
    missed = [summary["aborted"]] if "aborted" in summary else []
    missed += [f"{k}: {e}" for k, e in summary.get("errors", {}).items()]
    f = summary.get("fuzz")
    if f is None:
        missed.append("fuzzing did not run")
    else:
        if f["server_errors_5xx"] or f["dropped_connections"]:
            missed.append(f"fuzz: {f['server_errors_5xx']} 5xx, {f['dropped_connections']} "
                          "dropped connections")  # fmt: skip
        if f["sent"] < f["requested"]:
            missed.append(f"fuzz: {f['sent']} of {f['requested']} requests sent in time")
        if not f["server_alive_after"] or not f["audit_verify_ok"]:
            missed.append("fuzz: the server died or its log does not verify")
        if f["tracebacks_in_server_log"]:
            missed.append(f"fuzz: {f['tracebacks_in_server_log']} tracebacks in the server's log")
    k = summary.get("kill")
    if k is None or k["trials"] < k["trials_requested"]:
        missed.append("kill -9: not every trial ran" if k else "kill -9 trials did not run")
    if k and (k["lost"] or k["other_outcome"] or k["audit_verify_failures"]
              or k["restarts_not_deciding"]):  # fmt: skip
        missed.append(f"kill -9: {k['lost']} acknowledged decisions lost, "
                      f"{k['other_outcome']} logged with another outcome, "
                      f"{k['audit_verify_failures']} failed audit verify, "
                      f"{k['restarts_not_deciding']} restarts not deciding")  # fmt: skip
    t = summary.get("files")
    if t is None:
        missed.append("tampering and artifact attacks did not run")
    else:
        tam, art = t["tampering"], t["artifact"]
        if tam["caught"] < tam["cases"] or not tam["untouched_log_verifies"]:
            missed.append(f"tampering: {tam['caught']} of {tam['cases']} caught")
        if art["refused"] < art["cases"] or not art["untouched_model_accepted"]:
            missed.append(f"artifact: {art['refused']} of {art['cases']} refused")
    s = summary.get("suite")
    if s is not None and (not s["completed"] or s["exit_code"] != 0):
        missed.append("attack suite: did not pass (see suite.log)")
    return missed


def table(summary: dict[str, Any]) -> str:
    rows = [("what", "goal", "measured")]
    f = summary.get("fuzz")
    if f:
        rows.append(
            (
                "fuzz requests sent (hostile values, three endpoints)",
                f">= {ISSUE_BAR:,}",
                f"{f['sent']:,} in {f['seconds']:.0f} s",
            )
        )
        rows.append(
            (
                "5xx / dropped connections",
                "0 / 0",
                f"{f['server_errors_5xx']} / {f['dropped_connections']}",
            )
        )
        rows.append(("statuses", "", ", ".join(f"{k}: {v:,}" for k, v in f["statuses"].items())))
    k = summary.get("kill")
    if k:
        per = "; ".join(
            f"{n}: {s['trials']} trials, {s['acknowledged']:,} acknowledged, {len(s['lost'])} lost"
            for n, s in k["setups"].items()
        )
        rows.append(("kill -9 trials", "", f"{k['trials']} ({per})"))
        rows.append(
            (
                "acknowledged decisions not in the log (in it with another outcome)",
                "0 (0)",
                f"{k['lost']} ({k['other_outcome']}) of {k['acknowledged']:,}",
            )
        )
        rows.append(
            (
                "`audit verify --anchors` after each restart",
                "OK every time",
                f"{k['trials'] - k['audit_verify_failures']} of {k['trials']} OK",
            )
        )
    t = summary.get("files")
    if t:
        tam, art = t["tampering"], t["artifact"]
        rows.append(
            (
                "decision-log tampering cases caught",
                "all",
                f"{tam['caught']} of {tam['cases']} (of the {tam['needing_anchors']} "
                "truncations and consistent rewrites, the hash chain alone caught "
                f"{tam['truncations_caught_by_chain_alone']}, the anchors all)",
            )
        )
        rows.append(
            ("model-artifact attacks refused", "all", f"{art['refused']} of {art['cases']}")
        )
    s = summary.get("suite")
    if s:
        measured = (
            f"{s['passed']} passed, {s['failures'] + s['errors']} failed, {s['skipped']} skipped"
            if s["completed"]
            else "did not finish"
        )
        rows.append(
            ("attack-suite tests (tampering, artifacts, files, review race)", "all pass", measured)
        )
    lines = [f"| {' | '.join(r)} |" for r in rows]
    lines.insert(1, "|---|---|---|")
    return "\n".join(lines)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="total time budget")
    parser.add_argument("--requests", type=int, default=ISSUE_BAR, help="fuzz requests")
    parser.add_argument("--fuzz-clients", type=int, default=2, help="fuzzing processes")
    parser.add_argument("--trials", type=int, default=3, help="kill -9 trials per setup")
    parser.add_argument(
        "--setups",
        default=",".join(SETUPS),
        help=f"kill -9 setups, comma-separated (of {', '.join(SETUPS)})",
    )
    parser.add_argument("--run", type=Path, help="attack this run (model/, trust.json)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "attack")
    parser.add_argument("--no-suite", action="store_true", help="skip the pytest files")
    args = parser.parse_args()
    if args.minutes <= 0 or args.requests < 1 or args.trials < 1 or args.fuzz_clients < 1:
        parser.error("--minutes, --requests, --trials and --fuzz-clients must be positive")
    setups = args.setups.split(",")
    if not setups or not set(setups) <= set(SETUPS):
        parser.error(f"--setups: choose from {', '.join(SETUPS)}")
    if args.run is not None and not (args.run / "model").is_dir():
        parser.error(f"--run {args.run}: no model/ in it")
    out: Path = args.out
    if out.exists() and any(out.iterdir()) and not (out / MARK).exists():
        parser.error(f"--out {out}: not empty and not an attack run's directory")
    start = time.monotonic()
    deadline = start + args.minutes * 60
    _fresh(out, args.run)
    # Pins of the federation trained here stay in this run's directory, not ~/.jointcredit.
    os.environ.setdefault(HOME_ENV, str(out / "home"))
    summary: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"), "host": HOST,
        "budget_minutes": args.minutes, "issue_bar_requests": ISSUE_BAR,
    }  # fmt: skip
    # A hard stop well past the budget: one phase overrunning (a hung server, say) must not
    # keep the command running; whatever finished is still reported.
    signal.signal(signal.SIGALRM, _out_of_time)
    signal.signal(signal.SIGTERM, _out_of_time)
    signal.alarm(int(args.minutes * 60) + GRACE)
    try:
        _phases(args, setups, out, deadline, summary)
    except OutOfTime as exc:
        summary["aborted"] = str(exc)
    finally:
        signal.alarm(0)
        kill_all()
    summary["seconds"] = round(time.monotonic() - start, 1)
    summary["missed"] = missed = goals(summary)
    text = table(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "summary.md").write_text(text + "\n")
    print(text)
    if args.requests < ISSUE_BAR:
        print(f"(--requests {args.requests:,}: below issue 19's bar of {ISSUE_BAR:,})")
    print("goals met" if not missed else "MISSED: " + "; ".join(missed))
    print(f"{summary['seconds']:.0f} s; {out / 'summary.json'}")
    return 1 if missed else 0


class OutOfTime(BaseException):  # not caught by the phases' own `except Exception`
    pass


def _out_of_time(signum: int, frame: object) -> None:
    why = f"ran {GRACE} s past its budget" if signum == signal.SIGALRM else "told to stop"
    raise OutOfTime(f"stopped ({signal.Signals(signum).name}): {why}")


def _fresh(out: Path, run: Path | None) -> None:
    """An empty OUT (marked as an attack run's), keeping `run` and the pins if inside it."""
    out.mkdir(parents=True, exist_ok=True)
    keep = {out / "home"} | ({run.resolve()} if run is not None else set())
    for child in out.iterdir():
        if child.resolve() in keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    (out / MARK).write_text("made by scripts/attack.py; emptied by its next run\n")


def _phases(args: argparse.Namespace, setups: list[str], out: Path, deadline: float,
            summary: dict[str, Any]) -> None:  # fmt: skip
    run = model_run(args, out)
    model = Model(run / "model", run / "trust.json", out / "keys.json")
    token = new_key(model.api_keys, "bank-a")

    def left() -> float:
        return deadline - time.monotonic()

    def phase(key: str, what: str, work: Callable[[], dict[str, Any]]) -> None:
        _say(what)
        try:
            summary[key] = work()
        except Exception as exc:  # reported as a missed goal; the other phases still run
            summary.setdefault("errors", {})[key] = f"{type(exc).__name__}: {exc}"
            _say(f"  {key} failed: {exc}")

    phase("fuzz", f"fuzzing: {args.requests:,} hostile requests, {args.fuzz_clients} clients",
          lambda: fuzz(model, token, out, args.requests, args.fuzz_clients,
                       time.monotonic() + 0.5 * left()))  # fmt: skip
    if "fuzz" in summary:
        _say(f"  {summary['fuzz']['sent']:,} sent, statuses {summary['fuzz']['statuses']}")
    phase("kill", f"kill -9 trials: {args.trials} per setup ({', '.join(setups)})",
          lambda: kill_trials(model, token, out, args.trials, setups,
                              time.monotonic() + 0.6 * left()))  # fmt: skip
    if left() > 0:
        phase("files", "tampering and artifact attacks", lambda: files(model, run, token, out))
    if not args.no_suite and left() > 0:
        phase("suite", "attack suite: " + " ".join(SUITE), lambda: suite(out, deadline))


if __name__ == "__main__":
    sys.exit(main())
