//! The model registry: which models exist, their input size, weights and layer shapes.
//! Campaigns are validated against it; workers fill it from `vephys-worker layers --json`.

use super::{now_ms, Store};
use crate::error::{Error, Result};
use std::collections::HashSet;
use vephys_proto::v1::{Layer, Model};

#[derive(sqlx::FromRow)]
struct ModelRow {
    name: String,
    architecture: String,
    input_size: i64,
    weights_uri: String,
    weights_sha256: String,
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
    /// Adds a model or replaces its description (a re-registration after a weights update).
    pub async fn register_model(&self, model: &Model) -> Result<()> {
        check_model(model)?;
        let now = now_ms();
        {
            let mut tx = self.begin_write().await?;
            // Upsert rather than insert: workers re-register their models at every start.
            sqlx::query(
                "INSERT INTO models (name, architecture, input_size, weights_uri, weights_sha256, registered_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (name) DO UPDATE SET architecture = excluded.architecture,
                     input_size = excluded.input_size, weights_uri = excluded.weights_uri,
                     weights_sha256 = excluded.weights_sha256",
            )
            .bind(&model.name)
            .bind(&model.architecture)
            .bind(model.input_size)
            .bind(&model.weights_uri)
            .bind(model.weights_sha256.to_lowercase())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            // The layer table is replaced whole so a renamed layer does not linger.
            sqlx::query("DELETE FROM model_layers WHERE model = $1")
                .bind(&model.name)
                .execute(&mut *tx)
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
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        }
        Ok(())
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
                "SELECT name, architecture, input_size, weights_uri, weights_sha256 FROM models
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
            });
        }
        Ok(out)
    }
}

/// Finds a layer by its name or one of its aliases.
pub fn find_layer<'m>(model: &'m Model, name: &str) -> Option<&'m Layer> {
    model
        .layers
        .iter()
        .find(|l| l.name == name || l.aliases.iter().any(|a| a == name))
}

fn check_model(model: &Model) -> Result<()> {
    let bad = |field: String, reason: String| Err(Error::invalid("model", field, reason));
    if model.name.trim().is_empty() {
        return bad("model".into(), "is empty; name the model".into());
    }
    if model.input_size <= 0 {
        return bad(
            "input_size".into(),
            format!("{} is not a positive image size", model.input_size),
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
    let mut names = HashSet::new();
    for (i, layer) in model.layers.iter().enumerate() {
        if layer.name.is_empty() {
            return bad(format!("layers[{i}].name"), "is empty".into());
        }
        if layer.channels <= 0 || layer.height <= 0 || layer.width <= 0 {
            return bad(
                format!("layers[{i}]"),
                format!(
                    "layer `{}` has shape {}x{}x{}; channels, height and width must be positive",
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
