"""Black-box test of TLS, mTLS and token roles with Python grpcio: ssl_channel_credentials with a
client certificate, `authorization: Bearer` metadata, every method against every role.

Usage: python_security_client.py HOST:PORT CA_PEM CLIENT_CERT CLIENT_KEY ROLES_JSON
ROLES_JSON: {"methods": {"Method": "reader"|"writer"|...}, "tokens": {"reader": "...", ...}}
"""

import json
import sys

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

SERVICE = "provision.v1.ProvisionPolicyService"
RANK = {"reader": 0, "writer": 1, "admin": 2}


def reason(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None, f"no status details: {error}"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            assert info.domain == "provisiond", info
            return info.reason
    raise AssertionError(f"no ErrorInfo in {status}")


def call(channel, method: str, token):
    """Calls `method` with an empty message (valid for every request type); returns the code."""
    metadata = [("authorization", f"Bearer {token}")] if token else []
    path = f"/{SERVICE}/{method}"
    identity = lambda data: data  # noqa: E731
    try:
        if method == "WatchProvisionPolicies":
            stream = channel.unary_stream(path, request_serializer=identity, response_deserializer=identity)
            responses = stream(b"", metadata=metadata, timeout=1)
            # The stream opens (no message comes while nothing is written); its first read
            # either fails with the refusal or times out, which means it was let in.
            try:
                next(iter(responses))
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    return grpc.StatusCode.OK, None
                raise
            return grpc.StatusCode.OK, None
        unary = channel.unary_unary(path, request_serializer=identity, response_deserializer=identity)
        unary(b"", metadata=metadata, timeout=10)
        return grpc.StatusCode.OK, None
    except grpc.RpcError as error:
        return error.code(), error


def main() -> None:
    address, ca, cert, key, roles = sys.argv[1:6]
    roles = json.loads(roles)
    host, port = address.rsplit(":", 1)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=open(ca, "rb").read(),
        private_key=open(key, "rb").read(),
        certificate_chain=open(cert, "rb").read(),
    )
    channel = grpc.secure_channel(f"localhost:{port}", credentials)
    checked = 0
    for method, needed in roles["methods"].items():
        for role, token in roles["tokens"].items():
            code, error = call(channel, method, token)
            if RANK[role] >= RANK[needed]:
                assert code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), (
                    f"{role} refused {method}: {error}"
                )
            else:
                assert code == grpc.StatusCode.PERMISSION_DENIED, f"{role} {method}: {code} {error}"
                assert reason(error) == "PERMISSION_DENIED"
                assert token not in error.details(), error.details()
            checked += 1
        code, error = call(channel, method, "an-unknown-token-of-some-length")
        assert code == grpc.StatusCode.UNAUTHENTICATED, f"{method}: {code}"
        assert reason(error) == "UNAUTHENTICATED"
        assert "an-unknown-token" not in error.details()
        checked += 1

    # Without a client certificate the handshake fails: nothing is served.
    bare = grpc.secure_channel(
        f"localhost:{port}", grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read())
    )
    code, _ = call(bare, "GetProvisionPolicy", roles["tokens"]["admin"])
    assert code == grpc.StatusCode.UNAVAILABLE, code
    print(f"python security client: {checked} role checks passed")


if __name__ == "__main__":
    main()
