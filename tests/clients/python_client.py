"""Black-box test with Python grpcio, using stubs generated from the repo's protos.

Usage: python_client.py HOST:PORT REPO_ROOT
"""

import pathlib
import sys
import tempfile

import grpc
from grpc_tools import protoc


def generate_stubs(repo: pathlib.Path, out: pathlib.Path) -> None:
    import grpc_tools

    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(repo / "proto")) for p in (repo / "proto").rglob("*.proto"))
    code = protoc.main(
        ["protoc", f"-I{repo / 'proto'}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}", *protos]
    )
    if code != 0:
        raise SystemExit(f"protoc failed with {code}")


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"FAIL: {what}")


def main() -> None:
    address, repo = sys.argv[1], pathlib.Path(sys.argv[2])
    out = pathlib.Path(tempfile.mkdtemp())
    generate_stubs(repo, out)
    sys.path.insert(0, str(out))
    from google.rpc import error_details_pb2
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_status import rpc_status
    from provision.v1 import provision_policy_pb2 as model
    from provision.v1 import provision_policy_service_pb2 as api
    from provision.v1 import provision_policy_service_pb2_grpc as api_grpc

    channel = grpc.insecure_channel(address)
    stub = api_grpc.ProvisionPolicyServiceStub(channel)

    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    check(health.status == health_pb2.HealthCheckResponse.SERVING, "health is SERVING")

    entitlement = api.EntitlementRef(app_id="python-app", entitlement_id="engineers")
    policy = model.ProvisionPolicy(
        multi_step=model.MultiStep(
            provision_steps=[
                model.ProvisionPolicy(webhook=model.WebhookProvision(webhook_id="hook-1")),
                model.ProvisionPolicy(
                    manual=model.ManualProvision(
                        instructions="Grant in the console.",
                        assignee=model.ProvisionerAssignment(
                            group=model.GroupProvisioner(app_id="okta", app_group_id="it-admins")
                        ),
                    )
                ),
            ]
        )
    )
    account = model.ConnectorProvision.AccountProvision(connector_id="okta")
    account.config.update({"email": "subject.email", "login": 'subject.email.split("@")[0]'})
    account.save_to_vault.vault_ids.append("vault-1")
    deprovision = model.ProvisionPolicy(connector=model.ConnectorProvision(account=account))
    resource = api.EntitlementProvisionPolicy(
        entitlement=entitlement, provision_policy=policy, deprovision_policy=deprovision
    )

    first = stub.SetProvisionPolicy(api.SetProvisionPolicyRequest(policy=resource))
    check(first.policy.revision == 1, f"first revision is 1, got {first.policy.revision}")
    check(first.policy.etag == '"1"', f"etag of revision 1, got {first.policy.etag}")
    check(first.policy.HasField("create_time"), "create_time set")

    second = stub.SetProvisionPolicy(api.SetProvisionPolicyRequest(policy=resource, etag=first.policy.etag))
    check(second.policy.revision == 2, "second write with the current etag")

    got = stub.GetProvisionPolicy(api.GetProvisionPolicyRequest(entitlement=entitlement))
    check(got.policy == second.policy, "get returns what set stored")
    check(got.policy.deprovision_policy.connector.account.config["login"] == 'subject.email.split("@")[0]', "struct kept")
    old = stub.GetProvisionPolicy(api.GetProvisionPolicyRequest(entitlement=entitlement, revision=1))
    check(old.policy.revision == 1 and old.policy.etag == '"1"', "past revision readable")

    invalid = api.EntitlementProvisionPolicy(
        entitlement=entitlement,
        provision_policy=model.ProvisionPolicy(
            manual=model.ManualProvision(instructions="bell\a", assignee=model.ProvisionerAssignment())
        ),
    )
    answer = stub.ValidateProvisionPolicy(api.ValidateProvisionPolicyRequest(policy=invalid))
    check(not answer.valid, "validate says invalid")
    fields = {(v.field, v.reason) for v in answer.violations}
    check(("policy.provision_policy.manual.instructions", "INVALID_TEXT") in fields, f"INVALID_TEXT in {fields}")
    check(("policy.provision_policy.manual.assignee", "REQUIRED") in fields, f"assignee REQUIRED in {fields}")

    try:
        stub.SetProvisionPolicy(api.SetProvisionPolicyRequest(policy=invalid))
        raise SystemExit("FAIL: set of an invalid policy succeeded")
    except grpc.RpcError as error:
        check(error.code() == grpc.StatusCode.INVALID_ARGUMENT, f"INVALID_ARGUMENT, got {error.code()}")
        status = rpc_status.from_call(error)
        check(status is not None, "grpc-status-details-bin present")
        bad_request, info = error_details_pb2.BadRequest(), error_details_pb2.ErrorInfo()
        kinds = set()
        for detail in status.details:
            if detail.Is(bad_request.DESCRIPTOR):
                detail.Unpack(bad_request)
                kinds.add("BadRequest")
            elif detail.Is(info.DESCRIPTOR):
                detail.Unpack(info)
                kinds.add("ErrorInfo")
        check(kinds == {"BadRequest", "ErrorInfo"}, f"details {kinds}")
        check(info.reason == "INVALID_PROVISION_POLICY" and info.domain == "provisiond", f"ErrorInfo {info}")
        violations = {(v.field, v.reason) for v in bad_request.field_violations}
        check(violations == fields, f"Set lists what Validate found: {violations} vs {fields}")

    # Many violations: the details must still fit grpcio's default 8 KiB metadata limit.
    flood = api.EntitlementProvisionPolicy(
        entitlement=entitlement,
        provision_policy=model.ProvisionPolicy(
            manual=model.ManualProvision(user_ids=[f"bad user {i}" for i in range(3000)])
        ),
    )
    try:
        stub.SetProvisionPolicy(api.SetProvisionPolicyRequest(policy=flood))
        raise SystemExit("FAIL: set of 3000 bad ids succeeded")
    except grpc.RpcError as error:
        check(error.code() == grpc.StatusCode.INVALID_ARGUMENT, f"flood INVALID_ARGUMENT, got {error.code()} {error.details()}")
        status = rpc_status.from_call(error)
        check(status is not None and len(status.details) == 2, "flood details readable")

    try:
        stub.SetProvisionPolicy(api.SetProvisionPolicyRequest(policy=resource, etag=first.policy.etag))
        raise SystemExit("FAIL: stale etag accepted")
    except grpc.RpcError as error:
        check(error.code() == grpc.StatusCode.ABORTED, f"stale etag ABORTED, got {error.code()}")

    try:
        stub.GetProvisionPolicy(api.GetProvisionPolicyRequest(entitlement=entitlement, revision=99))
        raise SystemExit("FAIL: revision 99 found")
    except grpc.RpcError as error:
        check(error.code() == grpc.StatusCode.NOT_FOUND, f"NOT_FOUND, got {error.code()}")

    print("python: all checks passed")


if __name__ == "__main__":
    main()
