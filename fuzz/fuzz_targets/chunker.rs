#![no_main]
//! The chunker must reassemble its input exactly and respect the maximum.
use cairn_chunker::{Cutter, Params, StreamChunker};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let c = Cutter::new(Params { min: 64, avg: 256, max: 1024 }, 42);
    let mut s = StreamChunker::new(&c, data);
    let mut out = Vec::new();
    while let Some(ch) = s.next_chunk().expect("read from slice") {
        assert!(ch.len() <= 1024 && !ch.is_empty());
        out.extend_from_slice(ch);
    }
    assert_eq!(out, data);
});
