//! The manifest of an exported model (`model.json`, written by `vephys-export`): what a worker
//! needs to run a TorchScript archive without Python, and what the registry needs to validate
//! campaigns on it. The registry stores the manifest as it is; workers fetch the archive by its
//! sha256 and check it against the manifest before use.
//!
//! The first fields are the registry's own (`model`, `architecture`, `input_size`,
//! `weights_sha256`, `layers`), so `vephys models add model.json` reads a manifest as it reads
//! the output of `vephys-worker layers --json`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The value of `format` this version reads and writes.
pub const FORMAT: &str = "vephys-model-1";

/// Largest manifest accepted anywhere (registry, worker): a model with thousands of layers
/// stays far below it.
pub const MAX_BYTES: usize = 4 << 20;

/// Fields this version does not know are ignored, so a newer exporter's additions do not stop
/// an older worker; `format` changes when the meaning of a known field does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    /// The registry name.
    pub model: String,
    /// Where it came from, e.g. `timm:nasnetalarge`.
    pub architecture: String,
    /// The default input side in pixels.
    pub input_size: i64,
    /// sha256 (hex) of the archive: the registry's weights hash for this model.
    pub weights_sha256: String,
    pub layers: Vec<ManifestLayer>,
    /// The archive's file name, next to `model.json`.
    pub archive: String,
    pub input_sizes: InputSizes,
    pub normalization: Normalization,
    /// The source and its weights, for provenance (`{"from": ..., "weights": ...}`).
    #[serde(default)]
    pub source: serde_json::Map<String, serde_json::Value>,
    /// How the graphs were made: `script` or `trace`.
    #[serde(default)]
    pub graph: String,
    /// Library versions of the export; `torch` must match the worker's libtorch.
    pub versions: Versions,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestLayer {
    /// The module's PyTorch path, e.g. `cell_0` or `layer3.5`.
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Shape of the method's output at the default input size.
    pub channels: i64,
    pub height: i64,
    pub width: i64,
    /// The archive's method computing this layer (and only what it needs).
    pub method: String,
    /// What the layer put out before the exporter made it a map.
    pub output: LayerOutput,
}

/// A layer's native output; the archive's method always returns a 4-D map [B, C, h, w].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerOutput {
    /// [B, C, h, w] as is.
    Map,
    /// [B, C], returned as [B, C, 1, 1].
    Vector,
    /// Transformer tokens [B, N, C], returned as [B, C, 1, N]: the channel objective is the
    /// mean over tokens, the unit objective one token.
    Tokens,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSizes {
    pub default: i64,
    /// The smallest and largest sides the archive was verified at.
    pub min: i64,
    pub max: i64,
}

/// How pixel-space images (RGB in [0, 1]) become the archive's input.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Normalization {
    /// (x - mean) / std per channel.
    MeanStd { mean: [f64; 3], std: [f64; 3] },
    /// x * scale + shift.
    Affine { scale: f64, shift: f64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Versions {
    pub torch: String,
    #[serde(flatten)]
    pub others: serde_json::Map<String, serde_json::Value>,
}

/// A manifest problem, naming the field at fault.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestError {
    pub field: String,
    pub reason: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field `{}`: {}", self.field, self.reason)
    }
}

impl std::error::Error for ManifestError {}

fn bad<T>(field: impl Into<String>, reason: impl Into<String>) -> Result<T, ManifestError> {
    Err(ManifestError {
        field: field.into(),
        reason: reason.into(),
    })
}

/// Whether `text` is a manifest rather than the plain registry JSON of a built-in model.
pub fn is_manifest(value: &serde_json::Value) -> bool {
    value.get("format").is_some()
}

