//! The stored spelling of the ledger's values, as sqlx `Type`/`Encode`/`Decode` impls, so that
//! a repository binds and reads typed values instead of formatting and parsing by hand.
//!
//! - [`Hex`]: an `Address` or `B256` as lowercase `0x`-hex TEXT. One spelling per value, so
//!   the UNIQUE constraint compares like with like (the schema's CHECKs insist on it).
//! - [`Unsigned`]: a `u64` (a unix-second time, a block number, a version, a count) in a
//!   signed 64-bit column; built with a range check ([`MeteringError::OutOfRange`]) before any
//!   statement runs, and refused on read when negative.
//! - [`AtomicAmount`] (BIGINT, positive), [`EntryId`], [`EntryState`] and [`SettlementMode`]
//!   (TEXT) encode as themselves.
//!
//! A stored value that does not decode is a corrupt row: `db` maps sqlx's decode errors to
//! [`MeteringError::Corrupt`] naming the column. Both engines use the same impls (generic over
//! the database, delegating to `i64` and `&str`), so the bound parameter types are exactly the
//! ones plain `i64`/`String` binds had.
//!
//! Must not: know a table or a query.

use std::fmt;
use std::str::FromStr;

use alloy_primitives::{Address, B256};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Database, Decode, Encode, Type};

use crate::MeteringError;
use crate::types::{AtomicAmount, EntryId, EntryState, SettlementMode};

/// An address or hash stored as lowercase `0x`-hex TEXT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hex<T>(pub T);

/// What [`Hex`] can hold: a fixed-size byte string with alloy's `0x` parsing and lowercase
/// `{:#x}` formatting.
pub(crate) trait HexValue: Copy + FromStr + fmt::LowerHex {}
impl HexValue for Address {}
impl HexValue for B256 {}

impl<T: HexValue> Hex<T> {
    /// The stored text (`0x` and lowercase hex digits).
    pub(crate) fn text(&self) -> String {
        format!("{:#x}", self.0)
    }
}

/// A non-negative integer in a signed 64-bit column: unix-second times, block numbers, log
/// indexes, versions and counts. The value is in `0..=i64::MAX` by construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Unsigned(i64);

impl Unsigned {
    /// `value` if the database can store it, else [`MeteringError::OutOfRange`] naming `field`.
    pub(crate) fn new(field: &'static str, value: u64) -> Result<Unsigned, MeteringError> {
        i64::try_from(value).map(Unsigned).map_err(|_| MeteringError::OutOfRange { field, value: value.into() })
    }

    /// [`Unsigned::new`] on an optional value.
    pub(crate) fn opt(field: &'static str, value: Option<u64>) -> Result<Option<Unsigned>, MeteringError> {
        value.map(|v| Unsigned::new(field, v)).transpose()
    }

    /// A `u32` (a page size), which always fits.
    pub(crate) fn of_u32(value: u32) -> Unsigned {
        Unsigned(i64::from(value))
    }

    /// The value.
    pub(crate) fn get(self) -> u64 {
        self.0.unsigned_abs()
    }
}

/// Implements `Type`, `Encode` and `Decode` for a value stored through another type `$via`
/// (`i64` or `&str`): `$to` gives the stored form, `$from` parses it back.
macro_rules! stored_as {
    ($ty:ty, i64, |$v:ident| $to:expr, |$s:ident| $from:expr) => {
        impl<DB: Database> Type<DB> for $ty
        where
            i64: Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <i64 as Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <i64 as Type<DB>>::compatible(ty)
            }
        }
        impl<'q, DB: Database> Encode<'q, DB> for $ty
        where
            i64: Encode<'q, DB>,
        {
            fn encode_by_ref(&self, buf: &mut DB::ArgumentBuffer<'q>) -> Result<IsNull, BoxDynError> {
                let $v = self;
                <i64 as Encode<'q, DB>>::encode($to, buf)
            }
        }
        impl<'r, DB: Database> Decode<'r, DB> for $ty
        where
            i64: Decode<'r, DB>,
        {
            fn decode(value: DB::ValueRef<'r>) -> Result<Self, BoxDynError> {
                let $s: i64 = <i64 as Decode<'r, DB>>::decode(value)?;
                $from
            }
        }
    };
    ($ty:ty, text, |$v:ident| $to:expr, |$s:ident| $from:expr) => {
        impl<DB: Database> Type<DB> for $ty
        where
            String: Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <String as Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <String as Type<DB>>::compatible(ty)
            }
        }
        impl<'q, DB: Database> Encode<'q, DB> for $ty
        where
            String: Encode<'q, DB>,
        {
            fn encode_by_ref(&self, buf: &mut DB::ArgumentBuffer<'q>) -> Result<IsNull, BoxDynError> {
                let $v = self;
                <String as Encode<'q, DB>>::encode($to, buf)
            }
        }
        impl<'r, DB: Database> Decode<'r, DB> for $ty
        where
            &'r str: Decode<'r, DB>,
        {
            fn decode(value: DB::ValueRef<'r>) -> Result<Self, BoxDynError> {
                let $s: &str = <&'r str as Decode<'r, DB>>::decode(value)?;
                $from
            }
        }
    };
}

