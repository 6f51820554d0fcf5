//! `configs/secure.toml` refers to the files `scripts/gen-certs.sh` makes,
//! and its client-side TLS tables (`[[analyzers.static]] tls`) are valid
//! `TlsClientSettings` that build a client from such files. (The server-side
//! keys are checked by the distributor's own config tests.)

use std::path::{Path, PathBuf};

use logdist_net::test_pki::TestPki;
use logdist_net::{TlsClient, TlsClientSettings, TlsNames};

const GEN_CERTS_FILES: [&str; 6] = [
    "ca.pem",
    "ca-key.pem",
    "server.pem",
    "server-key.pem",
    "client.pem",
    "client-key.pem",
];

fn secure_toml() -> toml::Table {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/secure.toml");
    toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every string value ending in `.pem`, with its key path.
fn pem_paths(value: &toml::Value, at: String, out: &mut Vec<(String, String)>) {
    match value {
        toml::Value::String(s) if s.ends_with(".pem") => out.push((at, s.clone())),
        toml::Value::Table(t) => {
            for (k, v) in t {
                pem_paths(v, format!("{at}.{k}"), out);
            }
        }
        toml::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                pem_paths(v, format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn secure_config_uses_gen_certs_files_and_valid_client_tables() {
    let config = secure_toml();
    let mut paths = Vec::new();
    pem_paths(
        &toml::Value::Table(config.clone()),
        String::new(),
        &mut paths,
    );
    assert!(paths.len() >= 10, "{paths:?}");
    for (key, path) in &paths {
        let name = path.strip_prefix("certs/").unwrap_or_else(|| {
            panic!("{key} = {path:?} is not under certs/ (where gen-certs.sh writes)")
        });
        assert!(GEN_CERTS_FILES.contains(&name), "{key} = {path:?}");
        assert_ne!(
            name, "ca-key.pem",
            "{key}: the CA key stays off the servers"
        );
    }
    // TLS on every listener, mutual on the emitter and analyzer listeners.
    for (i, listener) in config["listeners"].as_array().unwrap().iter().enumerate() {
        let tls = listener["tls"].as_table().unwrap();
        for key in ["cert", "key", "client_ca"] {
            assert!(tls.contains_key(key), "listeners[{i}].tls.{key}");
        }
    }
    assert!(config["analyzers"]["tls"].get("client_ca").is_some());
    assert!(config["admin"].get("tls").is_some());

    // The static analyzers' tables build a client from gen-certs-named files.
    let dir = tempfile::tempdir().unwrap();
    TestPki::generate(&["analyzer-1"])
        .write_to(&dir.path().join("certs"))
        .unwrap();
    let statics = config["analyzers"]["static"].as_array().unwrap();
    assert!(!statics.is_empty());
    for (i, analyzer) in statics.iter().enumerate() {
        let mut settings: TlsClientSettings = analyzer["tls"].clone().try_into().unwrap();
        assert!(settings.ca.is_some() && settings.server_name.is_some());
        let rebase = |p: &mut Option<PathBuf>| {
            if let Some(p) = p {
                *p = dir.path().join(&*p);
            }
        };
        rebase(&mut settings.ca);
        rebase(&mut settings.cert);
        rebase(&mut settings.key);
        let names = TlsNames::config(&format!("analyzers.static[{i}].tls"));
        TlsClient::new(&settings, &names).unwrap_or_else(|e| panic!("{e}"));
    }
}
