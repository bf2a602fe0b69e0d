//! `vephys models`: the models the coordinator knows, listed, or one registered from the JSON
//! `vephys-worker layers --json` prints or from an exported model's model.json, whose archive
//! `--store` uploads for the workers to fetch.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde::Deserialize;
use vephys_objects::{sha256_hex, Objects, S3Options};
use vephys_proto::v1::{Layer, ListModelsRequest, Model, RegisterModelRequest};

use crate::text_table::print_table;
use crate::Client;

#[derive(Debug, Subcommand)]
pub(crate) enum ModelsAction {
    /// Register a model: an exported model's model.json (from vephys-export), as it is, or the
    /// JSON `vephys-worker layers --model M --json` prints
    Add(AddModelArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct AddModelArgs {
    file: PathBuf,
    /// Object store to upload an exported model's archive to (file:///dir or
    /// s3://bucket/prefix, the workers' --store): workers fetch it from there and check its
    /// sha256. Without it, workers need the model's directory themselves (--model-dir, or
    /// their weights directory)
    #[arg(long, env = "VEPHYS_STORE")]
    store: Option<String>,
    /// S3 endpoint for S3-compatible servers (Garage, MinIO, Ceph)
    #[arg(long, env = "VEPHYS_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
}

/// Prints the registered models.
pub(crate) async fn list(client: &mut Client) -> Result<()> {
    let models = client
        .list_models(ListModelsRequest {})
        .await?
        .into_inner()
        .models;
    print_models(&models);
    Ok(())
}

/// Registers the model `args.file` describes, first uploading an exported model's archive to
/// `args.store` when one is given.
pub(crate) async fn add(client: &mut Client, args: &AddModelArgs) -> Result<()> {
    let file = &args.file;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut model = model_from_json(&text)
        .with_context(|| format!("{} is not a model description", file.display()))?;
    if let Some(store) = &args.store {
        model.weights_uri = upload_archive(&model, file, store, args.s3_endpoint.clone()).await?;
    }
    let stored = client
        .register_model(RegisterModelRequest { model: Some(model) })
        .await?
        .into_inner();
    println!(
        "registered model {} ({} layers)",
        stored.name,
        stored.layers.len()
    );
    Ok(())
}

fn print_models(models: &[Model]) {
    let header = ["model", "architecture", "input", "layers", "weights_sha256"];
    let lines: Vec<Vec<String>> = models
        .iter()
        .map(|m| {
            vec![
                m.name.clone(),
                m.architecture.clone(),
                m.input_size.to_string(),
                m.layers.len().to_string(),
                m.weights_sha256.clone(),
            ]
        })
        .collect();
    print_table(&header, &lines);
}

/// Uploads an exported model's archive (next to its model.json) to the store, under a key named
/// by its sha256; returns its URI. Refuses an archive that is not the manifest's.
async fn upload_archive(
    model: &Model,
    manifest_path: &Path,
    store: &str,
    s3_endpoint: Option<String>,
) -> Result<String> {
    let Some(manifest) = vephys_proto::manifest::Manifest::parse(&model.manifest_json).ok() else {
        bail!(
            "--store uploads an exported model's archive, and {} is a built-in model's description; leave --store out",
            model.name
        );
    };
    let dir = manifest_path.parent().unwrap_or(Path::new("."));
    let archive = dir.join(&manifest.archive);
    let bytes = std::fs::read(&archive)
        .with_context(|| format!("cannot read the archive {}", archive.display()))?;
    if !sha256_hex(&bytes).eq_ignore_ascii_case(&manifest.weights_sha256) {
        bail!(
            "{} is not the archive {} describes (its sha256 differs); export the model again",
            archive.display(),
            manifest_path.display()
        );
    }
    let objects = Objects::open(
        store,
        &S3Options {
            endpoint: s3_endpoint,
        },
    )
    .context("bad --store")?;
    let key = format!(
        "models/{}/{}.pt",
        model.name,
        manifest.weights_sha256.to_lowercase()
    );
    let stored = objects
        .put(&key, bytes)
        .await
        .with_context(|| format!("cannot upload {} to {}", archive.display(), objects.url()))?;
    eprintln!(
        "uploaded {} ({} bytes) to {}",
        archive.display(),
        stored.bytes,
        stored.uri
    );
    Ok(stored.uri)
}

/// The JSON `vephys-worker layers --model M --json` prints, or an exported model's manifest
/// (which has these fields and more). Keys this CLI does not know are ignored, so a newer
/// worker's extra fields do not break registration.
#[derive(Debug, Deserialize)]
struct ModelJson {
    model: String,
    architecture: String,
    input_size: i64,
    weights_sha256: Option<String>,
    #[serde(default)]
    weights_uri: Option<String>,
    layers: Vec<LayerJson>,
}

#[derive(Debug, Deserialize)]
struct LayerJson {
    name: String,
    #[serde(default)]
    aliases: Vec<String>,
    channels: i64,
    height: i64,
    width: i64,
}

fn model_from_json(text: &str) -> Result<Model> {
    let value: serde_json::Value = serde_json::from_str(text)?;
    let manifest_json = match vephys_proto::manifest::is_manifest(&value) {
        true => vephys_proto::manifest::Manifest::parse(text)?.to_json(),
        false => String::new(),
    };
    let m: ModelJson = serde_json::from_value(value)?;
    Ok(Model {
        manifest_json,
        name: m.model,
        architecture: m.architecture,
        input_size: m.input_size,
        weights_sha256: m.weights_sha256.unwrap_or_default(),
        weights_uri: m.weights_uri.unwrap_or_default(),
        layers: m
            .layers
            .into_iter()
            .map(|l| Layer {
                name: l.name,
                aliases: l.aliases,
                channels: l.channels,
                height: l.height,
                width: l.width,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_layer_json_becomes_a_model() {
        let text = r#"{"model":"vgg19","architecture":"vgg19","input_size":224,"weights_sha256":null,
            "layers":[{"name":"block3_pool","aliases":["features.18"],"channels":256,"height":28,"width":28}]}"#;
        let model = model_from_json(text).unwrap();
        assert_eq!(model.name, "vgg19");
        assert_eq!(model.weights_sha256, "");
        assert_eq!(model.layers[0].aliases, vec!["features.18"]);
    }
}
