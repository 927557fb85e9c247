#!/usr/bin/env python3
"""A greentic messaging provider in Python, run beside the host as a gRPC sidecar.

It speaks the wire contract `proto/greentic.proto` (generated from the WIT): the host calls
`Provider.MessagingSend`; during the call the provider reads the tenant's config, secret and
state back from the host's `Host` service with the call's credential. Nothing about tenants is
kept here: every call says whose it is, and the host hands out only that tenant's values.

    provider.py --proto ../../proto/greentic.proto --listen 127.0.0.1:50051
    provider.py ... --tls-cert server.crt --tls-key server.key --client-ca ca.crt   # mTLS

The relay API it delivers to has no idempotency key, so a keyed delivery is remembered in the
host's state (scoped to the tenant and this provider) and answered from there when repeated.
"""
import argparse
import concurrent.futures
import http.client
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))


def load_stubs(proto):
    """Generates the Python stubs of the wire contract and imports them."""
    out = tempfile.mkdtemp(prefix="greentic-proto-")
    include = os.path.dirname(os.path.abspath(proto))
    wkt = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    status = protoc.main(["protoc", f"-I{include}", f"-I{wkt}", f"--python_out={out}",
                          f"--grpc_python_out={out}", os.path.abspath(proto)])
    if status != 0:
        sys.exit(f"protoc failed on {proto}")
    sys.path.insert(0, out)
    import greentic_pb2
    import greentic_pb2_grpc
    return greentic_pb2, greentic_pb2_grpc


def retry_after_ms(value):
    """`Retry-After` in milliseconds, if it is a number of seconds."""
    try:
        return max(0, int(value)) * 1000 if value is not None else None
    except ValueError:
        return None


