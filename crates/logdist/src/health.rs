//! `logdist health`: asks a running distributor's admin API
//! (`GET /api/v1/health`) how it is, prints one line, and says it in the
//! exit status: 0 healthy (or degraded: some analyzers down, messages still
//! flow), 1 anything else (unhealthy, unreachable, not an admin API, a TLS
//! or HTTP error). For container health checks and scripts: no curl needed.
//!
//! Where to ask: `--admin` (or `LOGDIST_ADMIN_LISTEN`), else the config's
//! `[admin] listen` (`--config`, `LOGDIST_CONFIG`), else the default
//! `127.0.0.1:8082`; an unspecified address (`0.0.0.0`, `[::]`) is asked on
//! loopback. Over HTTPS when the config's `[admin]` has `tls` (or with
//! `--tls`): the certificate is checked against `--tls-ca`, or, without it,
//! must be exactly the config's `[admin] tls.cert` (the command runs beside
//! the distributor and reads the same file). `--tls-cert`/`--tls-key` present
//! a client certificate to an admin API with `client_ca`. The health endpoint
//! needs no admin token.
//!
//! A small HTTP/1.1 client of its own (one GET, `Connection: close`), so the
//! distributor carries no HTTP client library for it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use logdist_net::{TlsClient, TlsClientSettings, TlsNames};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cli::HealthArgs;
use crate::config::{AdminConfig, Config};

/// The path asked.
pub const HEALTH_PATH: &str = "/api/v1/health";

/// Largest answer read (the health document is ~150 bytes).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// How to reach the admin API.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// Host to dial (loopback in place of an unspecified address).
    pub host: String,
    pub port: u16,
    pub tls: Option<TlsMode>,
}

/// How the admin API's certificate is checked.
#[derive(Clone, Debug)]
pub enum TlsMode {
    /// Chains to `--tls-ca` and carries the expected name.
    Verified(TlsClient),
    /// Is exactly the certificate in this file (the config's
    /// `[admin] tls.cert`); the client certificate, if any, from the flags.
    Pinned {
        cert: PathBuf,
        client: Option<(PathBuf, PathBuf)>,
    },
}

impl Endpoint {
    /// `http://host:port/api/v1/health` (or https).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{HEALTH_PATH}", self.authority())
    }

    /// `host:port`, brackets around an IPv6 address.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The health document, as `GET /api/v1/health` answers it.
#[derive(Clone, Debug, Deserialize)]
pub struct HealthDocument {
    pub status: String,
    #[serde(default)]
    pub uptime: String,
    #[serde(default)]
    pub active_analyzers: u64,
    #[serde(default)]
    pub total_analyzers: u64,
}

/// What the admin API answered.
#[derive(Clone, Debug)]
pub struct Answer {
    pub http_status: u16,
    pub document: HealthDocument,
}

/// Where to ask, from the flags and the config (file, if any).
pub fn endpoint(args: &HealthArgs) -> Result<Endpoint, String> {
    let config = match &args.config {
        Some(path) => Some(Config::from_file(path).map_err(|e| e.to_string())?),
        None => None,
    };
    let admin = config.as_ref().map(|c| c.admin.clone()).unwrap_or_default();
    let listen = args.admin.clone().unwrap_or_else(|| admin.listen.clone());
    if listen.trim().is_empty() {
        return Err(
            "the admin API is off ([admin] listen is empty), so there is nothing to ask; \
             give --admin HOST:PORT"
                .to_string(),
        );
    }
    let (host, port) = logdist_net::tls::split_host_port(listen.trim()).ok_or_else(|| {
        format!("admin address {listen:?} is not HOST:PORT (e.g. 127.0.0.1:8082, [::1]:8082)")
    })?;
    let host = match host {
        "0.0.0.0" => "127.0.0.1",
        "::" => "::1",
        other => other,
    }
    .to_string();
    let tls = tls_mode(args, &admin, config.is_some())?;
    Ok(Endpoint { host, port, tls })
}

