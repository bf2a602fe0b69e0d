//! The UI's stylesheet, script and icon, compiled into the binary (no build step, no CDN, no
//! network). Pages link them as `/static/<name>?v=<hash>`, so a browser may keep them for good
//! and a new build's files are fetched afresh.

use std::sync::OnceLock;

use axum::extract::{Path, RawQuery};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::html::secure;

const FILES: [(&str, &str, &str); 3] = [
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("assets/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    ("icon.svg", "image/svg+xml", include_str!("assets/icon.svg")),
];

/// A short hash of every embedded file, the cache-busting version of their URLs.
fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let mut all = String::new();
        for (_, _, body) in FILES {
            all.push_str(body);
        }
        vephys_objects::sha256_hex(all.as_bytes())[..12].to_string()
    })
}

/// The URL of an embedded file.
pub fn href(name: &str) -> String {
    format!("/static/{name}?v={}", version())
}

pub async fn get(Path(file): Path<String>, RawQuery(query): RawQuery) -> Response {
    let Some((_, content_type, body)) = FILES.iter().find(|(name, _, _)| *name == file) else {
        return secure((StatusCode::NOT_FOUND, "no such file").into_response());
    };
    let versioned = query.is_some_and(|q| q == format!("v={}", version()));
    let mut r = (*body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if versioned {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    secure(r)
}

pub async fn favicon() -> Response {
    get(Path("icon.svg".to_string()), RawQuery(None)).await
}
