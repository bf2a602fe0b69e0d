//! `vephys gc`: finds (and with `--delete` removes) the objects no result will ever point at.
//!
//! Workers write every attempt's files under its own key
//! (`campaigns/<campaign>/<layer>/filter_<NNNN>/<probe>/attempt_<A>/<kind>.<ext>`), and only
//! the winning attempt's are recorded. An attempt whose lease was lost (its worker died or
//! paused, the job was given back), and every attempt of a job that failed or was cancelled,
//! leaves files that nothing refers to. Which attempts those are follows from each job's state,
//! which the coordinator lists (`ListJobs`):
//!
//! - a succeeded job keeps its recorded attempt's files only;
//! - a failed or cancelled job keeps none (no attempt of it can be recorded any more);
//! - a job not finished keeps its latest attempt's files when it is leased (that attempt may
//!   still complete) and none of older attempts, which its fencing token refuses for good.
//!
//! Recorded artifacts are never removed, nor objects this campaign's jobs do not explain (they
//! are counted as unknown). Jobs are read before the store is listed, so an attempt that starts
//! meanwhile is newer than what was read, and kept.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tokio_stream::StreamExt;
use vephys_objects::{Listed, Objects, S3Options};
use vephys_proto::v1::{JobState, ListJobsRequest};

use crate::{paging, Client};

#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// Only these campaigns (repeat the flag); every campaign when left out
    #[arg(long = "campaign")]
    campaigns: Vec<i64>,

    /// The workers' object store (their --store: file:///dir or s3://bucket/prefix); with
    /// --data-dir, its objects by default
    #[arg(long, env = "VEPHYS_STORE")]
    store: Option<String>,

    /// S3 endpoint for S3-compatible servers (Garage, MinIO, Ceph)
    #[arg(long, env = "VEPHYS_S3_ENDPOINT")]
    s3_endpoint: Option<String>,

    /// Remove the objects found; without it nothing is removed (a dry run that says what
    /// would be)
    #[arg(long)]
    delete: bool,

    /// Print every object found, not only the totals
    #[arg(long)]
    list: bool,
}

/// Why an object can go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Garbage {
    /// An attempt older than the job's latest (or not the one recorded).
    LostAttempt,
    /// Any attempt of a job that failed.
    FailedJob,
    /// Any attempt of a job that was cancelled.
    CancelledJob,
}

impl Garbage {
    fn label(self) -> &'static str {
        match self {
            Garbage::LostAttempt => "attempts that lost",
            Garbage::FailedJob => "failed jobs",
            Garbage::CancelledJob => "cancelled jobs",
        }
    }
}

/// What to do with one object, given its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Keep,
    Remove(Garbage),
    /// Not an object of a job of this campaign (kept).
    Unknown,
}

pub async fn run(client: &mut Client, args: &GcArgs, data_dir: Option<&Path>) -> Result<()> {
    let store = match (&args.store, data_dir) {
        (Some(url), _) => url.clone(),
        (None, Some(dir)) => crate::embedded::DataDir::new(dir)?.objects_url(),
        (None, None) => bail!("name the workers' object store with --store (or VEPHYS_STORE)"),
    };
    let objects = Objects::open(
        &store,
        &S3Options {
            endpoint: args.s3_endpoint.clone(),
        },
    )
    .context("bad --store")?;
    let campaigns = match args.campaigns.is_empty() {
        true => paging::campaigns(client)
            .await?
            .iter()
            .map(|c| c.id)
            .collect(),
        false => args.campaigns.clone(),
    };
    let mut total = (0u64, 0u64);
    for id in campaigns {
        let removed = collect(client, &objects, id, args).await?;
        total.0 += removed.0;
        total.1 += removed.1;
    }
    let (count, bytes) = total;
    match args.delete {
        true => println!("removed {count} objects ({})", size(bytes)),
        false if count > 0 => println!(
            "{count} objects ({}) can be removed; run again with --delete to remove them",
            size(bytes)
        ),
        false => println!("nothing to remove"),
    }
    Ok(())
}

