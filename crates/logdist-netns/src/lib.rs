//! Network faults for tests and the load tester, with real network
//! namespaces: one place for creating them, linking them, running code
//! inside them, and breaking the link the ways networks break.
//!
//! Everything lives in namespaces this crate creates; nothing is added to
//! the namespace the process started in. A typical test makes two: one for
//! the distributor (and whatever else talks to it over loopback), one for a
//! peer across a link:
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! if logdist_netns::skip("example") {
//!     return Ok(()); // printed why: not root, no `ip`, ...
//! }
//! let here = logdist_netns::Netns::new("dist")?;
//! let there = logdist_netns::Netns::new("peer")?;
//! let link = logdist_netns::Veth::new(&here, &there)?;
//! // Sockets created inside a namespace stay in it.
//! let listener = here.run_in(|| std::net::TcpListener::bind((link.here_addr(), 0)))??;
//! let address = listener.local_addr()?;
//! let peer = there.run_in(move || std::net::TcpStream::connect(address))??;
//! link.cut()?;      // packets vanish: no FIN, no RST
//! link.restore()?;
//! # drop(peer); Ok(()) }
//! ```
//!
//! - [`Netns`]: a namespace (`ip netns add`), loopback up, deleted on drop;
//!   [`Netns::run_in`] runs a closure on a thread inside it, [`Netns::enter`]
//!   moves the calling thread (and the threads it starts later) in,
//!   [`Netns::command`] builds `ip netns exec NAME ...`.
//! - [`Veth`]: a kernel veth pair between two namespaces, 10.77.0.1/30 and
//!   10.77.0.2/30; [`Veth::cut`] takes the far end down (a silent cut: the
//!   near side sees nothing but unanswered packets), [`Veth::restore`]
//!   brings it back.
//! - [`Relay`]: a link of two TUN devices whose packets a thread of this
//!   process carries, with latency, loss and cuts in userspace
//!   ([`Shape`]). Kernels without `sch_netem` (CI's among them) have no
//!   `tc ... netem`; this works wherever `/dev/net/tun` does.
//!
//! [`unavailable`] says why namespaces cannot be used here (not root, no `ip`
//! command, no `/dev/net/tun`); tests print it and pass as skipped.

mod relay;

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub use relay::{Relay, Shape};

/// The address of the near ([`Veth::here_addr`]) and far ends of a link.
pub const HERE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const THERE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

/// Why namespace tests cannot run here, or `None` when they can: running as
/// root, with the `ip` command (iproute2) and `/dev/net/tun`.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root (network namespaces need CAP_SYS_ADMIN)".into());
    }
    let ip = Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !ip.is_ok_and(|s| s.success()) {
        return Some("the `ip` command is missing (apt-get install -y iproute2)".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing".into());
    }
    None
}

/// Prints why `test` is skipped and returns true when namespaces are
/// unavailable (see [`unavailable`]).
pub fn skip(test: &str) -> bool {
    match unavailable() {
        Some(reason) => {
            println!("SKIPPED {test}: {reason}");
            eprintln!("SKIPPED {test}: {reason}");
            true
        }
        None => false,
    }
}

/// Runs `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str]) -> io::Result<()> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if output.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// A network namespace of its own, with loopback up; deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `ld-<tag>-<pid>-<n>` (unique in this process, and across
    /// processes by the pid).
    pub fn new(tag: &str) -> io::Result<Netns> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag: String = tag
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(6)
            .collect();
        let name = format!("ld-{tag}-{}-{n}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> io::Result<()> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// `ip netns exec NAME program`: add arguments and run it.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    fn handle(&self) -> io::Result<File> {
        File::open(Path::new("/run/netns").join(&self.name))
    }

    /// Moves the calling thread into the namespace. Sockets it creates from
    /// then on, and threads it starts (a tokio runtime's workers, a child
    /// process), are in the namespace too.
    pub fn enter(&self) -> io::Result<()> {
        let handle = self.handle()?;
        // SAFETY: a valid namespace file descriptor; setns only changes this
        // thread's network namespace.
        if unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Runs `f` on a thread inside the namespace and returns what it
    /// returned; sockets made there stay in the namespace.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    self.enter()?;
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(err) = ip(&["netns", "del", &self.name]) {
            eprintln!(
                "logdist-netns: cannot delete namespace {}: {err}",
                self.name
            );
        }
    }
}

/// A veth pair from `here` (10.77.0.1/30) to `there` (10.77.0.2/30), both up.
/// Deleted on drop (deleting a namespace deletes its end too).
pub struct Veth {
    here: String,
    there: String,
    here_dev: String,
    there_dev: String,
}

