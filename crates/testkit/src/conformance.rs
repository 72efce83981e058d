//! One set of checks every storage backend passes: local, memory, the
//! box over HTTPS and SSH, S3 on Garage. What the layers above rely on is
//! stated once, here, and a backend that differs fails by name.

use cairn_storage::{Error, Kind, Storage};

/// How hard to push a backend.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Objects to list at once (S3 lists 1000 a page: more than that
    /// proves pagination).
    pub many: usize,
    /// Size of the staged file of [`put_file`]: above a multipart
    /// threshold to prove multipart uploads.
    pub big: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            many: 50,
            big: 3 << 20,
        }
    }
}

/// Runs every check against `st`, which may hold other objects (none of
/// them is touched).
pub fn run(st: &dyn Storage, o: Options) {
    let tag = tag();
    create_only(st, &tag);
    content_addressed(st, &tag);
    ranges(st, &tag);
    missing(st, &tag);
    names(st);
    list_and_delete(st, &tag, o.many);
    put_file(st, &tag, o.big);
}

fn tag() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    hex::encode(crate::pseudo(6, t as u64 ^ std::process::id() as u64))
}

/// Bytes unique to this run and `i`, and their content address (the box
/// checks that a pack's bytes hash to its name).
fn blob(tag: &str, i: usize, len: usize) -> (String, Vec<u8>) {
    let mut data = format!("{tag}-{i}-").into_bytes();
    data.extend(crate::pseudo(len.saturating_sub(data.len()), i as u64 + 1));
    data.truncate(len.max(1));
    (hex::encode(cairn_crypto::plain_hash(&data)), data)
}

/// Objects that are not content-addressed are never replaced.
pub fn create_only(st: &dyn Storage, tag: &str) {
    let name = format!("conf-{tag}");
    st.put(Kind::Key, &name, b"first").expect("put a key");
    assert_eq!(st.get(Kind::Key, &name).unwrap(), b"first");
    assert_eq!(st.size(Kind::Key, &name).unwrap(), 5);
    match st.put(Kind::Key, &name, b"second") {
        Err(Error::AlreadyExists { .. }) => {}
        other => panic!("{}: a second put of a key: {other:?}", st.location()),
    }
    assert_eq!(
        st.get(Kind::Key, &name).unwrap(),
        b"first",
        "{}: a key was replaced",
        st.location()
    );
    st.delete(Kind::Key, &name).unwrap();
}

/// A content-addressed object put again (a retried upload, two sources
/// with one chunk) is accepted.
pub fn content_addressed(st: &dyn Storage, tag: &str) {
    let (name, data) = blob(tag, 1, 1000);
    st.put(Kind::Pack, &name, &data).unwrap();
    st.put(Kind::Pack, &name, &data)
        .unwrap_or_else(|e| panic!("{}: a second put of a pack: {e}", st.location()));
    assert_eq!(st.get(Kind::Pack, &name).unwrap(), data);
    st.delete(Kind::Pack, &name).unwrap();
}

/// Range reads return exactly what was asked, or [`Error::Short`].
pub fn ranges(st: &dyn Storage, tag: &str) {
    let (name, data) = blob(tag, 2, 10_000);
    st.put(Kind::Pack, &name, &data).unwrap();
    assert_eq!(st.get_range(Kind::Pack, &name, 0, 10).unwrap(), &data[..10]);
    assert_eq!(
        st.get_range(Kind::Pack, &name, 9_990, 10).unwrap(),
        &data[9_990..]
    );
    assert_eq!(
        st.get_range(Kind::Pack, &name, 1234, 4321).unwrap(),
        &data[1234..5555]
    );
    assert!(st.get_range(Kind::Pack, &name, 5, 0).unwrap().is_empty());
    for (off, len) in [(9_995, 10), (10_000, 1), (20_000, 5)] {
        match cairn_storage::read_range(st, Kind::Pack, &name, off, len) {
            Err(Error::Short { .. }) => {}
            other => panic!(
                "{}: range {off}+{len} of 10000 bytes: {:?}",
                st.location(),
                other.map(|v| v.len())
            ),
        }
    }
    let mut buf = vec![7u8; 3];
    cairn_storage::read_exact_range(st, Kind::Pack, &name, 100, 50, &mut buf).unwrap();
    assert_eq!(buf, &data[100..150]);
    st.delete(Kind::Pack, &name).unwrap();
}

