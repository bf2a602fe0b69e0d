//! Fuzzing the two grammars users write, the campaign spec (TOML) and the filter selection,
//! with a seeded generator: whatever the text, parsing never panics, and nothing accepted lies
//! beyond a limit of the contract (`vephys_proto::params`). A spec the coordinator would accept
//! gives jobs the worker accepts. A failure prints the seed and the text that broke it.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use vephys_proto::params::{
    JobParams, MAX_CHANNELS, MAX_GRATINGS, MAX_IMAGE_SIZE, MAX_LAYERS, MAX_NAME_LEN, MAX_STEPS,
    MAX_STIMULI,
};
use vephys_proto::spec::{CampaignSpec, Filters, Probe};

const SEED: u64 = 13;
const CASES: usize = 4000;

/// Numbers people and programs write, the awkward ones included.
fn number(rng: &mut StdRng) -> String {
    let pool = [
        "0",
        "-1",
        "1",
        "2",
        "3",
        "7",
        "8",
        "16",
        "31",
        "32",
        "64",
        "96",
        "128",
        "224",
        "4095",
        "4096",
        "4097",
        "65536",
        "100000",
        "100001",
        "1048575",
        "1048576",
        "1048577",
        "2147483647",
        "4294967295",
        "4294967296",
        "9223372036854775807",
        "-9223372036854775808",
        "0.0",
        "0.5",
        "1e-12",
        "1e-300",
        "1e300",
        "360",
        "359.999",
        "15.0",
        "90.0",
        "0.0001",
        "nan",
        "inf",
        "-inf",
        "1.5",
        "-0.0",
    ];
    match rng.gen_range(0..3) {
        0 => rng.gen_range(-5i64..5000).to_string(),
        1 => format!("{:.4}", rng.gen_range(-10.0..500.0)),
        _ => pool.choose(rng).unwrap().to_string(),
    }
}

fn list(rng: &mut StdRng) -> String {
    let n = match rng.gen_range(0..10) {
        0 => 0,
        1 => rng.gen_range(4000..5000),
        _ => rng.gen_range(1..12),
    };
    let mut values: Vec<String> = (0..n).map(|_| number(rng)).collect();
    if rng.gen_bool(0.5) {
        // sorted values pass the increasing check more often, reaching the checks behind it
        let mut v: Vec<f64> = values
            .iter()
            .filter_map(|s| s.parse().ok())
            .filter(|v: &f64| v.is_finite())
            .collect();
        v.sort_by(f64::total_cmp);
        v.dedup();
        values = v.iter().map(|v| format!("{v:?}")).collect();
    }
    format!("[{}]", values.join(", "))
}

fn range_text(rng: &mut StdRng) -> String {
    format!("\"{}:{}:{}\"", number(rng), number(rng), number(rng))
}

/// An index as people write them: mostly small, now and then anything.
fn index(rng: &mut StdRng) -> String {
    match rng.gen_range(0..4) {
        0 => number(rng),
        _ => rng.gen_range(0..600).to_string(),
    }
}

/// A filter selection as text: indices, ranges of both spellings, `all`, and debris.
fn selection(rng: &mut StdRng) -> String {
    let parts = rng.gen_range(0..5);
    let mut out = Vec::new();
    for _ in 0..parts {
        let a = index(rng);
        let b = index(rng);
        out.push(match rng.gen_range(0..7) {
            0 => a,
            1 => format!("{a}-{b}"),
            2 => format!("{a}..{b}"),
            3 => "all".into(),
            4 => format!(" {a} .. {b} "),
            5 => format!("{a}-{b}-{a}"),
            _ => (0..rng.gen_range(0..6))
                .map(|_| *b"0123456789-.,a ".choose(rng).unwrap() as char)
                .collect(),
        });
    }
    if rng.gen_range(0..20) == 0 {
        out = vec!["1".into(); MAX_CHANNELS as usize / 200];
    }
    out.join(",")
}

fn name(rng: &mut StdRng) -> String {
    match rng.gen_range(0..20) {
        0 => String::new(),
        1 => "x".repeat(MAX_NAME_LEN + rng.gen_range(0..3)),
        2 => "é".repeat(MAX_NAME_LEN),
        _ => format!("n{}", rng.gen_range(0..100)),
    }
}

