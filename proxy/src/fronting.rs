//! Domain fronting: a tunnel whose TLS names an allowed host while the `Host` header inside
//! names a declared API, served by the same front end (a CDN, a shared load balancer).
//!
//! Input: an admitted tunnel (CONNECT host, port, the vetted addresses it will dial), the
//! policy's APIs, the proxy's resolver, and a way to dial the destination. Output: `Some(why)`
//! when the tunnel could reach an API's server, so the proxy must terminate it and check the
//! `Host` of every request (a *checked* tunnel: `docs/proxy.md`); `None` when it cannot, so
//! it may be relayed as is. It can when, for an API on the same port:
//! - one of the tunnel's addresses is one of the API host's addresses (resolved the same
//!   way, pins included), or
//! - the destination's certificate, read by a probe handshake after the agent's SNI was
//!   checked, also covers the API host (a front end that holds the API's certificate can
//!   route to it), or that certificate cannot be read at all (fail closed).
//!
//! Invariants: API addresses are cached for [`API_TTL`], verdicts per (host, port, address)
//! for [`VERDICT_TTL`], so a tunnel pays the probe at most once per ten minutes; the probe
//! sends nothing but a ClientHello (no request, no credential) and its session is dropped;
//! a policy without APIs on the tunnel's port costs nothing.

use std::collections::HashMap;
use std::net::{IpAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

use crate::addr::Host;
use crate::gate::Gate;
use crate::resolve::Resolver;

/// How long an API host's addresses are reused.
pub const API_TTL: Duration = Duration::from_secs(60);
/// How long a verdict about one destination is reused.
pub const VERDICT_TTL: Duration = Duration::from_secs(600);
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

type VerdictKey = (String, u16, IpAddr);

/// An admitted destination: the host as the agent named it, the port, the vetted addresses.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub host: &'a Host,
    pub port: u16,
    pub addrs: &'a [IpAddr],
}

#[derive(Default)]
pub struct Fronting {
    api_addrs: Mutex<HashMap<String, (Instant, Vec<IpAddr>)>>,
    verdicts: Mutex<HashMap<VerdictKey, (Instant, Option<String>)>>,
}

impl Fronting {
    fn api_addresses(&self, resolver: &Resolver, host: &str, port: u16) -> Vec<IpAddr> {
        if let Ok(m) = self.api_addrs.lock()
            && let Some((t, a)) = m.get(host)
            && t.elapsed() < API_TTL
        {
            return a.clone();
        }
        let found = resolver.lookup(&Host::Name(host.to_string()), port).unwrap_or_default();
        if let Ok(mut m) = self.api_addrs.lock() {
            m.insert(host.to_string(), (Instant::now(), found.clone()));
        }
        found
    }

    /// Why a tunnel to `to` could reach a declared API (see the module doc). `tls`: the
    /// agent's first bytes are a TLS ClientHello (only then is a certificate probed). `dial`
    /// connects to the vetted destination.
    pub fn assess(&self, gate: &Gate, resolver: &Resolver, to: Target<'_>, tls: bool, dial: &dyn Fn() -> Result<TcpStream, String>) -> Option<String> {
        let Target { host, port, addrs } = to;
        let apis: Vec<(&str, &str)> = gate.apis().iter().filter(|a| a.port == port && Host::Name(a.host.clone()) != *host).map(|a| (a.name.as_str(), a.host.as_str())).collect();
        if apis.is_empty() {
            return None;
        }
        for (name, api_host) in &apis {
            if let Some(ip) = self.api_addresses(resolver, api_host, port).iter().find(|ip| addrs.contains(ip)) {
                return Some(format!("{host} shares the address {ip} with api '{name}' ({api_host})"));
            }
        }
        if !tls {
            return None;
        }
        let key = (host.text(), port, *addrs.first()?);
        if let Ok(m) = self.verdicts.lock()
            && let Some((t, v)) = m.get(&key)
            && t.elapsed() < VERDICT_TTL
        {
            return v.clone();
        }
        let verdict = match probe_certificate(host, dial) {
            Err(e) => Some(format!("the certificate of {host} could not be read ({e}), so it may serve an API")),
            Ok(cert) => apis.iter().find(|(_, h)| covers(&cert, h)).map(|(name, api_host)| format!("the certificate of {host} also names api '{name}' ({api_host})")),
        };
        if let Ok(mut m) = self.verdicts.lock() {
            m.insert(key, (Instant::now(), verdict.clone()));
        }
        verdict
    }
}

/// Whether certificate `der` is valid for DNS name `name` (wildcards as TLS clients match).
pub fn covers(der: &CertificateDer<'_>, name: &str) -> bool {
    let (Ok(cert), Ok(n)) = (webpki::EndEntityCert::try_from(der), ServerName::try_from(name)) else { return false };
    cert.verify_is_valid_for_subject_name(&n).is_ok()
}

/// Records the server's certificate and accepts it: the probe only reads which names the
/// certificate carries; its session never carries data.
#[derive(Debug)]
struct Capture {
    cert: Mutex<Option<CertificateDer<'static>>>,
    schemes: Vec<SignatureScheme>,
}

impl ServerCertVerifier for Capture {
    fn verify_server_cert(&self, end_entity: &CertificateDer<'_>, _: &[CertificateDer<'_>], _: &ServerName<'_>, _: &[u8], _: UnixTime) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut c) = self.cert.lock() {
            *c = Some(end_entity.clone().into_owned());
        }
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, _: &[u8], _: &CertificateDer<'_>, _: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(&self, _: &[u8], _: &CertificateDer<'_>, _: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

/// The end-entity certificate `host`'s server presents for its own name.
fn probe_certificate(host: &Host, dial: &dyn Fn() -> Result<TcpStream, String>) -> Result<CertificateDer<'static>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let capture = Arc::new(Capture {
        cert: Mutex::new(None),
        schemes: provider.signature_verification_algorithms.supported_schemes(),
    });
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(capture.clone())
        .with_no_client_auth();
    let name = match host {
        Host::Name(n) => ServerName::try_from(n.clone()).map_err(|e| e.to_string())?,
        Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
    };
    let mut conn = ClientConnection::new(Arc::new(cfg), name).map_err(|e| e.to_string())?;
    let mut sock = dial()?;
    let _ = sock.set_read_timeout(Some(PROBE_TIMEOUT));
    let captured = || capture.cert.lock().ok().and_then(|c| c.clone());
    while conn.is_handshaking() && captured().is_none() {
        if let Err(e) = conn.complete_io(&mut sock) {
            return captured().ok_or_else(|| e.to_string());
        }
    }
    captured().ok_or_else(|| "the server sent no certificate".into())
}
