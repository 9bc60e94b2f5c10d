//! Unit and property tests of the read engine over the in-memory client.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::object::{MemoryClient, ObjectHeaders, ObjectId, Operation};

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// Small blocks and windows: a read of a few KiB takes several GETs and cache blocks.
pub(crate) fn small_config() -> ReadConfig {
    ReadConfig {
        initial_window: 1000,
        max_window: 16_000,
        part_size: 4000,
        min_block: 512,
        max_block: 4096,
        max_memory: 64_000,
        ..ReadConfig::default()
    }
}

fn engine(bytes: &[u8], config: ReadConfig) -> (Arc<ReadEngine>, MemoryClient) {
    let client = MemoryClient::new();
    client.insert("k", bytes.to_vec(), ObjectHeaders::default());
    (ReadEngine::new(Arc::new(client.clone()), config), client)
}

fn open(engine: &Arc<ReadEngine>, len: usize) -> ReadAhead {
    engine.open(ObjectId::new("k".into(), Some("\"v0\"".into())), len as u64)
}

#[tokio::test]
async fn sequential_reads_grow_the_window_and_use_few_gets() {
    let bytes = data(1 << 20);
    let config = ReadConfig {
        initial_window: 64 << 10,
        part_size: 256 << 10,
        ..ReadConfig::default()
    };
    let (engine, client) = engine(&bytes, config);
    let mut reader = open(&engine, bytes.len());
    let mut got = Vec::new();
    for offset in (0..bytes.len()).step_by(16 << 10) {
        got.extend_from_slice(&reader.read(offset as u64, 16 << 10).await.unwrap());
    }
    assert!(got == bytes);
    // 64 KiB, 128 KiB, then 256 KiB parts: about 1 MiB / 256 KiB GETs, not one per read.
    assert!(
        client.count(Operation::Get) <= 6,
        "{} GETs",
        client.count(Operation::Get)
    );
}

#[tokio::test]
async fn kernel_read_ahead_arriving_out_of_order_is_fetched_once() {
    const MIB: u64 = 1 << 20;
    let bytes = data(32 << 20);
    let (engine, client) = engine(&bytes, ReadConfig::default());
    let mut reader = open(&engine, bytes.len());
    // `cat` reads 1 MiB, and the kernel's read-ahead requests for the next 4 MiB race:
    // the one at 4 MiB lands first, before the window has grown that far.
    let order = [0, 4, 1, 3, 2].into_iter().chain(5..32);
    for mib in order {
        let got = reader.read(mib * MIB, MIB as u32).await.unwrap();
        let at = (mib * MIB) as usize;
        assert!(got[..] == bytes[at..at + MIB as usize], "at {mib} MiB");
    }
    assert_eq!(
        client.got_bytes(),
        bytes.len() as u64,
        "a byte fetched twice"
    );
}

#[tokio::test]
async fn parts_after_the_first_end_on_the_kernels_request_grid() {
    let bytes = data(40 << 20);
    let (engine, _client) = engine(&bytes, ReadConfig::default());
    let mut reader = open(&engine, bytes.len());
    let mut ends = Vec::new();
    for offset in (0..bytes.len() as u64).step_by(1 << 20) {
        let got = reader.read(offset, 1 << 20).await.unwrap();
        assert!(got[..] == bytes[offset as usize..][..got.len()]);
        ends.extend(reader.window.parts.iter().map(|p| p.range.end));
    }
    ends.sort_unstable();
    ends.dedup();
    assert_eq!(
        ends[0],
        ReadConfig::default().initial_window,
        "head: one small GET"
    );
    for end in &ends[1..] {
        assert!(
            end % ReadConfig::default().request_size == 0 || *end == bytes.len() as u64,
            "part ends at {end}"
        );
    }
}

#[tokio::test]
async fn a_random_4k_read_fetches_one_64k_block() {
    let bytes = data(8 << 20);
    let (engine, client) = engine(&bytes, ReadConfig::default());
    let mut reader = open(&engine, bytes.len());
    let got = reader.read(5_000_000, 4096).await.unwrap();
    assert_eq!(&got[..], &bytes[5_000_000..5_004_096]);
    assert_eq!(client.count(Operation::Get), 1);
    assert_eq!(
        engine.cache.bytes(),
        64 << 10,
        "bytes fetched for a 4 KiB read"
    );
    // A second handle of the same version hits the shared cache.
    let mut other = open(&engine, bytes.len());
    other.read(5_001_000, 100).await.unwrap();
    assert_eq!(client.count(Operation::Get), 1);
}

