#![no_main]
//! Config and key files: the first things read from a repository.
use cairn_format::config::Config;
use cairn_format::keyfile::{KeyFile, Secrets};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Config::decode(data) {
        assert_eq!(Config::decode(&c.encode()).expect("config"), c);
    }
    if let Ok(k) = KeyFile::decode(data) {
        assert_eq!(KeyFile::decode(&k.encode()).expect("key file"), k);
    }
    let _ = Secrets::decode(data);
});
