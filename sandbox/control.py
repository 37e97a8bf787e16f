"""The sandbox's `/control` endpoints: state, journal, sinks, inject, clear, reset, shutdown.

A mixin of `sandbox.server.Sandbox` (it supplies `platform`, `api`, `server` and `state()`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from sandbox.platform import FAULTS, INTEGRATION_TARGETS, Platform
from sandbox.wire import WIRE_FAULTS, WIRE_OPTIONS, arm_from, is_wire


class ControlEndpoints:
    platform: Platform
    api: Any  # sandbox.support_api.SupportApi: applies a fault to the running API
    server: Any  # the uvicorn server, once serving

    def state(self) -> dict[str, Any]:  # pragma: no cover - supplied by the sandbox
        raise NotImplementedError

    async def control_state(self, request: Request) -> JSONResponse:
        return self.control_ok()

    def control_ok(self) -> JSONResponse:
        return JSONResponse(self.state())

    async def control_journal(self, request: Request) -> JSONResponse:
        return JSONResponse(self.platform.journal)

    async def control_sink(self, request: Request) -> JSONResponse:
        name = request.path_params["name"]
        if name not in self.platform.sinks:
            return JSONResponse(
                {"error": f"unknown sink {name!r}; known: {', '.join(self.platform.sinks)}"}, 404
            )
        return JSONResponse(self.platform.sinks[name])

    async def control_inject(self, request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body())
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
        except ValueError as exc:
            return JSONResponse({"error": f"malformed JSON: {exc}"}, 400)
        fault, seconds, target = body.get("fault"), body.get("seconds"), body.get("target")
        if is_wire(fault) or set(WIRE_OPTIONS) & set(body):
            refused = arm_from(self.platform.wire, fault, body)
            return JSONResponse({"error": refused}, 422) if refused else self.control_ok()
        if fault not in FAULTS:
            known = ", ".join((*FAULTS, *WIRE_FAULTS))
            return JSONResponse({"error": f"unknown fault {fault!r}; known: {known}"}, 422)
        if seconds is not None and (not isinstance(seconds, int | float) or seconds <= 0):
            return JSONResponse({"error": "seconds must be a positive number"}, 422)
        leak_target = fault == "key-leak" and isinstance(target, str)  # store ids, comma-separated
        if (
            target is not None
            and not leak_target
            and (fault != "integration-outage" or target not in INTEGRATION_TARGETS)
        ):
            return JSONResponse(
                {
                    "error": "target applies to integration-outage only (shopify or gorgias),"
                    " and to key-leak (store ids, comma-separated)"
                },
                422,
            )
        if self.platform.active(fault):
            self.platform.clear(fault)
            await asyncio.sleep(0.05)
        self.platform.inject(fault, seconds, target)
        await self.api.apply(fault)
        return JSONResponse(self.state())

    async def control_clear(self, request: Request) -> JSONResponse:
        raw = await request.body()
        fault = None
        if raw.strip():
            try:
                body = json.loads(raw)
                fault = body.get("fault") if isinstance(body, dict) else None
            except ValueError as exc:
                return JSONResponse({"error": f"malformed JSON: {exc}"}, 400)
            if fault is not None and fault not in FAULTS and not is_wire(fault):
                return JSONResponse({"error": f"unknown fault {fault!r}"}, 422)
        cleared = self.platform.clear(fault)
        await asyncio.sleep(0.1)  # let undo tasks run
        return JSONResponse({"cleared": cleared, **self.state()})

    async def control_reset(self, request: Request) -> JSONResponse:
        cleared = self.platform.reset()
        await asyncio.sleep(0.1)
        return JSONResponse({"cleared": cleared, **self.state()})

    async def control_shutdown(self, request: Request) -> JSONResponse:
        if self.server is not None:
            self.server.should_exit = True
        return JSONResponse({"stopping": True})
