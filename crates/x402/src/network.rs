//! Network ids: CAIP-2 `eip155:<chain id>` (v2) and the fixed v1 names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::WireError;

/// An EVM chain, identified by its chain id.
///
/// v2 writes it as CAIP-2 (`eip155:8453`); v1 clients only know a fixed table of names
/// (`base`, `base-sepolia`, ...). Parsing accepts either form; `Serialize` writes CAIP-2,
/// and v1 types use [`Network::v1_name`] through their own serde adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Network {
    /// EIP-155 chain id.
    pub chain_id: u64,
}

/// The v1 network names of the reference SDKs, with their chain ids.
const V1_NAMES: &[(&str, u64)] = &[
    ("base", 8453),
    ("base-sepolia", 84532),
    ("avalanche", 43114),
    ("avalanche-fuji", 43113),
    ("polygon", 137),
    ("polygon-amoy", 80002),
    ("sei", 1329),
    ("sei-testnet", 1328),
    ("iotex", 4689),
    ("peaq", 3338),
];

impl Network {
    /// Base mainnet.
    pub const BASE: Network = Network { chain_id: 8453 };
    /// Base Sepolia.
    pub const BASE_SEPOLIA: Network = Network { chain_id: 84532 };

    /// A network by chain id.
    pub const fn new(chain_id: u64) -> Self {
        Network { chain_id }
    }

    /// The CAIP-2 id, e.g. `eip155:8453`.
    pub fn caip2(self) -> String {
        format!("eip155:{}", self.chain_id)
    }

    /// The v1 name, when the v1 clients know this chain.
    pub fn v1_name(self) -> Option<&'static str> {
        V1_NAMES.iter().find(|(_, id)| *id == self.chain_id).map(|(name, _)| *name)
    }

    /// Parses a v1 network name only (`base`, `base-sepolia`, ...): what v1 objects carry.
    pub fn parse_v1_name(s: &str) -> Result<Self, WireError> {
        V1_NAMES
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, chain_id)| Network { chain_id: *chain_id })
            .ok_or_else(|| WireError::UnknownNetwork { network: s.chars().take(64).collect() })
    }

    /// Parses CAIP-2 (`eip155:` then a decimal chain id without leading zeros) or a v1 name.
    pub fn parse(s: &str) -> Result<Self, WireError> {
        let unknown = || WireError::UnknownNetwork { network: s.chars().take(64).collect() };
        if let Some(id) = s.strip_prefix("eip155:") {
            let canonical =
                !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && !(id.len() > 1 && id.starts_with('0'));
            return match id.parse::<u64>() {
                Ok(chain_id) if canonical && chain_id > 0 => Ok(Network { chain_id }),
                _ => Err(unknown()),
            };
        }
        V1_NAMES
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, chain_id)| Network { chain_id: *chain_id })
            .ok_or_else(unknown)
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "eip155:{}", self.chain_id)
    }
}

impl FromStr for Network {
    type Err = WireError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Network::parse(s)
    }
}

impl Serialize for Network {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Network::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// serde adapter writing a [`Network`] as its v1 name (v1 objects).
pub(crate) mod v1_name {
    use super::*;
    pub fn serialize<S: Serializer>(n: &Network, s: S) -> Result<S::Ok, S::Error> {
        match n.v1_name() {
            Some(name) => s.serialize_str(name),
            None => Err(serde::ser::Error::custom(WireError::NoV1Name { chain_id: n.chain_id })),
        }
    }
    /// v1 objects carry names only: a CAIP-2 id or an unknown name is refused.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Network, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Network::parse_v1_name(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: CAIP-2 and v1 names both parse; non-canonical or foreign ids do not.
    #[test]
    fn parses_caip2_and_v1_names() {
        assert_eq!(Network::parse("eip155:8453"), Ok(Network::BASE));
        assert_eq!(Network::parse("base"), Ok(Network::BASE));
        assert_eq!(Network::parse("base-sepolia"), Ok(Network::BASE_SEPOLIA));
        assert_eq!(Network::parse("eip155:31337"), Ok(Network::new(31337)));
        for bad in [
            "eip155:",
            "eip155:0",
            "eip155:08453",
            "eip155:+1",
            "eip155:99999999999999999999",
            "solana:abc",
            "Base",
            "eip155:1 ",
            "",
        ] {
            assert!(Network::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Network::BASE.v1_name(), Some("base"));
        assert_eq!(Network::new(31337).v1_name(), None);
        assert_eq!(Network::BASE.caip2(), "eip155:8453");
    }
}
