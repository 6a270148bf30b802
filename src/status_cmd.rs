//! `bulkhead status`: the running server's `?peruser_stats` page, fetched from its
//! first `listen` address (a wildcard address asked on loopback) like any local client,
//! and printed as plain text tables. The status page's own access rule applies (by
//! default root's local connections only).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context};

/// The most of a status page read.
const MAX_PAGE: u64 = 4 << 20;
const TIMEOUT: Duration = Duration::from_secs(10);

/// Where to ask: `addr` as given, a wildcard as its loopback.
pub fn target(cfg: &conf::Config) -> anyhow::Result<SocketAddr> {
    let Some(first) = cfg.server.listen.first() else {
        bail!(
            "{}: no [server] listen address to ask for the status page",
            cfg.path.display()
        );
    };
    let ip = match first.ip() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok(SocketAddr::new(ip, first.port()))
}

/// Fetches `path?peruser_stats` from `addr`; the page's HTML.
pub fn fetch(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut s =
        TcpStream::connect_timeout(&addr, TIMEOUT).with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    write!(
        s,
        "GET {path}?peruser_stats HTTP/1.0\r\nHost: localhost\r\nUser-Agent: bulkhead-status\r\n\r\n"
    )
    .with_context(|| format!("asking {addr}"))?;
    let mut raw = Vec::new();
    s.take(MAX_PAGE)
        .read_to_end(&mut raw)
        .with_context(|| format!("reading from {addr}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        bail!(
            "http://{addr}{path}?peruser_stats answered {status:?}: {}",
            strip(body).trim()
        );
    }
    Ok(body.to_owned())
}

/// Every `<h2>` title and `<table>` of the page as aligned text.
pub fn render(html: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    let mut title = String::new();
    loop {
        let h2 = rest.find("<h2>");
        let table = rest.find("<table");
        match (h2, table) {
            (Some(h), t) if t.is_none_or(|t| h < t) => {
                let after = &rest[h + 4..];
                let end = after.find("</h2>").unwrap_or(after.len());
                title = strip(&after[..end]);
                rest = &after[end..];
            }
            (_, Some(t)) => {
                let after = &rest[t..];
                let end = after.find("</table>").map_or(after.len(), |e| e + 8);
                let rows = rows(&after[..end]);
                if !out.is_empty() {
                    out.push('\n');
                }
                if !title.is_empty() {
                    out.push_str(&title);
                    out.push('\n');
                }
                out.push_str(&align(&rows));
                title.clear();
                rest = &after[end..];
            }
            _ => break,
        }
    }
    out
}

/// The cells of each `<tr>`, tags stripped and entities decoded.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .split("<tr>")
        .skip(1)
        .map(|tr| {
            let tr = tr.split("</tr>").next().unwrap_or("");
            tr.split("<t")
                .skip(1)
                .filter(|c| c.starts_with('d') || c.starts_with('h'))
                .map(|c| strip(&format!("<t{c}")))
                .collect()
        })
        .collect()
}

/// Columns padded to their widest cell; numbers right-aligned.
fn align(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c > 0 {
                line.push_str("  ");
            }
            let numeric = cell.chars().next().is_some_and(|ch| ch.is_ascii_digit());
            let pad = width[c].saturating_sub(cell.chars().count());
            if numeric {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Text without tags, with the entities the page writes decoded.
fn strip(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for ch in html.chars() {
        match ch {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_tables_with_their_titles() {
        let page = "<h1>x</h1><h2>Environments</h2>\n<table>\n<thead><tr><th>ID</th><th>Environment</th>\
                    </tr></thead>\n<tbody>\n<tr><td class=\"n\">12</td><td>a&amp;b</td></tr>\n\
                    <tr><td class=\"n\">3</td><td>carol</td></tr>\n</tbody>\n</table>\n";
        assert_eq!(
            render(page),
            "Environments\nID  Environment\n12  a&b\n 3  carol\n"
        );
    }
}
