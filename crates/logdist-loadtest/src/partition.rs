//! The chaos `partition` fault: one analyzer sits behind a network link
//! that is cut without FIN or RST (and later restored), using the
//! namespace helpers of `crates/logdist-netns`.
//!
//! When a profile's chaos schedule has `partition`, the whole load test
//! (its runtime, its emitters and analyzers, and the logdist it starts)
//! runs in a network namespace of its own ("world"), and the last analyzer
//! dials logdist from a second namespace ("island") over a veth link. So
//! nothing is added to the namespace the load test was started in, and the
//! cut drops packets silently: logdist only learns of it from its own
//! timeouts (`analyzers.user_timeout`, `ack_timeout`).
//!
//! Namespaces need root and iproute2; without them, or with `--target` (a
//! distributor that is not ours to move), the fault is skipped with a
//! message and the rest of the schedule runs.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use logdist_netns::{Netns, Veth};

/// The namespaces and the link of a run with the partition fault.
pub struct Island {
    // Dropped in this order: the link, then the namespaces.
    link: Veth,
    island: Netns,
    world: Netns,
    /// The analyzer behind the link.
    pub analyzer: usize,
}

impl fmt::Debug for Island {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Island")
            .field("world", &self.world.name())
            .field("island", &self.island.name())
            .field("analyzer", &self.analyzer)
            .finish()
    }
}

impl Island {
    /// Why the partition fault cannot run, or `None` when it can.
    pub fn unavailable(external_target: bool) -> Option<String> {
        if external_target {
            return Some(
                "--target names a distributor this run did not start, so it cannot be \
                 put in a network namespace"
                    .into(),
            );
        }
        logdist_netns::unavailable()
    }

    /// Creates the namespaces and the link; `analyzer` will dial from the island.
    pub fn create(analyzer: usize) -> Result<Island, String> {
        let err = |e: std::io::Error| format!("cannot set up the partition fault: {e}");
        let world = Netns::new("world").map_err(err)?;
        let island = Netns::new("island").map_err(err)?;
        let link = Veth::new(&world, &island).map_err(err)?;
        Ok(Island {
            link,
            island,
            world,
            analyzer,
        })
    }

    /// Moves the calling thread into the world namespace: call it before the
    /// runtime is built, so its threads and the logdist it starts follow.
    pub fn enter_world(&self) -> Result<(), String> {
        self.world
            .enter()
            .map_err(|e| format!("cannot enter namespace {}: {e}", self.world.name()))
    }

    /// Connects from the island to logdist's analyzer listener at `port`
    /// (reached over the link).
    pub async fn connect(&self, port: u16) -> std::io::Result<tokio::net::TcpStream> {
        let to = SocketAddr::from((self.link.here_addr(), port));
        let stream = self
            .island
            .run_in(move || std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5)))??;
        stream.set_nonblocking(true)?;
        tokio::net::TcpStream::from_std(stream)
    }

    /// Cuts the link: no FIN, no RST, every packet dropped.
    pub fn cut(&self) -> std::io::Result<()> {
        self.link.cut()
    }

    pub fn restore(&self) -> std::io::Result<()> {
        self.link.restore()
    }
}
