//! `vephys-worker respond`: the virtual electrode on any stimulus — max and mean activity of
//! filters of a layer for each image.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use tch::{Kind, Tensor};
use vephys_worker::device::Precision;
use vephys_worker::filters::parse_filters;
use vephys_worker::image_io;
use vephys_worker::provenance::Provenance;

use super::ModelArgs;

#[derive(Args)]
pub struct RespondArgs {
    #[command(flatten)]
    model: ModelArgs,

    /// Layer to record from (name or alias; see `vephys-worker layers`)
    #[arg(long, env = "VEPHYS_LAYER")]
    layer: String,

    /// Images (PNG or JPEG) to show the network
    #[arg(long = "image", required = true, num_args = 1..)]
    images: Vec<PathBuf>,

    /// Filters to report: `all`, a list and/or ranges (`0-15,40`)
    #[arg(long, env = "VEPHYS_FILTERS", default_value = "all")]
    filters: String,

    /// Resize every image to SIZE x SIZE first (default: each image at its own size)
    #[arg(long, env = "VEPHYS_SIZE", allow_negative_numbers = true)]
    size: Option<i64>,

    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct ImageResponse {
    image: PathBuf,
    max: Vec<f64>,
    mean: Vec<f64>,
}

pub fn run(args: RespondArgs) -> Result<()> {
    let net = args.model.load()?;
    let layer = net.layer_index(&args.layer)?;
    // Read every image before computing anything: one unreadable file fails the whole call.
    let mut images = Vec::new();
    for path in &args.images {
        let image = image_io::load(path, args.size)?;
        let side = image.size()[1].min(image.size()[2]);
        net.check_size(layer, side)?;
        images.push(image);
    }
    let side = images[0].size()[1].min(images[0].size()[2]);
    let channels = net.check_size(layer, side)?.channels;
    let filters = parse_filters(&args.filters, channels, net.layer_name(layer))?;
    let index = Tensor::from_slice(&filters);

    let mut responses = Vec::new();
    for (path, image) in args.images.iter().zip(images) {
        let acts =
            tch::no_grad(|| net.forward_to(&image.unsqueeze(0).to_device(net.device()), layer))?;
        let maps = acts
            .get(0)
            .to_device(tch::Device::Cpu)
            .index_select(0, &index)
            .to_kind(Kind::Double);
        responses.push(ImageResponse {
            image: path.clone(),
            max: Vec::<f64>::try_from(maps.amax([1, 2], false))?,
            mean: Vec::<f64>::try_from(maps.mean_dim(&[1i64, 2][..], false, None))?,
        });
    }

    if args.json {
        let doc = serde_json::json!({
            "layer": net.layer_name(layer),
            "filters": filters,
            "responses": responses,
            "provenance": Provenance::of(&net, Precision::Fp32),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "{:<40} {:>6} {:>12} {:>12}",
        "image", "filter", "max", "mean"
    );
    for r in &responses {
        for (i, f) in filters.iter().enumerate() {
            println!(
                "{:<40} {:>6} {:>12.5} {:>12.5}",
                r.image.display(),
                f,
                r.max[i],
                r.mean[i]
            );
        }
    }
    Ok(())
}
