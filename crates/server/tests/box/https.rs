//! The box over real HTTPS on loopback: the server in process, the
//! client as `cairn` uses it, raw TLS requests for what a client would
//! never send, and headless Chromium for the status page.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_remote::https::{Endpoint, HttpsStorage};
use cairn_remote::tls::Trust;
use cairn_storage::{Error, Kind, Storage};
use cairn_testkit::{
    Setup, backup_as, check_read_data, fingerprint, open_with_key, restore_snapshot, setup,
};

use cairn_daemon::start;
use cairn_server::config::Config;
use cairn_server::listener::Running;

/// A box serving the test repository as `home`, with `extra` TOML
/// appended to its config (limits, jobs).
fn serve(s: &Setup, extra_top: &str, extra_repo: &str) -> Running {
    let cfg = format!(
        "listen = \"127.0.0.1:0\"\nstate = \"{}\"\n{extra_top}\n[[repository]]\nname = \"home\"\npath = \"{}\"\n{extra_repo}\n",
        s.dir.path().join("state").display(),
        s.root.display()
    );
    let file = s.dir.path().join("server.toml");
    std::fs::write(&file, cfg).unwrap();
    start(Config::load(&file).unwrap()).unwrap()
}

fn token(r: &Running, name: &str, role: &str, group: Option<&str>) -> String {
    r.server
        .tokens
        .add(name, role, "home", group, None)
        .unwrap()
}

fn client_with(r: &Running, token: &str, trust: Trust, dir: &Path) -> Arc<dyn Storage> {
    let e = Endpoint {
        host: "127.0.0.1".into(),
        port: r.addr.port(),
        repo: "home".into(),
        tls: true,
    };
    Arc::new(
        HttpsStorage::new(
            e,
            token,
            trust,
            &dir.join("staging"),
            Duration::from_secs(5),
        )
        .unwrap(),
    )
}

