//! Start-up: every check happens before anything is leased (a misconfigured worker must not
//! take jobs it cannot finish), then the worker registers with the coordinator, saying which
//! models it holds with which weights, and announces that it is ready.
//!
//! The registry belongs to users: a registration adds the models the coordinator does not know
//! yet and changes none it knows. Readiness is a file (`--ready-file`), written once the
//! coordinator has answered, so nothing has to read the log for it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tonic::Code;
use vephys_objects::{Objects, S3Options};
use vephys_proto::v1::{Layer, Model, RegisterWorkerRequest, RegisterWorkerResponse};

use super::client::{self, Api, Backoff};
use super::compute::Compute;
use super::error::{DaemonError, Result};
use super::spool::Spool;
use super::weights::{Kind as WeightsKind, Weights};
use super::{Config, Stop, Worker};
use crate::device::{describe, resolve_precision};
use crate::models::{model_names, read_manifest, Network, MANIFEST_FILE};

/// Checks the settings, registers, writes the ready file; the registered worker.
pub(super) async fn start(config: &Config, stop: Arc<Stop>) -> Result<Worker> {
    // what `auto` jobs will run in; bf16 on a device without it stops the worker here
    let precision = resolve_precision(config.precision, config.device)?;
    let objects = open_store(config).await?;
    let mut weights = Weights::new(&config.weights_dir, &config.cache_dir, objects.clone());
    let mut models = builtin_models(&mut weights).await?;
    models.extend(exported_models(&mut weights, &config.weights_dir, &config.model_dirs).await?);
    let spool = Spool::open(&config.spool_dir).await?;
    let api = client::connect(
        &config.coordinator,
        config.token.as_deref(),
        config.ca_cert.as_deref(),
    )?;
    let registration = RegisterWorkerRequest {
        name: config.name.clone(),
        device: describe(config.device),
        memory_bytes: 0,
        loaded_models: models.iter().map(|m| m.name.clone()).collect(),
        models,
    };
    let registered = tokio::select! {
        r = register(&api, &registration, &config.coordinator) => r?,
        () = stop.reached(1) => {
            return Err(DaemonError::Config("stopped before the coordinator answered the registration".into()))
        }
    };
    tracing::info!(
        worker_id = registered.worker_id,
        name = %config.name,
        device = %describe(config.device),
        precision = %precision,
        store = %objects.url(),
        models = ?registration.loaded_models,
        "worker registered"
    );
    if let Some(path) = &config.ready_file {
        write_ready_file(path, registered.worker_id, &registration).await?;
    }
    Ok(Worker {
        api,
        coordinator: config.coordinator.clone(),
        id: registered.worker_id,
        name: config.name.clone(),
        device: describe(config.device),
        objects,
        weights,
        spool,
        compute: Compute::spawn(config.device, config.precision),
        heartbeat: Duration::from_millis((registered.lease_ms.max(3000) / 3) as u64),
        max_jobs: config.max_jobs,
        stop,
        store_failing: false,
        release_backoff: Backoff::new(),
        released: Default::default(),
        registration,
    })
}

/// Opens the store and proves this worker can write to it, read back and delete.
async fn open_store(config: &Config) -> Result<Objects> {
    let s3 = S3Options {
        endpoint: config.s3_endpoint.clone(),
    };
    let objects = Objects::open(&config.store, &s3)
        .map_err(|e| DaemonError::Config(format!("bad --store: {e}")))?;
    let hint = match config.store.starts_with("s3://") {
        true => "check --store, --s3-endpoint and the credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
        false => "check that the directory exists and this user may write to it",
    };
    objects
        .check_read_write(&config.name)
        .await
        .map_err(|source| DaemonError::Store {
            url: objects.url().to_string(),
            hint,
            source: Box::new(source),
        })?;
    Ok(objects)
}

/// Registers (again, when the coordinator forgot this worker), retrying while the coordinator
/// is unreachable.
pub(super) async fn register(
    api: &Api,
    registration: &RegisterWorkerRequest,
    url: &str,
) -> Result<RegisterWorkerResponse> {
    let answer = client::retry("register", || {
        let (mut api, request) = (api.clone(), registration.clone());
        async move { api.register_worker(request).await }
    })
    .await;
    answer
        .map(|r| r.into_inner())
        .map_err(|status| match status.code() {
            Code::Unauthenticated | Code::PermissionDenied => DaemonError::Token {
                url: url.to_string(),
                message: status.message().to_string(),
            },
            code => DaemonError::Refused {
                url: url.to_string(),
                call: "register this worker",
                code,
                message: status.message().to_string(),
            },
        })
}

