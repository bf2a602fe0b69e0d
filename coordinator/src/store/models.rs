//! The model registry: which models exist, their input size, weights and layer shapes.
//! Campaigns are validated against it. It belongs to users (`vephys models add`, which may
//! replace an entry after a weights update); workers add the models it does not know yet
//! (`vephys-worker layers --json`) but never change a registered one, so a worker that holds
//! other weights cannot swap the weights of the campaigns that follow.

use super::limits::{check_len, MAX_TEXT_BYTES};
use super::{now_ms, Store, Tx};
use crate::error::{Error, Result};
use std::collections::HashSet;
use vephys_proto::manifest::{shape_problem, Manifest};
use vephys_proto::params::{MAX_CHANNELS, MAX_IMAGE_SIZE, MAX_LAYERS, MAX_NAME_LEN};
use vephys_proto::v1::{Layer, Model};

/// Most aliases one layer has.
const MAX_ALIASES: usize = 64;

#[derive(sqlx::FromRow)]
struct ModelRow {
    name: String,
    architecture: String,
    input_size: i64,
    weights_uri: String,
    weights_sha256: String,
    manifest: String,
}

#[derive(sqlx::FromRow)]
struct LayerRow {
    model: String,
    name: String,
    aliases: String,
    channels: i64,
    height: i64,
    width: i64,
}

impl Store {
    /// Adds a model or replaces its description (a user's re-registration after a weights
    /// update). Campaigns submitted before keep the weights they pinned.
    pub async fn register_model(&self, model: &Model) -> Result<()> {
        self.insert_model(
            model,
            "DO UPDATE SET architecture = excluded.architecture,
                 input_size = excluded.input_size, weights_uri = excluded.weights_uri,
                 weights_sha256 = excluded.weights_sha256, manifest = excluded.manifest",
        )
        .await?;
        Ok(())
    }

    /// Adds `model` unless the registry has a model of that name already, which is left as it
    /// is (a worker's registration); returns whether it was added.
    pub async fn add_missing_model(&self, model: &Model) -> Result<bool> {
        self.insert_model(model, "DO NOTHING").await
    }

    /// Inserts `model` and its layers, `ON CONFLICT (name) <on_conflict>`; returns whether the
    /// models row was written (and so the layers).
    async fn insert_model(&self, model: &Model, on_conflict: &str) -> Result<bool> {
        check_model(model)?;
        let mut tx = self.begin_write().await?;
        let written = sqlx::query(&format!(
            "INSERT INTO models (name, architecture, input_size, weights_uri, weights_sha256, manifest, registered_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (name) {on_conflict}"
        ))
        .bind(&model.name)
        .bind(&model.architecture)
        .bind(model.input_size)
        .bind(&model.weights_uri)
        .bind(model.weights_sha256.to_lowercase())
        .bind(&model.manifest_json)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if written {
            write_layers(&mut tx, model).await?;
        }
        tx.commit().await?;
        Ok(written)
    }

    pub async fn model(&self, name: &str) -> Result<Option<Model>> {
        let mut models = self.load_models(Some(name)).await?;
        Ok(models.pop())
    }

    pub async fn list_models(&self) -> Result<Vec<Model>> {
        self.load_models(None).await
    }

    async fn load_models(&self, only: Option<&str>) -> Result<Vec<Model>> {
        // `$1 IS NULL OR …` keeps one statement for "one model" and "all models".
        let (models, layers) = {
            let models: Vec<ModelRow> = sqlx::query_as(
                "SELECT name, architecture, input_size, weights_uri, weights_sha256, manifest FROM models
                 WHERE $1 IS NULL OR name = $1 ORDER BY name",
            )
            .bind(only)
            .fetch_all(&self.pool)
            .await?;
            let layers: Vec<LayerRow> = sqlx::query_as(
                "SELECT model, name, aliases, channels, height, width FROM model_layers
                 WHERE $1 IS NULL OR model = $1 ORDER BY model, position",
            )
            .bind(only)
            .fetch_all(&self.pool)
            .await?;
            (models, layers)
        };
        let mut out = Vec::with_capacity(models.len());
        for row in models {
            let layers = layers
                .iter()
                .filter(|l| l.model == row.name)
                .map(|l| Layer {
                    name: l.name.clone(),
                    aliases: serde_json::from_str(&l.aliases).unwrap_or_default(),
                    channels: l.channels,
                    height: l.height,
                    width: l.width,
                })
                .collect();
            out.push(Model {
                name: row.name,
                architecture: row.architecture,
                input_size: row.input_size,
                weights_sha256: row.weights_sha256,
                weights_uri: row.weights_uri,
                layers,
                manifest_json: row.manifest,
            });
        }
        Ok(out)
    }
}

