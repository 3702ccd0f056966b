#!/usr/bin/env bash
# Black-box test of TLS, mTLS and tokens with grpcurl 1.8.6, as an operator would call a
# production server: -cacert, -cert/-key and -H 'authorization: Bearer …'.
# Usage: grpcurl_security.sh PORT GRPCURL CA CLIENT_CERT CLIENT_KEY WRITER_TOKEN READER_TOKEN
set -euo pipefail
port=$1 grpcurl=$2 ca=$3 cert=$4 key=$5 writer=$6 reader=$7
addr="localhost:$port"
svc=provision.v1.ProvisionPolicyService
tls=(-cacert "$ca" -cert "$cert" -key "$key")

fail() { echo "FAIL: $*" >&2; exit 1; }
expect_contains() { # haystack needle what
  grep -qF -- "$2" <<<"$1" || fail "$3: expected to find '$2' in: $1"
}
policy='{"policy": {"entitlement": {"app_id": "ops", "entitlement_id": "grpcurl"},
  "provision_policy": {"webhook": {"webhook_id": "hook"}}}, "change_cause": "from grpcurl"}'

# Reflection and health are open to any verified client, token or not.
services=$("$grpcurl" "${tls[@]}" "$addr" list)
expect_contains "$services" "$svc" "list over mTLS"
health=$("$grpcurl" "${tls[@]}" "$addr" grpc.health.v1.Health/Check)
expect_contains "$health" "SERVING" "health over mTLS"

# A writer's token writes, and the revision names the writer.
written=$("$grpcurl" "${tls[@]}" -H "authorization: Bearer $writer" -d "$policy" "$addr" "$svc/SetProvisionPolicy")
expect_contains "$written" '"actor": "deployer"' "Set records the token's principal"
got=$("$grpcurl" "${tls[@]}" -H "authorization: Bearer $reader" \
  -d '{"entitlement": {"app_id": "ops", "entitlement_id": "grpcurl"}}' "$addr" "$svc/GetProvisionPolicy")
expect_contains "$got" '"changeCause": "from grpcurl"' "a reader reads the cause"

# A reader may not write, and the error does not echo the token.
if out=$("$grpcurl" "${tls[@]}" -H "authorization: Bearer $reader" -d "$policy" "$addr" "$svc/SetProvisionPolicy" 2>&1); then
  fail "a reader's Set succeeded: $out"
fi
expect_contains "$out" "PermissionDenied" "reader Set"
expect_contains "$out" "may not call SetProvisionPolicy" "reader Set message"
grep -qF -- "$reader" <<<"$out" && fail "the token was echoed: $out"
if out=$("$grpcurl" "${tls[@]}" -d "$policy" "$addr" "$svc/SetProvisionPolicy" 2>&1); then
  fail "an unauthenticated Set succeeded: $out"
fi
# The certificate alone speaks for its subject, which the tokens file gives no role.
expect_contains "$out" "PermissionDenied" "Set without a token"
expect_contains "$out" "CN=ops-laptop (no role in the tokens file)" "the certificate's principal"

# Without a client certificate, or trusting no CA, there is no connection at all.
if out=$("$grpcurl" -cacert "$ca" -H "authorization: Bearer $writer" "$addr" list 2>&1); then
  fail "a client without a certificate was served: $out"
fi
if out=$("$grpcurl" -cert "$cert" -key "$key" "$addr" list 2>&1); then
  fail "a client that does not trust the server's CA connected: $out"
fi
if out=$("$grpcurl" -plaintext "$addr" list 2>&1); then
  fail "plaintext was served on the TLS port: $out"
fi
# Every method against every role (ROLE_TABLE: "Method=role …" from the server's table).
rank() { case $1 in reader) echo 0;; writer) echo 1;; admin) echo 2;; esac; }
checked=0
for entry in $ROLE_TABLE; do
  method=${entry%%=*} needed=${entry#*=}
  for pair in "reader=$reader" "writer=$writer" "admin=$ADMIN_TOKEN"; do
    role=${pair%%=*} token=${pair#*=}
    # -max-time ends a Watch that was let in; its exit code says nothing then.
    out=$("$grpcurl" "${tls[@]}" -max-time 2 -H "authorization: Bearer $token" -d '{}' \
      "$addr" "$svc/$method" 2>&1 || true)
    if [ "$(rank "$role")" -ge "$(rank "$needed")" ]; then
      grep -qE "Code: (PermissionDenied|Unauthenticated)" <<<"$out" && fail "$role refused $method: $out"
    else
      expect_contains "$out" "Code: PermissionDenied" "$role calling $method"
      expect_contains "$out" '"reason":"PERMISSION_DENIED"' "$role calling $method"
    fi
    checked=$((checked + 1))
  done
done
[ "$checked" -ge 39 ] || fail "only $checked role checks ran"
echo "grpcurl security: ok ($checked role checks)"
