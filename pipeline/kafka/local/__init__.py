"""A real single-node Apache Kafka broker on 127.0.0.1, for the kafka tests and local runs.

The broker is the plain JVM distribution: its jars come from Maven Central through the Maven
project ``pipeline/kafka/broker/pom.xml`` (shipped in the wheel, with the broker's log config)
into a cache outside git, and ``java -cp 'libs/*' kafka.Kafka`` runs one KRaft node that is both
broker and controller. No Docker, no downloads besides Maven's.

Used by ``tests/conftest.py`` (the ``kafka_bootstrap`` fixture calls :func:`start`) and by the
command line, for ``make kafka-up`` / ``make kafka-down``::

    python -m pipeline.kafka.local up [--data-dir .kafka]   # prints 127.0.0.1:PORT
    python -m pipeline.kafka.local address [--data-dir .kafka]
    python -m pipeline.kafka.local down [--data-dir .kafka]

The parts: ``tooling`` (java, Maven, the jars, LocalKafkaError), ``probe`` (does a broker
answer), ``process`` (start, find, restart, stop) and ``__main__`` (the command line).

Files in the data directory: ``server.properties``, ``kraft/`` (the topic data, wiped by every
:func:`start`), ``broker.log`` (log4j, warnings only), ``broker.out`` (the JVM's own output) and
``broker.json`` (pid and bootstrap address of the running broker).

Version: KAFKA_VERSION (in ``tooling``) is the newest release on Maven Central (4.4.0): it works
with the clients we pin. 4.4.0, 4.1.2, 4.0.2 and 3.9.2 all passed the same checks with aiokafka
0.14.0 (admin create_topics with 3 partitions, ``send_and_wait`` uncompressed and gzip, a
consumer group commit, a transaction read back read_committed) and faust-streaming 0.15.3 (an
in-process ``faust.App``, ``web_enabled=False``, with an agent and a Table whose changelog was
read back, at_least_once and exactly_once); 4.4.0 and 3.9.2 also passed a ``faust.Worker`` run
restarted on the same app id. Kafka 4.0 removed the oldest protocol versions (KIP-896), but
aiokafka negotiates newer ones and Faust talks through aiokafka. 3.9.2 starts with these same
settings, so it is the fallback should a later 4.x change bite.
"""

from pipeline.kafka.local.probe import answers_metadata
from pipeline.kafka.local.process import READY_TIMEOUT_S, Broker, restart, running, start
from pipeline.kafka.local.tooling import KAFKA_VERSION, LocalKafkaError, cache_root, fetch_jars

__all__ = [
    "KAFKA_VERSION",
    "READY_TIMEOUT_S",
    "Broker",
    "LocalKafkaError",
    "answers_metadata",
    "cache_root",
    "fetch_jars",
    "restart",
    "running",
    "start",
]
