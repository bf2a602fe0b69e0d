//! Which weights file a job computes with. A job names its campaign's weights by sha256 (and
//! where to fetch them); the worker uses its local file when its sha256 matches
//! (`<weights-dir>/<model>.safetensors` for a built-in model, the archive of an exported one in
//! `<weights-dir>/<model>/` or a `--model-dir`), else a copy it fetched earlier into
//! `<cache-dir>/weights/` (hashed again once per process: a damaged copy is deleted and fetched
//! again), else it fetches `weights_uri` from its object store and checks the sha256 before
//! using a single byte.
//!
//! The fetch is bounded: only URIs in the worker's own store are read (never an arbitrary
//! `file://` path on the worker), at most [`MAX_WEIGHTS_BYTES`], streamed to disk; files are
//! hashed on tokio's blocking pool. Error texts reach users through the coordinator, so they
//! never carry the hash of a file the worker read: hashes go to the worker's log.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use vephys_objects::Objects;

use super::{Failure, JobError};
use crate::weights::sha256_file;

/// Largest weights file fetched from the store (the biggest vision networks are a few GB).
pub const MAX_WEIGHTS_BYTES: u64 = 16 << 30;

pub struct Weights {
    dir: PathBuf,
    cache: PathBuf,
    objects: Objects,
    /// Exported models' archives given by --model-dir, by model name.
    archives: HashMap<String, PathBuf>,
    /// sha256 of local files already hashed, by path.
    hashed: HashMap<PathBuf, String>,
}

/// What a model's weights are: a safetensors file of a built-in model, or the TorchScript
/// archive of an exported one (named `archive` in its directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind<'a> {
    Safetensors,
    Archive(&'a str),
}

impl Kind<'_> {
    fn extension(self) -> &'static str {
        match self {
            Kind::Safetensors => "safetensors",
            Kind::Archive(_) => "pt",
        }
    }
}

/// The weights source failed: the job is fine, another try (here, later, or on another
/// worker) may succeed; it is given back without using an attempt.
fn unavailable(message: impl Into<String>) -> JobError {
    JobError {
        how: Failure::Released,
        message: message.into(),
    }
}

/// The campaign names weights that cannot be had: no worker would do better.
fn wrong(message: impl Into<String>) -> JobError {
    JobError {
        how: Failure::Permanent,
        message: message.into(),
    }
}

impl Weights {
    pub fn new(dir: &Path, cache: &Path, objects: Objects) -> Weights {
        Weights {
            dir: dir.to_path_buf(),
            cache: cache.join("weights"),
            objects,
            archives: HashMap::new(),
            hashed: HashMap::new(),
        }
    }

    /// Uses `archive` for the exported model `model` (a --model-dir) before the weights
    /// directory.
    pub fn add_archive(&mut self, model: &str, archive: PathBuf) {
        self.archives.insert(model.to_string(), archive);
    }

    /// Where this worker keeps `model`'s weights of `kind`, whether or not they are there.
    fn path(&self, model: &str, kind: Kind) -> PathBuf {
        match kind {
            Kind::Safetensors => self.dir.join(format!("{model}.safetensors")),
            Kind::Archive(name) => self
                .archives
                .get(model)
                .cloned()
                .unwrap_or_else(|| self.dir.join(model).join(name)),
        }
    }