/// Finds one campaign's garbage, prints it and (with --delete) removes it; its count and size.
async fn collect(
    client: &mut Client,
    objects: &Objects,
    id: i64,
    args: &GcArgs,
) -> Result<(u64, u64)> {
    let jobs = jobs(client, id).await?;
    let mut listing = objects.list(&format!("campaigns/{id}/"));
    let mut found: HashMap<Garbage, Vec<Listed>> = HashMap::new();
    let (mut kept, mut unknown) = (0u64, 0u64);
    while let Some(object) = listing.next().await {
        let object = object.with_context(|| format!("cannot list {}", objects.url()))?;
        match verdict(&jobs, id, &object.key) {
            Verdict::Keep => kept += 1,
            Verdict::Unknown => unknown += 1,
            Verdict::Remove(why) => found.entry(why).or_default().push(object),
        }
    }
    let mut reasons: Vec<_> = found.into_iter().collect();
    reasons.sort_by_key(|(why, _)| *why);
    let (mut count, mut bytes) = (0u64, 0u64);
    for (why, list) in &reasons {
        let size_of: u64 = list.iter().map(|o| o.bytes).sum();
        println!(
            "campaign {id}: {} objects ({}) of {}",
            list.len(),
            size(size_of),
            why.label()
        );
        count += list.len() as u64;
        bytes += size_of;
        if args.list {
            for object in list {
                println!("  {}", object.uri);
            }
        }
    }
    println!(
        "campaign {id}: {kept} objects kept{}",
        match unknown {
            0 => String::new(),
            n => format!(", {n} not of its jobs (kept)"),
        }
    );
    if args.delete {
        let all: Vec<String> = reasons
            .into_iter()
            .flat_map(|(_, list)| list.into_iter().map(|o| o.uri))
            .collect();
        remove(objects, all).await?;
    }
    Ok((count, bytes))
}

/// Removes `uris`, a few at a time.
async fn remove(objects: &Objects, uris: Vec<String>) -> Result<()> {
    let mut running = tokio::task::JoinSet::new();
    for uri in uris {
        if running.len() >= 16 {
            running.join_next().await.expect("a task runs")??;
        }
        let objects = objects.clone();
        running.spawn(async move {
            objects
                .delete(&uri)
                .await
                .with_context(|| format!("cannot remove {uri}"))
        });
    }
    while let Some(done) = running.join_next().await {
        done??;
    }
    Ok(())
}

/// The campaign's jobs by (layer, filter, probe).
async fn jobs(
    client: &mut Client,
    campaign_id: i64,
) -> Result<HashMap<(String, i64, String), JobState>> {
    let mut jobs = HashMap::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_jobs(ListJobsRequest {
                campaign_id,
                page_size: 10_000,
                page_token,
            })
            .await?
            .into_inner();
        for job in page.jobs {
            jobs.insert((job.layer.clone(), job.filter, job.probe.clone()), job);
        }
        if page.next_page_token.is_empty() {
            return Ok(jobs);
        }
        page_token = page.next_page_token;
    }
}

/// What to do with the object at `key` (relative to the store).
fn verdict(jobs: &HashMap<(String, i64, String), JobState>, campaign: i64, key: &str) -> Verdict {
    let Some((layer, filter, probe, attempt)) = parse_key(campaign, key) else {
        return Verdict::Unknown;
    };
    let Some(job) = jobs.get(&(layer.to_string(), filter, probe.to_string())) else {
        return Verdict::Unknown;
    };
    match job.state.as_str() {
        "succeeded" if attempt == job.result_attempt => Verdict::Keep,
        "succeeded" => Verdict::Remove(Garbage::LostAttempt),
        "failed" => Verdict::Remove(Garbage::FailedJob),
        "cancelled" => Verdict::Remove(Garbage::CancelledJob),
        "leased" if attempt >= job.attempt => Verdict::Keep,
        // queued or waiting: the latest attempt's lease is over too
        "queued" | "waiting" if attempt > job.attempt => Verdict::Keep,
        "leased" | "queued" | "waiting" => Verdict::Remove(Garbage::LostAttempt),
        _ => Verdict::Unknown,
    }
}

