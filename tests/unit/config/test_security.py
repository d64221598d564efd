"""Kafka security settings: SASL and TLS that cannot work are refused at load, secrets unshown."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from pipeline.config import load_config
from tests.unit.config.documents import SECRET, config_error, write

SASL_PLAIN = '[kafka]\nsecurity_protocol = "SASL_PLAINTEXT"\nsasl_mechanism = "PLAIN"\n'
SASL_PLAIN += 'sasl_username = "sessionize"\n'


def test_secrets_stay_out_of_repr(tmp_path: Path) -> None:
    path = write(tmp_path, SASL_PLAIN + 'sasl_password = "hunter2"\n')
    assert "hunter2" not in repr(load_config(path, env={}))


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (
            '[kafka]\nsecurity_protocol = "BOGUS"\n',
            ["'security_protocol' must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"],
        ),
        (
            '[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "NOPE"\n',
            ["'sasl_mechanism' must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, GSSAPI"],
        ),
        ('[kafka]\nsecurity_protocol = "SASL_SSL"\n', ["SASL_SSL needs sasl_mechanism"]),
        (
            '[kafka]\nsecurity_protocol = "SASL_PLAINTEXT"\nsasl_mechanism = "PLAIN"\n',
            ["PLAIN needs sasl_username and sasl_password"],
        ),
        (
            '[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "SCRAM-SHA-512"\n'
            'sasl_username = "u"\n',
            ["SCRAM-SHA-512 needs sasl_password"],
        ),
        (
            '[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "OAUTHBEARER"\n',
            ["OAUTHBEARER needs a token provider"],
        ),
        (
            '[kafka]\nsasl_mechanism = "PLAIN"\n',
            ["sasl_mechanism is set but security_protocol is PLAINTEXT"],
        ),
        (
            f'[kafka]\nsasl_password = "{SECRET}"\n',
            ["sasl_password is set but security_protocol is PLAINTEXT"],
        ),
        ('[kafka]\nssl_cafile = "/ca.pem"\n', ["ssl_cafile is set but security_protocol"]),
    ],
)
def test_kafka_security_that_cannot_work(tmp_path: Path, text: str, needles: list[str]) -> None:
    message = config_error(text, tmp_path=tmp_path)
    assert message.startswith("[kafka]") or "[kafka]" in message
    for needle in needles:
        assert needle in message
    assert SECRET not in message


def test_sasl_settings_from_the_environment_are_checked_too() -> None:
    env = {"SESSIONIZE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}
    assert "needs sasl_mechanism" in config_error("", env=env)
    env |= {"SESSIONIZE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256"}
    env |= {"SESSIONIZE_KAFKA_SASL_USERNAME": "u", "SESSIONIZE_KAFKA_SASL_PASSWORD": SECRET}
    kafka = load_config(None, env=env).kafka
    assert (kafka.sasl_mechanism, kafka.sasl_password) == ("SCRAM-SHA-256", SECRET)


@pytest.mark.parametrize("key", ["ssl_cafile", "ssl_certfile", "ssl_keyfile"])
@pytest.mark.parametrize("problem", ["missing", "directory"])
def test_ssl_files_must_be_readable(tmp_path: Path, key: str, problem: str) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("not used: another file fails first\n")
    target = tmp_path / "nope.pem"
    if problem == "directory":
        target.mkdir()
    lines = ['security_protocol = "SSL"', f'{key} = "{target}"']
    if key == "ssl_keyfile":
        lines.append(f'ssl_certfile = "{cert}"')
    message = config_error("[kafka]\n" + "\n".join(lines) + "\n", tmp_path=tmp_path)
    assert f"[kafka] {key}: cannot read {target}" in message


def test_ssl_file_that_is_not_a_certificate(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text(f"{SECRET}\n")
    text = f'[kafka]\nsecurity_protocol = "SSL"\nssl_cafile = "{bogus}"\n'
    message = config_error(text, tmp_path=tmp_path)
    assert "ssl_cafile: cannot be used for TLS" in message
    assert SECRET not in message


def test_ssl_keyfile_needs_its_certificate(tmp_path: Path) -> None:
    key = tmp_path / "client.key"
    key.write_text("key\n")
    text = f'[kafka]\nsecurity_protocol = "SSL"\nssl_keyfile = "{key}"\n'
    assert "ssl_keyfile is set without ssl_certfile" in config_error(text, tmp_path=tmp_path)


def test_readable_ca_file_loads(tmp_path: Path) -> None:
    cafile = ssl.get_default_verify_paths().cafile
    if cafile is None or not Path(cafile).is_file():
        pytest.skip("no system CA bundle to stand in for a CA file")
    path = write(tmp_path, f'[kafka]\nsecurity_protocol = "SSL"\nssl_cafile = "{cafile}"\n')
    assert "ssl_context" in load_config(path, env={}).kafka.client_options()
