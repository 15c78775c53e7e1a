"""Strict JSON: what clients send is checked for two things msgspec lets through, before msgspec decodes it.

- A key given twice in one object. msgspec keeps the last value, so ``{"side": "sell", ..., "side": "buy"}``
  bought, and a log or a proxy that reads the first value sees another request than the one that ran.
- Nesting deeper than the interpreter's recursion limit. msgspec recurses once per level while it skips a value
  it has no field for (looking for a union's tag, say), and 10,000 levels ended in a ``RecursionError``.

``check`` parses the text with the standard library's C parser, which calls a hook with every object's pairs
and raises ``RecursionError`` (cleanly, with nothing to undo) on deep nesting. On an order's body it costs about
twice what msgspec's decoding does: a few microseconds, against a hundred or so that the server spends on the
request.
"""

import json


class Malformed(ValueError):
    """The text is not JSON that the API takes; the message says what to change."""


def check(text: str | bytes) -> None:
    """Raise ``Malformed`` unless ``text`` is one JSON value (UTF-8, when bytes) with unique keys in every object."""
    try:
        _decoder.decode(text if isinstance(text, str) else text.decode())
    except Malformed:
        raise
    except RecursionError:
        raise Malformed("The JSON is nested too deeply.") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of over 4,300 digits
        raise Malformed(f"Not valid JSON: {exc}.") from None


def _unique(pairs: list[tuple[str, object]]) -> None:
    if len(pairs) > 1 and len({key for key, _ in pairs}) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise Malformed(f"The key {key!r} is given more than once in one object; give it once.")
            seen.add(key)


# Built once: json.loads makes a decoder per call when given a hook, and guesses the encoding of bytes.
_decoder = json.JSONDecoder(object_pairs_hook=_unique)
