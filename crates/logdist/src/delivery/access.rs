//! Who may become an analyzer: the tokens a JSON hello must carry
//! (`analyzers.tokens`, `tokens_file`, `LOGDIST_ANALYZER_TOKENS`) and the
//! networks the tokenless seed handshake is accepted from
//! (`analyzers.seed_handshake_from`). A reload swaps the whole policy at once;
//! connections already established are not affected.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use ipnet::IpNet;

use crate::config::Secret;

/// Tokens kept only as SHA-256 digests, compared in constant time: the
/// comparison takes as long whichever token (or none) matches, and the
/// digests hide the tokens' lengths.
#[derive(Default)]
pub struct TokenSet {
    digests: Vec<[u8; 32]>,
}

impl TokenSet {
    pub fn new(tokens: &[Secret]) -> Self {
        TokenSet {
            digests: tokens
                .iter()
                .map(|t| digest(t.expose().as_bytes()))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `presented` is one of the tokens. Every token is compared,
    /// without an early exit.
    pub fn contains(&self, presented: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        let presented = digest(presented);
        let mut found = subtle::Choice::from(0);
        for token in &self.digests {
            found |= token.ct_eq(&presented);
        }
        found.into()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// What a new analyzer connection is checked against.
#[derive(Default)]
pub struct AccessPolicy {
    /// Empty: JSON hellos need no token.
    pub tokens: TokenSet,
    /// `None`: the seed handshake is accepted from any address.
    pub seed_from: Option<Vec<IpNet>>,
}

impl AccessPolicy {
    /// Whether a JSON hello with `token` may go on.
    pub fn hello_allowed(&self, token: Option<&str>) -> bool {
        if self.tokens.is_empty() {
            return true;
        }
        // A missing token is compared too, as the empty string, so it takes
        // as long as a wrong one.
        self.tokens.contains(token.unwrap_or("").as_bytes()) && token.is_some()
    }

    /// Whether a seed handshake from `ip` may go on.
    pub fn seed_allowed(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match &self.seed_from {
            None => true,
            Some(networks) => networks.iter().any(|net| net.contains(&ip)),
        }
    }
}

/// The current [`AccessPolicy`], swapped whole by a reload.
#[derive(Default)]
pub struct AnalyzerAccess(ArcSwap<AccessPolicy>);

impl AnalyzerAccess {
    pub fn new(policy: AccessPolicy) -> Self {
        AnalyzerAccess(ArcSwap::from_pointee(policy))
    }

    pub fn load(&self) -> Arc<AccessPolicy> {
        self.0.load_full()
    }

    pub fn set(&self, policy: AccessPolicy) {
        self.0.store(Arc::new(policy));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_exactly() {
        let policy = AccessPolicy {
            tokens: TokenSet::new(&[Secret::new("alpha"), Secret::new("beta")]),
            seed_from: None,
        };
        assert!(policy.hello_allowed(Some("alpha")));
        assert!(policy.hello_allowed(Some("beta")));
        for wrong in [Some("alph"), Some("alpha "), Some(""), Some("gamma"), None] {
            assert!(!policy.hello_allowed(wrong), "{wrong:?}");
        }
        assert!(AccessPolicy::default().hello_allowed(None));
        let empty = AccessPolicy {
            tokens: TokenSet::new(&[Secret::new("")]),
            seed_from: None,
        };
        assert!(!empty.hello_allowed(None), "no token never matches");
    }

    #[test]
    fn seed_networks() {
        let policy = AccessPolicy {
            tokens: TokenSet::default(),
            seed_from: Some(vec![
                "10.0.0.0/8".parse().unwrap(),
                "::1/128".parse().unwrap(),
            ]),
        };
        assert!(policy.seed_allowed("10.1.2.3".parse().unwrap()));
        assert!(policy.seed_allowed("::1".parse().unwrap()));
        assert!(!policy.seed_allowed("127.0.0.1".parse().unwrap()));
        // An IPv4 peer on a dual-stack socket shows as ::ffff:a.b.c.d.
        assert!(policy.seed_allowed("::ffff:10.0.0.1".parse().unwrap()));
        assert!(AccessPolicy::default().seed_allowed("192.0.2.1".parse().unwrap()));
        let none = AccessPolicy {
            tokens: TokenSet::default(),
            seed_from: Some(Vec::new()),
        };
        assert!(!none.seed_allowed("10.1.2.3".parse().unwrap()));
    }
}
