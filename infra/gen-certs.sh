#!/bin/sh
# A private CA and one certificate for the NATS nodes (client TLS and the cluster's mutual-TLS
# routes), into infra/certs/ (or $1). Its names must be those clients dial: the compose service names,
# or your machines' (NATS_HOSTS="nats1.example.org nats2.example.org ...").
set -eu
out=${1:-$(dirname "$0")/certs}
hosts=${NATS_HOSTS:-"nats-1 nats-2 nats-3 localhost"}
days=${DAYS:-825}
mkdir -p "$out"
cd "$out"
san="IP:127.0.0.1"
for h in $hosts; do san="$san,DNS:$h"; done
openssl req -x509 -newkey rsa:3072 -nodes -days "$days" -subj "/CN=aios-nats-ca" \
  -keyout ca-key.pem -out ca.pem 2>/dev/null
openssl req -newkey rsa:3072 -nodes -subj "/CN=aios-nats" -keyout server-key.pem -out server.csr 2>/dev/null
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n' "$san" > ext.cnf
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days "$days" \
  -extfile ext.cnf -out server.pem 2>/dev/null
rm -f server.csr ext.cnf ca.srl
chmod 600 ca-key.pem server-key.pem
echo "wrote $out: ca.pem (give it to clients: SSL_CERT_FILE), server.pem, server-key.pem, ca-key.pem (keep offline)"
