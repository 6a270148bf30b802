//! A request that runs a CGI script, on the HTTP/1.1 side: the body (Content-Length or
//! chunked, after `100 Continue` when asked) decoded into the script's spool file
//! before the script starts, so no client can deadlock against a script that answers
//! before reading; the script's header block read; local redirects followed (at most
//! [`MAX_REDIRECTS`]); and the body streamed back, chunked for HTTP/1.1 and delimited
//! by the close for HTTP/1.0 (unless a FastCGI backend's `Content-Length` frames it,
//! which also lets an HTTP/1.0 connection stay). A timeout before the header block is 504; after it, the
//! connection is closed without the last chunk. A FastCGI script takes the same path;
//! only asking its backend differs ([`super::fastcgi`]).

use std::fs::File;

use super::{read_into, Conn, Step};
use crate::h1::body::{BodyError, Discard};
use crate::h1::request::{Framing, Head};
use crate::h1::response::{self, drops_connection, Persist};
use crate::handler::cgi::output::Source;
use crate::handler::cgi::spool::{Spool, SpoolError};
use crate::handler::cgi::{self, env, output, spawn, Answer, Script};
use crate::handler::{self, Body, Method, Request, Response, Site};
use crate::session::FastcgiRequest;

/// Most local redirects (`Location: /path`) followed for one request.
const MAX_REDIRECTS: usize = 4;

/// Why the body did not reach its spool file.
enum Spooled {
    /// Answer this and close.
    Answer(Response),
    /// The client is gone: close.
    Close,
}

