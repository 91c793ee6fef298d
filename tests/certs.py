"""Certificates for TLS tests, made with Debian's openssl: an internal CA and a server certificate it signed."""
from __future__ import annotations

import shutil
import subprocess

OPENSSL = shutil.which("openssl") or "openssl"


def make_ca(tmp_path) -> tuple:
    """An internal CA made with openssl, and a certificate it signed for 127.0.0.1: (ca, cert, key)."""
    ca, ca_key = tmp_path / "ca.pem", tmp_path / "ca-key.pem"
    cert, key, csr = tmp_path / "server.pem", tmp_path / "server-key.pem", tmp_path / "server.csr"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = lambda *args: subprocess.run([OPENSSL, *map(str, args)], check=True, capture_output=True, timeout=60)
    run("req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "1", "-subj", "/CN=bus test internal CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    ext = tmp_path / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "1",
        "-extfile", ext)
    return ca, cert, key
