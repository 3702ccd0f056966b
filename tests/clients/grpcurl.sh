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
for m in GetProvisionPolicy SetProvisionPolicy ValidateProvisionPolicy ListProvisionPolicies DeleteProvisionPolicy \
  ListProvisionPolicyRevisions RollbackProvisionPolicy WatchProvisionPolicies; do
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

# The lifecycle RPCs, in their own app. grpcurl hides default values (false, 0, "").
life=grpcurl-life
set_life() { # entitlement webhook
  "$grpcurl" -plaintext -d "{\"policy\": {\"entitlement\": {\"appId\": \"$life\", \"entitlementId\": \"$1\"},
    \"provisionPolicy\": {\"webhook\": {\"webhookId\": \"$2\"}}}}" "$addr" "$svc/SetProvisionPolicy"
}
field() { # json name: the first string value of "name" (cursors and tokens are hex)
  sed -n "s/^ *\"$2\": \"\\([^\"]*\\)\".*/\\1/p" <<<"$1" | head -n 1
}
first_line() { # haystack needle: the line number of the first match, or a large number
  { grep -nF -- "$2" <<<"$1" || echo 999999; } | head -n 1 | cut -d: -f1
}
for e in ent-b ent-a ent-c; do
  out=$(set_life "$e" "hook-$e")
  expect_contains "$out" '"changeCursor": "' "Set carries changeCursor"
done

# List, two a page: ent-a and ent-b, then ent-c alone, both pages at one readAt.
page1=$("$grpcurl" -plaintext -d "{\"appId\": \"$life\", \"pageSize\": 2}" "$addr" "$svc/ListProvisionPolicies")
expect_contains "$page1" '"entitlementId": "ent-a"' "list page 1"
expect_contains "$page1" '"entitlementId": "ent-b"' "list page 1"
grep -qF '"entitlementId": "ent-c"' <<<"$page1" && fail "list page 1 holds only 2: $page1"
[ "$(first_line "$page1" ent-a)" -lt "$(first_line "$page1" ent-b)" ] || fail "list page 1 in order: $page1"
token=$(field "$page1" nextPageToken)
read_at=$(field "$page1" readAt)
[ -n "$token" ] && [ -n "$read_at" ] || fail "list page 1 has nextPageToken and readAt: $page1"
page2=$("$grpcurl" -plaintext -d "{\"appId\": \"$life\", \"pageSize\": 2, \"pageToken\": \"$token\"}" "$addr" "$svc/ListProvisionPolicies")
expect_contains "$page2" '"entitlementId": "ent-c"' "list page 2"
grep -qF '"entitlementId": "ent-a"' <<<"$page2" && fail "list page 2 repeats nothing: $page2"
grep -qF '"nextPageToken"' <<<"$page2" && fail "list page 2 is the last: $page2"
[ "$(field "$page2" readAt)" = "$read_at" ] || fail "list page 2 has page 1's readAt $read_at: $page2"

# Delete ent-a (revision 2 is the tombstone): Get then answers NOT_FOUND.
ent_a="{\"appId\": \"$life\", \"entitlementId\": \"ent-a\"}"
del_out=$("$grpcurl" -plaintext -d "{\"entitlement\": $ent_a}" "$addr" "$svc/DeleteProvisionPolicy")
expect_contains "$del_out" '"revision": "2"' "delete writes tombstone revision 2"
del_cursor=$(field "$del_out" changeCursor)
[ -n "$del_cursor" ] || fail "delete carries changeCursor: $del_out"
set +e
err=$("$grpcurl" -plaintext -format-error -d "{\"entitlement\": $ent_a}" "$addr" "$svc/GetProvisionPolicy" 2>&1)
code=$?
set -e
[ "$code" -eq 69 ] || fail "Get after Delete exits 69 (NOT_FOUND), got $code: $err"
expect_contains "$err" '"reason":"PROVISION_POLICY_NOT_FOUND"' "Get after Delete"

