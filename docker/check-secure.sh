#!/usr/bin/env bash
# Brings up the secure Compose variant (docker/compose.secure.yaml) with the
# images docker/check.sh built, checks it, and takes it down again; exits
# non-zero at the first thing that fails.
#
#   docker/check-secure.sh
#
# Checked: the secrets are made once and the SCRAM users, topics and ACLs set
# up; the producer (as producer) and the consumer (as consumer) move readings
# until Kafka's own kafka-consumer-groups, as admin, shows the group's lag at
# 0; the gateway (as gateway) forwarding devices' readings and a refused
# one's dead letter; refused, each with exit status 1 and its reason: the
# consumer's user writing readings, the gateway's user reading them, a wrong
# password, a client with no SASL; Kafka's Java
# tools from the host over SASL_SSL, with the CA from the volume and SCRAM as
# producer; no password in any container's log; then `down -v`.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=docker/engine.sh
source docker/engine.sh
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-metrocloud-secure}
# The console is not started here, but Compose reads its settings all the same.
export METROCLOUD_CONSOLE_TOKEN=${METROCLOUD_CONSOLE_TOKEN:-check-$$}
gateway_credentials
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
for image in "metrocloud:$version" "$KAFKA_IMAGE"; do
  docker image inspect "$image" >/dev/null 2>&1 || fail "no image $image: run docker/build-images.sh (or docker/check.sh) first"
done
compose() { "${compose_cmd[@]}" -f docker/compose.yaml -f docker/compose.secure.yaml "$@"; }
work=$(mktemp -d)
cleanup() {
  compose --profile gateway down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$work" "$credentials_dir"
}
trap cleanup EXIT
secret() { compose run --rm --no-deps -T --entrypoint cat secure-init "/etc/kafka/secrets/$1"; }

step "up: brokers, secrets, users, topics and ACLs, producer, consumer"
compose up -d kafka1 kafka2 kafka3 topic-setup kafka-producer kafka-consumer
compose logs secure-init secure-setup topic-setup | grep -E "secrets made|SCRAM user|ACL entries" || true

step "readings flow: every reading the producer had acknowledged is committed by the consumer's group"
admin_tool() { compose exec -T kafka1 "/opt/kafka/bin/$1.sh" --bootstrap-server kafka1:9092 --command-config /etc/kafka/secrets/admin.properties "${@:2}"; }
# Column 4 is the committed offset, 5 the end of the partition, 6 the lag.
group_sum() { admin_tool kafka-consumer-groups --describe --group iot-data-consumer 2>/dev/null |
  awk -v column="$1" '$1 == "iot-data-consumer" && $column ~ /^[0-9]+$/ { s += $column; n++ } END { print s + 0, n + 0 }'; }