/// A missing object is [`Error::NotFound`] to every reader; deleting it
/// is not an error.
pub fn missing(st: &dyn Storage, tag: &str) {
    let (name, _) = blob(tag, 3, 10);
    for r in [
        st.get(Kind::Pack, &name).map(|_| ()),
        st.get_range(Kind::Pack, &name, 0, 1).map(|_| ()),
        st.size(Kind::Pack, &name).map(|_| ()),
    ] {
        match r {
            Err(e) if e.is_not_found() => {}
            other => panic!("{}: a missing pack: {other:?}", st.location()),
        }
    }
    st.delete(Kind::Pack, &name)
        .unwrap_or_else(|e| panic!("{}: deleting a missing pack: {e}", st.location()));
}

/// Names that could escape the layout are refused before any request.
pub fn names(st: &dyn Storage) {
    for bad in ["../config", "a/b", "", "UPPER", "x.tmp"] {
        assert!(
            st.get(Kind::Pack, bad).is_err(),
            "{}: read of {bad:?}",
            st.location()
        );
        assert!(
            st.put(Kind::Snapshot, bad, b"x").is_err(),
            "{}: write of {bad:?}",
            st.location()
        );
    }
}

/// Listing returns every object of a kind with its size, and only those.
pub fn list_and_delete(st: &dyn Storage, tag: &str, many: usize) {
    let blobs: Vec<(String, Vec<u8>)> = (0..many).map(|i| blob(tag, 100 + i, 40)).collect();
    let parts = blobs.len().div_ceil(8).max(1);
    std::thread::scope(|s| {
        for part in blobs.chunks(parts) {
            s.spawn(move || {
                for (n, d) in part {
                    st.put(Kind::Pack, n, d).unwrap();
                }
            });
        }
    });
    let key = format!("conf-list-{tag}");
    st.put(Kind::Key, &key, b"k").unwrap();
    let listed = st.list(Kind::Pack).unwrap();
    for (n, _) in &blobs {
        let o = listed
            .iter()
            .find(|o| &o.name == n)
            .unwrap_or_else(|| panic!("{}: {n} not listed of {many}", st.location()));
        assert_eq!(o.size, 40);
    }
    assert!(
        !listed.iter().any(|o| o.name == key),
        "{}: a key listed as a pack",
        st.location()
    );
    assert!(
        st.list(Kind::Key)
            .unwrap()
            .iter()
            .any(|o| o.name == key && o.size == 1),
        "{}: key not listed",
        st.location()
    );
    std::thread::scope(|s| {
        for part in blobs.chunks(parts) {
            s.spawn(move || {
                for (n, _) in part {
                    st.delete(Kind::Pack, n).unwrap();
                }
            });
        }
    });
    st.delete(Kind::Key, &key).unwrap();
    let listed = st.list(Kind::Pack).unwrap();
    assert!(
        !listed
            .iter()
            .any(|o| blobs.iter().any(|(n, _)| *n == o.name)),
        "{}: deleted objects still listed",
        st.location()
    );
}

/// A staged file is uploaded whole and consumed.
pub fn put_file(st: &dyn Storage, tag: &str, big: usize) {
    let (name, data) = blob(tag, 4, big);
    let staged = st.staging_dir().unwrap().join(format!("conf-{tag}.tmp"));
    std::fs::write(&staged, &data).unwrap();
    st.put_file(Kind::Pack, &name, &staged).unwrap();
    assert!(!staged.exists(), "{}: staged file left", st.location());
    assert_eq!(st.size(Kind::Pack, &name).unwrap(), big as u64);
    assert!(
        st.get(Kind::Pack, &name).unwrap() == data,
        "{}: big object differs",
        st.location()
    );
    st.delete(Kind::Pack, &name).unwrap();
}