/// Replaces a model's layer table whole, so a renamed layer does not linger.
async fn write_layers(tx: &mut Tx, model: &Model) -> Result<()> {
    sqlx::query("DELETE FROM model_layers WHERE model = $1")
        .bind(&model.name)
        .execute(&mut **tx)
        .await?;
    for (position, layer) in model.layers.iter().enumerate() {
        let aliases = serde_json::to_string(&layer.aliases).expect("strings serialize");
        sqlx::query(
            "INSERT INTO model_layers (model, position, name, aliases, channels, height, width)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&model.name)
        .bind(position as i64)
        .bind(&layer.name)
        .bind(aliases)
        .bind(layer.channels)
        .bind(layer.height)
        .bind(layer.width)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// An exported model's manifest must describe the model it comes with: same name, input size,
/// archive hash and layers, so what campaigns are checked against is what workers run.
fn check_manifest(model: &Model) -> Result<()> {
    let bad = |field: &str, reason: String| Err(Error::invalid("model", field, reason));
    let manifest = match Manifest::parse(&model.manifest_json) {
        Ok(m) => m,
        Err(e) => return bad(&format!("manifest.{}", e.field), e.reason),
    };
    if manifest.model != model.name || manifest.input_size != model.input_size {
        return bad(
            "manifest",
            format!(
                "describes {} at {} px, not {} at {} px; register the model.json vephys-export wrote as it is",
                manifest.model, manifest.input_size, model.name, model.input_size
            ),
        );
    }
    if !manifest
        .weights_sha256
        .eq_ignore_ascii_case(&model.weights_sha256)
    {
        return bad(
            "manifest",
            "names another archive (weights_sha256) than the model; register the model.json vephys-export wrote as it is".into(),
        );
    }
    let same_layers = manifest.layers.len() == model.layers.len()
        && manifest.layers.iter().zip(&model.layers).all(|(m, l)| {
            (&m.name, &m.aliases, m.channels, m.height, m.width)
                == (&l.name, &l.aliases, l.channels, l.height, l.width)
        });
    if !same_layers {
        return bad(
            "manifest",
            "lists other layers than the model; register the model.json vephys-export wrote as it is".into(),
        );
    }
    Ok(())
}

/// The manifest of an exported model, None for a built-in one.
pub fn manifest(model: &Model) -> Option<Manifest> {
    match model.manifest_json.is_empty() {
        true => None,
        // checked when it was registered
        false => Manifest::parse(&model.manifest_json).ok(),
    }
}

/// Finds a layer by its name or one of its aliases.
pub fn find_layer<'m>(model: &'m Model, name: &str) -> Option<&'m Layer> {
    model
        .layers
        .iter()
        .find(|l| l.name == name || l.aliases.iter().any(|a| a == name))
}

/// Checks a model description before it enters the registry: names, sizes and list lengths
/// within the contract's limits (a campaign over it must fit in memory), weights named
/// consistently.
fn check_model(model: &Model) -> Result<()> {
    let bad = |field: String, reason: String| Err(Error::invalid("model", field, reason));
    if model.name.trim().is_empty() {
        return bad("model".into(), "is empty; name the model".into());
    }
    check_name("model", &model.name)?;
    check_len("model", "architecture", &model.architecture, MAX_TEXT_BYTES)?;
    check_len("model", "weights_uri", &model.weights_uri, MAX_TEXT_BYTES)?;
    let uri = &model.weights_uri;
    if !(uri.is_empty() || uri.starts_with("s3://") || uri.starts_with("file://")) {
        return bad(
            "weights_uri".into(),
            "is not an s3:// or file:// uri in the workers' object store; upload the weights with `vephys models add --store`".into(),
        );
    }
    if !(1..=i64::from(MAX_IMAGE_SIZE)).contains(&model.input_size) {
        return bad(
            "input_size".into(),
            format!(
                "{} is not an image size in 1..={MAX_IMAGE_SIZE}",
                model.input_size
            ),
        );
    }
    if model.layers.len() > MAX_LAYERS {
        return bad(
            "layers".into(),
            format!(
                "{} layers are more than the {MAX_LAYERS} a model may describe",
                model.layers.len()
            ),
        );
    }
    let sha = &model.weights_sha256;
    if !sha.is_empty() && (sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit())) {
        return bad(
            "weights_sha256".into(),
            "is not 64 hex digits; give the sha256 of the weights or null".into(),
        );
    }
    if model.layers.is_empty() {
        return bad(
            "layers".into(),
            "is empty; describe at least one layer".into(),
        );
    }
    if !model.manifest_json.is_empty() {
        check_manifest(model)?;
    }
    let mut names = HashSet::new();
    for (i, layer) in model.layers.iter().enumerate() {
        if layer.name.is_empty() {
            return bad(format!("layers[{i}].name"), "is empty".into());
        }
        check_name(&format!("layers[{i}].name"), &layer.name)?;
        if layer.aliases.len() > MAX_ALIASES {
            return bad(
                format!("layers[{i}].aliases"),
                format!(
                    "has {} entries; at most {MAX_ALIASES} are accepted",
                    layer.aliases.len()
                ),
            );
        }
        for (k, alias) in layer.aliases.iter().enumerate() {
            check_name(&format!("layers[{i}].aliases[{k}]"), alias)?;
        }
        if let Some(reason) = shape_problem(&layer.name, layer.channels, layer.height, layer.width)
        {
            return bad(format!("layers[{i}]"), reason);
        }
        let side = i64::from(MAX_IMAGE_SIZE);
        if layer.channels > MAX_CHANNELS || layer.height > side || layer.width > side * side {
            return bad(
                format!("layers[{i}]"),
                format!(
                    "layer `{}` has shape {}x{}x{}; at most {MAX_CHANNELS} channels and {side} rows are accepted",
                    layer.name, layer.channels, layer.height, layer.width
                ),
            );
        }
        for name in std::iter::once(&layer.name).chain(&layer.aliases) {
            if !names.insert(name.as_str()) {
                return bad(
                    format!("layers[{i}]"),
                    format!(
                        "the name `{name}` is used twice; layer names and aliases must be unique"
                    ),
                );
            }
        }
    }
    Ok(())
}

/// A name (of a model, layer or alias) as it may appear in object keys and queries: at most
/// [`MAX_NAME_LEN`] characters, no `/`, `\` or control characters, not `.` or `..`.
fn check_name(field: &str, name: &str) -> Result<()> {
    let bad = |reason: String| Err(Error::invalid("model", field, reason));
    if name.chars().count() > MAX_NAME_LEN {
        return bad(format!("is longer than {MAX_NAME_LEN} characters"));
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
    {
        return bad(format!(
            "`{}` is not a name: it is . or .., or holds /, \\ or a control character",
            name.escape_default()
        ));
    }
    Ok(())
}