/// A campaign spec in TOML with every table present or not, and values from the pools.
fn spec_text(rng: &mut StdRng) -> String {
    let probes = [
        "synthesis",
        "baseline",
        "zoom",
        "rotation",
        "color",
        "grating",
        "hue",
        "zom",
    ];
    let mut t = format!("name = {:?}\nmodel = {:?}\n", name(rng), name(rng));
    let layers = match rng.gen_range(0..20) {
        0 => 0,
        1 => MAX_LAYERS + 1,
        _ => rng.gen_range(1..4),
    };
    let layers: Vec<String> = (0..layers).map(|_| format!("{:?}", name(rng))).collect();
    t += &format!("layers = [{}]\n", layers.join(", "));
    t += &match rng.gen_range(0..6) {
        0 => format!("filters = {:?}\n", selection(rng)),
        1 => format!("filters = [{}, {:?}]\n", number(rng), selection(rng)),
        2 => format!("filters = \"0-{}\"\n", rng.gen_range(0..64)),
        _ => String::new(),
    };
    let chosen: Vec<String> = (0..rng.gen_range(0..5))
        .map(|_| {
            format!(
                "{:?}",
                probes[..probes.len() - usize::from(rng.gen_bool(0.9))]
                    .choose(rng)
                    .unwrap()
            )
        })
        .collect();
    t += &format!("probes = [{}]\n", chosen.join(", "));
    for key in ["max_attempts", "seed"] {
        match rng.gen_range(0..12) {
            0 => t += &format!("{key} = {}\n", number(rng)),
            1 => t += &format!("{key} = {}\n", rng.gen_range(1..10)),
            _ => {}
        }
    }
    // kind: 0 a number, 1 a list of values (as a list, a range or text), 2 a word; most
    // values come from the key's sane range, so that many specs pass and reach every check
    let table = |rng: &mut StdRng, t: &mut String, name: &str, keys: &[(&str, u8)]| {
        if !rng.gen_bool(0.6) {
            return;
        }
        *t += &format!("[{name}]\n");
        for (key, kind) in keys {
            if !rng.gen_bool(0.6) {
                continue;
            }
            if rng.gen_bool(0.9) {
                *t += &format!("{key} = {}\n", sane(rng, key));
                continue;
            }
            let value = match kind {
                0 => number(rng),
                1 => match rng.gen_range(0..3) {
                    0 => list(rng),
                    1 => range_text(rng),
                    _ => format!("{:?}", list(rng).trim_matches(|c| c == '[' || c == ']')),
                },
                _ => {
                    let words = ["channel", "unit", "layer", "tile", "mean", "pad", "x"];
                    format!("{:?}", words.choose(rng).unwrap())
                }
            };
            *t += &format!("{key} = {value}\n");
        }
    };
    let synthesis = [
        ("steps", 0),
        ("lr", 0),
        ("image_size", 0),
        ("objective", 2),
        ("decay", 0),
        ("blur_sigma", 0),
        ("blur_every", 0),
        ("batch_size", 0),
    ];
    table(rng, &mut t, "synthesis", &synthesis);
    table(rng, &mut t, "baseline", &[("noise_std", 0)]);
    table(rng, &mut t, "zoom", &[("factors", 1), ("fill", 2)]);
    // one spelling of the angles (both at once are refused, which tells little)
    let rotation = match rng.gen_bool(0.5) {
        true => [("step_degrees", 0), ("aperture", 0)],
        false => [("angles", 1), ("aperture", 0)],
    };
    table(rng, &mut t, "rotation", &rotation);
    table(rng, &mut t, "color", &[("steps", 0)]);
    let orientations = if rng.gen_bool(0.5) { 0 } else { 1 };
    let grating = [
        ("orientations", orientations),
        ("spatial_frequencies", 1),
        ("phases", 0),
    ];
    table(rng, &mut t, "grating", &grating);
    table(rng, &mut t, "hue", &[("steps", 0)]);
    t
}

/// A value of `key` within its bounds (mostly).
fn sane(rng: &mut StdRng, key: &str) -> String {
    let sorted = |rng: &mut StdRng, lo: f64, hi: f64, most: usize| {
        let n = rng.gen_range(1..most);
        let mut v: Vec<f64> = (0..n)
            .map(|_| (rng.gen_range(lo..hi) * 4.0).round() / 4.0)
            .collect();
        v.sort_by(f64::total_cmp);
        v.dedup();
        format!("{v:?}")
    };
    match key {
        "steps" => rng.gen_range(1..300).to_string(),
        "lr" => format!("{:.3}", rng.gen_range(0.01..1.0)),
        "image_size" => ["0", "32", "48", "64", "224"]
            .choose(rng)
            .unwrap()
            .to_string(),
        "decay" => format!("{:.5}", rng.gen_range(0.0..0.01)),
        "blur_sigma" => format!("{:.2}", rng.gen_range(0.0..2.0)),
        "blur_every" => rng.gen_range(0..8).to_string(),
        "batch_size" => rng.gen_range(1..64).to_string(),
        "noise_std" => format!("{:.2}", rng.gen_range(0.0..1.0)),
        "factors" => sorted(rng, 0.25, 8.0, 10),
        "fill" => ["\"tile\"", "\"mean\""].choose(rng).unwrap().to_string(),
        "objective" => ["\"channel\"", "\"unit\""].choose(rng).unwrap().to_string(),
        "step_degrees" => format!("{:.1}", rng.gen_range(1.0..120.0)),
        "angles" => sorted(rng, 0.0, 359.0, 30),
        "aperture" => format!("{:.2}", rng.gen_range(0.1..1.0)),
        "orientations" => rng.gen_range(1..24).to_string(),
        "spatial_frequencies" => sorted(rng, 1.0, 15.0, 5),
        "phases" => rng.gen_range(1..8).to_string(),
        _ => rng.gen_range(2..36).to_string(),
    }
}

