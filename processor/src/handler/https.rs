//! A vhost's HTTPS policy: `redirect_to_https` sends a request made over plain HTTP to
//! the same URL over HTTPS (301 for GET and HEAD, 308 otherwise, which keeps the method
//! and body), except under `/.well-known/acme-challenge/`, served from the document
//! root over plain HTTP so that an ACME client's webroot challenge works unchanged;
//! `hsts_max_age` adds `Strict-Transport-Security` to every answer over TLS.

use super::{Body, Method, Request, Response, Site};

/// Where ACME's HTTP-01 challenges are fetched (RFC 8555 §8.3).
pub const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Https {
    /// `Some`: plain-HTTP requests are redirected; the `:port` of the URL (empty for
    /// 443).
    redirect_port: Option<String>,
    /// The `Strict-Transport-Security` value, when set.
    hsts: Option<String>,
}

impl Https {
    pub fn new(redirect_to: Option<u16>, hsts_max_age: Option<u64>) -> Https {
        Https {
            redirect_port: redirect_to.map(|port| match port {
                443 | 0 => String::new(),
                port => format!(":{port}"),
            }),
            hsts: hsts_max_age.map(|secs| format!("max-age={secs}")),
        }
    }

    /// Whether a plain-HTTP request may need [`redirect`] (one test on the hot path).
    pub fn redirects(&self) -> bool {
        self.redirect_port.is_some()
    }
}

/// The redirect for `req`, made over plain HTTP, when `site` sends such requests to
/// HTTPS; `None` for an ACME challenge or a target that is not a path (`*`).
pub fn redirect(site: &Site, req: &Request) -> Option<Response> {
    let port = site.https.redirect_port.as_deref()?;
    let path = common::head::path_and_query(&req.target);
    if !path.starts_with('/') || path.starts_with(ACME_CHALLENGE) {
        return None;
    }
    let host = req.host.as_deref().unwrap_or(&site.server_name);
    let status = if matches!(req.method, Method::Get | Method::Head) {
        301
    } else {
        308
    };
    let location = format!("https://{host}{port}{path}");
    let body = format!(
        "<!DOCTYPE html>\n<html><body><a href=\"{}\">moved</a></body></html>\n",
        escape(&location)
    );
    let response = Response::new(status, Body::Bytes(body.into_bytes()))
        .header("Content-Type", "text/html; charset=utf-8")
        .header("Location", location);
    Some(response)
}

/// Adds `Strict-Transport-Security` for an answer over TLS.
pub fn add_hsts(site: &Site, response: &mut Response) {
    if let Some(value) = &site.https.hsts {
        response
            .headers
            .push(("Strict-Transport-Security", value.clone()));
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::Headers;

    fn req(method: Method, target: &str, host: Option<&str>) -> Request {
        Request {
            method,
            target: target.into(),
            host: host.map(Into::into),
            headers: Headers::default(),
        }
    }

    fn location(r: &Response) -> &str {
        r.headers
            .iter()
            .find(|(n, _)| *n == "Location")
            .map(|(_, v)| v.as_str())
            .unwrap()
    }

    #[test]
    fn plain_requests_go_to_https_except_acme_challenges() {
        let mut site = Site::plain(0, "a.test", "/".into());
        assert!(redirect(&site, &req(Method::Get, "/x", Some("a.test"))).is_none());
        site.https = Https::new(Some(443), None);
        let r = redirect(&site, &req(Method::Get, "/x?y=1", Some("www.a.test"))).unwrap();
        assert_eq!((r.status, location(&r)), (301, "https://www.a.test/x?y=1"));
        let r = redirect(&site, &req(Method::Other("POST".into()), "/form", None)).unwrap();
        assert_eq!((r.status, location(&r)), (308, "https://a.test/form"));
        let r = redirect(&site, &req(Method::Get, "http://a.test/abs", Some("a.test"))).unwrap();
        assert_eq!(location(&r), "https://a.test/abs");
        site.https = Https::new(Some(8443), None);
        let r = redirect(&site, &req(Method::Head, "/", Some("a.test"))).unwrap();
        assert_eq!(location(&r), "https://a.test:8443/");
        assert!(redirect(
            &site,
            &req(Method::Get, "/.well-known/acme-challenge/token", Some("a.test"))
        )
        .is_none());
        assert!(redirect(&site, &req(Method::Options, "*", Some("a.test"))).is_none());
    }
}
