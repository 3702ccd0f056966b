#!/usr/bin/env bash
# Black-box test with grpcurl 1.8.6 (a Go client using server reflection), as an operator would.
# Usage: grpcurl.sh HOST:PORT GRPCURL_BINARY
set -euo pipefail
addr=$1
grpcurl=$2
svc=provision.v1.ProvisionPolicyService
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
expect_contains() { # haystack needle what
  grep -qF -- "$2" <<<"$1" || fail "$3: expected to find '$2' in: $1"
}

# Discovery through reflection (grpcurl 1.8.6 speaks only v1alpha).
services=$("$grpcurl" -plaintext "$addr" list)
expect_contains "$services" "$svc" "list"
expect_contains "$services" "grpc.health.v1.Health" "list"
methods=$("$grpcurl" -plaintext "$addr" list "$svc")
for m in GetProvisionPolicy SetProvisionPolicy ValidateProvisionPolicy; do
  expect_contains "$methods" "$svc.$m" "list methods"
done
described=$("$grpcurl" -plaintext "$addr" describe provision.v1.ProvisionPolicy)
expect_contains "$described" "oneof typ {" "describe shows the oneof"
expect_contains "$described" ".provision.v1.MultiStep multi_step = 5;" "describe shows the arms"
expect_contains "$described" "Exactly one member of \`typ\` must" "describe shows the comments"
described=$("$grpcurl" -plaintext "$addr" describe "$svc")
expect_contains "$described" "ABORTED (ETAG_MISMATCH" "RPC comments list their error codes"

# Health.
health=$("$grpcurl" -plaintext -d '{"service":"provision.v1.ProvisionPolicyService"}' "$addr" grpc.health.v1.Health/Check)
expect_contains "$health" '"status": "SERVING"' "health"

# Set from a file with -d @, in ProtoJSON (camelCase names).
cat >"$work/set.json" <<'JSON'
{
  "policy": {
    "entitlement": {"appId": "grpcurl-app", "entitlementId": "admins"},
    "provisionPolicy": {"multiStep": {"provisionSteps": [
      {"webhook": {"webhookId": "notify-it"}},
      {"connector": {"account": {"connectorId": "okta", "config": {"email": "subject.email"}, "doNotSave": {}}}},
      {"manual": {"instructions": "Confirm in the admin console.", "assignee": {"appOwners": {"fallbackUserIds": ["u-1"]}}}}
    ]}}
  }
}
JSON
set_out=$("$grpcurl" -plaintext -d @ "$addr" "$svc/SetProvisionPolicy" <"$work/set.json")
expect_contains "$set_out" '"revision": "1"' "set revision"
expect_contains "$set_out" '"etag": "\"1\""' "set etag"
expect_contains "$set_out" '"createTime"' "set create_time"

get_out=$("$grpcurl" -plaintext -d '{"entitlement":{"app_id":"grpcurl-app","entitlement_id":"admins"}}' "$addr" "$svc/GetProvisionPolicy")
expect_contains "$get_out" '"webhookId": "notify-it"' "get returns the policy"
expect_contains "$get_out" '"email": "subject.email"' "get returns the config"

# Validate of an invalid policy answers OK with the violations as data.
val_out=$("$grpcurl" -plaintext -d @ "$addr" "$svc/ValidateProvisionPolicy" <<'JSON'
{"policy": {"entitlement": {"appId": "a", "entitlementId": "b"},
  "provisionPolicy": {"multiStep": {"provisionSteps": [{"webhook": {}}, {"manual": {}}]}}}}
JSON
)
expect_contains "$val_out" '"field": "policy.provision_policy.multi_step.provision_steps[0].webhook.webhook_id"' "validate path"
expect_contains "$val_out" '"reason": "NO_PROVISIONER"' "validate reason"
expect_contains "$val_out" '"severity": "SEVERITY_ERROR"' "validate severity"

# Set of the same invalid policy: INVALID_ARGUMENT (exit 64+3) with the details rendered as JSON.
set +e
err=$("$grpcurl" -plaintext -format-error -d @ "$addr" "$svc/SetProvisionPolicy" 2>&1 <<'JSON'
{"policy": {"entitlement": {"appId": "a", "entitlementId": "b"},
  "provisionPolicy": {"multiStep": {"provisionSteps": [{"webhook": {}}, {"manual": {}}]}}}}
JSON
)
code=$?
set -e
[ "$code" -eq 67 ] || fail "invalid Set exits 67 (INVALID_ARGUMENT), got $code: $err"


# A stale etag: ABORTED (exit 64+10) with a PreconditionFailure.
set +e
err=$("$grpcurl" -plaintext -format-error -d @ "$addr" "$svc/SetProvisionPolicy" 2>&1 <<'JSON'
{"etag": "\"7\"", "policy": {"entitlement": {"appId": "grpcurl-app", "entitlementId": "admins"},
  "provisionPolicy": {"webhook": {"webhookId": "w"}}}}
JSON
)
code=$?
set -e
[ "$code" -eq 74 ] || fail "stale etag exits 74 (ABORTED), got $code: $err"
expect_contains "$err" 'google.rpc.PreconditionFailure' "PreconditionFailure rendered"
expect_contains "$err" '"reason":"ETAG_MISMATCH"' "ETAG_MISMATCH"

# An unknown entitlement: NOT_FOUND (exit 64+5).
set +e
err=$("$grpcurl" -plaintext -format-error -d '{"entitlement":{"appId":"x","entitlementId":"y"}}' "$addr" "$svc/GetProvisionPolicy" 2>&1)
code=$?
set -e
[ "$code" -eq 69 ] || fail "unknown entitlement exits 69 (NOT_FOUND), got $code: $err"
expect_contains "$err" 'google.rpc.ResourceInfo' "ResourceInfo rendered"

echo "grpcurl: all checks passed"
