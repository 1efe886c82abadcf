"""Redaction of secrets before anything about the environment or the console reaches the store.

Three kinds of evidence mark a secret: its *name* (an environment variable or a command-line option whose
name says key, token, secret or password), its *shape* (well-known key formats, ``Bearer`` headers,
credentials inside a URL), and its *value* (the exact value of a secret-named environment variable or of
the run's API key, wherever it shows up again). Redaction errs on the side of hiding too much.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

__all__ = ["REDACTED", "Redactor", "is_secret_name"]

REDACTED: Final = "[REDACTED]"

# Words that make an environment variable's name secret, anywhere in it (MLOP_API_TOKEN, AWS_SECRET_KEY).
_ENV_WORDS: Final = (
    "KEY",
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "CREDENTIAL",
    "AUTH",
    "COOKIE",
    "SESSION",
)
# Parts of an option's name (split on - _ .) that make it secret: --api-key, --hf-token, db.password=...
# Whole parts only, so that --max-tokens or --keypoints stay readable.
_ARG_PARTS: Final = frozenset(
    {"key", "apikey", "token", "secret", "password", "passwd", "pwd", "credential", "credentials", "auth"}
)
# Well-known key formats: mlop keys, GitHub, Hugging Face, OpenAI-style, Slack, AWS access key ids, JWTs.
_SHAPES: Final = re.compile(
    r"\b(?:mlp[si]_[A-Za-z0-9_\-]{8,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_\-]{20,}|xox[abpors]-[A-Za-z0-9\-]{10,}|AKIA[0-9A-Z]{16}"
    r"|eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,})"
)
_BEARER: Final = re.compile(r"\b(Bearer|bearer|BEARER)(\s+)[A-Za-z0-9._~+/\-]{8,}=*")
_URL_CREDENTIALS: Final = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s:@]+(?::[^/\s@]*)?@")
# name=value or name: value in free text, for names that are unambiguous about being secret.
_ASSIGNMENT: Final = re.compile(
    r"(?i)((?:api[_\-]?key|secret|password|passwd|access[_\-]?token|auth[_\-]?token"
    r"|api[_\-]?token)[\w.\-]*[\"']?\s*[=:]\s*[\"']?)([^\s\"',;&]+)"
)
# Cheap tests that say whether a pattern above could match at all: most console lines hold no secret.
_SHAPE_HINT: Final = re.compile(r"mlp[si]_|gh[pousr]_|github_pat_|hf_|sk-|xox|AKIA|eyJ")
_ASSIGNMENT_HINT: Final = re.compile(r"(?i)key|secret|passw|token")
_MIN_VALUE_LENGTH: Final = 6


def is_secret_name(name: str) -> bool:
    """Whether an environment variable's name says it holds a secret."""
    upper = name.upper()
    return any(word in upper for word in _ENV_WORDS)


def _is_secret_option(name: str) -> bool:
    parts = re.split(r"[-_.]+", name.lstrip("-+").lower())
    return any(part in _ARG_PARTS for part in parts) or "apikey" in name.lower().replace("-", "")


class Redactor:
    """Removes secrets from text, argument lists, URLs and environment mappings.

    Args:
        environ: the environment whose secret-named variables' values are hidden wherever they appear.
        extra: more secret values (the run's API key).
    """

    def __init__(self, environ: Mapping[str, str] | None = None, extra: Iterable[str | None] = ()) -> None:
        env = os.environ if environ is None else environ
        values = {v for k, v in env.items() if is_secret_name(k)}
        values.update(v for v in extra if v)
        # Longest first, so a secret that contains another is replaced whole.
        self._values = sorted((v for v in values if len(v) >= _MIN_VALUE_LENGTH), key=len, reverse=True)

    def text(self, text: str) -> str:
        """A line of free text (console output, a diff) with every recognisable secret replaced."""
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        if "://" in text:
            text = _URL_CREDENTIALS.sub(lambda m: m.group(1) + REDACTED + "@", text)
        if _SHAPE_HINT.search(text):
            text = _SHAPES.sub(REDACTED, text)
        if "earer" in text or "EARER" in text:
            text = _BEARER.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
        if ("=" in text or ":" in text) and _ASSIGNMENT_HINT.search(text):
            text = _ASSIGNMENT.sub(lambda m: m.group(1) + REDACTED, text)
        return text

    def url(self, url: str) -> str:
        """A URL without the user name and password it may carry (a git remote with a token in it)."""
        return _URL_CREDENTIALS.sub(lambda m: m.group(1), url)

    def argv(self, argv: Sequence[str]) -> list[str]:
        """A command line with the values of secret options (``--api-key X``, ``--token=X``) hidden."""
        out: list[str] = []
        hide_next = False
        for arg in argv:
            if hide_next:
                out.append(REDACTED)
                hide_next = False
                continue
            if "=" in arg:
                name, _, _value = arg.partition("=")
                if _is_secret_option(name):
                    out.append(f"{name}={REDACTED}")
                    continue
            elif arg.startswith("-") and _is_secret_option(arg):
                hide_next = True
            out.append(self.text(arg))
        return out

    def environ(self, environ: Mapping[str, str]) -> dict[str, str]:
        """Environment variables, the values of secret-named ones (and secrets inside others) hidden."""
        return {k: REDACTED if is_secret_name(k) else self.text(v) for k, v in sorted(environ.items())}