/// `campaigns/<c>/<layer>/filter_<NNNN>/<probe>/attempt_<A>/<file>` → (layer, filter, probe, A).
fn parse_key(campaign: i64, key: &str) -> Option<(&str, i64, &str, i64)> {
    let parts: Vec<&str> = key.split('/').collect();
    let [root, c, layer, filter, probe, attempt, _file] = parts[..] else {
        return None;
    };
    if root != "campaigns" || c.parse::<i64>().ok()? != campaign {
        return None;
    }
    let filter = filter.strip_prefix("filter_")?.parse().ok()?;
    let attempt = attempt.strip_prefix("attempt_")?.parse().ok()?;
    Some((layer, filter, probe, attempt))
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: &str, attempt: i64, result_attempt: i64) -> JobState {
        JobState {
            job_id: 1,
            layer: "blocks.4".into(),
            filter: 3,
            probe: "zoom".into(),
            state: state.into(),
            attempt,
            result_attempt,
        }
    }

    fn verdict_for(state: &str, attempt: i64, result: i64, key_attempt: i64) -> Verdict {
        let j = job(state, attempt, result);
        let jobs = HashMap::from([((j.layer.clone(), j.filter, j.probe.clone()), j)]);
        let key =
            format!("campaigns/7/blocks.4/filter_0003/zoom/attempt_{key_attempt}/record.json");
        verdict(&jobs, 7, &key)
    }

    #[test]
    fn only_attempts_that_can_never_be_recorded_go() {
        use Garbage::*;
        // succeeded at attempt 2: attempts 1 and 3 lost, 2 is the result
        assert_eq!(verdict_for("succeeded", 3, 2, 2), Verdict::Keep);
        assert_eq!(
            verdict_for("succeeded", 3, 2, 1),
            Verdict::Remove(LostAttempt)
        );
        assert_eq!(
            verdict_for("succeeded", 3, 2, 3),
            Verdict::Remove(LostAttempt)
        );
        // leased at attempt 2: it may still complete; attempt 1 cannot
        assert_eq!(verdict_for("leased", 2, 0, 2), Verdict::Keep);
        assert_eq!(verdict_for("leased", 2, 0, 1), Verdict::Remove(LostAttempt));
        // queued after attempt 2 expired: 2 cannot complete; a newer lease's files are kept
        assert_eq!(verdict_for("queued", 2, 0, 2), Verdict::Remove(LostAttempt));
        assert_eq!(verdict_for("queued", 2, 0, 3), Verdict::Keep);
        assert_eq!(verdict_for("failed", 3, 0, 3), Verdict::Remove(FailedJob));
        assert_eq!(
            verdict_for("cancelled", 1, 0, 1),
            Verdict::Remove(CancelledJob)
        );
    }

    #[test]
    fn objects_that_are_not_a_jobs_are_kept() {
        let j = job("failed", 1, 0);
        let jobs = HashMap::from([((j.layer.clone(), j.filter, j.probe.clone()), j)]);
        for key in [
            "campaigns/7/blocks.4/filter_0003/zoom/record.json",
            "campaigns/7/blocks.4/filter_0009/zoom/attempt_1/record.json",
            "campaigns/8/blocks.4/filter_0003/zoom/attempt_1/record.json",
            "campaigns/7/other/filter_0003/zoom/attempt_1/record.json",
            "campaigns/7/blocks.4/filter_x/zoom/attempt_1/record.json",
        ] {
            assert_eq!(verdict(&jobs, 7, key), Verdict::Unknown, "{key}");
        }
    }
}
