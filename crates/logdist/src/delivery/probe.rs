//! The health probe of a connected static analyzer: a TCP connect every
//! `probe_interval` catches a host that stopped answering even though the
//! existing connection has not failed yet.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::ack_state::AckState;

/// How long one probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Probes `address` every `interval` while the session runs; a probe that
/// cannot connect ends the session as a failure.
pub async fn probe(address: String, interval: Duration, state: Arc<AckState>) {
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(&address)).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return state.close(format!("health probe to {address} failed: {err}")),
            Err(_) => return state.close(format!("health probe to {address} timed out")),
        }
    }
}
