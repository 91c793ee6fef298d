"""What TLS deliveries trust (bus/trust.py, settings): the system's store or SSL_CERT_FILE / SSL_CERT_DIR, plus ca_file."""
from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading

import pytest

from bus import settings
from bus.errors import ConfigError
from bus.trust import Trust, tls_context
from tests.certs import OPENSSL, make_ca


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return make_ca(tmp_path_factory.mktemp("ca"))


def handshake(context: ssl.SSLContext, cert, key) -> None:
    """One TLS handshake with a server on 127.0.0.1 presenting `cert`; raises SSLError when it is not trusted."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with server_context.wrap_socket(conn, server_side=True):
                pass
        except (OSError, ssl.SSLError):
            pass  # the client refused the certificate

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=5) as sock:
            context.wrap_socket(sock, server_hostname="127.0.0.1").close()
    finally:
        listener.close()
        thread.join(5)


def test_the_system_store_alone_does_not_trust_an_internal_ca(ca):
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(tls_context(Trust(), True, None, None, None), ca[1], ca[2])


def test_ssl_cert_file_names_the_store_that_is_trusted(ca):
    handshake(tls_context(Trust(cert_file=str(ca[0])), True, None, None, None), ca[1], ca[2])


def test_ssl_cert_dir_of_hashed_certificates_is_trusted(ca, tmp_path):
    folder = tmp_path / "certs"
    folder.mkdir()
    shutil.copy(ca[0], folder / "internal.pem")
    subprocess.run([OPENSSL, "rehash", str(folder)], check=True, capture_output=True, timeout=60)
    handshake(tls_context(Trust(cert_dir=str(folder)), True, None, None, None), ca[1], ca[2])


def test_a_routes_ca_file_is_trusted_on_top_of_the_store(ca):
    context = tls_context(Trust(), True, str(ca[0]), None, None)
    handshake(context, ca[1], ca[2])
    assert context.cert_store_stats()["x509_ca"] > 1, "the system's CAs stay trusted beside the route's"


def test_tls_verify_false_trusts_any_certificate(ca):
    handshake(tls_context(Trust(), False, None, None, None), ca[1], ca[2])


def test_an_ssl_cert_file_that_does_not_exist_stops_start_up_saying_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match=r"SSL_CERT_FILE='.*nope.pem' is not a file; point it at the CA file"):
        settings.load({"SSL_CERT_FILE": str(tmp_path / "nope.pem")})
    assert settings.load({"SSL_CERT_DIR": str(tmp_path)}).outbound.trust == Trust(cert_dir=str(tmp_path))
