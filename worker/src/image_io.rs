//! Images in and out. In memory an image is a float tensor [3, H, W] in [0, 1] (pixel space);
//! on disk it is an 8-bit RGB PNG. Synthesized images are quantized to 8 bits *before* their
//! final activity is measured, so a saved PNG is exactly what the network saw.

use std::io::Write;
use std::path::Path;

use image::{imageops::FilterType, RgbImage};
use tch::{Kind, Tensor};

use crate::error::{Result, WorkerError};

/// Reads a PNG or JPEG as [3, H, W] floats in [0, 1], resized to `size` x `size` when given
/// (bilinear, antialiased when shrinking).
pub fn load(path: &Path, size: Option<i64>) -> Result<Tensor> {
    let fail = |reason: String| WorkerError::Image {
        path: path.to_path_buf(),
        reason,
    };
    let img = image::open(path).map_err(|e| {
        fail(format!(
            "cannot read it as an image ({e}); use an RGB or grayscale PNG or JPEG"
        ))
    })?;
    let mut rgb = img.to_rgb8();
    if let Some(s) = size {
        if s < 1 {
            return Err(WorkerError::bad(
                "--size",
                format!("{s} is not a positive size"),
            ));
        }
        if rgb.width() != s as u32 || rgb.height() != s as u32 {
            rgb = image::imageops::resize(&rgb, s as u32, s as u32, FilterType::Triangle);
        }
    }
    Ok(from_rgb8(&rgb))
}

pub fn from_rgb8(rgb: &RgbImage) -> Tensor {
    let (w, h) = (rgb.width() as i64, rgb.height() as i64);
    Tensor::from_slice(rgb.as_raw())
        .view([h, w, 3])
        .permute([2, 0, 1])
        .to_kind(Kind::Float)
        .divide_scalar(255.0)
}

/// Rounds to the 256 levels a PNG can hold.
pub fn quantize(x: &Tensor) -> Tensor {
    x.clamp(0.0, 1.0)
        .multiply_scalar(255.0)
        .round()
        .divide_scalar(255.0)
}

/// Encodes a [3, H, W] image in [0, 1] as PNG bytes.
pub fn png_bytes(x: &Tensor) -> Result<Vec<u8>> {
    let x = x.to_device(tch::Device::Cpu);
    let (h, w) = (x.size()[1], x.size()[2]);
    let hwc = x
        .clamp(0.0, 1.0)
        .multiply_scalar(255.0)
        .round()
        .to_kind(Kind::Uint8)
        .permute([1, 2, 0])
        .contiguous();
    let mut raw = vec![0u8; (h * w * 3) as usize];
    let numel = raw.len();
    hwc.f_copy_data_u8(&mut raw, numel)?;
    let img = RgbImage::from_raw(w as u32, h as u32, raw).expect("buffer sized for the image");
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|e| WorkerError::io("encode png")(std::io::Error::other(e)))?;
    Ok(bytes)
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a crash never leaves a
/// half-written file behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let ctx = || format!("write {}", path.display());
    let mut f = std::fs::File::create(&tmp).map_err(WorkerError::io(ctx()))?;
    f.write_all(bytes).map_err(WorkerError::io(ctx()))?;
    f.sync_all().map_err(WorkerError::io(ctx()))?;
    std::fs::rename(&tmp, path).map_err(WorkerError::io(ctx()))
}
