#![no_main]
//! Pack trailers and blob records, as read from untrusted packs.
use cairn_format::blob::decode_record;
use cairn_format::pack::decode_pack_trailer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = decode_pack_trailer(data) {
        // The decoder checked that the records tile the pack, so every
        // entry's slice exists; and varints are canonical, so the tail
        // re-encodes to exactly the bytes it came from.
        let tail = t.encode_tail();
        assert!(data.ends_with(&tail), "trailer does not re-encode to its bytes");
        for e in &t.entries {
            let start = usize::try_from(e.offset).expect("offset fits");
            let rec = &data[start..start + e.length as usize];
            if let Ok(r) = decode_record(rec) {
                assert_eq!(r.header.encode_record(r.sealed), rec);
            }
        }
    }
    if let Ok(r) = decode_record(data) {
        assert_eq!(r.header.encode_record(r.sealed), data);
    }
});
