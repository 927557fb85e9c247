//! What a verified client certificate says of its holder.

use rustls_pki_types::CertificateDer;

/// The identities in a client certificate that the listener verified against its client CA:
/// the certificate's subject alternative names of type URI and DNS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// URI SANs, such as `spiffe://acme.example/team/billing`.
    pub uris: Vec<String>,
    /// DNS SANs, such as `billing.acme.example`.
    pub dns_names: Vec<String>,
}

impl PeerIdentity {
    /// The identities of the end-entity certificate `der`; `None` when it does not parse
    /// (a verified certificate always does).
    pub fn from_der(der: &CertificateDer<'_>) -> Option<PeerIdentity> {
        let cert = webpki::EndEntityCert::try_from(der).ok()?;
        Some(PeerIdentity {
            uris: cert.valid_uri_names().map(str::to_string).collect(),
            dns_names: cert.valid_dns_names().map(str::to_string).collect(),
        })
    }

    /// Every identity, URIs first, as a refusal names them (`uri:…`, `dns:…`).
    pub fn describe(&self) -> String {
        let all: Vec<String> = self
            .uris
            .iter()
            .map(|u| format!("uri:{u}"))
            .chain(self.dns_names.iter().map(|d| format!("dns:{d}")))
            .collect();
        if all.is_empty() {
            "no URI or DNS name".into()
        } else {
            all.join(", ")
        }
    }
}
