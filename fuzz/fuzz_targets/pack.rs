#![no_main]
//! Pack trailers and blob records, as read from untrusted packs.
use cairn_format::blob::decode_record;
use cairn_format::pack::decode_pack_trailer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = decode_pack_trailer(data) {
        let _ = t.check_layout(data.len() as u64);
    }
    if let Ok(r) = decode_record(data) {
        assert_eq!(r.header.encode_record(r.sealed), data);
    }
});
