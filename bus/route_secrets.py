"""Route secrets: values given as "env:NAME" or "file:/path", resolved once at load and never shown (pure given the environment)."""
from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SIGNING_PREFIX = "whsec_"


def resolve(ref: Any, environ: Mapping[str, str]) -> str:
    """The secret a reference points at; ValueError says what to fix, never the value."""
    if not isinstance(ref, str) or not ref.startswith(("env:", "file:")):
        raise ValueError("give secrets as \"env:VARIABLE\" or \"file:/path/to/secret\", never the value itself, "
                         "so route files can be shared and committed")
    kind, _, where = ref.partition(":")
    if kind == "env":
        value = environ.get(where)
        if not value:
            raise ValueError(f"environment variable {where} is not set")
        return value.strip()
    try:
        value = Path(where).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read secret file {where}: {exc.strerror}") from None
    if not value:
        raise ValueError(f"secret file {where} is empty")
    return value


def signing_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret ("whsec_" + base64)."""
    if not secret.startswith(SIGNING_PREFIX):
        raise ValueError(f"a signing secret must look like {SIGNING_PREFIX}<base64>, e.g. from `bus secret new`")
    try:
        key = base64.b64decode(secret[len(SIGNING_PREFIX):] + "==", validate=False)
    except (binascii.Error, ValueError):
        raise ValueError("the signing secret after whsec_ is not base64") from None
    if len(key) < 16:
        raise ValueError("the signing secret is shorter than 16 bytes; make a new one with `bus secret new`")
    return key


def new_signing_secret() -> str:
    import os

    return SIGNING_PREFIX + base64.b64encode(os.urandom(32)).decode()
