//! Who may see the results: when the coordinator has a user token, every page, JSON endpoint,
//! event stream and image asks for it, either as `Authorization: Bearer <token>` (scripts) or
//! through the login form, which sets a session cookie (`Secure; HttpOnly; SameSite=Strict`).
//! Without a user token the UI is open, like the user API.
//!
//! The session cookie holds no secret: it is `v1.<expiry>.<sha256(expiry, token)>`, so it
//! proves the token was presented, expires on its own, dies when the token changes, and is
//! valid on every coordinator that shares the token (replicas behind a load balancer). Every
//! comparison runs in constant time. A `?token=` query parameter on a page is accepted once and
//! traded for the cookie (the redirect drops it from the address bar): the link `vephys local`
//! and `vephys ui` print.

use axum::body::Bytes;
use axum::extract::{RawQuery, Request};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::html::{enc, esc, html_response, page, secure};
use super::State;

pub const COOKIE: &str = "vephys_session";
/// How long a session lasts.
const SESSION_SECONDS: i64 = 7 * 24 * 3600;

pub struct Auth {
    token: Option<String>,
}

impl Auth {
    pub fn new(token: Option<String>) -> Auth {
        Auth {
            token: token.filter(|t| !t.is_empty()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.token.is_some()
    }

    /// Whether `presented` is the token; hashing first makes the comparison independent of
    /// where the strings differ and of their lengths.
    pub fn token_ok(&self, presented: &str) -> bool {
        match &self.token {
            Some(t) => constant_time_eq(&Sha256::digest(presented), &Sha256::digest(t)),
            None => true,
        }
    }

    fn mac(&self, expiry: i64) -> String {
        let token = self.token.as_deref().unwrap_or("");
        let mut h = Sha256::new();
        h.update(b"vephys-ui-session\0");
        h.update(expiry.to_string().as_bytes());
        h.update(b"\0");
        h.update(token.as_bytes());
        hex::encode(h.finalize())
    }

    /// A fresh session cookie value, valid for [`SESSION_SECONDS`].
    pub fn session(&self, now_s: i64) -> String {
        let expiry = now_s + SESSION_SECONDS;
        format!("v1.{expiry}.{}", self.mac(expiry))
    }

    pub fn session_ok(&self, value: &str, now_s: i64) -> bool {
        let mut parts = value.splitn(3, '.');
        let (Some("v1"), Some(expiry), Some(mac)) = (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let Ok(expiry) = expiry.parse::<i64>() else {
            return false;
        };
        expiry > now_s
            && expiry <= now_s + SESSION_SECONDS
            && constant_time_eq(mac.as_bytes(), self.mac(expiry).as_bytes())
    }

    /// Whether the request carries the bearer token or a valid session cookie.
    pub fn request_ok(&self, headers: &HeaderMap) -> bool {
        if !self.enabled() {
            return true;
        }
        let bearer = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.strip_prefix("Bearer "))
            .any(|t| self.token_ok(t.trim()));
        bearer || cookie(headers, COOKIE).is_some_and(|v| self.session_ok(&v, now_s()))
    }
}

/// Compares without an early exit, so response timing does not leak how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn now_s() -> i64 {
    crate::store::now_ms() / 1000
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn set_cookie(value: &str, max_age: i64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict"
    ))
    .expect("cookie values are ascii")
}

/// Pages (which a person opens) are sent to the login form; anything else (JSON, downloads,
/// images, events) gets a plain 401.
fn is_page(req: &Request) -> bool {
    let path = req.uri().path();
    req.method() == Method::GET
        && !path.starts_with("/api/")
        && !path.starts_with("/a/")
        && path != "/events"
        && !path.ends_with(".csv")
        && !path.ends_with(".json")
        && !path.ends_with(".parquet")
}

/// A local path to go to after login: only paths on this server (no `//host`, no scheme).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".to_string(),
    }
}

fn see_other(location: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    secure(r)
}

