#!/bin/sh
# Makes the secure Compose variant's SCRAM users (SCRAM-SHA-512 and -256), as
# admin with Kafka's own kafka-configs; the topics and ACLs come next, from
# `metrocloud topics grant`. The tool repeats its arguments when it fails:
# its output is shown with the password masked.
set -eu
secrets=/etc/kafka/secrets
for user in producer consumer console gateway pipeline admin; do
  password=$(cat "$secrets/$user.password")
  for mechanism in SCRAM-SHA-512 SCRAM-SHA-256; do
    if ! output=$(/opt/kafka/bin/kafka-configs.sh --bootstrap-server kafka1:9092 \
      --command-config "$secrets/admin.properties" --alter --entity-type users --entity-name "$user" \
      --add-config "$mechanism=[password=$password]" 2>&1); then
      echo "$output" | sed "s/$password/***/g" >&2
      echo "error: could not make the $mechanism credential of $user" >&2
      exit 1
    fi
  done
  echo "SCRAM user $user made"
done
