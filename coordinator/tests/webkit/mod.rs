//! Fixtures for the results browser's tests and benchmark: campaigns with synthetic but complete
//! results (every probe's points and derived numbers, real PNG max images in a file:// object
//! store) made through the store's own lease/complete path, the UI served on a real TCP port,
//! and a minimal HTTP/1.1 client.
#![allow(dead_code)] // the tests and the benchmark use different parts

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vephys_coordinator::metrics::Metrics;
use vephys_coordinator::store::{now_ms, Store};
use vephys_coordinator::web;
use vephys_objects::{Objects, S3Options};
use vephys_proto::v1::{
    Artifact, JobCompletion, JobFailure, JobOutcome, Layer, LeasedJob, Model, Provenance,
    RegisterWorkerRequest, TuningPoint,
};

/// Every probe's name, in the contract's order.
pub fn all_probes() -> [&'static str; 7] {
    vephys_proto::params::Probe::ALL.map(vephys_proto::params::Probe::as_str)
}

/// A model with one small layer and one of 20,000 channels.
pub fn model() -> Model {
    Model {
        name: "webnet".into(),
        architecture: "webnet".into(),
        input_size: 64,
        weights_sha256: "cd".repeat(32),
        weights_uri: String::new(),
        layers: vec![
            Layer {
                name: "conv1".into(),
                aliases: vec!["features.0".into()],
                channels: 8,
                height: 16,
                width: 16,
            },
            Layer {
                name: "wide".into(),
                aliases: vec![],
                channels: 20_000,
                height: 1,
                width: 1,
            },
        ],
        manifest_json: String::new(),
    }
}

