//! The source networks a listener accepts connections from (`allow`).

use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::{ConfigError, network};

/// Networks a peer's address must be in; `None` lets any source in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList(Option<Vec<IpNet>>);

impl AllowList {
    /// Any source address.
    pub fn any() -> Self {
        AllowList(None)
    }

    /// The `allow` list at `key` (validated by [`crate::config`] already,
    /// checked again here).
    pub fn from_config(key: &str, allow: Option<&[String]>) -> Result<Self, ConfigError> {
        let Some(entries) = allow else {
            return Ok(AllowList::any());
        };
        let networks = entries
            .iter()
            .map(|entry| network(entry).map_err(|problem| ConfigError::invalid(key, problem)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AllowList(Some(networks)))
    }

    /// Whether a connection from `ip` may go on. An IPv4 client of a
    /// listener on an IPv6 address shows as `::ffff:a.b.c.d`: it is matched
    /// as the IPv4 address it is.
    pub fn allows(&self, ip: IpAddr) -> bool {
        match &self.0 {
            None => true,
            Some(networks) => {
                let ip = ip.to_canonical();
                networks.iter().any(|net| net.contains(&ip))
            }
        }
    }

    /// Whether only loopback sources can get in.
    pub fn loopback_only(&self) -> bool {
        match &self.0 {
            None => false,
            Some(networks) => networks.iter().all(|net| match net {
                IpNet::V4(v4) => v4.network().is_loopback() && v4.prefix_len() >= 8,
                IpNet::V6(v6) => v6.prefix_len() == 128 && v6.addr().is_loopback(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        AllowList::from_config("allow", Some(&entries)).unwrap()
    }

    #[test]
    fn networks_bare_addresses_and_mapped_v4() {
        let allow = list(&["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]);
        assert!(allow.allows("10.1.2.3".parse().unwrap()));
        assert!(allow.allows("192.0.2.7".parse().unwrap()));
        assert!(!allow.allows("192.0.2.8".parse().unwrap()));
        assert!(!allow.allows("127.0.0.1".parse().unwrap()));
        assert!(allow.allows("2001:db8::1".parse().unwrap()));
        assert!(allow.allows("::ffff:10.9.9.9".parse().unwrap()));
        assert!(!allow.allows("::ffff:11.0.0.1".parse().unwrap()));
        assert!(AllowList::any().allows("203.0.113.9".parse().unwrap()));

        let err = AllowList::from_config("analyzers.allow", Some(&["10.0.0.0/40".to_string()]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("analyzers.allow"), "{err}");
    }

    #[test]
    fn loopback_only() {
        assert!(list(&["127.0.0.1", "::1"]).loopback_only());
        assert!(!list(&["127.0.0.1", "10.0.0.0/8"]).loopback_only());
        assert!(!AllowList::any().loopback_only());
    }
}
