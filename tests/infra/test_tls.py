"""The bootstrap certificate is valid for the stack's names and identical on every run
(otherwise every `pulumi up` would replace the entry)."""

from __future__ import annotations

import ipaddress

from cryptography import x509

from infra.tls import bootstrap_certificate


def test_bootstrap_certificate_is_deterministic_and_names_the_stack() -> None:
    first = bootstrap_certificate("seed-a", "selextract.com")
    assert first == bootstrap_certificate("seed-a", "selextract.com")
    assert first != bootstrap_certificate("seed-b", "selextract.com")
    cert = x509.load_pem_x509_certificate(first[0].encode())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"selextract.com", "*.selextract.com", "localhost"}
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert "PRIVATE KEY" in first[1] and "seed-a" not in first[0] + first[1]
