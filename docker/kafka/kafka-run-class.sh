#!/bin/sh
# Runs a class from Kafka's jars, reading the variables Kafka's own script
# reads: KAFKA_HEAP_OPTS (default -Xmx256M), KAFKA_JVM_PERFORMANCE_OPTS,
# KAFKA_LOG4J_OPTS (default: the tools' log configuration) and KAFKA_OPTS.
# Unquoted on purpose: each variable holds several options.
if [ $# -lt 1 ]; then
  echo "usage: kafka-run-class.sh CLASS [ARGUMENTS...]" >&2
  exit 2
fi
class=$1
shift
log4j=/opt/kafka/config/tools-log4j2.yaml
[ -f "$log4j" ] || log4j=/etc/kafka/docker/tools-log4j2.yaml
# shellcheck disable=SC2086
exec java ${KAFKA_HEAP_OPTS:--Xmx256M} \
  ${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true} \
  ${KAFKA_LOG4J_OPTS:--Dlog4j2.configurationFile=$log4j} \
  ${KAFKA_OPTS:-} -Dkafka.logs.dir=/opt/kafka/logs \
  -cp '/opt/kafka/libs/*' "$class" "$@"
