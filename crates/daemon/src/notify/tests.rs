//! Every channel against a real receiver on loopback: a small HTTP server
//! for webhook, ntfy and healthchecks, aiosmtpd for email, `sh` for the
//! command; and the notifier's queue, retries and rate limit over them.

mod receiver;
mod smtp;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use receiver::Receiver;
use smtp::Smtp;

use super::*;

/// Long enough for a loaded CI machine; the tests end as soon as what
/// they wait for arrives.
const WAIT: Duration = Duration::from_secs(20);

fn event(job: &str, kind: EventKind) -> Event {
    Event {
        job: job.to_string(),
        kind,
        message: format!("{job}: {kind}\nsecond line"),
        time_ns: 1_735_787_045_000_000_000,
        host: "nas".to_string(),
    }
}

/// Options that retry fast and keep the log lines.
fn quick(limit: RateLimit) -> (Options, Arc<Mutex<Vec<String>>>) {
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = lines.clone();
    let options = Options {
        limit,
        retry: Retry {
            attempts: 3,
            first_delay: Duration::from_millis(10),
        },
        log: Arc::new(move |l| sink.lock().unwrap().push(l.to_string())),
    };
    (options, lines)
}

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn webhook(url: String) -> Channel {
    Channel::Webhook {
        url,
        headers: vec![("X-Key".into(), "v1".into())],
    }
}

#[test]
fn webhook_posts_the_documented_json() {
    let r = Receiver::start(200);
    let e = event("home", EventKind::Failed);
    deliver(&webhook(r.url("/hook/s3cr3t")), &e).unwrap();
    let req = &r.wait_for(1, WAIT)[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/hook/s3cr3t");
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("x-key"), Some("v1"));
    assert_eq!(
        req.json(),
        serde_json::json!({
            "version": 1,
            "host": "nas",
            "job": "home",
            "event": "failed",
            "message": "home: failed\nsecond line",
            "time": "2025-01-02T03:04:05Z",
        })
    );
}

#[test]
fn ntfy_sends_title_priority_tags_token_and_the_message_as_body() {
    let r = Receiver::start(200);
    let ch = Channel::Ntfy {
        url: r.url("/backups"),
        token: Some("tk_secret123".into()),
    };
    deliver(&ch, &event("home", EventKind::Failed)).unwrap();
    deliver(&ch, &event("home", EventKind::Recovered)).unwrap();
    let got = r.wait_for(2, WAIT);
    let (bad, good) = (&got[0], &got[1]);
    assert_eq!(bad.method, "POST");
    assert_eq!(bad.path, "/backups");
    assert_eq!(bad.body, "home: failed\nsecond line");
    assert_eq!(bad.header("title"), Some("home failed on nas"));
    assert_eq!(bad.header("priority"), Some("high"));
    assert_eq!(bad.header("tags"), Some("x,cairn"));
    assert_eq!(bad.header("authorization"), Some("Bearer tk_secret123"));
    assert_eq!(good.header("title"), Some("home recovered on nas"));
    assert_eq!(good.header("priority"), Some("default"));
    assert_eq!(good.header("tags"), Some("white_check_mark,cairn"));
    assert_eq!(good.body, "home: recovered\nsecond line");
}

#[test]
fn healthchecks_get_start_success_and_fail_pings_in_order() {
    let r = Receiver::start(200);
    let routes = vec![Route::new(Channel::Healthchecks {
        url: r.url("/ping/0f1e2d3c-uuid/"),
    })];
    let (options, log) = quick(RateLimit::default());
    let n = Notifier::with_options(routes, options);
    for kind in [
        EventKind::Started,
        EventKind::Succeeded,
        EventKind::Started,
        EventKind::Failed,
        EventKind::Recovered,
    ] {
        n.send(event("home", kind));
    }
    assert!(n.flush(WAIT));
    let got = r.requests();
    let paths: Vec<&str> = got.iter().map(|q| q.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/ping/0f1e2d3c-uuid/start",
            "/ping/0f1e2d3c-uuid",
            "/ping/0f1e2d3c-uuid/start",
            "/ping/0f1e2d3c-uuid/fail",
            "/ping/0f1e2d3c-uuid",
        ]
    );
    assert_eq!(got[3].body, "home: failed\nsecond line");
    assert!(got.iter().all(|q| q.method == "POST"));
    assert!(log.lock().unwrap().is_empty());
}

