//! `vephys-worker layers`: the layer table of a model, as text or as the registry JSON the
//! coordinator accepts.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::ModelArgs;

#[derive(Args)]
pub struct LayersArgs {
    #[command(flatten)]
    model: ModelArgs,

    /// Input image side in pixels (output shapes depend on it) [default: the model's input
    /// size, 224 for the built-in models]
    #[arg(long, env = "VEPHYS_SIZE", allow_negative_numbers = true)]
    size: Option<i64>,

    /// Print JSON (the model-registry format of `vephys models add`; for an exported model at
    /// its input size, its manifest)
    #[arg(long)]
    json: bool,
}

pub fn run(args: LayersArgs) -> Result<()> {
    if let Some(size) = args.size.filter(|s| *s < 1) {
        anyhow::bail!("bad value for --size: {size} is not a positive size");
    }
    let net = args.model.build()?;
    let size = args.size.unwrap_or(net.input_size());
    if let Some(manifest) = net.manifest() {
        manifest.check_size(size).map_err(anyhow::Error::msg)?;
    }
    let shapes = net.layer_shapes(size)?;
    if shapes.is_empty() {
        anyhow::bail!(
            "image size {size} is too small for every layer of {}; use a larger --size",
            net.name()
        );
    }
    if args.json {
        // an exported model's manifest is the registry's format and more
        if let Some(manifest) = net.manifest().filter(|m| m.input_sizes.default == size) {
            println!("{}", manifest.to_json());
            return Ok(());
        }
        let doc = json!({
            "model": net.name(),
            "architecture": net.name(),
            "input_size": size,
            "weights_sha256": net.weights_sha256(),
            "layers": shapes,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!("{:<16} {:>6} {:>5} {:>5}  aliases", "layer", "C", "H", "W");
    for s in &shapes {
        println!(
            "{:<16} {:>6} {:>5} {:>5}  {}",
            s.name,
            s.channels,
            s.height,
            s.width,
            s.aliases.join(", ")
        );
    }
    Ok(())
}
