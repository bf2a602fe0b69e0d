//! The image artifacts a campaign's HTML report shows, fetched for `vephys report` and
//! `vephys local`: read from local files or the object store, each checked against the sha256
//! the coordinator recorded for it, so a report never shows an image that changed since.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use vephys_objects::{sha256_hex, Objects, S3Options};
use vephys_proto::v1::JobResult;

/// The image artifacts (`max_image*`) of `results`, by URI, each checked against its sha256.
/// `file://` artifacts are read directly; others from the store at `store_url`.
pub(crate) async fn fetch_images(
    results: &[JobResult],
    store_url: &str,
    s3_endpoint: Option<String>,
) -> Result<HashMap<String, Vec<u8>>> {
    let store = if store_url.is_empty() {
        None
    } else {
        Some(
            Objects::open(
                store_url,
                &S3Options {
                    endpoint: s3_endpoint,
                },
            )
            .context("bad --store")?,
        )
    };
    let mut images = HashMap::new();
    for artifact in results.iter().flat_map(|r| &r.artifacts) {
        if !artifact.kind.starts_with("max_image") || images.contains_key(&artifact.uri) {
            continue;
        }
        let bytes = match (&store, vephys_objects::local_path(&artifact.uri)) {
            (Some(store), _) if artifact.uri.starts_with(store.url()) => {
                store.get_verified(&artifact.uri, &artifact.sha256).await?
            }
            (_, Some(path)) => {
                let bytes = std::fs::read(path)
                    .with_context(|| format!("cannot read artifact {}", path.display()))?;
                if !sha256_hex(&bytes).eq_ignore_ascii_case(&artifact.sha256) {
                    bail!(
                        "{} changed after it was written (its sha256 is not the recorded {}); \
                         rerun the campaign's jobs to remake it",
                        path.display(),
                        artifact.sha256
                    );
                }
                bytes
            }
            _ => bail!(
                "artifact {} is in an object store; pass --store (and --s3-endpoint) to read it",
                artifact.uri
            ),
        };
        images.insert(artifact.uri.clone(), bytes);
    }
    Ok(images)
}
