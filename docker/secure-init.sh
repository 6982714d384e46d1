#!/bin/sh
# Makes the secure Compose variant's secrets, once, in /etc/kafka/secrets (the
# volume kafka-secrets): a password per user, a CA and the brokers' certificate
# (keytool), the brokers' settings file of secrets, and admin's client settings.
set -eu
dir=/etc/kafka/secrets
cd "$dir"
password() { tr -dc 'A-Za-z0-9' </dev/urandom | head -c 24; }
umask 077
added=""
for user in admin producer consumer console gateway pipeline; do
  [ -f "$user.password" ] && continue
  password >"$user.password"
  added="$added $user"
done
if [ -f broker.p12 ]; then
  # A volume made before a user existed gets that user's password alone.
  chown 1000:1000 ./*.password
  chmod 644 ./*.password
  echo "secrets already made${added:+; a password made for:$added}"
  exit 0
fi
keystore=$(password)
store() { echo -keystore "$1" -storetype PKCS12 -storepass "$keystore"; }
keytool -genkeypair -alias ca -keyalg EC -groupname secp256r1 -validity 3650 \
  -dname "CN=MetroCloud Compose CA" -ext bc:c $(store ca.p12) >/dev/null
keytool -exportcert -rfc -alias ca -file ca.pem $(store ca.p12) >/dev/null
keytool -genkeypair -alias broker -keyalg EC -groupname secp256r1 -validity 3650 \
  -dname "CN=kafka" $(store broker.p12) >/dev/null
keytool -certreq -alias broker -file broker.csr $(store broker.p12) >/dev/null
keytool -gencert -rfc -alias ca -infile broker.csr -outfile broker.pem -validity 825 \
  -ext "SAN=dns:kafka1,dns:kafka2,dns:kafka3,dns:kafka4,dns:localhost,ip:127.0.0.1" \
  -ext EKU=serverAuth $(store ca.p12) >/dev/null
keytool -importcert -noprompt -alias ca -file ca.pem $(store broker.p12) >/dev/null
keytool -importcert -noprompt -alias broker -file broker.pem $(store broker.p12) >/dev/null
rm -f broker.csr broker.pem
admin=$(cat admin.password)
# Read by the brokers through Kafka's FileConfigProvider.
printf 'admin=%s\nkeystore=%s\n' "$admin" "$keystore" >broker.properties
# Kafka's tools as admin, inside the network.
cat >admin.properties <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$admin";
PROPERTIES
# The brokers run as uid 1000, the MetroCloud images as 65532: both read the
# files here; only what mounts the volume can reach them.
chown -R 1000:1000 "$dir"
chmod 755 "$dir"
chmod 644 ./*
chmod 600 ca.p12
echo "secrets made: users admin, producer, consumer, console, gateway, pipeline; CA in ca.pem"