    /// The local weights of `model` and their sha256, if this worker has them.
    pub async fn local(&mut self, model: &str, kind: Kind<'_>) -> Option<(PathBuf, String)> {
        let path = self.path(model, kind);
        if !tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_file()) {
            return None;
        }
        let sha = self.sha256(&path).await?;
        Some((path, sha))
    }

    /// The sha256 of the file at `path`, hashed once per process on the blocking pool (a
    /// VGG-19 file takes about a second); None when it cannot be read.
    async fn sha256(&mut self, path: &Path) -> Option<String> {
        if let Some(sha) = self.hashed.get(path) {
            return Some(sha.clone());
        }
        let file = path.to_path_buf();
        let hashed = tokio::task::spawn_blocking(move || sha256_file(&file))
            .await
            .expect("hashing does not panic");
        match hashed {
            Ok(sha) => {
                self.hashed.insert(path.to_path_buf(), sha.clone());
                Some(sha)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot hash weights");
                None
            }
        }
    }

    /// A local file holding exactly the weights with `sha256` (any, when the campaign names
    /// none), and the file's sha256.
    pub async fn resolve(
        &mut self,
        model: &str,
        kind: Kind<'_>,
        sha256: &str,
        uri: &str,
    ) -> Result<(PathBuf, String), JobError> {
        let local = self.local(model, kind).await;
        if let Some((path, sha)) = &local {
            if sha256.is_empty() || sha.eq_ignore_ascii_case(sha256) {
                return Ok((path.clone(), sha.clone()));
            }
        }
        let sha256_lower = sha256.to_lowercase();
        if sha256.is_empty() {
            return Err(unavailable(format!(
                "no weights for {model}: put them at {}",
                self.path(model, kind).display()
            )));
        }
        let cached = self
            .cache
            .join(format!("{sha256_lower}.{}", kind.extension()));
        if tokio::fs::metadata(&cached)
            .await
            .is_ok_and(|m| m.is_file())
        {
            // the name says which weights the file should hold; a file damaged since it was
            // fetched (a full disk, a stray write) is fetched again rather than used
            match self.sha256(&cached).await {
                Some(sha) if sha.eq_ignore_ascii_case(sha256) => return Ok((cached, sha256_lower)),
                found => {
                    tracing::warn!(path = %cached.display(), expected = sha256, found = ?found,
                        "cached weights are damaged; fetching them again");
                    self.hashed.remove(&cached);
                    tokio::fs::remove_file(&cached).await.map_err(|e| {
                        unavailable(format!(
                            "cannot remove damaged cached weights {}: {e}",
                            cached.display()
                        ))
                    })?;
                }
            }
        }
        if uri.is_empty() {
            let why = match local {
                Some((path, sha)) => {
                    tracing::warn!(path = %path.display(), found = %sha, expected = sha256,
                        "local weights are not the campaign's");
                    format!("{} holds other weights", path.display())
                }
                None => format!("{} does not exist", self.path(model, kind).display()),
            };
            return Err(unavailable(format!(
                "this worker lacks the weights {model}'s campaign was submitted with: {why}, and \
                 the model has no weights_uri to fetch them from; give this worker the right file \
                 or register the model with `vephys models add --store`"
            )));
        }
        self.fetch(model, uri, sha256, &cached).await?;
        Ok((cached, sha256_lower))
    }

    /// Downloads `uri` from this worker's store into `cached`, checking it holds `sha256`.
    async fn fetch(
        &mut self,
        model: &str,
        uri: &str,
        sha256: &str,
        cached: &Path,
    ) -> Result<(), JobError> {
        tokio::fs::create_dir_all(&self.cache).await.map_err(|e| {
            unavailable(format!(
                "cannot keep fetched weights in {}: {e}",
                self.cache.display()
            ))
        })?;
        let part = cached.with_extension("part");
        let stored = match self.objects.download(uri, &part, MAX_WEIGHTS_BYTES).await {
            Ok(stored) => stored,
            Err(e) if e.is_unavailable() => {
                return Err(unavailable(format!(
                    "cannot fetch the weights of {model}: {e}"
                )))
            }
            Err(vephys_objects::ObjectsError::Local { path, source }) => {
                return Err(unavailable(format!(
                    "cannot keep fetched weights in {}: {source}",
                    path.display()
                )))
            }
            // not in this worker's store, missing, too large: no retry fetches other bytes
            Err(e) => {
                return Err(wrong(format!(
                    "cannot fetch the weights of {model}: {e}; weights_uri must name an object in \
                     the workers' store (`vephys models add --store`)"
                )))
            }
        };
        if !stored.sha256.eq_ignore_ascii_case(sha256) {
            let _ = tokio::fs::remove_file(&part).await;
            tracing::warn!(uri, found = %stored.sha256, expected = sha256, "fetched weights are not the campaign's");
            return Err(wrong(format!(
                "the weights at {uri} are not the ones {model}'s campaign was submitted with (their \
                 sha256 differs); upload the right file or submit the campaign again after \
                 re-registering the model"
            )));
        }
        tokio::fs::rename(&part, cached).await.map_err(|e| {
            unavailable(format!(
                "cannot keep fetched weights in {}: {e}",
                self.cache.display()
            ))
        })?;
        tracing::info!(model, uri, sha256, "weights fetched from the store");
        self.hashed
            .insert(cached.to_path_buf(), stored.sha256.to_lowercase());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vephys_objects::{sha256_hex, S3Options};

    #[tokio::test]
    async fn fetches_checks_and_caches() {
        let dir = tempfile::tempdir().unwrap();
        let store = Objects::open(
            &format!("file://{}/store", dir.path().display()),
            &S3Options::default(),
        )
        .unwrap();
        let bytes = b"not really weights".to_vec();
        let stored = store
            .put("weights/m.safetensors", bytes.clone())
            .await
            .unwrap();
        let empty = dir.path().join("none");
        let mut w = Weights::new(&empty, &dir.path().join("cache"), store.clone());
        let kind = Kind::Safetensors;

        let err = w.resolve("m", kind, &stored.sha256, "").await.unwrap_err();
        assert!(
            err.how == Failure::Released && err.message.contains("weights_uri"),
            "{}",
            err.message
        );

        let wrong_sha = "0".repeat(64);
        let err = w
            .resolve("m", kind, &wrong_sha, &stored.uri)
            .await
            .unwrap_err();
        assert!(
            err.how == Failure::Permanent && err.message.contains("sha256 differs"),
            "{}",
            err.message
        );
        assert!(
            !err.message.contains(&stored.sha256),
            "no file hash in errors: {}",
            err.message
        );

        let (path, _) = w
            .resolve("m", kind, &stored.sha256, &stored.uri)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        // cached now: found without the store
        let kept = dir.path().join("kept");
        std::fs::rename(dir.path().join("store"), &kept).unwrap();
        assert_eq!(
            w.resolve("m", kind, &stored.sha256, &stored.uri)
                .await
                .unwrap()
                .0,
            path
        );

        // a cached file damaged since: fetched again, never used (a new worker, which hashes
        // the cache afresh); the object is gone meanwhile, which no retry mends
        std::fs::write(&path, b"damaged").unwrap();
        let mut w = Weights::new(&empty, &dir.path().join("cache"), store.clone());
        let err = w
            .resolve("m", kind, &stored.sha256, &stored.uri)
            .await
            .unwrap_err();
        assert!(err.message.contains(&stored.uri), "{}", err.message);
        assert!(!path.exists(), "the damaged file is gone");
        std::fs::rename(&kept, dir.path().join("store")).unwrap();
        let (again, _) = w
            .resolve("m", kind, &stored.sha256, &stored.uri)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&again).unwrap(), bytes);
    }

    /// `weights_uri` is read from the worker's store only: a `file://` path elsewhere on the
    /// worker (say `/dev/zero`, or a secret whose hash would leak) is refused unread.
    #[tokio::test]
    async fn only_the_workers_store_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Objects::open(
            &format!("file://{}/store", dir.path().display()),
            &S3Options::default(),
        )
        .unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"secret").unwrap();
        let mut w = Weights::new(&dir.path().join("none"), &dir.path().join("cache"), store);
        for uri in [
            "file:///dev/zero".to_string(),
            format!("file://{}", secret.display()),
        ] {
            let err = w
                .resolve("m", Kind::Safetensors, &sha256_hex(b"secret"), &uri)
                .await
                .unwrap_err();
            assert!(
                err.how == Failure::Permanent && err.message.contains("not in the store"),
                "{uri}: {}",
                err.message
            );
        }
    }

    #[tokio::test]
    async fn local_file_wins_when_it_matches() {
        let dir = tempfile::tempdir().unwrap();
        let store = Objects::open(
            &format!("file://{}/store", dir.path().display()),
            &S3Options::default(),
        )
        .unwrap();
        std::fs::write(dir.path().join("m.safetensors"), b"abc").unwrap();
        let mut w = Weights::new(dir.path(), &dir.path().join("cache"), store);
        let (_, sha) = w.local("m", Kind::Safetensors).await.unwrap();
        assert_eq!(sha, sha256_hex(b"abc"));
        let local = (dir.path().join("m.safetensors"), sha.clone());
        let kind = Kind::Safetensors;
        assert_eq!(w.resolve("m", kind, &sha, "").await.unwrap(), local);
        assert_eq!(w.resolve("m", kind, "", "").await.unwrap(), local);
        // other weights here and no uri: given back, naming the file but not its hash
        let err = w.resolve("m", kind, &"1".repeat(64), "").await.unwrap_err();
        assert_eq!(err.how, Failure::Released);
        assert!(
            err.message.contains("holds other weights") && !err.message.contains(&sha),
            "{}",
            err.message
        );
    }
}
