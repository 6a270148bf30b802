//! Resolving `user` / `group` values (a name, an integer id, or an id written as a
//! string) to numeric ids at load time, so no jailed process ever needs NSS.

use crate::error::Report;
use crate::tree::{Entry, IntOrStr};

/// Which database a value is looked up in.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    User,
    Group,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Group => "group",
        }
    }

    fn id_name(self) -> &'static str {
        match self {
            Kind::User => "uid",
            Kind::Group => "gid",
        }
    }

    fn lookup(self, name: &str) -> Option<u32> {
        match self {
            Kind::User => uzers::get_user_by_name(name).map(|u| u.uid()),
            Kind::Group => uzers::get_group_by_name(name).map(|g| g.gid()),
        }
    }
}

/// The numeric id and the value as written. Numeric ids need no passwd/group entry.
pub(crate) fn resolve(entry: &Entry, r: &mut Report, kind: Kind) -> Option<(u32, String)> {
    let (id, written) = match entry.int_or_str(r)? {
        IntOrStr::Int(i) => (numeric(entry, r, kind, i)?, i.to_string()),
        IntOrStr::Str(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            let i = s.parse::<i64>().unwrap_or(i64::MAX);
            (numeric(entry, r, kind, i)?, s.to_string())
        }
        IntOrStr::Str("") => {
            entry.error(r, format!("{} name must not be empty", kind.noun()));
            return None;
        }
        IntOrStr::Str(name) => match kind.lookup(name) {
            Some(id) => (id, name.to_string()),
            None => {
                entry.error(r, format!("no such {} '{name}'", kind.noun()));
                return None;
            }
        },
    };
    Some((id, written))
}

/// `0..u32::MAX`: `(uid_t)-1` means "leave unchanged" to `setresuid`, so it is refused.
fn numeric(entry: &Entry, r: &mut Report, kind: Kind, i: i64) -> Option<u32> {
    match u32::try_from(i) {
        Ok(id) if id != u32::MAX => Some(id),
        _ => {
            let message = format!("{} {i} is out of range (0 to {})", kind.id_name(), u32::MAX - 1);
            entry.error(r, message);
            None
        }
    }
}
