"""A short ``make bench-inference``: a real ``tokex serve`` and a simulated provider in subprocesses, calls through
the gateway and to the provider alone, every call answered."""

import pytest

from loadtest.bench_inference import main, parse_args

pytestmark = pytest.mark.slow  # two servers in subprocesses


async def test_a_short_inference_benchmark_answers_every_call(fresh_database_url: str, capsys) -> None:
    await main(parse_args(["--duration", "1", "--warmup", "0.5", "--rate", "20", "--connections", "4",
                           "--database-url", fresh_database_url]))
    printed = capsys.readouterr().out
    assert "through tokex: " in printed and "(20 of 20 started)" in printed, printed
    assert "errors" not in printed and "tokex adds: p50" in printed, printed