fn tls_mode(
    args: &HealthArgs,
    admin: &AdminConfig,
    have_config: bool,
) -> Result<Option<TlsMode>, String> {
    let server_tls = admin.tls.as_ref().filter(|_| have_config);
    let enabled = args.tls || server_tls.is_some();
    if let Some(tls) = server_tls
        && tls.client_ca.is_some()
        && args.tls_cert.is_none()
    {
        return Err(format!(
            "the admin API requires a client certificate ([admin] tls.client_ca = {}): \
             pass --tls-cert and --tls-key (one signed by that CA)",
            tls.client_ca.as_deref().unwrap_or(Path::new("")).display()
        ));
    }
    if args.tls_ca.is_some() || !enabled {
        let settings = TlsClientSettings {
            ca: args.tls_ca.clone(),
            server_name: args.tls_server_name.clone(),
            cert: args.tls_cert.clone(),
            key: args.tls_key.clone(),
        };
        let client = TlsClient::from_flags(enabled, &settings, &TlsNames::FLAGS)
            .map_err(|e| e.to_string())?;
        return Ok(client.map(TlsMode::Verified));
    }
    let Some(tls) = server_tls else {
        return Err(
            "--tls needs --tls-ca (the CA that signed the admin API's certificate), \
                    or --config with the distributor's config, whose [admin] tls.cert is \
                    then trusted as it is"
                .to_string(),
        );
    };
    let client = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        (None, None) => None,
        (Some(_), None) => return Err("--tls-cert needs --tls-key".to_string()),
        (None, Some(_)) => return Err("--tls-key needs --tls-cert".to_string()),
    };
    Ok(Some(TlsMode::Pinned {
        cert: tls.cert.clone(),
        client,
    }))
}

/// Asks the admin API, all of it within `timeout`.
pub async fn ask(endpoint: &Endpoint, timeout: Duration) -> Result<Answer, String> {
    let url = endpoint.url();
    let exchange = async {
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|e| {
                format!(
                    "cannot reach the admin API at {}: {e} (is logdist running, and is this \
                     its [admin] listen address?)",
                    endpoint.authority()
                )
            })?;
        let _ = tcp.set_nodelay(true);
        let peer = endpoint.authority();
        match &endpoint.tls {
            None => get(tcp, endpoint, false).await,
            Some(TlsMode::Verified(client)) => {
                let stream = client
                    .handshake(tcp, &endpoint.host, &peer)
                    .await
                    .map_err(|e| e.to_string())?;
                get(stream, endpoint, true).await
            }
            Some(TlsMode::Pinned { cert, client }) => {
                let config = pinned_config(cert, client.as_ref())?;
                let name = ServerName::try_from(endpoint.host.clone())
                    .unwrap_or_else(|_| ServerName::try_from("localhost").expect("a valid name"));
                let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| {
                        format!(
                            "TLS handshake with the admin API at {peer} failed: {e}{}",
                            pinned_hint(&e, cert)
                        )
                    })?;
                get(stream, endpoint, true).await
            }
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer from {url} within {timeout:?}")),
    }
}

fn pinned_hint(err: &io::Error, cert: &Path) -> String {
    let text = err.to_string();
    if text.contains("not the certificate") {
        String::new()
    } else if text.contains("InvalidContentType") || text.contains("corrupt message") {
        "; the admin API did not answer in TLS: is [admin] tls set on the distributor that \
         listens there?"
            .to_string()
    } else if text.contains("Alert") || text.contains("alert") {
        "; the admin API refused the handshake: if it requires client certificates, pass \
         --tls-cert and --tls-key"
            .to_string()
    } else {
        format!(" (trusting exactly the certificate in {})", cert.display())
    }
}

/// One `GET` over `stream`; the answer parsed.
async fn get<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    endpoint: &Endpoint,
    tls: bool,
) -> Result<Answer, String> {
    let url = endpoint.url();
    let request = format!(
        "GET {HEALTH_PATH} HTTP/1.1\r\nHost: {}\r\nUser-Agent: logdist-health\r\n\
         Accept: application/json\r\nConnection: close\r\n\r\n",
        endpoint.authority()
    );
    let tls_hint = |e: &io::Error| {
        logdist_net::tls::explain_tls_error(e, "--tls-cert").unwrap_or_else(|| e.to_string())
    };
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending the request to {url} failed: {}", tls_hint(&e)))?;
    stream
        .flush()
        .await
        .map_err(|e| format!("sending the request to {url} failed: {}", tls_hint(&e)))?;
    let mut raw = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&chunk[..n]);
                if raw.len() > MAX_RESPONSE_BYTES {
                    return Err(format!(
                        "{url} answered more than {MAX_RESPONSE_BYTES} bytes: not a logdist \
                         admin API?"
                    ));
                }
                // Everything needed may be here before the peer closes.
                if let Ok(Some(answer)) = parse_response(&raw, false) {
                    return finish(answer, &url);
                }
            }
            // A TLS peer that closes without close_notify: what came is all there is.
            Err(e) if tls && e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) if raw.is_empty() => {
                return Err(format!(
                    "reading the answer of {url} failed: {}",
                    tls_hint(&e)
                ));
            }
            Err(_) => break,
        }
    }
    if raw.is_empty() {
        let hint = if tls {
            ""
        } else {
            ": is the admin API served over HTTPS ([admin] tls)? Then pass --config with the \
             distributor's config, or --tls --tls-ca CA"
        };
        return Err(format!(
            "{url} closed the connection without answering{hint}"
        ));
    }
    match parse_response(&raw, true) {
        Ok(Some(answer)) => finish(answer, &url),
        Ok(None) => Err(format!("{url} sent an incomplete HTTP answer")),
        Err(e) => {
            let hint = if !tls && raw.first() == Some(&0x15) {
                ": it answered in TLS, so the admin API is served over HTTPS ([admin] tls); \
                 pass --config with the distributor's config, or --tls --tls-ca CA"
            } else {
                ""
            };
            Err(format!("{url} did not answer in HTTP ({e}){hint}"))
        }
    }
}

