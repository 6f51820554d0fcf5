//! A link whose packets this process carries: two TUN devices, one in each
//! namespace, and a thread that moves IP packets between them, delaying,
//! dropping or (cut) discarding them as the link's [`Shape`] says. The
//! userspace counterpart of `tc qdisc ... netem delay D loss L`.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{HERE, Netns, THERE};

/// What a [`Relay`] does to packets, each way.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Shape {
    /// Added to every packet, each way (so the round trip grows by twice this).
    pub delay: Duration,
    /// The share of packets dropped, each way: 0.05 is 5 %.
    pub loss: f64,
    /// Every packet is dropped (and those on their way are lost): a silent cut.
    pub cut: bool,
}

/// A point-to-point link from `here` (10.77.0.1) to `there` (10.77.0.2)
/// carried by a thread of this process; stops (and the devices go) on drop.
pub struct Relay {
    shape: Arc<parking::Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

mod parking {
    use std::sync::Mutex;

    use super::Shape;

    #[derive(Default)]
    pub struct Shared(Mutex<Shape>);

    impl Shared {
        pub fn get(&self) -> Shape {
            *self.0.lock().unwrap_or_else(|e| e.into_inner())
        }

        pub fn set(&self, shape: Shape) {
            *self.0.lock().unwrap_or_else(|e| e.into_inner()) = shape;
        }
    }
}

impl Relay {
    pub fn new(here: &Netns, there: &Netns, shape: Shape) -> io::Result<Relay> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let (here_dev, there_dev) = (format!("ldrh{n}"), format!("ldrt{n}"));
        // A TUN device is made in the namespace of the thread that opens it.
        let near = here.run_in(|| open_tun(&here_dev))??;
        let far = there.run_in(|| open_tun(&there_dev))??;
        for (ns, dev, local, peer) in [
            (here, &here_dev, HERE, THERE),
            (there, &there_dev, THERE, HERE),
        ] {
            ns.ip(&[
                "addr",
                "add",
                &local.to_string(),
                "peer",
                &peer.to_string(),
                "dev",
                dev,
            ])?;
            ns.ip(&["link", "set", dev, "up"])?;
        }
        let shared = Arc::new(parking::Shared::default());
        shared.set(shape);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name(format!("netns-relay-{n}"))
            .spawn({
                let (shared, stop) = (shared.clone(), stop.clone());
                move || carry([near, far], &shared, &stop)
            })?;
        Ok(Relay {
            shape: shared,
            stop,
            thread: Some(thread),
        })
    }

    pub fn here_addr(&self) -> std::net::Ipv4Addr {
        HERE
    }

    pub fn there_addr(&self) -> std::net::Ipv4Addr {
        THERE
    }

    /// Changes what happens to packets from now on.
    pub fn shape(&self, shape: Shape) {
        self.shape.set(shape);
    }

    /// Drops every packet from now on, silently (no FIN, no RST).
    pub fn cut(&self) {
        let shape = self.shape.get();
        self.shape(Shape { cut: true, ..shape });
    }

    pub fn restore(&self) {
        let shape = self.shape.get();
        self.shape(Shape {
            cut: false,
            ..shape
        });
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Opens a TUN device named `name` (IP packets, no packet info), non-blocking.
fn open_tun(name: &str) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *slot = byte as libc::c_char;
    }
    request.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF takes a pointer to an ifreq, which outlives the call.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(file)
}

/// xorshift64*: enough randomness for dropping packets.
struct Random(u64);

impl Random {
    fn new() -> Random {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Random((nanos ^ (u64::from(std::process::id()) << 32)) | 1)
    }

    /// Uniform in [0, 1).
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Moves packets between the two devices until `stop`: what `devices[0]`
/// emits goes into `devices[1]` and the other way round, each after the
/// shape's delay unless dropped.
fn carry(mut devices: [File; 2], shape: &parking::Shared, stop: &AtomicBool) {
    // In flight, per direction (index = the device it came from): when due, and the packet.
    let mut flying: [VecDeque<(Instant, Vec<u8>)>; 2] = [VecDeque::new(), VecDeque::new()];
    let mut random = Random::new();
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let current = shape.get();
        for from in 0..2 {
            if current.cut {
                flying[from].clear();
            }
            while flying[from].front().is_some_and(|(due, _)| *due <= now) {
                let (_, packet) = flying[from].pop_front().expect("front exists");
                // A full device queue drops the packet, as a full link would.
                let _ = devices[1 - from].write(&packet);
            }
        }
        let next_due = flying
            .iter()
            .filter_map(|q| q.front().map(|(due, _)| *due))
            .min();
        let wait = next_due
            .map_or(Duration::from_millis(10), |due| {
                due.saturating_duration_since(now)
            })
            .min(Duration::from_millis(10));
        let mut polls = [
            libc::pollfd {
                fd: devices[0].as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: devices[1].as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let millis = wait.as_millis().max(u128::from(!wait.is_zero())) as libc::c_int;
        // SAFETY: two valid pollfd entries.
        unsafe { libc::poll(polls.as_mut_ptr(), 2, millis) };
        for from in 0..2 {
            if polls[from].revents & libc::POLLIN == 0 {
                continue;
            }
            loop {
                match devices[from].read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let shape = shape.get();
                        if shape.cut || (shape.loss > 0.0 && random.next() < shape.loss) {
                            continue;
                        }
                        flying[from].push_back((Instant::now() + shape.delay, buf[..n].to_vec()));
                    }
                    Err(_) => break,
                }
            }
        }
    }
}