# History: the tombstone first (deleted, no policy, the delete's cursor), then revision 1.
hist=$("$grpcurl" -plaintext -d "{\"entitlement\": $ent_a}" "$addr" "$svc/ListProvisionPolicyRevisions")
expect_contains "$hist" '"deleted": true' "history shows the delete"
expect_contains "$hist" "\"changeCursor\": \"$del_cursor\"" "the tombstone carries the delete's cursor"
[ "$(grep -m1 -F '"revision":' <<<"$hist")" = '      "revision": "2",' ] || fail "history newest first: $hist"
[ "$(first_line "$hist" '"deleted": true')" -lt "$(first_line "$hist" '"webhookId": "hook-ent-a"')" ] \
  || fail "the tombstone comes before revision 1: $hist"
[ "$(grep -cF '"deleted": true' <<<"$hist")" -eq 1 ] || fail "one tombstone: $hist"

# Rollback to revision 1 undeletes ent-a as revision 3 with revision 1's policy.
rb_out=$("$grpcurl" -plaintext -d "{\"entitlement\": $ent_a, \"revision\": 1}" "$addr" "$svc/RollbackProvisionPolicy")
expect_contains "$rb_out" '"revision": "3"' "rollback writes revision 3"
expect_contains "$rb_out" '"webhookId": "hook-ent-a"' "rollback restores revision 1"
expect_contains "$rb_out" '"changeCursor": "' "rollback carries changeCursor"
get_out=$("$grpcurl" -plaintext -d "{\"entitlement\": $ent_a}" "$addr" "$svc/GetProvisionPolicy")
expect_contains "$get_out" '"revision": "3"' "Get after rollback"
expect_contains "$get_out" '"webhookId": "hook-ent-a"' "Get after rollback"

# A stream: the initial state as of a Set's cursor, a checkpoint, then a live Set; grpcurl ends it
# at -max-time with DEADLINE_EXCEEDED (exit 64+4).
watched=grpcurl-watch
start=$("$grpcurl" -plaintext -d "{\"policy\": {\"entitlement\": {\"appId\": \"$watched\", \"entitlementId\": \"w\"},
  \"provisionPolicy\": {\"webhook\": {\"webhookId\": \"first\"}}}}" "$addr" "$svc/SetProvisionPolicy")
start_cursor=$(field "$start" changeCursor)
set +e
"$grpcurl" -plaintext -max-time 3 -d "{\"appId\": \"$watched\", \"startCursor\": \"$start_cursor\",
  \"sendInitialState\": true, \"checkpointInterval\": \"0.2s\"}" "$addr" "$svc/WatchProvisionPolicies" \
  >"$work/watch.out" 2>"$work/watch.err" &
watcher=$!
sleep 1
"$grpcurl" -plaintext -d "{\"policy\": {\"entitlement\": {\"appId\": \"$watched\", \"entitlementId\": \"w\"},
  \"provisionPolicy\": {\"webhook\": {\"webhookId\": \"second\"}}}}" "$addr" "$svc/SetProvisionPolicy" >/dev/null
set_code=$?
wait "$watcher"
code=$?
set -e
[ "$set_code" -eq 0 ] || fail "the live Set failed ($set_code)"
stream=$(cat "$work/watch.out")
[ "$code" -eq 68 ] || fail "the watch ends at -max-time with exit 68 (DEADLINE_EXCEEDED), got $code: $(cat "$work/watch.err") $stream"
expect_contains "$(cat "$work/watch.err")" "DeadlineExceeded" "the watch ends at -max-time"
expect_contains "$stream" '"kind": "KIND_INITIAL"' "initial state"
expect_contains "$stream" '"webhookId": "first"' "initial state"
expect_contains "$stream" '"checkpoint": true' "a checkpoint"
expect_contains "$stream" '"kind": "KIND_PUT"' "the live change"
expect_contains "$stream" '"webhookId": "second"' "the live change"
expect_contains "$stream" '"commitTime"' "the live change has a commit time"
initial=$(first_line "$stream" KIND_INITIAL)
checkpoint=$(first_line "$stream" '"checkpoint": true')
live=$(first_line "$stream" KIND_PUT)
[ "$initial" -lt "$checkpoint" ] && [ "$checkpoint" -lt "$live" ] \
  || fail "initial state, then a checkpoint, then the live change: $stream"
[ "$(grep -cF '"checkpoint": true' <<<"$stream")" -ge 3 ] || fail "checkpoints every 0.2s: $stream"
[ "$(grep -cF '"kind": ' <<<"$stream")" -eq 2 ] || fail "exactly one initial and one live change: $stream"

echo "grpcurl: all checks passed"
