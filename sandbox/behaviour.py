"""What one customer chat experiences, given the platform's state — and the traces it leaves
(LangSmith runs, Railway deployment and HTTP logs). See `sandbox.platform` for the rules.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sandbox.platform import Platform, iso, now

INTENTS = {
    # intent: (weight, integration it calls)
    "order_status": (30, "shopify"),
    "refund_request": (15, "shopify"),
    "product_question": (25, None),
    "shipping_info": (15, "shopify"),
    "complaint": (10, "gorgias"),
    "other": (5, None),
}
BAD_DEPLOY_ERROR_RATE = 0.18
BACKGROUND_ERROR_RATE = 0.001  # a healthy platform still fails now and then
FALLBACK_SPEEDUP = 0.7  # the smaller model answers faster ("consider model downgrade for speed")
QUEUE_DELAY_S = 3.0


@dataclass
class ChatOutcome:
    intent: str
    model: str
    latency_s: float
    error: str | None
    llm_error: str | None
    tokens: int


def simulate_chat(
    p: Platform,
    intent: str | None = None,
    *,
    db_error: str | None = None,
    extra_latency_s: float = 0.0,
) -> ChatOutcome:
    """What one customer chat experiences right now."""
    if intent is None:
        names = list(INTENTS)
        intent = random.choices(names, weights=[INTENTS[n][0] for n in names])[0]
    model = p.variables.get("DEFAULT_MODEL", p.primary_model)
    speed = FALLBACK_SPEEDUP if model == p.fallback_model else 1.0
    latency = speed * p.load_factor() * random.uniform(0.6, 1.5) + extra_latency_s
    error: str | None = None
    llm_error: str | None = None
    dep = p.current
    integration = INTENTS.get(intent, (0, None))[1]
    failure = p.llm_failure(model)
    if dep.defect == "outage":
        error = f"application: worker crashed on boot (deployment {dep.id})"
    elif db_error:
        error = db_error
    elif not p.llm_key_valid(p.variables.get("OPENAI_API_KEY", "")):
        llm_error = "openai invalid_api_key: 401 Incorrect API key provided"
        error = f"llm: {llm_error}"
    elif failure == "outage":
        llm_error = f"openai server_error: 503 The server is overloaded (model {model})"
        error = f"llm: {llm_error}"
    elif failure == "rate_limit" and p.queueing():
        latency += QUEUE_DELAY_S  # queued until the provider's window allows it
    elif failure == "rate_limit":
        llm_error = f"openai rate_limit_exceeded: 429 Rate limit reached for {model}"
        error = f"llm: {llm_error}"
    elif integration and p.integration_down(integration):
        error = f"integration: {integration} API returned 503 Service Unavailable"
    elif dep.defect == "errors" and random.random() < BAD_DEPLOY_ERROR_RATE:
        error = (
            f"application: TypeError: 'NoneType' object is not subscriptable"
            f" in handlers/{intent}.py (deployment {dep.id})"
        )
    elif random.random() < BACKGROUND_ERROR_RATE:
        error = "application: upstream timeout"
    return ChatOutcome(
        intent=intent,
        model=model,
        latency_s=round(latency, 3),
        error=error,
        llm_error=llm_error,
        tokens=0 if error else random.randint(200, 1400),
    )


def record_chat(p: Platform, outcome: ChatOutcome, started: float, status: int) -> None:
    """Leave the traces a chat leaves: LangSmith runs, Railway logs and HTTP logs."""
    end = started + outcome.latency_s
    trace = f"{random.getrandbits(64):016x}"
    root = {
        "id": f"run-{trace}",
        "name": "support-agent",
        "run_type": "chain",
        "start_time": started,
        "end_time": end,
        "status": "error" if outcome.error else "success",
        "error": outcome.error,
        "trace_id": trace,
        "parent_run_id": None,
        "tags": [outcome.intent],
        "total_tokens": outcome.tokens,
        "session_id": p.config["langsmith_project_id"],
    }
    llm_end = started + outcome.latency_s * 0.8
    llm = {
        **root,
        "id": f"run-{trace}-llm",
        "name": "ChatOpenAI",
        "run_type": "llm",
        "end_time": llm_end,
        "parent_run_id": root["id"],
        "status": "error" if outcome.llm_error else "success",
        "error": outcome.llm_error,
        "tags": [outcome.model],
    }
    p.runs.append(root)
    p.runs.append(llm)
    dep = p.current_id
    if outcome.error:
        p.logs.append(
            {
                "deploymentId": dep,
                "timestamp": iso(end),
                "severity": "error",
                "message": f"chat failed intent={outcome.intent}: {outcome.error}",
            }
        )
    else:
        p.logs.append(
            {
                "deploymentId": dep,
                "timestamp": iso(end),
                "severity": "info",
                "message": f"chat ok intent={outcome.intent} model={outcome.model}",
            }
        )
    p.http_logs.append(
        {
            "deploymentId": dep,
            "timestamp": iso(end),
            "requestId": trace,
            "method": "POST",
            "path": "/v1/chat",
            "httpStatus": status,
            "totalDuration": int(outcome.latency_s * 1000),
        }
    )


def seed_history(p: Platform) -> None:
    """An hour of healthy LangSmith history, one trace every ~6 s (logs start empty)."""
    start = now() - 3600
    for i in range(600):
        outcome = simulate_chat(p)
        if outcome.error:
            continue
        record_chat(p, outcome, start + i * 6, 200)
    p.logs.clear()
    p.http_logs.clear()
