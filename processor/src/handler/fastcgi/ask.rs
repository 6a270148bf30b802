//! Asking a FastCGI backend, for HTTP/1.1 (`h1/conn/cgi.rs`) and HTTP/2
//! (`h2/script.rs`) alike: everything but asking is CGI's (the body spooled first,
//! local redirects, the streamed answer); here the backend is connected to and its
//! header block read, and every failure becomes one answer (502, or 504 for
//! `fastcgi_timeout`) whose log line names the environment and the backend program,
//! counted in the processor's slot.

use std::ffi::OsString;
use std::fs::File;
use std::sync::Arc;

use super::{params, Backend, FastcgiConf};
use crate::handler::cgi::output::{self, Source};
use crate::handler::cgi::Answer;
use crate::handler::Response;
use crate::session::{FastcgiFailure, FastcgiRequest};

/// Asks the backends of `conf` to run the script of `vars` with the body `stdin`: its
/// answer's header block, or the error response.
pub(crate) async fn ask(
    conf: &Arc<FastcgiConf>,
    vars: &[(OsString, OsString)],
    stdin: Option<File>,
    request: &FastcgiRequest<'_>,
) -> Result<Answer, Response> {
    let failed = |status: u16, e: &dyn std::fmt::Display| {
        request.fail(if status == 504 {
            FastcgiFailure::Timeout
        } else {
            FastcgiFailure::BadGateway
        });
        let reason = format!(
            "environment {}: FastCGI backend {}: {e}",
            conf.environment, conf.program
        );
        Response::error(status, reason)
    };
    let method = vars
        .iter()
        .find(|(k, _)| k == "REQUEST_METHOD")
        .map_or(&b""[..], |(_, v)| {
            std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str())
        });
    let keep = conf.may_keep(method, stdin.is_some());
    let params = params::encode(vars);
    let backend = Backend::connect(conf.clone(), params, stdin, request.failure.clone(), keep)
        .await
        .map_err(|e| failed(e.status(), &e))?;
    output::read_head(Source::Fastcgi(backend))
        .await
        .map_err(|e| failed(e.status(), &e))
}