stored_as!(Unsigned, i64, |v| v.0, |n| {
    if n < 0 { Err(format!("negative value {n}").into()) } else { Ok(Unsigned(n)) }
});

stored_as!(AtomicAmount, i64, |v| v.to_i64(), |n| {
    u64::try_from(n).ok().and_then(AtomicAmount::new).ok_or_else(|| format!("{n} is not a positive amount").into())
});

stored_as!(Hex<Address>, text, |v| v.text(), |s| s.parse().map(Hex).map_err(|e| format!("{s:?}: {e}").into()));
stored_as!(Hex<B256>, text, |v| v.text(), |s| s.parse().map(Hex).map_err(|e| format!("{s:?}: {e}").into()));
stored_as!(EntryId, text, |v| v.as_str().to_owned(), |s| s.parse().map_err(|e: MeteringError| e.to_string().into()));
stored_as!(EntryState, text, |v| v.as_str().to_owned(), |s| s.parse().map_err(|e: MeteringError| e.to_string().into()));
stored_as!(SettlementMode, text, |v| v.as_str().to_owned(), |s| s
    .parse()
    .map_err(|e: MeteringError| e.to_string().into()));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase() {
        // Goal: addresses and hashes are stored in one lowercase 0x spelling.
        let address: Address = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913".parse().unwrap();
        assert_eq!(Hex(address).text(), "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913");
        assert_eq!(Hex(B256::repeat_byte(0xAB)).text(), format!("0x{}", "ab".repeat(32)));
    }

    #[test]
    fn unsigned_is_range_checked() {
        // Goal: a u64 past i64::MAX is refused, naming the field, before it reaches a statement.
        assert_eq!(Unsigned::new("t", 7).unwrap().get(), 7);
        assert_eq!(Unsigned::new("t", i64::MAX.unsigned_abs()).unwrap().get(), i64::MAX.unsigned_abs());
        let err = Unsigned::new("now_unix_s", u64::MAX).unwrap_err();
        assert!(matches!(err, MeteringError::OutOfRange { field: "now_unix_s", .. }), "{err:?}");
    }

    #[tokio::test]
    async fn values_round_trip_and_corrupt_ones_are_refused() {
        // Goal: every codec reads back what it wrote, and a negative time, a zero amount or a
        // malformed address in a row is refused on read (the row is corrupt), on SQLite.
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        let address: Address = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913".parse().unwrap();
        let row: (Hex<Address>, Hex<B256>, Unsigned, AtomicAmount, EntryState, SettlementMode, String) =
            sqlx::query_as("SELECT $1, $2, $3, $4, $5, $6, $1")
                .bind(Hex(address))
                .bind(Hex(B256::repeat_byte(0xAB)))
                .bind(Unsigned::new("t", 42).unwrap())
                .bind(AtomicAmount::new(5).unwrap())
                .bind(EntryState::SettleFailed)
                .bind(SettlementMode::Deferred)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(row.0, Hex(address));
        assert_eq!(row.1, Hex(B256::repeat_byte(0xAB)));
        assert_eq!(row.2.get(), 42);
        assert_eq!(row.3.get(), 5);
        assert_eq!(row.4, EntryState::SettleFailed);
        assert_eq!(row.5, SettlementMode::Deferred);
        assert_eq!(row.6, "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913");
        assert!(sqlx::query_scalar::<_, Unsigned>("SELECT -1").fetch_one(&pool).await.is_err());
        assert!(sqlx::query_scalar::<_, AtomicAmount>("SELECT 0").fetch_one(&pool).await.is_err());
        assert!(sqlx::query_scalar::<_, Hex<Address>>("SELECT '0x12'").fetch_one(&pool).await.is_err());
        assert!(sqlx::query_scalar::<_, EntryState>("SELECT 'paid'").fetch_one(&pool).await.is_err());
    }
}
