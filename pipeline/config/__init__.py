"""Settings of a run: what each key accepts and its default (`settings`), loaded from the TOML
config file and the environment (`load`), with Kafka security (`security`) and partner tables
(`partners`) checked at load. Every problem is one `ConfigError` line that never shows a secret.
"""

from pipeline.config.keys import ConfigError
from pipeline.config.load import ENV_PREFIX, load_config
from pipeline.config.settings import (
    SASL_MECHANISMS,
    SECURITY_PROTOCOLS,
    Config,
    KafkaSettings,
    TopicSettings,
    WorkerSettings,
)

__all__ = [
    "ENV_PREFIX",
    "SASL_MECHANISMS",
    "SECURITY_PROTOCOLS",
    "Config",
    "ConfigError",
    "KafkaSettings",
    "TopicSettings",
    "WorkerSettings",
    "load_config",
]
