# Sourced by docker/check.sh and docker/check-secure.sh: progress lines,
# failing with a reason, the Docker engine and Compose they need, and what
# the gateway's checks send.
started=$(date +%s)
step() { printf '\n--- %s (%ds)\n' "$*" "$(( $(date +%s) - started ))"; }
fail() {
  echo "error: $*" >&2
  exit 1
}

command -v docker >/dev/null || fail "no docker command: install Docker (Debian: apt-get install docker.io)"
docker info >/dev/null 2>&1 ||
  fail "no Docker engine answers at ${DOCKER_HOST:-unix:///var/run/docker.sock}: start dockerd (or set DOCKER_HOST)"
if docker compose version >/dev/null 2>&1; then
  compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose_cmd=(docker-compose)
else
  fail "neither 'docker compose' nor docker-compose: install one (Debian: apt-get install docker-compose)"
fi
export KAFKA_IMAGE=${KAFKA_IMAGE:-metrocloud-kafka:4.1.1}

# The gateway's devices: one fleet credential (name compose-check, secret
# $gateway_secret), in a file the gateway's container reads.
gateway_credentials() {
  gateway_secret=gateway-check-$$-$RANDOM
  credentials_dir=$(mktemp -d)
  printf 'fleet compose-check %s\n' "$gateway_secret" >"$credentials_dir/devices"
  chmod 755 "$credentials_dir"
  chmod 644 "$credentials_dir/devices"
  export METROCLOUD_GATEWAY_CREDENTIALS_FILE=$credentials_dir/devices
}

# N readings of device temperature-900001, sequence 0 to N-1, one JSON per line.
device_readings() {
  python3 - "$1" <<'PY'
import json, datetime, sys
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
for sequence in range(int(sys.argv[1])):
    print(json.dumps({"schema_version": 1, "device_id": "temperature-900001", "device_type": "temperature",
        "run_id": "compose-check", "sequence": sequence, "timestamp": now, "value": 21.5, "unit": "°C",
        "location": {"site": "site-01", "zone": "zone-01", "latitude": 52.5, "longitude": 13.4},
        "battery_level": 90.0, "signal_strength": -60, "firmware_version": "1.0.0", "status": "ok",
        "is_anomaly": False, "anomaly_kind": None}))
PY
}

# Waits up to 60 s for the gateway's /metrics to show the line "$1".
gateway_metric() {
  local by=$(( $(date +%s) + 60 ))
  until curl -s -H "Authorization: Bearer $gateway_secret" http://127.0.0.1:8088/metrics | grep -qx "$1"; do
    [ "$(date +%s)" -lt "$by" ] || fail "the gateway's /metrics did not show \"$1\" within 60 s"
    sleep 2
  done
}
