"""Are the top-level packages this console imports really this project's?

`flows`, `tasks`, `blocks`, `intake` and `sandbox` are common names: another installed
distribution can ship a package of the same name and shadow ours, which would make `runbook`
fail somewhere deep with a baffling error. Each of ours declares `PROJECT`; we read it from the
package's source without importing it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

OURS = ("flows", "tasks", "blocks", "intake", "sandbox")
MARKER = 'PROJECT = "runbook-remediation"'


def foreign_packages(names: tuple[str, ...] = OURS) -> list[str]:
    """One line per top-level package that is missing or not ours."""
    problems = []
    for name in names:
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec else None
        if not origin or not origin.endswith("__init__.py"):
            problems.append(f"the package {name!r} of this project is not installed")
            continue
        try:
            text = Path(origin).read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        if MARKER not in text:
            problems.append(
                f"the top-level package {name!r} comes from {Path(origin).parent}, which is not "
                "this project's (another distribution installs a package of that name): "
                "uninstall it or give runbook a virtualenv of its own"
            )
    return problems


def sandbox_missing() -> str | None:
    """The simulator's dependencies are an extra; say how to get them."""
    if importlib.util.find_spec("moto") is None:
        return "the sandbox needs its extra: pip install 'runbook-remediation[sandbox]'"
    return None
