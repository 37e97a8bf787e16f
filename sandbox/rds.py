"""AWS RDS: moto's server behind a thin layer that adds the state transitions moto skips.

boto3 talks to `RdsFront` (the endpoint in RUNBOOK_AWS_ENDPOINT_URL); it forwards every request
to a ThreadedMotoServer on another loopback port and rewrites the answer: after
`ModifyDBInstance(ApplyImmediately=True)` the instance reads `modifying` (with the new class in
PendingModifiedValues) and after `RebootDBInstance(ForceFailover=True)` `rebooting` (then its
zones are swapped), for `transition_s` seconds before `available`. A failover also brings the
database back when `db-down` is active: the standby takes over.

Every reboot/modify request that reaches it for the managed instance is counted
(`snapshot()["requests"]`), applied or refused, so a test sees a client that sent one twice.
Wire faults (`sandbox.wire`: rds-500-after-apply, rds-timeout-after-apply) apply the change and
then answer 500 InternalFailure, or hold the answer past the client's read timeout.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import httpx
from starlette.requests import Request
from starlette.responses import Response

from sandbox.platform import Platform, now
from sandbox.wire import hold, mark

INSTANCE_CLASS = "db.t3.medium"
ZONES = ("us-east-1a", "us-east-1b")
_MUTATIONS = ("RebootDBInstance", "ModifyDBInstance")
_RDS_FAULTS = ("rds-500-after-apply", "rds-timeout-after-apply")


def create_instance(endpoint: str, region: str, key: str, secret: str, instance_id: str) -> None:
    import boto3

    client = boto3.client(
        "rds",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )
    client.create_db_instance(
        DBInstanceIdentifier=instance_id,
        DBInstanceClass=INSTANCE_CLASS,
        Engine="postgres",
        MasterUsername="support",
        MasterUserPassword="sandbox-not-a-secret",
        AllocatedStorage=100,
        MultiAZ=True,
        AvailabilityZone=ZONES[0],
    )


class RdsFront:
    """ASGI endpoint in front of moto (one instance is managed; others pass through)."""

    def __init__(
        self,
        platform: Platform,
        moto_url: str,
        instance_id: str,
        transition_s: float,
        on_failover: Callable[[], None],
    ) -> None:
        self.platform = platform
        self.moto_url = moto_url
        self.instance_id = instance_id
        self.transition_s = transition_s
        self.on_failover = on_failover
        self.status = "available"
        self.until = 0.0
        self.pending_class: str | None = None
        self.zones = list(ZONES)
        self.client = httpx.AsyncClient(base_url=moto_url, timeout=30)
        self.received: Counter[str] = Counter()

    def _current_status(self) -> str:
        if self.status != "available" and now() >= self.until:
            self.status = "available"
            self.pending_class = None
        return self.status

    def _begin(self, status: str, after: Callable[[], None] | None = None) -> None:
        self.status = status
        self.until = now() + self.transition_s
        if after is not None:
            asyncio.get_running_loop().call_later(self.transition_s, after)

    def _failover_done(self) -> None:
        self.zones.reverse()
        self.on_failover()

    def _error(self, code: str, message: str, status: int = 400, kind: str = "Sender") -> Response:
        body = (
            '<ErrorResponse xmlns="http://rds.amazonaws.com/doc/2014-10-31/"><Error>'
            f"<Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error>"
            "<RequestId>sandbox</RequestId></ErrorResponse>"
        )
        return Response(body, status_code=status, media_type="text/xml")

    def _rewrite(self, xml: str) -> str:
        def block(match: re.Match[str]) -> str:
            text = match.group(0)
            if f"<DBInstanceIdentifier>{self.instance_id}</DBInstanceIdentifier>" not in text:
                return text
            text = re.sub(
                r"<DBInstanceStatus>[^<]*</DBInstanceStatus>",
                f"<DBInstanceStatus>{self._current_status()}</DBInstanceStatus>",
                text,
            )
            text = re.sub(
                r"<AvailabilityZone>[^<]*</AvailabilityZone>",
                f"<AvailabilityZone>{self.zones[0]}</AvailabilityZone>",
                text,
                count=1,
            )
            text = re.sub(r"<SecondaryAvailabilityZone>[^<]*</SecondaryAvailabilityZone>", "", text)
            extra = f"<SecondaryAvailabilityZone>{self.zones[1]}</SecondaryAvailabilityZone>"
            if self.pending_class:
                text = re.sub(
                    r"<PendingModifiedValues>.*?</PendingModifiedValues>|"
                    r"<PendingModifiedValues/>",
                    "",
                    text,
                    flags=re.S,
                )
                extra += (
                    f"<PendingModifiedValues><DBInstanceClass>{self.pending_class}"
                    "</DBInstanceClass></PendingModifiedValues>"
                )
            return text.replace("</DBInstance>", extra + "</DBInstance>", 1)

        return re.sub(r"<DBInstance>.*?</DBInstance>", block, xml, flags=re.S)

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        form = {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}
        action = form.get("Action", "")
        ours = form.get("DBInstanceIdentifier") == self.instance_id
        mutation = ours and action in _MUTATIONS
        if mutation:
            self.received[action] += 1  # every one that arrived, applied or refused
        before = len(self.platform.journal)
        answer = await self._answer(request, body, form, action, ours)
        if not mutation or answer.status_code >= 400:  # refused: nothing applied
            return answer
        fault = self.platform.wire.take(_RDS_FAULTS, mutation=True)
        if fault is None:
            return answer
        mark(self.platform.journal, before, fault)
        if fault.name == "rds-500-after-apply":
            return self._error("InternalFailure", "An internal error occurred.", 500, "Receiver")
        await hold(request, fault.hold_s)  # rds-timeout-after-apply: the answer is lost
        return answer

    async def _answer(
        self, request: Request, body: bytes, form: dict[str, str], action: str, ours: bool
    ) -> Response:
        if ours and action == "RebootDBInstance" and form.get("ForceFailover") == "true":
            if self._current_status() != "available":
                return self._error(
                    "InvalidDBInstanceState", f"DB instance {self.instance_id} is not available."
                )
            self.platform.record(
                "rds",
                "RebootDBInstance",
                {"DBInstanceIdentifier": self.instance_id, "ForceFailover": True},
            )
            self._begin("rebooting", self._failover_done)
        elif ours and action == "RebootDBInstance":
            self.platform.record(
                "rds", "RebootDBInstance", {"DBInstanceIdentifier": self.instance_id}
            )
            self._begin("rebooting")
        elif ours and action == "ModifyDBInstance":
            if self._current_status() != "available":
                return self._error(
                    "InvalidDBInstanceState", f"DB instance {self.instance_id} is not available."
                )
            args: dict[str, str] = {
                k: form[k] for k in ("DBInstanceClass", "ApplyImmediately") if k in form
            }
            self.platform.record(
                "rds", "ModifyDBInstance", {"DBInstanceIdentifier": self.instance_id, **args}
            )
            if form.get("ApplyImmediately") == "true":
                self.pending_class = form.get("DBInstanceClass")
                self._begin("modifying")
        elif action in {"DeleteDBInstance", "PromoteReadReplica", "CreateDBInstance"} and ours:
            self.platform.record("rds", action, {"DBInstanceIdentifier": self.instance_id})
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in {"host", "content-length"}
        }
        upstream = await self.client.post(
            request.url.path, content=body, headers=headers, params=dict(request.query_params)
        )
        text = upstream.text
        if ours or action == "DescribeDBInstances":
            text = self._rewrite(text)
        return Response(
            text,
            status_code=upstream.status_code,
            media_type=upstream.headers.get("content-type", "text/xml"),
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "status": self._current_status(),
            "zone": self.zones[0],
            "requests": dict(self.received),
        }
