"""engine.llm through litellm against a real loopback server speaking the OpenAI chat API."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from engine.llm import (
    BudgetExceeded,
    CallRecord,
    LlmClient,
    LlmConfig,
    LlmError,
    ModelUnavailable,
)
from tests.support.openai_server import OpenAIServer, Reply

KEY = "sk-test-SECRET-7f3a9c"
MESSAGES = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Propose one idea."}]


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return KEY


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as srv:
        yield srv


def client_for(srv: OpenAIServer, records: list[CallRecord] | None = None,
               spent_usd: float = 0.0, **overrides: Any) -> LlmClient:
    settings: dict[str, Any] = {"model": "openai/test", "api_base": srv.url, "timeout_s": 10,
                                "backoff_base_s": 0.001, "max_retries": 3}
    settings.update(overrides)
    sink = records.append if records is not None else None
    return LlmClient(LlmConfig(**settings), on_record=sink, spent_usd=spent_usd)


async def test_success_records_tokens_cost_and_latency(server: OpenAIServer) -> None:
    import litellm

    server.enqueue(Reply.text("an idea", delay_s=0.05, prompt_tokens=1000, completion_tokens=500))
    records: list[CallRecord] = []
    client = client_for(server, records, model="openai/gpt-4o-mini")

    text = await client.complete("ideator", "seed", MESSAGES)

    assert text == "an idea"
    price = litellm.model_cost["gpt-4o-mini"]
    expected = 1000 * price["input_cost_per_token"] + 500 * price["output_cost_per_token"]
    [rec] = records
    assert (rec.role, rec.purpose, rec.model, rec.attempt, rec.error) == (
        "ideator", "seed", "openai/gpt-4o-mini", 1, None)
    assert (rec.prompt_tokens, rec.completion_tokens) == (1000, 500)
    assert rec.cost_usd == pytest.approx(expected)
    assert client.spent_usd == pytest.approx(expected)
    assert rec.latency_s >= 0.05
    assert abs(rec.started_at - time.time()) < 30
    [req] = server.chat_requests
    assert req.json["model"] == "gpt-4o-mini"
    assert req.messages == MESSAGES
    # The key reached the server from the environment, the only place keys come from.
    assert req.headers.get("authorization") == f"Bearer {KEY}"


async def test_coder_role_uses_coder_model_and_temperature(server: OpenAIServer) -> None:
    client = client_for(server, coder_model="openai/coder", temperature=0.3)
    await client.complete("coder", "implement", MESSAGES)
    await client.complete("ideator", "seed", MESSAGES)
    first, second = server.chat_requests
    assert first.json["model"] == "coder" and first.json["temperature"] == 0.3
    assert second.json["model"] == "test"


async def test_config_prices_cost_an_unknown_model(server: OpenAIServer,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    server.enqueue(Reply.text("a", prompt_tokens=1_000_000, completion_tokens=500_000))
    records: list[CallRecord] = []
    priced = client_for(server, records, prices={"openai/test": (2.0, 8.0)})
    await priced.complete("ideator", "seed", MESSAGES)
    assert records[0].cost_usd == pytest.approx(6.0)
    assert priced.spent_usd == pytest.approx(6.0)

    records.clear()
    unpriced = client_for(server, records)
    with caplog.at_level(logging.WARNING, logger="engine.llm"):
        await unpriced.complete("ideator", "seed", MESSAGES)
    assert records[0].cost_usd is None and records[0].prompt_tokens is not None
    assert unpriced.spent_usd == 0.0
    assert "no price for openai/test" in caplog.text


async def test_rate_limit_is_retried_after_retry_after(server: OpenAIServer) -> None:
    server.enqueue(Reply.error(429, retry_after=0.3), "after the wait")
    records: list[CallRecord] = []
    text = await client_for(server, records).complete("ideator", "seed", MESSAGES)

    assert text == "after the wait"
    assert [(r.attempt, r.error is None) for r in records] == [(1, False), (2, True)]
    assert "429" in (records[0].error or "")
    first, second = server.chat_requests
    assert second.received_at - first.received_at >= 0.29  # Retry-After beat the tiny backoff


async def test_server_errors_exhaust_retries(server: OpenAIServer) -> None:
    server.script(lambda req: Reply.error(500))
    records: list[CallRecord] = []
    with pytest.raises(ModelUnavailable) as info:
        await client_for(server, records, max_retries=2).complete("coder", "implement", MESSAGES)
    message = str(info.value)
    assert "3 attempts" in message and "server error (500)" in message and server.url in message
    assert "\n" not in message
    assert len(server.chat_requests) == 3
    assert [r.attempt for r in records] == [1, 2, 3]
    assert all(r.error and "500" in r.error for r in records)


async def test_slow_answer_times_out_then_retry_succeeds(server: OpenAIServer) -> None:
    server.enqueue(Reply.text("too late", delay_s=3), "on time")
    records: list[CallRecord] = []
    start = time.monotonic()
    text = await client_for(server, records, timeout_s=0.4).complete("ideator", "seed", MESSAGES)
    assert text == "on time"
    assert time.monotonic() - start < 2.5
    assert (records[0].error or "").startswith("timeout")
    assert records[0].latency_s == pytest.approx(0.4, abs=0.3)


async def test_slow_server_fails_cleanly(server: OpenAIServer) -> None:
    server.script(lambda req: Reply.text("never in time", delay_s=3))
    start = time.monotonic()
    with pytest.raises(ModelUnavailable, match="timeout"):
        await client_for(server, timeout_s=0.3, max_retries=1).complete("ideator", "seed",
                                                                        MESSAGES)
    assert time.monotonic() - start < 2.5


async def test_garbage_answers_give_a_clear_error(server: OpenAIServer) -> None:
    server.script(lambda req: Reply.garbage())
    records: list[CallRecord] = []
    with pytest.raises(ModelUnavailable) as info:
        await client_for(server, records, max_retries=1).complete("ideator", "seed", MESSAGES)
    assert "malformed answer" in str(info.value)
    assert "OpenAI-compatible" in str(info.value)
    assert len(records) == 2


async def test_valid_json_without_choices_is_malformed(server: OpenAIServer) -> None:
    server.enqueue(Reply.garbage(b'{"object": "chat.completion"}'), "recovered")
    records: list[CallRecord] = []
    assert await client_for(server, records).complete("ideator", "seed", MESSAGES) == "recovered"
    assert (records[0].error or "").startswith("malformed answer")


async def test_dropped_connection_is_retried(server: OpenAIServer) -> None:
    server.enqueue(Reply.drop(), "second try")
    records: list[CallRecord] = []
    assert await client_for(server, records).complete("ideator", "seed", MESSAGES) == "second try"
    assert (records[0].error or "").startswith("connection failed")


async def test_unreachable_server() -> None:
    with OpenAIServer() as srv:
        url = srv.url
    client = LlmClient(LlmConfig(model="openai/test", api_base=url, backoff_base_s=0.001,
                                 max_retries=1, timeout_s=5))
    with pytest.raises(ModelUnavailable, match="reachable"):
        await client.complete("ideator", "seed", MESSAGES)


async def test_client_errors_are_not_retried(server: OpenAIServer) -> None:
    server.enqueue(Reply.error(401, message="bad key"), Reply.error(400, message="bad field"))
    records: list[CallRecord] = []
    client = client_for(server, records)
    with pytest.raises(ModelUnavailable, match="key rejected"):
        await client.complete("ideator", "seed", MESSAGES)
    with pytest.raises(LlmError, match="request refused") as info:
        await client.complete("ideator", "seed", MESSAGES)
    assert not isinstance(info.value, ModelUnavailable)
    assert len(server.chat_requests) == 2 and len(records) == 2


async def test_model_unknown_to_the_server() -> None:
    with OpenAIServer(models=["served-model"]) as srv:
        with pytest.raises(ModelUnavailable, match="not found"):
            await client_for(srv, model="openai/other").complete("ideator", "seed", MESSAGES)
        assert len(srv.chat_requests) == 1


async def test_concurrency_cap_is_respected(server: OpenAIServer) -> None:
    server.script(lambda req: Reply.text("slowly", delay_s=0.15))
    client = client_for(server, concurrency=3)
    answers = await asyncio.gather(*(client.complete("coder", f"implement {i}", MESSAGES)
                                     for i in range(10)))
    assert answers == ["slowly"] * 10
    assert server.max_in_flight == 3


async def test_budget_stops_new_calls(server: OpenAIServer) -> None:
    server.script(lambda req: Reply.text("paid", prompt_tokens=1_000_000, completion_tokens=0))
    client = client_for(server, max_cost_usd=2.0, prices={"openai/test": (1.0, 1.0)})
    await client.complete("ideator", "seed", MESSAGES)
    await client.complete("ideator", "seed", MESSAGES)
    with pytest.raises(BudgetExceeded) as info:
        await client.complete("ideator", "seed", MESSAGES)
    assert str(info.value) == ("--max-cost 2.00 USD reached (spent 2.00): no new model calls; "
                               "raise --max-cost or resume later")
    assert len(server.chat_requests) == 2

    resumed = client_for(server, max_cost_usd=5.0, spent_usd=5.03)
    with pytest.raises(BudgetExceeded, match=r"spent 5\.03"):
        await resumed.complete("coder", "implement", MESSAGES)
    assert len(server.chat_requests) == 2


async def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch,
                                              server: OpenAIServer) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-SECRET-value-42")
    cloud = LlmClient(LlmConfig(model="openai/gpt-4o-mini", coder_model="anthropic/claude-x"))
    with pytest.raises(ModelUnavailable, match="OPENAI_API_KEY") as info:
        cloud.check()
    assert "sk-ant-SECRET" not in str(info.value)
    with pytest.raises(ModelUnavailable, match="OPENAI_API_KEY"):
        await cloud.complete("ideator", "seed", MESSAGES)
    # A local server still needs some key in the variable: the OpenAI client refuses without.
    local = client_for(server)
    with pytest.raises(ModelUnavailable, match="OPENAI_API_KEY.*any value works"):
        await local.complete("ideator", "seed", MESSAGES)
    assert server.chat_requests == []


def test_unknown_provider_is_refused_before_any_call() -> None:
    with pytest.raises(ModelUnavailable, match="unknown model 'no-such-model-xyz'"):
        LlmClient(LlmConfig(model="no-such-model-xyz")).check()


async def test_api_key_never_reaches_records_logs_or_errors(
        server: OpenAIServer, caplog: pytest.LogCaptureFixture) -> None:
    server.enqueue(
        "fine",
        Reply.error(429, retry_after=0),
        "fine again",
        Reply.error(401, message=f"Incorrect API key provided: {KEY}"),
        Reply.error(500, message=f"upstream said {KEY}"),
        Reply.error(500, message=f"upstream said {KEY}"),
    )
    records: list[CallRecord] = []
    client = client_for(server, records, max_retries=1)
    errors: list[str] = []
    with caplog.at_level(logging.DEBUG):
        await client.complete("ideator", "seed", MESSAGES)
        await client.complete("ideator", "seed", MESSAGES)
        for _ in range(2):
            with pytest.raises(LlmError) as info:
                await client.complete("ideator", "seed", MESSAGES)
            errors.append(str(info.value))
    assert len(records) == 6
    assert KEY not in repr(records)
    assert KEY not in caplog.text
    assert all(KEY not in e for e in errors)
    assert "***" in errors[0]  # the echoed key was scrubbed, the rest of the message kept


async def test_server_streams_and_lists_models(server: OpenAIServer) -> None:
    """Other suites may drive the server with `stream: true`; litellm must read it back."""
    import httpx
    import litellm

    server.enqueue(Reply.text("a streamed answer that spans several chunks of sixteen"))
    stream = await litellm.acompletion(model="openai/test", api_base=server.url, stream=True,
                                       messages=MESSAGES, stream_options={"include_usage": True})
    parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    assert "".join(parts) == "a streamed answer that spans several chunks of sixteen"
    assert server.chat_requests[0].json["stream"] is True
    async with httpx.AsyncClient() as http:
        listing = (await http.get(server.url + "/models")).json()
    assert [m["id"] for m in listing["data"]] == ["test"]


async def test_nothing_is_printed_to_the_terminal(server: OpenAIServer,
                                                  capfd: pytest.CaptureFixture[str]) -> None:
    """The console owns the terminal: litellm's own stdout/stderr chatter must stay off it."""
    server.enqueue(Reply.error(500), "fine", Reply.error(401), Reply.garbage())
    client = client_for(server, max_retries=1)
    await client.complete("ideator", "seed", MESSAGES)
    with pytest.raises(ModelUnavailable):
        await client.complete("ideator", "seed", MESSAGES)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


async def test_answer_cut_at_the_output_limit_is_marked_and_recorded(
        server: OpenAIServer) -> None:
    server.enqueue(Reply.cut("--- a/train.py\n+++ b/train.py\n@@ -1,3 +1,3 @@\n x = 1\n-y"),
                   "a whole answer")
    records: list[CallRecord] = []
    client = client_for(server, records)

    cut = await client.complete("coder", "implement", MESSAGES)
    whole = await client.complete("coder", "implement", MESSAGES)

    assert cut.endswith("-y") and cut.cut_off and cut.finish_reason == "length"
    assert whole == "a whole answer" and not whole.cut_off and whole.finish_reason == "stop"
    assert len(server.chat_requests) == 2  # a cut answer is handed back, not silently retried
    assert "cut off at the model's output limit" in (records[0].error or "")
    assert records[1].error is None
    assert records[0].completion_tokens is not None  # its tokens were still paid for
