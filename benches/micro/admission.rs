//! Admission: decoding an envelope and checking it (format, chain, body,
//! signature), and Ed25519 verification one by one against `verify_batch`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use govchain_crypto::{KeyCache, PublicKey, Signature, verify_batch};
use govchain_exec::{check_envelope, check_envelope_with, decode_envelope, transaction_id};
use prost::Message as _;

use crate::fixtures::{CHAIN, PAYLOAD_BYTES_MAX, envelope, signer};

const BATCH_SIZES: [u64; 2] = [64, 256];

pub fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("admission");
    group.throughput(Throughput::Elements(1));
    let encoded = envelope(&signer(1), 1).encode_to_vec();
    group.bench_function("decode_and_check", |b| {
        b.iter(|| {
            let envelope = decode_envelope(black_box(&encoded)).expect("decodes");
            check_envelope(envelope, CHAIN, PAYLOAD_BYTES_MAX, |_, _| false).expect("checks")
        })
    });
    // What a backup pays for a transaction it already admitted: everything
    // but the signature.
    group.bench_function("decode_and_check_already_verified", |b| {
        b.iter(|| {
            let envelope = decode_envelope(black_box(&encoded)).expect("decodes");
            check_envelope(envelope, CHAIN, PAYLOAD_BYTES_MAX, |_, _| true).expect("checks")
        })
    });
    // The same, with the signer's key already in the admission thread's
    // cache of parsed keys (a repeat signer): no point decompression.
    let mut keys = KeyCache::new(16);
    group.bench_function("decode_and_check_already_verified_cached_key", |b| {
        b.iter(|| {
            let envelope = decode_envelope(black_box(&encoded)).expect("decodes");
            let parse = |bytes: &[u8]| keys.parse(bytes);
            check_envelope_with(envelope, CHAIN, PAYLOAD_BYTES_MAX, |_, _| true, parse)
                .expect("checks")
        })
    });
    group.finish();

    let mut group = c.benchmark_group("verify");
    for size in BATCH_SIZES {
        let signed = Signed::new(size);
        let messages: Vec<&[u8]> = signed.messages.iter().map(|m| m.as_slice()).collect();
        group.throughput(Throughput::Elements(size));
        group.bench_with_input(BenchmarkId::new("single", size), &signed, |b, signed| {
            b.iter(|| {
                for ((message, signature), key) in
                    messages.iter().zip(&signed.signatures).zip(&signed.keys)
                {
                    key.verify(message, signature).expect("verifies");
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("batch", size), &signed, |b, signed| {
            b.iter(|| verify_batch(&messages, &signed.signatures, &signed.keys).expect("verifies"))
        });
    }
    group.finish();
}

/// `size` transaction ids with their signatures and keys, as a block of
/// envelopes from distinct signers gives them.
struct Signed {
    messages: Vec<Vec<u8>>,
    signatures: Vec<Signature>,
    keys: Vec<PublicKey>,
}

impl Signed {
    fn new(size: u64) -> Self {
        let mut signed = Signed {
            messages: Vec::new(),
            signatures: Vec::new(),
            keys: Vec::new(),
        };
        for index in 0..size {
            let key = signer(index);
            let envelope = envelope(&key, 1);
            let id = transaction_id(CHAIN, &envelope.signer, 1, &envelope.payload);
            signed.messages.push(id.to_vec());
            signed
                .signatures
                .push(Signature::from_slice(&envelope.signature).expect("64 bytes"));
            signed.keys.push(key.public_key());
        }
        signed
    }
}
