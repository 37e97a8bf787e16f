"""One fault, end to end: start the rollback flow after a bad deploy, approve it, SIGKILL its
process at one step, let the product recover, rerun it as the page asks, and check the promises.

Steps (what the killed process had done):
* `after_approval` — the approval is recorded in the ledger, nothing sent (test-only pause);
* `during_act`     — the rollback mutation reached Railway and was applied, its answer is held
                     in flight by the sandbox (wire fault railway-timeout-after-apply);
* `after_act`      — Railway answered, the ledger still says `started` (test-only pause);
* `during_verify`  — the ledger says `done`, the verify window is running (timeline polled).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass, field
from typing import Any

from flows.approval_sweeper import sweep_once
from sandbox.handle import SandboxHandle
from tests.faults import harness as h
from tests.runbook.test_safety_core import code_from_slack, waiting_gate

PAUSE = {"after_approval": "approved", "after_act": "acted"}


@dataclass
class Fault:
    sb: SandboxHandle
    pg_url: str
    step: str
    served: bool
    # served only: "tree" kills `serve` and its flow run (Prefect is told nothing); "flow" kills
    # the flow run's process only (the serving process sees it die and marks the run Crashed)
    kill: str = "tree"
    inc: str = field(default_factory=h.incident)
    before: int = 0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def spawn(self, args: list[str], pause: str | None = None) -> subprocess.Popen[bytes]:
        proc = h.spawn(args, h.child_env(pause))
        self.procs.append(proc)
        return proc

    def cleanup(self) -> None:
        for proc in self.procs:
            leftovers = h.descendants(proc.pid) if proc.poll() is None else []
            h.stop(proc)
            for pid in leftovers:  # a flow run the served process started
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    # -- driving -----------------------------------------------------------------------------
    async def approve(self, waiting_run: str | None = None) -> None:
        """Answer the approval like an operator (code from Slack, Prefect's resume API)."""
        if self.served:
            assert waiting_run is not None
            await h.wait_state(waiting_run, {"Suspended"})
            gate = waiting_run
        else:
            gate = await waiting_gate(self.pg_url, self.inc, timeout=180)
        code = code_from_slack(self.sb, "alice", gate)
        await h.resume(gate, approve=True, approver="alice", code=code, reason="fault suite")

    async def reach_step(self, proc: subprocess.Popen[bytes]) -> None:
        def ready() -> bool:
            assert proc.poll() is None, f"the process ended before {self.step}"
            status = h.ledger_status(self.pg_url, self.inc)
            if self.step == "after_approval":
                return status == "approved"
            if self.step in {"during_act", "after_act"}:
                return status == "started" and h.rollbacks(self.sb) == self.before + 1
            return h.has_event(self.pg_url, self.inc, "done")  # during_verify

        await h.until(ready, f"step {self.step} of {self.inc}")
        if self.step == "after_act":
            await asyncio.sleep(1)  # the answer arrives; the pause keeps the record from happening

    async def kill_at_step(self) -> str:
        """Start, approve, kill at the step; returns the killed flow run's id."""
        sb = self.sb
        sb.inject("bad-deploy")
        self.before = h.rollbacks(sb)
        if self.step == "during_act":  # applied, then the answer is held for 120 s
            sb.inject("railway-timeout-after-apply", hold_s=120, count=1)
        if self.served:
            proc = self.spawn(["-m", "tests.faults.serve_rollback"], PAUSE.get(self.step))
            run_id = await h.start_served(self.inc)
            await self.approve(run_id)
        else:
            proc = self.spawn(["-m", "tests.faults.run_rollback", self.inc], PAUSE.get(self.step))
            await self.approve()
        await self.reach_step(proc)
        if self.served and self.kill == "flow":
            runs = h.flow_run_processes(proc.pid)
            assert runs, "the served flow run has a process of its own"
            for pid in runs:
                os.kill(pid, signal.SIGKILL)
        else:
            h.sigkill_tree(proc)
        rows = h.ledger_rows(self.pg_url, self.inc)
        assert len(rows) == 1, rows
        killed = str(rows[0]["flow_run_id"])
        if not self.served:
            assert killed
        else:
            assert killed == run_id
        left = {"after_approval": "approved", "during_act": "started", "after_act": "started"}
        assert rows[0]["status"] == left.get(self.step, "done"), rows
        if self.step == "during_verify":
            steps = [k for k, _, _ in h.events(self.pg_url, self.inc)]
            assert "verified" not in steps and "finished" not in steps, steps
        if self.kill == "flow":  # Prefect's own crash detection: the serving process saw it
            assert await h.wait_state(killed, {"Crashed"}, timeout=60) == "Crashed"
        else:  # Prefect alone would leave it so for ever: nothing is left to report the crash
            assert (await h.state_of(killed))[0] == "RUNNING"
        return killed

    async def recover(self, killed: str) -> str:
        """The product's recovery: the sweeper (`runbook serve` restarted / `runbook sweep`)."""
        if self.served and self.kill == "flow":  # `serve` lived on: its own sweeper recovers

            def escalated_here() -> str | None:
                return h.lost_run_escalation(self.pg_url, self.inc, killed)

            summary = await h.until(escalated_here, "the serving process to recover the run")
        elif self.served:
            self.spawn(["-m", "tests.faults.serve_rollback"])  # serve comes back, no pause

            def escalated() -> str | None:
                return h.lost_run_escalation(self.pg_url, self.inc, killed)

            summary = await h.until(escalated, "the restarted serve to recover the lost run")
        else:

            async def swept() -> str | None:
                await sweep_once()
                return h.lost_run_escalation(self.pg_url, self.inc, killed)

            summary = await h.until(swept, "`runbook sweep` to recover the lost run")
        assert await h.wait_state(killed, {"Crashed"}, timeout=30) == "Crashed"
        return str(summary)

    async def rerun(self) -> str:
        """What the page asks a human to do: run the flow again for the incident."""
        if self.served:
            run_id = await h.start_served(self.inc)
            if self.step == "after_approval":
                await self.approve(run_id)
            final = await h.wait_state(run_id, {"Completed", "Failed", "Crashed"}, timeout=300)
            assert final == "Completed", final
            return run_id
        proc = self.spawn(["-m", "tests.faults.run_rollback", self.inc])
        if self.step == "after_approval":
            await self.approve()
        await h.until(lambda: proc.poll() is not None, "the rerun to end", timeout=300)
        assert proc.returncode == 0, proc.returncode
        return ""

    async def run(self) -> dict[str, Any]:
        sb, pg_url, inc = self.sb, self.pg_url, self.inc
        killed = await self.kill_at_step()
        summary = await self.recover(killed)

        # after the recovery: nothing in flight, the act reconciled, a human told
        rows = h.ledger_rows(pg_url, inc)
        assert [r["status"] for r in rows] == [
            "failed" if self.step == "after_approval" else "done"
        ], rows
        acted = 0 if self.step == "after_approval" else 1
        assert h.rollbacks(sb) == self.before + acted
        assert h.pages_about(sb, f"{killed} lost its process"), "a human was paged"
        if self.step in {"during_act", "after_act"}:
            assert "found on the platform" in summary, summary
            assert rows[0]["outcome"] == {"reconciled": True}
        if self.step == "after_approval":
            assert "nothing was sent" in summary, summary

        await self.rerun()

        rows = h.ledger_rows(pg_url, inc)
        steps = [k for k, _, _ in h.events(pg_url, inc)]
        assert h.rollbacks(sb) == self.before + 1, "the rollback happened exactly once"
        assert len(rows) == 1 and rows[0]["status"] == "done", rows
        assert not [r for r in rows if r["status"] in h.IN_FLIGHT]
        assert rows[0]["attempts"] == 1, "sent once, never re-sent"
        assert steps[-1] == "finished", steps
        assert (await h.state_of(killed))[1] == "Crashed"
        resolved = self.step == "after_approval" and rows[0]["verified"] is True
        outcome = {
            "fault": self.step,
            "mode": ("served" + ("-flow-only" if self.kill == "flow" else ""))
            if self.served
            else "direct",
            "incident": inc,
            "rollbacks": h.rollbacks(sb) - self.before,
            "ledger": [r["status"] for r in rows],
            "killed_run": (await h.state_of(killed))[1],
            "escalated": "escalated" in steps,
            "resolved_after_rerun": resolved,
            "stuck": 0,
        }
        h.record(outcome)
        return outcome
