#!/bin/sh
# Runs a broker (or controller) from a server.properties file, as Kafka's own
# script does: 1 GiB of heap unless KAFKA_HEAP_OPTS says otherwise, and logs
# to standard output through /opt/kafka/config/log4j2.yaml.
if [ $# -lt 1 ]; then
  echo "usage: kafka-server-start.sh server.properties [--override name=value ...]" >&2
  exit 2
fi
export KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx1G -Xms1G}"
export KAFKA_LOG4J_OPTS="${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=/opt/kafka/config/log4j2.yaml}"
exec kafka-run-class.sh kafka.Kafka "$@"
