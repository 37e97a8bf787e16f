"""LangSmith's runs query API over the traces the simulated traffic leaves.

`POST /api/v1/runs/query` (session, start_time, error, is_root, run_type, filter, limit, cursor)
and `POST /api/v2/runs/query` (project_ids, min_start_time, has_error, page_size …), plus
`GET /api/v1/sessions?name=` to turn a project name into its id. Auth: `x-api-key`.
The filter language is the documented subset: eq/neq/gt/gte/lt/lte/has/and/or over run fields,
with `latency` in seconds and `null`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from sandbox.platform import Platform, iso

_TOKEN = re.compile(
    r'\s*(?:(?P<str>"[^"]*")|(?P<num>-?\d+(?:\.\d+)?)|(?P<name>[A-Za-z_]\w*)'
    r"|(?P<punct>[(),]))"
)
Predicate = Callable[[dict[str, Any]], bool]


class FilterError(ValueError):
    pass


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise FilterError(f"Invalid filter at position {pos}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _field(run: dict[str, Any], name: str) -> Any:
    if name == "latency":
        return run["end_time"] - run["start_time"]
    return run.get(name)


def parse_filter(text: str) -> Predicate:
    """Compile a LangSmith filter expression into a predicate over our run dicts."""
    tokens = _tokens(text)
    pos = 0

    def value() -> Any:
        nonlocal pos
        kind, tok = tokens[pos]
        if kind == "name" and pos + 1 < len(tokens) and tokens[pos + 1][1] == "(":
            return call()
        pos += 1
        if kind == "str":
            return tok[1:-1]
        if kind == "num":
            return float(tok)
        if kind == "name":
            return None if tok == "null" else ("field", tok)
        raise FilterError(f"Unexpected {tok!r}")

    def call() -> Predicate:
        nonlocal pos
        name = tokens[pos][1]
        pos += 2
        args: list[Any] = []
        while tokens[pos][1] != ")":
            args.append(value())
            if tokens[pos][1] == ",":
                pos += 1
        pos += 1
        return build(name, args)

    def build(name: str, args: list[Any]) -> Predicate:
        if name in {"and", "or"}:
            preds = [a for a in args if callable(a)]
            if len(preds) != len(args):
                raise FilterError(f"{name}() takes expressions")
            combine = all if name == "and" else any
            return lambda run: combine(p(run) for p in preds)
        if len(args) != 2 or not isinstance(args[0], tuple):
            raise FilterError(f"{name}() takes a field and a value")
        fld, want = args[0][1], args[1]
        ops: dict[str, Callable[[Any, Any], bool]] = {
            "eq": lambda a, b: a == b,
            "neq": lambda a, b: a != b,
            "gt": lambda a, b: a is not None and a > b,
            "gte": lambda a, b: a is not None and a >= b,
            "lt": lambda a, b: a is not None and a < b,
            "lte": lambda a, b: a is not None and a <= b,
            "has": lambda a, b: isinstance(a, list) and b in a,
        }
        if name not in ops:
            raise FilterError(f"Unknown filter function {name}")
        op = ops[name]
        return lambda run: op(_field(run, fld), want)

    try:
        pred = value()
    except (IndexError, KeyError) as exc:
        raise FilterError("Incomplete filter expression") from exc
    if not callable(pred) or pos != len(tokens):
        raise FilterError("Filter must be one expression")
    return pred  # type: ignore[no-any-return]


def _ts(value: Any) -> float | None:
    if value is None:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


class LangSmithApi:
    def __init__(self, platform: Platform, api_key: str, project: str, project_id: str) -> None:
        self.p = platform
        self.api_key = api_key
        self.project = project
        self.project_id = project_id

    def _denied(self, request: Request) -> JSONResponse | None:
        if request.headers.get("x-api-key") != self.api_key:
            return JSONResponse({"detail": "Invalid token"}, status_code=401)
        return None

    async def sessions(self, request: Request) -> JSONResponse:
        if denied := self._denied(request):
            return denied
        name = request.query_params.get("name")
        found = (
            []
            if name not in (None, self.project)
            else [{"id": self.project_id, "name": self.project, "tenant_id": "sandbox"}]
        )
        return JSONResponse(found)

    async def query(self, request: Request) -> JSONResponse:
        if denied := self._denied(request):
            return denied
        try:
            body = json.loads(await request.body() or b"{}")
            if not isinstance(body, dict):
                raise ValueError("body must be an object")
            sessions = body.get("session") or body.get("project_ids") or []
            since = _ts(body.get("start_time") or body.get("min_start_time"))
            error = body.get("error", body.get("has_error"))
            limit = int(body.get("limit") or body.get("page_size") or 100)
            offset = int(body.get("cursor") or 0)
            pred = parse_filter(body["filter"]) if body.get("filter") else None
        except (ValueError, TypeError) as exc:
            return JSONResponse({"detail": f"Invalid request: {exc}"}, status_code=400)
        if not sessions:
            return JSONResponse({"detail": "session (project ids) is required"}, status_code=400)
        limit = max(1, min(limit, 1000))
        runs = []
        for run in reversed(self.p.runs):
            if run["session_id"] not in sessions:
                continue
            if since is not None and run["start_time"] < since:
                break  # newest first: everything after is older
            if body.get("is_root") is not None and (run["parent_run_id"] is None) != bool(
                body["is_root"]
            ):
                continue
            if body.get("run_type") and run["run_type"] != body["run_type"]:
                continue
            if error is not None and (run["error"] is not None) != bool(error):
                continue
            if pred is not None and not pred(run):
                continue
            runs.append(run)
        page = runs[offset : offset + limit]
        nxt = str(offset + limit) if len(runs) > offset + limit else None
        return JSONResponse(
            {
                "runs": [
                    {**r, "start_time": iso(r["start_time"]), "end_time": iso(r["end_time"])}
                    for r in page
                ],
                "cursors": {"next": nxt},
            }
        )
