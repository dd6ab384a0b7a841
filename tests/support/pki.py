"""TLS material for tests: a CA and a server certificate for 127.0.0.1 it signed (ECDSA P-256,
valid from yesterday to the day after tomorrow), written to PEM files."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path
from types import SimpleNamespace

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def ca_and_server_cert(folder: Path, *, ca_name: str = "Lifeboat test CA") -> SimpleNamespace:
    """``.ca_pem`` (what an operator pastes), ``.cert``/``.key`` (the server's PEM files) and
    ``.thumbprint`` (SHA-256 hex of the server certificate, what an operator pins)."""
    now = dt.datetime.now(dt.UTC)
    valid = {"not_valid_before": now - dt.timedelta(days=1), "not_valid_after": now + dt.timedelta(days=2)}
    ca_key = ec.generate_private_key(ec.SECP256R1())
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca = (
        x509.CertificateBuilder(subject_name=issuer, issuer_name=issuer, public_key=ca_key.public_key(),
                                serial_number=x509.random_serial_number(), **valid)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder(subject_name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]),
                                issuer_name=issuer, public_key=key.public_key(),
                                serial_number=x509.random_serial_number(), **valid)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = folder / "server.crt", folder / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return SimpleNamespace(ca_pem=ca.public_bytes(serialization.Encoding.PEM).decode(), cert=cert_file,
                           key=key_file, thumbprint=cert.fingerprint(hashes.SHA256()).hex())  # fmt: skip
