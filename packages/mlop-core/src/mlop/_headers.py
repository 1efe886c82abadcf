"""How a text value that HTTP cannot carry as it is (a run or project name) travels in a request header.

HTTP header values are bytes from a small set: printable ASCII, with no line breaks, and leading and
trailing spaces are stripped on the way. A value that keeps to printable ASCII, with no space at either
end, is sent exactly as it is, so a plain-ASCII request is byte-identical to the stock protocol's. Any
other value is sent in the extended notation of RFC 8187 with UTF-8, and no language::

    X-Run-Name: UTF-8''%E8%AE%AD%E7%BB%83-%CE%B4-%F0%9F%9A%80

that is ``UTF-8''`` followed by the value's UTF-8 bytes, percent-encoded except for ASCII letters, digits
and ``!#$&+-.^_`|~``. A plain value that itself starts with ``UTF-8''`` (in any case) is encoded too, so
that decoding is never ambiguous. The same value travels in full in the JSON body wherever the protocol
has a field for it (``runName``, ``projectName``), which stays the authority.

Used by the client to build headers and by ``mlop-server`` to read them.
"""

from __future__ import annotations

import urllib.parse
from typing import Final

__all__ = ["MARKER", "decode_header_value", "encode_header_value", "header_safe"]

#: What starts an encoded value (RFC 8187 ``ext-value`` with the UTF-8 charset and no language).
MARKER: Final = "UTF-8''"
# RFC 8187 attr-char, less the letters and digits that quote() keeps anyway.
_SAFE: Final = "!#$&+-.^_`|~"


def header_safe(value: str) -> bool:
    """Whether ``value`` can be sent as it is: printable ASCII, no space at either end, no marker."""
    if not value.isascii() or not value.isprintable():
        return False
    if value != value.strip(" \t"):
        return False
    return value[: len(MARKER)].upper() != MARKER


def encode_header_value(value: str) -> str:
    """The header form of ``value``: itself when :func:`header_safe`, else ``UTF-8''`` percent-encoding.

    A lone surrogate (which no UTF-8 text can hold) is sent as ``?``; callers refuse such names first.
    """
    if header_safe(value):
        return value
    raw = value.encode("utf-8", "replace") if _has_surrogate(value) else value.encode("utf-8")
    return MARKER + urllib.parse.quote(raw, safe=_SAFE)


def decode_header_value(value: str) -> str:
    """The text a header carries: undoes :func:`encode_header_value`; any other value is returned as is.

    A malformed encoding (bytes that are not UTF-8) is returned as received, never raised.
    """
    if value[: len(MARKER)].upper() != MARKER:
        return value
    try:
        return urllib.parse.unquote(value[len(MARKER) :], encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        return value


def _has_surrogate(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
