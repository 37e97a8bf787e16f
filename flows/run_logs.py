"""What an operator reads in a run's Logs tab: a wait for approval is not an error.

Prefect's async flow engine logs every non-Completed end at ERROR — including the normal end of a
run that suspends while it waits for a person: `ERROR Finished in state Suspended(type=PAUSED)`.
The person who opens the run from the page link then reads a failure where there is none. This
filter, on Prefect's flow-run logger in every process that runs our flows, re-levels exactly those
records (Suspended / Paused) to INFO and says what they mean; every other record is untouched, so a
Failed or Crashed run still logs at ERROR.
"""

from __future__ import annotations

import logging

_WAITING_STATES = ("Finished in state Suspended", "Finished in state Paused")
_NOTE = " — waiting for approval (not an error): the run continues when it is answered"


class WaitIsNotAnError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and not record.exc_info:
            message = record.getMessage()
            if message.startswith(_WAITING_STATES):
                record.msg, record.args = message + _NOTE, None
                record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def install() -> None:
    """Idempotent; runs when `flows` is imported (every flow-run process imports it)."""
    logger = logging.getLogger("prefect.flow_runs")
    if not any(isinstance(f, WaitIsNotAnError) for f in logger.filters):
        logger.addFilter(WaitIsNotAnError())
