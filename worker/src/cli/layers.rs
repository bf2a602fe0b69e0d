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

    /// Input image side in pixels (output shapes depend on it)
    #[arg(
        long,
        env = "VEPHYS_SIZE",
        allow_negative_numbers = true,
        default_value_t = 224
    )]
    size: i64,

    /// Print JSON (the model-registry format of `vephys models add`)
    #[arg(long)]
    json: bool,
}

pub fn run(args: LayersArgs) -> Result<()> {
    if args.size < 1 {
        anyhow::bail!("bad value for --size: {} is not a positive size", args.size);
    }
    let net = args.model.build()?;
    let shapes = net.layer_shapes(args.size);
    if shapes.is_empty() {
        anyhow::bail!(
            "image size {} is too small for every layer of {}; use a larger --size",
            args.size,
            net.name()
        );
    }
    if args.json {
        let doc = json!({
            "model": net.name(),
            "architecture": net.name(),
            "input_size": args.size,
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
