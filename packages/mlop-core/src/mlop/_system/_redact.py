"""Redaction of secrets before anything about the environment or the console reaches the store.

Three kinds of evidence mark a secret: its *name* (an environment variable, a command-line option or a
``name=value`` pair whose name says token, secret, key, pass, pwd, credential, webhook, auth, cookie,
session, private or dsn), its *shape* (well-known key formats, PEM blocks, ``Bearer`` headers, credentials
inside a URL, webhook URLs), and its *value* (the exact value of a secret-named environment variable or of
the run's API key, wherever it shows up again). The same rules apply to the environment, the command line,
the git diff and the console. Redaction errs on the side of hiding too much.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

__all__ = ["REDACTED", "LineRedactor", "Redactor", "is_secret_name"]

REDACTED: Final = "[REDACTED]"

# The shell's working directories: their names hold "pwd", their values are paths.
_NOT_SECRET: Final = frozenset({"PWD", "OLDPWD"})
# Parts of a name (split on - _ . and camelCase) that make it secret, by the test each word needs so that
# names such as max_tokens, keypoints, tokenizer or GIT_AUTHOR_NAME stay readable.
_CONTAINS: Final = (
    "secret",
    "passw",
    "passphrase",
    "pwd",
    "credential",
    "webhook",
    "cookie",
    "session",
    "private",
)
_ENDS: Final = ("token", "key", "dsn", "auth", "pass")
_EXACT: Final = frozenset({"creds", "authorization"})
_PARTS: Final = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")

# Well-known key formats: mlop, GitHub, Hugging Face, OpenAI and Anthropic, Slack, AWS key ids, Google,
# GitLab, Stripe, npm, PyPI, JWTs.
_SHAPES: Final = re.compile(
    r"\b(?:mlp[si]_[A-Za-z0-9_\-]{8,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_\-]{20,}|xox[abeoprs]-[A-Za-z0-9\-]{10,}|xapp-[A-Za-z0-9\-]{10,}"
    r"|(?:AKIA|ASIA|AIDA|AROA|AGPA)[0-9A-Z]{16}|AIza[0-9A-Za-z_\-]{30,}|glpat-[0-9A-Za-z_\-]{20,}"
    r"|[rsp]k_(?:live|test)_[0-9A-Za-z]{16,}|npm_[A-Za-z0-9]{30,}|pypi-[A-Za-z0-9_\-]{40,}"
    r"|eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,})"
)
# Cheap tests (substrings) that say whether a pattern could match at all: most console lines hold no secret.
_SHAPE_HINTS: Final = (
    "mlps_", "mlpi_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "hf_", "sk-", "k_live_",
    "k_test_", "xox", "xapp-", "AKIA", "ASIA", "AIDA", "AROA", "AGPA", "AIza", "glpat-", "npm_", "pypi-",
    "eyJ",
)  # fmt: skip
_BEARER: Final = re.compile(r"\b(Bearer|bearer|BEARER|Basic|basic|BASIC)(\s+)[A-Za-z0-9._~+/\-]{8,}=*")
# A URL's user and password: user@ (no ':' or '/'), or user:password@ where the password may hold anything
# but spaces and quotes (an unescaped '/' or '@' in a password still hides the whole of it).
_URL_CREDENTIALS: Final = re.compile(
    r"(?i)\b([a-z][a-z0-9+.\-]*://)(?:[^\s/@\"'<>:]+@|[^\s/@\"'<>:]*:[^\s\"'<>]*@)"
)
# Webhook URLs are credentials in their path: keep the host, hide the rest.
_WEBHOOK: Final = re.compile(
    r"(?i)\b(https?://(?:hooks\.slack\.com/|[^\s/\"'<>]+/(?:[^\s\"'<>]*/)?(?:webhooks?|hooks)/))"
    r"[^\s\"'<>]+"
)
# name=value, name: value, "name": "value" in free text; the name decides (see is_secret_name).
_ASSIGNMENT: Final = re.compile(r"([A-Za-z_][\w.\-]*)([\"']?\s*[=:]\s*)(\"[^\"\n]*\"|'[^'\n]*'|[^\s\"',;&]+)")
_NAME_HINTS: Final = (
    "secret", "pass", "pwd", "credential", "webhook", "cookie", "session", "private", "token", "key", "dsn",
    "auth", "creds",
)  # fmt: skip
_SCHEMES: Final = frozenset({"Bearer", "bearer", "BEARER", "Basic", "basic", "BASIC"})
_PEM: Final = re.compile(r"-----BEGIN [A-Z0-9 ]*-----.*?(?:-----END [A-Z0-9 ]*-----|\Z)", re.DOTALL)
_PEM_BEGIN: Final = re.compile(r"-----BEGIN [A-Z0-9 ]*-----")
_PEM_END: Final = re.compile(r"-----END [A-Z0-9 ]*-----")
# A line inside a PEM block: base64, or a header such as ``Proc-Type: 4,ENCRYPTED``, or blank.
_PEM_BODY: Final = re.compile(r"^[\s+\-]?(?:[A-Za-z0-9+/=]+|[A-Za-z\-]+:.*)?\s*$")
_PEM_MAX_LINES: Final = 400
_MIN_VALUE_LENGTH: Final = 6
_PLAIN_WORD: Final = re.compile(r"[a-z]{1,12}")


def _name_parts(name: str) -> list[str]:
    return [part.lower() for part in _PARTS.findall(name)]


@functools.lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    """Whether a name (an environment variable, an option, a key in free text) says it holds a secret."""
    if name.upper() in _NOT_SECRET:
        return False
    for part in _name_parts(name):
        if part in _EXACT or part.endswith(_ENDS) or any(word in part for word in _CONTAINS):
            return True
        if part.startswith("auth") and not part.startswith("author"):
            return True
    return False


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
        # Longest first, so a secret that contains another is replaced whole. A short plain word (the
        # value of DESKTOP_SESSION or XDG_SESSION_TYPE: "ubuntu", "wayland") is no secret worth hiding
        # in every line that says it.
        self._values = sorted(
            (v for v in values if len(v) >= _MIN_VALUE_LENGTH and not _PLAIN_WORD.fullmatch(v)),
            key=len,
            reverse=True,
        )

    def __repr__(self) -> str:
        return f"<Redactor of {len(self._values)} known values>"

    def text(self, text: str) -> str:
        """Free text (a console line, a diff, a variable's value) with every recognisable secret replaced.

        A PEM block is hidden whole, from its BEGIN line to its END line (or to the end of the text).
        """
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        if "-----BEGIN " in text:
            text = _PEM.sub(REDACTED, text)
        if "://" in text:
            text = _WEBHOOK.sub(lambda m: m.group(1) + REDACTED, text)
            text = _URL_CREDENTIALS.sub(lambda m: m.group(1) + REDACTED + "@", text)
        if any(hint in text for hint in _SHAPE_HINTS):
            text = _SHAPES.sub(REDACTED, text)
        if "earer" in text or "EARER" in text or "asic" in text or "ASIC" in text:
            text = _BEARER.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
        if "=" in text or ":" in text:
            low = text.lower()
            if any(hint in low for hint in _NAME_HINTS):
                text = _ASSIGNMENT.sub(_hide_assignment, text)
        return text

    def lines(self) -> LineRedactor:
        """A redactor for a stream of lines (the console), which hides PEM blocks spread over lines."""
        return LineRedactor(self)

    def url(self, url: str) -> str:
        """A URL without the user name and password it may carry (a git remote with a token in it)."""
        url = _URL_CREDENTIALS.sub(lambda m: m.group(1), url)
        return self.text(url)

    def argv(self, argv: Sequence[str]) -> list[str]:
        """A command line with the values of secret options (``--db-pass X``, ``--webhook=URL``) hidden."""
        out: list[str] = []
        hide_next = False
        for arg in argv:
            if hide_next:
                out.append(REDACTED)
                hide_next = False
                continue
            if "=" in arg:
                name, _, _value = arg.partition("=")
                if is_secret_name(name):
                    out.append(f"{name}={REDACTED}")
                    continue
            elif arg.startswith("-") and len(arg) > 1 and is_secret_name(arg):
                hide_next = True
            out.append(self.text(arg))
        return out

    def environ(self, environ: Mapping[str, str]) -> dict[str, str]:
        """Environment variables, the values of secret-named ones (and secrets inside others) hidden."""
        return {k: REDACTED if is_secret_name(k) else self.text(v) for k, v in sorted(environ.items())}


def _hide_assignment(match: re.Match[str]) -> str:
    name, separator, value = match.group(1), match.group(2), match.group(3)
    quote = value[0] if value[:1] in ("'", '"') and len(value) > 1 else ""
    bare = value[1:-1] if quote else value
    if not bare or bare.startswith(REDACTED) or bare in _SCHEMES or not is_secret_name(name):
        return match.group(0)
    return name + separator + quote + REDACTED + quote


class LineRedactor:
    """Redacts a stream of lines one at a time, hiding the lines of a PEM block between its BEGIN and END.

    Lines of other streams may come between a block's lines: a line that does not look like part of a
    block is redacted as usual and the block goes on, up to its END line or 400 lines. Safe to call from
    several threads.
    """

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._lock = threading.Lock()
        self._block_left = 0

    def __call__(self, line: str) -> str:
        with self._lock:
            if self._block_left > 0:
                self._block_left -= 1
                end = _PEM_END.search(line)
                if end is not None:
                    self._block_left = 0
                    return REDACTED + self._redactor.text(line[end.end() :])
                if _PEM_BODY.match(line):
                    return REDACTED if line.strip() else line
            begin = _PEM_BEGIN.search(line)
            if begin is not None and not _PEM_END.search(line, begin.end()):
                self._block_left = _PEM_MAX_LINES
            return self._redactor.text(line)
