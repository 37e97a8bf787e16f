"""AWS RDS: moto's server behind a thin layer that adds the state transitions moto skips.

boto3 talks to `RdsFront` (the endpoint in RUNBOOK_AWS_ENDPOINT_URL); it forwards every request
to a ThreadedMotoServer on another loopback port and rewrites the answer: after
`ModifyDBInstance(ApplyImmediately=True)` the instance reads `modifying` (still its old class,
the new one in PendingModifiedValues) and after `RebootDBInstance(ForceFailover=True)`
`rebooting` (then its zones are swapped), for `transition_s` seconds before `available` (with
the new class). Without ApplyImmediately (AWS's default) a class change waits for the
maintenance window: the instance stays `available` in its class and PendingModifiedValues
shows the new one (the sandbox has no maintenance window: it stays pending). A failover also
brings the database back when `db-down` is active: the standby takes over. The front owns the
managed instance's class (moto changes it at once); a sandbox reset restores it.

`DescribeOrderableDBInstanceOptions` for `postgres` (moto knows only Aurora and Neptune) is
answered here from ORDERABLE_CLASSES, with AWS's Marker/MaxRecords paging.

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
from xml.sax.saxutils import escape

import httpx
from starlette.requests import Request
from starlette.responses import Response

from sandbox.platform import Platform, now
from sandbox.wire import hold, mark

INSTANCE_CLASS = "db.t3.medium"
ZONES = ("us-east-1a", "us-east-1b")
ENGINE_VERSION = "16.3"
# what AWS offers for RDS PostgreSQL (a subset: the common general-purpose and memory classes)
ORDERABLE_CLASSES = tuple(
    f"db.{family}.{size}"
    for family, sizes in (
        ("t3", ("micro", "small", "medium", "large", "xlarge", "2xlarge")),
        ("t4g", ("micro", "small", "medium", "large", "xlarge", "2xlarge")),
        ("m5", ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge")),
        ("m6g", ("large", "xlarge", "2xlarge", "4xlarge")),
        ("m6i", ("large", "xlarge", "2xlarge", "4xlarge")),
        ("r5", ("large", "xlarge", "2xlarge", "4xlarge")),
        ("r6g", ("large", "xlarge", "2xlarge", "4xlarge")),
        ("r6i", ("large", "xlarge", "2xlarge", "4xlarge")),
    )
    for size in sizes
)
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
        self.instance_class = INSTANCE_CLASS
        self.pending_class: str | None = None  # applying now (modifying) or at the window
        self.zones = list(ZONES)
        self.client = httpx.AsyncClient(base_url=moto_url, timeout=30)
        self.received: Counter[str] = Counter()
        platform.listeners.append(self._on_event)

    def _current_status(self) -> str:
        if self.status != "available" and now() >= self.until:
            if self.status == "modifying" and self.pending_class:
                self.instance_class, self.pending_class = self.pending_class, None
            self.status = "available"
        return self.status

    def _on_event(self, event: str) -> None:
        """A sandbox reset puts the instance back in its class, with nothing pending."""
        if event != "reset":
            return
        self.instance_class, self.pending_class = INSTANCE_CLASS, None
        if self.status == "modifying":
            self.status, self.until = "available", 0.0

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
                r"<DBInstanceClass>[^<]*</DBInstanceClass>",
                f"<DBInstanceClass>{escape(self.instance_class)}</DBInstanceClass>",
                text,
                count=1,
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
                    f"<PendingModifiedValues><DBInstanceClass>{escape(self.pending_class)}"
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
            wanted = form.get("DBInstanceClass")
            if wanted and (wanted != self.instance_class or self.pending_class):
                # AWS's default is the maintenance window; ApplyImmediately applies it (and
                # anything pending) now
                self.pending_class = None if wanted == self.instance_class else wanted
            if form.get("ApplyImmediately") == "true":
                self._begin("modifying")
        elif action == "DescribeOrderableDBInstanceOptions" and form.get("Engine") == "postgres":
            return self._orderable(form)
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

    def _orderable(self, form: dict[str, str]) -> Response:
        """`DescribeOrderableDBInstanceOptions(Engine="postgres", [DBInstanceClass],
        [EngineVersion], [MaxRecords], [Marker])` as AWS answers it (one engine version)."""
        wanted = form.get("DBInstanceClass")
        version = form.get("EngineVersion")
        classes = [c for c in ORDERABLE_CLASSES if wanted in (None, c)]
        if version not in (None, ENGINE_VERSION):
            classes = []
        try:
            size = min(max(int(form.get("MaxRecords", "100")), 20), 1000)
            start = int(form.get("Marker") or "0")
        except ValueError:
            return self._error("InvalidParameterValue", "MaxRecords and Marker must be integers")
        page = classes[start : start + size]
        options = "".join(
            "<OrderableDBInstanceOption><Engine>postgres</Engine>"
            f"<EngineVersion>{ENGINE_VERSION}</EngineVersion>"
            f"<DBInstanceClass>{c}</DBInstanceClass><LicenseModel>postgresql-license"
            "</LicenseModel><MultiAZCapable>true</MultiAZCapable><ReadReplicaCapable>true"
            "</ReadReplicaCapable><Vpc>true</Vpc><StorageType>gp3</StorageType>"
            "</OrderableDBInstanceOption>"
            for c in page
        )
        marker = f"<Marker>{start + size}</Marker>" if start + size < len(classes) else ""
        body = (
            '<DescribeOrderableDBInstanceOptionsResponse xmlns="http://rds.amazonaws.com/doc/'
            '2014-10-31/"><DescribeOrderableDBInstanceOptionsResult><OrderableDBInstanceOptions>'
            f"{options}</OrderableDBInstanceOptions>{marker}"
            "</DescribeOrderableDBInstanceOptionsResult><ResponseMetadata><RequestId>sandbox"
            "</RequestId></ResponseMetadata></DescribeOrderableDBInstanceOptionsResponse>"
        )
        return Response(body, media_type="text/xml")

    def snapshot(self) -> dict[str, Any]:
        return {
            "status": self._current_status(),
            "zone": self.zones[0],
            "instance_class": self.instance_class,
            "pending_class": self.pending_class,
            "requests": dict(self.received),
        }
