//! `GET /a/{job}/{kind}/{sha256}`: an artifact (max image, single-colour image, record) from
//! the object store, served only if its bytes hash to the sha256 the job recorded. The URL
//! names that hash, so it is content-addressed: the browser may keep it for good
//! (`immutable`), and a link to content that was since replaced is a 404, not other bytes.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::html::secure;
use super::State;

fn plain(status: StatusCode, message: String) -> Response {
    let mut r = (status, message + "\n").into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    secure(r)
}

fn content_type(uri: &str) -> &'static str {
    let lower = uri.to_ascii_lowercase();
    if lower.ends_with(".png") {
        "image/png"
    } else if lower.ends_with(".jpg") || lower.ends_with(".jpeg") {
        "image/jpeg"
    } else if lower.ends_with(".json") {
        "application/json"
    } else if lower.ends_with(".txt") {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    }
}

pub async fn get(
    state: State,
    Path((job, kind, sha256)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let Ok(job_id) = job.parse::<i64>() else {
        return plain(
            StatusCode::NOT_FOUND,
            format!("no artifact: job `{job}` is not a job id"),
        );
    };
    let record = match state.0.store.artifact(job_id, &kind).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            return plain(
                StatusCode::NOT_FOUND,
                format!("job {job_id} recorded no `{kind}` artifact"),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "artifact lookup failed");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        }
    };
    if !record.sha256.eq_ignore_ascii_case(&sha256) {
        return plain(
            StatusCode::NOT_FOUND,
            format!(
                "job {job_id}'s `{kind}` artifact is not the one this link names (sha256 {sha256}); reload the page"
            ),
        );
    }
    let etag = format!("\"{}\"", record.sha256.to_ascii_lowercase());
    let cache = HeaderValue::from_static("private, max-age=31536000, immutable");
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        r.headers_mut().insert(header::CACHE_CONTROL, cache);
        if let Ok(v) = HeaderValue::from_str(&etag) {
            r.headers_mut().insert(header::ETAG, v);
        }
        return secure(r);
    }
    let Some(objects) = &state.0.objects else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "this coordinator does not know the object store; start it with --store (and \
             --s3-endpoint), the workers' --store"
                .into(),
        );
    };
    let bytes = match objects.get_verified(&record.uri, &record.sha256).await {
        Ok(bytes) => bytes,
        Err(e @ vephys_objects::ObjectsError::Sha256Mismatch { .. }) => {
            tracing::warn!(error = %e, job_id, kind, "refused to serve a changed artifact");
            return plain(StatusCode::BAD_GATEWAY, format!("refused: {e}"));
        }
        Err(e @ vephys_objects::ObjectsError::Foreign { .. }) => {
            return plain(StatusCode::NOT_FOUND, e.to_string());
        }
        Err(e) => {
            tracing::warn!(error = %e, job_id, kind, "artifact read failed");
            return plain(StatusCode::BAD_GATEWAY, e.to_string());
        }
    };
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&record.uri)),
    );
    h.insert(header::CACHE_CONTROL, cache);
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    secure(r)
}
