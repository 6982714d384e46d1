#!/usr/bin/env bash
# Builds MetroCloud's images on the local Docker engine from files on this
# machine: nothing is pulled, so it works where no registry is reachable.
#
#   docker/build-images.sh [--amd64 BIN] [--arm64 BIN] [--no-kafka]
#
# - metrocloud:0.1.0, FROM scratch: the static x86_64 binary BIN (default:
#   target/x86_64-unknown-linux-musl/release/metrocloud);
# - metrocloud:0.1.0-arm64, FROM scratch: the static aarch64 binary, if given;
# - metrocloud-kafka:4.1.1: Apache Kafka (docker/kafka/Dockerfile) on a Java
#   runtime made here with jlink, from the jars `metrocloud cluster up` caches.
#
# Needs docker, a JDK with jmods (for jlink), busybox-static (the Kafka
# image's shell) and the metrocloud binary. Each missing piece is named,
# with the package that provides it, and the script stops with status 1.
set -euo pipefail
cd "$(dirname "$0")/.."

amd64=target/x86_64-unknown-linux-musl/release/metrocloud
arm64=""
kafka=yes
while [ $# -gt 0 ]; do
  case "$1" in
    --amd64) amd64=$2; shift 2 ;;
    --arm64) arm64=$2; shift 2 ;;
    --no-kafka) kafka=no; shift ;;
    *) echo "usage: $0 [--amd64 BIN] [--arm64 BIN] [--no-kafka]" >&2; exit 2 ;;
  esac
done

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
kafka_version=4.1.1
missing() {
  echo "error: $1" >&2
  exit 1
}
command -v docker >/dev/null || missing "no docker command: install Docker (Debian: apt-get install docker.io)"
docker info >/dev/null 2>&1 || missing "no Docker engine answers: start dockerd (or the Docker service) first"
started=$(date +%s)
took() { echo "  ($(( $(date +%s) - started ))s)"; }
# `docker build` with the classic builder (no BuildKit plugin needed), its
# output shown only when it fails.
build() {
  local output
  if ! output=$(DOCKER_BUILDKIT=0 docker build "$@" 2>&1); then
    echo "$output" >&2
    missing "docker build $* failed"
  fi
}

# One scratch image: the binary (and an empty data folder) is the build context.
scratch_image() {
  local binary=$1 platform=$2 tag=$3 context
  [ -x "$binary" ] || missing "no static binary at $binary: build it with cargo build --release --target <arch>-unknown-linux-musl"
  case "$(file -L "$binary")" in
    *"statically linked"*|*"static-pie linked"*) ;;
    *) missing "$binary is not statically linked: a scratch image has no C library" ;;
  esac
  context=$(mktemp -d)
  cp "$binary" "$context/metrocloud"
  # The storage stage's folder, owned by the image's user, so that a named
  # volume mounted there starts writable.
  mkdir "$context/data"
  echo "==> $tag ($platform) from $binary"
  build --platform "$platform" -f docker/prebuilt.Dockerfile -t "$tag" "$context"
  rm -rf "$context"
  docker image inspect -f '    {{.Architecture}}, {{.Size}} bytes, user {{.Config.User}}' "$tag"
  took
}

scratch_image "$amd64" linux/amd64 "metrocloud:$version"
[ -z "$arm64" ] || scratch_image "$arm64" linux/arm64 "metrocloud:$version-arm64"
[ "$kafka" = yes ] || exit 0

echo "==> metrocloud-kafka:$kafka_version"
metrocloud=$amd64
[ -x "$metrocloud" ] || metrocloud=$(command -v metrocloud || true)
[ -n "$metrocloud" ] || missing "no metrocloud binary to fetch Kafka's jars with"
java_home=${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")}
command -v jlink >/dev/null && jlink=$(command -v jlink) || jlink=$java_home/bin/jlink
[ -x "$jlink" ] && [ -d "$java_home/jmods" ] ||
  missing "no jlink with jmods under $java_home: install a JDK (Debian: apt-get install openjdk-17-jdk-headless)"
busybox=$(command -v busybox || true)
case "$(file -L "${busybox:-/nonexistent}" 2>/dev/null)" in
  *"statically linked"*) ;;
  *) missing "no static busybox for the image's shell (Debian: apt-get install busybox-static)" ;;
esac

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
rootfs=$context/rootfs
writable=$context/writable
mkdir -p "$rootfs"/{bin,tmp,opt/kafka/bin,etc/kafka/docker} \
  "$writable"/{opt/kafka/config,var/lib/kafka/data,mnt/shared/config,etc/kafka/secrets,opt/kafka/logs}
chmod 1777 "$rootfs/tmp"

# The Java runtime: the modules a broker and the tools use, nothing else.
"$jlink" --add-modules java.se,jdk.unsupported,jdk.management,jdk.management.agent,jdk.crypto.ec,jdk.zipfs,jdk.security.auth,jdk.security.jgss,jdk.naming.dns,jdk.jfr \
  --strip-debug --no-man-pages --no-header-files --compress=2 --output "$rootfs/opt/java" 2>/dev/null
# ... and the C libraries it links (the JDK is the machine's, built for glibc).
{
  ldd "$rootfs/opt/java/bin/java"
  find "$rootfs/opt/java" -name '*.so' -exec ldd {} \; 2>/dev/null
} | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }' | sort -u | while read -r lib; do
  cp --parents -L "$lib" "$rootfs"
done
echo "    Java runtime: $(du -sh "$rootfs/opt/java" | cut -f1), C libraries: $(find "$rootfs" -path "$rootfs/opt" -prune -o -name '*.so*' -print | wc -l)"

# A shell and the usual commands, for the scripts and for `docker exec`.
cp "$(readlink -f "$busybox")" "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
done
# A user of its own for the broker, as in the official image.
echo 'root:x:0:0:root:/root:/bin/sh
appuser:x:1000:1000:Kafka:/opt/kafka:/bin/sh' > "$rootfs/etc/passwd"
echo 'root:x:0:
appuser:x:1000:' > "$rootfs/etc/group"

# Kafka's jars and a script per tool, as in Kafka's own bin/.
libs=$("$metrocloud" cluster jars)
cp -r "$libs" "$rootfs/opt/kafka/libs"
rm -f "$rootfs/opt/kafka/libs/.complete"
install -m 755 docker/kafka/kafka-run-class.sh docker/kafka/kafka-server-start.sh "$rootfs/opt/kafka/bin/"
"$metrocloud" cluster tools | while read -r name class; do
  printf '#!/bin/sh\nexec kafka-run-class.sh %s "$@"\n' "$class" > "$rootfs/opt/kafka/bin/$name.sh"
  chmod 755 "$rootfs/opt/kafka/bin/$name.sh"
done
install -m 755 docker/kafka/run "$rootfs/etc/kafka/docker/run"
install -m 644 docker/kafka/server.properties docker/kafka/log4j2.yaml docker/kafka/tools-log4j2.yaml \
  "$rootfs/etc/kafka/docker/"

cp docker/kafka/Dockerfile "$context/Dockerfile"
build -t "metrocloud-kafka:$kafka_version" "$context"
docker image inspect -f '    {{.Architecture}}, {{.Size}} bytes, user {{.Config.User}}' "metrocloud-kafka:$kafka_version"
took
