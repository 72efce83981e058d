#![no_main]
//! Trees come from packs a put-only source wrote: any bytes must decode to
//! a valid tree or an error, and a decoded tree must re-encode losslessly.
use cairn_format::tree::Tree;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = Tree::decode(data) {
        let again = Tree::decode(&t.encode()).expect("re-encoded tree decodes");
        assert_eq!(again, t);
    }
});