/// The document, or why the answer is not one.
fn finish(response: Response, url: &str) -> Result<Answer, String> {
    let excerpt = || {
        let text = String::from_utf8_lossy(&response.body);
        let text = text.trim();
        if text.len() > 200 {
            format!("{}…", &text[..text.floor_char_boundary(200)])
        } else {
            text.to_string()
        }
    };
    if response.status != 200 && response.status != 503 {
        let hint = match response.status {
            404 => ": no such endpoint; is this a logdist admin API?",
            421 => ": the admin API refused the Host header; ask it by a loopback address",
            401 | 403 => ": the health endpoint should need no token; is this a logdist admin API?",
            _ => "",
        };
        return Err(format!(
            "{url} answered HTTP {}{hint} {}",
            response.status,
            excerpt()
        ));
    }
    let document: HealthDocument = serde_json::from_slice(&response.body).map_err(|e| {
        format!(
            "{url} answered HTTP {} without a health document ({e}): {}",
            response.status,
            excerpt()
        )
    })?;
    Ok(Answer {
        http_status: response.status,
        document,
    })
}

/// A parsed HTTP response.
#[derive(Debug, PartialEq, Eq)]
struct Response {
    status: u16,
    body: Vec<u8>,
}

/// `Ok(None)` while the response is incomplete; `eof`: the peer closed, so
/// a body without a length ends here.
fn parse_response(raw: &[u8], eof: bool) -> Result<Option<Response>, String> {
    let Some(head_end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        if !raw.starts_with(b"HTTP/") && raw.len() >= 5 {
            return Err("no HTTP status line".to_string());
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| "header is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("no HTTP status line: {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let rest = &raw[head_end + 4..];
    let body = if chunked {
        match dechunk(rest)? {
            Some(body) => body,
            None => return Ok(None),
        }
    } else if let Some(length) = length {
        if rest.len() < length {
            return Ok(None);
        }
        rest[..length].to_vec()
    } else if eof {
        rest.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(Response { status, body }))
}

/// A chunked body, once its last chunk is in.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&rest[..line_end]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// What the command prints and its exit status.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    pub pass: bool,
    pub line: String,
}

/// Judges an answer: healthy and degraded pass (HTTP 200), unhealthy (503)
/// fails, unless `live`; `min_analyzers` also needs that many active ones.
pub fn judge(answer: &Answer, url: &str, live: bool, min_analyzers: Option<u64>) -> Verdict {
    let d = &answer.document;
    let mut line = format!(
        "{}: {} of {} analyzers active, up {} ({url})",
        d.status, d.active_analyzers, d.total_analyzers, d.uptime
    );
    let mut pass = live || answer.http_status == 200;
    if let Some(min) = min_analyzers
        && d.active_analyzers < min
    {
        line.push_str(&format!("; fewer than the {min} active analyzers required"));
        pass = false;
    } else if live && answer.http_status != 200 {
        line.push_str("; serving (--live)");
    }
    Verdict { pass, line }
}

/// A verifier that accepts exactly one certificate: the admin API's own, read
/// from its config. Signatures are still checked, so the peer must hold the
/// certificate's key.
#[derive(Debug)]
struct PinnedCert {
    cert: CertificateDer<'static>,
    path: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "its certificate is not the certificate in {} ([admin] tls.cert): is that \
                 config the one of the distributor listening there? (or pass --tls-ca)",
                self.path.display()
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client config trusting exactly the first certificate of `cert_path`.
fn pinned_config(
    cert_path: &Path,
    client: Option<&(PathBuf, PathBuf)>,
) -> Result<ClientConfig, String> {
    let pem = std::fs::read(cert_path).map_err(|e| {
        format!(
            "cannot read the admin API's certificate {} ([admin] tls.cert) to trust it: {e}; \
             pass --tls-ca instead",
            cert_path.display()
        )
    })?;
    let cert = CertificateDer::pem_slice_iter(&pem)
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| {
            format!(
                "no PEM certificate in {} ([admin] tls.cert)",
                cert_path.display()
            )
        })?;
    let provider = logdist_net::tls::crypto_provider();
    let verifier = Arc::new(PinnedCert {
        cert,
        path: cert_path.to_path_buf(),
        provider: provider.clone(),
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let (chain, key) =
                logdist_net::tls::load_cert_and_key(cert, "--tls-cert", key, "--tls-key")
                    .map_err(|e| e.to_string())?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("--tls-cert/--tls-key: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(argv: &[&str]) -> HealthArgs {
        let mut full = vec!["logdist", "health"];
        full.extend_from_slice(argv);
        match crate::cli::Cli::try_parse_from(full).unwrap().command {
            Some(crate::cli::Command::Health(args)) => args,
            other => panic!("not health: {other:?}"),
        }
    }

    #[test]
    fn responses_parse_with_length_chunked_and_in_pieces() {
        let full = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
                     content-length: 2\r\n\r\n{}";
        assert_eq!(
            parse_response(full, false).unwrap(),
            Some(Response {
                status: 503,
                body: b"{}".to_vec()
            })
        );
        assert_eq!(
            parse_response(&full[..full.len() - 1], false).unwrap(),
            None
        );
        let unsized_body = b"HTTP/1.0 200 OK\r\n\r\n{}";
        assert_eq!(parse_response(unsized_body, false).unwrap(), None);
        assert_eq!(
            parse_response(unsized_body, true).unwrap().unwrap().body,
            b"{}".to_vec()
        );
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n2;x=y\r\n\":\r\n\
                        2\r\n1}\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(chunked, false).unwrap().unwrap().body,
            b"{\"a\":1}".to_vec()
        );
        assert_eq!(parse_response(&chunked[..60], true).unwrap(), None);
        assert!(parse_response(b"\x15\x03\x03\x00\x02\x02\x32", true).is_err());
        assert!(parse_response(b"SSH-2.0-x\r\n\r\n", true).is_err());
    }

    #[test]
    fn verdicts() {
        let answer = |code, status: &str, active, total| Answer {
            http_status: code,
            document: HealthDocument {
                status: status.into(),
                uptime: "3s".into(),
                active_analyzers: active,
                total_analyzers: total,
            },
        };
        let v = judge(&answer(200, "healthy", 3, 3), "u", false, None);
        assert!(v.pass);
        assert_eq!(v.line, "healthy: 3 of 3 analyzers active, up 3s (u)");
        assert!(judge(&answer(200, "degraded", 1, 3), "u", false, None).pass);
        assert!(!judge(&answer(503, "unhealthy", 0, 0), "u", false, None).pass);
        assert!(judge(&answer(503, "unhealthy", 0, 0), "u", true, None).pass);
        let v = judge(&answer(200, "healthy", 2, 2), "u", false, Some(3));
        assert!(!v.pass);
        assert!(v.line.contains("fewer than the 3"), "{}", v.line);
        assert!(judge(&answer(200, "healthy", 3, 3), "u", false, Some(3)).pass);
    }

    #[test]
    fn the_address_comes_from_the_flag_else_the_config_and_unspecified_means_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("c.toml");
        std::fs::write(&config, "[admin]\nlisten = \"0.0.0.0:9182\"\n").unwrap();
        let c = config.to_str().unwrap();
        let e = endpoint(&args(&["--config", c])).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 9182));
        assert_eq!(e.url(), "http://127.0.0.1:9182/api/v1/health");
        let e = endpoint(&args(&["--config", c, "--admin", "[::]:7"])).unwrap();
        assert_eq!(e.url(), "http://[::1]:7/api/v1/health");
        let e = endpoint(&args(&["--admin", "logdist:8082"])).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("logdist", 8082));

        std::fs::write(&config, "[admin]\nlisten = \"\"\n").unwrap();
        let err = endpoint(&args(&["--config", c])).unwrap_err();
        assert!(err.contains("admin API is off"), "{err}");
        let err = endpoint(&args(&["--admin", "nonsense"])).unwrap_err();
        assert!(err.contains("not HOST:PORT"), "{err}");
        let err = endpoint(&args(&["--config", "/nonexistent/l.toml"])).unwrap_err();
        assert!(err.contains("/nonexistent/l.toml"), "{err}");
        let err = endpoint(&args(&["--admin", "127.0.0.1:1", "--tls"])).unwrap_err();
        assert!(err.contains("--tls needs --tls-ca"), "{err}");
        let err = endpoint(&args(&["--admin", "127.0.0.1:1", "--tls-ca", "x"])).unwrap_err();
        assert!(err.contains("TLS is off"), "{err}");
    }
}
