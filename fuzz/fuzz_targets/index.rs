#![no_main]
//! Index files.
use cairn_format::index::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = decode(data) {
        assert_eq!(decode(&encode(&p)).expect("index"), p);
    }
});
