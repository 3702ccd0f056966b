"""Black-box test of the lifecycle RPCs with Python grpcio: paged listing at a snapshot, the change
stream (resume, deletes, bad cursors), the revision history and rollback.

Usage: python_lifecycle_client.py HOST:PORT REPO_ROOT
"""

import pathlib
import sys
import tempfile
import time

import grpc

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from python_client import check, generate_stubs  # noqa: E402


def main() -> None:
    address, repo = sys.argv[1], pathlib.Path(sys.argv[2])
    out = pathlib.Path(tempfile.mkdtemp())
    generate_stubs(repo, out)
    sys.path.insert(0, str(out))
    from google.protobuf import duration_pb2
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status
    from provision.v1 import provision_policy_pb2 as model
    from provision.v1 import provision_policy_service_pb2 as api
    from provision.v1 import provision_policy_service_pb2_grpc as api_grpc

    channel = grpc.insecure_channel(address)
    stub = api_grpc.ProvisionPolicyServiceStub(channel)
    PUT, DELETE = api.PolicyChange.KIND_PUT, api.PolicyChange.KIND_DELETE
    interval = duration_pb2.Duration(nanos=200_000_000)

    def ref(app_id: str, entitlement_id: str):
        return api.EntitlementRef(app_id=app_id, entitlement_id=entitlement_id)

    def put(entitlement, hook: str):
        resource = api.EntitlementProvisionPolicy(
            entitlement=entitlement,
            provision_policy=model.ProvisionPolicy(webhook=model.WebhookProvision(webhook_id=hook)),
        )
        response = stub.SetProvisionPolicy(api.SetProvisionPolicyRequest(policy=resource))
        check(response.change_cursor != "", f"Set of {entitlement} carries a change_cursor")
        return response

    def key(entitlement):
        return (entitlement.app_id, entitlement.entitlement_id)

    def details(error):
        """The ErrorInfo and BadRequest of an error, decoded from grpc-status-details-bin."""
        status = rpc_status.from_call(error)
        check(status is not None, f"grpc-status-details-bin present on {error.code()} {error.details()}")
        info, bad_request = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
        for detail in status.details:
            if detail.Is(info.DESCRIPTOR):
                detail.Unpack(info)
            elif detail.Is(bad_request.DESCRIPTOR):
                detail.Unpack(bad_request)
        return info, bad_request

    def next_change(stream, what: str):
        """The next message with changes, skipping checkpoints (which must carry none)."""
        for message in stream:
            check(message.cursor != "", f"{what}: every message carries a cursor")
            if message.checkpoint:
                check(len(message.changes) == 0, f"{what}: a checkpoint carries no changes: {message}")
                check(not message.HasField("commit_time"), f"{what}: a checkpoint has no commit_time")
                continue
            check(len(message.changes) > 0, f"{what}: a non-checkpoint message carries changes")
            check(message.HasField("commit_time"), f"{what}: a live change has a commit_time")
            return message
        raise SystemExit(f"FAIL: {what}: the stream ended ({stream.code()}) before a change arrived")

    # (a) A listing of 5 policies, 2 a page, follows next_page_token to the end: every policy once,
    # in (app_id, entitlement_id) order, every page at the same read_at, even when writes land
    # between pages; a watch from read_at then sees exactly those writes.
    app = "py-list-app"
    ids = ["ent-c", "ent-a", "ent-e", "ent-b", "ent-d"]  # not written in order
    for entitlement_id in ids:
        put(ref(app, entitlement_id), f"hook-{entitlement_id}")
    put(ref(app + "-x", "ent-a"), "other-app")  # an app whose id starts with ours: filtered out
    seen, read_ats, sizes, token, late_writes = [], set(), [], "", []
    while True:
        page = stub.ListProvisionPolicies(api.ListProvisionPoliciesRequest(app_id=app, page_size=2, page_token=token))
        check(page.read_at != "", "every page carries read_at")
        read_ats.add(page.read_at)
        sizes.append(len(page.policies))
        seen.extend(page.policies)
        check(len(sizes) < 10, f"listing ends: page sizes {sizes}")
        if not late_writes:
            # Writes after the first page: the later pages must not show them.
            late_writes = [put(ref(app, "ent-d"), "late-d"), put(ref(app, "ent-e"), "late-e"), put(ref(app, "ent-f"), "late-f")]
        if not page.next_page_token:
            break
        token = page.next_page_token
    keys = [key(p.entitlement) for p in seen]
    check(keys == [(app, e) for e in sorted(ids)], f"all 5 once in (app_id, entitlement_id) order: {keys}")
    check(sizes == [2, 2, 1], f"pages of at most 2: {sizes}")
    check(len(read_ats) == 1, f"every page has the same read_at: {read_ats}")
    check(all(p.revision == 1 for p in seen), f"the listing shows the store at read_at: {[(key(p.entitlement), p.revision) for p in seen]}")
    check(
        [p.provision_policy.webhook.webhook_id for p in seen] == [f"hook-{e}" for e in sorted(ids)],
        "the listed policies are those written before the listing",
    )
    read_at = read_ats.pop()
    stream = stub.WatchProvisionPolicies(
        api.WatchProvisionPoliciesRequest(start_cursor=read_at, app_id=app, checkpoint_interval=interval), timeout=20
    )
    for late in late_writes:
        message = next_change(stream, "watch from read_at")
        change = message.changes[0]
        check(len(message.changes) == 1 and change.kind == PUT, f"watch from read_at: one PUT per write: {message}")
        check(
            (key(change.entitlement), change.revision) == (key(late.policy.entitlement), late.policy.revision),
            f"watch from read_at continues the listing with {key(late.policy.entitlement)} r{late.policy.revision}, got {change}",
        )
        check(message.cursor == late.change_cursor, "the message cursor is the Set's change_cursor")
    stream.cancel()
    fresh = stub.ListProvisionPolicies(api.ListProvisionPoliciesRequest(app_id=app))
    check(len(fresh.policies) == 6 and fresh.read_at != read_at, "a new listing sees the late writes at a new read_at")

    # (b) A watch from a Set's change_cursor sees the 3 later Sets (not that one: start is
    # exclusive), one PUT each, with distinct cursors; checkpoints come at the interval.
    app = "py-watch-app"
    start = put(ref(app, "w0"), "w0-r1")
    request = api.WatchProvisionPoliciesRequest(start_cursor=start.change_cursor, app_id=app, checkpoint_interval=interval)
    stream = stub.WatchProvisionPolicies(request, timeout=20)
    writes = [put(ref(app, "w1"), "w1-r1"), put(ref(app, "w2"), "w2-r1"), put(ref(app, "w0"), "w0-r2")]
    expected = [(key(w.policy.entitlement), w.policy.revision) for w in writes]
    check(expected == [((app, "w1"), 1), ((app, "w2"), 1), ((app, "w0"), 2)], f"the Sets' revisions: {expected}")
    messages = []
    for write in writes:
        message = next_change(stream, "watch from a Set's cursor")
        check(len(message.changes) == 1, f"one change per Set: {message}")
        change = message.changes[0]
        got = (key(change.entitlement), change.revision)
        check(change.kind == PUT, f"KIND_PUT, got {api.PolicyChange.Kind.Name(change.kind)}")
        check(got == (key(write.policy.entitlement), write.policy.revision), f"expected {expected[len(messages)]}, got {got}")
        check(change.policy == write.policy, f"the change carries the resource as stored: {change.policy} vs {write.policy}")
        check(message.cursor == write.change_cursor, "the message cursor is the Set's change_cursor")
        messages.append(message)
    cursors = [m.cursor for m in messages] + [start.change_cursor]
    check(len(set(cursors)) == len(cursors), f"cursors differ: {cursors}")
    # Idle now: the next message is a checkpoint, within a few intervals.
    began = time.monotonic()
    idle = next(stream)
    waited = time.monotonic() - began
    check(idle.checkpoint and not idle.changes, f"an idle stream gets a checkpoint, got {idle}")
    check(waited < 3, f"a checkpoint within a few 200 ms intervals, waited {waited:.2f}s")
    stream.cancel()
    check(stream.code() == grpc.StatusCode.CANCELLED, f"cancelled, got {stream.code()}")

    # (c) Resume from the 2nd message's cursor: exactly the 3rd change comes next, then nothing.
    stream = stub.WatchProvisionPolicies(
        api.WatchProvisionPoliciesRequest(start_cursor=messages[1].cursor, app_id=app, checkpoint_interval=interval),
        timeout=20,
    )
    resumed = next_change(stream, "resumed watch")
    check(
        list(resumed.changes) == list(messages[2].changes) and resumed.cursor == messages[2].cursor,
        f"resume delivers exactly the 3rd change next: {resumed} vs {messages[2]}",
    )
    checkpoints = 0
    for message in stream:  # two idle checkpoints in a row, and no change repeated in between
        check(message.checkpoint and not message.changes, f"nothing after the 3rd change, got {message}")
        checkpoints += 1
        if checkpoints == 2:
            break
    stream.cancel()

    # (d) A Delete reaches a watch as KIND_DELETE with the tombstone revision and the last live
    # resource; Get then answers NOT_FOUND.
    app = "py-delete-app"
    entitlement = ref(app, "d0")
    first = put(entitlement, "d0-r1")
    second = put(entitlement, "d0-r2")
    stream = stub.WatchProvisionPolicies(
        api.WatchProvisionPoliciesRequest(start_cursor=second.change_cursor, entitlement=entitlement, checkpoint_interval=interval),
        timeout=20,
    )
    deleted = stub.DeleteProvisionPolicy(api.DeleteProvisionPolicyRequest(entitlement=entitlement))
    check(deleted.revision == 3, f"the tombstone is revision 3, got {deleted.revision}")
    check(deleted.change_cursor != "", "Delete carries a change_cursor")
    message = next_change(stream, "watch of a delete")
    check(len(message.changes) == 1, f"one change for a Delete: {message}")
    change = message.changes[0]
    check(change.kind == DELETE, f"KIND_DELETE, got {api.PolicyChange.Kind.Name(change.kind)}")
    check(key(change.entitlement) == key(entitlement) and change.revision == 3, f"the delete of d0 r3: {change}")
    check(change.policy == second.policy, f"KIND_DELETE carries the last live resource: {change.policy}")
    check(message.cursor == deleted.change_cursor, "the message cursor is the Delete's change_cursor")
    try:
        stub.GetProvisionPolicy(api.GetProvisionPolicyRequest(entitlement=entitlement))
        raise SystemExit("FAIL: Get of a deleted policy succeeded")
    except grpc.RpcError as error:
        check(error.code() == grpc.StatusCode.NOT_FOUND, f"Get after Delete: NOT_FOUND, got {error.code()}")
        info, _ = details(error)
        check(info.reason == "PROVISION_POLICY_NOT_FOUND", f"ErrorInfo {info}")

    listing = stub.ListProvisionPolicies(api.ListProvisionPoliciesRequest(app_id=app))
    check(len(listing.policies) == 0, f"a deleted policy is not listed: {listing.policies}")

    # (e) A garbage start_cursor fails the call with INVALID_ARGUMENT (INVALID_CURSOR).
    garbage = stub.WatchProvisionPolicies(api.WatchProvisionPoliciesRequest(start_cursor="not-a-cursor"), timeout=10)
    try:
        for message in garbage:
            raise SystemExit(f"FAIL: a garbage start_cursor streamed {message}")
        raise SystemExit("FAIL: a garbage start_cursor ended OK")
    except grpc.RpcError as error:
        check(error.code() == grpc.StatusCode.INVALID_ARGUMENT, f"garbage cursor INVALID_ARGUMENT, got {error.code()} {error.details()}")
        info, bad_request = details(error)
        check(info.reason == "INVALID_CURSOR" and info.domain == "provisiond", f"ErrorInfo {info}")
        fields = [(v.field, v.reason) for v in bad_request.field_violations]
        check(any(f.endswith("start_cursor") for f, _ in fields), f"BadRequest names start_cursor: {fields}")

    # (f) The history after the delete: the tombstone first, then the revisions, newest first;
    # rolling back to revision 1 undeletes the policy with revision 1's content.
    history = stub.ListProvisionPolicyRevisions(api.ListProvisionPolicyRevisionsRequest(entitlement=entitlement))
    shown = [(r.revision, r.deleted) for r in history.revisions]
    check(shown == [(3, True), (2, False), (1, False)], f"history newest first with the tombstone: {shown}")
    check(not history.next_page_token, "one page of history")
    tombstone, live = history.revisions[0], history.revisions[1:]
    check(not tombstone.HasField("policy"), f"a tombstone has no policy: {tombstone}")
    check(tombstone.change_cursor == deleted.change_cursor, "the tombstone's change_cursor is the Delete's")
    check(live[0].policy == second.policy and live[1].policy == first.policy, "past revisions as written")
    check(all(key(r.entitlement) == key(entitlement) for r in history.revisions), "history of d0 only")
    try:
        stub.RollbackProvisionPolicy(api.RollbackProvisionPolicyRequest(entitlement=entitlement, revision=3))
        raise SystemExit("FAIL: rollback to the tombstone succeeded")
    except grpc.RpcError as error:
        check(error.code() == grpc.StatusCode.INVALID_ARGUMENT, f"rollback to a delete: INVALID_ARGUMENT, got {error.code()}")
        info, _ = details(error)
        check(info.reason == "REVISION_DELETED", f"ErrorInfo {info}")
    rolled = stub.RollbackProvisionPolicy(api.RollbackProvisionPolicyRequest(entitlement=entitlement, revision=1))
    check(rolled.policy.revision == 4, f"rollback writes revision 4, got {rolled.policy.revision}")
    check(rolled.policy.provision_policy == first.policy.provision_policy, "rollback restores revision 1's policy")
    check(rolled.change_cursor not in ("", deleted.change_cursor), "rollback carries a new change_cursor")
    got = stub.GetProvisionPolicy(api.GetProvisionPolicyRequest(entitlement=entitlement))
    check(got.policy == rolled.policy, f"Get after rollback returns it: {got.policy}")
    check(got.policy.provision_policy.webhook.webhook_id == "d0-r1", "undeleted with revision 1's content")
    listing = stub.ListProvisionPolicies(api.ListProvisionPoliciesRequest(app_id=app))
    check(list(listing.policies) == [rolled.policy], f"an undeleted policy is listed again: {listing.policies}")
    message = next_change(stream, "watch of a rollback")
    check(
        [(c.kind, c.revision) for c in message.changes] == [(PUT, 4)] and message.cursor == rolled.change_cursor,
        f"a rollback reaches the watch as KIND_PUT r4: {message}",
    )
    stream.cancel()
    history = stub.ListProvisionPolicyRevisions(api.ListProvisionPolicyRevisionsRequest(entitlement=entitlement, page_size=2))
    check([(r.revision, r.deleted) for r in history.revisions] == [(4, False), (3, True)], "history pages newest first")
    check(history.next_page_token != "", "a second history page")

    channel.close()
    print("python lifecycle: all checks passed")


if __name__ == "__main__":
    main()
