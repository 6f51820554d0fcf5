//! docker-compose.yml's topology without containers: logdist, the three
//! analyzers and the three emitters started as processes with exactly the
//! compose file's commands (read from it), the service names resolved to
//! 127.0.0.1 and the container ports mapped to the ports logdist bound there;
//! the emitters start once the compose health check (`logdist health
//! --min-analyzers 3`, run as compose runs it) passes, as `depends_on:
//! service_healthy` has them. After a few seconds of traffic every process is
//! stopped with SIGTERM, as `docker compose down` does, and the summaries
//! must reconcile: every message each emitter sent arrived exactly once (counts
//! and counter fingerprints per emitter summed over the analyzers), with its
//! priority, without a checksum failure; shares follow the weights 1:2:3; every
//! process exits 0, logdist within its grace period.
//!
//! The app (a shell loop appending to a file in a volume) and the shipper
//! (logdist-ship tailing that file through another mount of the volume) run
//! too, each volume a directory here: every line the app wrote reaches an
//! analyzer (as an `other` message) before the shipper is stopped.
//!
//! Needs `target/<profile>/logdist` (`cargo build -p logdist`; `cargo test
//! --workspace` builds it).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn loadtest_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_logdist-loadtest"))
}

/// The binaries of the image, as built here.
fn binary(name: &str) -> PathBuf {
    let bin = loadtest_bin().parent().unwrap().join(name);
    assert!(
        bin.is_file(),
        "{} not found; build it first with `cargo build -p {name}`",
        bin.display()
    );
    bin
}

/// One service of the compose file.
#[derive(Debug)]
struct Service {
    name: String,
    command: Vec<String>,
    environment: BTreeMap<String, String>,
    healthcheck: Option<Vec<String>>,
    /// Named volumes: (volume, path in the container).
    volumes: Vec<(String, String)>,
}

fn compose_services() -> Vec<Service> {
    let text = std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap();
    let mut yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    yaml.apply_merge().unwrap();
    let compose: Value = serde_json::to_value(yaml).unwrap();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap_or_else(|| panic!("a list, not {v}"))
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    compose["services"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, s)| Service {
            name: name.clone(),
            // Compose's interpolation: `$$` is a literal `$`.
            command: s
                .get("command")
                .map(strings)
                .unwrap_or_default()
                .iter()
                .map(|a| a.replace("$$", "$"))
                .collect(),
            environment: s
                .get("environment")
                .and_then(Value::as_object)
                .map(|env| {
                    env.iter()
                        .map(|(k, v)| (k.clone(), interpolate(v.as_str().unwrap_or_default())))
                        .collect()
                })
                .unwrap_or_default(),
            healthcheck: s
                .get("healthcheck")
                .and_then(|h| h.get("test"))
                .map(strings),
            volumes: s
                .get("volumes")
                .map(strings)
                .unwrap_or_default()
                .iter()
                .filter(|v| !v.starts_with('.') && !v.starts_with('/'))
                .map(|v| {
                    let mut parts = v.split(':');
                    let volume = parts.next().unwrap().to_string();
                    (volume, parts.next().unwrap().to_string())
                })
                .collect(),
        })
        .collect()
}

/// Compose's `${VAR:-default}` with VAR unset: the default.
fn interpolate(value: &str) -> String {
    match value
        .strip_prefix("${")
        .and_then(|v| v.strip_suffix('}'))
        .and_then(|v| v.split_once(":-"))
    {
        Some((_, default)) => default.to_string(),
        None => value.to_string(),
    }
}

/// Files the Dockerfile copies into the image: path in the image -> file here.
fn image_files() -> BTreeMap<String, PathBuf> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    text.lines()
        .filter_map(|line| line.strip_prefix("COPY "))
        .filter(|args| !args.starts_with("--from"))
        .filter_map(|args| {
            let parts: Vec<&str> = args.split_whitespace().collect();
            (parts.len() == 2).then(|| (parts[1].to_string(), repo().join(parts[0])))
        })
        .collect()
}

