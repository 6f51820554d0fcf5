//! Static analyzers: the distributor dials out (over TLS when the analyzer's
//! `tls` is set), keeps the analyzer out of the routing table while it is
//! down, and reconnects with exponential backoff and full jitter. A failed
//! TLS handshake (wrong name, unknown CA) is a connection failure like any
//! other. While connected, [`probe`](super::probe) watches its host.

use std::sync::Arc;
use std::time::Duration;

use logdist_net::Backoff;
use logdist_wire::HandshakeDecoder;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::attach::attach;
use super::context::DeliveryContext;
use super::directory::{Directory, Link};
use super::handshake::Introduction;
use crate::config::StaticAnalyzerConfig;
use crate::transport::Dialer;

/// How long one connection attempt may take (TLS handshake included).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Keeps one static analyzer connected until shutdown stops reconnecting
/// (`stop_accepting`; a live session drains as any other), or until `removed`
/// is cancelled by a reload, which drains a live session first. The analyzer
/// must be listed in the directory; the reloader lists and forgets it.
/// `dialer` connects (the reloader may replace its TLS settings).
pub async fn run_static(
    config: StaticAnalyzerConfig,
    dialer: Arc<Dialer>,
    ctx: Arc<DeliveryContext>,
    removed: CancellationToken,
) {
    let id: Arc<str> = Arc::from(config.id.as_str());
    keep_connected(&config, &dialer, &id, &ctx, &removed).await;
}

async fn keep_connected(
    config: &StaticAnalyzerConfig,
    dialer: &Dialer,
    id: &Arc<str>,
    ctx: &Arc<DeliveryContext>,
    removed: &CancellationToken,
) {
    let stop = &ctx.shutdown.stop_accepting;
    // "Full jitter", so analyzers that failed together do not all come back
    // at the same instant.
    let mut backoff = Backoff::new(ctx.settings.reconnect_min, ctx.settings.reconnect_max);
    loop {
        if stop.is_cancelled() || removed.is_cancelled() {
            return;
        }
        let connected = tokio::select! {
            connected = tokio::time::timeout(CONNECT_TIMEOUT, dialer.connect(&config.address, ctx.settings.user_timeout)) => connected,
            _ = stop.cancelled() => return,
            _ = removed.cancelled() => return,
        };
        let failures = backoff.failures();
        match connected {
            Ok(Ok(stream)) => {
                let (reader, writer) = stream.into_split();
                let intro = Introduction {
                    id: id.clone(),
                    weight: config.weight,
                    format: config.format,
                    acks: config.acks,
                    replies: false,
                    seed_control: config.format == logdist_wire::AnalyzerFormat::Frame,
                    link: Link::Static,
                    address: config.address.clone(),
                };
                // The control stream starts at once: no handshake to read.
                let reader = FramedRead::new(reader, HandshakeDecoder::new());
                if attach(intro, reader, writer, ctx, removed).await {
                    backoff.reset();
                }
            }
            Ok(Err(err)) => unreachable(
                &ctx.directory,
                id,
                &config.address,
                failures,
                &err.to_string(),
            ),
            Err(_) => unreachable(
                &ctx.directory,
                id,
                &config.address,
                failures,
                "connect timed out",
            ),
        }
        let delay = backoff.fail();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => return,
            _ = removed.cancelled() => return,
        }
    }
}

fn unreachable(directory: &Directory, id: &Arc<str>, address: &str, failures: u32, reason: &str) {
    directory.unreachable(id, reason);
    // The first failure in a row is news; the retries that follow are not.
    if failures == 0 {
        tracing::warn!(analyzer = %id, address, reason, "static analyzer unreachable; retrying with backoff");
    } else {
        tracing::debug!(analyzer = %id, address, reason, failures, "static analyzer still unreachable");
    }
}
