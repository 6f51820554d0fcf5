//! The container build, checked without a Docker engine:
//! `scripts/lint-container.sh` (hadolint, the Compose Specification's schema,
//! Docker Compose's parser when installed, and the consistency of
//! docker-compose.yml with the Dockerfile and configs/docker.toml) passes on
//! the repository and fails, naming each fault, on a copy with faults put in;
//! every script is shellcheck-clean.
//!
//! The tools come from PyPI and Debian (`.ci/run` installs them). Without
//! them these tests say so and pass, unless `LOGDIST_REQUIRE_CONTAINER_LINT=1`
//! (set by `.ci/run` once it installed them), when a missing tool fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Exit status of the lint when a tool it needs is missing.
const SKIP: i32 = 77;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn required() -> bool {
    std::env::var("LOGDIST_REQUIRE_CONTAINER_LINT").is_ok_and(|v| v == "1")
}

/// Runs `command` to its end, killing it after `limit`.
fn run_bounded(command: &mut Command, limit: Duration) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{command:?} did not finish within {limit:?}\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The lint's output on `root`, or `None` when it cannot run here (said on stderr).
fn lint(root: &Path) -> Option<(i32, String)> {
    let out = run_bounded(
        Command::new(repo().join("scripts/lint-container.sh")).arg(root),
        Duration::from_secs(120),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let code = out.status.code().expect("the lint exited");
    if code == SKIP {
        assert!(
            !required(),
            "LOGDIST_REQUIRE_CONTAINER_LINT=1 but the lint cannot run:\n{text}"
        );
        eprintln!("container lint skipped: {}", text.trim());
        return None;
    }
    Some((code, text))
}

#[test]
fn the_container_build_passes_the_lint() {
    let Some((code, text)) = lint(&repo()) else {
        return;
    };
    assert_eq!(code, 0, "scripts/lint-container.sh failed:\n{text}");
    for check in [
        "ok    hadolint: no findings",
        "ok    schema: docker-compose.yml is valid against Compose Specification",
        "ok    compose: analyzer weights 1:2:3",
        "ok    Dockerfile: EXPOSE is every port of configs/docker.toml",
        "0 failed",
    ] {
        assert!(text.contains(check), "no {check:?} in:\n{text}");
    }
}

/// A copy of what the lint reads, for faults to be put in.
fn copy_of_repo(dir: &Path) {
    let repo = repo();
    let mut files: Vec<PathBuf> = [
        "Dockerfile",
        "docker-compose.yml",
        "Cargo.toml",
        "configs/docker.toml",
        "configs/prometheus.yml",
        "scripts/compose-spec.json",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    for entry in std::fs::read_dir(repo.join("crates")).unwrap() {
        let crate_dir = PathBuf::from("crates").join(entry.unwrap().file_name());
        for file in ["Cargo.toml", "src/main.rs"] {
            if repo.join(&crate_dir).join(file).is_file() {
                files.push(crate_dir.join(file));
            }
        }
    }
    for file in files {
        let to = dir.join(&file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(repo.join(&file), &to).unwrap();
    }
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn the_lint_names_every_fault() {
    let dir = tempfile::tempdir().unwrap();
    copy_of_repo(dir.path());
    let Some((code, text)) = lint(dir.path()) else {
        return;
    };
    assert_eq!(code, 0, "the unchanged copy must pass:\n{text}");

    let dockerfile = dir.path().join("Dockerfile");
    let compose = dir.path().join("docker-compose.yml");
    // A Dockerfile habit hadolint objects to, and a port the image no longer exposes.
    edit(
        &dockerfile,
        "ARG UID=10001\n",
        "ARG UID=10001\nRUN apt-get update && apt-get install -y curl\n",
    );
    edit(
        &dockerfile,
        "EXPOSE 8080 9000 8081 8082",
        "EXPOSE 8080 8081 8082",
    );
    // Not Compose: a misspelt top-level key.
    edit(&compose, "\nvolumes:\n", "\nvolume:\n");
    // An analyzer dialling a port nothing listens on.
    edit(
        &compose,
        "\"logdist:8081\", \"--weight\", \"2\"",
        "\"logdist:8083\", \"--weight\", \"2\"",
    );
    // The admin API published on every address of the host.
    edit(&compose, "\"127.0.0.1:8082:8082\"", "\"8082:8082\"");

    let (code, text) = lint(dir.path()).expect("it ran before");
    assert_eq!(code, 1, "{text}");
    for fault in [
        "FAIL  hadolint",
        "DL3008",
        "FAIL  schema: docker-compose.yml at (top level)",
        "FAIL  compose: analyzer-2 (analyzer) dials logdist:8083",
        "FAIL  compose: logdist publishes 8082:8082 on every address",
        "FAIL  compose config: Docker Compose refuses docker-compose.yml",
        "FAIL  Dockerfile: EXPOSE is every port of configs/docker.toml",
        "FAIL  compose: logdist's published port 9000 is EXPOSEd by the image",
    ] {
        assert!(text.contains(fault), "no {fault:?} in:\n{text}");
    }
}

#[test]
fn scripts_are_shellcheck_clean() {
    let have = Command::new("shellcheck")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        assert!(
            !required(),
            "LOGDIST_REQUIRE_CONTAINER_LINT=1 but shellcheck is missing"
        );
        eprintln!("shellcheck not found (apt-get install shellcheck): skipped");
        return;
    }
    let repo = repo();
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(repo.join("scripts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    scripts.sort();
    scripts.push(repo.join(".ci/run"));
    assert!(scripts.len() >= 4, "{scripts:?}");
    let out = run_bounded(
        Command::new("shellcheck").args(&scripts),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "shellcheck:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
