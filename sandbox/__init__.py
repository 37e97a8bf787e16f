"""The simulated support platform (fakes speaking the real APIs over HTTP on 127.0.0.1).

Never imported by flows/, tasks/ or blocks/: production code talks to it only over the network.
Tests and the demo use `start_sandbox()` → `SandboxHandle` (see `sandbox.handle`).
"""

from sandbox.handle import SandboxError, SandboxHandle, start_sandbox

__all__ = ["SandboxError", "SandboxHandle", "start_sandbox"]

PROJECT = "runbook-remediation"  # `runbook` checks it: not another distribution's sandbox
