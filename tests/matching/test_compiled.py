"""The compiled order book (setup.py): built from the sources as they are, and byte for byte the pure-Python one."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

import matching
import matching.book
import matching.level
import matching.side
from matching.book import OrderBook
from tests.matching.test_determinism import SEEDS, TICK, _commands, _run

COMPILED = (matching.level, matching.side, matching.book)
ROOT = Path(__file__).resolve().parents[2]


def _events_and_book(seed: int) -> bytes:
    """The events of one seeded command stream, then the resting orders it leaves, as JSON."""
    book = OrderBook(TICK)
    return _run(book, list(_commands(seed, 3_000))) + msgspec.json.encode(book.resting_orders())


@pytest.mark.parametrize("module", COMPILED, ids=lambda module: module.__name__)
def test_compiled_module_is_not_older_than_the_sources(module) -> None:
    binary = Path(module.__file__)
    if binary.suffix == ".py":
        pytest.skip(f"{module.__name__} runs as plain Python")
    # Every module's sources, not only its own: book and side compile against the .pxd of the modules they cimport.
    names = [other.__name__.rpartition(".")[2] for other in COMPILED]
    for source in [binary.with_name(name + suffix) for name in names for suffix in (".py", ".pxd")]:
        assert source.stat().st_mtime <= binary.stat().st_mtime, (
            f"{source.name} changed after {binary.name} was built, so the tests would run the old code: rebuild with "
            f"`make install` (or `pip install -e .`), or delete {binary.name} to run the plain Python module"
        )


def test_compiled_and_pure_python_books_give_the_same_bytes(tmp_path: Path) -> None:
    if all(Path(module.__file__).suffix == ".py" for module in COMPILED):
        pytest.skip("the book runs as plain Python: nothing compiled to compare it with")
    # The child imports a copy of the package's sources first, so it runs them as plain Python.
    shutil.copytree(Path(matching.__file__).parent, tmp_path / "matching",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    child = (
        "import sys, matching.book\n"
        f"assert matching.book.__file__.startswith({str(tmp_path)!r}), matching.book.__file__\n"
        "from tests.matching.test_compiled import _events_and_book\n"
        "sys.stdout.buffer.write(b'\\n'.join(_events_and_book(int(seed)) for seed in sys.argv[1:]))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(tmp_path), str(ROOT)))}
    pure = subprocess.run([sys.executable, "-c", child, *map(str, SEEDS)], cwd=tmp_path, env=env, capture_output=True)
    assert pure.returncode == 0, pure.stderr.decode()
    assert pure.stdout == b"\n".join(_events_and_book(seed) for seed in SEEDS)