/// A real RGB PNG: a diagonal gradient tinted by `rgb`, `size` pixels square, different for
/// every `seed`.
pub fn png(size: u32, rgb: [u8; 3], seed: u32) -> Vec<u8> {
    let mut pixels = Vec::with_capacity((size * size * 3) as usize);
    for y in 0..size {
        for x in 0..size {
            let t = ((x * 3 + y * 5 + seed * 17) % 256) as u16;
            pixels.extend(rgb.map(|c| ((u16::from(c) * t) / 255) as u8));
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, size, size);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(&pixels).unwrap();
    writer.finish().unwrap();
    out
}

/// A number in [0, 1) that depends only on (filter, salt): the synthetic results vary from
/// unit to unit, so sorting by any column reorders them.
pub fn noise(filter: i64, salt: u64) -> f64 {
    let mut x = (filter as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ salt.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 29;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

fn point(probe: &str, x: f64, label: Option<&str>, max: f64, mean: f64) -> TuningPoint {
    TuningPoint {
        probe: probe.into(),
        x,
        label: label.map(str::to_string),
        max_act: max,
        mean_act: mean,
    }
}

/// A tuning curve over `xs` peaking at `xs[peak]`.
fn curve(probe: &str, xs: &[f64], peak: usize, height: f64) -> Vec<TuningPoint> {
    xs.iter()
        .enumerate()
        .map(|(i, &x)| {
            let d = (i as f64 - peak as f64).abs();
            let y = height * (-d * d / 8.0).exp() + 0.1;
            point(probe, x, None, y, y / 3.0)
        })
        .collect()
}

const COLOR_LABELS: [&str; 12] = [
    "r", "r_as_g", "r_as_b", "r_gray", "g", "g_as_r", "g_as_b", "g_gray", "b", "b_as_r", "b_as_g",
    "b_gray",
];
const BASELINE_LABELS: [&str; 5] = [
    "max_image",
    "max_image_aperture",
    "grayscale",
    "white",
    "noise",
];

/// What a completed job writes: numbers, points and artifacts.
struct Made {
    max_act: f64,
    status: &'static str,
    derived: serde_json::Value,
    points: Vec<TuningPoint>,
    images: Vec<(&'static str, Vec<u8>)>,
}

/// What [`campaign`] stores besides the numbers.
#[derive(Debug, Clone, Copy)]
pub struct Files {
    /// Side of the PNGs in pixels.
    pub image_size: u32,
    /// The colour probe's R/G/B-only images (three per unit).
    pub colour_images: bool,
    /// A JSON record per job.
    pub records: bool,
}

impl Files {
    /// Everything a worker stores, small.
    pub fn all(image_size: u32) -> Files {
        Files {
            image_size,
            colour_images: true,
            records: true,
        }
    }
}

/// Synthetic results of one job. Filter `dead` is a dead unit (no max image).
fn make(probe: &str, filter: i64, dead: Option<i64>, files: Files) -> Made {
    let image_size = files.image_size;
    let n = |salt| noise(filter, salt);
    let peak = |len: usize, salt| ((n(salt) * len as f64) as usize).min(len - 1);
    let empty = Made {
        max_act: 0.0,
        status: "ok",
        derived: serde_json::json!({}),
        points: vec![],
        images: vec![],
    };
    match probe {
        "synthesis" if Some(filter) == dead => Made {
            status: "dead_unit",
            derived: serde_json::json!({"steps": 8}),
            ..empty
        },
        "synthesis" => {
            let rgb = [
                (80.0 + 175.0 * n(1)) as u8,
                (80.0 + 175.0 * n(2)) as u8,
                (80.0 + 175.0 * n(3)) as u8,
            ];
            Made {
                max_act: 1.0 + 20.0 * n(4),
                derived: serde_json::json!({"steps": 8, "objective_first": 0.1, "objective_last": 5.0}),
                images: vec![("max_image", png(image_size, rgb, filter as u32))],
                ..empty
            }
        }
        "zoom" => {
            let xs = [0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0];
            let p = peak(xs.len(), 5);
            Made {
                max_act: 5.0,
                derived: serde_json::json!({"preferred": xs[p], "peak": 5.0, "peak_to_mean": 2.0,
                    "bandwidth": 1.0 + n(6), "flat": false, "fill": "tile", "mean": {"preferred": xs[p]}}),
                points: curve("zoom", &xs, p, 5.0),
                ..empty
            }
        }
        "rotation" => {
            let xs: Vec<f64> = (0..24).map(|k| k as f64 * 15.0).collect();
            let p = peak(xs.len(), 7);
            Made {
                max_act: 6.0,
                derived: serde_json::json!({"preferred": xs[p], "peak": 6.0, "peak_to_mean": 1.5,
                    "bandwidth": 30.0 + 60.0 * n(8), "flat": false, "circular_variance": n(9),
                    "symmetry_period_deg": if n(10) > 0.5 { serde_json::json!(180.0) } else { serde_json::json!(90.0) }}),
                points: curve("rotation", &xs, p, 6.0),
                ..empty
            }
        }
        "color" => {
            let csi = n(11) * 0.8 - 0.1;
            let channel = ["r", "g", "b"][peak(3, 12)];
            Made {
                max_act: 8.0,
                derived: serde_json::json!({"csi": csi, "preferred_channel": channel,
                    "channel_selectivity": [csi, n(13) * 0.5, n(14) * 0.5]}),
                points: COLOR_LABELS
                    .iter()
                    .enumerate()
                    .map(|(i, l)| {
                        point(
                            "color",
                            i as f64,
                            Some(l),
                            8.0 - i as f64 * 0.5 * n(15),
                            2.0,
                        )
                    })
                    .collect(),
                images: if files.colour_images {
                    vec![
                        ("max_image_r", png(image_size, [255, 0, 0], filter as u32)),
                        ("max_image_g", png(image_size, [0, 255, 0], filter as u32)),
                        ("max_image_b", png(image_size, [0, 0, 255], filter as u32)),
                    ]
                } else {
                    vec![]
                },
                ..empty
            }
        }
        "baseline" => Made {
            max_act: 5.0,
            derived: serde_json::json!({"csi": n(16) * 0.5}),
            points: BASELINE_LABELS
                .iter()
                .enumerate()
                .map(|(i, l)| point("baseline", i as f64, Some(l), 5.0 - i as f64 * 0.8, 1.0))
                .collect(),
            ..empty
        },
        "grating" => {
            let orientations: Vec<f64> = (0..12).map(|k| k as f64 * 15.0).collect();
            let mut points = curve("grating.orientation", &orientations, peak(12, 17), 3.0);
            points.extend(curve(
                "grating.frequency",
                &[2.0, 4.0, 8.0],
                peak(3, 18),
                3.0,
            ));
            Made {
                max_act: 3.0,
                derived: serde_json::json!({"orientation": {"preferred": 45.0, "peak": 3.0, "peak_to_mean": 1.5, "bandwidth": 30.0, "flat": false},
                    "frequency": {"preferred": 4.0, "peak": 3.0, "peak_to_mean": 1.4, "bandwidth": null, "flat": false},
                    "circular_variance": n(19)}),
                points,
                ..empty
            }
        }
        "hue" => {
            let xs: Vec<f64> = (0..12).map(|k| k as f64 * 30.0).collect();
            let p = peak(12, 20);
            Made {
                max_act: 2.0,
                derived: serde_json::json!({"preferred": xs[p], "peak": 2.0, "peak_to_mean": 1.2,
                    "bandwidth": 60.0, "flat": false, "circular_variance": n(21)}),
                points: curve("hue", &xs, p, 2.0),
                ..empty
            }
        }
        _ => empty,
    }
}

/// A campaign made through the store's own lease/complete path.
pub struct Campaign {
    pub id: i64,
    worker: i64,
    name: String,
    files: Files,
    /// Jobs left leased (the campaign is still running); [`Campaign::finish`] completes them.
    pub kept: Vec<LeasedJob>,
}

/// Submits a campaign over `layer` and `filters` (e.g. `"0..8"`) with `probes` and completes
/// every job with synthetic results, writing its images to `objects`. `dead` names a dead
/// unit; the first `n` jobs of probe `p` in `unfinished = Some((p, n))` stay leased, so the
/// campaign is still running.
#[allow(clippy::too_many_arguments)]
pub async fn campaign(
    store: &Store,
    objects: &Objects,
    name: &str,
    layer: &str,
    filters: &str,
    probes: &[&str],
    dead: Option<i64>,
    unfinished: Option<(&str, usize)>,
    files: Files,
) -> Campaign {
    if store.model("webnet").await.unwrap().is_none() {
        store.register_model(&model()).await.unwrap();
    }
    let probes_toml: Vec<String> = probes.iter().map(|p| format!("\"{p}\"")).collect();
    let spec = format!(
        "name = \"{name}\"\nmodel = \"webnet\"\nlayers = [\"{layer}\"]\nfilters = \"{filters}\"\nprobes = [{}]\n\
         grating = {{ spatial_frequencies = [2, 4, 8] }}\n[synthesis]\nsteps = 8\n",
        probes_toml.join(", ")
    );
    let id = store.submit_campaign(&spec).await.unwrap().campaign_id;
    let worker = store
        .register_worker(&RegisterWorkerRequest {
            name: format!("web-{name}"),
            device: "cpu".into(),
            memory_bytes: 1 << 30,
            loaded_models: vec!["webnet".into()],
            models: vec![],
        })
        .await
        .unwrap();
    let mut c = Campaign {
        id,
        worker,
        name: name.to_string(),
        files,
        kept: Vec::new(),
    };
    let (keep_probe, mut keep) = unfinished.unwrap_or(("", 0));
    loop {
        let lease = store.lease(worker, 1024, &[], now_ms()).await.unwrap();
        if lease.jobs.is_empty() {
            break;
        }
        let mut done = Vec::new();
        for job in lease.jobs {
            if job.probe == keep_probe && keep > 0 {
                keep -= 1;
                c.kept.push(job);
            } else {
                done.push(job);
            }
        }
        if !done.is_empty() {
            c.complete(store, objects, &done, dead).await;
        }
    }
    c
}

impl Campaign {
    async fn complete(
        &self,
        store: &Store,
        objects: &Objects,
        jobs: &[LeasedJob],
        dead: Option<i64>,
    ) {
        let mut completions = Vec::new();
        for job in jobs {
            let made = make(&job.probe, job.filter, dead, self.files);
            let prefix = format!(
                "campaigns/{}/{}/filter_{:04}/{}/attempt_{}",
                self.id, job.layer, job.filter, job.probe, job.token
            );
            let mut artifacts = Vec::new();
            let record = serde_json::json!({"probe": job.probe, "filter": job.filter})
                .to_string()
                .into_bytes();
            let mut files: Vec<(String, Vec<u8>)> = made
                .images
                .into_iter()
                .map(|(kind, bytes)| (kind.to_string(), bytes))
                .collect();
            if self.files.records {
                files.push(("record".into(), record));
            }
            for (kind, bytes) in files {
                let ext = if kind == "record" { "json" } else { "png" };
                let stored = objects
                    .put(&format!("{prefix}/{kind}.{ext}"), bytes)
                    .await
                    .unwrap();
                artifacts.push(Artifact {
                    kind,
                    uri: stored.uri,
                    sha256: stored.sha256,
                    bytes: stored.bytes,
                });
            }
            completions.push(JobCompletion {
                job_id: job.job_id,
                token: job.token,
                result: Some(JobOutcome {
                    max_act: made.max_act,
                    mean_act: made.max_act / 2.0,
                    status: made.status.into(),
                    derived_json: made.derived.to_string(),
                    provenance: Some(Provenance {
                        weights_sha256: "cd".repeat(32),
                        params_json: job.params_json.clone(),
                        params_hash: "ef".repeat(32),
                        seed: job.seed,
                        device: "cpu".into(),
                        library_versions_json: r#"{"vephys": "0.1.0", "libtorch": "2.11.0"}"#
                            .into(),
                        worker: format!("web-{}", self.name),
                        duration_ms: 12,
                    }),
                }),
                points: made.points,
                artifacts,
            });
        }
        for chunk in completions.chunks(256) {
            store.complete(self.worker, chunk, now_ms()).await.unwrap();
        }
    }

    /// Fails the jobs [`campaign`] left leased, for good, with `error`.
    pub async fn fail(&mut self, store: &Store, error: &str) {
        let kept = std::mem::take(&mut self.kept);
        let failures: Vec<JobFailure> = kept
            .iter()
            .map(|job| JobFailure {
                job_id: job.job_id,
                token: job.token,
                error: error.to_string(),
                permanent: true,
                released: false,
            })
            .collect();
        store.fail(self.worker, &failures, now_ms()).await.unwrap();
    }

    /// Completes the jobs [`campaign`] left leased.
    pub async fn finish(&mut self, store: &Store, objects: &Objects) {
        let kept = std::mem::take(&mut self.kept);
        self.complete(store, objects, &kept, None).await;
    }
}

/// The UI (and /metrics, /healthz) on 127.0.0.1:0.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::watch::Sender<bool>>,
}

impl Server {
    pub async fn start(store: Arc<Store>, objects: Option<Objects>, token: Option<&str>) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let settings = web::Settings {
            objects,
            user_token: token.map(str::to_string),
            shutdown: Some(stopped.clone()),
        };
        let router = vephys_coordinator::http::router(store.clone(), Arc::new(Metrics::new()))
            .merge(web::router(store, settings));
        tokio::spawn(async move {
            let mut stopped = stopped;
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
                .unwrap();
        });
        Server {
            addr,
            stop: Some(stop),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
    }
}

/// An object store in a fresh temporary directory.
pub fn objects(dir: &std::path::Path) -> Objects {
    Objects::open(
        &format!("file://{}", dir.join("objects").display()),
        &S3Options::default(),
    )
    .unwrap()
}

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), the body read to the end.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    parse(&raw)
}

pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    request(addr, "GET", path, headers, b"").await
}

fn parse(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&rest[..eol])
                .split(';')
                .next()
                .unwrap_or("0")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = eol + 2;
        out.extend_from_slice(&rest[start..start + size]);
        rest = &rest[start + size + 2..];
    }
}