impl Manifest {
    /// Parses and checks a manifest.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        if text.len() > MAX_BYTES {
            return bad(
                "model.json",
                format!(
                    "is {} bytes; a manifest holds at most {MAX_BYTES}",
                    text.len()
                ),
            );
        }
        let manifest: Manifest = serde_json::from_str(text).or_else(|e| {
            bad(
                "model.json",
                format!("{e}; is it the model.json vephys-export wrote?"),
            )
        })?;
        manifest.check()?;
        Ok(manifest)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a manifest serializes")
    }

    /// Checks what holds for every manifest: the format, the sizes, the layer table.
    pub fn check(&self) -> Result<(), ManifestError> {
        if self.format != FORMAT {
            return bad(
                "format",
                format!(
                    "`{}` is not {FORMAT}; export the model again with this version's vephys-export",
                    self.format
                ),
            );
        }
        if self.model.trim().is_empty() {
            return bad("model", "is empty; name the model");
        }
        let sha = &self.weights_sha256;
        if sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
            return bad("weights_sha256", "is not the 64 hex digits of a sha256");
        }
        let archive = std::path::Path::new(&self.archive);
        let plain = archive.components().count() == 1
            && matches!(
                archive.components().next(),
                Some(std::path::Component::Normal(_))
            );
        if !plain {
            return bad(
                "archive",
                format!(
                    "`{}` is not a file name; the archive lies next to model.json",
                    self.archive
                ),
            );
        }
        let s = self.input_sizes;
        if !(1 <= s.min && s.min <= s.default && s.default <= s.max && s.max <= 8192) {
            return bad(
                "input_sizes",
                format!(
                    "min {} <= default {} <= max {} does not hold (sizes 1..=8192)",
                    s.min, s.default, s.max
                ),
            );
        }
        if self.input_size != s.default {
            return bad(
                "input_size",
                format!(
                    "{} differs from input_sizes.default {}",
                    self.input_size, s.default
                ),
            );
        }
        let finite = match self.normalization {
            Normalization::MeanStd { mean, std } => {
                mean.iter().all(|v| v.is_finite()) && std.iter().all(|v| v.is_finite() && *v > 0.0)
            }
            Normalization::Affine { scale, shift } => {
                scale.is_finite() && shift.is_finite() && scale != 0.0
            }
        };
        if !finite {
            return bad(
                "normalization",
                "needs finite values and a non-zero std or scale",
            );
        }
        if self.layers.is_empty() {
            return bad("layers", "is empty; export at least one layer");
        }
        let mut names = std::collections::HashSet::new();
        let mut methods = std::collections::HashSet::new();
        for (i, layer) in self.layers.iter().enumerate() {
            if let Some(reason) =
                shape_problem(&layer.name, layer.channels, layer.height, layer.width)
            {
                return bad(format!("layers[{i}]"), reason);
            }
            let identifier = !layer.method.is_empty()
                && layer
                    .method
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !identifier || !methods.insert(layer.method.as_str()) {
                return bad(
                    format!("layers[{i}].method"),
                    format!(
                        "`{}` is not a unique method name of the archive",
                        layer.method
                    ),
                );
            }
            for name in std::iter::once(&layer.name).chain(&layer.aliases) {
                if name.is_empty() || !names.insert(name.as_str()) {
                    return bad(
                        format!("layers[{i}]"),
                        format!("the name `{name}` is empty or used twice; layer names and aliases must be unique"),
                    );
                }
            }
        }
        Ok(())
    }

    /// Index of the layer called `name` (its name or an alias).
    pub fn layer_index(&self, name: &str) -> Option<usize> {
        self.layers
            .iter()
            .position(|l| l.name == name || l.aliases.iter().any(|a| a == name))
    }

    /// Checks an image side against the sizes the archive was verified at.
    pub fn check_size(&self, size: i64) -> Result<(), String> {
        let s = self.input_sizes;
        if (s.min..=s.max).contains(&size) {
            return Ok(());
        }
        let range = match s.min == s.max {
            true => format!("only at {} px", s.min),
            false => format!("at {} to {} px", s.min, s.max),
        };
        Err(format!(
            "image size {size} is outside what {} was exported for: it runs {range}; \
             use such a size, or export it again with --min-size/--max-size",
            self.model
        ))
    }
}

/// The release part of a torch version (`2.11.0+cu130` → `2.11.0`): builds for different
/// devices of one release read each other's archives.
pub fn torch_release(version: &str) -> &str {
    version.split('+').next().unwrap_or(version).trim()
}

/// Why a layer of this shape cannot be registered, if it cannot: its channels, height and
/// width must be positive (the manifest and the registry check the same).
pub fn shape_problem(name: &str, channels: i64, height: i64, width: i64) -> Option<String> {
    (channels <= 0 || height <= 0 || width <= 0).then(|| {
        format!(
            "layer `{name}` has shape {channels}x{height}x{width}; channels, height and width must be positive"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn example() -> String {
        format!(
            r#"{{
  "format": "{FORMAT}",
  "model": "nasnetalarge",
  "architecture": "timm:nasnetalarge",
  "input_size": 331,
  "weights_sha256": "{sha}",
  "layers": [
    {{"name": "cell_0", "aliases": ["Cell_0"], "channels": 1008, "height": 42, "width": 42,
     "method": "layer_0", "output": "map"}}
  ],
  "archive": "model.pt",
  "input_sizes": {{"default": 331, "min": 331, "max": 331}},
  "normalization": {{"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}},
  "source": {{"from": "timm:nasnetalarge", "weights": "random:0"}},
  "graph": "trace",
  "versions": {{"exporter": "0.1.0", "torch": "2.11.0+cpu", "timm": "1.0.0"}}
}}"#,
            sha = "ab".repeat(32)
        )
    }

    #[test]
    fn the_exporters_manifest_parses() {
        let m = Manifest::parse(&example()).unwrap();
        assert_eq!(m.layer_index("Cell_0"), Some(0));
        assert_eq!(m.layer_index("cell_0"), Some(0));
        assert_eq!(m.layers[0].output, LayerOutput::Map);
        assert!(matches!(m.normalization, Normalization::MeanStd { .. }));
        assert_eq!(torch_release(&m.versions.torch), "2.11.0");
        assert!(m.check_size(331).is_ok());
        let err = m.check_size(224).unwrap_err();
        assert!(err.contains("only at 331 px"), "{err}");
        assert_eq!(Manifest::parse(&m.to_json()).unwrap(), m);
    }

    #[test]
    fn broken_manifests_name_the_field() {
        let field = |from: &str, to: &str| {
            Manifest::parse(&example().replacen(from, to, 1))
                .unwrap_err()
                .field
        };
        assert_eq!(field(FORMAT, "vephys-model-0"), "format");
        assert_eq!(
            field(r#""archive": "model.pt""#, r#""archive": "../x.pt""#),
            "archive"
        );
        assert_eq!(field(r#""min": 331"#, r#""min": 400"#), "input_sizes");
        assert_eq!(field(r#""layer_0""#, r#""layer 0""#), "layers[0].method");
        assert_eq!(field(r#""Cell_0""#, r#""cell_0""#), "layers[0]");
        assert_eq!(
            field(r#""channels": 1008"#, r#""channels": 0"#),
            "layers[0]"
        );
        assert_eq!(
            field(r#""std": [0.5, 0.5, 0.5]"#, r#""std": [0.5, 0, 0.5]"#),
            "normalization"
        );
        assert_eq!(field(&"ab".repeat(32), "abc"), "weights_sha256");
        assert_eq!(field(r#""archive""#, r#""archives""#), "model.json");
    }
}
