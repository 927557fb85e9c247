//! Cosign-compatible, key-based signatures over component digests.
//!
//! - [`KeyPair::generate`] and [`KeyPair::to_encrypted_pem`] write cosign's encrypted private key
//!   format (`ENCRYPTED SIGSTORE PRIVATE KEY`: scrypt N=32768 r=8 p=1, NaCl secretbox over the
//!   PKCS#8 key), and [`KeyPair::public_pem`] the PEM public key (`cosign.pub`).
//! - [`sign`] writes cosign's simple-signing payload for a manifest digest, signs it with ECDSA
//!   P-256/SHA-256, and stores it the way cosign does: a layer
//!   `application/vnd.dev.cosign.simplesigning.v1+json` with the
//!   `dev.cosignproject.cosign/signature` annotation in the manifest tagged `sha256-<hex>.sig`,
//!   appended to what other signers already put there.
//! - [`verify`] resolves the reference to a digest once, reads the signature manifest and every
//!   payload by digest, and accepts only a payload of type `cosign container image signature`
//!   for exactly that digest, signed by a trusted key. Every constraint must hold; an empty key
//!   set is an error, never "trust everything".
//! - [`attest`] attaches an in-toto statement about the artifact in a signed DSSE envelope, the
//!   way `cosign attest` does (`sha256-<hex>.att`); [`verify_attestations`] checks them.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use greentic_registry::{ArtifactRef, Target};
//! use greentic_signing::{KeyPair, TrustedKeys, sign, verify};
//!
//! let key = KeyPair::generate();
//! let reference: ArtifactRef = "127.0.0.1:5000/providers/echo:1.0.0".parse()?;
//! let target = Target::open(&reference, &Default::default())?;
//! sign(&target, &reference, &key).await?;
//! let trusted = TrustedKeys::from_pems(&[key.public_pem()])?;
//! let verified = verify(&target, &reference, &trusted, None).await?;
//! println!("verified {}", verified.digest);
//! # Ok(()) }
//! ```

mod attest;
mod keys;
mod payload;
mod sigstore_oci;

pub use attest::{
    Attestations, DSSE_MEDIA_TYPE, Envelope, EnvelopeSignature, IN_TOTO_PAYLOAD_TYPE,
    MAX_ATTESTATION_LAYERS, MAX_ENVELOPE_BYTES, MAX_ENVELOPE_SIGNATURES, PREDICATE_ANNOTATION,
    STATEMENT_TYPE, Statement, Subject, VerifiedAttestation, attest, attestation_tag, pae,
    verify_attestations,
};
pub use keys::{KeyError, KeyPair, TrustedKeys};
pub use payload::{SIGNATURE_TYPE, SimpleSigning};
pub use sigstore_oci::{
    MAX_SIGNATURE_LAYERS, MAX_SIGNATURE_PAYLOAD_BYTES, SIGNATURE_ANNOTATION,
    SIMPLESIGNING_MEDIA_TYPE, SignError, SignatureLayer, Verified, sign, signature_layers,
    signature_tag, verify,
};
