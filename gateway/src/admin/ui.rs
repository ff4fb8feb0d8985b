//! The dashboard at `/ui`: one page, its script and its style, embedded in the binary (nothing
//! from a CDN, no build step). Served without a token — they hold no data; the page asks for
//! the admin token, keeps it in the tab's session storage and calls the API with it (never in
//! a URL). A strict content security policy: the page runs its own script only, talks only to
//! this controller, and cannot be framed.

use bytes::Bytes;

/// An embedded file: its content type and bytes.
pub struct Asset {
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The file.
    pub body: &'static str,
}

/// The asset at `path` (`/ui`, `/ui/`, `/ui/app.js`, `/ui/style.css`), if there is one.
pub fn asset(path: &str) -> Option<Asset> {
    let (content_type, body) = match path {
        "/ui" | "/ui/" | "/ui/index.html" => ("text/html; charset=utf-8", include_str!("ui/index.html")),
        "/ui/app.js" => ("text/javascript; charset=utf-8", include_str!("ui/app.js")),
        "/ui/style.css" => ("text/css; charset=utf-8", include_str!("ui/style.css")),
        _ => return None,
    };
    Some(Asset { content_type, body })
}

/// Headers every asset is served with.
pub const HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-cache"),
];

impl Asset {
    /// The body.
    pub fn bytes(&self) -> Bytes {
        Bytes::from_static(self.body.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_its_script_and_style_are_embedded_and_nothing_else_is_served() {
        let page = asset("/ui").unwrap();
        assert!(page.content_type.starts_with("text/html") && page.body.contains("/ui/app.js"));
        assert!(asset("/ui/app.js").unwrap().body.contains("sessionStorage"));
        assert!(asset("/ui/style.css").unwrap().content_type.starts_with("text/css"));
        assert!(asset("/ui/../admin.token").is_none() && asset("/ui/other.js").is_none());
        // No third-party script or style anywhere.
        assert!(!page.body.contains("http://") && !page.body.contains("https://"));
    }
}
