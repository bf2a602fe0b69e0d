//! Bounds on everything a request can carry into the store, checked where the value enters so
//! that no client can make the coordinator (or a worker that later leases the job) run out of
//! memory or time. A refusal is `INVALID_ARGUMENT` naming the field and the limit. The spec's
//! own bounds (stimuli per probe, steps, image size, filters, names) live with the contract in
//! `vephys_proto::params`; these are the coordinator's.

use crate::error::{Error, Result};

/// The limits an operator sets with the coordinator's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most jobs one campaign expands into (`--max-campaign-jobs`).
    pub max_campaign_jobs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_campaign_jobs: 1_000_000,
        }
    }
}

/// Most jobs in one lease, completion, failure report or heartbeat; bigger lease requests are
/// clamped, other lists refused.
pub const MAX_BATCH: usize = 1024;
/// Most tuning points one job reports (a grating job reports two marginal curves).
pub const MAX_POINTS_PER_JOB: usize = vephys_proto::params::MAX_GRATINGS;
/// Most artifacts (files) one job reports.
pub const MAX_ARTIFACTS_PER_JOB: usize = 16;
/// Longest JSON document a result carries (derived numbers, parameters, library versions).
pub const MAX_JSON_BYTES: usize = 1 << 20;
/// Longest short text: an error message, a URI, a device or worker name, a label.
pub const MAX_TEXT_BYTES: usize = 4096;
/// Most models one worker registration describes.
pub const MAX_MODELS_PER_WORKER: usize = 256;
/// Longest idempotency key of a lease request.
pub const MAX_REQUEST_ID: usize = 64;

/// `value` must be at most `max` bytes long.
pub(crate) fn check_len(what: &'static str, field: &str, value: &str, max: usize) -> Result<()> {
    match value.len() <= max {
        true => Ok(()),
        false => Err(Error::invalid(
            what,
            field,
            format!("is {} bytes long; at most {max} are accepted", value.len()),
        )),
    }
}

/// `items` must hold at most `max` entries.
pub(crate) fn check_count<T>(
    what: &'static str,
    field: &str,
    items: &[T],
    max: usize,
) -> Result<()> {
    match items.len() <= max {
        true => Ok(()),
        false => Err(Error::invalid(
            what,
            field,
            format!("has {} entries; at most {max} are accepted", items.len()),
        )),
    }
}

/// An error message as stored: at most [`MAX_TEXT_BYTES`], cut at a character boundary.
pub(crate) fn truncate(text: &str) -> &str {
    if text.len() <= MAX_TEXT_BYTES {
        return text;
    }
    let mut end = MAX_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_at_a_character_boundary() {
        let text = "é".repeat(MAX_TEXT_BYTES);
        let cut = truncate(&text);
        assert!(cut.len() <= MAX_TEXT_BYTES && cut.len() >= MAX_TEXT_BYTES - 1);
        assert_eq!(truncate("short"), "short");
        let err = check_len("completion", "jobs[0].uri", &text, MAX_TEXT_BYTES).unwrap_err();
        assert!(err.to_string().contains("at most 4096"), "{err}");
    }
}