/// Runs `check` on `case`, turning a panic into a failure that names the seed and the case.
fn no_panic<T>(what: &str, case: &str, check: impl FnOnce() -> T + std::panic::UnwindSafe) -> T {
    std::panic::catch_unwind(check)
        .unwrap_or_else(|_| panic!("{what} panicked (seed {SEED}) on:\n{case}"))
}

#[test]
fn filter_selections_never_panic_nor_reach_beyond_the_largest_layer() {
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut accepted = 0;
    for _ in 0..CASES {
        let text = selection(&mut rng);
        let channels = match rng.gen_range(0..10) {
            0 => MAX_CHANNELS,
            _ => rng.gen_range(1..5000),
        };
        let resolved = no_panic("Filters::resolve", &text, || {
            Filters::parse(&text).and_then(|f| f.resolve(channels))
        });
        if let Ok(filters) = resolved {
            accepted += 1;
            assert!(
                filters.windows(2).all(|w| w[0] < w[1]),
                "{text}: not sorted and unique"
            );
            assert!(
                filters.iter().all(|f| (0..channels).contains(f)),
                "{text}: beyond {channels} channels"
            );
        }
    }
    assert!(
        accepted > CASES / 10,
        "only {accepted} selections accepted: the generator is too wild"
    );
}

#[test]
fn specs_never_panic_and_nothing_accepted_is_beyond_a_limit() {
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut accepted = 0;
    for _ in 0..CASES {
        let text = spec_text(&mut rng);
        let size: u32 = *[0u32, 4, 8, 32, 64, 224, 331, 4096, 4097]
            .choose(&mut rng)
            .unwrap();
        let checked = no_panic("CampaignSpec", &text, || {
            let spec = CampaignSpec::from_toml(&text)?;
            spec.check()?;
            let size = match spec.synthesis.image_size {
                0 => size,
                given => given,
            };
            spec.check_image_size(size)?;
            Ok::<_, vephys_proto::spec::SpecError>((spec, size))
        });
        let (spec, size) = match checked {
            Ok(ok) => ok,
            Err(e) => {
                if std::env::var_os("FUZZ_DEBUG").is_some() {
                    eprintln!("refused: {e}"); // to see what the generator gets wrong most
                }
                continue;
            }
        };
        accepted += 1;
        let s = &spec.synthesis;
        assert!(s.steps <= MAX_STEPS && size <= MAX_IMAGE_SIZE, "{text}");
        assert!(spec.layers.len() <= MAX_LAYERS, "{text}");
        assert!(spec.name.chars().count() <= MAX_NAME_LEN, "{text}");
        assert!(spec.zoom.factors.len() <= MAX_STIMULI, "{text}");
        assert!(spec.rotation.angles.len() <= MAX_STIMULI, "{text}");
        assert!(spec.hue.steps as usize <= MAX_STIMULI, "{text}");
        assert!(spec.color.steps <= MAX_STEPS, "{text}");
        let gratings = spec.grating.orientations.len()
            * spec.grating.phases as usize
            * spec.grating.frequencies(size).map_or(0, |f| f.len());
        assert!(
            !spec.probes.contains(&Probe::Grating) || gratings <= MAX_GRATINGS,
            "{gratings} gratings: {text}"
        );
        let filters = no_panic("resolve", &text, || spec.filters.resolve(MAX_CHANNELS));
        assert!(
            filters.is_ok_and(|f| f.iter().all(|i| *i < MAX_CHANNELS)),
            "{text}"
        );
        // what the coordinator accepts, the worker takes: each job's parameters read back
        for probe in &spec.probes {
            let json = spec.job_params(*probe, size).to_json();
            JobParams::parse(&json)
                .unwrap_or_else(|e| panic!("{probe} job of an accepted spec refused: {e}\n{text}"));
        }
    }
    assert!(
        accepted > CASES / 10,
        "only {accepted} specs accepted: the generator is too wild"
    );
}
