"""Webhook signing, target vetting and the outbound POST, against a real HTTP receiver on loopback."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.notify.webhooks import (
    TargetRefused,
    check_target,
    new_secret,
    sign,
    signed_headers,
    verify,
)
from tests.http_receiver import Receiver, serving
from worker.notify.http import HttpFailure, post

REFERENCE_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
REFERENCE_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
REFERENCE_TIMESTAMP = 1614265330
REFERENCE_BODY = b'{"test": 2432232314}'
REFERENCE_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

PUBLIC_ADDRESS = "93.184.216.34"
DNS = {
    "example.com": [PUBLIC_ADDRESS],
    "localhost": ["127.0.0.1", "::1"],
    "split.example.com": [PUBLIC_ADDRESS, "10.1.2.3"],
    "mapped.example.com": ["::ffff:169.254.169.254"],
    "cgnat.example.com": ["100.64.0.7"],
}


def fake_resolve(host: str, port: int, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
    """getaddrinfo over the DNS table above, so no test depends on real name resolution."""
    if host not in DNS:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return [
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, port, 0, 0))
        if ":" in a
        else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
        for a in DNS[host]
    ]


def test_new_secret_is_prefixed_random_24_bytes() -> None:
    first, second = new_secret(), new_secret()
    assert first.startswith("whsec_")
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 24
    assert first != second


def test_sign_matches_the_standard_webhooks_reference_example() -> None:
    key = base64.b64decode(REFERENCE_SECRET.removeprefix("whsec_"))
    signed = f"{REFERENCE_ID}.{REFERENCE_TIMESTAMP}.".encode() + REFERENCE_BODY
    independent = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()

    assert independent == REFERENCE_SIGNATURE
    assert sign(REFERENCE_SECRET, REFERENCE_ID, REFERENCE_TIMESTAMP, REFERENCE_BODY) == REFERENCE_SIGNATURE


def test_signed_headers_verify_case_insensitively() -> None:
    headers = signed_headers(REFERENCE_SECRET, REFERENCE_ID, REFERENCE_TIMESTAMP, REFERENCE_BODY)
    assert headers == {
        "webhook-id": REFERENCE_ID,
        "webhook-timestamp": str(REFERENCE_TIMESTAMP),
        "webhook-signature": REFERENCE_SIGNATURE,
        "content-type": "application/json",
        "user-agent": "Lookalike-Webhooks/1",
    }
    shouted = {k.title(): v for k, v in headers.items()}
    assert verify(REFERENCE_SECRET, shouted, REFERENCE_BODY, now=REFERENCE_TIMESTAMP + 10)


def test_round_trip_with_a_fresh_secret_and_the_clock() -> None:
    secret, body, now = new_secret(), json.dumps({"event": "training.succeeded"}).encode(), int(time.time())
    assert verify(secret, signed_headers(secret, "msg_1", now, body), body)


def test_verify_accepts_any_of_several_signatures() -> None:
    headers = signed_headers(REFERENCE_SECRET, REFERENCE_ID, REFERENCE_TIMESTAMP, REFERENCE_BODY)
    headers["webhook-signature"] = f"v1,bm90IHRoaXMgb25l v2,whatever {headers['webhook-signature']}"
    assert verify(REFERENCE_SECRET, headers, REFERENCE_BODY, now=REFERENCE_TIMESTAMP)


def test_verify_rejects_a_tampered_body() -> None:
    headers = signed_headers(REFERENCE_SECRET, REFERENCE_ID, REFERENCE_TIMESTAMP, REFERENCE_BODY)
    assert not verify(REFERENCE_SECRET, headers, b'{"test": 2432232315}', now=REFERENCE_TIMESTAMP)


def test_verify_rejects_a_wrong_secret() -> None:
    headers = signed_headers(REFERENCE_SECRET, REFERENCE_ID, REFERENCE_TIMESTAMP, REFERENCE_BODY)
    assert not verify(new_secret(), headers, REFERENCE_BODY, now=REFERENCE_TIMESTAMP)


@pytest.mark.parametrize("skew", [301, -301, 86400])
def test_verify_rejects_a_timestamp_outside_the_tolerance(skew: int) -> None:
    headers = signed_headers(REFERENCE_SECRET, REFERENCE_ID, REFERENCE_TIMESTAMP, REFERENCE_BODY)
    assert not verify(REFERENCE_SECRET, headers, REFERENCE_BODY, now=REFERENCE_TIMESTAMP + skew)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_verify_rejects_missing_headers(missing: str) -> None:
    headers = signed_headers(REFERENCE_SECRET, REFERENCE_ID, REFERENCE_TIMESTAMP, REFERENCE_BODY)
    del headers[missing]
    assert not verify(REFERENCE_SECRET, headers, REFERENCE_BODY, now=REFERENCE_TIMESTAMP)


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://127.0.0.1/x", "127.0.0.1, a loopback address"),
        ("http://localhost/x", "127.0.0.1, a loopback address"),
        ("http://10.0.0.5/", "10.0.0.5, a private address"),
        ("http://[::1]/", "::1, a loopback address"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254, a cloud metadata address"),
        ("http://[fd00:ec2::254]/latest/meta-data", "a cloud metadata address"),
        ("http://100.100.100.200/", "a cloud metadata address"),
        ("http://metadata.google.internal/computeMetadata/v1/", "a cloud metadata service"),
        ("http://metadata/computeMetadata/v1/", "a cloud metadata service"),
        ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1, a loopback address"),
        ("http://mapped.example.com/", "a cloud metadata address"),
        ("http://cgnat.example.com/", "100.64.0.7, a shared (carrier-grade NAT) address"),
        ("http://split.example.com/", "10.1.2.3, a private address"),
        ("http://169.254.1.1/", "a link-local address"),
        ("http://[fe80::1]/", "a link-local address"),
        ("http://224.0.0.1/", "a multicast address"),
        ("http://0.0.0.0/", "an unspecified address"),
        ("http://240.0.0.1/", "a reserved address"),
        ("ftp://example.com/", "http:// or https://"),
        ("https:///hooks", "no host name"),
        ("http://does-not-exist.invalid/", "does not resolve"),
    ],
)
def test_check_target_refuses(url: str, said: str) -> None:
    with pytest.raises(TargetRefused) as refused:
        check_target(url, allow_private=False, resolve=fake_resolve)
    assert said in refused.value.reason
    assert str(refused.value) == refused.value.reason


def test_refusal_tells_the_user_what_to_do() -> None:
    with pytest.raises(TargetRefused) as refused:
        check_target("http://127.0.0.1/x", allow_private=False, resolve=fake_resolve)
    assert refused.value.reason == (
        "webhook_url resolves to 127.0.0.1, a loopback address; use a public address "
        "(or set LOOKALIKE_WEBHOOK_ALLOW_PRIVATE_TARGETS=true on a private network)"
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://[fd00:ec2::254]/latest/meta-data",
        "http://100.100.100.200/latest/meta-data",
        "http://[::ffff:169.254.169.254]/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://METADATA.google.internal./computeMetadata/v1/",
        "http://metadata/computeMetadata/v1/",
        "http://mapped.example.com/",
    ],
)
@pytest.mark.parametrize("allow_private", [False, True])
def test_cloud_metadata_is_refused_even_where_private_targets_are_allowed(url: str, allow_private: bool) -> None:
    with pytest.raises(TargetRefused) as refused:
        check_target(url, allow_private=allow_private, resolve=fake_resolve)
    assert "cloud metadata" in refused.value.reason
    assert "never" in refused.value.reason
    assert "ALLOW_PRIVATE" not in refused.value.reason
    assert "private network" not in refused.value.reason


def test_check_target_accepts_a_public_host() -> None:
    assert check_target("https://example.com/hooks?x=1", allow_private=False, resolve=fake_resolve) == [PUBLIC_ADDRESS]


def test_allow_private_accepts_loopback_but_still_checks_scheme_and_resolution() -> None:
    assert check_target("http://127.0.0.1:8080/x", allow_private=True, resolve=fake_resolve) == ["127.0.0.1"]
    assert check_target("http://localhost/x", allow_private=True, resolve=fake_resolve) == ["127.0.0.1", "::1"]
    with pytest.raises(TargetRefused, match="does not resolve"):
        check_target("http://nowhere.invalid/", allow_private=True, resolve=fake_resolve)
    with pytest.raises(TargetRefused, match="http:// or https://"):
        check_target("file:///etc/passwd", allow_private=True, resolve=fake_resolve)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serving() as state:
        yield state


def test_post_delivers_body_and_signed_headers(receiver: Receiver) -> None:
    secret, body, now = new_secret(), b'{"event": "training.succeeded"}', int(time.time())
    answer = post(f"{receiver.url}/hooks/lookalike?team=7", body, signed_headers(secret, "msg_42", now, body))

    assert answer.status == 200
    assert answer.excerpt == 'accepted {"event": "training.succeeded"}'
    [(path, headers, got)] = receiver.received
    assert path == "/hooks/lookalike?team=7"
    assert got == body
    assert headers["webhook-id"] == "msg_42"
    assert headers["user-agent"] == "Lookalike-Webhooks/1"
    assert headers["content-type"] == "application/json"
    assert verify(secret, headers, got)


def test_post_returns_a_redirect_without_following_it(receiver: Receiver) -> None:
    answer = post(f"{receiver.url}/redirect", b"{}", {"content-type": "application/json"})

    assert answer.status == 302
    assert answer.excerpt == "moved"
    assert [path for path, _, _ in receiver.received] == ["/redirect"]


def test_post_keeps_only_an_excerpt_of_a_long_answer(receiver: Receiver) -> None:
    answer = post(f"{receiver.url}/big", b"{}", {})
    assert answer.status == 200
    assert answer.excerpt == "x" * 500


def test_post_to_a_closed_port_fails() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(HttpFailure) as failed:
        post(f"http://127.0.0.1:{port}/", b"{}", {})
    assert failed.value.reason == "connection refused"


def test_post_times_out_on_a_silent_receiver() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        with pytest.raises(HttpFailure) as failed:
            post(f"http://127.0.0.1:{silent.getsockname()[1]}/", b"{}", {}, timeout=0.3)
    assert failed.value.reason == "timed out after 0.3 s"


def test_post_https_to_a_plain_http_receiver_is_a_tls_failure(receiver: Receiver) -> None:
    with pytest.raises(HttpFailure, match="TLS"):
        post(receiver.url.replace("http://", "https://") + "/hooks", b"{}", {}, timeout=5)


def test_post_connects_to_the_given_addresses_and_keeps_the_host_header(receiver: Receiver) -> None:
    url = f"http://hooks.example.test:{receiver.port}/x"
    answer = post(url, b"{}", {}, addresses=["127.0.0.1"])

    assert answer.status == 200
    [(path, headers, _)] = receiver.received
    assert path == "/x"
    assert headers["host"] == f"hooks.example.test:{receiver.port}"


def test_post_without_addresses_resolves_the_host_again(receiver: Receiver) -> None:
    with pytest.raises(HttpFailure) as failed:
        post(f"http://hooks.example.test:{receiver.port}/x", b"{}", {})
    assert failed.value.reason == "host hooks.example.test does not resolve"
    assert receiver.received == []


def test_post_tries_the_next_address_when_one_refuses(receiver: Receiver) -> None:
    # The receiver listens on 127.0.0.1 only, so [::1] at its port refuses (or has no IPv6 at all).
    answer = post(f"http://hooks.example.test:{receiver.port}/x", b"{}", {}, addresses=["::1", "127.0.0.1"])
    assert answer.status == 200
    assert len(receiver.received) == 1


def test_post_with_an_empty_address_list_does_not_fall_back_to_dns() -> None:
    with pytest.raises(HttpFailure) as failed:
        post("http://localhost/x", b"{}", {}, addresses=[])
    assert failed.value.reason == "no address to connect to"


def test_post_bounds_the_whole_exchange_by_the_timeout() -> None:
    """A receiver that answers one byte every 0.3 s never lets a single read time out, only the deadline."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        stop = threading.Event()

        def dribble() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000:
                    if stop.wait(0.3):
                        return
                    try:
                        conn.sendall(bytes([byte]))
                    except OSError:
                        return

        thread = threading.Thread(target=dribble, daemon=True)
        thread.start()
        started = time.monotonic()
        try:
            with pytest.raises(HttpFailure) as failed:
                post(f"http://127.0.0.1:{listener.getsockname()[1]}/", b"{}", {}, timeout=1)
            elapsed = time.monotonic() - started
        finally:
            stop.set()
            thread.join(timeout=5)
    assert failed.value.reason == "timed out after 1 s"
    assert elapsed < 2


