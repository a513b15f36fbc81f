"""A real HTTP server speaking the OpenAI chat-completions API, scripted per test.

It runs `http.server.ThreadingHTTPServer` on 127.0.0.1 with a free port in a background thread,
so litellm (or any OpenAI client) reaches it over real loopback HTTP. It answers

- `POST /v1/chat/completions` — non-streaming JSON, or SSE chunks when the request says
  `"stream": true` (with a final usage chunk when `stream_options.include_usage` is set);
- `POST /v1/embeddings` — one vector per input text from `embedder(text)` (set with
  `OpenAIServer(embedder=fn)`; by default a hashed bag of words, so texts sharing words have a
  high cosine), as JSON floats or base64 float32 when `encoding_format` is "base64";
- `GET /v1/models` — the model ids it was given.

By default any model name is served; `OpenAIServer(models=["a", "b"])` answers other names with
a 404 "model not found", as a real server does.

Usage::

    from tests.support.openai_server import OpenAIServer, Reply

    with OpenAIServer() as srv:                       # srv.url == "http://127.0.0.1:PORT/v1"
        srv.enqueue(Reply.error(429, retry_after=0), "first real answer")
        srv.script(lambda req: "answer for " + req["messages"][-1]["content"][:20])
        ...  # call litellm with model="openai/test", api_base=srv.url, OPENAI_API_KEY=sk-test
        assert srv.requests[0].json["model"] == "test"
        assert "Propose" in srv.chat_requests[-1].prompt   # all message contents joined
        assert srv.requests[0].headers["authorization"] == "Bearer sk-test"  # names lower-case
        assert srv.max_in_flight <= 4

For an end-to-end run of the whole engine::

    OPENAI_API_KEY=sk-test ideaforge run ENV --model openai/test --api-base <srv.url>

Where answers come from, in order: the queue (`enqueue`, first in first out), then the responder
set with `script(fn)` (or given as `OpenAIServer(responder=fn)`), else the fixed text "ok".
A responder receives the request's JSON body and returns a `str` (the assistant's text) or a
`Reply` (any of the shapes below); it runs on the server's handler thread, so it must be
thread-safe when the client sends calls concurrently.

`Reply` shapes:

- `Reply.text("...", delay_s=0, prompt_tokens=None, completion_tokens=None)` — a normal answer;
  token counts default to a whitespace word count of the prompt and the answer.
- `Reply.text(..., finish_reason="length")` or its short form `Reply.cut("...")` — an answer
  the model's output limit cut off (`finish_reason: "length"`), as a provider reports one that
  ran into `max_tokens`; give it the partial text.
- `Reply.error(status, retry_after=None, message=...)` — an OpenAI-style error body with that
  HTTP status (429, 500, 503, 401, 404, ...) and an optional `Retry-After` header (seconds).
- `Reply.garbage(body=b"...")` — status 200 with a body that is not the expected JSON.
- `Reply.drop()` — the connection is closed without any answer.
- any shape takes `delay_s`: the server waits that long before answering (a slow model). A
  delay is cut short when the server stops, so a test never waits on it.

`srv.clear()` forgets the queue and the recorded requests (the responder stays).

Every request is recorded in `srv.requests` (a list of `Request`, in arrival order, including
ones whose reply was an error); `srv.max_in_flight` is the most chat-completion requests that
were being handled at the same moment, and `srv.in_flight` the number now. All of this is safe to
read from the test's thread while the server runs.
"""

from __future__ import annotations

import base64
import json
import socket
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

__all__ = ["OpenAIServer", "Reply", "Request", "Responder", "bag_of_words_vector"]


@dataclass(frozen=True)
class Reply:
    """One scripted answer. Build it with the class methods rather than by hand."""

    content: str | None = "ok"
    status: int = 200
    delay_s: float = 0.0
    retry_after: float | None = None
    error_message: str | None = None
    raw_body: bytes | None = None  # replaces the normal JSON (garbage answers)
    dropped: bool = False
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str = "stop"

    @classmethod
    def text(cls, content: str, *, delay_s: float = 0.0, prompt_tokens: int | None = None,
             completion_tokens: int | None = None, finish_reason: str = "stop") -> Reply:
        return cls(content=content, delay_s=delay_s, prompt_tokens=prompt_tokens,
                   completion_tokens=completion_tokens, finish_reason=finish_reason)

    @classmethod
    def cut(cls, partial: str, *, delay_s: float = 0.0, prompt_tokens: int | None = None,
            completion_tokens: int | None = None) -> Reply:
        """An answer cut off at the output limit: `partial` with finish_reason "length"."""
        return cls.text(partial, delay_s=delay_s, prompt_tokens=prompt_tokens,
                        completion_tokens=completion_tokens, finish_reason="length")

    @classmethod
    def error(cls, status: int, *, retry_after: float | None = None, message: str | None = None,
              delay_s: float = 0.0) -> Reply:
        return cls(content=None, status=status, retry_after=retry_after, delay_s=delay_s,
                   error_message=message or f"scripted error {status}")

    @classmethod
    def garbage(cls, body: bytes = b"<html>502 upstream says hello</html>",
                *, delay_s: float = 0.0) -> Reply:
        return cls(content=None, raw_body=body, delay_s=delay_s)

    @classmethod
    def drop(cls, *, delay_s: float = 0.0) -> Reply:
        return cls(content=None, dropped=True, delay_s=delay_s)


