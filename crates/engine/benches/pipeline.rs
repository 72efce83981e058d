//! Single-core throughput of the backup hot path, stage by stage and
//! together: chunk (FastCDC, the default sizes of a new repository) →
//! hash (keyed BLAKE3) → compress (zstd at the default level) → seal
//! (XChaCha20-Poly1305). Twice the combined figure is the two-core ceiling
//! a backup is measured against (see bench/results.md).
//!
//! `cargo bench -p cairn-engine --bench pipeline`

use cairn_chunker::{Cutter, Params};
use cairn_crypto::{DedupKey, SealKey};
use cairn_format::Id;
use cairn_format::blob::BlobKind;
use cairn_repo::BlobSealer;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// 32 MiB of data shaped like a real home directory: half incompressible
/// (media, archives), half text-like that zstd shrinks about 3x.
fn corpus() -> Vec<u8> {
    let n = 32 << 20;
    let mut v = Vec::with_capacity(n);
    let mut x: u64 = 0x243F6A8885A308D3;
    let words: Vec<&[u8]> = [
        &b"backup "[..],
        b"restore ",
        b"snapshot ",
        b"the ",
        b"of ",
        b"and ",
        b"chunk ",
        b"repository ",
        b"error: ",
        b"file ",
        b"\n",
        b"2026-11-24 ",
        b"INFO ",
        b"user ",
    ]
    .to_vec();
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if (v.len() / (1 << 20)) % 2 == 0 {
            v.extend_from_slice(&x.to_le_bytes());
        } else {
            v.extend_from_slice(words[(x % words.len() as u64) as usize]);
        }
    }
    v.truncate(n);
    v
}

fn bench(c: &mut Criterion) {
    let data = corpus();
    let dedup = DedupKey::from_bytes([7; 32]);
    let (min, avg, max) = cairn_repo::init_options().chunk;
    let params = Params {
        min: min as usize,
        avg: avg as usize,
        max: max as usize,
    };
    let cutter = Cutter::new(params, dedup.chunker_seed());
    let lens = cutter.split(&data);
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("chunk", |b| b.iter(|| cutter.split(&data).len()));
    // The chunker as a backup drives it: reading a stream into its buffer.
    // The buffer is reused across files, as in a backup.
    let mut buf = Vec::new();
    g.bench_function("chunk-stream", |b| {
        b.iter(|| {
            let mut s = cairn_chunker::StreamChunker::with_buffer(
                &cutter,
                &data[..],
                std::mem::take(&mut buf),
            );
            let mut n = 0;
            while let Some(c) = s.next_chunk().expect("read") {
                n += c.len();
            }
            buf = s.into_parts().1;
            n
        })
    });
    g.bench_function("hash", |b| {
        b.iter(|| {
            let mut off = 0;
            for &n in &lens {
                std::hint::black_box(dedup.id(&data[off..off + n]));
                off += n;
            }
        })
    });
    let mut sealer = BlobSealer::new(SealKey::from_bytes([9; 32]));
    g.bench_function("compress+seal", |b| {
        b.iter(|| {
            let mut off = 0;
            for &n in &lens {
                let chunk = &data[off..off + n];
                std::hint::black_box(
                    sealer
                        .seal(BlobKind::Chunk, Id([0; 32]), Vec::new(), chunk)
                        .expect("seal"),
                );
                off += n;
            }
        })
    });
    g.bench_function("all", |b| {
        b.iter(|| {
            let mut off = 0;
            for n in cutter.split(&data) {
                let chunk = &data[off..off + n];
                let id = Id(dedup.id(chunk));
                std::hint::black_box(
                    sealer
                        .seal(BlobKind::Chunk, id, Vec::new(), chunk)
                        .expect("seal"),
                );
                off += n;
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
