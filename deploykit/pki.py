"""The project's CA: where it lives, and the server certificates it signs for the local platform."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

STATE = Path(os.environ.get("DEPLOYKIT_STATE_DIR", "/var/lib/deploykit"))
PKI = STATE / "pki"
CA_CERT = PKI / "ca.crt"
CA_KEY = PKI / "ca.key"
VALIDITY = datetime.timedelta(days=825)
_PEM = serialization.Encoding.PEM
_UNENCRYPTED = (serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def write_private(path: Path, data: bytes) -> None:
    """Write a key-bearing file that only its owner may read (the mode is set before any byte lands)."""
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_bytes(data)


def new_ca(now: datetime.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "deploykit local CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    return ca_key, ca


def load_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The CA that `make platform` made (deploykit/registry.py): its key and certificate."""
    key = serialization.load_pem_private_key(CA_KEY.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{CA_KEY} is not the EC key the project makes")
    return key, x509.load_pem_x509_certificate(CA_CERT.read_bytes())


def server_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    common_name: str,
    names: list[x509.GeneralName],
    now: datetime.datetime,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new key and a TLS server certificate for `names`, signed by the CA."""
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return server_key, server


def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(_PEM, *_UNENCRYPTED)


def pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(_PEM)
