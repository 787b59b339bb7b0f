"""Kafka TLS and SASL settings for Faust (aiokafka) and kafka-python, from ``KafkaSecurity``.
Secrets are read from ``SecretStr`` only here, at the moment a client is built."""

from __future__ import annotations

import ssl
from typing import Any

from streams.config.settings import KafkaSecurity


def ssl_context(sec: KafkaSecurity) -> ssl.SSLContext | None:
    if "SSL" not in sec.security_protocol:
        return None
    context = ssl.create_default_context(cafile=sec.ssl_cafile)
    if sec.ssl_certfile:
        password = sec.ssl_password.get_secret_value() if sec.ssl_password else None
        context.load_cert_chain(sec.ssl_certfile, sec.ssl_keyfile, password=password)
    return context


def faust_credentials(sec: KafkaSecurity) -> Any:
    import faust

    context = ssl_context(sec)
    if sec.security_protocol.startswith("SASL"):
        password = sec.sasl_password.get_secret_value() if sec.sasl_password else ""
        return faust.SASLCredentials(
            username=sec.sasl_username, password=password, ssl_context=context, mechanism=sec.sasl_mechanism
        )
    return faust.SSLCredentials(context)


def kafka_python_config(sec: KafkaSecurity) -> dict[str, Any]:
    config: dict[str, Any] = {"security_protocol": sec.security_protocol}
    if "SSL" in sec.security_protocol:
        config.update(ssl_cafile=sec.ssl_cafile, ssl_certfile=sec.ssl_certfile, ssl_keyfile=sec.ssl_keyfile)
        if sec.ssl_password:
            config["ssl_password"] = sec.ssl_password.get_secret_value()
    if sec.security_protocol.startswith("SASL"):
        config.update(
            sasl_mechanism=sec.sasl_mechanism,
            sasl_plain_username=sec.sasl_username,
            sasl_plain_password=sec.sasl_password.get_secret_value() if sec.sasl_password else None,
        )
    return config
