//! Completions not yet answered by the coordinator, kept on disk. A completion is written here
//! before it is sent and removed once the coordinator has given a definitive answer (accepted,
//! or refused for good), so results computed while the coordinator or its database is
//! unreachable survive a worker restart and are sent again. Resending is safe: a replay is a
//! no-op, and a stale one is refused by its fencing token.
//!
//! Files are read and written on tokio's blocking pool (a write is fsynced), never on the async
//! threads. Leftovers are cleaned when the spool opens: a temporary file of a write that a
//! crash cut short is removed, and so is an unreadable file older than a week (it is moved
//! aside as `.corrupt` first, for a person to look at).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use prost::Message;
use vephys_proto::v1::CompleteRequest;

use super::error::{DaemonError, Result};

/// Largest spool file read back: a completion of the biggest batch stays far below it.
const MAX_FILE_BYTES: u64 = 256 << 20;
/// How long an unreadable spool file is kept for inspection.
const KEEP_CORRUPT: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// Opens (creating) the spool directory and cleans its leftovers.
    pub async fn open(dir: &Path) -> Result<Spool> {
        let dir = dir.to_path_buf();
        let spool = Spool { dir: dir.clone() };
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)
                .map_err(DaemonError::io("cannot create --spool-dir", &dir))?;
            clean(&dir);
            Ok::<_, DaemonError>(())
        })
        .await
        .expect("the spool task does not panic")?;
        Ok(spool)
    }

    /// Writes `request` durably (temporary file, fsync, rename, fsync of the directory);
    /// returns its path. Names start with the time, so they sort oldest first.
    pub async fn save(&self, request: &CompleteRequest) -> Result<PathBuf> {
        let first = request.jobs.first().map_or(0, |j| j.job_id);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let path = self.dir.join(format!("complete-{nanos:020}-{first}.pb"));
        let bytes = request.encode_to_vec();
        let (dir, target) = (self.dir.clone(), path.clone());
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let tmp = target.with_extension("tmp");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &target)?;
            // the rename itself must survive a power loss too
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .expect("the spool task does not panic")
        .map_err(DaemonError::io(
            "cannot write the completion spool file",
            &path,
        ))?;
        Ok(path)
    }

    /// Completions left by an earlier run (or earlier in this one), oldest first.
    pub async fn pending(&self) -> Result<Vec<(PathBuf, CompleteRequest)>> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || read_pending(&dir))
            .await
            .expect("the spool task does not panic")
    }

    /// Forgets a completion the coordinator has answered for good.
    pub async fn remove(&self, path: &Path) {
        if let Err(e) = tokio::fs::remove_file(path).await {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a sent completion from the spool");
        }
    }
}

fn read_pending(dir: &Path) -> Result<Vec<(PathBuf, CompleteRequest)>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(DaemonError::io("cannot read --spool-dir", dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pb"))
        .collect();
    paths.sort();
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        let too_big = std::fs::metadata(&path).is_ok_and(|m| m.len() > MAX_FILE_BYTES);
        let decoded = match too_big {
            true => Err(format!("larger than {MAX_FILE_BYTES} bytes")),
            false => std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| CompleteRequest::decode(b.as_slice()).map_err(|e| e.to_string())),
        };
        match decoded {
            Ok(request) => out.push((path, request)),
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "unreadable spool file; moved aside");
                let _ = std::fs::rename(&path, path.with_extension("corrupt"));
            }
        }
    }
    Ok(out)
}

/// Removes what a crash or an old run left: temporary files and old unreadable ones.
fn clean(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        let old = || {
            std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > KEEP_CORRUPT)
        };
        let leftover = match path.extension().and_then(|x| x.to_str()) {
            Some("tmp") => true,
            Some("corrupt") => old(),
            _ => false,
        };
        if leftover {
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!(path = %path.display(), "spool leftover removed"),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove a spool leftover")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vephys_proto::v1::JobCompletion;

    #[tokio::test]
    async fn saved_completions_come_back_until_removed_and_leftovers_go() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).await.unwrap();
        let request = CompleteRequest {
            worker_id: 3,
            jobs: vec![JobCompletion {
                job_id: 11,
                token: 2,
                ..Default::default()
            }],
        };
        let path = spool.save(&request).await.unwrap();
        std::fs::write(dir.path().join("junk.pb"), b"\xff\xff").unwrap();
        let pending = spool.pending().await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].1, request);
        assert!(dir.path().join("junk.corrupt").exists());
        spool.remove(&path).await;
        assert!(spool.pending().await.unwrap().is_empty());

        // a write a crash cut short, and an old unreadable file, are gone at the next open
        std::fs::write(dir.path().join("complete-1-1.tmp"), b"half").unwrap();
        let old = std::fs::File::options()
            .write(true)
            .open(dir.path().join("junk.corrupt"))
            .unwrap();
        old.set_modified(SystemTime::now() - 2 * KEEP_CORRUPT)
            .unwrap();
        std::fs::write(dir.path().join("new.corrupt"), b"x").unwrap();
        Spool::open(dir.path()).await.unwrap();
        assert!(!dir.path().join("complete-1-1.tmp").exists());
        assert!(!dir.path().join("junk.corrupt").exists());
        assert!(
            dir.path().join("new.corrupt").exists(),
            "a fresh one is kept to look at"
        );
    }
}
