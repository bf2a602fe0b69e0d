//! The page shell (head, navigation, help), links, response helpers and the one error type
//! every handler returns. Every string from the database goes through [`esc`]; every path
//! segment and query value through [`enc`].

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

pub use vephys_results::fmt::{esc, num};

use super::assets;

/// Percent-encodes everything but the unreserved characters (RFC 3986), for a path segment or
/// a query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `/c/{id}`
pub fn campaign_href(id: i64) -> String {
    format!("/c/{id}")
}

/// `/c/{id}/l/{layer}`
pub fn layer_href(id: i64, layer: &str) -> String {
    format!("/c/{id}/l/{}", enc(layer))
}

/// `/c/{id}/l/{layer}/u/{filter}`
pub fn unit_href(id: i64, layer: &str, filter: i64) -> String {
    format!("/c/{id}/l/{}/u/{filter}", enc(layer))
}

/// `/a/{job}/{kind}/{sha256}`: content-addressed, so it may be cached for good.
pub fn artifact_href(job_id: i64, kind: &str, sha256: &str) -> String {
    format!(
        "/a/{job_id}/{}/{}",
        enc(kind),
        enc(&sha256.to_ascii_lowercase())
    )
}

/// `a=1&b=2` from pairs, values encoded; empty values are left out.
pub fn query_string(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `path?query`, or `path` when the query is empty.
pub fn with_query(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    }
}

/// The security headers every response of the UI carries: no third-party anything, no framing,
/// no inline script.
const CSP: &str = "default-src 'none'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn secure(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// A page: never cached (results change while a campaign runs, and pages may be private).
pub fn html_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    secure(r)
}

pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response {
    let mut r = (status, value.to_string()).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    secure(r)
}

/// A file to save: its type and the name the browser offers.
pub fn download(content_type: &'static str, file_name: &str, bytes: Vec<u8>) -> Response {
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let safe: String = file_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    secure(r)
}

/// A breadcrumb: (text, link); the last one is the page itself.
pub type Crumbs = Vec<(String, String)>;

/// The whole page around `body`. `title` is plain text; `body` is HTML.
pub fn page(title: &str, crumbs: &Crumbs, body: &str) -> String {
    let mut nav = String::from("<a href=\"/\" class=\"home\" data-key=\"h\">vephys</a>");
    for (i, (text, href)) in crumbs.iter().enumerate() {
        nav.push_str("<span class=\"sep\">›</span>");
        if i + 1 == crumbs.len() {
            nav.push_str(&format!("<span aria-current=\"page\">{}</span>", esc(text)));
        } else {
            // the crumb before the page is "up" (key u)
            let key = if i + 2 == crumbs.len() {
                " data-key=\"u\""
            } else {
                ""
            };
            nav.push_str(&format!("<a href=\"{}\"{key}>{}</a>", esc(href), esc(text)));
        }
    }
    if crumbs.is_empty() {
        nav = String::from("<span class=\"home\">vephys</span>");
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · vephys</title>\
<link rel=\"icon\" href=\"{icon}\" type=\"image/svg+xml\">\
<link rel=\"stylesheet\" href=\"{css}\">\
<script src=\"{js}\" defer></script></head>\
<body><header class=\"top\"><nav class=\"crumbs\">{nav}</nav>\
<button type=\"button\" class=\"keys\" data-help aria-label=\"keyboard shortcuts\" title=\"keyboard shortcuts (?)\">?</button></header>\
<main id=\"main\">{body}</main>\
<dialog id=\"help\"><h2>Keyboard</h2><table>\
<tr><td><kbd>←</kbd> <kbd>→</kbd> <kbd>↑</kbd> <kbd>↓</kbd></td><td>move between units in the grid</td></tr>\
<tr><td><kbd>Enter</kbd></td><td>open the unit</td></tr>\
<tr><td><kbd>x</kbd></td><td>select the unit for comparison</td></tr>\
<tr><td><kbd>c</kbd></td><td>compare the selected units</td></tr>\
<tr><td><kbd>n</kbd> <kbd>p</kbd></td><td>next / previous page or unit (also <kbd>→</kbd> <kbd>←</kbd> on a unit)</td></tr>\
<tr><td><kbd>/</kbd></td><td>filter</td></tr>\
<tr><td><kbd>t</kbd></td><td>grid or table</td></tr>\
<tr><td><kbd>u</kbd></td><td>up one level</td></tr>\
<tr><td><kbd>h</kbd></td><td>campaigns</td></tr>\
<tr><td><kbd>?</kbd></td><td>this help</td></tr>\
</table><form method=\"dialog\"><button>close</button></form></dialog>\
</body></html>\n",
        title = esc(title),
        icon = assets::href("icon.svg"),
        css = assets::href("app.css"),
        js = assets::href("app.js"),
    )
}

/// What went wrong, and whether the caller wanted HTML or JSON.
#[derive(Debug)]
pub struct WebError {
    pub status: StatusCode,
    pub message: String,
    pub json: bool,
}

impl WebError {
    pub fn not_found(message: impl Into<String>) -> WebError {
        WebError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            json: false,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> WebError {
        WebError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            json: false,
        }
    }

    /// As JSON (`{"error": message}`) instead of a page.
    pub fn json(mut self) -> WebError {
        self.json = true;
        self
    }
}

impl From<crate::error::Error> for WebError {
    fn from(e: crate::error::Error) -> WebError {
        let status = match &e {
            crate::error::Error::NotFound { .. } => StatusCode::NOT_FOUND,
            crate::error::Error::Invalid { .. } => StatusCode::BAD_REQUEST,
            crate::error::Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            crate::error::Error::PermissionDenied(_) => StatusCode::FORBIDDEN,
            _ => {
                tracing::error!(error = %e, "results browser request failed in the store");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let message = match &e {
            // the gRPC hint names a CLI command; on the web the list is one click away
            crate::error::Error::NotFound { what, id, .. } => {
                format!("{what} {id} not found; the campaigns are listed at /")
            }
            other => other.to_string(),
        };
        WebError {
            status,
            message,
            json: false,
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        if self.json {
            return json_response(
                self.status,
                &serde_json::json!({ "error": self.message, "status": self.status.as_u16() }),
            );
        }
        let title = self
            .status
            .canonical_reason()
            .unwrap_or("error")
            .to_string();
        let body = format!(
            "<h1>{}</h1><p class=\"error\" role=\"alert\">{}</p><p><a href=\"/\">All campaigns</a></p>",
            esc(&title),
            esc(&self.message)
        );
        html_response(
            self.status,
            page(&title, &vec![(title.clone(), String::new())], &body),
        )
    }
}

pub type WebResult<T = Response> = Result<T, WebError>;

/// Column names as people read them: `max_image_max_act` → "max image max act".
pub fn humanize(column: &str) -> String {
    column.replace('_', " ")
}

/// A cell as text for a page: numbers to about four significant digits, "–" for null.
pub fn cell_text(cell: &vephys_results::table::Cell) -> String {
    use vephys_results::table::Cell;
    match cell {
        Cell::Null => "–".into(),
        Cell::Int(i) => i.to_string(),
        Cell::Float(f) => num(*f),
        Cell::Text(s) => s.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_keeps_plain_names_and_escapes_the_rest() {
        assert_eq!(enc("blocks.7"), "blocks.7");
        assert_eq!(enc("a/b c&d"), "a%2Fb%20c%26d");
        assert_eq!(enc("é"), "%C3%A9");
        assert_eq!(
            query_string(&[
                ("sort", "csi".into()),
                ("q", String::new()),
                ("dir", "desc".into())
            ]),
            "sort=csi&dir=desc"
        );
    }
}