deadline=$(( $(date +%s) + 180 ))
until read -r committed partitions <<<"$(group_sum 4)" && [ "$committed" -ge 50 ] && [ "$partitions" -eq 6 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || { compose logs --tail 20 kafka-producer kafka-consumer topic-setup; fail "no readings committed within 180 s"; }
  sleep 5
done
echo "readings committed so far: $committed over 6 partitions; stopping the producer"
compose stop kafka-producer >/dev/null 2>&1
acked=$(compose logs --no-color kafka-producer | sed -n 's/.*producer summary: .* acked \([0-9]*\),.*/\1/p' | tail -n 1)
[ -n "$acked" ] || fail "the producer printed no summary"
deadline=$(( $(date +%s) + 120 ))
until read -r lag _ <<<"$(group_sum 6)" && read -r ends _ <<<"$(group_sum 5)" && [ "$lag" -eq 0 ] && [ "$ends" -eq "$acked" ]; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "after 120 s: lag $lag, $ends readings in the topic, $acked acknowledged"
  sleep 3
done
echo "acknowledged $acked, in the topic $ends, lag 0: every reading committed by iot-data-consumer"

step "the gateway as its own user: devices' readings and a refused one's dead letter into Kafka"
compose --profile gateway up -d --no-deps metrocloud-gateway
by=$(( $(date +%s) + 60 ))
until curl -s -o /dev/null http://127.0.0.1:8088/metrics; do
  [ "$(date +%s)" -lt "$by" ] || { compose logs --tail 20 metrocloud-gateway; fail "the gateway did not answer within 60 s"; }
  sleep 1
done
answer=$( (device_readings 20; echo '{"device_id": "temperature-900001"}') |
  curl -s -H "Authorization: Bearer $gateway_secret" -H 'Content-Type: application/x-ndjson' \
    --data-binary @- http://127.0.0.1:8088/api/v1/readings)
grep -q '"accepted":20,"refused":1' <<<"$answer" || fail "the gateway answered 20 readings and a bad line with: $answer"
gateway_metric 'metrocloud_gateway_readings_forwarded_total 20'
gateway_metric 'metrocloud_gateway_dead_letters_total 1'
echo "20 readings and 1 dead letter posted (HTTP NDJSON): Kafka acknowledged them all, written as gateway"

step "refusals: each ends at once with status 1 and its reason"
refused() {
  local what=$1 told=$2
  shift 2
  set +e
  output=$(timeout 60 "${compose_cmd[@]}" -f docker/compose.yaml -f docker/compose.secure.yaml run --rm --no-deps -T "$@" 2>&1)
  status=$?
  set -e
  [ "$status" -eq 1 ] || { echo "$output" | tail -5; fail "$what: exit status $status, not 1"; }
  grep -q "$told" <<<"$output" || { echo "$output" | tail -5; fail "$what: not told \"$told\""; }
  echo "$what: refused, \"$told\""
}
refused "the consumer's user writing readings" "TopicAuthorizationFailed" \
  -e KAFKA_SASL_USERNAME=consumer -e KAFKA_SASL_PASSWORD_FILE=/secrets/consumer.password kafka-producer produce
refused "the gateway's user reading readings" "GroupAuthorizationFailed" \
  -e KAFKA_SASL_USERNAME=gateway -e KAFKA_SASL_PASSWORD_FILE=/secrets/gateway.password \
  -e KAFKA_ALERTS_TOPIC=iot-sensor-data -e KAFKA_DLQ_TOPIC=iot-sensor-data kafka-consumer consume
refused "a wrong password" "refused authentication" \
  -e KAFKA_SASL_PASSWORD=wrong -e KAFKA_SASL_PASSWORD_FILE= kafka-producer produce
refused "a client with no SASL" "the listener requires SASL" \
  -e KAFKA_SECURITY_PROTOCOL=PLAINTEXT kafka-consumer health

step "from the host over SASL_SSL: Kafka's Java tools as producer, trusting the CA from the volume"
secret ca.pem >"$work/ca.pem"
producer_password=$(secret producer.password)
cat >"$work/producer.properties" <<PROPERTIES
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="producer" password="$producer_password";
ssl.truststore.type=PEM
ssl.truststore.location=$work/ca.pem
PROPERTIES
metrocloud=${METROCLOUD:-target/debug/metrocloud}
[ -x "$metrocloud" ] || fail "no $metrocloud to run Kafka's tools with: build it (cargo build) or set METROCLOUD"
described=$("$metrocloud" cluster tool kafka-topics --bootstrap-server localhost:29092 \
  --command-config "$work/producer.properties" --describe --topic iot-sensor-data)
grep -q "PartitionCount: 6" <<<"$described" || { echo "$described"; fail "kafka-topics over SASL_SSL did not describe iot-sensor-data"; }
echo "kafka-topics over SASL_SSL as producer: iot-sensor-data, 6 partitions"

step "no password in any container's log"
logs=$(compose logs --no-color 2>&1)
for user in admin producer consumer console gateway pipeline; do
  password=$(secret "$user.password")
  if grep -qF "$password" <<<"$logs"; then fail "$user's password is in the logs"; fi
done
echo "no password in $(wc -l <<<"$logs") lines of logs"

step "down"
compose --profile gateway down -v --remove-orphans >/dev/null 2>&1
echo "docker/check-secure.sh: all checks passed in $(( $(date +%s) - started )) s"