/// The middleware in front of every UI route but the login form and the static files.
pub async fn require(state: State, req: Request, next: Next) -> Response {
    let auth = &state.0.auth;
    if auth.request_ok(req.headers()) {
        return next.run(req).await;
    }
    // `?token=` on a page: trade it for the cookie and drop it from the address bar.
    let query = req.uri().query().unwrap_or("");
    let presented = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned());
    if let Some(token) = presented.filter(|_| req.method() == Method::GET) {
        if auth.token_ok(&token) {
            let rest: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
                .filter(|(k, _)| k != "token")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let rest = rest
                .iter()
                .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
                .collect::<Vec<_>>()
                .join("&");
            let location = super::html::with_query(req.uri().path(), &rest);
            let mut r = see_other(&location);
            r.headers_mut().insert(
                header::SET_COOKIE,
                set_cookie(&auth.session(now_s()), SESSION_SECONDS),
            );
            return r;
        }
    }
    if is_page(&req) {
        let here = match req.uri().query() {
            Some(q) => format!("{}?{q}", req.uri().path()),
            None => req.uri().path().to_string(),
        };
        return see_other(&format!("/login?next={}", enc(&here)));
    }
    let mut r = (
        StatusCode::UNAUTHORIZED,
        "the results browser needs the coordinator's user token: \
         send `Authorization: Bearer <token>` or log in at /login\n",
    )
        .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"vephys\""),
    );
    secure(r)
}

fn login_form(next: &str, error: Option<&str>) -> String {
    let error = error
        .map(|e| {
            format!(
                "<p class=\"error\" role=\"alert\" id=\"login-error\">{}</p>",
                esc(e)
            )
        })
        .unwrap_or_default();
    let body = format!(
        "<section class=\"login\"><h1>Log in</h1>\
<p>This coordinator has a user token. Enter it to browse its results (the token the coordinator \
was started with, <code>--user-token</code> / <code>VEPHYS_USER_TOKEN</code>).</p>{error}\
<form method=\"post\" action=\"/login\"><input type=\"hidden\" name=\"next\" value=\"{next}\">\
<label for=\"token\">User token</label>\
<input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\
<button type=\"submit\">Log in</button></form>\
<p class=\"note\" id=\"insecure\" hidden>This page was not loaded over https: the browser will not keep the \
session cookie (it is <code>Secure</code>). Serve the coordinator's HTTP address behind TLS, or use \
<code>localhost</code>.</p></section>",
        next = esc(next)
    );
    page("Log in", &vec![("log in".into(), String::new())], &body)
}

pub async fn login_page(state: State, RawQuery(query): RawQuery) -> Response {
    let next = query.as_deref().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "next")
            .map(|(_, v)| v.into_owned())
    });
    let next = safe_next(next.as_deref());
    if !state.0.auth.enabled() {
        return see_other(&next);
    }
    html_response(StatusCode::OK, login_form(&next, None))
}

pub async fn login(state: State, body: Bytes) -> Response {
    let (mut token, mut next) = (None, None);
    for (k, v) in form_urlencoded::parse(&body) {
        match k.as_ref() {
            "token" => token = Some(v.into_owned()),
            "next" => next = Some(v.into_owned()),
            _ => {}
        }
    }
    let next = safe_next(next.as_deref());
    let auth = &state.0.auth;
    if !auth.enabled() {
        return see_other(&next);
    }
    match token {
        Some(t) if auth.token_ok(t.trim()) => {
            let mut r = see_other(&next);
            r.headers_mut().insert(
                header::SET_COOKIE,
                set_cookie(&auth.session(now_s()), SESSION_SECONDS),
            );
            r
        }
        _ => html_response(
            StatusCode::UNAUTHORIZED,
            login_form(&next, Some("That is not the user token.")),
        ),
    }
}

pub async fn logout() -> Response {
    let mut r = see_other("/login");
    r.headers_mut()
        .insert(header::SET_COOKIE, set_cookie("", 0));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_prove_the_token_and_expire() {
        let a = Auth::new(Some("secret".into()));
        let now = 1_000_000;
        let s = a.session(now);
        assert!(a.session_ok(&s, now));
        assert!(a.session_ok(&s, now + SESSION_SECONDS - 1));
        assert!(!a.session_ok(&s, now + SESSION_SECONDS), "expired");
        assert!(!s.contains("secret"));
        let other = Auth::new(Some("other".into()));
        assert!(!other.session_ok(&s, now), "a new token ends old sessions");
        // a forged expiry does not match its mac
        let forged = s.replacen(
            &(now + SESSION_SECONDS).to_string(),
            &(now + 10).to_string(),
            1,
        );
        assert!(!a.session_ok(&forged, now));
        assert!(!a.session_ok("v1.x.y", now) && !a.session_ok("", now));
    }

    #[test]
    fn tokens_compare_whole() {
        let a = Auth::new(Some("secret".into()));
        assert!(a.token_ok("secret"));
        assert!(!a.token_ok("secre") && !a.token_ok("secret2") && !a.token_ok(""));
        assert!(Auth::new(None).token_ok("anything"));
    }

    #[test]
    fn next_stays_on_this_server() {
        assert_eq!(safe_next(Some("/c/1?x=2")), "/c/1?x=2");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
