//! A finished job as JSON: its numbers, derived numbers, provenance, tuning points and
//! artifacts. `vephys results --format json` prints a list of these; the results browser's unit
//! record holds one per job of the unit. JSON documents stored as text (derived numbers,
//! parameters, library versions) are parsed, so readers get objects, not strings.

use serde_json::{json, Value};
use vephys_proto::v1::JobResult;

/// One job's result as a JSON object.
pub fn result_json(r: &JobResult) -> Value {
    let outcome = r.result.clone().unwrap_or_default();
    let p = outcome.provenance.clone().unwrap_or_default();
    let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
    json!({
        "job_id": r.job_id,
        "layer": r.layer,
        "filter": r.filter,
        "probe": r.probe,
        "attempt": r.attempt,
        "max_act": outcome.max_act,
        "mean_act": outcome.mean_act,
        "status": outcome.status,
        "derived": parse(&outcome.derived_json),
        "provenance": {
            "weights_sha256": p.weights_sha256,
            "params": parse(&p.params_json),
            "params_hash": p.params_hash,
            "seed": p.seed,
            "device": p.device,
            "library_versions": parse(&p.library_versions_json),
            "worker": p.worker,
            "duration_ms": p.duration_ms,
        },
        "points": r.points.iter().map(|t| json!({
            "probe": t.probe, "x": t.x, "label": t.label, "max_act": t.max_act, "mean_act": t.mean_act,
        })).collect::<Vec<_>>(),
        "artifacts": r.artifacts.iter().map(|a| json!({
            "kind": a.kind, "uri": a.uri, "sha256": a.sha256, "bytes": a.bytes,
        })).collect::<Vec<_>>(),
    })
}