#[test]
fn a_500_is_an_error_that_names_the_receiver_but_not_the_path() {
    let r = Receiver::start(500);
    let e = deliver(
        &webhook(r.url("/hook/s3cr3t")),
        &event("home", EventKind::Failed),
    )
    .unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(
            e,
            NotifyError::Rejected {
                permanent: false,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_retryable());
    assert!(
        text.contains(&format!("webhook http://{}/…", r.addr)),
        "{text}"
    );
    assert!(text.contains("500"), "{text}");
    assert!(!text.contains("s3cr3t"), "{text}");
}

#[test]
fn a_500_is_retried_a_bounded_number_of_times_then_logged_as_lost() {
    let r = Receiver::start(500);
    let (options, log) = quick(RateLimit::default());
    let n = Notifier::with_options(vec![Route::new(webhook(r.url("/hook/s3cr3t")))], options);
    n.send(event("home", EventKind::Failed));
    assert!(n.flush(WAIT));
    assert_eq!(r.requests().len(), 3);
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 3, "{log:#?}");
    assert!(log[0].contains("attempt 1 of 3"), "{log:#?}");
    assert!(log[1].contains("attempt 2 of 3"), "{log:#?}");
    assert!(
        log[2].starts_with("notify: the failed event of job \"home\" is lost after 3 attempts: webhook http://127.0.0.1:"),
        "{log:#?}"
    );
    assert!(log[2].contains("500"), "{log:#?}");
    assert!(log.iter().all(|l| !l.contains("s3cr3t")), "{log:#?}");
}

#[test]
fn a_404_is_not_retried() {
    let r = Receiver::start(404);
    let (options, log) = quick(RateLimit::default());
    let n = Notifier::with_options(vec![Route::new(webhook(r.url("/hook")))], options);
    n.send(event("home", EventKind::Failed));
    assert!(n.flush(WAIT));
    assert_eq!(r.requests().len(), 1);
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 1, "{log:#?}");
    assert!(log[0].contains("check the URL"), "{log:#?}");
    assert!(log[0].contains("not retried"), "{log:#?}");
}

#[test]
fn an_unreachable_receiver_is_a_clear_error_without_secrets() {
    let port = closed_port();
    let ch = Channel::Ntfy {
        url: format!("http://user:pa55word@127.0.0.1:{port}/my-secret-topic"),
        token: Some("tk_secret123".into()),
    };
    let t0 = Instant::now();
    let e = deliver(&ch, &event("home", EventKind::Failed)).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(10));
    let text = e.to_string();
    assert!(matches!(e, NotifyError::Unreachable { .. }), "{e:?}");
    assert_eq!(
        text,
        format!("ntfy http://127.0.0.1:{port}/…: cannot reach it: connection refused")
    );
    for secret in ["pa55word", "my-secret-topic", "tk_secret123"] {
        assert!(!format!("{e:?} {ch:?} {ch}").contains(secret), "{secret}");
    }
}

#[test]
fn rate_limit_delivers_ten_then_one_summary_of_the_rest() {
    let r = Receiver::start(200);
    let (options, log) = quick(RateLimit::default());
    let n = Notifier::with_options(vec![Route::new(webhook(r.url("/hook")))], options);
    for i in 0..15 {
        n.send(event(&format!("job{i}"), EventKind::Failed));
    }
    // The flush sends the summary without waiting out the hour.
    assert!(n.flush(WAIT));
    let got = r.requests();
    assert_eq!(got.len(), 11, "{got:#?}");
    for (i, q) in got[..10].iter().enumerate() {
        assert_eq!(q.json()["job"], format!("job{i}"));
    }
    let summary = got[10].json();
    assert_eq!(summary["event"], "held_back");
    assert_eq!(summary["job"], serde_json::Value::Null);
    assert_eq!(summary["held_back_total"], 5);
    let held: Vec<&str> = summary["held_back"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            assert_eq!(x["event"], "failed");
            x["job"].as_str().unwrap()
        })
        .collect();
    assert_eq!(held, ["job10", "job11", "job12", "job13", "job14"]);
    let message = summary["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "5 more alerts were held back by the rate limit (10 per hour):\n- job10 failed at "
        ),
        "{message}"
    );
    assert!(log.lock().unwrap().is_empty());
}