fn client(r: &Running, token: &str, dir: &Path) -> Arc<dyn Storage> {
    client_with(r, token, Trust::Pinned(r.fingerprint.unwrap()), dir)
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>;

/// A TLS connection to `addr`, its certificate pinned to `fp`.
fn tls(tcp: std::net::TcpStream, fp: [u8; 32]) -> TlsStream {
    let cfg = cairn_remote::tls::client_config(Trust::Pinned(fp), "test", Arc::default()).unwrap();
    let conn = rustls::ClientConnection::new(cfg, "localhost".try_into().unwrap()).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// One raw exchange over TLS (pinned), from `from` if given; returns the
/// status code and the whole response text.
fn raw_from(addr: SocketAddr, fp: [u8; 32], from: Option<&str>, req: &[u8]) -> (u16, String) {
    let tcp = match from {
        None => std::net::TcpStream::connect(addr).unwrap(),
        Some(src) => {
            let sock =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            let src: SocketAddr = format!("{src}:0").parse().unwrap();
            sock.bind(&src.into()).unwrap();
            sock.connect(&addr.into()).unwrap();
            sock.into()
        }
    };
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut s = tls(tcp, fp);
    s.write_all(req).unwrap();
    s.flush().unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

fn raw(r: &Running, req: &str) -> (u16, String) {
    raw_from(r.addr, r.fingerprint.unwrap(), None, req.as_bytes())
}

fn get(r: &Running, token: &str, path: &str) -> (u16, String) {
    raw(
        r,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ),
    )
}

fn refused(e: Error) -> String {
    match e {
        Error::Refused(m) => m,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn staging_is_empty(root: &Path) -> bool {
    let d = root.join("tmp");
    !d.exists() || std::fs::read_dir(d).unwrap().next().is_none()
}

#[test]
fn backup_restore_and_check_over_https_with_a_put_token() {
    let s = setup();
    let r = serve(&s, "", "");
    let put = token(&r, "laptop", "put", Some("laptop:*"));
    let admin = token(&r, "owner", "admin", None);
    let src = s.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let big: Vec<u8> = (0..12u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(src.join("big"), &big).unwrap();
    std::fs::write(src.join("small"), b"small").unwrap();
    let id = backup_as(
        client(&r, &put, s.dir.path()),
        &s.put_key,
        &src,
        "laptop:/src",
        &s.dir.path().join("cache"),
    );
    // The owner, through an admin token, restores it byte for byte and
    // the check reads every pack back.
    let owner = open_with_key(client(&r, &admin, s.dir.path()), &s.owner_key);
    let got = restore_snapshot(&owner, &id, &src, &s.dir.path().join("dest"));
    assert_eq!(std::fs::read(got.join("big")).unwrap(), big);
    assert_eq!(std::fs::read(got.join("small")).unwrap(), b"small");
    let report = check_read_data(&owner);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(staging_is_empty(&s.root));
    r.stop();
}

#[test]
fn bad_requests_get_clear_refusals_and_the_box_keeps_serving() {
    let s = setup();
    let r = serve(
        &s,
        "[limits]\nbody_idle = \"1s\"\nheaders = \"2s\"\nauth_failures = 8\nauth_window = \"30s\"",
        "",
    );
    let put = token(&r, "laptop", "put", None);
    let good = client(&r, &put, s.dir.path());
    let alive = || assert!(good.list(Kind::Index).is_ok(), "the box stopped serving");

    // No token, a wrong one, a revoked one, an expired one.
    let (c, t) = raw(
        &r,
        "GET /v1/home/index/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(c, 401, "{t}");
    assert!(t.contains("no token"), "{t}");
    let (c, t) = get(&r, "cairn_0000", "/v1/home/index/");
    assert_eq!(c, 401, "{t}");
    assert!(t.contains("unknown token"), "{t}");
    let gone = token(&r, "stolen", "put", None);
    assert_eq!(get(&r, &gone, "/v1/home/index/").0, 200);
    r.server.tokens.revoke("stolen").unwrap();
    let (c, t) = get(&r, &gone, "/v1/home/index/");
    assert_eq!(c, 401, "{t}");
    assert!(t.contains("revoked"), "{t}");
    let brief = r
        .server
        .tokens
        .add("brief", "read", "home", None, Some(Duration::ZERO))
        .unwrap();
    let (c, t) = get(&r, &brief, "/v1/home/index/");
    assert_eq!(c, 401, "{t}");
    assert!(t.contains("expired"), "{t}");
    // The client turns these into messages that say what to do.
    let m = refused(
        client(&r, &gone, s.dir.path())
            .list(Kind::Index)
            .unwrap_err(),
    );
    assert!(m.contains("revoked") && m.contains("new one"), "{m}");
    alive();

    // Malformed requests: not HTTP, a bad path, a bad range, a wrong
    // method, no length, too long a body.
    let (c, _) = raw(&r, "HELLO\r\n\r\n");
    assert_eq!(c, 400);
    let (c, t) = get(&r, &put, "/v1/home/nothing/x");
    assert_eq!(c, 400, "{t}");
    assert!(t.contains("no object kind"), "{t}");
    let (c, t) = raw(
        &r,
        &format!(
            "GET /v1/home/index/00 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {put}\r\nRange: bytes=9-1\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(c, 400, "{t}");
    let (c, t) = raw(
        &r,
        &format!(
            "MOVE /v1/home/data/00 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {put}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(c, 405, "{t}");
    let name = "ab".repeat(32);
    let (c, t) = raw(
        &r,
        &format!(
            "PUT /v1/home/data/{name} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {put}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"
        ),
    );
    assert_eq!(c, 411, "{t}");
    let (c, t) = raw(
        &r,
        &format!(
            "PUT /v1/home/index/{name} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {put}\r\nContent-Length: 999999999999\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(c, 413, "{t}");
    // A body that does not hash to its name.
    let (c, t) = raw(
        &r,
        &format!(
            "PUT /v1/home/index/{name} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {put}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
        ),
    );
    assert_eq!(c, 403, "{t}");
    assert!(t.contains("hash"), "{t}");
    alive();

    // Plain HTTP to the TLS port gets an answer saying so.
    let mut tcp = std::net::TcpStream::connect(r.addr).unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut t = String::new();
    let _ = tcp.read_to_string(&mut t);
    assert!(
        t.starts_with("HTTP/1.1 400") && t.contains("HTTPS only"),
        "{t}"
    );

    // A slow client that never finishes its upload, and one that hangs
    // up mid-pack: neither leaves an object or a staged file, and the
    // box serves others meanwhile.
    let pack = "cd".repeat(32);
    let addr = r.addr;
    let fp = r.fingerprint.unwrap();
    let put2 = put.clone();
    let p2 = pack.clone();
    let slow = std::thread::spawn(move || {
        let mut req = format!(
            "PUT /v1/home/data/{p2} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {put2}\r\nContent-Length: 20000000\r\nConnection: close\r\n\r\n"
        )
        .into_bytes();
        req.extend(std::iter::repeat_n(7u8, 9 << 20));
        raw_from(addr, fp, None, &req)
    });
    alive();
    let (c, t) = slow.join().unwrap();
    assert_eq!(c, 408, "{t}");
    assert!(t.contains("abandoned"), "{t}");
    {
        let mut st = tls(std::net::TcpStream::connect(r.addr).unwrap(), fp);
        st.write_all(
            format!("PUT /v1/home/data/{pack} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {put}\r\nContent-Length: 20000000\r\n\r\n").as_bytes(),
        )
        .unwrap();
        st.write_all(&vec![9u8; 10 << 20]).unwrap();
        st.flush().unwrap();
        // Hang up without finishing.
    }
    std::thread::sleep(Duration::from_millis(300));
    alive();
    assert!(good.size(Kind::Pack, &pack).unwrap_err().is_not_found());
    let t = Instant::now();
    while !staging_is_empty(&s.root) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "a staged upload was left behind"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Failed logins: past eight, this address waits; another is served.
    for _ in 0..4 {
        get(&r, "cairn_guess", "/v1/home/index/");
    }
    let (c, t) = get(&r, &put, "/v1/home/index/");
    assert_eq!(c, 429, "{t}");
    assert!(t.contains("too many failed logins"), "{t}");
    let (c, t) = raw_from(
        r.addr,
        fp,
        Some("127.0.0.2"),
        format!("GET /v1/home/index/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {put}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(c, 200, "{t}");
    let log = r.server.recent().join("\n");
    assert!(log.contains("failed login from 127.0.0.1"), "{log}");
    assert!(log.contains("token \"stolen\" was revoked"), "{log}");
    r.stop();
}

#[test]
fn certificates_are_pinned_remembered_and_reloaded() {
    let s = setup();
    let certs = s.dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let make = |tag: &str| {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into(), tag.into()]).unwrap();
        std::fs::write(certs.join("next.key"), c.signing_key.serialize_pem()).unwrap();
        std::fs::write(certs.join("next.crt"), c.cert.pem()).unwrap();
        // Replace the pair as a renewal would: key, then certificate.
        std::fs::rename(certs.join("next.key"), certs.join("box.key")).unwrap();
        std::fs::rename(certs.join("next.crt"), certs.join("box.crt")).unwrap();
        cairn_remote::tls::fingerprint(&rustls::pki_types::CertificateDer::from(
            c.cert.der().to_vec(),
        ))
    };
    let first = make("one");
    let r = serve(
        &s,
        &format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n[limits]\ncert_reload = \"1s\"",
            certs.join("box.crt").display(),
            certs.join("box.key").display()
        ),
        "",
    );
    assert_eq!(r.fingerprint, Some(first));
    let tok = token(&r, "laptop", "read", None);

    // Trust on first use: remembered, then required.
    let known = s.dir.path().join("known_servers");
    let tofu = || {
        client_with(
            &r,
            &tok,
            Trust::OnFirstUse {
                file: known.clone(),
            },
            s.dir.path(),
        )
    };
    tofu().list(Kind::Index).unwrap();
    let line = std::fs::read_to_string(&known).unwrap();
    assert!(line.contains(&hex::encode(first)), "{line}");
    tofu().list(Kind::Index).unwrap();
    // A wrong pin is refused with both fingerprints named.
    let m = refused(
        client_with(&r, &tok, Trust::Pinned([7; 32]), s.dir.path())
            .list(Kind::Index)
            .unwrap_err(),
    );
    assert!(
        m.contains("not the pinned") && m.contains(&hex::encode(first)),
        "{m}"
    );

    // A renewal: the running server serves the new certificate.
    let second = make("two");
    let t = Instant::now();
    while r.server.recent().iter().all(|l| !l.contains("now serving")) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "certificate not reloaded"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    client_with(&r, &tok, Trust::Pinned(second), s.dir.path())
        .list(Kind::Index)
        .unwrap();
    // Whoever remembered the old one is told, not silently switched.
    let m = refused(tofu().list(Kind::Index).unwrap_err());
    assert!(
        m.contains("remembers") && m.contains("delete its line"),
        "{m}"
    );
    // A half-written renewal keeps the old certificate serving.
    std::fs::write(certs.join("box.crt"), "not a certificate").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    client_with(&r, &tok, Trust::Pinned(second), s.dir.path())
        .list(Kind::Index)
        .unwrap();
    assert!(
        r.server
            .recent()
            .iter()
            .any(|l| l.contains("still serving the old one"))
    );
    r.stop();
}

/// The box's jobs run on schedule; a back-dated flood and bit rot show
/// on the status page (checked in headless Chromium, as a person sees
/// it) and in `/metrics`.
#[test]
fn jobs_status_page_and_metrics_show_flood_and_bit_rot() {
    use cairn_format::snapshot::{Body, Envelope};
    let s = setup();
    let src = s.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), vec![5u8; 300_000]).unwrap();
    let r = serve(
        &s,
        "",
        "[[repository.job]]\nrun = \"retention\"\nevery = \"1s\"\ngroup = \"laptop:*\"\nkeep_monthly = 12\n\
         [[repository.job]]\nrun = \"check\"\nevery = \"1s\"\n\
         [[repository.job]]\nrun = \"verify\"\nevery = \"1s\"\n",
    );
    let put = token(&r, "laptop", "put", Some("laptop:*"));
    let store = client(&r, &put, s.dir.path());
    let real = backup_as(
        store.clone(),
        &s.put_key,
        &src,
        "laptop:/src",
        &s.dir.path().join("c"),
    );
    backup_as(
        s.raw.clone(),
        &s.owner_key,
        &src,
        "nas:/etc",
        &s.dir.path().join("c2"),
    );
    // The flood: 50 snapshots through the put token claiming a time in
    // each of the last 50 months.
    let repo = cairn_repo::Repo::open(
        store.clone(),
        &cairn_repo::KeySource::File {
            path: s.put_key.clone(),
            passphrase: None,
        },
    )
    .unwrap();
    let (list, _) = cairn_repo::Repo::list_snapshots(&*s.raw).unwrap();
    let root = list
        .iter()
        .find(|x| x.id.to_hex() == real)
        .unwrap()
        .envelope
        .root;
    let session = repo.new_session().unwrap();
    const DAY: i64 = 86_400_000_000_000;
    let now = cairn_repo::now_ns();
    for m in 1..=50 {
        let env = Envelope {
            time_ns: now - m * 30 * DAY,
            group: "laptop:/src".into(),
            root,
            ..Envelope::default()
        };
        repo.commit_snapshot(&env, &Body::default(), &session)
            .unwrap();
    }
    // Retention by receive time: the flood collapses to one snapshot of
    // this month; the other group is untouched.
    let t = Instant::now();
    loop {
        let (list, _) = cairn_repo::Repo::list_snapshots(&*s.raw).unwrap();
        let ours = list
            .iter()
            .filter(|x| x.envelope.group == "laptop:/src")
            .count();
        if ours == 1 {
            assert!(list.iter().any(|x| x.envelope.group == "nas:/etc"));
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "retention job did not run: {ours} left"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Forgetting removes the evidence of the flood from the listing, so
    // flood the page again (retention keeps one per month of arrival).
    for m in 1..=5 {
        let env = Envelope {
            time_ns: now - m * 30 * DAY - DAY,
            group: "laptop:/src".into(),
            root,
            ..Envelope::default()
        };
        repo.commit_snapshot(&env, &Body::default(), &session)
            .unwrap();
    }
    // Bit rot in one pack: the verify job finds it without a key.
    let packs = s.raw.list(Kind::Pack).unwrap();
    let victim = s
        .root
        .join("data")
        .join(&packs[0].name[..2])
        .join(&packs[0].name);
    let victim = if victim.exists() {
        victim
    } else {
        s.root.join("data").join(&packs[0].name)
    };
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[100] ^= 0x40;
    std::fs::write(&victim, bytes).unwrap();
    let t = Instant::now();
    while r.server.jobs.last("home", "verify").is_none_or(|o| o.ok) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "verify did not find the damage"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let check = r.server.jobs.last("home", "check").unwrap();
    assert!(check.ok_runs >= 1, "{check:?}");

    // An attempt to delete, for the refusals panel.
    assert!(store.delete(Kind::Pack, &packs[0].name).is_err());

    let (code, metrics) = raw(
        &r,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 200);
    for want in [
        "cairn_group_snapshots{repo=\"home\",group=\"nas:/etc\"} 1",
        "cairn_group_last_snapshot_age_seconds{repo=\"home\",group=\"laptop:/src\"}",
        "cairn_job_last_success{repo=\"home\",job=\"verify\"} 0",
        "cairn_job_last_success{repo=\"home\",job=\"retention\"} 1",
        "cairn_refusals_total{role=\"put\"}",
        "cairn_requests_total{role=\"put\",code=\"201\"}",
        "cairn_group_backdated_received_total{repo=\"home\",group=\"laptop:/src\"} 55",
    ] {
        assert!(metrics.contains(want), "missing {want:?} in\n{metrics}");
    }

    // What a person sees: the page rendered by a real browser.
    let url = format!("https://127.0.0.1:{}/", r.addr.port());
    let (dom, shot) = chromium(&url, s.dir.path());
    for want in [
        "Repository home",
        "nas:/etc",
        "laptop:/src",
        "back-dating",
        "FAILED",
        "problems need attention",
        "Refused requests",
    ] {
        assert!(dom.contains(want), "the page lacks {want:?}:\n{dom}");
    }
    // Red text is on the screen (the flood row, the failed verify).
    // CAIRN_TEST_SCREENSHOT=FILE keeps the picture for a person to look at.
    if let Some(keep) = std::env::var_os("CAIRN_TEST_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
    let red = red_pixels(&shot);
    assert!(red > 500, "only {red} red pixels in the screenshot");
    r.stop();
}

fn chromium(url: &str, dir: &Path) -> (String, PathBuf) {
    let bin = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("this test needs Chromium: apt-get install chromium (.ci/run does)");
    let profile = dir.join("chromium-profile");
    let common = |c: &mut std::process::Command| {
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--ignore-certificate-errors",
            "--window-size=1400,1200",
        ])
        .arg(format!("--user-data-dir={}", profile.display()));
    };
    let mut c = std::process::Command::new(bin);
    common(&mut c);
    let out = c.arg("--dump-dom").arg(url).output().unwrap();
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shot = dir.join("status.png");
    let mut c = std::process::Command::new(bin);
    common(&mut c);
    let st = c
        .arg(format!("--screenshot={}", shot.display()))
        .arg(url)
        .output()
        .unwrap();
    assert!(
        st.status.success() && shot.exists(),
        "chromium screenshot: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    (String::from_utf8_lossy(&out.stdout).into_owned(), shot)
}

fn red_pixels(png_file: &Path) -> usize {
    let dec = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png_file).unwrap(),
    ));
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = match info.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        other => panic!("unexpected screenshot colour type {other:?}"),
    };
    buf[..info.buffer_size()]
        .chunks(step)
        .filter(|p| p[0] > 120 && p[1] < 60 && p[2] < 80)
        .count()
}

#[test]
fn the_repository_files_stay_byte_identical_under_every_attack() {
    // The lower-level half of the ransomware scenario (the CLI half is in
    // the e2e tests): each request a put token could send, over HTTPS.
    let s = setup();
    let r = serve(&s, "", "");
    let put = token(&r, "laptop", "put", Some("laptop:*"));
    let src = s.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), vec![1u8; 100_000]).unwrap();
    let store = client(&r, &put, s.dir.path());
    let mine = backup_as(
        store.clone(),
        &s.put_key,
        &src,
        "laptop:/src",
        &s.dir.path().join("c"),
    );
    let other = backup_as(
        s.raw.clone(),
        &s.owner_key,
        &src,
        "nas:/etc",
        &s.dir.path().join("c2"),
    );
    let before = fingerprint(&s.root);
    let pack = s.raw.list(Kind::Pack).unwrap()[0].name.clone();
    let index = s.raw.list(Kind::Index).unwrap()[0].name.clone();
    // The owner key lives in a file here; a key object's name is refused
    // by role whether or not it exists.
    let key = "00".repeat(16);
    let mut attempts = 0;
    let mut no = |what: &str, r: cairn_storage::Result<()>| {
        attempts += 1;
        assert!(matches!(r, Err(Error::Refused(_))), "{what}: {r:?}");
    };
    for (k, n) in [
        (Kind::Pack, &pack),
        (Kind::Index, &index),
        (Kind::Snapshot, &mine),
        (Kind::Key, &key),
    ] {
        no("delete", store.delete(k, n));
        no("overwrite", store.put(k, n, b"ransom"));
    }
    no(
        "read pack contents",
        store.get(Kind::Pack, &pack).map(|_| ()),
    );
    no(
        "read a pack range",
        store.get_range(Kind::Pack, &pack, 0, 64).map(|_| ()),
    );
    no(
        "read the other group's snapshot",
        store.get(Kind::Snapshot, &other).map(|_| ()),
    );
    no("read a key", store.get(Kind::Key, &key).map(|_| ()));
    no("list keys", store.list(Kind::Key).map(|_| ()));
    no("traversal", store.put(Kind::Pack, "../keys/x", b"x"));
    no(
        "traversal in a read",
        store.get(Kind::Index, "../../etc/passwd").map(|_| ()),
    );
    no("absolute", store.put(Kind::Index, "/etc/passwd", b"x"));
    no(
        "lease",
        store.put(Kind::Lock, "prune-00000000000000000001", b"x"),
    );
    no("protect", store.put(Kind::Protect, &mine, b"x"));
    no("config", store.put(Kind::Config, "config", b"x"));
    // Index poisoning: an index file claiming a blob is in a stored pack
    // where it is not, or listing a pack that is not stored.
    let mut lie = cairn_format::index::decode(&s.raw.get(Kind::Index, &index).unwrap()).unwrap();
    lie[0].trailer.entries[0].id = cairn_format::Id([0x42; 32]);
    let bytes = cairn_format::index::encode(&lie[..1]);
    let name = cairn_format::Id(cairn_crypto::plain_hash(&bytes)).to_hex();
    let m = refused(store.put(Kind::Index, &name, &bytes).unwrap_err());
    assert!(m.contains("differ from the pack's own trailer"), "{m}");
    lie[0].pack = cairn_format::Id([0x43; 32]);
    let bytes = cairn_format::index::encode(&lie[..1]);
    let name = cairn_format::Id(cairn_crypto::plain_hash(&bytes)).to_hex();
    let m = refused(store.put(Kind::Index, &name, &bytes).unwrap_err());
    assert!(m.contains("not stored"), "{m}");
    attempts += 2;
    // The other group's snapshot is not even listed.
    let listed: Vec<String> = store
        .list(Kind::Snapshot)
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(listed, vec![mine.clone()]);
    // Maintenance through the put token is refused before it deletes.
    assert!(
        cairn_maint::forget::forget_ids(
            &*store,
            &[cairn_format::Id::from_hex(&mine).unwrap()],
            false
        )
        .is_err()
    );
    assert!(
        cairn_maint::prune::prune(store.clone(), &cairn_maint::prune::PruneOptions::default())
            .is_err()
    );
    assert_eq!(before, fingerprint(&s.root), "the repository changed");
    let log = r.server.recent().join("\n");
    let logged = log.matches("for token laptop (put)").count();
    assert!(
        logged >= attempts,
        "{logged} of {attempts} refusals logged:\n{log}"
    );
    r.stop();
}

#[test]
fn plain_http_serves_loopback_when_asked() {
    let s = setup();
    let r = serve(&s, "plain_http = true", "");
    assert_eq!(r.fingerprint, None);
    let tok = token(&r, "proxy", "admin", None);
    let e = Endpoint {
        host: "127.0.0.1".into(),
        port: r.addr.port(),
        repo: "home".into(),
        tls: false,
    };
    let store = HttpsStorage::new(
        e,
        &tok,
        Trust::Pinned([0; 32]),
        &s.dir.path().join("st"),
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(store.list(Kind::Index).is_ok());
    assert_eq!(
        store.location(),
        format!("http://127.0.0.1:{}/home", r.addr.port())
    );
    // A repository name the box does not serve.
    let e = Endpoint {
        host: "127.0.0.1".into(),
        port: r.addr.port(),
        repo: "other".into(),
        tls: false,
    };
    let other = HttpsStorage::new(
        e,
        &tok,
        Trust::Pinned([0; 32]),
        &s.dir.path().join("st"),
        Duration::from_secs(5),
    )
    .unwrap();
    let m = refused(other.list(Kind::Index).unwrap_err());
    assert!(m.contains("is for repository \"home\""), "{m}");
    r.stop();
}

/// Connections that say nothing, before or between requests, are closed
/// after the header timeout: idle clients cannot hold every slot.
#[test]
fn silent_connections_are_closed() {
    let s = setup();
    let r = serve(&s, "[limits]\nheaders = \"1s\"\nhandshake = \"1s\"", "");
    let tok = token(&r, "t", "read", None);
    let fp = r.fingerprint.unwrap();
    let open = || {
        let tcp = std::net::TcpStream::connect(r.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut st = tls(tcp, fp);
        while st.conn.is_handshaking() {
            st.conn.complete_io(&mut st.sock).unwrap();
        }
        st
    };
    let closed_within = |st: &mut TlsStream, limit: Duration| {
        let t = Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            match st.read(&mut buf) {
                Ok(0) | Err(_) => return t.elapsed() < limit,
                Ok(_) => {}
            }
            if t.elapsed() > limit {
                return false;
            }
        }
    };
    // Silent after the handshake.
    let mut a = open();
    assert!(
        closed_within(&mut a, Duration::from_secs(6)),
        "a silent connection stayed open"
    );
    // Silent after one request on a kept-alive connection.
    let mut b = open();
    b.write_all(
        format!("GET /v1/home/index/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    b.flush().unwrap();
    assert!(
        closed_within(&mut b, Duration::from_secs(6)),
        "an idle kept-alive connection stayed open"
    );
    // A TCP connection that never starts TLS.
    let mut c = std::net::TcpStream::connect(r.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = Instant::now();
    let mut sink = Vec::new();
    let _ = c.read_to_end(&mut sink);
    assert!(t.elapsed() < Duration::from_secs(6));
    r.stop();
}

/// A plain-TCP proxy to `upstream` that loses the answer to the first
/// request whose head contains `marker`: the request reaches the box,
/// then the connection breaks before the client hears back.
fn lossy_proxy(upstream: SocketAddr, marker: &'static str) -> SocketAddr {
    use std::sync::atomic::{AtomicBool, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let armed = Arc::new(AtomicBool::new(true));
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let server = std::net::TcpStream::connect(upstream).unwrap();
            let cut = Arc::new(AtomicBool::new(false));
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (armed, cut2) = (armed.clone(), cut.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 << 10];
                while let Ok(n) = c_in.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if String::from_utf8_lossy(&buf[..n]).contains(marker)
                        && armed.swap(false, Ordering::SeqCst)
                    {
                        cut2.store(true, Ordering::SeqCst);
                    }
                    if s_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = s_out.shutdown(std::net::Shutdown::Write);
            });
            let (mut s_in, mut c_out) = (server, client);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 << 10];
                while let Ok(n) = s_in.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if cut.load(Ordering::SeqCst) {
                        // The box has answered, so it has applied the
                        // request: the client never learns it.
                        let _ = c_out.shutdown(std::net::Shutdown::Both);
                        let _ = s_in.shutdown(std::net::Shutdown::Both);
                        return;
                    }
                    if c_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = c_out.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    addr
}

/// A lease written over a connection that broke after the box stored it
/// but before its answer arrived: the retry finds the object holding the
/// same bytes and succeeds, where it used to report a clash (and a prune
/// would have stopped, thinking it had lost its lease). A real clash,
/// other bytes under the name, is still one.
#[test]
fn an_upload_whose_answer_was_lost_is_not_taken_for_a_clash() {
    let s = setup();
    let r = serve(&s, "plain_http = true", "");
    let tok = token(&r, "admin", "admin", None);
    let proxy = lossy_proxy(r.addr, "PUT /v1/home/locks/");
    let store = HttpsStorage::new(
        Endpoint {
            host: "127.0.0.1".into(),
            port: proxy.port(),
            repo: "home".into(),
            tls: false,
        },
        &tok,
        Trust::Pinned([0; 32]),
        &s.dir.path().join("st"),
        Duration::from_secs(10),
    )
    .unwrap();
    store.put(Kind::Lock, "prune-1", b"our lease").unwrap();
    assert_eq!(
        std::fs::read(s.root.join("locks/prune-1")).unwrap(),
        b"our lease"
    );
    assert!(matches!(
        store.put(Kind::Lock, "prune-1", b"someone else's lease"),
        Err(Error::AlreadyExists { .. })
    ));
    r.stop();
}

/// Dedup poisoning over real HTTPS, every request through the box: a
/// source with its own put token stores garbage under the ID of a file
/// another machine holds, before and after that machine backs it up, and
/// makes its forgeries the copies readers meet first. The owner restores
/// the victim's snapshot byte-identical through an admin token, a data
/// check passes, and the box's prune deletes the forgeries.
#[test]
fn a_source_cannot_poison_another_machines_backup_over_https() {
    use cairn_repo::BlobKind;
    let s = setup();
    let r = serve(&s, "", "");
    let mallory_tok = token(&r, "mallory", "put", Some("mallory:*"));
    let laptop_tok = token(&r, "laptop", "put", Some("laptop:*"));
    let admin = token(&r, "owner", "admin", None);
    let guessable = b"a file the attacker can guess, such as a stock config\n".repeat(200);
    let mallory = client(&r, &mallory_tok, &s.dir.path().join("m"));
    let m = open_with_key(mallory.clone(), &s.put_key);
    let first = cairn_testkit::forge(
        &mallory,
        &m,
        &[(BlobKind::Chunk, m.blob_id(&guessable))],
        false,
    );

    let src = s.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("guessable"), &guessable).unwrap();
    std::fs::write(src.join("other"), b"something else").unwrap();
    let snap = backup_as(
        client(&r, &laptop_tok, &s.dir.path().join("l")),
        &s.put_key,
        &src,
        "laptop:/src",
        &s.dir.path().join("cache"),
    );
    let mut ids = Vec::new();
    for o in mallory.list(Kind::Index).unwrap() {
        for p in cairn_repo::read_index_file(&*mallory, &o.name).unwrap() {
            if p.pack != first {
                ids.extend(p.trailer.entries.iter().map(|e| (e.kind, e.id)));
            }
        }
    }
    let second = cairn_testkit::forge(&mallory, &m, &ids, true);

    let restore_and_check = |round: &str| {
        let owner = open_with_key(client(&r, &admin, &s.dir.path().join("o")), &s.owner_key);
        let got = restore_snapshot(
            &owner,
            &snap,
            &src,
            &s.dir.path().join(format!("dest-{round}")),
        );
        assert!(
            std::fs::read(got.join("guessable")).unwrap() == guessable,
            "{round}"
        );
        assert_eq!(std::fs::read(got.join("other")).unwrap(), b"something else");
        let c = check_read_data(&owner);
        assert!(c.errors.is_empty(), "{round}: {:?}", c.errors);
        c.notes.iter().filter(|n| n.contains("forged")).count()
    };
    assert_eq!(restore_and_check("poisoned"), ids.len() + 1);
    // The box's own prune (as its jobs run it, on the repository itself).
    let rep = cairn_maint::prune::prune(
        s.raw.clone(),
        &cairn_maint::prune::PruneOptions {
            grace: Duration::ZERO,
            holder: "box".into(),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(rep.deleted_packs, 2, "{rep:?}");
    assert_eq!(restore_and_check("pruned"), 0);
    let packs: Vec<String> = s
        .raw
        .list(Kind::Pack)
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert!(!packs.contains(&first.to_hex()) && !packs.contains(&second.to_hex()));
    r.stop();
}

/// Damaged state files stop the box with their name and what to do; they
/// are never reset silently (an alert on show would go quiet).
#[test]
fn damaged_state_files_refuse_to_start() {
    let s = setup();
    let state = s.dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let cfg = format!(
        "listen = \"127.0.0.1:0\"\nstate = \"{}\"\n[[repository]]\nname = \"home\"\npath = \"{}\"\n",
        state.display(),
        s.root.display()
    );
    let file = s.dir.path().join("server.toml");
    std::fs::write(&file, cfg).unwrap();
    for name in ["jobs.json", "alerts.json", "tokens.json"] {
        let p = state.join(name);
        std::fs::write(&p, b"{ \"half\": [").unwrap();
        let e = match start(Config::load(&file).unwrap()) {
            Ok(_) => panic!("{name}: the box started on a damaged state file"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(&p.display().to_string()), "{e}");
        assert!(e.contains("damaged"), "{e}");
        std::fs::remove_file(&p).unwrap();
    }
    drop(start(Config::load(&file).unwrap()).unwrap());
}

/// The status page and `/metrics` answer loopback only unless the config
/// opens them; the refused requests' log lines (token names, addresses)
/// show only to a reader on the box itself.
#[test]
fn status_is_private_by_default_and_public_pages_hide_log_lines() {
    let s = setup();
    let r = serve(&s, "", "");
    let server = r.server.clone();
    let req = |ip: &str| {
        let mut q = axum::extract::Request::new(axum::body::Body::empty());
        q.extensions_mut().insert(cairn_server::api::Peer(
            format!("{ip}:5000").parse().unwrap(),
        ));
        q
    };
    assert!(!cairn_server::listener::may_see_status(
        &server,
        &req("192.0.2.9")
    ));
    assert!(cairn_server::listener::may_see_status(
        &server,
        &req("127.0.0.1")
    ));
    let (c, t) = raw(&r, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(c, 200, "{t}");
    server.log("refused Delete Pack \"ab\" for token laptop (put) from 203.0.113.7: a put token cannot delete anything");
    let private = cairn_server::status::page(&server, true);
    assert!(private.contains("token laptop"), "{private}");
    assert!(private.contains("203.0.113.7"), "{private}");
    let public = cairn_server::status::page(&server, false);
    assert!(public.contains("1 refused request"), "{public}");
    assert!(!public.contains("laptop"), "{public}");
    assert!(!public.contains("203.0.113.7"), "{public}");
    r.stop();

    let r = serve(&s, "[limits]\npublic_status = true\n", "");
    assert!(cairn_server::listener::may_see_status(
        &r.server,
        &req("192.0.2.9")
    ));
    r.stop();
}

/// The daemon's status page (no box): a failing job shows red in a real
/// browser, `/metrics` carries each job's last success and state, and
/// `/status.json` the same view. Then the same daemon config as a box
/// (`[server]`): its pull job, failing, shows red on the box's page.
#[test]
fn the_daemon_status_page_shows_a_failing_job_in_red() {
    let s = setup();
    let state = s.dir.path().join("daemon-state");
    let src = s.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"hello").unwrap();
    let key = s.owner_key.display();
    let text = format!(
        r#"[daemon]
state = "{state}"
listen = "127.0.0.1:0"

[repository.home]
path = "{root}"
key_file = "{key}"

[[job]]
name = "documents"
kind = "backup"
repository = "home"
paths = ["{src}"]
every = "1d"

[[job]]
name = "shop-db"
kind = "command"
repository = "home"
command = ["sh", "-c", "echo 'pg_dump: connection refused' >&2; exit 1"]
filename = "shop.sql"
every = "1d"
"#,
        state = state.display(),
        root = s.root.display(),
        src = src.display(),
    );
    let config = cairn_daemon::config::Config::parse(Path::new("cairn.toml"), &text).unwrap();
    let st = cairn_daemon::state::StateDir::new(&state);
    for job in &config.jobs {
        cairn_daemon::run::run_recorded(
            &config,
            job,
            &st,
            Arc::default(),
            Arc::default(),
            &cairn_daemon::announce::LogOnly,
        )
        .unwrap();
    }
    let shared = Arc::new(std::sync::RwLock::new(config));
    let web = cairn_daemon::web::start(shared, "127.0.0.1:0".parse().unwrap()).unwrap();
    let fetch = |path: &str| {
        let mut c = std::net::TcpStream::connect(web.addr).unwrap();
        write!(
            c,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    };
    let metrics = fetch("/metrics");
    for want in [
        "cairn_job_last_success_timestamp_seconds{job=\"documents\",kind=\"backup\",repository=\"home\"}",
        "cairn_job_state{job=\"shop-db\",state=\"failed\"} 1",
        "cairn_job_health{job=\"shop-db\",kind=\"command\",repository=\"home\"} 2",
        "cairn_job_runs_total{job=\"shop-db\",outcome=\"failed\"} 1",
        "cairn_job_last_bytes_added{job=\"documents\"",
    ] {
        assert!(metrics.contains(want), "missing {want:?} in\n{metrics}");
    }
    assert!(
        !metrics.contains("cairn_job_last_success_timestamp_seconds{job=\"shop-db\""),
        "{metrics}"
    );
    let json = fetch("/status.json");
    assert!(json.contains("\"state\":\"failed\""), "{json}");

    let (dom, shot) = chromium(&format!("http://{}/", web.addr), s.dir.path());
    assert!(
        dom.contains("class=\"bad\" data-job=\"shop-db\"")
            && dom.contains("class=\"ok\" data-job=\"documents\"")
            && dom.contains("connection refused")
            && dom.contains("1 job needs attention"),
        "{dom}"
    );
    let red = red_pixels(&shot);
    assert!(red > 300, "only {red} red pixels in the screenshot");
    web.stop();

    // The same jobs on a box, with a pull from a machine that refuses.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let box_state = s.dir.path().join("box-state");
    let text = format!(
        r#"[daemon]
state = "{box_state}"

[server]
listen = "127.0.0.1:0"

[repository.home]
path = "{root}"
serve = true

[[job]]
name = "laptop"
kind = "pull"
repository = "home"
ssh = "nobody@127.0.0.1"
ssh_command = "ssh -p {port} -o ConnectTimeout=5"
paths = ["/home/me"]
every = "1d"
"#,
        box_state = box_state.display(),
        root = s.root.display(),
    );
    let config = cairn_daemon::config::Config::parse(Path::new("cairn.toml"), &text).unwrap();
    let server = config.server_config().unwrap();
    let r = cairn_daemon::boxed::start_with(server, config, None).unwrap();
    let t = Instant::now();
    while r.server.jobs.last("home", "laptop").is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the pull did not run"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (dom, shot) = chromium(
        &format!("https://127.0.0.1:{}/", r.addr.port()),
        s.dir.path(),
    );
    assert!(
        dom.contains("class=\"bad\" data-job=\"laptop\"") && dom.contains("FAILED"),
        "{dom}"
    );
    assert!(red_pixels(&shot) > 300);
    let (_, metrics) = raw(
        &r,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        metrics.contains("cairn_job_state{job=\"laptop\",state=\"failed\"} 1"),
        "{metrics}"
    );
    r.stop();
}
