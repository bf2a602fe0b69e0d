//! Completions not yet acknowledged by the coordinator, kept on disk. A completion is written
//! here before it is sent and removed once the coordinator has answered, so results computed
//! while the coordinator is unreachable survive a worker restart and are sent again at start.
//! Resending is safe: a replay is a no-op, and a stale one is refused by its fencing token.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use prost::Message;
use vephys_proto::v1::CompleteRequest;

pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    pub fn open(dir: &Path) -> Result<Spool> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create --spool-dir {}", dir.display()))?;
        Ok(Spool {
            dir: dir.to_path_buf(),
        })
    }

    /// Writes `request` durably (temporary file, fsync, rename, fsync of the directory);
    /// returns its path. Names start with the time, so they sort oldest first.
    pub fn save(&self, request: &CompleteRequest) -> Result<PathBuf> {
        let first = request.jobs.first().map_or(0, |j| j.job_id);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let path = self.dir.join(format!("complete-{nanos:020}-{first}.pb"));
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&request.encode_to_vec())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            // the rename itself must survive a power loss too
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().with_context(|| {
            format!("cannot write the completion spool file {}", path.display())
        })?;
        Ok(path)
    }

    /// Completions left by an earlier run, oldest first.
    pub fn pending(&self) -> Result<Vec<(PathBuf, CompleteRequest)>> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .with_context(|| format!("cannot read --spool-dir {}", self.dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pb"))
            .collect();
        paths.sort();
        let mut out = Vec::with_capacity(paths.len());
        for path in paths {
            let bytes = std::fs::read(&path)
                .with_context(|| format!("cannot read spool file {}", path.display()))?;
            match CompleteRequest::decode(bytes.as_slice()) {
                Ok(request) => out.push((path, request)),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "unreadable spool file; moved aside");
                    let _ = std::fs::rename(&path, path.with_extension("corrupt"));
                }
            }
        }
        Ok(out)
    }

    pub fn remove(&self, path: &Path) {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a sent completion from the spool");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vephys_proto::v1::JobCompletion;

    #[test]
    fn saved_completions_come_back_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let request = CompleteRequest {
            worker_id: 3,
            jobs: vec![JobCompletion {
                job_id: 11,
                token: 2,
                ..Default::default()
            }],
        };
        let path = spool.save(&request).unwrap();
        std::fs::write(dir.path().join("junk.pb"), b"\xff\xff").unwrap();
        let pending = spool.pending().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].1, request);
        assert!(dir.path().join("junk.corrupt").exists());
        spool.remove(&path);
        assert!(spool.pending().unwrap().is_empty());
    }
}