def _certificate_for(name: str, directory: Path) -> tuple[Path, Path, str]:
    """A throwaway CA and a server certificate for `name` signed by it: (cert file, key file, CA PEM)."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Webhook test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = directory / "server.pem", directory / "server.key"
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file, ca.public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize(
    ("certified_name", "failure"),
    [("hooks.example.test", None), ("other.example.test", "TLS certificate not accepted: Hostname mismatch")],
)
def test_post_https_to_an_address_verifies_the_url_host(
    certified_name: str, failure: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TLS goes to 127.0.0.1, but SNI and the certificate check are for the URL's host name."""
    cert_file, key_file, ca_pem = _certificate_for(certified_name, tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_file, key_file)
    default_context = ssl.create_default_context
    monkeypatch.setattr(ssl, "create_default_context", lambda *a, **k: default_context(cadata=ca_pem))

    with serving(tls=server_context) as receiver:
        url = f"https://hooks.example.test:{receiver.port}/x"
        if failure is None:
            answer = post(url, b"{}", {}, addresses=["127.0.0.1"], timeout=5)
            assert answer.status == 200
            [(_, headers, _)] = receiver.received
            assert headers["host"] == f"hooks.example.test:{receiver.port}"
        else:
            with pytest.raises(HttpFailure) as failed:
                post(url, b"{}", {}, addresses=["127.0.0.1"], timeout=5)
            assert failed.value.reason.startswith(failure)
            assert receiver.received == []
    assert receiver.server_names[:1] == ["hooks.example.test"]
