"""What a delivery's TLS trusts: the system's store (or SSL_CERT_FILE / SSL_CERT_DIR), plus a route's ca_file.

As curl and OpenSSL-based clients do, SSL_CERT_FILE and SSL_CERT_DIR replace the system's
default bundle and folder (an internal CA's bundle is usually made from the system's, e.g.
by update-ca-certificates); a route's ca_file is trusted on top of whichever store that is,
so one route may name a private CA without losing the public ones. certifi's bundle is the
fallback only for a machine with no store at all (a slim container without ca-certificates),
so the bus never trusts nothing by accident.
"""
from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

import certifi


@dataclass(frozen=True)
class Trust:
    """The process-wide store (settings.OutboundSettings): SSL_CERT_FILE and SSL_CERT_DIR, None when unset."""

    cert_file: str | None = None
    cert_dir: str | None = None

    def describe(self) -> str:
        """Where the store comes from, for messages."""
        named = [f"SSL_CERT_FILE={self.cert_file}"] * bool(self.cert_file) + [f"SSL_CERT_DIR={self.cert_dir}"] * bool(self.cert_dir)
        return ", ".join(named) or "the system's store"


def tls_context(trust: Trust, verify: bool, ca_file: str | None, client_cert: str | None,
                client_key: str | None) -> ssl.SSLContext:
    """A client context for one TLS setting of a route (built once per worker process and setting)."""
    # Not create_default_context(): it loads a store from the process's environment itself.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # hostname checked, certificate required
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        _load_store(context, trust)
        if ca_file:
            context.load_verify_locations(cafile=ca_file)
    if client_cert:
        context.load_cert_chain(client_cert, client_key)
    return context


def _load_store(context: ssl.SSLContext, trust: Trust) -> None:
    if trust.cert_file or trust.cert_dir:
        context.load_verify_locations(cafile=trust.cert_file, capath=trust.cert_dir)
        return
    cafile, capath = system_store()
    if cafile or capath:
        context.load_verify_locations(cafile=cafile, capath=capath)
    else:
        context.load_verify_locations(cafile=certifi.where())


def system_store() -> tuple[str | None, str | None]:
    """OpenSSL's compiled-in bundle and folder (Debian: /usr/lib/ssl/cert.pem and /usr/lib/ssl/certs),
    each None when absent or empty. Not ssl.get_default_verify_paths().cafile: that one follows
    SSL_CERT_FILE, which reaches us through Trust instead."""
    paths = ssl.get_default_verify_paths()
    cafile = paths.openssl_cafile if os.path.isfile(paths.openssl_cafile) else None
    capath = paths.openssl_capath if os.path.isdir(paths.openssl_capath) else None
    if capath and not any(name.endswith(".0") for name in os.listdir(capath)):
        capath = None  # no hashed certificates in it (c_rehash never ran): it trusts nothing
    return cafile, capath
