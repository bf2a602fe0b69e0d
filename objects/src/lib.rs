//! Where vephys keeps images and records: a local directory (`file:///abs/dir`) or an
//! S3-compatible bucket (`s3://bucket/prefix`), chosen by URL. Every object is addressed by a
//! URI that names its store, and every read can be checked against the sha256 recorded when it
//! was written, so a result row never points at bytes other than the ones it measured.
//!
//! S3 credentials and region come from the standard `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_REGION` (or `AWS_DEFAULT_REGION`) environment; a non-AWS server
//! (Garage, MinIO, Ceph) is reached through an explicit endpoint.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    #[error("bad store url `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot {action} `{uri}`: {source}")]
    Store {
        action: &'static str,
        uri: String,
        #[source]
        source: object_store::Error,
    },
    // `actual` is kept for callers to log, never shown: error texts travel to users, and the
    // hash of bytes they cannot read would tell them about those bytes.
    #[error("object `{uri}` does not hold the bytes recorded when it was written (sha256 {expected}); it was changed or corrupted since")]
    Sha256Mismatch {
        uri: String,
        expected: String,
        actual: String,
    },
    #[error("`{uri}` is not in the store `{store}`; read it with a store opened on its own url")]
    Foreign { uri: String, store: String },
    #[error("object `{uri}` is larger than the {max} bytes accepted here")]
    TooLarge { uri: String, max: u64 },
    #[error("cannot write `{path}`: {source}")]
    Local {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ObjectsError {
    /// The object does not exist (the store itself answered).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            ObjectsError::Store {
                source: object_store::Error::NotFound { .. },
                ..
            }
        )
    }

    /// The store could not be reached or did not answer as a store should (a timeout, a
    /// refused connection, a server error): trying again later may succeed. Not a missing or
    /// changed object, a foreign URI or a local disk problem.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ObjectsError::Store { .. }) && !self.is_not_found()
    }
}

/// An object found by [`Objects::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub uri: String,
    /// Its key relative to the store's URL (what [`Objects::put`] took).
    pub key: String,
    pub bytes: u64,
}

pub type Result<T, E = ObjectsError> = std::result::Result<T, E>;

/// An object as written: where it is and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub uri: String,
    pub sha256: String,
    pub bytes: u64,
}

/// Settings that do not fit in the store URL.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// e.g. `http://127.0.0.1:3900` for a Garage node; None for AWS itself.
    pub endpoint: Option<String>,
}

/// An opened store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    /// The store's URL with exactly one trailing `/`; object URIs are `base + key`.
    base: String,
    /// Key prefix inside the bucket (S3) — empty for local directories, whose root is the prefix.
    prefix: String,
}

