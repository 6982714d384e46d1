# Sourced by docker/check.sh and docker/check-secure.sh: progress lines,
# failing with a reason, and the Docker engine and Compose they need.
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