/// `{"worker_id": …, "name": …, "models": […]}`, written whole (a temporary file renamed), so
/// a reader never sees half of it.
async fn write_ready_file(
    path: &Path,
    worker_id: i64,
    registration: &RegisterWorkerRequest,
) -> Result<()> {
    let body = serde_json::json!({
        "worker_id": worker_id,
        "name": registration.name,
        "models": registration.loaded_models,
    });
    let tmp = path.with_extension("tmp");
    let write = async {
        tokio::fs::write(&tmp, format!("{body}\n")).await?;
        tokio::fs::rename(&tmp, path).await
    };
    write
        .await
        .map_err(DaemonError::io("cannot write --ready-file", path))
}

/// The built-in models this worker has weights for, described for the registry.
async fn builtin_models(weights: &mut Weights) -> Result<Vec<Model>> {
    let mut models = Vec::new();
    for name in model_names() {
        let Some((_, sha)) = weights.local(name, WeightsKind::Safetensors).await else {
            continue;
        };
        // building the network and running it to learn the layer shapes is libtorch work:
        // off the async threads
        let described = tokio::task::spawn_blocking(move || {
            let net = Network::build(name, tch::Device::Cpu)?;
            let size = net.input_size();
            let layers: Vec<Layer> = net
                .layer_shapes(size)?
                .into_iter()
                .map(|s| Layer {
                    name: s.name,
                    aliases: s.aliases,
                    channels: s.channels,
                    height: s.height,
                    width: s.width,
                })
                .collect();
            Ok::<_, crate::WorkerError>((size, layers))
        })
        .await
        .expect("describing a model does not panic")?;
        let (size, layers) = described;
        models.push(Model {
            name: name.to_string(),
            architecture: name.to_string(),
            input_size: size,
            weights_sha256: sha,
            weights_uri: String::new(),
            layers,
            manifest_json: String::new(),
        });
    }
    Ok(models)
}

/// The exported models of `--model-dir` and of the weights directory's subdirectories,
/// described for the registry by their manifests. A directory whose archive is not its
/// manifest's stops the worker: it would register weights it cannot compute with.
async fn exported_models(
    weights: &mut Weights,
    weights_dir: &Path,
    model_dirs: &[PathBuf],
) -> Result<Vec<Model>> {
    let mut dirs: Vec<(PathBuf, bool)> = model_dirs.iter().map(|d| (d.clone(), true)).collect();
    let scan = weights_dir.to_path_buf();
    let found = tokio::task::spawn_blocking(move || {
        let Ok(entries) = std::fs::read_dir(&scan) else {
            return Vec::new();
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join(MANIFEST_FILE).is_file())
            .collect();
        found.sort();
        found
    })
    .await
    .expect("listing a directory does not panic");
    dirs.extend(found.into_iter().map(|d| (d, false)));
    let mut models: Vec<Model> = Vec::new();
    for (dir, given) in dirs {
        let at = dir.clone();
        let manifest = tokio::task::spawn_blocking(move || read_manifest(&at))
            .await
            .expect("reading a manifest does not panic")?;
        if models.iter().any(|m| m.name == manifest.model) {
            continue; // a --model-dir wins over the weights directory
        }
        if given {
            weights.add_archive(&manifest.model, dir.join(&manifest.archive));
        }
        let kind = WeightsKind::Archive(&manifest.archive);
        match weights.local(&manifest.model, kind).await {
            Some((_, sha)) if sha.eq_ignore_ascii_case(&manifest.weights_sha256) => {}
            _ => {
                return Err(DaemonError::Config(format!(
                    "{}: the archive {} is missing or not the one model.json describes; export the model again",
                    dir.display(),
                    manifest.archive
                )))
            }
        }
        models.push(Model {
            name: manifest.model.clone(),
            architecture: manifest.architecture.clone(),
            input_size: manifest.input_size,
            weights_sha256: manifest.weights_sha256.to_lowercase(),
            weights_uri: String::new(),
            layers: manifest
                .layers
                .iter()
                .map(|l| Layer {
                    name: l.name.clone(),
                    aliases: l.aliases.clone(),
                    channels: l.channels,
                    height: l.height,
                    width: l.width,
                })
                .collect(),
            manifest_json: manifest.to_json(),
        });
    }
    Ok(models)
}
