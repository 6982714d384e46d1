#!/usr/bin/env bash
# Builds the images, brings the Compose stack up, checks that it works and
# takes it down again; exits non-zero at the first thing that fails.
#
#   docker/check.sh [--amd64 BIN] [--arm64 BIN]
#
# Checked: the scratch image's binary (--version, a bad setting exits 2
# naming it, the arm64 image under qemu when binfmt runs it); three brokers,
# topic setup, producer, consumer, storage, the console and the scale profile's
# fourth broker, all healthy; readings flowing (offsets grow, and Kafka's
# own kafka-consumer-groups shows our group's lag back at 0); `health` from
# a container of its own; one broker killed while the pipeline runs, and
# started again, with nothing acknowledged lost; the storage stage stopped
# and its Parquet files read from its volume with pyarrow (every acknowledged
# reading, no offset twice); the device gateway taking readings from
# mosquitto_pub and curl on the host (a wrong password refused) and
# forwarding them; then `down -v`. Kafka UI is left out: its
# image comes from a registry.
#
# The local Kafka image is used (KAFKA_IMAGE=metrocloud-kafka:4.1.1) unless
# KAFKA_IMAGE is set. Compose v2 (`docker compose`) is used when present,
# else the standalone docker-compose.
set -euo pipefail
cd "$(dirname "$0")/.."

amd64_args=()
arm64=""
while [ $# -gt 0 ]; do
  case "$1" in
    --amd64) amd64_args=(--amd64 "$2"); shift 2 ;;
    --arm64) arm64=$2; shift 2 ;;
    *) echo "usage: $0 [--amd64 BIN] [--arm64 BIN]" >&2; exit 2 ;;
  esac
done

# shellcheck source=docker/engine.sh
source docker/engine.sh
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-metrocloud}
export METROCLOUD_CONSOLE_TOKEN=${METROCLOUD_CONSOLE_TOKEN:-check-$$}
gateway_credentials
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
image=metrocloud:$version
compose() { "${compose_cmd[@]}" -f docker/compose.yaml --profile console --profile scale --profile gateway "$@"; }
services=(kafka1 kafka2 kafka3 kafka4 topic-setup kafka-producer kafka-consumer metrocloud-aggregate metrocloud-store metrocloud-console metrocloud-gateway)

step "images"
build_args=("${amd64_args[@]}")
[ -z "$arm64" ] || build_args+=(--arm64 "$arm64")
[[ "$KAFKA_IMAGE" == metrocloud-kafka:* ]] || build_args+=(--no-kafka)
docker/build-images.sh "${build_args[@]}"
docker image inspect "$KAFKA_IMAGE" >/dev/null 2>&1 ||
  fail "no image $KAFKA_IMAGE: pull it, or build the local one with docker/build-images.sh"

