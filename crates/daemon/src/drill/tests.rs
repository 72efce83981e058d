use super::*;

fn sample(n: u64, size: impl Fn(u64) -> u64, limits: Limits, seed: u64) -> Vec<u64> {
    let mut s = Sampler::new(limits, seed);
    for i in 0..n {
        s.offer(size(i), || i);
        assert!(s.heap.len() as u64 <= limits.files, "bounded by the sample");
    }
    s.finish().into_iter().map(|(_, i)| i).collect()
}

const ALL_BYTES: u64 = u64::MAX;

#[test]
fn the_sample_holds_at_most_files_items_and_builds_only_those() {
    let limits = Limits {
        files: 10,
        bytes: ALL_BYTES,
    };
    let picked = sample(10_000, |_| 1, limits, 7);
    assert_eq!(picked.len(), 10);
    let distinct: std::collections::BTreeSet<_> = picked.iter().collect();
    assert_eq!(distinct.len(), 10);
    // Fewer items than the sample: all of them.
    let mut few = sample(4, |_| 1, limits, 7);
    few.sort();
    assert_eq!(few, [0, 1, 2, 3]);
    // No sample asked for: nothing, and nothing built.
    let mut s = Sampler::new(Limits { files: 0, bytes: 9 }, 1);
    s.offer(1, || -> u64 { panic!("built an item nobody keeps") });
    assert!(s.finish().is_empty());
}

#[test]
fn the_sample_stays_within_the_byte_budget() {
    let limits = Limits {
        files: 50,
        bytes: 350,
    };
    for seed in 0..50 {
        let mut s = Sampler::new(limits, seed);
        for i in 0..200u64 {
            // Every tenth file is larger than the whole budget.
            let size = if i % 10 == 0 { 351 } else { 50 + i % 3 * 25 };
            s.offer(size, || i);
        }
        assert_eq!(s.too_large, 20);
        assert_eq!(s.offered, 180);
        let picked = s.finish();
        let total: u64 = picked.iter().map(|(size, _)| size).sum();
        assert!(total <= 350, "seed {seed}: {total} bytes");
        assert!(picked.len() >= 3, "seed {seed}: the budget is filled");
        assert!(picked.iter().all(|(_, i)| i % 10 != 0), "too large picked");
    }
}

#[test]
fn different_seeds_cover_different_files() {
    let limits = Limits {
        files: 10,
        bytes: ALL_BYTES,
    };
    let a = sample(100, |_| 1, limits, 1);
    let b = sample(100, |_| 1, limits, 2);
    assert_ne!(
        a.iter().collect::<std::collections::BTreeSet<_>>(),
        b.iter().collect::<std::collections::BTreeSet<_>>()
    );
    let mut covered = std::collections::BTreeSet::new();
    for seed in 0..40 {
        covered.extend(sample(100, |_| 1, limits, seed));
    }
    assert!(covered.len() >= 90, "40 drills covered {}", covered.len());
    assert_ne!(seed(), 0);
}

#[test]
fn every_file_is_equally_likely() {
    let limits = Limits {
        files: 10,
        bytes: ALL_BYTES,
    };
    let mut counts = [0u32; 100];
    for seed in 0..2000 {
        for i in sample(100, |_| 1, limits, seed) {
            counts[i as usize] += 1;
        }
    }
    // 200 expected each; the standard deviation is about 13.
    for (i, c) in counts.iter().enumerate() {
        assert!((140..=260).contains(c), "file {i} picked {c} times of 2000");
    }
}

#[test]
fn a_source_is_compared_only_while_it_is_as_the_snapshot_saw_it() {
    let d = tempfile::tempdir().unwrap();
    let (restored, source) = (d.path().join("restored"), d.path().join("source"));
    std::fs::write(&restored, b"hello world").unwrap();
    std::fs::write(&source, b"hello world").unwrap();
    let md = std::fs::metadata(&source).unwrap();
    let mtime = Time {
        sec: md.mtime(),
        nsec: md.mtime_nsec() as u32,
    };
    assert_eq!(compare(&restored, &source, 11, mtime), Compared::Identical);
    // Another size or mtime: changed since the snapshot, not compared.
    assert_eq!(compare(&restored, &source, 12, mtime), Compared::Changed);
    let older = Time {
        sec: mtime.sec - 5,
        nsec: 0,
    };
    assert_eq!(compare(&restored, &source, 11, older), Compared::Changed);
    assert_eq!(
        compare(&restored, &d.path().join("gone"), 11, mtime),
        Compared::Gone
    );
    // Same size and mtime, other bytes: the drill's reason to exist.
    std::fs::write(&source, b"hello wXrld").unwrap();
    let f = std::fs::File::options().write(true).open(&source).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::new(mtime.sec as u64, mtime.nsec))
        .unwrap();
    drop(f);
    match compare(&restored, &source, 11, mtime) {
        Compared::Differs(m) => assert!(m.contains("at byte 7"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn differences_are_placed_across_buffers() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    let mut data = vec![7u8; (1 << 20) + 100];
    std::fs::write(&a, &data).unwrap();
    std::fs::write(&b, &data).unwrap();
    assert_eq!(first_difference(&a, &b).unwrap(), None);
    data[(1 << 20) + 3] = 8;
    std::fs::write(&b, &data).unwrap();
    assert_eq!(
        first_difference(&a, &b).unwrap().as_deref(),
        Some("at byte 1048579")
    );
    data.pop();
    std::fs::write(&a, &data).unwrap();
    assert_eq!(
        first_difference(&a, &b).unwrap().as_deref(),
        Some("in length")
    );
}

#[test]
fn only_a_drill_that_restored_something_without_a_fault_proves_anything() {
    let none = Drilled {
        pattern: "laptop:*".into(),
        ..Drilled::default()
    };
    assert!(!none.proven());
    assert!(
        none.message()
            .contains("no snapshots in the groups matching laptop:*"),
        "{}",
        none.message()
    );
    let mut g = GroupDrill {
        group: "h:/src".into(),
        snapshot: "1234abcd".into(),
        host: "h".into(),
        here: true,
        files: 40,
        restored: 10,
        bytes: 10 << 10,
        identical: 8,
        changed: 2,
        ..GroupDrill::default()
    };
    let ok = Drilled {
        groups: vec![g.clone()],
        ..Drilled::default()
    };
    assert!(ok.proven());
    assert_eq!(
        ok.message(),
        "h:/src (snapshot 1234abcd): 10 of 40 files restored (10.0 KiB), 8 identical to the source, 2 skipped as changed since the snapshot"
    );
    g.fail("/src/a", "the restored file differs");
    let bad = Drilled {
        groups: vec![g],
        ..Drilled::default()
    };
    assert!(!bad.proven());
    assert!(
        bad.message().starts_with(
            "restore drill failed, 1 problem: group h:/src, snapshot 1234abcd: /src/a: the restored file differs; "
        ),
        "{}",
        bad.message()
    );
}