#[test]
fn a_held_back_summary_goes_out_when_the_window_allows() {
    let r = Receiver::start(200);
    let window = Duration::from_millis(300);
    let (options, _) = quick(RateLimit { max: 2, window });
    let ch = Channel::Ntfy {
        url: r.url("/topic"),
        token: None,
    };
    let n = Notifier::with_options(vec![Route::new(ch)], options);
    let t0 = Instant::now();
    for job in ["a", "b", "c", "d"] {
        n.send(event(job, EventKind::Recovered));
    }
    // No flush: the summary waits for the oldest send to leave the window.
    let got = r.wait_for(3, WAIT);
    assert!(
        got[2].at.duration_since(t0) >= window,
        "{:?}",
        got[2].at - t0
    );
    assert_eq!(got[2].header("title"), Some("2 alerts held back on nas"));
    // Only recoveries were held: nothing urgent.
    assert_eq!(got[2].header("priority"), Some("default"));
    assert!(got[2].body.contains("- c recovered at "), "{}", got[2].body);
    assert!(got[2].body.contains("- d recovered at "), "{}", got[2].body);
    assert!(n.flush(WAIT));
    assert_eq!(r.requests().len(), 3);
}

#[test]
fn healthchecks_pings_are_never_rate_limited() {
    let r = Receiver::start(200);
    let (options, _) = quick(RateLimit {
        max: 1,
        window: Duration::from_secs(3600),
    });
    let n = Notifier::with_options(
        vec![Route::new(Channel::Healthchecks {
            url: r.url("/ping/u"),
        })],
        options,
    );
    for _ in 0..15 {
        n.send(event("home", EventKind::Failed));
    }
    assert!(n.flush(WAIT));
    let got = r.requests();
    assert_eq!(got.len(), 15);
    assert!(got.iter().all(|q| q.path == "/ping/u/fail"));
}

#[test]
fn routes_filter_jobs_and_pings_go_to_healthchecks_only() {
    let hook = Receiver::start(200);
    let ping = Receiver::start(200);
    let routes = vec![
        Route {
            channel: webhook(hook.url("/hook")),
            jobs: vec!["home".into()],
        },
        Route::new(Channel::Healthchecks {
            url: ping.url("/p"),
        }),
    ];
    let (options, _) = quick(RateLimit::default());
    let n = Notifier::with_options(routes, options);
    n.send(event("home", EventKind::Started));
    n.send(event("photos", EventKind::Failed));
    n.send(event("home", EventKind::Succeeded));
    n.send(event("home", EventKind::Overdue));
    assert!(n.flush(WAIT));
    let hooks = hook.requests();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].json()["job"], "home");
    assert_eq!(hooks[0].json()["event"], "overdue");
    let pings: Vec<String> = ping.requests().into_iter().map(|q| q.path).collect();
    assert_eq!(pings, ["/p/start", "/p/fail", "/p", "/p/fail"]);
}

#[test]
fn a_hung_receiver_stalls_neither_send_nor_the_other_channels() {
    let hung = Receiver::silent();
    let ok = Receiver::start(200);
    let (options, _) = quick(RateLimit::default());
    let n = Notifier::with_options(
        vec![
            Route::new(webhook(hung.url("/hook"))),
            Route::new(webhook(ok.url("/hook"))),
        ],
        options,
    );
    let t0 = Instant::now();
    for i in 0..5 {
        n.send(event(&format!("job{i}"), EventKind::Failed));
    }
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(ok.wait_for(5, WAIT).len(), 5);
    hung.wait_for(1, WAIT);
    // The hung channel is still on its first delivery.
    assert!(!n.flush(Duration::from_millis(100)));
}