/// Processes started here, killed if the test fails before stopping them.
#[derive(Default)]
struct Processes(Vec<(String, Child)>);

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Processes {
    fn start(
        &mut self,
        name: &str,
        program: &Path,
        args: &[String],
        env: &BTreeMap<String, String>,
        logs: &Path,
    ) {
        let stdout = std::fs::File::create(logs.join(format!("{name}.out"))).unwrap();
        let stderr = std::fs::File::create(logs.join(format!("{name}.err"))).unwrap();
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        for (key, _) in std::env::vars() {
            if key.starts_with("LOGDIST_") || key.starts_with("LOADTEST_") {
                command.env_remove(key);
            }
        }
        command.envs(env);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        self.0.push((name.to_string(), child));
    }

    /// SIGTERM to `name`, then its exit status, within `limit`.
    fn stop(&mut self, name: &str, limit: Duration) -> i32 {
        let index = self.0.iter().position(|(n, _)| n == name).unwrap();
        let (_, mut child) = self.0.remove(index);
        let pid = child.id() as libc::pid_t;
        // SAFETY: signalling a child this test started and has not reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{name} did not exit within {limit:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `GET path` on the admin API, the JSON body.
fn admin_get(admin: &str, path: &str) -> Value {
    let mut stream = TcpStream::connect(admin).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {response}"))
}

/// Polls `cond` (bounded) with what `probe` returns.
fn wait_until<T>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> T,
    cond: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let value = probe();
        if cond(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `summary: {json}` line of a role's stdout.
fn summary(logs: &Path, name: &str) -> Value {
    let out = std::fs::read_to_string(logs.join(format!("{name}.out"))).unwrap();
    let err = std::fs::read_to_string(logs.join(format!("{name}.err"))).unwrap_or_default();
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("summary: "))
        .unwrap_or_else(|| panic!("{name} printed no summary\nstdout:\n{out}\nstderr:\n{err}"));
    serde_json::from_str(line).unwrap()
}

fn number(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap(),
        other => other
            .as_u64()
            .unwrap_or_else(|| panic!("not a number: {other}")),
    }
}

#[test]
fn compose_topology_delivers_everything_with_shares_1_2_3() {
    let services = compose_services();
    let service = |name: &str| services.iter().find(|s| s.name == name).unwrap();
    let role = |role: &str| -> Vec<&Service> {
        services
            .iter()
            .filter(|s| {
                s.command.first().map(String::as_str) == Some("logdist-loadtest")
                    && s.command.get(1).map(String::as_str) == Some(role)
            })
            .collect()
    };
    let (analyzers, emitters) = (role("analyzer"), role("emitter"));
    assert_eq!((analyzers.len(), emitters.len()), (3, 3), "{services:?}");
    let logs = tempfile::tempdir().unwrap();
    let logs = logs.path();
    let mut processes = Processes::default();

    // logdist, as compose runs it: its command (paths in the image mapped to
    // the files the Dockerfile copies there), its environment, and, for
    // what only a container provides, loopback ports and a scratch volume.
    let logdist = service("logdist");
    let files = image_files();
    let args: Vec<String> = logdist.command[1..]
        .iter()
        .map(|a| {
            files
                .get(a)
                .map_or_else(|| a.clone(), |p| p.display().to_string())
        })
        .collect();
    let config_path = files
        .get("/etc/logdist/logdist.toml")
        .expect("the Dockerfile copies the config");
    let config: toml::Value =
        toml::from_str(&std::fs::read_to_string(config_path).unwrap()).unwrap();
    let ready = logs.join("ready.json");
    let mut env = logdist.environment.clone();
    for (key, value) in [
        ("LOGDIST_LISTEN", "127.0.0.1:0"),
        ("LOGDIST_ACK_LISTEN", "127.0.0.1:0"),
        ("LOGDIST_ANALYZER_LISTEN", "127.0.0.1:0"),
        ("LOGDIST_ADMIN_LISTEN", "127.0.0.1:0"),
    ] {
        env.insert(key.into(), value.into());
    }
    env.insert(
        "LOGDIST_DEAD_LETTER_PATH".into(),
        logs.join("dead.ndjson").display().to_string(),
    );
    env.insert(
        "LOGDIST_SPOOL_DIR".into(),
        logs.join("spool").display().to_string(),
    );
    env.insert("LOGDIST_READY_FILE".into(), ready.display().to_string());
    processes.start("logdist", &binary(&logdist.command[0]), &args, &env, logs);
    let bound: Value = wait_until(
        "logdist's ready file",
        Duration::from_secs(15),
        || {
            std::fs::read_to_string(&ready)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
        },
        Option::is_some,
    )
    .unwrap();

    // Container port -> the port bound here, by what listens there.
    let port = |address: &str| address.rsplit(':').next().unwrap().to_string();
    let local = |v: &Value| v.as_str().unwrap().to_string();
    let mut ports: BTreeMap<String, String> = BTreeMap::new();
    for listener in config["listeners"].as_array().unwrap() {
        let ack = listener
            .get("ack")
            .and_then(|a| a.as_str())
            .unwrap_or("none");
        let here = bound["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["ack"] == ack)
            .unwrap();
        ports.insert(
            port(listener["address"].as_str().unwrap()),
            local(&here["address"]),
        );
    }
    ports.insert(
        port(config["analyzers"]["listen"].as_str().unwrap()),
        local(&bound["analyzers"]),
    );
    ports.insert(
        port(config["admin"]["listen"].as_str().unwrap()),
        local(&bound["admin"]),
    );
    let admin = local(&bound["admin"]);
    // A service's command as it runs here: a service's `name:port` and
    // `--server-host name --server-port port` dial 127.0.0.1 and the port
    // bound for that container port; paths in a volume are in its directory.
    let volumes_root = logs.join("volumes");
    let is_service = |name: &str| services.iter().any(|s| s.name == name);
    let bound_port = |p: &str| -> String {
        ports
            .get(p)
            .unwrap_or_else(|| panic!("no listener on port {p} in the config"))
            .clone()
    };
    let map_args = |service: &Service| -> Vec<String> {
        let mut mounts = service.volumes.clone();
        mounts.sort_by_key(|(_, target)| std::cmp::Reverse(target.len()));
        let mut previous = "";
        let mut out = Vec::new();
        for arg in &service.command[1..] {
            let mut mapped = match arg.split_once(':') {
                Some((host, p)) if is_service(host) => bound_port(p),
                _ if is_service(arg) => "127.0.0.1".to_string(),
                _ if previous == "--server-port" => {
                    bound_port(arg).rsplit(':').next().unwrap().to_string()
                }
                _ => arg.clone(),
            };
            for (volume, target) in &mounts {
                let dir = volumes_root.join(volume);
                std::fs::create_dir_all(&dir).unwrap();
                mapped = mapped.replace(target.as_str(), dir.to_str().unwrap());
            }
            previous = arg;
            out.push(mapped);
        }
        out
    };
    let program = |service: &Service| -> PathBuf {
        match service.command[0].as_str() {
            "sh" => PathBuf::from("sh"),
            name => binary(name),
        }
    };
    let start = |processes: &mut Processes, name: &str| {
        let s = service(name);
        processes.start(name, &program(s), &map_args(s), &s.environment, logs);
    };

    // The analyzers and the app start with logdist (no health gate).
    for analyzer in &analyzers {
        start(&mut processes, &analyzer.name);
    }
    start(&mut processes, "app");
    // Compose's health check of logdist gates the emitters and the shipper.
    let check = logdist
        .healthcheck
        .as_ref()
        .expect("logdist has a health check");
    assert_eq!(check[..3], ["CMD", "logdist", "health"]);
    let health_env = [
        ("LOGDIST_CONFIG", config_path.display().to_string()),
        ("LOGDIST_ADMIN_LISTEN", admin.clone()),
    ];
    wait_until(
        "logdist's compose health check to pass",
        Duration::from_secs(20),
        || {
            Command::new(binary("logdist"))
                .args(&check[2..])
                .envs(health_env.iter().map(|(k, v)| (*k, v.as_str())))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap()
        },
        |status| status.success(),
    );
    for emitter in &emitters {
        start(&mut processes, &emitter.name);
    }
    start(&mut processes, "shipper");

    // A few seconds of traffic (bounded: the emitters' rates).
    wait_until(
        "1200 messages accepted",
        Duration::from_secs(30),
        || admin_get(&admin, "/api/v1/stats"),
        |stats| stats["totals"]["accepted"].as_u64().unwrap_or(0) >= 1200,
    );

    // `docker compose down`: dependents first.
    let mut sent_by_emitter = BTreeMap::new();
    for emitter in &emitters {
        let code = processes.stop(&emitter.name, Duration::from_secs(10));
        let s = summary(logs, &emitter.name);
        assert_eq!(code, 0, "{}: {s}", emitter.name);
        assert!(s["error"].is_null(), "{s}");
        sent_by_emitter.insert(s["id"].as_str().unwrap().to_string(), s);
    }
    let sent: u64 = sent_by_emitter.values().map(|s| number(&s["sent"])).sum();
    // The app stops before the shipper here (compose stops the shipper
    // first), so that every line it wrote is there to be shipped.
    assert_eq!(
        processes.stop("app", Duration::from_secs(10)),
        0,
        "the app's exit status"
    );
    let app = service("app");
    let (volume, target) = &app.volumes[0];
    let log_in_app = app.command[2]
        .split_whitespace()
        .find(|w| w.starts_with(target.as_str()))
        .expect("the app writes into its volume");
    let log_here = volumes_root
        .join(volume)
        .join(&log_in_app[target.len() + 1..]);
    let lines = std::fs::read_to_string(&log_here).unwrap().lines().count() as u64;
    assert!(lines > 0, "the app wrote nothing to {}", log_here.display());
    let stats = wait_until(
        "every message sent and every line of the app to be delivered",
        Duration::from_secs(20),
        || admin_get(&admin, "/api/v1/stats"),
        |stats| {
            let t = &stats["totals"];
            t["accepted"] == sent + lines
                && t["delivered"] == sent + lines
                && t["in_flight"] == 0
                && t["queued"] == 0
        },
    );
    assert_eq!(stats["totals"]["dead_lettered"], 0, "{stats}");
    assert_eq!(stats["totals"]["rejected"], 0, "{stats}");
    let code = processes.stop("shipper", Duration::from_secs(10));
    let shipped = std::fs::read_to_string(logs.join("shipper.out")).unwrap();
    assert_eq!(code, 0, "the shipper's exit status; it said: {shipped}");
    let mut received = Vec::new();
    for analyzer in &analyzers {
        let code = processes.stop(&analyzer.name, Duration::from_secs(10));
        let s = summary(logs, &analyzer.name);
        assert_eq!(code, 0, "{}: {s}", analyzer.name);
        received.push(s);
    }
    let grace = Duration::from_secs(5 + 2 + 3);
    assert_eq!(processes.stop("logdist", grace), 0, "logdist's exit status");

    // Nothing lost, nothing twice, nothing altered, priorities kept.
    for s in &received {
        for key in ["checksum_failures", "duplicates"] {
            assert_eq!(s[key], 0, "{key}: {s}");
        }
        assert_eq!(s["protocol_errors"].as_array().unwrap().len(), 0, "{s}");
    }
    // The shipped lines are the analyzers' `other` messages.
    let other: u64 = received.iter().map(|s| number(&s["other"])).sum();
    assert_eq!(other, lines, "every line of the app, once");
    for (id, e) in &sent_by_emitter {
        let parts: Vec<&Value> = received
            .iter()
            .filter_map(|a| a["emitters"].get(id))
            .collect();
        assert_eq!(parts.len(), 3, "emitter {id} reached every analyzer");
        let count: u64 = parts.iter().map(|p| number(&p["received"])).sum();
        let fingerprint = parts
            .iter()
            .fold(0u64, |acc, p| acc.wrapping_add(number(&p["fingerprint"])));
        assert_eq!(count, number(&e["sent"]), "emitter {id}: {e}");
        assert_eq!(
            fingerprint,
            number(&e["fingerprint"]),
            "emitter {id}: every counter once"
        );
        let mut by_priority: BTreeMap<String, u64> = BTreeMap::new();
        for p in &parts {
            for (level, n) in p["by_priority"].as_object().unwrap() {
                *by_priority.entry(level.clone()).or_default() += number(n);
            }
        }
        let sent_by_priority: BTreeMap<String, u64> = e["by_priority"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), number(v)))
            .collect();
        assert_eq!(
            by_priority, sent_by_priority,
            "emitter {id}: priorities kept"
        );
    }
    // Shares follow the weights of the compose file.
    let total: u64 = received.iter().map(|s| number(&s["received"])).sum();
    assert_eq!(total, sent);
    let weights: Vec<f64> = analyzers
        .iter()
        .map(|a| {
            let i = a.command.iter().position(|w| w == "--weight").unwrap();
            a.command[i + 1].parse().unwrap()
        })
        .collect();
    assert_eq!(weights, [1.0, 2.0, 3.0]);
    let weight_sum: f64 = weights.iter().sum();
    for (s, w) in received.iter().zip(&weights) {
        let share = number(&s["received"]) as f64 / total as f64;
        let expected = w / weight_sum;
        assert!(
            (share / expected - 1.0).abs() < 0.03,
            "weight {w}: share {share:.4}, expected {expected:.4} ({} of {total})",
            s["received"]
        );
    }
}