step "the scratch image's binary"
docker run --rm "$image" --version
set +e
message=$(docker run --rm -e KAFKA_PARTITIONS=0 "$image" config 2>&1 >/dev/null)
status=$?
set -e
[ "$status" -eq 2 ] || fail "a bad setting gave exit status $status, not 2"
grep -q KAFKA_PARTITIONS <<<"$message" || fail "the error does not name the setting: $message"
echo "a bad setting: exit status 2, naming it: $(head -n 1 <<<"$message")"
# The arm64 image runs here only through the kernel's binfmt_misc handler for
# aarch64 (qemu-user-static); without one it is built and its binary checked
# (statically linked, for aarch64) but not run.
arm64_runs=no
if [ -n "$arm64" ]; then
  arch=$(docker image inspect -f '{{.Architecture}}' "$image-arm64")
  [ "$arch" = arm64 ] || fail "$image-arm64 is for $arch, not arm64"
  if [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    docker run --rm --platform linux/arm64 "$image-arm64" --version ||
      fail "the arm64 image does not run under qemu"
    arm64_runs=yes
    echo "the arm64 image runs under qemu (binfmt_misc)"
  else
    echo "the arm64 image is built, not run: no binfmt_misc handler for aarch64 here"
  fi
fi

cleanup() {
  status=$?
  if [ "$status" -ne 0 ]; then
    echo "--- the stack's last log lines, after a failure"
    compose logs --tail 30 "${services[@]}" 2>&1 | tail -n 150 || true
  fi
  compose down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$credentials_dir"
  exit "$status"
}
trap cleanup EXIT

for port in 29092 29093 29094 29095 8081 1883 8088; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    fail "port $port on this machine is taken, and the stack publishes it: stop what listens there (a local cluster: metrocloud cluster down)"
  fi
done

step "up: ${services[*]} (Kafka from $KAFKA_IMAGE)"
compose down -v --remove-orphans >/dev/null 2>&1 || true
compose up -d --no-build "${services[@]}"

step "healthy"
health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$1" 2>/dev/null; }
deadline=$(( $(date +%s) + 240 ))
for service in kafka1 kafka2 kafka3 kafka4 kafka-producer kafka-consumer metrocloud-aggregate metrocloud-store metrocloud-console metrocloud-gateway; do
  until [ "$(health "$service")" = healthy ]; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "$service is $(health "$service"), not healthy, after 4 minutes"
    sleep 3
  done
  echo "$service: healthy"
done
[ "$(docker inspect -f '{{.State.ExitCode}}' topic-setup)" = 0 ] || fail "topic-setup did not exit 0"
echo "topic-setup: exited 0"
# Healthy means the cluster answers; the stage says it aggregates once it has
# made its own topic and producer, a moment later.
aggregating_by=$(( $(date +%s) + 60 ))
until docker logs metrocloud-aggregate 2>&1 | grep -q 'aggregating readings of iot-sensor-data'; do
  [ "$(date +%s)" -lt "$aggregating_by" ] || fail "metrocloud-aggregate did not start aggregating within 60 s of being healthy"
  sleep 2
done
echo "metrocloud-aggregate: aggregating"

kafka_tool() { docker exec kafka1 "/opt/kafka/bin/$1.sh" --bootstrap-server kafka1:9092 "${@:2}"; }
# The sum of the topic's end offsets, once every partition has a leader that
# answers. A call that meets a dead leader waits out the tool's own 60 s.
end_offsets() {
  local listed deadline=$(( $(date +%s) + 150 ))
  while :; do
    listed=$(kafka_tool kafka-get-offsets --topic iot-sensor-data 2>/dev/null || true)
    if [ "$(grep -c '^iot-sensor-data:' <<<"$listed")" -eq 6 ]; then
      awk -F: '{ sum += $3 } END { print sum + 0 }' <<<"$listed"
      return
    fi
    [ "$(date +%s)" -lt "$deadline" ] || fail "not every partition's end offset could be read in 150 s"
    sleep 2
  done
}
group_lag() { kafka_tool kafka-consumer-groups --describe --group "${1:-iot-data-consumer}" 2>/dev/null |
  awk '$2 == "iot-sensor-data" && $6 ~ /^[0-9]+$/ { lag += $6; rows++ } END { print (rows ? lag : "none") }'; }

step "readings flow"
before=$(end_offsets)
sleep 10
after=$(end_offsets)
[ "$after" -gt "$before" ] || fail "the topic's end offsets did not grow in 10 s ($before, then $after)"
echo "end offsets of iot-sensor-data: $before, 10 s later $after"

step "the gateway: mosquitto_pub and curl from the host, into the topic"
readings=$(device_readings 50)
topic=sensors/temperature/temperature-900001
if mosquitto_pub -h 127.0.0.1 -p 1883 -u compose-check -P wrong -q 1 -t "$topic" -m '{}' 2>"$credentials_dir/refused"; then
  fail "the gateway took a wrong password"
fi
grep -q "not authorised" "$credentials_dir/refused" || fail "a wrong password was not refused as not authorised: $(cat "$credentials_dir/refused")"
echo "a wrong password: $(head -n 1 "$credentials_dir/refused")"
head -n 49 <<<"$readings" | mosquitto_pub -h 127.0.0.1 -p 1883 -u compose-check -P "$gateway_secret" -q 1 -t "$topic" -l ||
  fail "mosquitto_pub could not publish 49 readings to the gateway"
status=$(tail -n 1 <<<"$readings" | curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $gateway_secret" \
  --data-binary @- http://127.0.0.1:8088/api/v1/readings)
[ "$status" = 202 ] || fail "the gateway answered a reading over HTTP with $status, not 202"
gateway_metric 'metrocloud_gateway_readings_forwarded_total 50'
echo "49 readings over MQTT (QoS 1) and 1 over HTTP (202): Kafka acknowledged all 50 (the gateway's /metrics)"

step "health from a container of its own, on the stack's network"
network=$(docker inspect -f '{{range $name, $_ := .NetworkSettings.Networks}}{{$name}}{{end}}' kafka1)
docker run --rm --network "$network" -e KAFKA_BOOTSTRAP_SERVERS=kafka1:9092,kafka2:9092,kafka3:9092 "$image" health
if [ "$arm64_runs" = yes ]; then
  docker run --rm --platform linux/arm64 --network "$network" \
    -e KAFKA_BOOTSTRAP_SERVERS=kafka1:9092,kafka2:9092,kafka3:9092 "$image-arm64" health
  echo "the arm64 image's health check passed under qemu"
fi

step "a broker killed while the pipeline runs"
docker kill kafka2 >/dev/null
before=$(end_offsets)
sleep 10
after=$(end_offsets)
[ "$after" -gt "$before" ] || fail "nothing was written in 10 s with kafka2 down ($before, then $after)"
echo "with kafka2 killed (SIGKILL): end offsets $before, 10 s later $after"
docker start kafka2 >/dev/null
restarted=$(date +%s)
deadline=$(( restarted + 120 ))
until [ "$(health kafka2)" = healthy ]; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "kafka2 did not come back healthy in 2 minutes"
  sleep 3
done
echo "kafka2: healthy again, $(( $(date +%s) - restarted )) s after its start"

step "the producer stopped: everything it had acknowledged is consumed"
# A clean stop delivers what the producer holds and prints its summary.
docker stop -t 60 kafka-producer >/dev/null
summary=$(docker logs kafka-producer 2>&1 | grep 'producer summary' | tail -n 1)
[ -n "$summary" ] || fail "the producer printed no summary when stopped"
echo "$summary"
acked=$(sed -n 's/.* acked \([0-9]*\).*/\1/p' <<<"$summary")
failed=$(sed -n 's/.* failed \([0-9]*\).*/\1/p' <<<"$summary")
[ "$failed" = 0 ] || fail "the producer failed $failed readings"
deadline=$(( $(date +%s) + 90 ))
until [ "$(group_lag)" = 0 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "the group's lag did not come back to 0 in 90 s (last: $(group_lag))"
  sleep 2
done
echo "kafka-consumer-groups (in kafka1): group iot-data-consumer, lag 0 on every partition"
described=$(kafka_tool kafka-consumer-groups --describe --group iot-data-consumer 2>/dev/null)
head -n 4 <<<"$described"
# The consumer's status line (every 5 s) counts unique readings and the
# sequence numbers its delivery audit found missing.
sleep 6
line=$(docker logs kafka-consumer 2>/dev/null | grep 'consumer: ' | tail -n 1)
echo "$line"
readings=$(sed -n 's/.* readings \([0-9]*\).*/\1/p' <<<"$line")
gaps=$(sed -n 's/.* gaps \([0-9]*\).*/\1/p' <<<"$line")
[ "$gaps" = 0 ] || fail "the consumer's audit shows $gaps missing readings"
[ "$readings" -ge "$acked" ] || fail "$acked readings acknowledged, $readings consumed"
echo "acknowledged $acked, consumed $readings unique readings, 0 missing"

step "the storage stage stopped: every reading in its Parquet files once, read by pyarrow"
deadline=$(( $(date +%s) + 90 ))
until [ "$(group_lag iot-storage)" = 0 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "group iot-storage's lag did not come back to 0 in 90 s (last: $(group_lag iot-storage))"
  sleep 2
done
echo "kafka-consumer-groups (in kafka1): group iot-storage, lag 0 on every partition"
# A clean stop closes the open files and commits.
docker stop -t 60 metrocloud-store >/dev/null
stored_line=$(docker logs metrocloud-store 2>&1 | grep 'storage summary' | tail -n 1)
[ -n "$stored_line" ] || fail "the storage stage printed no summary when stopped"
echo "$stored_line"
volume=$(docker volume inspect -f '{{.Mountpoint}}' "${COMPOSE_PROJECT_NAME}_store-data")
counted=$(python3 - "$volume/readings" <<'PY'
import sys, pyarrow.dataset as ds, pyarrow.compute as pc
table = ds.dataset(sys.argv[1], format="parquet", partitioning="hive").to_table(
    columns=["kafka_partition", "kafka_offset"])
pairs = set(zip(table["kafka_partition"].to_pylist(), table["kafka_offset"].to_pylist()))
print(table.num_rows, len(pairs))
PY
) || fail "pyarrow could not read the stored files in $volume"
read -r rows unique <<<"$counted"
[ "$rows" = "$unique" ] || fail "$rows rows stored but only $unique distinct offsets: a record stored twice"
[ "$rows" -ge "$acked" ] || fail "$acked readings acknowledged, $rows stored"
echo "pyarrow: $rows rows in the store's files, $unique distinct (partition, offset), $acked acknowledged"

step "down -v"
trap - EXIT
compose down -v --remove-orphans
echo "docker/check.sh: all checks passed in $(( $(date +%s) - started )) s"