#[test]
fn email_reaches_a_real_smtp_server() {
    let s = Smtp::start();
    let ch = Channel::Email {
        server: "127.0.0.1".into(),
        port: s.port,
        tls: EmailTls::None,
        username: None,
        password: None,
        from: "Cairn <cairn@nas.example.org>".into(),
        to: vec!["admin@example.org".into(), "Ops <ops@example.org>".into()],
    };
    deliver(&ch, &event("home", EventKind::Failed)).unwrap();
    let m = &s.wait_for(1, WAIT)[0];
    assert_eq!(m["mail_from"], "cairn@nas.example.org");
    assert_eq!(
        m["rcpt_tos"],
        serde_json::json!(["admin@example.org", "ops@example.org"])
    );
    assert_eq!(m["subject"], "[cairn] home failed on nas");
    assert_eq!(m["from"], "Cairn <cairn@nas.example.org>");
    assert_eq!(m["content_type"], "text/plain");
    let body = m["body"].as_str().unwrap().replace("\r\n", "\n");
    assert!(
        body.starts_with("home: failed\nsecond line\n\njob:   home\nevent: failed\nhost:  nas\ntime:  2025-01-02T03:04:05Z"),
        "{body}"
    );
}

#[test]
fn email_logs_in_and_a_refused_login_is_a_clear_error_without_the_password() {
    let s = Smtp::start();
    let channel = |password: &str| Channel::Email {
        server: "localhost".into(),
        port: s.port,
        tls: EmailTls::None,
        username: Some("cairn".into()),
        password: Some(password.into()),
        from: "cairn@nas.example.org".into(),
        to: vec!["admin@example.org".into()],
    };
    deliver(
        &channel(smtp::PASSWORD),
        &event("home", EventKind::Recovered),
    )
    .unwrap();
    let m = &s.wait_for(1, WAIT)[0];
    assert_eq!(m["authenticated"], true);
    assert_eq!(m["subject"], "[cairn] home recovered on nas");

    let wrong = channel("wrong-password-42");
    let e = deliver(&wrong, &event("home", EventKind::Failed)).unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(
            e,
            NotifyError::Rejected {
                permanent: true,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        text.starts_with(&format!("email via localhost:{}: ", s.port)),
        "{text}"
    );
    assert!(text.contains("535"), "{text}");
    assert!(text.contains("refused the login as \"cairn\""), "{text}");
    assert!(!format!("{text} {e:?} {wrong:?}").contains("wrong-password-42"));
    assert_eq!(s.messages().len(), 1);
}

#[test]
fn email_never_falls_back_to_plain_text() {
    // This server offers no STARTTLS and speaks no TLS.
    let s = Smtp::start();
    let channel = |tls| Channel::Email {
        server: "127.0.0.1".into(),
        port: s.port,
        tls,
        username: Some("cairn".into()),
        password: Some(smtp::PASSWORD.into()),
        from: "cairn@nas.example.org".into(),
        to: vec!["admin@example.org".into()],
    };
    let e = deliver(
        &channel(EmailTls::StartTls),
        &event("home", EventKind::Failed),
    )
    .unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with(&format!("email via 127.0.0.1:{}: ", s.port)),
        "{text}"
    );
    assert!(text.contains("STARTTLS"), "{text}");
    assert!(!e.is_retryable(), "{e:?}");
    let e = deliver(&channel(EmailTls::Tls), &event("home", EventKind::Failed)).unwrap_err();
    assert!(matches!(e, NotifyError::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains("TLS"), "{e}");
    assert!(s.messages().is_empty());
}

#[test]
fn email_to_a_closed_port_is_unreachable() {
    let port = closed_port();
    let ch = Channel::Email {
        server: "127.0.0.1".into(),
        port,
        tls: EmailTls::None,
        username: None,
        password: None,
        from: "cairn@nas.example.org".into(),
        to: vec!["admin@example.org".into()],
    };
    let e = deliver(&ch, &event("home", EventKind::Failed)).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("email via 127.0.0.1:{port}: cannot reach it: connection refused")
    );
}

#[test]
fn plain_email_to_a_remote_server_is_refused_before_connecting() {
    let ch = Channel::Email {
        server: "mail.example.org".into(),
        port: 25,
        tls: EmailTls::None,
        username: Some("cairn".into()),
        password: Some("hunter2-secret".into()),
        from: "cairn@nas.example.org".into(),
        to: vec!["admin@example.org".into()],
    };
    let t0 = Instant::now();
    let e = deliver(&ch, &event("home", EventKind::Failed)).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert!(matches!(e, NotifyError::Config { .. }), "{e:?}");
    assert!(!e.is_retryable());
    let text = e.to_string();
    assert!(
        text.starts_with("email via mail.example.org:25: tls = \"none\""),
        "{text}"
    );
    assert!(!text.contains("hunter2"));
}

