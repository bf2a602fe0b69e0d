//! Writing the report without ever leaving half of one: everything is first written into a
//! hidden staging directory inside the report directory (same file system, so renames are
//! atomic), checked, and only then moved into place, the images first and `index.html` last.
//! A crash or an error before that leaves the previous report (or none) plus a staging
//! directory that the drop guard removes when it can. The report directory itself is never
//! replaced, because users point it at directories holding other files (even `.`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use vephys_proto::v1::Artifact;

use super::fmt::slug;

/// `<layer>_filter_NNNN.png`, or `<layer>_filter_NNNN_<suffix>.png` for single-colour images.
pub fn image_name(layer: &str, filter: i64, suffix: Option<&str>) -> String {
    match suffix {
        Some(s) => format!("{}_filter_{filter:04}_{s}.png", slug(layer)),
        None => format!("{}_filter_{filter:04}.png", slug(layer)),
    }
}

/// An artifact's bytes from `fetch`, refused unless they hash to the recorded sha256 (and have
/// the recorded size): a report must show what the worker measured, not a truncated or
/// replaced object.
pub fn fetch_verified(
    fetch: &dyn Fn(&Artifact) -> Result<Vec<u8>>,
    artifact: &Artifact,
    what: &str,
) -> Result<Vec<u8>> {
    let bytes =
        fetch(artifact).with_context(|| format!("fetching {what} from {}", artifact.uri))?;
    if artifact.sha256.is_empty() {
        bail!(
            "{what} at {} has no recorded sha256, so it cannot be verified",
            artifact.uri
        );
    }
    let actual = hex::encode(Sha256::digest(&bytes));
    if !actual.eq_ignore_ascii_case(artifact.sha256.trim()) {
        bail!(
            "{what} at {} is corrupt or was replaced: its sha256 is {actual} but the result records {}; \
             no report was written",
            artifact.uri,
            artifact.sha256
        );
    }
    if artifact.bytes != 0 && artifact.bytes != bytes.len() as u64 {
        bail!(
            "{what} at {} has {} bytes but the result records {}; no report was written",
            artifact.uri,
            bytes.len(),
            artifact.bytes
        );
    }
    Ok(bytes)
}

/// A staging directory `dir/.vephys-report-<pid>-<nanos>` removed on drop unless committed.
pub struct Staging {
    root: PathBuf,
    images: Vec<String>,
}

impl Staging {
    pub fn new(dir: &Path) -> Result<Staging> {
        fs::create_dir_all(dir)
            .with_context(|| format!("creating report directory {}", dir.display()))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let root = dir.join(format!(".vephys-report-{}-{nanos}", std::process::id()));
        fs::create_dir_all(root.join("images"))
            .with_context(|| format!("creating staging directory {}", root.display()))?;
        Ok(Staging {
            root,
            images: Vec::new(),
        })
    }

    /// Stages `images/<name>`.
    pub fn image(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        write_synced(&self.root.join("images").join(name), bytes)?;
        self.images.push(name.to_string());
        Ok(())
    }

    /// Moves the staged images into `dir/images`, then `index.html` into `dir`; returns the
    /// path of `dir/index.html`.
    pub fn commit(mut self, dir: &Path, html: &str) -> Result<PathBuf> {
        write_synced(&self.root.join("index.html"), html.as_bytes())?;
        let images = dir.join("images");
        fs::create_dir_all(&images).with_context(|| format!("creating {}", images.display()))?;
        for name in std::mem::take(&mut self.images) {
            let (from, to) = (self.root.join("images").join(&name), images.join(&name));
            fs::rename(&from, &to)
                .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
        }
        let index = dir.join("index.html");
        fs::rename(self.root.join("index.html"), &index)
            .with_context(|| format!("moving the page to {}", index.display()))?;
        Ok(index)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // best effort: a failure to clean up must not hide the error that got us here
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Writes a file and flushes it to disk, so a rename after it never exposes an empty file
/// after a power cut.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}
