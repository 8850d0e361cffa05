//! EIP-712 digests of EIP-3009 messages, computed with fixed buffers.
//!
//! This is the hot path of every paid request, so it hashes exactly the bytes the standard
//! prescribes without going through a generic encoder. The tests cross-check it against
//! signatures made by alloy's generic EIP-712 implementation and by the official x402
//! clients (viem).

use alloy_primitives::{Address, B256, U256, b256, keccak256};

/// `keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")`.
pub const DOMAIN_TYPEHASH: B256 = b256!("8b73c3c69bb8fe3d512ecc4cf759cc79239f7b179b0ffacaa9a75d522b39400f");

/// `keccak256("TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)")`.
pub const TRANSFER_WITH_AUTHORIZATION_TYPEHASH: B256 =
    b256!("7c7c6cdb67a18743f49ec6fa9b35f50d52ed05cbed4cc592e13b44501c1a2267");

/// `keccak256("CancelAuthorization(address authorizer,bytes32 nonce)")`.
pub const CANCEL_AUTHORIZATION_TYPEHASH: B256 =
    b256!("158b0a9edf7a828aad02f63cd515c68ef2f50ba807396f6d12842833a1597429");

/// (name, version, chain id, contract) and their separator.
type MemoEntry = (String, String, u64, Address, B256);

/// The EIP-712 domain of a token: `name`, `version`, chain id and the token address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenDomain<'a> {
    /// EIP-712 `name` (USDC on Base: "USD Coin").
    pub name: &'a str,
    /// EIP-712 `version` ("2").
    pub version: &'a str,
    /// The chain id the token runs on.
    pub chain_id: u64,
    /// The token contract.
    pub verifying_contract: Address,
}

impl TokenDomain<'_> {
    /// The domain separator, remembered per thread for the last domain seen: a gateway
    /// serves a handful of tokens, and this saves three of the five hashes per payment.
    pub fn separator_memo(&self) -> B256 {
        thread_local! {
            static LAST: std::cell::RefCell<Option<MemoEntry>> = const { std::cell::RefCell::new(None) };
        }
        LAST.with(|last| {
            let mut last = last.borrow_mut();
            if let Some((name, version, chain_id, contract, sep)) = last.as_ref()
                && name == self.name
                && version == self.version
                && *chain_id == self.chain_id
                && *contract == self.verifying_contract
            {
                return *sep;
            }
            let sep = self.separator();
            *last = Some((self.name.to_owned(), self.version.to_owned(), self.chain_id, self.verifying_contract, sep));
            sep
        })
    }

    /// The domain separator.
    pub fn separator(&self) -> B256 {
        let mut buf = [0u8; 160];
        let (typehash, rest) = buf.split_at_mut(32);
        typehash.copy_from_slice(DOMAIN_TYPEHASH.as_slice());
        let (name, rest) = rest.split_at_mut(32);
        name.copy_from_slice(keccak256(self.name.as_bytes()).as_slice());
        let (version, rest) = rest.split_at_mut(32);
        version.copy_from_slice(keccak256(self.version.as_bytes()).as_slice());
        let (chain, contract) = rest.split_at_mut(32);
        chain.copy_from_slice(&U256::from(self.chain_id).to_be_bytes::<32>());
        write_address(contract, self.verifying_contract);
        keccak256(buf)
    }
}

/// The fields of a `TransferWithAuthorization` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferAuthorization {
    /// Payer.
    pub from: Address,
    /// Payee.
    pub to: Address,
    /// Amount.
    pub value: U256,
    /// Valid strictly after this unix time.
    pub valid_after: U256,
    /// Valid strictly before this unix time.
    pub valid_before: U256,
    /// Single-use nonce.
    pub nonce: B256,
}

impl TransferAuthorization {
    /// `hashStruct(message)`.
    pub fn struct_hash(&self) -> B256 {
        let mut buf = [0u8; 224];
        let words: [[u8; 32]; 7] = [
            TRANSFER_WITH_AUTHORIZATION_TYPEHASH.0,
            address_word(self.from),
            address_word(self.to),
            self.value.to_be_bytes::<32>(),
            self.valid_after.to_be_bytes::<32>(),
            self.valid_before.to_be_bytes::<32>(),
            self.nonce.0,
        ];
        for (chunk, word) in buf.chunks_exact_mut(32).zip(words.iter()) {
            chunk.copy_from_slice(word);
        }
        keccak256(buf)
    }

    /// The digest the payer signs: `keccak256(0x1901 ‖ domainSeparator ‖ hashStruct)`.
    pub fn signing_hash(&self, domain_separator: B256) -> B256 {
        signing_hash(domain_separator, self.struct_hash())
    }
}

/// `keccak256(0x1901 ‖ domain_separator ‖ struct_hash)`.
pub fn signing_hash(domain_separator: B256, struct_hash: B256) -> B256 {
    let mut buf = [0u8; 66];
    let (prefix, rest) = buf.split_at_mut(2);
    prefix.copy_from_slice(&[0x19, 0x01]);
    let (sep, hash) = rest.split_at_mut(32);
    sep.copy_from_slice(domain_separator.as_slice());
    hash.copy_from_slice(struct_hash.as_slice());
    keccak256(buf)
}

fn address_word(a: Address) -> [u8; 32] {
    let mut w = [0u8; 32];
    write_address(&mut w, a);
    w
}

fn write_address(word: &mut [u8], a: Address) {
    if let Some(tail) = word.get_mut(12..32) {
        tail.copy_from_slice(a.as_slice());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the typehash constants are the keccak of their type strings.
    #[test]
    fn typehashes_match_type_strings() {
        assert_eq!(
            keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
            DOMAIN_TYPEHASH
        );
        assert_eq!(
            keccak256(
                "TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
            ),
            TRANSFER_WITH_AUTHORIZATION_TYPEHASH
        );
        assert_eq!(keccak256("CancelAuthorization(address authorizer,bytes32 nonce)"), CANCEL_AUTHORIZATION_TYPEHASH);
    }

    // Goal: the domain separator equals alloy's generic EIP-712 implementation.
    #[test]
    fn separator_matches_alloy() {
        let contract = alloy_primitives::address!("833589fCD6eDb6E08f4c7C32D4f71b54bdA02913");
        let ours = TokenDomain { name: "USD Coin", version: "2", chain_id: 8453, verifying_contract: contract };
        let alloys = alloy_sol_types::eip712_domain! {
            name: "USD Coin", version: "2", chain_id: 8453, verifying_contract: contract,
        };
        assert_eq!(ours.separator(), alloys.separator());
        assert_eq!(ours.separator_memo(), alloys.separator());
        let other = TokenDomain { name: "USDC", ..ours.clone() };
        assert_ne!(other.separator_memo(), alloys.separator(), "the memo must not return a stale domain");
        assert_eq!(ours.separator_memo(), alloys.separator());
    }
}