/// A fresh directory under the system's temporary one.
fn scratch(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("cairn-notify-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_command_gets_the_json_on_stdin_and_the_fields_in_its_environment() {
    let dir = scratch("command");
    let script = r#"cat > "$1/stdin.json" && printf '%s|%s|%s|%s|%s' "$CAIRN_JOB" "$CAIRN_EVENT" "$CAIRN_MESSAGE" "$CAIRN_HOST" "$CAIRN_TIME" > "$1/env.txt""#;
    let ch = Channel::Command {
        argv: vec![
            "sh".into(),
            "-c".into(),
            script.into(),
            "sh".into(),
            dir.to_string_lossy().into_owned(),
        ],
    };
    deliver(&ch, &event("home", EventKind::Overdue)).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("stdin.json")).unwrap()).unwrap();
    assert_eq!(json["version"], 1);
    assert_eq!(json["job"], "home");
    assert_eq!(json["event"], "overdue");
    assert_eq!(json["message"], "home: overdue\nsecond line");
    assert_eq!(
        std::fs::read_to_string(dir.join("env.txt")).unwrap(),
        "home|overdue|home: overdue\nsecond line|nas|2025-01-02T03:04:05Z"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_command_that_fails_says_how_with_its_stderr() {
    let ch = Channel::Command {
        argv: vec![
            "sh".into(),
            "-c".into(),
            "echo 'first' >&2; echo 'gateway said no' >&2; exit 3".into(),
        ],
    };
    let e = deliver(&ch, &event("home", EventKind::Failed)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "command sh: exited with status 3: gateway said no"
    );
    let missing = Channel::Command {
        argv: vec!["/nonexistent/cairn-notify".into()],
    };
    let e = deliver(&missing, &event("home", EventKind::Failed)).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("command /nonexistent/cairn-notify: cannot start it: "),
        "{e}"
    );
    let empty = Channel::Command { argv: vec![] };
    assert!(matches!(
        deliver(&empty, &event("home", EventKind::Failed)),
        Err(NotifyError::Config { .. })
    ));
}

#[test]
fn a_bad_header_is_a_config_error_not_a_panic() {
    let r = Receiver::start(200);
    for (k, v) in [("Bad Header", "v"), ("X-Key", "line\r\nInjected: 1")] {
        let ch = Channel::Webhook {
            url: r.url("/hook"),
            headers: vec![(k.into(), v.into())],
        };
        let e = deliver(&ch, &event("home", EventKind::Failed)).unwrap_err();
        assert!(matches!(e, NotifyError::Config { .. }), "{e:?}");
    }
    // A job name with a line break still makes a valid ntfy title.
    let ch = Channel::Ntfy {
        url: r.url("/topic"),
        token: None,
    };
    deliver(&ch, &event("odd\njob", EventKind::Failed)).unwrap();
    let got = r.wait_for(1, WAIT);
    assert!(got[0].header("title").unwrap().starts_with("=?UTF-8?B?"));
}

#[test]
fn dropping_the_notifier_ends_a_pending_retry_at_once() {
    let r = Receiver::start(503);
    let (mut options, log) = quick(RateLimit::default());
    options.retry.first_delay = Duration::from_secs(3600);
    let n = Notifier::with_options(vec![Route::new(webhook(r.url("/hook")))], options);
    n.send(event("home", EventKind::Failed));
    r.wait_for(1, WAIT);
    assert!(!n.flush(Duration::from_millis(50)));
    let t0 = Instant::now();
    drop(n);
    assert!(t0.elapsed() < Duration::from_secs(1));
    let deadline = Instant::now() + WAIT;
    while !log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("the daemon is stopping"))
    {
        assert!(Instant::now() < deadline, "{:#?}", log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(r.requests().len(), 1);
}

#[test]
fn a_notifier_is_shared_across_threads_and_empty_is_flushed() {
    fn shared<T: Send + Sync>() {}
    shared::<Notifier>();
    let n = Notifier::new(Vec::new(), RateLimit::default());
    n.send(event("home", EventKind::Failed));
    assert!(n.flush(Duration::ZERO));
}
