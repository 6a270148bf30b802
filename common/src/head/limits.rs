//! Apache's request-head limits, enforced by [`super::parse_with`] in both roles:
//! `LimitRequestLine` (a request line longer than it: 414), `LimitRequestFields` (more
//! header fields: 431) and `LimitRequestFieldSize` (a longer field line, name, colon
//! and value: 431), inside the total bound `limit_request_head` that bounds the
//! buffers.

use serde::{Deserialize, Serialize};

use super::HeadError;

/// Apache's `LimitRequestLine` default.
pub const DEFAULT_LINE: usize = 8190;
/// Apache's `LimitRequestFields` default.
pub const DEFAULT_FIELDS: usize = 100;
/// Apache's `LimitRequestFieldSize` default.
pub const DEFAULT_FIELD_SIZE: usize = 8190;

/// The limits on one request head (all in bytes but `fields`). `fields` is at most
/// [`super::MAX_HEADERS`] (`conf` checks; [`Limits::fields_slots`] clamps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// `limit_request_head`: the whole head, leading blank lines and final blank line
    /// included.
    pub head: usize,
    /// `limit_request_line`: the request line without its line ending.
    pub line: usize,
    /// `limit_request_fields`: header fields.
    pub fields: usize,
    /// `limit_request_field_size`: one field line without its line ending.
    pub field_size: usize,
}

impl Limits {
    /// Only a total bound; the others at Apache's defaults.
    pub const fn head_only(head: usize) -> Limits {
        Limits {
            head,
            line: DEFAULT_LINE,
            fields: DEFAULT_FIELDS,
            field_size: DEFAULT_FIELD_SIZE,
        }
    }

    /// How many header slots the parser gets: one field more is "too many".
    pub fn fields_slots(&self) -> usize {
        self.fields.min(super::MAX_HEADERS)
    }
}

/// Checks the length of every line of `buf` (a head, complete or not, after its
/// leading blank lines): the first against `line`, the others against `field_size`.
/// An unfinished last line counts as soon as it is already too long, so a client
/// cannot make us wait for the end of a line we will refuse.
pub fn check_lines(buf: &[u8], limits: &Limits) -> Result<(), HeadError> {
    let mut first = true;
    for line in buf.split(|&b| b == b'\n') {
        if !first && (line.is_empty() || line == b"\r") {
            // The blank line that ends the head: nothing after it is ours.
            return Ok(());
        }
        let len = line.strip_suffix(b"\r").unwrap_or(line).len();
        if first {
            if len > limits.line {
                return Err(HeadError::UriTooLong { limit: limits.line });
            }
        } else if len > limits.field_size {
            return Err(HeadError::FieldTooLarge {
                limit: limits.field_size,
            });
        }
        first = false;
    }
    Ok(())
}
