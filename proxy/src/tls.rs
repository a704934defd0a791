//! TLS for the proxy: the per-sandbox certificate authority that inspect mode terminates
//! TLS with, and the verified client configuration for upstream connections.
//!
//! Input: the agent's name (for the CA's subject), extra upstream trust anchors (PEM).
//! Output: [`SandboxCa`] (its certificate in PEM for the agent's trust store; a rustls
//! server configuration per API host, minted on first use and cached) and
//! [`upstream_config`] (system roots + extra anchors, HTTP/1.1 only). Invariants: the CA's
//! private key exists only in this process's memory (never written, never sent); every
//! leaf names exactly one host; both sides offer only `http/1.1` in ALPN, so an HTTP/2
//! connection can never be negotiated past the HTTP/1.1 rule checker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
pub use rustls::ClientConfig;
use rustls::{RootCertStore, ServerConfig};

use crate::addr::Host;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn validity(p: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    // A day of slack for clocks that disagree; the CA dies with the supervisor anyway.
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(90);
}

pub struct SandboxCa {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    configs: Mutex<HashMap<String, Arc<ServerConfig>>>,
}

impl SandboxCa {
    pub fn generate(agent: &str) -> Result<SandboxCa, String> {
        let key = KeyPair::generate().map_err(|e| format!("generating the sandbox CA key: {e}"))?;
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, format!("AEGIS sandbox CA for {agent}"));
        p.distinguished_name.push(DnType::OrganizationName, "AEGIS egress proxy");
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        validity(&mut p);
        let cert = p.self_signed(&key).map_err(|e| format!("signing the sandbox CA: {e}"))?;
        Ok(SandboxCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(p, key),
            configs: Mutex::new(HashMap::new()),
        })
    }

    /// The CA certificate the agent trusts (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server configuration presenting a certificate for `host`, minted once per host.
    pub fn server_config(&self, host: &Host) -> Result<Arc<ServerConfig>, String> {
        let key_text = host.text();
        if let Ok(map) = self.configs.lock()
            && let Some(c) = map.get(&key_text)
        {
            return Ok(c.clone());
        }
        let key = KeyPair::generate().map_err(|e| format!("generating a key for {host}: {e}"))?;
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, key_text.clone());
        p.subject_alt_names = vec![match host {
            Host::Ip(ip) => SanType::IpAddress(*ip),
            Host::Name(n) => SanType::DnsName(n.clone().try_into().map_err(|e| format!("{n}: {e}"))?),
        }];
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut p);
        let cert = p.signed_by(&key, &self.issuer).map_err(|e| format!("signing a certificate for {host}: {e}"))?;
        let chain = vec![cert.der().clone(), self.cert_der.clone()];
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain, der)
            .map_err(|e| format!("server certificate for {host}: {e}"))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let cfg = Arc::new(cfg);
        if let Ok(mut map) = self.configs.lock() {
            map.insert(key_text, cfg.clone());
        }
        Ok(cfg)
    }
}

/// Certificates in PEM text (any other PEM sections are skipped); `what` names the source
/// in errors.
pub fn pem_certs(bytes: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut out = Vec::new();
    for c in CertificateDer::pem_slice_iter(bytes) {
        out.push(c.map_err(|e| format!("{what}: {e:?}"))?);
    }
    if out.is_empty() {
        return Err(format!("{what}: no certificate in this file"));
    }
    Ok(out)
}

/// The host's trust store: `SSL_CERT_FILE` of the supervisor, else Debian/Fedora/Alpine paths.
pub fn system_roots_path() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("SSL_CERT_FILE") {
        return Some(p.into());
    }
    ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.is_file())
}

/// The host's trust store as PEM text (empty when there is none); read once per launch, it
/// serves both the proxy's upstream verification and the agent's trust bundle.
pub fn system_roots_pem() -> Vec<u8> {
    system_roots_path().and_then(|p| std::fs::read(p).ok()).unwrap_or_default()
}

/// Client configuration for upstream TLS: verified against `system_pem` (see
/// [`system_roots_pem`]) plus `extra`.
pub fn upstream_config(system_pem: &[u8], extra: &[CertificateDer<'static>]) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    if let Ok(certs) = pem_certs(system_pem, "system CA bundle") {
        // Some distribution bundles carry certificates webpki rejects; skip those.
        let _ = roots.add_parsable_certificates(certs);
    }
    for c in extra {
        roots.add(c.clone()).map_err(|e| format!("upstream CA: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no trust anchors for upstream TLS (no system CA bundle and no --upstream-ca)".into());
    }
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
