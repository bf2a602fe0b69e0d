//! Which weights file a job computes with. The registry names the weights by sha256 (and
//! optionally where to fetch them); the worker uses its local `<weights-dir>/<model>.safetensors`
//! when its sha256 matches, else a copy it fetched earlier into `<cache-dir>/weights/` (hashed
//! again once per process: a damaged copy is deleted and fetched again), else it fetches
//! `weights_uri` from the store and checks the sha256 before using a single byte.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use vephys_objects::{local_path, sha256_hex, Objects};
use vephys_worker::weights::sha256_file;

use super::compute::{retryable, BatchError};

pub struct Weights {
    dir: PathBuf,
    cache: PathBuf,
    objects: Objects,
    /// sha256 of local files already hashed, by path.
    hashed: HashMap<PathBuf, String>,
}

impl Weights {
    pub fn new(dir: &Path, cache: &Path, objects: Objects) -> Weights {
        Weights {
            dir: dir.to_path_buf(),
            cache: cache.join("weights"),
            objects,
            hashed: HashMap::new(),
        }
    }

    /// The local weights of `model` and their sha256, if the weights directory has them.
    pub fn local(&mut self, model: &str) -> Option<(PathBuf, String)> {
        let path = self.dir.join(format!("{model}.safetensors"));
        if !path.is_file() {
            return None;
        }
        let sha = self.sha256(&path)?;
        Some((path, sha))
    }

    /// The sha256 of the file at `path`, hashed once per process (a VGG-19 file takes about a
    /// second); None when it cannot be read.
    fn sha256(&mut self, path: &Path) -> Option<String> {
        if !self.hashed.contains_key(path) {
            match sha256_file(path) {
                Ok(sha) => {
                    self.hashed.insert(path.to_path_buf(), sha);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot hash weights");
                    return None;
                }
            }
        }
        self.hashed.get(path).cloned()
    }

    /// A local file holding exactly the weights with `sha256` (any, when the registry has
    /// none), and the file's sha256.
    pub async fn resolve(
        &mut self,
        model: &str,
        sha256: &str,
        uri: &str,
    ) -> Result<(PathBuf, String), BatchError> {
        let local = self.local(model);
        if let Some((path, sha)) = &local {
            if sha256.is_empty() || sha.eq_ignore_ascii_case(sha256) {
                return Ok((path.clone(), sha.clone()));
            }
        }
        let sha256_lower = sha256.to_lowercase();
        if sha256.is_empty() {
            return Err(retryable(format!(
                "no weights for {model}: put {model}.safetensors in --weights-dir {}",
                self.dir.display()
            )));
        }
        let cached = self.cache.join(format!("{sha256_lower}.safetensors"));
        if cached.is_file() {
            // the name says which weights the file should hold; a file damaged since it was
            // fetched (a full disk, a stray write) is fetched again rather than used
            match self.sha256(&cached) {
                Some(sha) if sha.eq_ignore_ascii_case(sha256) => return Ok((cached, sha256_lower)),
                found => {
                    tracing::warn!(path = %cached.display(), expected = sha256, found = ?found,
                        "cached weights are damaged; fetching them again");
                    self.hashed.remove(&cached);
                    std::fs::remove_file(&cached).map_err(|e| {
                        retryable(format!(
                            "cannot remove damaged cached weights {}: {e}",
                            cached.display()
                        ))
                    })?;
                }
            }
        }
        if uri.is_empty() {
            let why = match local {
                Some((path, sha)) => format!("{} has sha256 {sha}", path.display()),
                None => format!(
                    "{} does not exist",
                    self.dir.join(format!("{model}.safetensors")).display()
                ),
            };
            return Err(retryable(format!(
                "the registry's weights for {model} have sha256 {sha256}, but {why} and the model has no weights_uri to fetch them from; \
                 give this worker the right file or register the model with a weights_uri"
            )));
        }
        let bytes = match local_path(uri) {
            Some(path) => std::fs::read(path)
                .map_err(|e| retryable(format!("cannot read weights {uri}: {e}")))?,
            None => self
                .objects
                .get(uri)
                .await
                .map_err(|e| retryable(format!("cannot fetch weights for {model}: {e}")))?,
        };
        let actual = sha256_hex(&bytes);
        if !actual.eq_ignore_ascii_case(sha256) {
            return Err(BatchError {
                permanent: true,
                message: format!(
                    "weights at {uri} have sha256 {actual}, but the registry says {model} has {sha256}; \
                     upload the right file or re-register the model"
                ),
            });
        }
        std::fs::create_dir_all(&self.cache)
            .and_then(|()| {
                let tmp = cached.with_extension("part");
                std::fs::write(&tmp, &bytes)?;
                std::fs::rename(&tmp, &cached)
            })
            .map_err(|e| {
                retryable(format!(
                    "cannot keep fetched weights in {}: {e}",
                    self.cache.display()
                ))
            })?;
        tracing::info!(model, uri, sha256, "weights fetched from the store");
        self.hashed.insert(cached.clone(), actual.to_lowercase());
        Ok((cached, sha256_lower))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vephys_objects::S3Options;

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

        let err = w.resolve("m", &stored.sha256, "").await.unwrap_err();
        assert!(
            !err.permanent && err.message.contains("weights_uri"),
            "{}",
            err.message
        );

        let wrong = "0".repeat(64);
        let err = w.resolve("m", &wrong, &stored.uri).await.unwrap_err();
        assert!(
            err.permanent && err.message.contains("sha256"),
            "{}",
            err.message
        );

        let (path, _) = w.resolve("m", &stored.sha256, &stored.uri).await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        // cached now: found without the store
        let kept = dir.path().join("kept");
        std::fs::rename(dir.path().join("store"), &kept).unwrap();
        assert_eq!(
            w.resolve("m", &stored.sha256, &stored.uri).await.unwrap().0,
            path
        );

        // a cached file damaged since: fetched again, never used (a new worker, which hashes
        // the cache afresh)
        std::fs::write(&path, b"damaged").unwrap();
        let mut w = Weights::new(&empty, &dir.path().join("cache"), store.clone());
        let err = w
            .resolve("m", &stored.sha256, &stored.uri)
            .await
            .unwrap_err();
        assert!(
            !err.permanent && err.message.contains(&stored.uri),
            "{}",
            err.message
        );
        assert!(!path.exists(), "the damaged file is gone");
        std::fs::rename(&kept, dir.path().join("store")).unwrap();
        let (again, _) = w.resolve("m", &stored.sha256, &stored.uri).await.unwrap();
        assert_eq!(std::fs::read(&again).unwrap(), bytes);
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
        let (_, sha) = w.local("m").unwrap();
        assert_eq!(sha, sha256_hex(b"abc"));
        let local = (dir.path().join("m.safetensors"), sha.clone());
        assert_eq!(w.resolve("m", &sha, "").await.unwrap(), local);
        assert_eq!(w.resolve("m", "", "").await.unwrap(), local);
    }
}
