//! A put token's view of a real repository: everything a backup needs
//! works through it, and every destructive or prying request is refused,
//! logged with the token's name, and changes nothing.

use std::path::Path;
use std::sync::{Arc, Mutex};

use cairn_repo::{KeySource, Repo};
use cairn_storage::{Error, Kind, LocalStorage, Storage};

use cairn_server::guarded::{GuardedStorage, Refusal};
use cairn_server::policy::{GroupPattern, Role};

use cairn_testkit::{
    Setup, backup_as, check_read_data, fingerprint, forge, open_with_key, pseudo, put_token,
    restore_snapshot, setup,
};

#[test]
fn put_token_backs_up_but_cannot_harm_or_pry() {
    let Setup {
        dir,
        root,
        raw,
        owner: _,
        owner_key,
        put_key,
    } = setup();

    // The owner backs up another group directly.
    let other_src = dir.path().join("etc");
    std::fs::create_dir_all(&other_src).unwrap();
    std::fs::write(other_src.join("passwd"), b"root:x:0:0").unwrap();
    let other = backup_as(
        raw.clone(),
        &owner_key,
        &other_src,
        "server:/etc",
        &dir.path().join("c1"),
    );

    let refusals: Arc<Mutex<Vec<Refusal>>> = Arc::default();
    let log = refusals.clone();
    let guarded: Arc<dyn Storage> = Arc::new(GuardedStorage::new(
        raw.clone(),
        Role::Put(Some(GroupPattern::new("laptop:*").unwrap())),
        "laptop-token",
        Arc::new(move |r: &Refusal| log.lock().unwrap().push(r.clone())),
    ));

    // Backups through the put token work, twice (the second deduplicates).
    let src = dir.path().join("home");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("notes"), vec![7u8; 300_000]).unwrap();
    let cache = dir.path().join("c2");
    let mine = backup_as(guarded.clone(), &put_key, &src, "laptop:/home", &cache);
    std::fs::write(src.join("more"), b"more").unwrap();
    backup_as(guarded.clone(), &put_key, &src, "laptop:/home", &cache);
    assert!(
        refusals.lock().unwrap().is_empty(),
        "{:#?}",
        refusals.lock().unwrap()
    );

    let before = fingerprint(&root);
    let pack = raw.list(Kind::Pack).unwrap()[0].name.clone();
    let index = raw.list(Kind::Index).unwrap()[0].name.clone();
    let other_bytes = raw.get(Kind::Snapshot, &other).unwrap();
    let refused = |r: cairn_storage::Result<()>| {
        assert!(matches!(r, Err(Error::Refused(_))), "{r:?}");
    };
    for (k, n) in [
        (Kind::Pack, pack.as_str()),
        (Kind::Index, index.as_str()),
        (Kind::Snapshot, mine.as_str()),
        (Kind::Snapshot, other.as_str()),
    ] {
        refused(guarded.delete(k, n));
    }
    // Bytes under a name they do not hash to: an overwrite attempt.
    refused(guarded.put(Kind::Snapshot, &mine, b"CAIRNSN1 forged"));
    refused(guarded.put(Kind::Pack, &pack, b"truncated"));
    // Another group's snapshot, even byte for byte.
    refused(guarded.put(Kind::Snapshot, &other, &other_bytes));
    refused(guarded.put(Kind::Garbage, &"0".repeat(64), b"x"));
    refused(guarded.put(Kind::Lock, "prune-00000000000000000001", b"x"));
    refused(guarded.put(Kind::Config, "config", b"x"));
    for bad in ["../config", "/etc/passwd", "a/b", "..", ""] {
        refused(guarded.put(Kind::Index, bad, b"x"));
        assert!(
            matches!(guarded.get(Kind::Index, bad), Err(Error::Refused(_))),
            "{bad}"
        );
    }
    // Prying.
    assert!(matches!(
        guarded.get(Kind::Pack, &pack),
        Err(Error::Refused(_))
    ));
    assert!(matches!(
        guarded.get_range(Kind::Pack, &pack, 0, 16),
        Err(Error::Refused(_))
    ));
    assert!(matches!(
        guarded.get(Kind::Snapshot, &other),
        Err(Error::Refused(_))
    ));
    assert!(matches!(guarded.list(Kind::Key), Err(Error::Refused(_))));
    let listed: Vec<String> = guarded
        .list(Kind::Snapshot)
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert!(
        listed.contains(&mine) && !listed.contains(&other),
        "{listed:?}"
    );
    assert!(guarded.get(Kind::Snapshot, &mine).is_ok());

    assert_eq!(fingerprint(&root), before, "the repository changed");
    let log = refusals.lock().unwrap();
    assert!(log.len() >= 20, "{}", log.len());
    assert!(
        log.iter()
            .all(|r| r.principal == "laptop-token" && r.role == "put")
    );
    assert!(log.iter().any(|r| r.reason.contains("delete")));
    assert!(log.iter().any(|r| r.reason.contains("do not hash")));
    assert!(
        log.iter()
            .any(|r| r.reason.contains("outside this token's groups"))
    );
}

