//! The CPU part of verifying a payment — decode the header, match the offer, hash the
//! EIP-712 message, recover the signer — against the raw libsecp256k1 recovery it contains.
//!
//! Input: a real payment captured from the official `@x402/fetch` 2.27 client
//! (`crates/x402/tests/fixtures/v2-base.json`). Target: `verify_cpu` within 1.2× of
//! `libsecp256k1_recover` measured in the same run. After criterion's report, the binary
//! prints the ratio from an interleaved measurement of both.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use alloy_primitives::{B256, Signature};
use criterion::Criterion;
use secp256k1::SECP256K1;
use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use tollgate_verifier::{PendingSignature, VerifierConfig, check_offline};
use tollgate_x402::{PAYMENT_HEADER_BYTES_MAX, PaymentPayload, find_offer, v2};

const FIXTURE: &str = include_str!("../../x402/tests/fixtures/v2-base.json");

struct Input {
    header: Vec<u8>,
    offers: Vec<v2::PaymentRequirements>,
    now_unix_s: u64,
    digest: B256,
    compact: [u8; 64],
    recid: RecoveryId,
    alloy_sig: Signature,
}

fn input() -> Input {
    let f: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
    let header = f["paymentHeaderRaw"].as_str().unwrap().as_bytes().to_vec();
    let challenge: v2::PaymentRequired = serde_json::from_value(f["challenge"]["json"].clone()).unwrap();
    let now_unix_s = f["signedAtUnixS"].as_f64().unwrap() as u64;
    let payment = PaymentPayload::from_header(&header, PAYMENT_HEADER_BYTES_MAX).unwrap();
    let offer = find_offer(&challenge.accepts, &payment).unwrap();
    let checked = check_offline(offer, &payment, now_unix_s, &VerifierConfig::default()).unwrap();
    assert!(matches!(checked.signature, PendingSignature::Verified(_)), "fixture signature must recover");
    let sig = &payment.exact().signature;
    let mut compact = [0u8; 64];
    compact.copy_from_slice(&sig[..64]);
    let recid = RecoveryId::try_from(i32::from(sig[64] - 27)).unwrap();
    let alloy_sig = Signature::try_from(sig.as_ref()).unwrap();
    Input { header, offers: challenge.accepts, now_unix_s, digest: checked.digest, compact, recid, alloy_sig }
}

fn raw_recover(i: &Input) -> secp256k1::PublicKey {
    let sig = RecoverableSignature::from_compact(&i.compact, i.recid).unwrap();
    SECP256K1.recover_ecdsa(secp256k1::Message::from_digest(i.digest.0), &sig).unwrap()
}

fn full(i: &Input, config: &VerifierConfig) -> B256 {
    let payment = PaymentPayload::from_header(&i.header, PAYMENT_HEADER_BYTES_MAX).unwrap();
    let offer = find_offer(&i.offers, &payment).unwrap();
    check_offline(offer, &payment, i.now_unix_s, config).unwrap().digest
}

fn bench(c: &mut Criterion, i: &Input) {
    let config = VerifierConfig::default();
    let mut g = c.benchmark_group("verify");
    g.bench_function("libsecp256k1_recover", |b| b.iter(|| raw_recover(black_box(i))));
    g.bench_function("verify_cpu", |b| b.iter(|| full(black_box(i), &config)));
    g.bench_function("k256_recover_for_reference", |b| {
        b.iter(|| black_box(&i.alloy_sig).recover_address_from_prehash(black_box(&i.digest)).unwrap())
    });
    g.finish();
}

/// Median of `rounds` timings of `batch` calls each, interleaving the two functions so
/// that machine noise hits both alike.
fn interleaved_ratio(i: &Input) -> (f64, f64) {
    let config = VerifierConfig::default();
    let (rounds, batch) = (201, 200);
    let mut raw = Vec::with_capacity(rounds);
    let mut ours = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..batch {
            black_box(raw_recover(black_box(i)));
        }
        raw.push(t.elapsed());
        let t = Instant::now();
        for _ in 0..batch {
            black_box(full(black_box(i), &config));
        }
        ours.push(t.elapsed());
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e6 / batch as f64
    };
    (median(&mut raw), median(&mut ours))
}

fn main() {
    let i = input();
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, &i);
    c.final_summary();
    let (raw_us, ours_us) = interleaved_ratio(&i);
    println!(
        "interleaved medians: libsecp256k1_recover {raw_us:.2} µs, verify_cpu {ours_us:.2} µs, ratio {:.3} (target <= 1.2)",
        ours_us / raw_us
    );
}
