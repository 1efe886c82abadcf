"""API keys and upload-URL signatures.

A key is ``mlps_`` followed by 43 URL-safe random characters. The server stores its SHA-256 hash and a short
prefix to recognise it in listings, never the key itself. Upload URLs are signed with HMAC-SHA256 over the
file id, run id, key id, file name and expiry, with a secret that lives in the database.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from typing import Final

__all__ = ["KEY_PATTERN", "generate_key", "hash_key", "key_prefix", "sign_upload", "verify_upload"]

logger = logging.getLogger(__name__)

KEY_PATTERN: Final = re.compile(r"^mlp[si]_[A-Za-z0-9_\-]{4,200}$")
PREFIX_LENGTH: Final = 12


def generate_key() -> str:
    """A new random key, ``mlps_…``."""
    return "mlps_" + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The hash under which a key is stored and looked up."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def key_prefix(key: str) -> str:
    """The first characters of a key: enough to tell keys apart in a listing, too few to use."""
    return key[:PREFIX_LENGTH]


def _payload(file_id: int, run_id: int, key_id: int, name: str, expires: int) -> bytes:
    return f"{file_id}\n{run_id}\n{key_id}\n{name}\n{expires}".encode()


def sign_upload(secret: bytes, file_id: int, run_id: int, key_id: int, name: str, expires: int) -> str:
    """The signature of an upload URL (hex)."""
    return hmac.new(secret, _payload(file_id, run_id, key_id, name, expires), hashlib.sha256).hexdigest()


def verify_upload(
    secret: bytes, signature: str, file_id: int, run_id: int, key_id: int, name: str, expires: int
) -> bool:
    """True when ``signature`` is this server's signature of these values (compared in constant time)."""
    return hmac.compare_digest(sign_upload(secret, file_id, run_id, key_id, name, expires), signature)