/// Client and server over a pair of pipes, the way `ssh` connects them.
fn connect(
    raw: Arc<dyn Storage>,
    role: Role,
    staging: &Path,
) -> (
    Arc<dyn Storage>,
    std::thread::JoinHandle<std::io::Result<()>>,
) {
    let (c_in, s_out) = std::io::pipe().unwrap();
    let (s_in, c_out) = std::io::pipe().unwrap();
    let guarded = GuardedStorage::new(raw, role, "pipe", Arc::new(|_: &Refusal| {}));
    let server = std::thread::spawn(move || {
        let (mut i, mut o) = (s_in, s_out);
        cairn_server::serve::serve(&mut i, &mut o, &guarded)
    });
    let remote = cairn_remote::ssh::RemoteStorage::connect(
        Box::new(c_in),
        Box::new(c_out),
        "pipe:test",
        staging,
    )
    .unwrap();
    (Arc::new(remote), server)
}

#[test]
fn backup_restore_and_check_through_the_protocol() {
    let Setup {
        dir,
        root,
        raw,
        owner: _,
        owner_key,
        put_key,
    } = setup();

    // A source with a put role writes through the protocol; packs larger
    // than one upload piece go in pieces.
    let src = dir.path().join("home");
    std::fs::create_dir_all(&src).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let big: Vec<u8> = (0..(9 << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(src.join("big"), &big).unwrap();
    std::fs::write(src.join("small"), b"small").unwrap();
    let (put, server) = connect(raw.clone(), Role::Put(None), &dir.path().join("stage1"));
    let id = backup_as(
        put.clone(),
        &put_key,
        &src,
        "laptop:/home",
        &dir.path().join("c"),
    );
    // Over the wire, a refusal is a refusal.
    let pack = raw.list(Kind::Pack).unwrap()[0].name.clone();
    assert!(matches!(
        put.delete(Kind::Pack, &pack),
        Err(Error::Refused(_))
    ));
    assert!(matches!(
        put.get_range(Kind::Pack, &pack, 0, 8),
        Err(Error::Refused(_))
    ));
    drop(put);
    server.join().unwrap().unwrap();
    assert!(raw.list(Kind::Pack).unwrap().len() >= 2);

    // The owner restores and verifies through the protocol as admin.
    let (admin, server) = connect(raw.clone(), Role::Admin, &dir.path().join("stage2"));
    let repo = open_with_key(admin.clone(), &owner_key);
    let got = restore_snapshot(&repo, &id, &src, &dir.path().join("dest"));
    assert!(std::fs::read(got.join("big")).unwrap() == big);
    assert_eq!(std::fs::read(got.join("small")).unwrap(), b"small");
    let r = check_read_data(&repo);
    assert!(r.errors.is_empty(), "{:#?}", r.errors);
    drop(repo);
    drop(admin);
    server.join().unwrap().unwrap();
    // Nothing staged is left on the server.
    let tmp: Vec<_> = std::fs::read_dir(root.join("tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "{tmp:?}");
}

#[test]
fn server_refuses_a_stranger_and_a_huge_frame() {
    let dir = tempfile::tempdir().unwrap();
    let raw: Arc<dyn Storage> = Arc::new(LocalStorage::new(dir.path()));
    let g = GuardedStorage::new(raw.clone(), Role::Read, "x", Arc::new(|_: &Refusal| {}));
    let mut out = Vec::new();
    let e = cairn_server::serve::serve(&mut &b"GET / HTTP/1.1\r\n"[..], &mut out, &g).unwrap_err();
    assert!(e.to_string().contains("protocol"), "{e}");
    let mut input = cairn_remote::wire::HELLO.to_vec();
    input.extend_from_slice(&u32::MAX.to_le_bytes());
    let e = cairn_server::serve::serve(&mut &input[..], &mut out, &g).unwrap_err();
    assert!(e.to_string().contains("more than"), "{e}");

    // A range the peer claims is near 2^64 long is refused in words; the
    // length is compared, never added to (the sum wrapped before).
    use cairn_remote::wire::{HELLO, Op, Request, Status, read_frame, write_frame};
    let mut input = HELLO.to_vec();
    let req = Request {
        op: Op::GetRange,
        kind: Kind::Pack,
        name: "ab".repeat(32),
        offset: 0,
        len: u64::MAX,
        body: Vec::new(),
    };
    write_frame(&mut input, &req.encode()).unwrap();
    let mut out = Vec::new();
    cairn_server::serve::serve(&mut &input[..], &mut out, &g).unwrap();
    let mut answer = &out[HELLO.len()..];
    read_frame(&mut answer).unwrap().expect("the role");
    let reply = read_frame(&mut answer).unwrap().expect("a reply");
    assert_eq!(reply[0], Status::Failed as u8);
    assert!(
        String::from_utf8_lossy(&reply[1..]).contains("too large"),
        "{}",
        String::from_utf8_lossy(&reply[1..])
    );
}

/// A put source floods its group with snapshots claiming old times, one
/// late in every month: retention goes by the server's receipts, so the
/// legitimate history keeps its monthly slots, and the flood all lands in
/// the current month.
#[test]
fn snapshot_flood_with_old_claimed_times_cannot_push_out_history() {
    use cairn_format::snapshot::{Body, Envelope};
    use cairn_maint::forget::{ForgetOptions, forget};
    use cairn_maint::retention::{Civil, Policy};

    let Setup {
        dir,
        raw,
        owner,
        put_key,
        ..
    } = setup();
    let src = dir.path().join("home");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"a").unwrap();
    let guarded: Arc<dyn Storage> = Arc::new(GuardedStorage::new(
        raw.clone(),
        Role::Put(Some(GroupPattern::new("laptop:*").unwrap())),
        "laptop",
        Arc::new(|_: &Refusal| {}),
    ));
    let real = backup_as(
        guarded.clone(),
        &put_key,
        &src,
        "laptop:/home",
        &dir.path().join("c"),
    );
    let (snaps, _) = Repo::list_snapshots(&*raw).unwrap();
    let root_tree = snaps
        .iter()
        .find(|s| s.id.to_hex() == real)
        .unwrap()
        .envelope
        .root;

    const DAY: i64 = 86_400_000_000_000;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    // History from before the box had receipts: six snapshots 40 days
    // apart (so each in a month of its own), written by the owner directly.
    let session = owner.new_session().unwrap();
    let mut history = Vec::new();
    for m in 1..=6 {
        let env = Envelope {
            time_ns: now - m * 40 * DAY - 20 * DAY,
            group: "laptop:/home".into(),
            root: root_tree,
            ..Envelope::default()
        };
        history.push(
            owner
                .commit_snapshot(&env, &Body::default(), &session)
                .unwrap(),
        );
    }
    // The flood: through the put token, each claiming a time late in a month.
    let put_repo = Repo::open(
        guarded.clone(),
        &KeySource::File {
            path: put_key.clone(),
            passphrase: None,
        },
    )
    .unwrap();
    let s2 = put_repo.new_session().unwrap();
    for m in 1..=50 {
        let env = Envelope {
            time_ns: now - m * 30 * DAY + 5 * DAY,
            group: "laptop:/home".into(),
            root: root_tree,
            ..Envelope::default()
        };
        put_repo
            .commit_snapshot(&env, &Body::default(), &s2)
            .unwrap();
    }
    assert_eq!(
        raw.list(Kind::Receipt).unwrap().len(),
        51,
        "one receipt per put snapshot"
    );

    let opts = ForgetOptions {
        policy: Policy {
            monthly: Some(12),
            ..Policy::default()
        },
        ..ForgetOptions::default()
    };
    let report = forget(&*raw, &opts, now, &|ns| {
        Civil::from_unix(ns.div_euclid(1_000_000_000), 0)
    })
    .unwrap();
    let (left, _) = Repo::list_snapshots(&*raw).unwrap();
    for h in &history {
        assert!(
            left.iter().any(|s| s.id == *h),
            "history snapshot {} lost",
            h.short()
        );
    }
    // Of the flood (and the real backup, received now), only the newest
    // received stays: they all fall in the current month.
    assert_eq!(left.len(), history.len() + 1, "{:#?}", report.removed.len());
    // Receipts of forgotten snapshots went with them.
    assert_eq!(raw.list(Kind::Receipt).unwrap().len(), 1);
}

/// The box marks who uploaded each pack, and a put source is shown only
/// its own packs and the owner's: it cannot deduplicate against what
/// another source stored (the first step against dedup poisoning).
#[test]
fn packs_carry_their_origin_and_sources_see_only_their_own() {
    let Setup {
        dir,
        raw,
        owner_key,
        put_key,
        ..
    } = setup();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), vec![3u8; 50_000]).unwrap();
    let as_token = |name: &str| put_token(&raw, name);
    backup_as(
        raw.clone(),
        &owner_key,
        &src,
        "nas:/a",
        &dir.path().join("c0"),
    );
    let owners: Vec<String> = raw
        .list(Kind::Pack)
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert!(
        raw.list(Kind::Origin).unwrap().is_empty(),
        "the owner's packs are unmarked"
    );
    std::fs::write(src.join("b"), vec![4u8; 50_000]).unwrap();
    let laptop = as_token("laptop");
    let laptop_snap = backup_as(
        laptop.clone(),
        &put_key,
        &src,
        "laptop:/a",
        &dir.path().join("c1"),
    );
    let marks = raw.list(Kind::Origin).unwrap();
    let all: Vec<String> = raw
        .list(Kind::Pack)
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    let laptops: Vec<&String> = all.iter().filter(|p| !owners.contains(p)).collect();
    assert!(!laptops.is_empty());
    assert_eq!(
        marks.len(),
        laptops.len(),
        "one mark per pack the source uploaded"
    );
    for m in &marks {
        let (pack, _) = cairn_format::maint::parse_origin_name(&m.name).unwrap();
        assert!(laptops.contains(&&pack.to_hex()));
        let r =
            cairn_format::maint::Receipt::decode(&raw.get(Kind::Origin, &m.name).unwrap()).unwrap();
        assert_eq!(r.sender, "laptop");
    }
    let seen = |s: &Arc<dyn Storage>| -> Vec<String> {
        let mut v: Vec<String> = s
            .list(Kind::Pack)
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        v.sort();
        v
    };
    let mut everything = all.clone();
    everything.sort();
    assert_eq!(
        seen(&laptop),
        everything,
        "a source sees its own and the owner's packs"
    );
    let mut only_owner = owners.clone();
    only_owner.sort();
    assert_eq!(
        seen(&as_token("desktop")),
        only_owner,
        "another source's packs are hidden"
    );
    // Marks are the box's: no source reads, lists or writes them.
    assert!(laptop.list(Kind::Origin).unwrap().is_empty());
    assert!(matches!(
        laptop.get(Kind::Origin, &marks[0].name),
        Err(Error::Refused(_))
    ));
    assert!(matches!(
        laptop.put(Kind::Origin, &marks[0].name, b"x"),
        Err(Error::Refused(_))
    ));
    // Prune deletes the marks of the packs it deletes, after them.
    cairn_maint::forget::forget_ids(
        &*raw,
        &[cairn_format::Id::from_hex(&laptop_snap).unwrap()],
        false,
    )
    .unwrap();
    let opts = cairn_maint::prune::PruneOptions {
        grace: std::time::Duration::ZERO,
        holder: "test".into(),
        ..Default::default()
    };
    let r = cairn_maint::prune::prune(raw.clone(), &opts).unwrap();
    assert!(r.deleted_packs > 0, "{r:?}");
    let left: Vec<String> = raw
        .list(Kind::Pack)
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    for m in raw.list(Kind::Origin).unwrap() {
        let (pack, _) = cairn_format::maint::parse_origin_name(&m.name).unwrap();
        assert!(
            left.contains(&pack.to_hex()),
            "mark {} outlived its pack",
            m.name
        );
    }
    assert!(raw.list(Kind::Origin).unwrap().len() < marks.len());
}

/// Dedup poisoning: a source stores garbage under the IDs of another
/// machine's data, before that machine backs it up and after (every ID
/// the index files show, trees forged with false edges or as chunks,
/// each met first by readers). That machine's snapshot still restores
/// byte-identical, a data check passes and names the forged copies, and
/// prune keeps the true copies and lets the forged ones go.
#[test]
fn a_source_cannot_spoil_another_machines_backup_by_poisoning_dedup() {
    use cairn_repo::BlobKind;
    let Setup {
        dir,
        raw,
        owner_key,
        put_key,
        ..
    } = setup();
    let as_token = |name: &str| put_token(&raw, name);
    let guessable = b"the victim's file, which the attacker can guess".repeat(100);
    let big = pseudo(20 << 20, 0x2545_f491_4f6c_dd1d);
    let mallory = as_token("mallory");
    let m = open_with_key(mallory.clone(), &put_key);
    let before = forge(
        &mallory,
        &m,
        &[(BlobKind::Chunk, m.blob_id(&guessable))],
        false,
    );

    // The victim backs up through its own token, and stores its own
    // copy of the guessed file instead of deduplicating against the
    // garbage.
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("guessable"), &guessable).unwrap();
    std::fs::write(src.join("sub/big"), &big).unwrap();
    let laptop = as_token("laptop");
    let snap = backup_as(
        laptop.clone(),
        &put_key,
        &src,
        "laptop:/src",
        &dir.path().join("c"),
    );
    assert!(
        !laptop
            .list(Kind::Pack)
            .unwrap()
            .iter()
            .any(|o| o.name == before.to_hex()),
        "the victim is shown the attacker's pack"
    );

    // Mallory now forges every ID the index files show.
    let mut seen = Vec::new();
    for o in mallory.list(Kind::Index).unwrap() {
        for p in cairn_repo::read_index_file(&*mallory, &o.name).unwrap() {
            if p.pack == before {
                continue;
            }
            seen.extend(p.trailer.entries.iter().map(|e| (e.kind, e.id)));
        }
    }
    assert!(seen.iter().any(|e| e.0 == BlobKind::Tree));
    let after = forge(&mallory, &m, &seen, true);

    let restore_and_compare = |round: &str| {
        let repo = open_with_key(raw.clone(), &owner_key);
        let got = restore_snapshot(
            &repo,
            &snap,
            &src,
            &dir.path().join(format!("dest-{round}")),
        );
        assert!(
            std::fs::read(got.join("guessable")).unwrap() == guessable,
            "{round}: the guessed file"
        );
        assert!(
            std::fs::read(got.join("sub/big")).unwrap() == big,
            "{round}: the big file"
        );
        let c = check_read_data(&repo);
        assert!(c.ok(), "{round}: {:#?}", c.errors);
        assert!(c.affected.is_empty(), "{round}: {:#?}", c.affected);
        c.notes
            .iter()
            .filter(|n| n.contains("damaged or forged"))
            .count()
    };

    // Readers meet the forged copies first.
    let repo = open_with_key(raw.clone(), &owner_key);
    let after_pos = repo.index().pack_pos(&after).unwrap();
    for (_, id) in &seen {
        assert_eq!(repo.index().get(id).unwrap().pack, after_pos);
    }
    drop(repo);
    let forged = restore_and_compare("poisoned");
    assert_eq!(forged, seen.len() + 1, "every forged copy is named");
    // The box's keyless verify job reads the victim's snapshot the same
    // way: the forged trees' false edges are not damage in it.
    let v = cairn_maint::verify::verify(
        &*raw,
        &cairn_maint::verify::VerifyOptions {
            hash_packs: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(v.errors.is_empty(), "{:#?}", v.errors);

    // Prune has no key, but walks the victim's snapshot with the copies
    // the victim could have used (its receipt names it): the forgeries are
    // neither followed nor kept, and go, with their marks.
    let prune = || {
        let opts = cairn_maint::prune::PruneOptions {
            grace: std::time::Duration::ZERO,
            holder: "test".into(),
            max_unused: 0.0,
            ..Default::default()
        };
        cairn_maint::prune::prune(raw.clone(), &opts).unwrap()
    };
    let r = prune();
    assert_eq!(r.deleted_packs, 2, "{r:?}");
    assert_eq!(restore_and_compare("pruned"), 0, "no forged copy is left");
    let repo = open_with_key(raw.clone(), &owner_key);
    for (_, id) in &seen {
        assert_eq!(repo.index().other_copies(id).count(), 0);
    }
    drop(repo);
    let packs: Vec<String> = raw
        .list(Kind::Pack)
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    for p in [before, after] {
        assert!(
            !packs.contains(&p.to_hex()),
            "forged pack {} kept",
            p.short()
        );
    }
    for o in raw.list(Kind::Origin).unwrap() {
        let r =
            cairn_format::maint::Receipt::decode(&raw.get(Kind::Origin, &o.name).unwrap()).unwrap();
        assert_eq!(r.sender, "laptop", "mark {} left", o.name);
    }

    // What a source can still do: point a snapshot of its own at the
    // victim's tree, which it could never have written or been shown.
    // Prune then stops without deleting anything and names that
    // snapshot; forgetting it lets prune go on.
    let (_, root) = seen.iter().find(|e| e.0 == BlobKind::Tree).unwrap();
    let session = m.new_session().unwrap();
    let env = cairn_format::snapshot::Envelope {
        time_ns: cairn_repo::now_ns(),
        group: "mallory:/x".into(),
        root: *root,
        ..Default::default()
    };
    let theirs = m
        .commit_snapshot(&env, &cairn_format::snapshot::Body::default(), &session)
        .unwrap();
    // The repository's files, the prune lease left out.
    let files = || {
        let mut f = fingerprint(&dir.path().join("repo"));
        f.retain(|k, _| !k.contains("/locks/"));
        f
    };
    let before_prune = files();
    let opts = cairn_maint::prune::PruneOptions {
        grace: std::time::Duration::ZERO,
        holder: "test".into(),
        ..Default::default()
    };
    let e = cairn_maint::prune::prune(raw.clone(), &opts)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("snapshot {}", theirs.short())) && e.contains("another source"),
        "{e}"
    );
    assert_eq!(before_prune, files(), "the stopped prune changed nothing");
    cairn_maint::forget::forget_ids(&*raw, &[theirs], false).unwrap();
    cairn_maint::prune::prune(raw.clone(), &opts).unwrap();
    assert_eq!(restore_and_compare("after the stall"), 0);
}

