//! The web console: static files compiled into the binary, served at `/`.

/// The Content-Security-Policy of the console: its own scripts and styles, WebSockets to
/// this origin, nothing else.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'none'; frame-ancestors 'none'";

/// The content type and bytes for a path, if it is one of the console's files.
pub fn lookup(path: &str) -> Option<(&'static str, &'static [u8])> {
    Some(match path {
        "/" | "/index.html" => (
            "text/html; charset=utf-8",
            include_bytes!("console/index.html"),
        ),
        "/console.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("console/console.js"),
        ),
        "/terminal.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("console/terminal.js"),
        ),
        "/streams.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("console/streams.js"),
        ),
        "/console.css" => (
            "text/css; charset=utf-8",
            include_bytes!("console/console.css"),
        ),
        _ => return None,
    })
}
