"""The bootstrap certificate the entry serves until Let's Encrypt has issued one (and for
good on the local stack): self-signed, derived from a stack secret so that it is the same
on every `pulumi up` (deterministic key and ECDSA signature, fixed validity), hence no
diff and no container replacement."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
NOT_BEFORE = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
NOT_AFTER = dt.datetime(2035, 1, 1, tzinfo=dt.UTC)


def bootstrap_certificate(seed: str, domain: str) -> tuple[str, str]:
    """(certificate PEM, private key PEM) for `domain`, its subdomains and 127.0.0.1."""
    digest = hashlib.sha256(f"selextract-tls:{seed}".encode()).digest()
    key = ec.derive_private_key(int.from_bytes(digest) % (P256_ORDER - 1) + 1, ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    alt = x509.SubjectAlternativeName(
        [
            x509.DNSName(domain),
            x509.DNSName(f"*.{domain}"),
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(hashlib.sha256(digest + domain.encode()).digest()[:16]) >> 1)
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(alt, critical=False)
        .sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()