impl Veth {
    pub fn new(here: &Netns, there: &Netns) -> io::Result<Veth> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let (here_dev, there_dev) = (format!("ldh{n}"), format!("ldt{n}"));
        // Made inside `here`, so nothing ever appears in the caller's namespace.
        here.ip(&[
            "link",
            "add",
            &here_dev,
            "type",
            "veth",
            "peer",
            "name",
            &there_dev,
            "netns",
            there.name(),
        ])?;
        let veth = Veth {
            here: here.name().to_string(),
            there: there.name().to_string(),
            here_dev,
            there_dev,
        };
        here.ip(&["addr", "add", &format!("{HERE}/30"), "dev", &veth.here_dev])?;
        there.ip(&[
            "addr",
            "add",
            &format!("{THERE}/30"),
            "dev",
            &veth.there_dev,
        ])?;
        here.ip(&["link", "set", &veth.here_dev, "up"])?;
        there.ip(&["link", "set", &veth.there_dev, "up"])?;
        Ok(veth)
    }

    /// The near end's address, in `here`.
    pub fn here_addr(&self) -> Ipv4Addr {
        HERE
    }

    /// The far end's address, in `there`.
    pub fn there_addr(&self) -> Ipv4Addr {
        THERE
    }

    /// Cuts the link without a FIN or RST: the far end goes down, and every
    /// packet either way is dropped silently. Connections across it stay
    /// open on both sides until a timeout of theirs ends them.
    pub fn cut(&self) -> io::Result<()> {
        ip(&["-n", &self.there, "link", "set", &self.there_dev, "down"])
    }

    /// Brings the far end back up (its address and route come back with it).
    pub fn restore(&self) -> io::Result<()> {
        ip(&["-n", &self.there, "link", "set", &self.there_dev, "up"])
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // Gone already if either namespace was deleted first.
        let _ = ip(&["-n", &self.here, "link", "del", &self.here_dev]);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    use super::*;

    /// A connection from `there` to a listener in `here`, both ends.
    fn pair(here: &Netns, there: &Netns, address: Ipv4Addr) -> (TcpStream, TcpStream) {
        let listener = here
            .run_in(|| TcpListener::bind((address, 0)))
            .unwrap()
            .unwrap();
        let to = listener.local_addr().unwrap();
        let client = there
            .run_in(move || TcpStream::connect_timeout(&to, Duration::from_secs(5)))
            .unwrap()
            .unwrap();
        let (server, _) = listener.accept().unwrap();
        (server, client)
    }

    /// Whether a byte arrives on `stream` within `wait`.
    fn arrives(stream: &mut TcpStream, wait: Duration) -> bool {
        stream.set_read_timeout(Some(wait)).unwrap();
        let mut byte = [0u8; 1];
        matches!(stream.read(&mut byte), Ok(1))
    }

    #[test]
    fn a_cut_veth_drops_packets_silently_until_restored() {
        if skip("a_cut_veth_drops_packets_silently_until_restored") {
            return;
        }
        let here = Netns::new("th").unwrap();
        let there = Netns::new("tt").unwrap();
        let link = Veth::new(&here, &there).unwrap();
        let (mut server, mut client) = pair(&here, &there, link.here_addr());
        client.write_all(b"a").unwrap();
        assert!(arrives(&mut server, Duration::from_secs(5)));
        link.cut().unwrap();
        client.write_all(b"b").unwrap();
        assert!(
            !arrives(&mut server, Duration::from_millis(500)),
            "crossed a cut link"
        );
        link.restore().unwrap();
        // The client's retransmission gets through once the link is back.
        assert!(arrives(&mut server, Duration::from_secs(10)));
        // Nobody saw a FIN or RST: the connection still works both ways.
        server.write_all(b"c").unwrap();
        assert!(arrives(&mut client, Duration::from_secs(5)));
    }

    #[test]
    fn a_relay_delays_drops_and_cuts() {
        if skip("a_relay_delays_drops_and_cuts") {
            return;
        }
        let here = Netns::new("rh").unwrap();
        let there = Netns::new("rt").unwrap();
        let delay = Duration::from_millis(100);
        let relay = Relay::new(
            &here,
            &there,
            Shape {
                delay,
                ..Shape::default()
            },
        )
        .unwrap();
        let (mut server, mut client) = pair(&here, &there, relay.here_addr());
        // A round trip crosses the relay twice.
        let started = Instant::now();
        client.write_all(b"p").unwrap();
        assert!(arrives(&mut server, Duration::from_secs(5)));
        server.write_all(b"q").unwrap();
        assert!(arrives(&mut client, Duration::from_secs(5)));
        let round_trip = started.elapsed();
        assert!(round_trip >= delay * 2, "round trip {round_trip:?}");
        relay.cut();
        client.write_all(b"r").unwrap();
        assert!(
            !arrives(&mut server, Duration::from_millis(600)),
            "crossed a cut relay"
        );
        relay.restore();
        assert!(arrives(&mut server, Duration::from_secs(10)));
    }
}
