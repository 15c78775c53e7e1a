"""A simulated provider: a small OpenAI-compatible server with deterministic replies and usage.

    python -m api.inference.simulated --port 8101 --model deepseek-v3

``POST /v1/chat/completions`` answers every request the same way for the same messages: the reply is
``"<model> says: "`` followed by the words of the last message, repeated until ``max_tokens`` words (at most
``REPLY_WORDS``). One word is one token: ``prompt_tokens`` is the number of words in all the messages plus
``TOKENS_PER_MESSAGE`` per message, ``completion_tokens`` the words of the reply. Streamed (``stream: true``),
each word is one chunk, and with ``stream_options.include_usage`` the last chunk carries the usage, as OpenAI's
API does. ``GET /v1/models`` lists the one model. A request whose bearer token is not ``--api-key`` (when one is
set) gets 401.

For tests and demos of failure, ``--fail`` makes it ``drop`` every call (the connection breaks after the answer's
headers, before any token) or answer ``error`` (500); ``--delay-ms`` waits before the first token.

The demo (``api.demo``) starts one per compute instrument, each in a process of its own, and the exchange reaches
them over HTTP as it would any provider.
"""

import argparse
import asyncio
import time

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

REPLY_WORDS = 64
TOKENS_PER_MESSAGE = 4
FAILURES = ("drop", "error")


class Broken(Exception):
    """Raised mid-answer by a provider told to drop its calls: the server then breaks the connection."""


def words_of(messages: list) -> list[str]:
    found: list[str] = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            found.extend(content.split())
        elif isinstance(content, list):
            found.extend(w for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
                         for w in part["text"].split())
    return found


def reply(model: str, messages: list, max_tokens: int) -> tuple[list[str], int]:
    """The reply's words and the prompt's tokens."""
    prompt = words_of(messages)
    last = words_of(messages[-1:]) or ["nothing"]
    words = [model, "says:"]
    while len(words) < min(max_tokens, REPLY_WORDS):
        words.extend(last)
    return words[: min(max_tokens, REPLY_WORDS)], len(prompt) + TOKENS_PER_MESSAGE * len(messages)


def create_app(model: str, api_key: str = "", fail: str | None = None, delay_ms: float = 0.0) -> Starlette:
    """The simulated provider of ``model``."""
    calls = {"n": 0}

    async def completions(request: Request) -> Response:
        if api_key and request.headers.get("authorization") != f"Bearer {api_key}":
            return JSONResponse({"error": {"message": "bad key", "type": "invalid_request_error"}}, 401)
        body = msgspec.json.decode(await request.body())
        calls["n"] += 1
        if fail == "error":
            return JSONResponse({"error": {"message": "simulated failure", "type": "server_error"}}, 500)
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or REPLY_WORDS
        words, prompt_tokens = reply(model, body.get("messages") or [], max_tokens)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words),
                 "total_tokens": prompt_tokens + len(words)}
        created = int(time.time())
        ident = f"chatcmpl-sim-{calls['n']}"
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(stream(ident, created, words, usage if include_usage else None),
                                     media_type="text/event-stream")
        if fail == "drop":
            return StreamingResponse(broken(), media_type="application/json")
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        return JSONResponse({
            "id": ident, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(words)},
                         "finish_reason": "length" if len(words) >= max_tokens else "stop"}],
            "usage": usage,
        })

    async def broken():
        yield b""
        raise Broken("simulated provider dropping the call")

    async def stream(ident: str, created: int, words: list[str], usage: dict | None):
        if fail == "drop":
            yield b": starting\n\n"
            raise Broken("simulated provider dropping the call")
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        for n, word in enumerate(words):
            delta = {"content": word if n == 0 else " " + word}
            if n == 0:
                delta["role"] = "assistant"
            yield chunk(ident, created, [{"index": 0, "delta": delta, "finish_reason": None}])
        yield chunk(ident, created, [{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if usage is not None:
            yield chunk(ident, created, [], usage)
        yield b"data: [DONE]\n\n"

    def chunk(ident: str, created: int, choices: list, usage: dict | None = None) -> bytes:
        body = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": choices, "usage": usage}
        return b"data: " + msgspec.json.encode(body) + b"\n\n"

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": model, "object": "model", "created": 0,
                                                          "owned_by": "simulated"}]})

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"]),
                             Route("/v1/models", models)])


def main() -> None:
    parser = argparse.ArgumentParser(description="A simulated OpenAI-compatible provider with deterministic replies.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--model", default="simulated")
    parser.add_argument("--api-key", default="")
    parser.add_argument("--fail", choices=FAILURES)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    options = parser.parse_args()
    uvicorn.run(create_app(options.model, options.api_key, options.fail, options.delay_ms), host=options.host,
                port=options.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