impl Objects {
    /// Opens `file:///abs/dir` (created if missing) or `s3://bucket[/prefix]`.
    pub fn open(url: &str, s3: &S3Options) -> Result<Objects> {
        let bad = |reason: &str| ObjectsError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(bad(
                    "a file url needs an absolute path, e.g. file:///data/vephys",
                ));
            }
            let dir = PathBuf::from(path.trim_end_matches('/'));
            std::fs::create_dir_all(&dir)
                .map_err(|e| bad(&format!("cannot create {}: {e}", dir.display())))?;
            let store = LocalFileSystem::new_with_prefix(&dir).map_err(|e| bad(&e.to_string()))?;
            return Ok(Objects {
                store: Arc::new(store),
                base: format!("file://{}/", dir.display()),
                prefix: String::new(),
            });
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket name; use s3://bucket or s3://bucket/prefix"));
            }
            // A few quick retries ride out a busy server; a wrong endpoint is reported in seconds,
            // not after object_store's default three minutes of retrying.
            let retry = RetryConfig {
                max_retries: 4,
                retry_timeout: Duration::from_secs(30),
                ..RetryConfig::default()
            };
            let mut builder = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry)
                .with_client_options(
                    ClientOptions::new().with_connect_timeout(Duration::from_secs(5)),
                );
            if std::env::var_os("AWS_REGION").is_some()
                && std::env::var_os("AWS_DEFAULT_REGION").is_none()
            {
                builder = builder.with_region(std::env::var("AWS_REGION").unwrap_or_default());
            }
            if let Some(endpoint) = &s3.endpoint {
                builder = builder
                    .with_endpoint(endpoint)
                    // Garage, MinIO and friends serve path-style URLs; plain http only on loopback-ish setups
                    .with_virtual_hosted_style_request(false)
                    .with_allow_http(endpoint.starts_with("http://"));
            }
            let store = builder.build().map_err(|e| bad(&e.to_string()))?;
            let prefix = prefix.trim_matches('/').to_string();
            let base = if prefix.is_empty() {
                format!("s3://{bucket}/")
            } else {
                format!("s3://{bucket}/{prefix}/")
            };
            return Ok(Objects {
                store: Arc::new(store),
                base,
                prefix,
            });
        }
        Err(bad(
            "unknown scheme; use file:///abs/dir or s3://bucket/prefix",
        ))
    }

    /// The store's URL, ending in `/`.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The URI `key` has (or would have) in this store.
    pub fn uri(&self, key: &str) -> String {
        format!("{}{}", self.base, key.trim_start_matches('/'))
    }

    fn key(&self, key: &str) -> Key {
        let key = key.trim_start_matches('/');
        if self.prefix.is_empty() {
            Key::from(key)
        } else {
            Key::from(format!("{}/{key}", self.prefix))
        }
    }

    /// The key of `uri` relative to this store.
    fn key_of(&self, uri: &str) -> Result<Key> {
        match uri.strip_prefix(&self.base) {
            Some(key) if !key.is_empty() => Ok(self.key(key)),
            _ => Err(ObjectsError::Foreign {
                uri: uri.to_string(),
                store: self.base.clone(),
            }),
        }
    }

    /// Writes `bytes` under `key` (replacing what was there) and returns its URI and sha256.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<Stored> {
        let uri = self.uri(key);
        let sha256 = sha256_hex(&bytes);
        let size = bytes.len() as u64;
        self.store
            .put(&self.key(key), PutPayload::from(bytes))
            .await
            .map_err(|source| ObjectsError::Store {
                action: "write",
                uri: uri.clone(),
                source,
            })?;
        Ok(Stored {
            uri,
            sha256,
            bytes: size,
        })
    }

    /// Reads the object at `uri`, which must be in this store.
    pub async fn get(&self, uri: &str) -> Result<Vec<u8>> {
        let key = self.key_of(uri)?;
        let read = |source| ObjectsError::Store {
            action: "read",
            uri: uri.to_string(),
            source,
        };
        let got = self.store.get(&key).await.map_err(read)?;
        Ok(got.bytes().await.map_err(read)?.to_vec())
    }

    /// Reads the object at `uri` and checks it still has the recorded sha256.
    pub async fn get_verified(&self, uri: &str, sha256: &str) -> Result<Vec<u8>> {
        let bytes = self.get(uri).await?;
        check_sha256(uri, &bytes, sha256)?;
        Ok(bytes)
    }

    /// Reads the object at `uri`, refusing one larger than `max_bytes` without holding more
    /// than that in memory (the size the store reports is checked first, the bytes as they
    /// arrive too).
    pub async fn get_bounded(&self, uri: &str, max_bytes: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.stream(uri, max_bytes, |chunk| {
            out.extend_from_slice(chunk);
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// [`Objects::get_bounded`] checked against the recorded sha256.
    pub async fn get_verified_bounded(
        &self,
        uri: &str,
        sha256: &str,
        max_bytes: u64,
    ) -> Result<Vec<u8>> {
        let bytes = self.get_bounded(uri, max_bytes).await?;
        check_sha256(uri, &bytes, sha256)?;
        Ok(bytes)
    }

    /// Copies the object at `uri` into the local file `dest` (created or truncated), at most
    /// `max_bytes`, hashing it on the way; memory stays one chunk and the file is written by
    /// tokio's blocking pool, never on the async threads. A refused or failed copy removes
    /// `dest`. The caller checks the returned sha256.
    pub async fn download(&self, uri: &str, dest: &Path, max_bytes: u64) -> Result<Stored> {
        use tokio::io::AsyncWriteExt;
        let local = |source| ObjectsError::Local {
            path: dest.to_path_buf(),
            source,
        };
        let mut file = tokio::fs::File::create(dest).await.map_err(local)?;
        let mut hash = Sha256::new();
        let mut bytes = 0u64;
        let copied: Result<()> = async {
            let mut chunks = self.chunks(uri, max_bytes).await?;
            while let Some(chunk) = futures::StreamExt::next(&mut chunks).await {
                let chunk = chunk?;
                hash.update(&chunk);
                bytes += chunk.len() as u64;
                file.write_all(&chunk).await.map_err(local)?;
            }
            file.sync_all().await.map_err(local)
        }
        .await;
        if let Err(e) = copied {
            drop(file);
            let _ = tokio::fs::remove_file(dest).await;
            return Err(e);
        }
        Ok(Stored {
            uri: uri.to_string(),
            sha256: hex::encode(hash.finalize()),
            bytes,
        })
    }

    /// Feeds the object's bytes to `each`, chunk by chunk, refusing more than `max_bytes`.
    async fn stream(
        &self,
        uri: &str,
        max_bytes: u64,
        mut each: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut chunks = self.chunks(uri, max_bytes).await?;
        while let Some(chunk) = futures::StreamExt::next(&mut chunks).await {
            each(&chunk?)?;
        }
        Ok(())
    }

    /// The object's bytes as a stream of chunks that ends with [`ObjectsError::TooLarge`] once
    /// more than `max_bytes` came.
    async fn chunks(
        &self,
        uri: &str,
        max_bytes: u64,
    ) -> Result<futures::stream::BoxStream<'static, Result<bytes::Bytes>>> {
        use futures::StreamExt;
        let key = self.key_of(uri)?;
        let uri = uri.to_string();
        let read = {
            let uri = uri.clone();
            move |source| ObjectsError::Store {
                action: "read",
                uri: uri.clone(),
                source,
            }
        };
        let got = self.store.get(&key).await.map_err(read.clone())?;
        let too_large = move || ObjectsError::TooLarge {
            uri: uri.clone(),
            max: max_bytes,
        };
        if got.meta.size > max_bytes {
            return Err(too_large());
        }
        let mut seen = 0u64;
        let chunks = got.into_stream().map(move |chunk| {
            let chunk = chunk.map_err(read.clone())?;
            seen += chunk.len() as u64;
            match seen > max_bytes {
                true => Err(too_large()),
                false => Ok(chunk),
            }
        });
        Ok(chunks.boxed())
    }

    /// Every object whose key starts with `prefix` (a directory-like prefix such as
    /// `campaigns/3/`), in no particular order.
    pub fn list(&self, prefix: &str) -> futures::stream::BoxStream<'static, Result<Listed>> {
        use futures::StreamExt;
        let prefix_key = self.key(prefix.trim_end_matches('/'));
        let base = self.base.clone();
        let store_prefix = match self.prefix.is_empty() {
            true => String::new(),
            false => format!("{}/", self.prefix),
        };
        let list_uri = self.uri(prefix);
        self.store
            .list(Some(&prefix_key))
            .map(move |meta| {
                let meta = meta.map_err(|source| ObjectsError::Store {
                    action: "list",
                    uri: list_uri.clone(),
                    source,
                })?;
                let full = meta.location.to_string();
                let key = full
                    .strip_prefix(&store_prefix)
                    .unwrap_or(&full)
                    .to_string();
                Ok(Listed {
                    uri: format!("{base}{key}"),
                    key,
                    bytes: meta.size,
                })
            })
            .boxed()
    }

    /// Removes the object at `uri`, which must be in this store; a missing object is fine.
    pub async fn delete(&self, uri: &str) -> Result<()> {
        match self.store.delete(&self.key_of(uri)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(ObjectsError::Store {
                action: "delete",
                uri: uri.to_string(),
                source,
            }),
        }
    }

    /// Whether an object exists at `uri`.
    pub async fn exists(&self, uri: &str) -> Result<bool> {
        match self.store.head(&self.key_of(uri)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(source) => Err(ObjectsError::Store {
                action: "look up",
                uri: uri.to_string(),
                source,
            }),
        }
    }

    /// Proves the store is reachable with the given credentials by writing, reading back and
    /// deleting a small object under `_vephys/check/`. Run at start-up, so a wrong key or
    /// endpoint is reported before any work is leased.
    pub async fn check_read_write(&self, who: &str) -> Result<()> {
        let key = format!("_vephys/check/{who}");
        let stored = self.put(&key, who.as_bytes().to_vec()).await?;
        self.get_verified(&stored.uri, &stored.sha256).await?;
        self.store
            .delete(&self.key(&key))
            .await
            .map_err(|source| ObjectsError::Store {
                action: "delete",
                uri: stored.uri,
                source,
            })
    }
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The local path of a `file://` URI, for tools that want to open the file themselves.
pub fn local_path(uri: &str) -> Option<&Path> {
    uri.strip_prefix("file://").map(Path::new)
}

/// `bytes` (read from `uri`) have the recorded `sha256` (hex, either case).
fn check_sha256(uri: &str, bytes: &[u8], sha256: &str) -> Result<()> {
    let actual = sha256_hex(bytes);
    if !actual.eq_ignore_ascii_case(sha256) {
        return Err(ObjectsError::Sha256Mismatch {
            uri: uri.to_string(),
            expected: sha256.to_lowercase(),
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_round_trip_and_checks() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/store", dir.path().display());
        let objects = Objects::open(&url, &S3Options::default()).unwrap();
        let stored = objects.put("a/b/c.txt", b"hello".to_vec()).await.unwrap();
        assert_eq!(stored.uri, format!("{url}/a/b/c.txt"));
        assert_eq!(stored.bytes, 5);
        assert_eq!(
            std::fs::read(local_path(&stored.uri).unwrap()).unwrap(),
            b"hello"
        );
        let back = objects
            .get_verified(&stored.uri, &stored.sha256)
            .await
            .unwrap();
        assert_eq!(back, b"hello");
        assert!(objects.exists(&stored.uri).await.unwrap());
        assert!(!objects.exists(&objects.uri("nope")).await.unwrap());

        std::fs::write(local_path(&stored.uri).unwrap(), b"HELLO").unwrap();
        let err = objects
            .get_verified(&stored.uri, &stored.sha256)
            .await
            .unwrap_err();
        assert!(matches!(err, ObjectsError::Sha256Mismatch { .. }), "{err}");

        let err = objects.get("s3://elsewhere/x").await.unwrap_err();
        assert!(matches!(err, ObjectsError::Foreign { .. }), "{err}");
        objects.check_read_write("test").await.unwrap();
    }

    #[tokio::test]
    async fn bounded_reads_stop_at_the_limit_and_listing_finds_every_object() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/store", dir.path().display());
        let objects = Objects::open(&url, &S3Options::default()).unwrap();
        let big = objects.put("c/1/a.bin", vec![1u8; 1000]).await.unwrap();
        let small = objects.put("c/1/sub/b.bin", vec![2u8; 10]).await.unwrap();
        objects.put("c/2/c.bin", vec![3u8; 10]).await.unwrap();

        assert_eq!(
            objects.get_bounded(&big.uri, 1000).await.unwrap().len(),
            1000
        );
        let err = objects.get_bounded(&big.uri, 999).await.unwrap_err();
        assert!(
            matches!(err, ObjectsError::TooLarge { max: 999, .. }),
            "{err}"
        );
        let err = objects
            .get_verified_bounded(&small.uri, &big.sha256, 100)
            .await
            .unwrap_err();
        assert!(matches!(err, ObjectsError::Sha256Mismatch { .. }), "{err}");
        let missing = objects
            .get_bounded(&objects.uri("nope"), 10)
            .await
            .unwrap_err();
        assert!(
            missing.is_not_found() && !missing.is_unavailable(),
            "{missing}"
        );

        let dest = dir.path().join("copy.bin");
        let copied = objects.download(&big.uri, &dest, 1000).await.unwrap();
        assert_eq!((copied.sha256, copied.bytes), (big.sha256.clone(), 1000));
        assert_eq!(std::fs::read(&dest).unwrap(), vec![1u8; 1000]);
        let err = objects.download(&big.uri, &dest, 10).await.unwrap_err();
        assert!(matches!(err, ObjectsError::TooLarge { .. }), "{err}");
        assert!(!dest.exists(), "a refused download leaves no file");

        use futures::TryStreamExt;
        let mut listed: Vec<Listed> = objects.list("c/1/").try_collect().await.unwrap();
        listed.sort_by(|a, b| a.key.cmp(&b.key));
        let keys: Vec<&str> = listed.iter().map(|l| l.key.as_str()).collect();
        assert_eq!(keys, ["c/1/a.bin", "c/1/sub/b.bin"]);
        assert_eq!(listed[0].uri, big.uri);
        assert_eq!(listed[1].bytes, 10);

        objects.delete(&small.uri).await.unwrap();
        objects.delete(&small.uri).await.unwrap(); // gone already: fine
        assert!(!objects.exists(&small.uri).await.unwrap());
        let foreign = objects.delete("s3://elsewhere/x").await.unwrap_err();
        assert!(matches!(foreign, ObjectsError::Foreign { .. }));
    }

    #[test]
    fn bad_urls_are_refused() {
        for url in ["relative/dir", "file://relative", "s3://", "gs://bucket"] {
            let err = Objects::open(url, &S3Options::default()).unwrap_err();
            assert!(matches!(err, ObjectsError::BadUrl { .. }), "{url}: {err}");
        }
    }

    /// A real round trip against the S3-compatible server scripts/test.sh starts (Garage).
    #[tokio::test]
    async fn s3_round_trip() {
        let (Ok(endpoint), Ok(bucket)) = (
            std::env::var("VEPHYS_TEST_S3_ENDPOINT"),
            std::env::var("VEPHYS_TEST_S3_BUCKET"),
        ) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run this test against a real S3 server: set VEPHYS_TEST_S3_ENDPOINT (scripts/test.sh does)"
            );
            eprintln!("skipped: VEPHYS_TEST_S3_ENDPOINT is not set (scripts/garage.sh start)");
            return;
        };
        let s3 = S3Options {
            endpoint: Some(endpoint),
        };
        let objects = Objects::open(&format!("s3://{bucket}/objects-test"), &s3).unwrap();
        let stored = objects.put("x/y.bin", vec![7u8; 1000]).await.unwrap();
        assert!(stored
            .uri
            .starts_with(&format!("s3://{bucket}/objects-test/x/y.bin")));
        let back = objects
            .get_verified(&stored.uri, &stored.sha256)
            .await
            .unwrap();
        assert_eq!(back, vec![7u8; 1000]);
        objects.check_read_write("s3-test").await.unwrap();
    }
}
