"""Keep credentials out of MLflow: params, config artifacts, overrides and tags are redacted.

Credentials belong in the environment (``MLFLOW_TRACKING_USERNAME``/``PASSWORD``,
``AWS_SECRET_ACCESS_KEY``, ...), never in a config. When one slips into a config anyway, a value
whose key looks secret (password, token, secret, api key, credential, private key) becomes
``***`` and the password of a URL such as ``postgresql://user:pw@host/db`` becomes ``***``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "***"
SECRET_KEY = re.compile(r"pass(word|wd)?|secret|token|api[_-]?key|credential|private[_-]?key",
                        re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]+:)[^@/\s]+@")


def is_secret_key(key: str) -> bool:
    """True when the last dotted part of ``key`` names a credential."""
    return bool(SECRET_KEY.search(str(key).rsplit(".", 1)[-1]))


def redact_text(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` URL masked."""
    return _URL_PASSWORD.sub(rf"\g<head>{MASK}@", text)


def redact(value: Any, key: str = "") -> Any:
    """A copy of a nested config with secret-named values and URL passwords masked."""
    if key and is_secret_key(key) and value not in (None, ""):
        return MASK
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_override(override: str) -> str:
    """A command-line override (``key=value``) with its value masked when it is a secret."""
    key, sep, _ = override.partition("=")
    if sep and is_secret_key(key.lstrip("+~")):
        return f"{key}={MASK}"
    return redact_text(override)