Responder = Callable[[dict[str, Any]], "str | Reply"]


@dataclass(frozen=True)
class Request:
    """What the server received (for assertions on prompts and parameters)."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    json: dict[str, Any] = field(default_factory=dict)
    received_at: float = 0.0

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.json.get("messages", []))

    @property
    def prompt(self) -> str:
        """All message contents joined, for `in` checks."""
        return "\n".join(_content_text(m.get("content")) for m in self.messages)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # the list-of-parts form
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


class OpenAIServer:
    """The server; use it as a context manager (or call `start()` / `stop()`)."""

    def __init__(self, responder: Responder | None = None,
                 models: Iterable[str] | None = None,
                 embedder: Callable[[str], list[float]] | None = None) -> None:
        self._lock = threading.Lock()
        self.embedder = embedder or bag_of_words_vector
        self._queue: deque[str | Reply] = deque()
        self._responder = responder
        self._requests: list[Request] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._counter = 0
        # None accepts any model name; a list makes other names a 404 (an "unknown model").
        self.models = tuple(models) if models is not None else None
        self._closing = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- scripting -----------------------------------------------------------------------------
    def script(self, responder: Responder | None) -> None:
        """Answer every request the queue does not cover with `responder(request_json)`."""
        with self._lock:
            self._responder = responder

    def enqueue(self, *replies: str | Reply) -> None:
        """Answer the next requests with these, in order, before the responder is asked."""
        with self._lock:
            self._queue.extend(replies)

    def clear(self) -> None:
        """Forget queued replies and recorded requests (the responder stays)."""
        with self._lock:
            self._queue.clear()
            self._requests.clear()
            self._max_in_flight = self._in_flight

    # -- observations --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The base URL to give as `api_base` (ends in /v1)."""
        if self._httpd is None:
            raise RuntimeError("OpenAIServer is not started; use it as a context manager")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[Request]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        with self._lock:
            return self._max_in_flight

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> Self:
        handler = type("_BoundHandler", (_Handler,), {"server_ref": self})
        # A listen backlog of 128, not the standard library's 5: an engine sends a dozen model
        # calls at once, and on a loaded machine the accept loop can fall behind them.
        server_class = type("_Server", (ThreadingHTTPServer,), {"request_queue_size": 128})
        httpd = server_class(("127.0.0.1", 0), handler)
        # Handler threads may sit in a scripted delay; they must neither keep the process alive
        # nor make stop() wait (the delay wakes on _closing anyway).
        httpd.daemon_threads = True
        httpd.block_on_close = False
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="openai-test-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- used by the handler -------------------------------------------------------------------
    def _record(self, request: Request) -> None:
        with self._lock:
            self._requests.append(request)

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            item: str | Reply | None = self._queue.popleft() if self._queue else None
            responder = self._responder
            self._counter += 1
        if item is None:
            item = responder(body) if responder is not None else "ok"
        return Reply.text(item) if isinstance(item, str) else item

    def _next_id(self) -> str:
        with self._lock:
            self._counter += 1
            return f"chatcmpl-test{self._counter}"

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._closing.wait(seconds)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so that clients keep connections alive like they do with real providers.
    protocol_version = "HTTP/1.1"
    server_ref: OpenAIServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log; tests read `requests` instead."""

    def do_GET(self) -> None:
        srv = self.server_ref
        srv._record(Request("GET", self.path, _headers(self), {}, time.time()))
        if self.path.rstrip("/").endswith("/models"):
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "test"}
                    for m in (srv.models or ("test",))]
            self._send_json(200, {"object": "list", "data": data})
        else:
            self._send_json(404, _error_body(f"no route GET {self.path}", "not_found"))

    def do_POST(self) -> None:
        srv = self.server_ref
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {"_unparsed": raw.decode("utf-8", "replace")}
        srv._record(Request("POST", self.path, _headers(self), body, time.time()))
        if self.path.rstrip("/").endswith("/embeddings"):
            self._answer_embeddings(body)
            return
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send_json(404, _error_body(f"no route POST {self.path}", "not_found"))
            return
        srv._enter()
        try:
            self._answer_chat(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout); nothing to answer any more
        finally:
            srv._leave()

    def _answer_chat(self, body: dict[str, Any]) -> None:
        srv = self.server_ref
        model = str(body.get("model", "test"))
        if srv.models is not None and model not in srv.models:
            self._send_json(404, _error_body(f"The model `{model}` does not exist",
                                             "model_not_found"))
            return
        try:
            reply = srv._next_reply(body)
        except Exception as exc:  # noqa: BLE001 - a broken responder shows as a 500, not a hang
            reply = Reply.error(500, message=f"test responder raised {exc!r}")
        srv._wait(reply.delay_s)
        if reply.dropped:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if reply.raw_body is not None:
            self._send_raw(200, reply.raw_body, "application/json")
            return
        if reply.status != 200:
            headers = {}
            if reply.retry_after is not None:
                headers["Retry-After"] = f"{reply.retry_after:g}"
            kind = "rate_limit_exceeded" if reply.status == 429 else "server_error"
            self._send_json(reply.status, _error_body(reply.error_message or "", kind), headers)
            return
        text = reply.content or ""
        prompt_tokens = reply.prompt_tokens
        if prompt_tokens is None:
            prompt_tokens = sum(len(_content_text(m.get("content")).split())
                                for m in body.get("messages", []) if isinstance(m, dict))
        completion_tokens = reply.completion_tokens
        if completion_tokens is None:
            completion_tokens = len(text.split())
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        ident, created = srv._next_id(), int(time.time())
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._stream(ident, created, model, text, reply.finish_reason,
                         usage if include_usage else None)
            return
        self._send_json(200, {
            "id": ident, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "finish_reason": reply.finish_reason,
                         "message": {"role": "assistant", "content": text}}],
            "usage": usage,
        })

    def _answer_embeddings(self, body: dict[str, Any]) -> None:
        texts = body.get("input", [])
        texts = [texts] if isinstance(texts, str) else list(texts)
        rows = []
        for i, text in enumerate(texts):
            vector = [float(x) for x in self.server_ref.embedder(str(text))]
            if body.get("encoding_format") == "base64":  # what the openai client asks for
                packed = struct.pack(f"<{len(vector)}f", *vector)
                rows.append({"object": "embedding", "index": i,
                             "embedding": base64.b64encode(packed).decode()})
            else:
                rows.append({"object": "embedding", "index": i, "embedding": vector})
        tokens = sum(len(str(t).split()) for t in texts)
        self._send_json(200, {"object": "list", "data": rows, "model": body.get("model", "test"),
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    def _stream(self, ident: str, created: int, model: str, text: str, finish: str,
                usage: dict[str, int] | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def chunk(delta: dict[str, Any], finish_reason: str | None,
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
            out: dict[str, Any] = {
                "id": ident, "object": "chat.completion.chunk", "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }
            out.update(extra or {})
            return out

        pieces = [text[i:i + 16] for i in range(0, len(text), 16)] or [""]
        events = [chunk({"role": "assistant", "content": ""}, None)]
        events += [chunk({"content": p}, None) for p in pieces]
        events.append(chunk({}, finish))
        if usage is not None:
            events.append({"id": ident, "object": "chat.completion.chunk", "created": created,
                           "model": model, "choices": [], "usage": usage})
        for event in events:
            self._write_chunk(f"data: {json.dumps(event)}\n\n".encode())
        self._write_chunk(b"data: [DONE]\n\n")
        self._write_chunk(b"")  # terminating zero-length chunk

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _send_json(self, status: int, payload: dict[str, Any],
                   headers: dict[str, str] | None = None) -> None:
        self._send_raw(status, json.dumps(payload).encode(), "application/json", headers)

    def _send_raw(self, status: int, data: bytes, content_type: str,
                  headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


def bag_of_words_vector(text: str, dims: int = 64) -> list[float]:
    """A deterministic stand-in embedding: word counts hashed into `dims` buckets."""
    vector = [0.0] * dims
    for word in text.lower().split():
        vector[zlib.crc32(word.encode()) % dims] += 1.0
    return vector


def _headers(handler: BaseHTTPRequestHandler) -> dict[str, str]:
    """Request headers with lower-case names (HTTP names are case-insensitive)."""
    return {k.lower(): v for k, v in handler.headers.items()}


def _error_body(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": code, "param": None, "code": code}}