/// Prune repacks a source's half-used pack into a new pack that carries
/// the source's origin mark: the copy never passes for the owner's, other
/// sources are still not shown it, and the source's snapshot restores.
#[test]
fn repacking_a_sources_pack_keeps_its_origin() {
    let Setup {
        dir,
        raw,
        owner_key,
        put_key,
        ..
    } = setup();
    let as_token = |name: &str| put_token(&raw, name);
    let noise = |seed: u64| pseudo(200_000, seed);
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("kept"), noise(1)).unwrap();
    std::fs::write(src.join("gone"), noise(2)).unwrap();
    let laptop = as_token("laptop");
    let cache = dir.path().join("c");
    let first = backup_as(laptop.clone(), &put_key, &src, "laptop:/s", &cache);
    std::fs::remove_file(src.join("gone")).unwrap();
    let second = backup_as(laptop.clone(), &put_key, &src, "laptop:/s", &cache);
    cairn_maint::forget::forget_ids(&*raw, &[cairn_format::Id::from_hex(&first).unwrap()], false)
        .unwrap();
    let r = cairn_maint::prune::prune(
        raw.clone(),
        &cairn_maint::prune::PruneOptions {
            grace: std::time::Duration::ZERO,
            holder: "test".into(),
            max_unused: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(r.repacked_packs >= 1, "{r:?}");
    let tag = cairn_repo::origin_tag("laptop");
    let marks: Vec<String> = raw
        .list(Kind::Origin)
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    for p in raw.list(Kind::Pack).unwrap() {
        let id = cairn_format::Id::from_hex(&p.name).unwrap();
        assert!(
            marks.contains(&cairn_format::maint::origin_name(&id, &tag)),
            "pack {} lost its origin",
            id.short()
        );
    }
    assert!(as_token("desktop").list(Kind::Pack).unwrap().is_empty());
    let repo = open_with_key(raw.clone(), &owner_key);
    let got = restore_snapshot(&repo, &second, &src, &dir.path().join("dest"));
    assert!(std::fs::read(got.join("kept")).unwrap() == noise(1));
    assert!(!got.join("gone").exists());
}
