//! Bounds on what a multiplexer holds for others: a counted gauge whose tokens are
//! given back on drop, and which logs one line per episode of refusals.

use std::cell::Cell;
use std::rc::Rc;

use tracing::warn;

/// At most `max` holders at once.
pub(crate) struct Gauge {
    n: Cell<usize>,
    max: usize,
    /// A refusal was logged and the gauge has not fallen to half since.
    warned: Cell<bool>,
    what: String,
}

/// One unit of a [`Gauge`], given back when dropped.
pub(crate) struct Token(Rc<Gauge>);

impl Gauge {
    /// `what` names the bound in the refusal line (with the key to raise).
    pub fn new(max: usize, what: String) -> Rc<Gauge> {
        Rc::new(Gauge {
            n: Cell::new(0),
            max: max.max(1),
            warned: Cell::new(false),
            what,
        })
    }

    /// A token, or `None` (logged once per episode) when `max` are out.
    pub fn take(self: &Rc<Self>) -> Option<Token> {
        let n = self.n.get();
        if n >= self.max {
            if !self.warned.replace(true) {
                warn!(
                    max = self.max,
                    "{}: refused (logged once until it recovers)", self.what
                );
            }
            return None;
        }
        if n < self.max / 2 {
            self.warned.set(false);
        }
        self.n.set(n + 1);
        Some(Token(self.clone()))
    }

    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.n.get()
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        self.0.n.set(self.0.n.get().saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bounded_and_given_back() {
        let g = Gauge::new(2, "test".into());
        let a = g.take().unwrap();
        let _b = g.take().unwrap();
        assert!(g.take().is_none());
        drop(a);
        assert_eq!(g.held(), 1);
        assert!(g.take().is_some());
    }
}
