"""Keep credentials out of everything stellarexp writes.

Credentials belong in the environment (``MLFLOW_TRACKING_USERNAME``/``PASSWORD``,
``AWS_SECRET_ACCESS_KEY``, ...) or reach a config through ``${oc.env:VAR}`` interpolation; never
on the command line. When one slips into a config or an override anyway, every writer masks it
as ``***``: MLflow params, tags, descriptions and artifacts, the sweep files and results, the
Optuna study's attributes, and log records (:func:`install_log_redaction`). Masked are

- values whose key names a credential (:data:`SECRET_KEY`: password, passwd, pwd, pass, token,
  secret, api key, credential, private key, dsn, authorization, bearer, access key);
- in any text: the password of a ``scheme://user:password@host`` URL (any characters, user
  optional: ``mysql://:pw@host``), ``?password=...``-style query parameters, ``key=value`` and
  ``key: value`` pairs with a credential key (a libpq DSN ``host=db password=pw``, a log line),
  and ``Bearer <token>``.


Masking errs on the side of hiding: a key such as ``n_tokens`` is masked too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

MASK = "***"
_SECRET_WORDS = (r"pass(?:word|wd)?|pwd|secret|token|api[_-]?key|credential|private[_-]?key|dsn"
                 r"|authori[sz]ation|bearer|access[_-]?key(?:[_-]?id)?")
SECRET_KEY = re.compile(_SECRET_WORDS, re.IGNORECASE)
# scheme://[user]:password@host -- the password runs to the last '@' before the host
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@'\"]*:)[^\s'\"]*@(?=[^\s@'\"/]*(?:[/\s'\"?#]|$))")
# ?password=...&token=... in URLs
_QUERY_SECRET = re.compile(rf"(?P<head>[?&;](?:[\w.-]*(?:{_SECRET_WORDS})[\w.-]*)=)[^&\s'\"#]*",
                           re.IGNORECASE)
# key=value / key: value with a credential key (DSN, overrides, YAML and JSON text, log lines)
_PAIR_SECRET = re.compile(
    rf"(?P<head>[\w.+~-]*(?:{_SECRET_WORDS})[\w.-]*[\"']?\s*[=:]\s*)"
    r"(?P<value>\"[^\"]*\"|'[^']*'|(?!\*\*\*)[^\s,;&'\"}\]]+)", re.IGNORECASE)
_BEARER = re.compile(r"(?P<head>\bbearer\s+)(?!\*\*\*)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)


def is_secret_key(key: str) -> bool:
    """True when the last dotted part of ``key`` names a credential."""
    return bool(SECRET_KEY.search(str(key).rsplit(".", 1)[-1]))


def _mask_value(match: re.Match) -> str:
    value = match.group("value")
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group('head')}{quote}{MASK}{quote}"


def redact_text(text: str) -> str:
    """``text`` with URL passwords, secret query parameters, secret ``key=value`` pairs and
    bearer tokens masked.

    Parameters
    ----------
    text : str

    Returns
    -------
    str
    """
    text = _URL_PASSWORD.sub(rf"\g<head>{MASK}@", str(text))
    text = _QUERY_SECRET.sub(rf"\g<head>{MASK}", text)
    text = _BEARER.sub(rf"\g<head>{MASK}", text)
    return _PAIR_SECRET.sub(_mask_value, text)


def redact(value: Any, key: str = "") -> Any:
    """A copy of a nested config (mappings, lists, strings) with secrets masked.

    Parameters
    ----------
    value : Any
        A mapping, sequence, string or scalar.
    key : str
        The key ``value`` is stored under (a credential key masks the whole value).

    Returns
    -------
    Any
    """
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


def _redact_record(record: logging.LogRecord) -> logging.LogRecord:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a broken record is logging's to report
        return record
    clean = redact_text(message)
    if clean != message:
        record.msg, record.args = clean, None
    return record


def install_log_redaction() -> None:
    """Mask secrets in every log record this process creates, whoever logs it.

    Wraps the log-record factory (:func:`logging.setLogRecordFactory`), so it holds when Hydra
    or a launcher reconfigures the handlers between jobs; installing twice is a no-op.
    """
    factory = logging.getLogRecordFactory()
    if getattr(factory, "_stellarexp_redacts", False):
        return

    def redacting_factory(*args, **kwargs):
        return _redact_record(factory(*args, **kwargs))

    redacting_factory._stellarexp_redacts = True
    logging.setLogRecordFactory(redacting_factory)