impl Conn<'_> {
    pub(super) async fn cgi(
        &mut self,
        site: &Site,
        head: &Head,
        framing: Framing,
        script: Script,
        fields: Vec<(String, Vec<u8>)>,
    ) -> Step {
        let head_only = head.request.method == Method::Head;
        let keep = self.may_keep(site, head);
        let mut stdin: Option<File> = None;
        let mut content_length = None;
        if framing.has_body() {
            match self
                .spool(framing, head.expect_continue, site.cgi.body_limit)
                .await
            {
                Ok((file, len)) => {
                    stdin = Some(file);
                    content_length = Some(len);
                }
                Err(Spooled::Answer(response)) => return self.finish(response, head_only).await,
                Err(Spooled::Close) => return Step::Close,
            }
        }
        let mut req: Option<Request> = None;
        let mut script = script;
        for _ in 0..=MAX_REDIRECTS {
            let request = req.as_ref().unwrap_or(&head.request);
            let (peer, local) = self.addresses();
            let conn = env::Conn {
                peer,
                local,
                minor: head.minor,
                content_length,
                secure: self.stream.is_tls(),
            };
            let vars = env::build(site, request, &script, &fields, conn);
            // Counted while its answer is read and written (FastCGI only).
            let mut backend_request: Option<FastcgiRequest<'_>> = None;
            let answer = match &script.fastcgi {
                None => match spawn::spawn(&script, vars, stdin.take(), site.cgi.timeout) {
                    Ok(running) => output::read_head(Source::Script(running))
                        .await
                        .map_err(|e| Response::error(e.status(), e)),
                    Err(e) => Err(Response::error(500, e)),
                },
                Some(conf) => {
                    let r = backend_request.insert(FastcgiRequest::start(self.observer));
                    crate::handler::fastcgi::ask(conf, &vars, stdin.take(), r).await
                }
            };
            let path = match answer {
                Ok(Answer::Response { status, mut output }) => {
                    // RFC 9110 §6.4.1: a 204 or 304 has no body, whatever the script wrote.
                    let no_body = status == 204 || status == 304;
                    if no_body {
                        output.length = None;
                    }
                    let head_only = head_only || no_body;
                    // A backend's Content-Length frames the body; else chunked for
                    // HTTP/1.1, delimited by the close for HTTP/1.0.
                    output.chunked = head.minor == 1 && !head_only && output.length.is_none();
                    let persist = match (keep, head.minor, output.length) {
                        (true, 1, _) => Persist::KeepAlive,
                        (true, _, Some(_)) => Persist::KeepAlive10,
                        _ => Persist::Close,
                    };
                    let mut response = Response::new(status, Body::Stream(output));
                    // Unless the script sets it itself.
                    let own_hsts =
                        |f: &(String, String)| f.0.eq_ignore_ascii_case("strict-transport-security");
                    if self.stream.is_tls()
                        && !matches!(&response.body, Body::Stream(o) if o.fields.iter().any(own_hsts))
                    {
                        handler::https::add_hsts(site, &mut response);
                    }
                    let step = self.answer(response, persist, head_only).await;
                    drop(backend_request);
                    return step;
                }
                Ok(Answer::LocalRedirect(path)) => path,
                Err(response) => {
                    // Counted out before the error is written: whoever saw the 502 or
                    // 504 finds it in the counters.
                    drop(backend_request);
                    return self.finish(response, head_only).await;
                }
            };
            drop(backend_request);
            // RFC 3875 §6.2.2: answer as if the client had asked for `path`, as a GET
            // without a body.
            let next = Request {
                method: Method::Get,
                target: path,
                host: head.request.host.clone(),
                headers: head.request.headers.clone(),
            };
            content_length = None;
            let response = match cgi::select(site, &next) {
                Some(Ok(s)) => {
                    script = s;
                    req = Some(next);
                    continue;
                }
                Some(Err(response)) => response,
                None => handler::respond(site, &next),
            };
            if !keep || drops_connection(response.status) {
                return self.finish(response, head_only).await;
            }
            let persist = if head.minor == 0 {
                Persist::KeepAlive10
            } else {
                Persist::KeepAlive
            };
            return self.answer(response, persist, head_only).await;
        }
        let response = Response::error(500, format!("more than {MAX_REDIRECTS} CGI local redirects"));
        self.finish(response, head_only).await
    }

    /// Decode the request body into a new spool file of at most `limit` bytes (the
    /// vhost's `limit_request_body`; 0: none of its own), leaving the buffer at the next
    /// request; the file is rewound, with its length.
    async fn spool(
        &mut self,
        framing: Framing,
        expect_continue: bool,
        limit: u64,
    ) -> Result<(File, u64), Spooled> {
        let too_large = || Spooled::Answer(Response::error(413, SpoolError::TooLarge(limit)));
        // A declared length over the limit is refused before a byte of it is read.
        if matches!(framing, Framing::Length(n) if limit != 0 && n > limit) {
            return Err(too_large());
        }
        let mut spool = Spool::new(limit).map_err(|e| Spooled::Answer(Response::error(500, e)))?;
        let mut body = Discard::new(framing, self.cfg.limit_request_head).map_err(|e| match e {
            BodyError::TooLarge => too_large(),
            e => Spooled::Answer(Response::error(400, e)),
        })?;
        if expect_continue {
            if let Err(e) = response::write_continue(self.stream).await {
                tracing::debug!(peer = ?self.peer(), error = %e, "writing 100 Continue");
                return Err(Spooled::Close);
            }
        }
        let mut deadline = self.body_timeout.start();
        loop {
            let mut failed: Option<SpoolError> = None;
            let used = body.feed_into(&self.buf, &mut |data| {
                if failed.is_none() {
                    failed = spool.write(data).err();
                }
            });
            let used = used.map_err(|e| match e {
                BodyError::TooLarge => too_large(),
                e => Spooled::Answer(Response::error(400, e)),
            })?;
            self.buf.drain(..used);
            match failed {
                Some(SpoolError::TooLarge(_)) => return Err(too_large()),
                Some(e) => return Err(Spooled::Answer(Response::error(500, e))),
                None => {}
            }
            if body.is_done() {
                return spool
                    .finish()
                    .map_err(|e| Spooled::Answer(Response::error(500, e)));
            }
            let read = read_into(self.stream, &mut self.chunk, &mut self.buf);
            match tokio::time::timeout_at(deadline.tokio_at(), read).await {
                Ok(Ok(n)) if n > 0 => deadline.received(n),
                Ok(_) => return Err(Spooled::Close),
                Err(_) => {
                    let response = Response::error(408, "request body not received in time");
                    return Err(Spooled::Answer(response));
                }
            }
        }
    }
}
