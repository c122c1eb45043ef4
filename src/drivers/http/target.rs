//! Where requests go and how a connection to it is made: a base URL parsed into scheme, host,
//! port and path prefix (`Target`), and `Connector`, which opens one connection — TCP, TLS
//! (rustls) when the scheme is `https`, then hyper's HTTP/1.1 or HTTP/2 handshake — and hands
//! back hyper's `SendRequest`. There is no pool layer: a closed-model user keeps its own
//! connection (keep-alive) and opens a new one only when the server closed it.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::outcome::{ErrorKind, Failure};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// The `Host` header value (`host:port` unless the port is the scheme's default).
    pub authority: String,
    /// A path the base URL carries (`http://h/api` → `/api`), without a trailing `/`.
    pub prefix: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(format!("`{url}` is not an http:// or https:// URL"));
        };
        let (hostport, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if hostport.is_empty() {
            return Err(format!("`{url}` has no host"));
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| format!("`{url}`: unclosed `[` in the host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse::<u16>().map_err(|_| format!("`{url}`: `{p}` is not a port"))?,
                None if after.is_empty() => default_port,
                None => return Err(format!("`{url}`: unexpected `{after}` after the host")),
            };
            (h.to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse::<u16>().map_err(|_| format!("`{url}`: `{p}` is not a port"))?),
                None => (hostport.to_string(), default_port),
            }
        };
        let authority =
            if port == default_port { hostport_only(&host) } else { format!("{}:{port}", hostport_only(&host)) };
        Ok(Target { tls, host, port, authority, prefix: prefix.to_string() })
    }
}

fn hostport_only(host: &str) -> String {
    if host.contains(':') { format!("[{host}]") } else { host.to_string() }
}

pub type Response = hyper::Response<hyper::body::Incoming>;

/// Why a request failed, with the request itself when it never left.
pub struct Unsent {
    pub error: hyper::Error,
    pub request: Option<hyper::Request<Full<Bytes>>>,
}

/// A request sender on one open connection (an HTTP/2 one can be shared: see `share`).
pub enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    /// Another handle on the same HTTP/2 connection (requests multiplex); `None` for HTTP/1.1,
    /// where a connection carries one request at a time.
    pub fn share(&self) -> Option<Sender> {
        match self {
            Sender::H1(_) => None,
            Sender::H2(s) => Some(Sender::H2(s.clone())),
        }
    }

    /// False once the connection is closed or broken (a new one is needed).
    pub fn is_open(&self) -> bool {
        match self {
            Sender::H1(s) => !s.is_closed(),
            Sender::H2(s) => !s.is_closed(),
        }
    }

    /// Send a request. On failure, the request comes back too when it was never sent (the
    /// server had closed the connection first), so the caller may send it on a new one.
    pub async fn send(&mut self, req: hyper::Request<Full<Bytes>>) -> Result<Response, Unsent> {
        let ready = match self {
            Sender::H1(s) => s.ready().await,
            Sender::H2(s) => s.ready().await,
        };
        if let Err(e) = ready {
            return Err(Unsent { error: e, request: Some(req) });
        }
        let sent = match self {
            Sender::H1(s) => s.try_send_request(req).await,
            Sender::H2(s) => s.try_send_request(req).await,
        };
        sent.map_err(|mut e| Unsent { request: e.take_message(), error: e.into_error() })
    }
}

/// Opens connections to one target.
pub struct Connector {
    pub target: Target,
    addrs: Vec<SocketAddr>,
    tls: Option<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>)>,
    pub http2: bool,
    /// The `Host` header, made once.
    pub host_header: hyper::header::HeaderValue,
    /// Its position among the stage's connectors (what a step's fixed URIs are indexed by).
    pub index: usize,
}

impl Connector {
    pub async fn new(target: Target, http2: bool, insecure: bool) -> Result<Connector, String> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", target.host))?
            .collect();
        if addrs.is_empty() {
            return Err(format!("{} resolves to no address", target.host));
        }
        let tls = if target.tls {
            let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(|e| format!("`{}` is not a TLS server name: {e}", target.host))?;
            Some((tokio_rustls::TlsConnector::from(tls_config(http2, insecure)?), name))
        } else {
            None
        };
        let host_header = hyper::header::HeaderValue::from_str(&target.authority)
            .map_err(|_| format!("`{}` is not a valid Host header", target.authority))?;
        Ok(Connector { target, addrs, tls, http2, host_header, index: 0 })
    }

    /// The request URI for `path` on this target: its prefix, and for HTTP/2 the scheme and
    /// authority (HTTP/2 carries them as :scheme and :authority).
    pub fn uri_for(&self, path: &str) -> String {
        if self.http2 {
            let scheme = if self.target.tls { "https" } else { "http" };
            format!("{scheme}://{}{}{path}", self.target.authority, self.target.prefix)
        } else {
            format!("{}{path}", self.target.prefix)
        }
    }

    /// Open one connection and hand its driving future to the runtime.
    pub async fn connect(&self) -> Result<Sender, Failure> {
        let tcp = connect_any(&self.addrs).await?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => self.handshake(TokioIo::new(tcp)).await,
            Some((conn, name)) => {
                let tls = conn
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| Failure::new(ErrorKind::Connect, format!("TLS handshake failed: {e}")))?;
                self.handshake(TokioIo::new(tls)).await
            }
        }
    }

    async fn handshake<I>(&self, io: TokioIo<I>) -> Result<Sender, Failure>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let fail = |e: hyper::Error| Failure::new(ErrorKind::Connect, format!("HTTP handshake failed: {e}"));
        if self.http2 {
            let (s, conn) = http2::handshake(TokioExecutor::new(), io).await.map_err(fail)?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(Sender::H2(s))
        } else {
            let (s, conn) = http1::Builder::new().handshake(io).await.map_err(fail)?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(Sender::H1(s))
        }
    }

    /// True once a TCP connection to the target succeeds within `limit` (the readiness wait).
    pub async fn reachable(&self, limit: std::time::Duration) -> bool {
        matches!(tokio::time::timeout(limit, connect_any(&self.addrs)).await, Ok(Ok(_)))
    }
}

async fn connect_any(addrs: &[SocketAddr]) -> Result<TcpStream, Failure> {
    let mut last = None;
    for a in addrs {
        match TcpStream::connect(a).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some((a, e)),
        }
    }
    let (a, e) = last.expect("at least one address");
    Err(Failure::new(ErrorKind::Connect, format!("cannot connect to {a}: {e}")))
}

fn tls_config(http2: bool, insecure: bool) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let mut cfg = if insecure {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCert(provider))).with_no_client_auth()
    } else {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    cfg.alpn_protocols = if http2 { vec![b"h2".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    Ok(Arc::new(cfg))
}

/// `insecure = true`: accepts any certificate (signatures are still checked for form).
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_host_port_and_prefix() {
        let t = Target::parse("http://127.0.0.1:8089").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.authority.as_str(), t.prefix.as_str()),
            (false, "127.0.0.1", 8089, "127.0.0.1:8089", "")
        );
        let t = Target::parse("https://example.test/api/").unwrap();
        assert_eq!((t.tls, t.port, t.authority.as_str(), t.prefix.as_str()), (true, 443, "example.test", "/api"));
        let t = Target::parse("http://[::1]:9000/x").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.authority.as_str()), ("::1", 9000, "[::1]:9000"));
        assert!(Target::parse("ftp://x").unwrap_err().contains("not an http"));
        assert!(Target::parse("http://h:port").unwrap_err().contains("not a port"));
        assert!(Target::parse("http://").unwrap_err().contains("no host"));
    }
}
