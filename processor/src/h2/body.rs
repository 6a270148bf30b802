//! The body of an HTTP/2 response as hyper polls it: nothing, bytes in memory, or
//! pieces pumped by the stream's task (a file read in pieces, a script's output) over a
//! channel of [`PIPE`] pieces, so a stream holds at most that much beyond hyper's own
//! send buffer, and a client that stops reading (flow control) stops the pump.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use hyper::body::{Body, Bytes, Frame, SizeHint};
use tokio::sync::mpsc;

/// Pieces queued between the pump and hyper.
pub(super) const PIPE: usize = 2;

/// What hyper sends after a response's header block.
pub enum H2Body {
    Empty,
    Full(Option<Bytes>),
    /// Pieces from the stream's task; `aborted` set by it when the body was cut short
    /// (the stream is then reset, not ended as if complete).
    Pumped {
        rx: mpsc::Receiver<Bytes>,
        aborted: Rc<Cell<bool>>,
    },
}

impl H2Body {
    /// A pumped body and the pump's ends.
    pub(super) fn pumped() -> (H2Body, mpsc::Sender<Bytes>, Rc<Cell<bool>>) {
        let (tx, rx) = mpsc::channel(PIPE);
        let aborted = Rc::new(Cell::new(false));
        let body = H2Body::Pumped {
            rx,
            aborted: aborted.clone(),
        };
        (body, tx, aborted)
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match &mut *self {
            H2Body::Empty => Poll::Ready(None),
            H2Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            H2Body::Pumped { rx, aborted } => match rx.poll_recv(cx) {
                Poll::Ready(Some(b)) => Poll::Ready(Some(Ok(Frame::data(b)))),
                Poll::Ready(None) if aborted.get() => {
                    Poll::Ready(Some(Err(io::Error::other("response body cut short"))))
                }
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            H2Body::Empty => true,
            H2Body::Full(b) => b.is_none(),
            H2Body::Pumped { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            H2Body::Empty => SizeHint::with_exact(0),
            H2Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            H2Body::Pumped { .. } => SizeHint::default(),
        }
    }
}
