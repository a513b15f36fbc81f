"""The one place that calls language models (through litellm).

Two roles share one client: the *ideator* proposes ideas (`--model`) and the *coder* writes diffs
(`--coder-model`, the ideator's model when not given); `embed` asks an embedding model for
vectors (near-duplicate ideas, engine/dedup.py) under the same rules. Every HTTP attempt — success or failure —
becomes a `CallRecord` handed to `on_record`, which the engine stores as an `llm_call` row.

What this module guarantees:

- litellm is imported on first use, never at import time (it takes 4-7 s);
- at most `concurrency` requests are in flight at once, whatever the number of callers;
- rate limits (429), server errors (5xx), timeouts, dropped connections and malformed answers are
  retried with exponential backoff and jitter, honouring `Retry-After`; auth, bad-request and
  unknown-model errors are not retried;
- before each attempt the `max_cost_usd` budget is checked: once spent, `BudgetExceeded` is raised
  and no new call starts (calls already in flight finish, so spending can pass the cap by at most
  `concurrency` calls);
- an answer cut at the model's output limit comes back marked (`Answer.cut_off`), and its record
  says so, so no caller mistakes half an answer for a whole one;
- API keys are read by litellm from its usual environment variables and never pass through here:
  they are not stored, logged or put into an error message (messages are also scrubbed of any
  secret-looking environment value, in case a provider echoes a key back).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, ModuleType
from typing import Any, Literal, Self

log = logging.getLogger(__name__)

Role = Literal["ideator", "coder"]


@dataclass(frozen=True)
class CallRecord:
    """One HTTP attempt to a model; the engine stores it as an `llm_call` row."""

    role: str
    purpose: str
    model: str
    prompt_tokens: int | None
    completion_tokens: int | None
    cost_usd: float | None
    latency_s: float
    error: str | None
    attempt: int  # 1 for the first try of a call, 2 for its first retry, ...
    started_at: float  # wall-clock time.time()


@dataclass(frozen=True)
class LlmConfig:
    model: str
    coder_model: str | None = None
    api_base: str | None = None
    concurrency: int = 16
    timeout_s: float = 600
    max_retries: int = 6
    max_cost_usd: float | None = None
    #: model -> USD per 1M (input, output) tokens; wins over litellm's price list, so a local
    #: server that serves a model under a priced name (e.g. openai/gpt-4o-mini) can be costed.
    prices: Mapping[str, tuple[float, float]] = field(
        default_factory=lambda: MappingProxyType({}))
    temperature: float | None = None
    #: first retry waits about this long, doubling each time (tests set it near zero)
    backoff_base_s: float = 1.0
    #: no wait between attempts is longer than this, even when the server asks for more
    backoff_max_s: float = 60.0

    def model_for(self, role: Role) -> str:
        return (self.coder_model or self.model) if role == "coder" else self.model


#: what a `CallRecord` (and so the `llm_call` row) says about an answer cut at the output limit
CUT_OFF = "answer cut off at the model's output limit (finish_reason 'length')"


class Answer(str):
    """The assistant's text, which also says why the model stopped.

    A `str`, so callers that only want the text keep working; `finish_reason` is what the
    provider reported ("stop", "length", "content_filter", ... or None when it said nothing).
    """

    finish_reason: str | None

    def __new__(cls, text: str, finish_reason: str | None = None) -> Self:
        answer = super().__new__(cls, text)
        answer.finish_reason = finish_reason
        return answer

    @property
    def cut_off(self) -> bool:
        """The model hit its output limit: the text ends wherever the limit fell."""
        return self.finish_reason == "length"


class LlmError(Exception):
    """A model call that cannot succeed; the message is one line naming problem and fix."""


class BudgetExceeded(LlmError):
    """The `--max-cost` budget is spent; no new model call starts."""


class ModelUnavailable(LlmError):
    """Unknown model, missing key, server unreachable or broken after all retries."""


# -- litellm, imported lazily --------------------------------------------------------------------

_litellm: ModuleType | None = None


def _lib() -> ModuleType:
    """Import litellm once, configured for unattended use."""
    global _litellm
    if _litellm is None:
        # Without this litellm fetches its price list from GitHub on import.
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        # Otherwise it prints help banners to stdout on errors, which corrupts the console.
        litellm.suppress_debug_info = True
        # Let litellm drop parameters a model does not accept (e.g. temperature on o-series)
        # instead of failing the call.
        litellm.drop_params = True
        if hasattr(litellm, "telemetry"):
            litellm.telemetry = False
        # litellm attaches its own stream handler (WARNING records go to stdout) and, at DEBUG,
        # dumps whole prompts. Route its records through the application's logging config only,
        # at WARNING unless the user asked for more with LITELLM_LOG.
        level = os.environ.get("LITELLM_LOG", "WARNING").upper()
        for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
            lib_logger = logging.getLogger(name)
            for handler in list(lib_logger.handlers):
                lib_logger.removeHandler(handler)
            lib_logger.setLevel(level if level in logging.getLevelNamesMapping() else "WARNING")
            lib_logger.propagate = True
        _litellm = litellm
    return _litellm


# -- secrets -------------------------------------------------------------------------------------

_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL)", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with the value of every secret-looking environment variable replaced by ***."""
    for name, value in os.environ.items():
        if len(value) >= 6 and _SECRET_NAME.search(name) and value in text:
            text = text.replace(value, "***")
    return text


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(redact(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- failure classification ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Failure:
    kind: str  # short label for records and messages
    detail: str  # one line, redacted
    retryable: bool
    fatal: type[LlmError] = ModelUnavailable
    retry_after_s: float | None = None

    @property
    def summary(self) -> str:
        return f"{self.kind}: {self.detail}" if self.detail else self.kind


_GARBAGE_HINTS = ("Expecting value", "JSONDecodeError", "no 'choices'", "Unterminated string",
                  "Extra data", "validation error", "Invalid control character",
                  "malformed answer")
_MISSING_KEY_HINTS = ("Missing credentials", "api_key client option must be set",
                      "api key not found", "No API key")


def _classify(exc: BaseException) -> _Failure:
    """Map a litellm/openai/httpx exception to what we do about it."""
    lib = _lib()
    status = getattr(exc, "status_code", None)
    raw = str(exc)
    # litellm prefixes messages with its class names; keep the provider's words.
    detail = _one_line(re.sub(r"^(litellm\.\w+:\s*)?(\w+Error:\s*)?(OpenAIException - )?", "",
                              raw))
    if any(h.lower() in raw.lower() for h in _MISSING_KEY_HINTS):
        return _Failure("missing API key", detail, retryable=False)
    if isinstance(exc, (lib.Timeout, asyncio.TimeoutError)):
        return _Failure("timeout", detail, retryable=True)
    if isinstance(exc, lib.RateLimitError) or status == 429:
        return _Failure("rate limited (429)", detail, retryable=True,
                        retry_after_s=_retry_after(exc))
    if isinstance(exc, lib.AuthenticationError | lib.PermissionDeniedError):
        return _Failure(f"key rejected ({status})", detail, retryable=False)
    if isinstance(exc, lib.NotFoundError):
        return _Failure("model not found (404)", detail, retryable=False)
    if isinstance(exc, lib.ContextWindowExceededError) or "context length" in raw.lower():
        return _Failure("prompt too long", detail, retryable=False, fatal=LlmError)
    if isinstance(exc, lib.BadRequestError | lib.UnprocessableEntityError):
        if "LLM Provider NOT provided" in raw:
            return _Failure("unknown provider", detail, retryable=False)
        return _Failure(f"request refused ({status})", detail, retryable=False, fatal=LlmError)
    if any(h in raw for h in _GARBAGE_HINTS) or isinstance(exc, lib.APIResponseValidationError):
        return _Failure("malformed answer", detail, retryable=True)
    if "Connection error" in raw or isinstance(exc, lib.APIConnectionError | ConnectionError):
        return _Failure("connection failed", detail, retryable=True)
    if isinstance(status, int) and status >= 500:
        return _Failure(f"server error ({status})", detail, retryable=True,
                        retry_after_s=_retry_after(exc))
    if isinstance(status, int) and 400 <= status < 500:
        return _Failure(f"request refused ({status})", detail, retryable=False, fatal=LlmError)
    # Anything else (an API error without status, an unexpected library error): retrying is
    # the safer guess for a transient fault, and the retry budget bounds the cost of being wrong.
    return _Failure(type(exc).__name__, detail, retryable=True)


def _retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait (Retry-After / retry-after-ms), when it said so."""
    headers = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
    if not headers:
        return None
    try:
        if headers.get("retry-after-ms") is not None:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:  # the HTTP-date form
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, AttributeError):
        return None


# -- the client ----------------------------------------------------------------------------------


class LlmClient:
    """Calls models for both roles with one concurrency cap, retries and a cost budget."""

    def __init__(self, config: LlmConfig, on_record: Callable[[CallRecord], None] | None = None,
                 spent_usd: float = 0.0) -> None:
        if config.concurrency < 1 or config.max_retries < 0 or config.timeout_s <= 0:
            raise ValueError("LlmConfig needs concurrency >= 1, max_retries >= 0 and a "
                             "positive timeout_s")
        self.config = config
        self._on_record = on_record
        self._spent = float(spent_usd)  # a resumed search passes what it spent before
        self._checked: set[str] = set()
        self._unpriced_warned: set[str] = set()
        # A semaphore binds to the event loop that first waits on it; keep one per loop so a
        # client can outlive a loop (tests, a CLI that runs several asyncio.run calls).
        self._sem: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._rng = random.Random()

    @property
    def spent_usd(self) -> float:
        return self._spent

    # -- pre-flight ----------------------------------------------------------------------------
    def check(self) -> None:
        """Fail fast, without network, on an unknown provider or a missing key variable."""
        for model in dict.fromkeys((self.config.model, self.config.model_for("coder"))):
            self._preflight(model)

    def _preflight(self, model: str) -> None:
        if model in self._checked:
            return
        lib = _lib()
        try:
            lib.get_llm_provider(model=model)
        except Exception:  # noqa: BLE001 - litellm's error types for this vary by release
            raise ModelUnavailable(
                f"unknown model {model!r}: litellm cannot tell its provider; give a litellm "
                "model id with its provider, e.g. openai/gpt-4o-mini, anthropic/claude-sonnet-4-5"
                " or openai/<name> with --api-base for an OpenAI-compatible server"
            ) from None
        try:
            missing = list(lib.validate_environment(model=model).get("missing_keys") or [])
        except Exception:  # noqa: BLE001 - litellm could not tell; the call itself will say
            missing = []
        if self.config.api_base:
            # --api-base replaces the provider's base URL variable, but not its key: an OpenAI
            # client refuses to send a request without one, even to a local server.
            missing = [m for m in missing if not m.endswith(("_API_BASE", "_BASE_URL"))]
        if missing:
            # litellm lists alternatives (GEMINI_API_KEY, GOOGLE_API_KEY) and joint needs
            # (AWS_*) alike, so the message names them without claiming "or" or "and".
            names = ("the environment variable " if len(missing) == 1
                     else "the environment variables ") + ", ".join(missing)
            hint = " (any value works for a local server that ignores keys)" \
                if self.config.api_base else ""
            raise ModelUnavailable(
                f"model {model!r} needs {names}, not set here: "
                f"export {missing[0]}=...{hint}; ideaforge reads keys only from the environment"
            )
        self._checked.add(model)

    # -- calls ---------------------------------------------------------------------------------
    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._sem is None or self._sem[0] is not loop:
            self._sem = (loop, asyncio.Semaphore(self.config.concurrency))
        return self._sem[1]

    def _check_budget(self) -> None:
        cap = self.config.max_cost_usd
        if cap is not None and self._spent >= cap:
            raise BudgetExceeded(
                f"--max-cost {cap:.2f} USD reached (spent {self._spent:.2f}): no new model "
                "calls; raise --max-cost or resume later"
            )

    async def complete(self, role: Role, purpose: str, messages: list[dict[str, Any]]) -> Answer:
        """The assistant's text for `messages`, after retries; raises an `LlmError`.

        An answer cut at the model's output limit is returned, not retried (asking again
        unchanged would cut it again): its `cut_off` is true and its record's error says so,
        and the caller decides what a partial answer is worth.
        """
        if role not in ("ideator", "coder"):
            raise ValueError(f"role must be 'ideator' or 'coder', not {role!r}")
        model = self.config.model_for(role)
        self._preflight(model)
        lib = _lib()
        kwargs: dict[str, Any] = {
            "model": model, "messages": messages, "timeout": self.config.timeout_s,
            # Retries are ours (each one is recorded); the OpenAI SDK would retry silently.
            "max_retries": 0,
        }
        if self.config.api_base:
            kwargs["api_base"] = self.config.api_base
        if self.config.temperature is not None:
            kwargs["temperature"] = self.config.temperature

        async def send() -> tuple[Answer, int | None, int | None, Any, str | None]:
            response = await lib.acompletion(**kwargs)
            text, finish, prompt_tokens, completion_tokens = _read_response(response)
            answer = Answer(text, finish)
            if answer.cut_off:
                log.warning("%s call (%s) to %s: %s after %s tokens", role, purpose, model,
                            CUT_OFF, completion_tokens)
            return (answer, prompt_tokens, completion_tokens, response,
                    CUT_OFF if answer.cut_off else None)

        return await self._with_retries(role, purpose, model, send)

    async def embed(self, model: str, texts: list[str], purpose: str,
                    api_base: str | None = None) -> list[list[float]]:
        """One embedding vector per text (in order), in one request, after retries; the call
        is recorded with role "embed" and counts against the cost budget like a chat call.

        `api_base` defaults to the client's (`--api-base`): an embedding model served beside
        the chat model needs nothing more.
        """
        if not texts:
            return []
        self._preflight(model)
        lib = _lib()
        kwargs: dict[str, Any] = {"model": model, "input": list(texts),
                                  "timeout": self.config.timeout_s, "max_retries": 0}
        base = api_base or self.config.api_base
        if base:
            kwargs["api_base"] = base

        async def send() -> tuple[list[list[float]], int | None, int | None, Any, str | None]:
            response = await lib.aembedding(**kwargs)
            vectors = _read_embeddings(response, len(texts))
            usage = getattr(response, "usage", None)
            return vectors, getattr(usage, "prompt_tokens", None), None, response, None

        return await self._with_retries("embed", purpose, model, send)

    async def _with_retries(self, role: str, purpose: str, model: str,
                            send: Callable[[], Any]) -> Any:
        """`send()`'s result after retries: one `CallRecord` per attempt, the concurrency cap
        and the budget check around each. `send` returns (result, prompt tokens, completion
        tokens, the raw response for costing, a note for the record or None)."""
        lib = _lib()
        attempts = self.config.max_retries + 1
        for attempt in range(1, attempts + 1):
            async with self._semaphore():
                # Checked once the slot is ours: calls that finished while we queued count.
                self._check_budget()
                started, t0 = time.time(), time.monotonic()
                try:
                    # litellm enforces `timeout`; the outer bound is a safety net should a
                    # provider path ignore it, so a call can never hang the search.
                    result, prompt_tokens, completion_tokens, response, note = (
                        await asyncio.wait_for(send(), self.config.timeout_s + 30))
                except asyncio.CancelledError:
                    self._emit(role, purpose, model, None, None, None, t0, "cancelled", attempt,
                               started)
                    raise
                except Exception as exc:  # noqa: BLE001 - every failure is classified below
                    failure = _classify(exc)
                    self._emit(role, purpose, model, None, None, None, t0, failure.summary,
                               attempt, started)
                else:
                    cost = self._cost(lib, model, response, prompt_tokens, completion_tokens)
                    if cost is not None:
                        self._spent += cost
                    self._emit(role, purpose, model, prompt_tokens, completion_tokens, cost, t0,
                               note, attempt, started)
                    log.debug("%s call (%s) to %s took %.2f s", role, purpose, model,
                              time.monotonic() - t0)
                    return result
            if not failure.retryable:
                raise self._fatal(model, failure)
            if attempt == attempts:
                break
            delay = self._backoff(attempt, failure.retry_after_s)
            log.warning("%s call (%s) to %s failed (%s); retry %d/%d in %.1f s", role, purpose,
                        model, failure.kind, attempt, self.config.max_retries, delay)
            await asyncio.sleep(delay)
        where = f" at {redact(self.config.api_base)}" if self.config.api_base else ""
        raise ModelUnavailable(
            f"model {model!r}{where} failed {attempts} attempts (last: {failure.summary}); "
            + _advice(failure)
        )

    def _fatal(self, model: str, failure: _Failure) -> LlmError:
        advice = {
            "missing API key": "set the provider's API key environment variable "
                               "(e.g. OPENAI_API_KEY; any value for a local server)",
            "model not found (404)": "check --model / --coder-model against what the server "
                                     "serves",
            "unknown provider": "give a litellm model id with its provider, e.g. "
                                "openai/gpt-4o-mini",
            "prompt too long": "the prompt exceeds the model's context window; lower the "
                               "context budget or choose a model with a larger window",
        }.get(failure.kind)
        if advice is None and failure.kind.startswith("key rejected"):
            advice = "check the provider's API key environment variable"
        if advice is None:
            advice = "the request was refused; check the model id and its parameters"
        return failure.fatal(f"model {model!r}: {failure.summary}; {advice}")

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        base = self.config.backoff_base_s * (2 ** (attempt - 1))
        # "Equal jitter": at least half the exponential step, so a herd of callers spreads out
        # without any of them retrying immediately.
        delay = base / 2 + self._rng.uniform(0, base / 2)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self.config.backoff_max_s)

    def _cost(self, lib: ModuleType, model: str, response: Any, prompt_tokens: int | None,
              completion_tokens: int | None) -> float | None:
        price = self.config.prices.get(model)
        if price is None and "/" in model:
            price = self.config.prices.get(model.split("/", 1)[1])
        if price is not None:
            return ((prompt_tokens or 0) * price[0] + (completion_tokens or 0) * price[1]) / 1e6
        try:
            cost = lib.completion_cost(completion_response=response, model=model)
        except Exception:  # noqa: BLE001 - litellm raises (various types) for unpriced models
            cost = None
        if cost is None and model not in self._unpriced_warned:
            self._unpriced_warned.add(model)
            log.warning("litellm has no price for %s; its calls cost nothing in the budget "
                        "unless prices are configured for it", model)
        return None if cost is None else float(cost)

    def _emit(self, role: str, purpose: str, model: str, prompt_tokens: int | None,
              completion_tokens: int | None, cost: float | None, t0: float, error: str | None,
              attempt: int, started: float) -> None:
        if self._on_record is None:
            return
        self._on_record(CallRecord(
            role=role, purpose=purpose, model=model, prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens, cost_usd=cost,
            latency_s=time.monotonic() - t0, error=error, attempt=attempt, started_at=started,
        ))


def _read_response(response: Any) -> tuple[str, str | None, int | None, int | None]:
    """Text, finish reason and token counts of a litellm ModelResponse; garbage raises
    ValueError."""
    try:
        choice = response.choices[0]
        message = choice.message
    except (AttributeError, IndexError, TypeError):
        raise ValueError("malformed answer: no 'choices' in the response") from None
    text = getattr(message, "content", None) or ""
    finish = getattr(choice, "finish_reason", None)
    usage = getattr(response, "usage", None)
    prompt_tokens = getattr(usage, "prompt_tokens", None)
    completion_tokens = getattr(usage, "completion_tokens", None)
    return str(text), (str(finish) if finish else None), prompt_tokens, completion_tokens


def _read_embeddings(response: Any, expected: int) -> list[list[float]]:
    """The vectors of a litellm EmbeddingResponse, in input order; garbage raises ValueError."""
    try:
        rows = [row if isinstance(row, dict) else vars(row) for row in response.data]
        rows = sorted(rows, key=lambda row: int(row.get("index", 0)))
        vectors = [[float(x) for x in row["embedding"]] for row in rows]
    except (AttributeError, KeyError, TypeError, ValueError):
        raise ValueError("malformed answer: no 'data' embeddings in the response") from None
    if len(vectors) != expected:
        raise ValueError(f"malformed answer: {len(vectors)} embeddings for {expected} texts")
    return vectors


def _advice(failure: _Failure) -> str:
    if failure.kind == "malformed answer":
        return ("the server does not answer in the OpenAI chat format; check that --api-base "
                "points at an OpenAI-compatible /v1 endpoint")
    if failure.kind == "rate limited (429)":
        return "the provider keeps rate-limiting; lower the concurrency or try later"
    if failure.kind in ("connection failed", "timeout"):
        return "check that the model server is up and reachable (and --api-base), or try later"
    return "the model server keeps failing; try later or choose another model"
