#!/usr/bin/env python3
"""Verifies a DSSE envelope holding an in-toto statement with independent implementations:
securesystemslib's DSSE (PAE, signature check against the given public key) and the in-toto
attestation framework's Statement v1 (parsed strictly from JSON with protobuf, then validated).

    verify-dsse.py ENVELOPE.json PUBLIC_KEY.pem SHA256_HEX PREDICATE_TYPE

Exits 0 and prints a JSON summary if the envelope is signed by the key, the statement is valid,
one subject has exactly the sha256 given and the predicate type matches; otherwise exits 1 and
says why. The key id is the SHA-256 of the key's SubjectPublicKeyInfo (DER), computed here.
"""

import hashlib
import json
import sys

from cryptography.hazmat.primitives import serialization
from google.protobuf import json_format
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey


def main() -> int:
    envelope_path, key_path, digest, predicate_type = sys.argv[1:5]
    with open(key_path, "rb") as f:
        pem = f.read()
    public = serialization.load_pem_public_key(pem)
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key = SSlibKey(
        keyid=hashlib.sha256(der).hexdigest(),
        keytype="ecdsa",
        scheme="ecdsa-sha2-nistp256",
        keyval={"public": pem.decode()},
    )
    with open(envelope_path, "rb") as f:
        envelope = Envelope.from_dict(json.load(f))
    if envelope.payload_type != "application/vnd.in-toto+json":
        print(f"payload type {envelope.payload_type!r} is not in-toto", file=sys.stderr)
        return 1
    try:
        accepted = envelope.verify([key], 1)
    except Exception as e:  # securesystemslib raises VerificationError
        print(f"signature refused: {e}", file=sys.stderr)
        return 1
    proto = json_format.Parse(envelope.payload, statement_pb2.Statement())
    statement = Statement.copy_from_pb(proto)
    try:
        statement.validate()
    except ValueError as e:
        print(f"invalid statement: {e}", file=sys.stderr)
        return 1
    if statement.pb.predicate_type != predicate_type:
        print(f"predicate type {statement.pb.predicate_type!r}", file=sys.stderr)
        return 1
    subjects = [dict(s.digest).get("sha256") for s in statement.pb.subject]
    if digest not in subjects:
        print(f"no subject has sha256 {digest}: {subjects}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "verified_by": sorted(accepted),
                "subject": [s.name for s in statement.pb.subject],
                "predicate_type": statement.pb.predicate_type,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
