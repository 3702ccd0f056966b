"""Black-box test with Python grpcio of the three newer policy arms (unconfigured, action,
device_placement), ResolveProvisionPlan, ListDependents and the dependents count, and of an old
client (stubs generated from the protos before the three arms existed) reading and writing back a
policy that uses an arm it does not know.

Usage: python_plans_client.py HOST:PORT REPO_ROOT
       python_plans_client.py --old-client HOST:PORT OLD_STUBS_DIR EXPECTED_REVISION
         (run by the first form in a subprocess, so the old stubs never meet the new ones)
"""

import json
import pathlib
import subprocess
import sys
import tempfile

import grpc

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from python_client import check, generate_stubs  # noqa: E402

# The last commit whose protos have neither the three arms nor the plan RPCs.
OLD_COMMIT = "648a3cb"
PROTOS = ["provision/v1/provision_policy.proto", "provision/v1/provision_policy_service.proto"]
ARMS_APP, ACTION_ID = "py-arms", "action"


def details(error):
    """The ErrorInfo and BadRequest of an error, decoded from grpc-status-details-bin."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)
    check(status is not None, f"grpc-status-details-bin present on {error.code()} {error.details()}")
    info, bad_request = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    for detail in status.details:
        if detail.Is(info.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(bad_request.DESCRIPTOR):
            detail.Unpack(bad_request)
    return info, bad_request


def old_client(address: str, stubs: pathlib.Path, expected_revision: int) -> None:
    """The old client: Get the action policy, check what it can see, Set it back unchanged."""
    sys.path.insert(0, str(stubs))
    from google.protobuf import unknown_fields
    from provision.v1 import provision_policy_pb2 as model
    from provision.v1 import provision_policy_service_pb2 as api
    from provision.v1 import provision_policy_service_pb2_grpc as api_grpc

    arms = set(model.ProvisionPolicy.DESCRIPTOR.fields_by_name)
    check(model.__file__.startswith(str(stubs)), f"old stubs imported from {stubs}, got {model.__file__}")
    check(not arms & {"unconfigured", "action", "device_placement"}, f"the old ProvisionPolicy lacks the new arms: {arms}")
    check(not hasattr(api, "ResolveProvisionPlanRequest"), "the old service has no ResolveProvisionPlan")

    def unknown(message):
        return sorted(field.field_number for field in unknown_fields.UnknownFieldSet(message))

    channel = grpc.insecure_channel(address)
    stub = api_grpc.ProvisionPolicyServiceStub(channel)
    entitlement = api.EntitlementRef(app_id=ARMS_APP, entitlement_id=ACTION_ID)
    got = stub.GetProvisionPolicy(api.GetProvisionPolicyRequest(entitlement=entitlement)).policy
    check(
        (got.entitlement.app_id, got.entitlement.entitlement_id) == (ARMS_APP, ACTION_ID),
        f"old client: the entitlement decodes: {got.entitlement}",
    )
    check(got.revision == expected_revision, f"old client: revision {expected_revision}, got {got.revision}")
    check(got.etag == f'"{expected_revision}"', f"old client: the etag decodes, got {got.etag}")
    check(got.HasField("create_time") and got.HasField("update_time"), "old client: the times decode")
    for name in ("provision_policy", "deprovision_policy"):
        policy = getattr(got, name)
        check(got.HasField(name), f"old client: {name} is present")
        check(policy.WhichOneof("typ") is None, f"old client: {name} has no arm it knows: {policy}")
        check(unknown(policy) == [8], f"old client: {name} keeps the action arm (field 8) as unknown: {unknown(policy)}")

    response = stub.SetProvisionPolicy(api.SetProvisionPolicyRequest(policy=got, etag=got.etag))
    stored = response.policy
    check(stored.revision == expected_revision + 1, f"old client: Set back writes revision + 1, got {stored.revision}")
    check(stored.etag not in ("", got.etag), f"old client: a new etag, got {stored.etag}")
    check(
        unknown(stored.provision_policy) == [8] and unknown(stored.deprovision_policy) == [8],
        f"old client: the Set response still carries the action arms: {stored}",
    )
    channel.close()
    print(json.dumps({"revision": stored.revision, "etag": stored.etag}))


def old_stubs(repo: pathlib.Path) -> pathlib.Path:
    """Stubs generated from the protos at OLD_COMMIT, in a directory of their own."""
    root = pathlib.Path(tempfile.mkdtemp())
    for proto in PROTOS:
        text = subprocess.run(
            ["git", "-C", str(repo), "show", f"{OLD_COMMIT}:proto/{proto}"], check=True, capture_output=True, text=True
        ).stdout
        check("ActionProvision" not in text and "ResolveProvisionPlan" not in text, f"{OLD_COMMIT}:{proto} is the old proto")
        path = root / "proto" / proto
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    out = root / "stubs"
    out.mkdir()
    generate_stubs(root, out)
    return out


def main() -> None:
    address, repo = sys.argv[1], pathlib.Path(sys.argv[2])
    out = pathlib.Path(tempfile.mkdtemp())
    generate_stubs(repo, out)
    sys.path.insert(0, str(out))
    from provision.v1 import provision_policy_pb2 as model
    from provision.v1 import provision_policy_service_pb2 as api
    from provision.v1 import provision_policy_service_pb2_grpc as api_grpc

    channel = grpc.insecure_channel(address)
    stub = api_grpc.ProvisionPolicyServiceStub(channel)
    PROVISION = api.PROVISION_DIRECTION_PROVISION
    DEPROVISION = api.PROVISION_DIRECTION_DEPROVISION

    def ref(app_id: str, entitlement_id: str):
        return api.EntitlementRef(app_id=app_id, entitlement_id=entitlement_id)

    def key(entitlement):
        return (entitlement.app_id, entitlement.entitlement_id)

    def resource(entitlement, provision, deprovision=None):
        return api.EntitlementProvisionPolicy(
            entitlement=entitlement, provision_policy=provision, deprovision_policy=deprovision
        )

    def put(entitlement, provision, deprovision=None):
        response = stub.SetProvisionPolicy(api.SetProvisionPolicyRequest(policy=resource(entitlement, provision, deprovision)))
        check(response.policy.revision == 1, f"first Set of {key(entitlement)} is revision 1, got {response.policy.revision}")
        return response

    def get(entitlement):
        return stub.GetProvisionPolicy(api.GetProvisionPolicyRequest(entitlement=entitlement)).policy

    def not_stored(entitlement, what: str):
        try:
            got = get(entitlement)
            raise SystemExit(f"FAIL: {what}: {key(entitlement)} was stored: {got}")
        except grpc.RpcError as error:
            check(error.code() == grpc.StatusCode.NOT_FOUND, f"{what}: Get is NOT_FOUND, got {error.code()}")

    unconfigured = model.ProvisionPolicy(unconfigured=model.UnconfiguredProvision())
    grant = model.ActionProvision(action_name="grant-seat", app_id="okta", connector_id="okta-conn", display_name="Grant a seat")
    revoke = model.ActionProvision(action_name="revoke-seat", app_id="okta", connector_id="okta-conn", display_name="Revoke the seat")
    placement = model.DevicePlacementProvision(vault_boundary_id="boundary-7")

    # (1) One policy per new arm: Set with the generated stubs, Get back, the arm and its fields.
    cases = {
        "unconfigured": (unconfigured, None),
        ACTION_ID: (model.ProvisionPolicy(action=grant), model.ProvisionPolicy(action=revoke)),
        "device": (model.ProvisionPolicy(device_placement=placement), None),
    }
    for entitlement_id, (provision, deprovision) in cases.items():
        entitlement = ref(ARMS_APP, entitlement_id)
        written = put(entitlement, provision, deprovision)
        got = get(entitlement)
        check(got == written.policy, f"Get of {entitlement_id} returns what Set stored: {got} vs {written.policy}")
        check(got.provision_policy == provision, f"{entitlement_id}: provision_policy round-trips: {got.provision_policy}")
        check(got.HasField("deprovision_policy") == (deprovision is not None), f"{entitlement_id}: deprovision_policy presence")
        if deprovision is not None:
            check(got.deprovision_policy == deprovision, f"{entitlement_id}: deprovision_policy round-trips")
    got = get(ref(ARMS_APP, "unconfigured"))
    check(got.provision_policy.WhichOneof("typ") == "unconfigured", f"the unconfigured arm: {got.provision_policy}")
    check(got.provision_policy.HasField("unconfigured"), "an empty UnconfiguredProvision is still a set arm")
    action_policy = get(ref(ARMS_APP, ACTION_ID))
    for name, want in (("provision_policy", grant), ("deprovision_policy", revoke)):
        policy = getattr(action_policy, name)
        check(policy.WhichOneof("typ") == "action", f"{name} is the action arm: {policy}")
        fields = (policy.action.action_name, policy.action.app_id, policy.action.connector_id, policy.action.display_name)
        check(fields == (want.action_name, want.app_id, want.connector_id, want.display_name), f"{name} action fields: {fields}")
    got = get(ref(ARMS_APP, "device"))
    check(got.provision_policy.WhichOneof("typ") == "device_placement", f"the device_placement arm: {got.provision_policy}")
    check(got.provision_policy.device_placement.vault_boundary_id == "boundary-7", f"vault_boundary_id: {got.provision_policy}")

    # unconfigured is refused as a step of a multi_step, at the step's path.
    steps = model.ProvisionPolicy(
        multi_step=model.MultiStep(
            provision_steps=[model.ProvisionPolicy(webhook=model.WebhookProvision(webhook_id="hook-1")), unconfigured]
        )
    )
    answer = stub.ValidateProvisionPolicy(api.ValidateProvisionPolicyRequest(policy=resource(ref(ARMS_APP, "steps"), steps)))
    check(not answer.valid, f"a multi_step with an unconfigured step is invalid: {answer}")
    found = [(v.field, v.reason, v.severity) for v in answer.violations]
    check(
        ("policy.provision_policy.multi_step.provision_steps[1].unconfigured", "UNCONFIGURED_STEP", api.SEVERITY_ERROR) in found,
        f"UNCONFIGURED_STEP error at provision_steps[1].unconfigured: {found}",
    )

    # An action without action_name: the Set fails with the field named, and writes nothing.
    nameless = ref(ARMS_APP, "nameless")
    bad = model.ProvisionPolicy(action=model.ActionProvision(app_id="okta", connector_id="okta-conn"))
    try:
        stub.SetProvisionPolicy(api.SetProvisionPolicyRequest(policy=resource(nameless, bad)))
        raise SystemExit("FAIL: Set of an action without action_name succeeded")
    except grpc.RpcError as error:
        check(error.code() == grpc.StatusCode.INVALID_ARGUMENT, f"INVALID_ARGUMENT, got {error.code()} {error.details()}")
        info, bad_request = details(error)
        check(info.reason == "INVALID_PROVISION_POLICY" and info.domain == "provisiond", f"ErrorInfo {info}")
        fields = [v.field for v in bad_request.field_violations]
        check("policy.provision_policy.action.action_name" in fields, f"BadRequest names action.action_name: {fields}")
    not_stored(nameless, "a refused Set")

    # (2) A chain A -> B -> C: A = [webhook, delegated(B)], B = [action, delegated(C)], C = device.
    app = "py-plans"
    a, b, c = ref(app, "ent-a"), ref(app, "ent-b"), ref(app, "ent-c")

    def delegated(target):
        return model.ProvisionPolicy(
            delegated=model.DelegatedProvision(app_id=target.app_id, entitlement_id=target.entitlement_id, implicit=True)
        )

    hook = model.ProvisionPolicy(webhook=model.WebhookProvision(webhook_id="hook-a"))
    action = model.ProvisionPolicy(action=grant)
    device = model.ProvisionPolicy(device_placement=placement)
    put(c, device)
    put(b, model.ProvisionPolicy(multi_step=model.MultiStep(provision_steps=[action, delegated(c)])))
    put(a, model.ProvisionPolicy(multi_step=model.MultiStep(provision_steps=[hook, delegated(b)])))

    def steps_of(plan):
        return [
            (step.step.WhichOneof("typ"), [key(e) for e in step.via], step.field, step.inferred_inverse, step.unresolved_reason)
            for step in plan.steps
        ]

    plan = stub.ResolveProvisionPlan(api.ResolveProvisionPlanRequest(entitlement=a, direction=PROVISION))
    p = "policy.provision_policy"
    want = [
        ("webhook", [key(a)], f"{p}.multi_step.provision_steps[0]", False, ""),
        ("action", [key(a), key(b)], f"{p}.multi_step.provision_steps[0]", False, ""),
        ("device_placement", [key(a), key(b), key(c)], p, False, ""),
    ]
    check(steps_of(plan) == want, f"the plan of A: {steps_of(plan)}, want {want}")
    check([s.step for s in plan.steps] == [hook, action, device], f"the plan's steps are the stored leaves: {plan.steps}")
    check(plan.complete and not plan.inferred_inverse, f"A's plan is complete, not inferred: {plan}")
    check(not plan.violations and plan.read_at != "", f"no violations, a read_at: {plan}")

    plan = stub.ResolveProvisionPlan(api.ResolveProvisionPlanRequest(entitlement=c, direction=DEPROVISION))
    check(plan.inferred_inverse, f"C has no deprovision_policy: its revoke plan is the inferred inverse: {plan}")
    check(steps_of(plan) == [("device_placement", [key(c)], p, True, "")], f"C's revoke plan: {steps_of(plan)}")
    check(plan.complete and plan.steps[0].step == device, f"C's revoke plan is its provision step: {plan}")

    # A preview of C delegating to A closes C -> A -> B -> C: the violation, no steps, no write.
    preview = resource(c, delegated(a))
    plan = stub.ResolveProvisionPlan(api.ResolveProvisionPlanRequest(policy=preview, direction=PROVISION))
    check(not plan.complete and len(plan.steps) == 0, f"a preview that closes a cycle: incomplete, no steps: {plan}")
    reasons = [(v.reason, v.severity) for v in plan.violations]
    check(("DELEGATION_CYCLE", api.SEVERITY_ERROR) in reasons, f"DELEGATION_CYCLE error: {reasons}")
    stored = get(c)
    check(stored.revision == 1 and stored.provision_policy == device, f"the preview wrote nothing: {stored}")
    bindings = stub.ListProxyBindings(api.ListProxyBindingsRequest(destination=c))
    check(len(bindings.bindings) == 0, f"the preview created no binding: {bindings.bindings}")

    def dependents(entitlement, transitive: bool):
        found, token = [], ""
        for _ in range(10):
            page = stub.ListDependents(
                api.ListDependentsRequest(entitlement=entitlement, transitive=transitive, page_size=1, page_token=token)
            )
            found.extend((key(d.entitlement), [key(e) for e in d.chain]) for d in page.dependents)
            token = page.next_page_token
            if not token:
                return found
        raise SystemExit(f"FAIL: ListDependents of {key(entitlement)} does not end: {found}")

    found = dependents(c, transitive=True)
    want = [(key(a), [key(a), key(b), key(c)]), (key(b), [key(b), key(c)])]
    check(found == want, f"transitive dependents of C, ordered by id: {found}, want {want}")
    found = dependents(c, transitive=False)
    check(found == [(key(b), [key(b), key(c)])], f"direct dependents of C: only B: {found}")
    answer = stub.ValidateProvisionPolicy(api.ValidateProvisionPolicyRequest(policy=resource(c, device)))
    check(answer.valid and answer.dependent_count == 2, f"Validate of C: valid, dependent_count 2: {answer}")
    answer = stub.ValidateProvisionPolicy(api.ValidateProvisionPolicyRequest(policy=resource(a, hook)))
    check(answer.valid and answer.dependent_count == 0, f"Validate of A: nobody depends on A: {answer}")
    dry = stub.SetProvisionPolicy(api.SetProvisionPolicyRequest(policy=resource(c, device), validate_only=True))
    check(dry.dependent_count == 2 and dry.change_cursor == "", f"a validate_only Set of C: dependent_count 2: {dry}")

    # (3) An old client (stubs from before the three arms) reads the action policy and writes it
    # back unchanged; the new client then still finds the action arms with all their fields.
    before = get(ref(ARMS_APP, ACTION_ID))
    old = subprocess.run(
        [sys.executable, __file__, "--old-client", address, str(old_stubs(repo)), str(before.revision)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    check(old.returncode == 0, f"the old client ({old.returncode}):\n{old.stdout}\n{old.stderr}")
    written = json.loads(old.stdout.strip().splitlines()[-1])
    after = get(ref(ARMS_APP, ACTION_ID))
    check(after.revision == before.revision + 1 == written["revision"], f"the old client's Set is revision + 1: {after.revision}")
    check(after.etag == written["etag"], "the new client sees the old client's write")
    check(after.provision_policy == before.provision_policy, f"provision action kept: {after.provision_policy}")
    check(after.deprovision_policy == before.deprovision_policy, f"deprovision action kept: {after.deprovision_policy}")
    for name, want in (("provision_policy", grant), ("deprovision_policy", revoke)):
        policy = getattr(after, name)
        check(policy.WhichOneof("typ") == "action" and policy.action == want, f"{name} after the old write: {policy}")
    history = stub.ListProvisionPolicyRevisions(
        api.ListProvisionPolicyRevisionsRequest(entitlement=ref(ARMS_APP, ACTION_ID))
    )
    check([r.revision for r in history.revisions] == [2, 1], f"history: {[r.revision for r in history.revisions]}")
    check(history.revisions[0].policy.provision_policy.action == grant, "the old client's revision holds the action")

    channel.close()
    print("python plans: all checks passed")


if __name__ == "__main__":
    if sys.argv[1] == "--old-client":
        old_client(sys.argv[2], pathlib.Path(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
