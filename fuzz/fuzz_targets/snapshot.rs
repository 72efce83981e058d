#![no_main]
//! Snapshot envelopes and bodies.
use cairn_format::snapshot::{Body, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = decode(data) {
        let mut bytes = f.envelope.encode_header();
        bytes.extend_from_slice(f.sealed_body);
        let again = decode(&bytes).expect("re-encoded envelope decodes");
        assert_eq!(again.envelope, f.envelope);
    }
    if let Ok(b) = Body::decode(data) {
        assert_eq!(Body::decode(&b.encode()).expect("body"), b);
    }
});
