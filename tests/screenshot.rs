//! A look for people: the HTML status page rendered by headless Chromium (Debian's
//! `chromium`) is a real picture of the child table, and the DOM Chromium built holds
//! the table with every environment. The PNG is kept under Cargo's target tmp dir and
//! its path printed, so a person can look at it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::util::*;

/// The flags that make Chromium run headless as root without touching the network.
fn chromium(bin: &Path, profile: &Path) -> Command {
    let mut c = Command::new(bin);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,800",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .env("HOME", profile);
    c
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    if png.len() < 24 || &png[..8] != b"\x89PNG\r\n\x1a\n" || &png[12..16] != b"IHDR" {
        return None;
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Some((be(&png[16..20]), be(&png[20..24])))
}

#[test]
fn status_page_renders_in_headless_chromium() {
    require_root!();
    let Some(bin) = require_tool("chromium", "chromium") else {
        return;
    };
    let w = Dir::new("status_page_renders_in_headless_chromium");
    put(w.path(), "alice/index.html", b"alice home", ALICE, 0o644);
    put(w.path(), "bob/index.html", b"bob home", BOB, 0o644);
    let server = TestServer::start(&two_env_config(w.path(), ""));
    for (host, n) in [("alice.test", 12), ("bob.test", 5)] {
        for _ in 0..n {
            assert_eq!(get(server.addr, host, "/").status, 200);
        }
    }
    let url = format!("http://{}/server-status", server.addr);
    let limit = Duration::from_secs(30);

    // The screenshot, kept where a person can open it.
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&out_dir).unwrap();
    let png = out_dir.join("bulkhead-status-page.png");
    let _ = std::fs::remove_file(&png);
    let profile = tempfile::tempdir().unwrap();
    let out = run_bounded(
        chromium(&bin, profile.path())
            .arg(format!("--screenshot={}", png.display()))
            .arg(&url),
        None,
        limit,
    )
    .unwrap_or_else(|| panic!("chromium --screenshot took more than {limit:?}"));
    let bytes = std::fs::read(&png).unwrap_or_else(|e| {
        panic!(
            "no screenshot at {} ({e}); chromium {}:\n{}",
            png.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    println!("status page screenshot: {}", png.display());
    assert!(
        bytes.len() > 10 * 1024,
        "the screenshot is only {} bytes: {}",
        bytes.len(),
        png.display()
    );
    assert_eq!(png_size(&bytes), Some((1280, 800)), "{}", png.display());

    // The DOM Chromium built from the page.
    let profile = tempfile::tempdir().unwrap();
    let out = run_bounded(
        chromium(&bin, profile.path()).arg("--dump-dom").arg(&url),
        None,
        limit,
    )
    .unwrap_or_else(|| panic!("chromium --dump-dom took more than {limit:?}"));
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chromium --dump-dom: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dom.contains("<table"), "no table in the DOM:\n{dom}");
    assert!(
        dom.contains("SB STATUS"),
        "no SB STATUS column in the DOM:\n{dom}"
    );
    for env in ["alice", "bob"] {
        assert!(
            dom.contains(&format!("<td>{env}</td>")),
            "environment {env} is not in the table:\n{dom}"
        );
    }
    for pid in server.serving_children() {
        assert!(
            dom.contains(&format!(">{pid}</td>")),
            "child {pid} is not in the table:\n{dom}"
        );
    }
}
