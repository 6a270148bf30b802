//! The one error page template: a short HTML body naming the status.

use super::status::reason;

/// The media type of [`page`].
pub const CONTENT_TYPE: &str = "text/html; charset=utf-8";

/// The body of an error answer with `status`.
pub fn page(status: u16) -> String {
    let text = reason(status);
    format!(
        "<!DOCTYPE html>\n<html><head><title>{status} {text}</title></head>\
         <body><h1>{text}</h1></body></html>\n"
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_the_status() {
        assert_eq!(
            super::page(405),
            "<!DOCTYPE html>\n<html><head><title>405 Method Not Allowed</title></head>\
             <body><h1>Method Not Allowed</h1></body></html>\n"
        );
    }
}
