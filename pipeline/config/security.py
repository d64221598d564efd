"""Kafka security settings that cannot work (SASL without its mechanism or password, TLS files
that cannot be read or used), refused at load with the key to fix and never a secret."""

from __future__ import annotations

import importlib.util

from pipeline.config.keys import ConfigError
from pipeline.config.settings import SASL_MECHANISMS, TLS_PROTOCOLS, KafkaSettings

_SASL_KEYS = ("sasl_mechanism", "sasl_username", "sasl_password")
_SSL_FILES = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")


def check_security(kafka: KafkaSettings) -> None:
    """Raise ConfigError when the SASL or TLS settings of `kafka` cannot work together."""
    _check_sasl(kafka)
    _check_ssl(kafka)


def _check_sasl(kafka: KafkaSettings) -> None:
    protocol, mechanism = kafka.security_protocol, kafka.sasl_mechanism
    if not protocol.startswith("SASL_"):
        given = [key for key in _SASL_KEYS if getattr(kafka, key) is not None]
        if given:
            raise ConfigError(
                f"[kafka] {given[0]} is set but security_protocol is {protocol}: "
                "SASL needs SASL_PLAINTEXT or SASL_SSL"
            )
        return
    if mechanism is None:
        known = ", ".join(m for m in SASL_MECHANISMS if m != "OAUTHBEARER")
        raise ConfigError(f"[kafka] security_protocol {protocol} needs sasl_mechanism ({known})")
    if mechanism == "OAUTHBEARER":
        raise ConfigError(
            "[kafka] sasl_mechanism OAUTHBEARER needs a token provider, which sessionize "
            "cannot be given; use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
        )
    if mechanism == "GSSAPI":
        if importlib.util.find_spec("gssapi") is None:
            raise ConfigError(
                "[kafka] sasl_mechanism GSSAPI needs the Python package 'gssapi' (not installed)"
            )
        return
    missing = [key for key in ("sasl_username", "sasl_password") if not getattr(kafka, key)]
    if missing:
        raise ConfigError(
            f"[kafka] sasl_mechanism {mechanism} needs {' and '.join(missing)} "
            "(the password can come from SESSIONIZE_KAFKA_SASL_PASSWORD)"
        )


def _check_ssl(kafka: KafkaSettings) -> None:
    given = [key for key in _SSL_FILES if getattr(kafka, key) is not None]
    if kafka.security_protocol not in TLS_PROTOCOLS:
        if given:
            raise ConfigError(
                f"[kafka] {given[0]} is set but security_protocol is {kafka.security_protocol}: "
                "TLS needs SSL or SASL_SSL"
            )
        return
    if kafka.ssl_keyfile is not None and kafka.ssl_certfile is None:
        raise ConfigError("[kafka] ssl_keyfile is set without ssl_certfile, the certificate")
    for key in given:
        path = getattr(kafka, key)
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"[kafka] {key}: cannot read {path}: {exc.strerror}") from None
    try:
        kafka.client_options()
    except (OSError, ValueError) as exc:
        # OpenSSL's reason ("KEY_VALUES_MISMATCH", "NO_CERTIFICATE_OR_CRL_FOUND"), never the
        # files' contents.
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None)
        raise ConfigError(
            f"[kafka] {', '.join(given) or 'TLS'}: cannot be used for TLS "
            f"({reason or type(exc).__name__})"
        ) from None
