//! The HTTP/1.1 connection: keep-alive, pipelining, timeouts, framing, limits, bodies,
//! methods, hand-back and shutdown.

use super::*;

#[tokio::test]
async fn keep_alive_and_pipelining() {
    let root = docroot();
    let big = std::fs::read(root.path().join("big.bin")).unwrap();
    let (out, ()) = run(root.path(), cfg(), true, |mut c, _tx| async move {
        c.send(
            b"GET /a.txt HTTP/1.1\r\nHost: a.test\r\n\r\nGET /b.txt HTTP/1.1\r\nHost: a.test\r\n\r\n\
              HEAD /a.txt HTTP/1.1\r\nHost: a.test\r\n\r\n",
        )
        .await;
        let a = c.response(false).await;
        assert_eq!((a.status, a.body.as_slice()), (200, &b"alpha"[..]));
        assert_eq!(a.header("Server"), Some("bulkhead"));
        assert!(a.header("Date").is_some() && a.header("Connection").is_none());
        assert_eq!(a.header("Content-Type"), Some("text/plain; charset=utf-8"));
        assert_eq!(a.header("Accept-Ranges"), Some("bytes"));
        let b = c.response(false).await;
        assert_eq!((b.status, b.body.as_slice()), (200, &b"bravo"[..]));
        let h = c.response(true).await;
        assert_eq!((h.status, h.header("Content-Length")), (200, Some("5")));
        assert!(c.get("/big.bin").await.body == big);
        c.send(b"GET /a.txt HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
            .await;
        let last = c.response(false).await;
        assert_eq!(last.header("Connection"), Some("close"));
        assert!(c.rest().await.is_empty());
    })
    .await;
    assert_eq!(out, Outcome::Closed);
}

#[tokio::test]
async fn http_1_0() {
    let root = docroot();
    run(root.path(), cfg(), true, |mut c, _tx| async move {
        c.send(b"GET /a.txt HTTP/1.0\r\n\r\n").await;
        let r = c.response(false).await;
        assert_eq!((r.status, r.header("Connection")), (200, Some("close")));
        assert!(c.rest().await.is_empty());
    })
    .await;
    run(root.path(), cfg(), true, |mut c, _tx| async move {
        c.send(b"GET /a.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .await;
        let r = c.response(false).await;
        assert_eq!((r.status, r.header("Connection")), (200, Some("keep-alive")));
        c.send(b"GET /b.txt HTTP/1.0\r\n\r\n").await;
        assert_eq!(c.response(false).await.body, b"bravo");
        assert!(c.rest().await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn keep_alive_timeout_and_zero() {
    let root = docroot();
    let short = ConnConfig {
        keep_alive_timeout: Duration::from_millis(200),
        ..cfg()
    };
    run(root.path(), short, true, |mut c, _tx| async move {
        assert_eq!(c.get("/a.txt").await.status, 200);
        assert!(c.rest().await.is_empty(), "closed silently when idle");
    })
    .await;
    let none = ConnConfig {
        keep_alive_timeout: Duration::ZERO,
        ..cfg()
    };
    run(root.path(), none, true, |mut c, _tx| async move {
        c.send(b"GET /a.txt HTTP/1.1\r\nHost: a.test\r\n\r\nGET /b.txt HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .await;
        assert_eq!(c.response(false).await.header("Connection"), Some("close"));
        assert!(c.rest().await.is_empty());
    })
    .await;
}

/// Send `req` followed by a valid pipelined request; expect one 400 and then EOF.
async fn refused(root: &Path, req: &str, status: u16) {
    let sent = req.to_owned();
    let (out, text) = run(root, cfg(), false, |mut c, _tx| async move {
        c.send(format!("{sent}GET /a.txt HTTP/1.1\r\nHost: a.test\r\n\r\n").as_bytes())
            .await;
        String::from_utf8_lossy(&c.rest().await).into_owned()
    })
    .await;
    assert!(
        text.starts_with(&format!("HTTP/1.1 {status} ")),
        "{req:?} → {text}"
    );
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{req:?} → {text}");
    assert!(text.contains("\r\nConnection: close\r\n"), "{req:?} → {text}");
    assert_eq!(out, Outcome::Closed);
}

#[tokio::test]
async fn framing_errors_close_with_400() {
    let root = docroot();
    let get = "GET /a.txt HTTP/1.1\r\nHost: a.test\r\n";
    for case in [
        format!("{get}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
        format!("{get}Transfer-Encoding: gzip\r\n\r\n"),
        format!("{get}Transfer-Encoding: chunked, gzip\r\n\r\n"),
        "GET /a.txt HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_owned(),
        format!("{get}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
        format!("{get}Content-Length: +5\r\n\r\nhello"),
        format!("{get}Content-Length: -1\r\n\r\n"),
        format!("{get}Content-Length: 5x\r\n\r\nhello"),
        format!("{get}Content-Length: \r\n\r\n"),
        format!("{get}Content-Length: 99999999999999999999999\r\n\r\n"),
        format!("{get}Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
        format!("{get}Transfer-Encoding: chunked\r\n\r\n5;\r\nhello\r\n0\r\n\r\n"),
        format!("{get}Transfer-Encoding: chunked\r\n\r\n5;a=\"b\r\nhello\r\n0\r\n\r\n"),
        format!("{get}Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"),
        format!("{get}Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"),
        format!("{get}Transfer-Encoding: chunked\r\n\r\n0\r\nno colon here\r\n\r\n"),
        "GET /a.txt HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n".to_owned(),
        "GET /a.txt HTTP/1.1\r\n\r\n".to_owned(),
        "GET /a.txt HTTP/1.1\r\nHost: a.test\r\n folded\r\n\r\n".to_owned(),
        "GET a.txt HTTP/1.1\r\nHost: a.test\r\n\r\n".to_owned(),
        "GET * HTTP/1.1\r\nHost: a.test\r\n\r\n".to_owned(),
    ] {
        refused(root.path(), &case, 400).await;
    }
    refused(root.path(), "GET / HTTP/2.0\r\nHost: a.test\r\n\r\n", 505).await;
    refused(root.path(), "GET / HTTP/1.2\r\nHost: a.test\r\n\r\n", 505).await;
}

#[tokio::test]
async fn head_limits() {
    let root = docroot();
    let small = ConnConfig {
        limit_request_head: 1024,
        ..cfg()
    };
    for (req, status) in [
        (
            format!(
                "GET /a.txt HTTP/1.1\r\nHost: a.test\r\nX-Big: {}\r\n\r\n",
                "x".repeat(2000)
            ),
            431,
        ),
        (
            format!("GET /{} HTTP/1.1\r\nHost: a.test\r\n\r\n", "x".repeat(2000)),
            414,
        ),
        (
            format!(
                "GET /a.txt HTTP/1.1\r\nHost: a.test\r\n{}\r\n",
                "X-A: b\r\n".repeat(120)
            ),
            431,
        ),
    ] {
        let (_, text) = run(root.path(), small.clone(), false, |mut c, _tx| async move {
            c.send(req.as_bytes()).await;
            String::from_utf8_lossy(&c.rest().await).into_owned()
        })
        .await;
        assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
    }
}

#[tokio::test]
async fn stalled_head_gets_408() {
    let root = docroot();
    let quick = ConnConfig {
        head_timeout: common::http::rate::RateTimeout::fixed(Duration::from_millis(300)),
        ..cfg()
    };
    let (_, text) = run(root.path(), quick, true, |mut c, _tx| async move {
        c.send(b"GET /a.txt HTTP/1.1\r\nHost: a.test\r\n\r\nGET /b.txt HTTP/1.1\r\n")
            .await;
        assert_eq!(c.response(false).await.status, 200);
        String::from_utf8_lossy(&c.rest().await).into_owned()
    })
    .await;
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
}

/// `limit_request_body` (Apache's LimitRequestBody) for static files too: a declared
/// length over it is 413 before its body is read, a chunked body 413 once it passes
/// it; the connection is closed either way; a body within it is read and discarded.
#[tokio::test]
async fn static_bodies_over_limit_request_body_are_413() {
    let root = docroot();
    let site = || {
        let mut s = Site::plain(1, "a.test", root.path().to_path_buf());
        s.cgi.body_limit = 10;
        s
    };
    run_site(site(), cfg(), true, |mut c, _tx| async move {
        c.send(b"GET /a.txt HTTP/1.1\r\nHost: a.test\r\nContent-Length: 10\r\n\r\n0123456789")
            .await;
        assert_eq!(c.response(false).await.body, b"alpha");
        c.send(b"POST /a.txt HTTP/1.1\r\nHost: a.test\r\nContent-Length: 11\r\n\r\n")
            .await;
        let r = c.response(false).await;
        assert_eq!((r.status, r.header("Connection")), (413, Some("close")));
    })
    .await;
    run_site(site(), cfg(), true, |mut c, _tx| async move {
        c.send(b"POST /a.txt HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n6\r\nghijkl\r\n")
            .await;
        let r = c.response(false).await;
        assert_eq!((r.status, r.header("Connection")), (413, Some("close")));
    })
    .await;
}

#[tokio::test]
async fn bodies_are_discarded() {
    let root = docroot();
    run(root.path(), cfg(), true, |mut c, _tx| async move {
        c.send(
            b"POST /a.txt HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;ext=1\r\nGET /\r\n17\r\nGET /b.txt HTTP/1.1\r\n\r\n\r\n0\r\nX-Trailer: GET\r\n\r\n\
              GET /a.txt HTTP/1.1\r\nHost: a.test\r\nContent-Length: 37\r\n\r\n\
              GET /b.txt HTTP/1.1\r\nHost: a.test\r\n\r\n\
              GET /b.txt HTTP/1.1\r\nHost: a.test\r\n\r\n",
        )
        .await;
        let r = c.response(false).await;
        assert_eq!((r.status, r.header("Allow")), (405, Some("GET, HEAD, OPTIONS")));
        assert_eq!(c.response(false).await.body, b"alpha");
        assert_eq!(c.response(false).await.body, b"bravo");
        // Expect: 100-continue on a request we answer normally: 100, then the answer.
        c.send(b"GET /a.txt HTTP/1.1\r\nHost: a.test\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
            .await;
        assert_eq!(c.response(false).await.status, 100);
        c.send(b"abc").await;
        assert_eq!(c.response(false).await.body, b"alpha");
        // ... and on one we refuse: the answer at once, then close.
        c.send(b"PUT /a.txt HTTP/1.1\r\nHost: a.test\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
            .await;
        let r = c.response(false).await;
        assert_eq!((r.status, r.header("Connection")), (405, Some("close")));
        assert!(c.rest().await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn methods() {
    let root = docroot();
    run(root.path(), cfg(), true, |mut c, _tx| async move {
        for m in ["DELETE", "POST", "PUT", "TRACE", "get", "FOO"] {
            c.send(format!("{m} /a.txt HTTP/1.1\r\nHost: a.test\r\n\r\n").as_bytes())
                .await;
            let r = c.response(false).await;
            assert_eq!(
                (r.status, r.header("Allow")),
                (405, Some("GET, HEAD, OPTIONS")),
                "{m}"
            );
        }
        c.send(b"OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
        let r = c.response(false).await;
        assert_eq!(
            (r.status, r.header("Allow"), r.header("Content-Length")),
            (200, Some("GET, HEAD, OPTIONS"), Some("0"))
        );
        c.send(b"HEAD /missing HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
        let r = c.response(true).await;
        assert_eq!(r.status, 404);
        assert_eq!(c.get("/a.txt").await.body, b"alpha");
    })
    .await;
}

#[tokio::test]
async fn hand_back_returns_every_unread_byte() {
    let root = docroot();
    let later = b"GET /x HTTP/1.1\r\nHost: other.test:8080\r\nContent-Length: 4\r\n\r\nbodyGET /a.txt HTTP/1.1\r\nHost: a.test\r\n\r\nGET /par";
    let (out, ()) = run(root.path(), cfg(), true, |mut c, _tx| async move {
        let mut all = b"GET /a.txt HTTP/1.1\r\nHost: a.test\r\n\r\nGET /b.txt HTTP/1.1\r\nHost: a.test\r\nContent-Length: 2\r\n\r\nxy\r\n".to_vec();
        all.extend_from_slice(later);
        c.send(&all).await;
        assert_eq!(c.response(false).await.body, b"alpha");
        assert_eq!(c.response(false).await.body, b"bravo");
        assert!(c.rest().await.is_empty(), "nothing of the handed-back request is answered");
    })
    .await;
    assert_eq!(out, Outcome::HandBack(later.to_vec()));
    // The first request is never re-routed.
    let (out, ()) = run(root.path(), cfg(), true, |mut c, _tx| async move {
        c.send(b"GET /a.txt HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n")
            .await;
        assert_eq!(c.response(false).await.body, b"alpha");
    })
    .await;
    assert_eq!(out, Outcome::Closed);
}

#[tokio::test]
async fn shutdown_finishes_the_response_in_progress() {
    let root = docroot();
    let big = std::fs::read(root.path().join("big.bin")).unwrap();
    run(root.path(), cfg(), true, |mut c, tx| async move {
        assert_eq!(c.get("/a.txt").await.status, 200);
        c.send(b"GET /big.bin HTTP/1.1\r\nHost: a.test\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .await;
        // Read only the start, then ask for shutdown mid-download.
        while c.buf.len() < 1000 {
            assert!(c.fill().await > 0);
        }
        tx.send(Stop::Now).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = c.response(false).await;
        assert!(r.body == big, "the download completes");
        let rest = c.rest().await;
        assert!(
            rest.is_empty(),
            "no further request is read: {:?}",
            String::from_utf8_lossy(&rest)
        );
    })
    .await;
    // Shutdown already requested: the handed-over request is answered with close.
    run(root.path(), cfg(), true, |mut c, tx| async move {
        tx.send(Stop::Now).unwrap();
        c.send(b"GET /a.txt HTTP/1.1\r\nHost: a.test\r\n\r\nGET /b.txt HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .await;
        let r = c.response(false).await;
        assert_eq!(
            (r.body.as_slice(), r.header("Connection")),
            (&b"alpha"[..], Some("close"))
        );
        assert!(c.rest().await.is_empty());
    })
    .await;
}
