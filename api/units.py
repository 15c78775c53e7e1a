"""Exact conversion between the API's decimal strings and the engine's integer micro-yuan.

"1.85" CNY is 1,850,000 micro-yuan. A string with more than six decimals, an exponent, a sign where none is
allowed, or anything that is not a plain decimal is refused with a ``FieldError`` naming the field; nothing
is ever rounded.
"""

import re

MICRO = 1_000_000
# Used with fullmatch: ``$`` would also match before a final newline, and take "1\n".
_DECIMAL = re.compile(r"(0|[1-9][0-9]{0,14})(?:\.([0-9]{1,6}))?")
_TOO_PRECISE = re.compile(r"(0|[1-9][0-9]{0,14})\.[0-9]{7,}")


class FieldError(ValueError):
    """One request field is invalid; ``code`` is the stable reason."""

    def __init__(self, field: str, code: str, detail: str) -> None:
        super().__init__(detail)
        self.field = field
        self.code = code
        self.detail = detail


def to_micro(text: str, field: str) -> int:
    """Parse a positive CNY amount such as "1.85" into micro-yuan, exactly."""
    match = _DECIMAL.fullmatch(text)
    if match is None:
        if _TOO_PRECISE.fullmatch(text):
            raise FieldError(field, "too_precise", f"{field} has more than 6 decimals (1 micro-yuan): {text!r}")
        raise FieldError(field, "invalid_decimal", f"{field} must be a decimal string like \"1.85\", got {text!r}")
    whole, fraction = match.groups()
    value = int(whole) * MICRO + int((fraction or "").ljust(6, "0"))
    if value <= 0:
        raise FieldError(field, "invalid_decimal", f"{field} must be greater than zero")
    return value


def from_micro(value: int) -> str:
    """Format micro-yuan as a plain CNY decimal string without trailing zeros: 1850000 -> "1.85"."""
    sign = "-" if value < 0 else ""
    whole, fraction = divmod(abs(value), MICRO)
    if not fraction:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{fraction:06d}".rstrip("0")