class Relay:
    def __init__(self, pb, pb_grpc, manifest):
        self.pb = pb
        self.pb_grpc = pb_grpc
        self.manifest = manifest
        self.channels = {}

    def host(self, context):
        """The host's callback stub and the call's credential, from the call's metadata."""
        md = dict(context.invocation_metadata())
        url = md.get("x-greentic-callback", "")
        target = url.replace("http://", "")
        if target not in self.channels:
            self.channels[target] = grpc.insecure_channel(target)
        stub = self.pb_grpc.HostStub(self.channels[target])
        credential = (("x-greentic-call", md.get("x-greentic-call", "")),)
        return stub, credential

    def error(self, **case):
        return self.pb.MessagingSendResponse(err=self.pb.TypesProviderError(**case))

    def Describe(self, request, context):
        return self.pb.DescribeResponse(manifest_json=self.manifest)

    def MessagingSend(self, request, context):
        pb = self.pb
        host, credential = self.host(context)
        left = context.time_remaining()
        config = host.ConfigDocument(pb.ConfigDocumentRequest(), metadata=credential, timeout=left)
        config = json.loads(config.value)
        token = host.SecretsGet(pb.SecretsGetRequest(name="RELAY_TOKEN"), metadata=credential, timeout=left)
        if token.WhichOneof("result") != "ok":
            return self.error(unauthorized="RELAY_TOKEN is not bound for this tenant")
        key = request.msg.idempotency_key if request.msg.HasField("idempotency_key") else (
            request.ctx.idempotency_key if request.ctx.HasField("idempotency_key") else None)
        if key:
            seen = host.StateGet(pb.StateGetRequest(key=f"sent/{key}"), metadata=credential, timeout=left)
            if seen.WhichOneof("result") == "ok" and seen.ok.HasField("value"):
                done = json.loads(seen.ok.value.value)
                return pb.MessagingSendResponse(ok=pb.MessagingSendResult(**done))
        # The delivery's own span, a child of the host's span for the call.
        span = host.TelemetrySpanNew(pb.TelemetrySpanNewRequest(name="relay.deliver"),
                                     metadata=credential, timeout=context.time_remaining()).value
        host.TelemetrySpanSetAttribute(pb.TelemetrySpanSetAttributeRequest(
            handle=span, key="to", value=request.msg.to), metadata=credential,
            timeout=context.time_remaining())
        try:
            answer = self.deliver(pb, request, config, token, key, host, credential, context)
        except Exception as e:  # a bug here must still end the span
            answer = self.error(internal=f"relay: {e}")
        err = answer.err if answer.WhichOneof("result") == "err" else None
        status = (pb.TelemetrySpanStatus(ok=pb.Unit()) if err is None else
                  pb.TelemetrySpanStatus(error=err.WhichOneof("value") or "error"))
        host.TelemetrySpanSetStatus(pb.TelemetrySpanSetStatusRequest(handle=span, status=status),
                                    metadata=credential, timeout=context.time_remaining())
        host.TelemetrySpanEnd(pb.TelemetrySpanEndRequest(handle=span), metadata=credential,
                              timeout=context.time_remaining())
        return answer

    def deliver(self, pb, request, config, token, key, host, credential, context):
        body = json.dumps({"to": request.msg.to, "text": request.msg.text,
                           "thread": request.msg.thread or None}).encode()
        timeout = min(config.get("timeout_ms", 5000) / 1000, max(context.time_remaining() or 5, 0.05))
        req = urllib.request.Request(config["url"], data=body, method="POST", headers={
            "content-type": "application/json",
            "authorization": "Bearer " + token.ok.decode(),
        })
        try:
            with urllib.request.urlopen(req, timeout=timeout) as answer:
                reply = json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as e:
            status = e.code
            retry = retry_after_ms(e.headers.get("retry-after"))
            if status == 429:
                return self.error(rate_limited=pb.TypesRateLimit(retry_after_ms=retry or 1000))
            if status in (401, 403):
                return self.error(unauthorized=f"the relay refused the token ({status})")
            if status == 404:
                return self.error(not_found="the relay has no such recipient")
            if 400 <= status < 500:
                return self.error(invalid_input=f"the relay refused the message ({status})")
            return self.error(unavailable=pb.TypesUnavailableInfo(
                message=f"the relay answered {status}", retry_after_ms=retry))
        except (TimeoutError, urllib.error.URLError, http.client.HTTPException, OSError) as e:
            if "timed out" in str(e):
                return self.error(timeout=pb.Unit())
            return self.error(unavailable=pb.TypesUnavailableInfo(message=f"the relay is unreachable: {e}"))
        done = {"id": str(reply.get("id") or key or ""), "delivered_at_ms": int(time.time() * 1000)}
        host.TelemetryLog(pb.TelemetryLogRequest(level=pb.TELEMETRY_LEVEL_INFO, message="relayed",
                          attributes=[pb.TelemetryAttribute(key="to", value=request.msg.to)]),
                          metadata=credential, timeout=context.time_remaining())
        if key:
            host.StateSet(pb.StateSetRequest(key=f"sent/{key}", value=json.dumps(done).encode(),
                                             ttl_ms=24 * 3600 * 1000),
                          metadata=credential, timeout=context.time_remaining())
        return pb.MessagingSendResponse(ok=pb.MessagingSendResult(**done))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proto", default=os.path.join(HERE, "../../proto/greentic.proto"))
    parser.add_argument("--listen", default="127.0.0.1:50051")
    parser.add_argument("--manifest", default=os.path.join(HERE, "provider.json"))
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--client-ca", help="require client certificates issued by this CA")
    args = parser.parse_args()
    pb, pb_grpc = load_stubs(args.proto)
    with open(args.manifest) as f:
        manifest = f.read()
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=32))
    # The generated base answers UNIMPLEMENTED for the other domains' calls.
    servicer = type("RelayServicer", (Relay, pb_grpc.ProviderServicer), {})
    pb_grpc.add_ProviderServicer_to_server(servicer(pb, pb_grpc, manifest), server)
    if args.tls_cert:
        with open(args.tls_key, "rb") as k, open(args.tls_cert, "rb") as c:
            pair = (k.read(), c.read())
        ca = open(args.client_ca, "rb").read() if args.client_ca else None
        creds = grpc.ssl_server_credentials([pair], root_certificates=ca,
                                            require_client_auth=ca is not None)
        port = server.add_secure_port(args.listen, creds)
    else:
        port = server.add_insecure_port(args.listen)
    server.start()
    print(f"listening on {args.listen.rsplit(':', 1)[0]}:{port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