#[tokio::test]
async fn tail_of_a_large_file_costs_one_get() {
    let bytes = data(4 << 20);
    let (engine, client) = engine(&bytes, ReadConfig::default());
    let mut reader = open(&engine, bytes.len());
    let got = reader.read(bytes.len() as u64 - 100, 4096).await.unwrap();
    assert_eq!(&got[..], &bytes[bytes.len() - 100..]);
    assert_eq!(client.count(Operation::Get), 1);
}

#[tokio::test]
async fn replaced_object_fails_the_read() {
    let bytes = data(100_000);
    let (engine, client) = engine(&bytes, small_config());
    let mut reader = open(&engine, bytes.len());
    reader.read(0, 100).await.unwrap();
    client.insert("k", b"new".to_vec(), ObjectHeaders::default());
    let err = reader.read(50_000, 100).await.unwrap_err();
    assert!(
        matches!(
            err,
            ReadError::Object(ObjectError::PreconditionFailed { .. })
        ),
        "{err}"
    );
}

#[tokio::test]
async fn failed_requests_are_not_retried_twice() {
    let bytes = data(10_000);
    let (engine, client) = engine(&bytes, small_config());
    let mut reader = open(&engine, bytes.len());
    client.fail_next(1);
    assert!(
        reader.read(0, 100).await.is_err(),
        "a failed request is not retried here"
    );
    assert_eq!(&reader.read(0, 100).await.unwrap()[..], &bytes[..100]);
    client.fail_next(10);
    let mut other = open(&engine, bytes.len());
    assert!(
        other.read(9000, 100).await.is_err(),
        "fails after the last attempt"
    );
}

#[tokio::test]
async fn a_body_broken_mid_way_is_fetched_again() {
    let bytes = data(100_000);
    let (engine, client) = engine(&bytes, small_config());
    let mut reader = open(&engine, bytes.len());
    client.break_next_bodies(2);
    assert_eq!(&reader.read(0, 1000).await.unwrap()[..], &bytes[..1000]);
    client.break_next_bodies(10);
    let mut other = open(&engine, bytes.len());
    assert!(
        other.read(50_000, 100).await.is_err(),
        "gives up after the last attempt"
    );
}

#[tokio::test]
async fn budget_bounds_prefetch_and_is_returned() {
    let bytes = data(200_000);
    let (engine, _) = engine(&bytes, small_config());
    let full = engine.budget().available();
    let mut readers: Vec<ReadAhead> = (0..8).map(|_| open(&engine, bytes.len())).collect();
    for reader in readers.iter_mut() {
        for offset in (0..40_000).step_by(1000) {
            reader.read(offset, 1000).await.unwrap();
        }
    }
    let held: u64 = full - engine.budget().available();
    assert!(held <= full, "held {held} of {full}");
    drop(readers);
    assert_eq!(engine.budget().available(), full);
}

/// A read at an offset and length, against the engine and against a plain slice.
fn reads() -> impl Strategy<Value = Vec<(u64, u32)>> {
    let op = prop_oneof![
        // Sequential-ish: small steps from the previous read are built in `check`.
        (0u64..1, 1u32..3000).prop_map(|(_, len)| (u64::MAX, len)),
        (0u64..40_000, 1u32..9000),
    ];
    proptest::collection::vec(op, 1..60)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_sequence_of_reads_returns_the_reference_bytes(ops in reads(), len in 0usize..40_000) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let bytes = data(len);
        runtime.block_on(async {
            let (engine, _) = engine(&bytes, small_config());
            let mut reader = open(&engine, bytes.len());
            let mut next = 0u64;
            for (offset, n) in ops {
                let offset = if offset == u64::MAX { next } else { offset };
                let got = reader.read(offset, n).await.unwrap();
                let start = (offset as usize).min(len);
                let end = (offset as usize).saturating_add(n as usize).min(len);
                prop_assert_eq!(&got[..], &bytes[start..end.max(start)]);
                next = offset + got.len() as u64;
            }
            Ok(())
        })?;
    }
}
