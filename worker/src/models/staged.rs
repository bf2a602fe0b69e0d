//! Built-in networks: a chain of stages written in Rust (one file per family), stage i's output
//! being layer i, their weights in a `VarStore` loaded from safetensors. Running "up to layer L"
//! runs stages 0..=L and nothing after. Evaluating stimuli (`forward_to_channels`) narrows the
//! last channel-mixing stage to the filters asked for and frames images on a uniform
//! background (`framing`).

use std::sync::Mutex;

use tch::{nn, Device, Kind, Tensor};

use super::framing::{crop, frame, framing, layout_like, End, Framing, Region, Step};
use super::ops::Op;
use super::{as_map, sub_batch, InputNorm, LayerShape};
use crate::device::Precision;
use crate::error::Result;

/// One named layer: the op producing it and the names it answers to.
pub struct Stage {
    pub(super) name: String,
    pub(super) aliases: Vec<String>,
    pub(super) op: Box<dyn Op>,
}

impl Stage {
    pub fn new(name: &str, aliases: &[&str], op: impl Op + 'static) -> Stage {
        Stage {
            name: name.to_string(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            op: Box::new(op),
        }
    }
}

/// A built-in network's stages and weights.
pub(super) struct Staged {
    pub(super) stages: Vec<Stage>,
    pub(super) vs: nn::VarStore,
    /// The last framing background's maps (`Staged::background`): every framed call of a
    /// probe, and of every filter after it, frames the same uniform colour at the same size.
    background: Mutex<Option<Background>>,
}

impl Staged {
    pub(super) fn new(vs: nn::VarStore, stages: Vec<Stage>) -> Staged {
        Staged {
            stages,
            vs,
            background: Mutex::default(),
        }
    }

    pub(super) fn layer_index(&self, layer: &str) -> Option<usize> {
        self.stages
            .iter()
            .position(|s| s.name == layer || s.aliases.iter().any(|a| a == layer))
    }

    /// Output of layer `index` for normalised input `h`.
    pub(super) fn forward_to(&self, mut h: Tensor, index: usize) -> Result<Tensor> {
        for stage in &self.stages[..=index] {
            h = stage.op.forward(&h)?;
        }
        Ok(as_map(h))
    }

    /// `Network::forward_to_channels` for a built-in network: see there. Images are normalised
    /// here (`norm`), in sub-batches, after framing is found on the pixel-space images. The
    /// caller sets up `precision` (bf16 autocast); it only keys the kept background here.
    pub(super) fn forward_to_channels(
        &self,
        norm: &InputNorm,
        x: &Tensor,
        index: usize,
        filters: &[i64],
        precision: Precision,
    ) -> Result<Tensor> {
        let _no_grad = tch::no_grad_guard();
        let channels = Tensor::from_slice(filters).to_device(x.device());
        let stages = &self.stages[..=index];
        // found on the pixel-space images: pixels equal there are equal once normalised, and
        // nothing the size of the batch is allocated for it
        let framing = framing(stages, x)?;
        let run = Narrowed {
            stages,
            // None: every stage acts on each channel alone; select at the end
            narrow: stages.iter().rposition(|s| !s.op.channelwise()),
            channels: &channels,
        };
        let background = match &framing {
            Some(f) => {
                let colour = norm.apply(&f.colour)?;
                let stages = f.background_stages(stages.len());
                Some(self.background(&run, &colour, x, stages, precision)?)
            }
            None => None,
        };
        // on the CPU in small sub-batches, each normalised and made channels-last on its own:
        // their maps stay in cache and skip the page faults of fresh large allocations, which
        // saves more than larger batches would (normalising 24 images of 224 px at once and
        // copying them channels-last took 12 ms, 9 of them page faults)
        let (n, step) = (x.size()[0], sub_batch(x));
        let mut parts = Vec::with_capacity(((n + step - 1) / step) as usize);
        for start in (0..n).step_by(step as usize) {
            let part = norm.apply_for_eval(&x.f_narrow(0, start, step.min(n - start))?)?;
            parts.push(match (&framing, &background) {
                (Some(f), Some(maps)) => run.framed(part, maps, f)?,
                _ => run.whole(part)?,
            });
        }
        let out = as_map(match parts.len() {
            0 => run.whole(norm.apply_for_eval(x)?)?,
            1 => parts.remove(0),
            _ => Tensor::f_cat(&parts, 0)?,
        });
        Ok(match run.narrow {
            Some(_) => out,
            None => out.f_index_select(1, &channels)?,
        })
    }

    /// The maps of a uniform image of `colour` ([1, C, 1, 1]) the size of the images `like`
    /// through the first `stages` stages of `run`: the input of each, then the last one's
    /// output. They cost one image's forward pass, so the last ones are kept and serve every
    /// later call with the same colour, size and stages (the probes of every filter of a
    /// batch, and of later batches); they are kept with all channels, and the maps after the
    /// narrowed stage are cut to `run`'s channels on the way out.
    fn background(
        &self,
        run: &Narrowed,
        colour: &Tensor,
        like: &Tensor,
        stages: usize,
        precision: Precision,
    ) -> Result<Vec<Tensor>> {
        let s = like.size();
        let key = BackgroundKey {
            colour: Vec::<f32>::try_from(colour.f_to_kind(Kind::Float)?.f_flatten(0, -1)?)?
                .into_iter()
                .map(f32::to_bits)
                .collect(),
            size: [s[2], s[3]],
            stages,
            device: like.device(),
            precision,
        };
        let mut cache = self.background.lock().expect("background cache poisoned");
        if cache.as_ref().is_none_or(|b| b.key != key) {
            let mut u = layout_like(like, &colour.f_expand([1, s[1], s[2], s[3]], false)?)?;
            let mut maps = Vec::with_capacity(stages + 1);
            for stage in &run.stages[..stages] {
                let next = stage.op.forward(&u)?;
                maps.push(std::mem::replace(&mut u, next));
            }
            maps.push(u);
            *cache = Some(Background { key, maps });
        }
        let maps = &cache.as_ref().expect("just filled").maps;
        maps.iter()
            .enumerate()
            .map(|(i, m)| match run.narrow {
                // maps[i] is the input of stage i: the narrowed stage's output and those after
                Some(n) if i > n => Ok(m.f_index_select(1, run.channels)?),
                _ => Ok(m.shallow_clone()),
            })
            .collect()
    }

    /// Outputs of every layer for normalised input `h`, in order.
    pub(super) fn forward_all(&self, mut h: Tensor) -> Result<Vec<Tensor>> {
        let mut outputs = Vec::with_capacity(self.stages.len());
        for stage in &self.stages {
            h = stage.op.forward(&h)?;
            outputs.push(as_map(h.shallow_clone()));
        }
        Ok(outputs)
    }

    /// Every layer's shape for zeros `h` (normalisation does not change shapes), as far as the
    /// input is large enough to reach.
    pub(super) fn probe_shapes(&self, mut h: Tensor) -> Vec<LayerShape> {
        let _guard = tch::no_grad_guard();
        let mut shapes = Vec::new();
        for stage in &self.stages {
            match stage.op.forward(&h) {
                Ok(out) if out.numel() > 0 => h = out,
                _ => break,
            }
            let map = as_map(h.shallow_clone());
            let s = map.size();
            shapes.push(LayerShape {
                name: stage.name.clone(),
                aliases: stage.aliases.clone(),
                channels: s[1],
                height: s[2],
                width: s[3],
            });
        }
        shapes
    }
}

/// Stages run for some channels only: `narrow`, the last stage that mixes channels, computes
/// just `channels`.
struct Narrowed<'a> {
    stages: &'a [Stage],
    narrow: Option<usize>,
    channels: &'a Tensor,
}

impl Narrowed<'_> {
    /// Stage `i` (only `channels` where it is the narrowed one) on an input nothing else holds
    /// (it may be overwritten).
    fn stage_owned(&self, i: usize, x: Tensor) -> Result<Tensor> {
        let op = &self.stages[i].op;
        Ok(if self.narrow == Some(i) {
            op.forward_channels(&x, self.channels)?
        } else {
            op.forward_owned(x)?
        })
    }

    /// Whole maps, every intermediate result overwritten by the next stage where it can.
    fn whole(&self, mut h: Tensor) -> Result<Tensor> {
        for i in 0..self.stages.len() {
            h = self.stage_owned(i, h)?;
        }
        Ok(h)
    }

    /// Images `h` that equal a uniform background outside `framing.region`, whose maps are
    /// `background` (see `background`). Outside the outputs that read the region (`reach`),
    /// every map of every image equals the background's map (same values, same zero padding at
    /// the edges), so each stage of `framing.steps` runs only on the input those outputs read,
    /// framed by the background's values, and keeps those outputs: the region of its output.
    /// Then (`End`) the region is pasted into the background's map, and whole maps run from
    /// there on where the next stage would read all of its input anyway.
    fn framed(&self, h: Tensor, background: &[Tensor], framing: &Framing) -> Result<Tensor> {
        let mut region = framing.region;
        let mut x = crop(&h, region)?;
        for (i, step) in framing.steps.iter().enumerate() {
            x = self.framed_stage(i, &background[i], x, region, step)?;
            region = step.out;
        }
        let u = background.last().expect("the background's last map");
        let all = Region::all(u.size()[2], u.size()[3]);
        Ok(match framing.end {
            End::Background => layout_like(u, &u.f_expand([h.size()[0], -1, -1, -1], false)?)?,
            End::Paste => frame(u, all, &x, region)?,
            End::Whole => (framing.steps.len()..self.stages.len())
                .try_fold(frame(u, all, &x, region)?, |map, i| {
                    self.stage_owned(i, map)
                })?,
        })
    }

    /// Stage `i` of `step` on images `x`, their values on `region` of its input, whose
    /// background is `u`: the images' values on `step.out`.
    fn framed_stage(
        &self,
        i: usize,
        u: &Tensor,
        x: Tensor,
        region: Region,
        step: &Step,
    ) -> Result<Tensor> {
        // rows and columns of the region that no output reads (left over by pooling) go
        let kept = region.intersect(step.run);
        let x = crop(&x, kept.within(region))?;
        // a frame only where the stage reads beyond the region; either way the input is the
        // stage's own to overwrite (activations in place save allocating their outputs)
        let input = match kept == step.run {
            true => x,
            false => frame(u, step.run, &x, kept)?,
        };
        crop(&self.stage_owned(i, input)?, step.keep)
    }
}

/// A framing background's maps (`Staged::background`) and what they were made for.
struct Background {
    key: BackgroundKey,
    maps: Vec<Tensor>,
}

#[derive(Debug, PartialEq)]
struct BackgroundKey {
    /// The colour's bits: a background is reused only for exactly the same colour.
    colour: Vec<u32>,
    size: [i64; 2],
    stages: usize,
    device: Device,
    /// bf16 maps (made under autocast) serve only bf16 calls, fp32 ones only fp32 calls.
    precision: Precision,
}

#[cfg(test)]
mod tests {
    use super::super::efficientnet_lite::{conv_bn, MbConv};
    use super::super::framing::{localities, reach, surround};
    use super::super::ops::{
        self, Activation, Chain, Conv2d, ConvConfig, Locality, MaxPool, Padding,
    };
    use super::super::{Network, CPU_SUB_BATCH};
    use super::*;
    use rand::SeedableRng;

    const VGG_NORM: InputNorm = InputNorm::MeanStd {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };

    /// A network of the kinds of stages framing handles, with random weights and biases.
    fn net(stages: fn(&nn::Path) -> Vec<Stage>) -> Network {
        let net = Network::custom("framed", VGG_NORM, Device::Cpu, stages);
        randomise(&net);
        net
    }

    /// Random parameters that keep activations finite and of order one through many layers:
    /// weights scaled by their fan-in, positive running variances (batch norms divide by their
    /// root).
    fn randomise(net: &Network) {
        // a generator of the test's own: libtorch's global one is shared with the tests that
        // run at the same time, which would make these weights differ from run to run
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        tch::no_grad(|| {
            for (name, mut t) in net.parameters().unwrap() {
                let size = t.size();
                let r = draw(&mut rng, &size, rand_distr::StandardNormal);
                let r = match size.len() {
                    1 if name.ends_with("running_var") => r.abs() * 0.5 + 0.5,
                    1 => r * 0.3,
                    _ => r * (2.0 / size[1..].iter().product::<i64>() as f64).sqrt(),
                };
                t.copy_(&r);
            }
        });
    }

    fn conv(p: &nn::Path, name: &str, cin: i64, cout: i64, k: i64) -> Stage {
        let cfg = ConvConfig {
            stride: 1,
            padding: Padding::Fixed(k / 2),
            groups: 1,
            bias: true,
        };
        Stage::new(name, &[], Conv2d::new(&(p / name), cin, cout, k, cfg))
    }

    fn pool(name: &str) -> Stage {
        pool_by(name, 2, 2)
    }

    fn pool_by(name: &str, kernel: i64, stride: i64) -> Stage {
        Stage::new(name, &[], MaxPool { kernel, stride })
    }

    fn vgg_like(p: &nn::Path) -> Vec<Stage> {
        vec![
            conv(p, "c1", 3, 8, 3),
            Stage::new("r1", &[], Activation::Relu),
            pool("p1"),
            conv(p, "c2", 8, 8, 5),
            Stage::new("r2", &[], Activation::Relu),
            pool("p2"),
            conv(p, "c3", 8, 6, 3),
            Stage::new("r3", &[], Activation::Relu),
        ]
    }

    fn pool_first(p: &nn::Path) -> Vec<Stage> {
        vec![
            pool("p0"),
            conv(p, "c1", 3, 5, 3),
            Stage::new("r1", &[], Activation::Relu),
        ]
    }

    /// Pooling windows that overlap (kernel 3, stride 2), no padding.
    fn overlapping_pools(p: &nn::Path) -> Vec<Stage> {
        vec![
            pool_by("p0", 3, 2),
            conv(p, "c1", 3, 5, 3),
            pool_by("p1", 3, 2),
            Stage::new("r1", &[], Activation::Relu),
        ]
    }

    /// `n` images of `size` px: the mean colour everywhere but on `rows` x `cols`, random there.
    /// A tensor of `size` drawn from `dist` by `rng`.
    fn draw(
        rng: &mut rand_chacha::ChaCha8Rng,
        size: &[i64],
        dist: impl rand_distr::Distribution<f32>,
    ) -> Tensor {
        let n = size.iter().product::<i64>() as usize;
        let values: Vec<f32> = (0..n).map(|_| dist.sample(rng)).collect();
        Tensor::from_slice(&values).view(size)
    }

    fn patched(n: i64, size: i64, rows: (i64, i64), cols: (i64, i64)) -> Tensor {
        let mean = Tensor::from_slice(&[0.485f32, 0.456, 0.406]).view([1, 3, 1, 1]);
        let x = mean.expand([n, 3, size, size], false).contiguous();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(size as u64);
        let patch = draw(
            &mut rng,
            &[n, 3, rows.1 - rows.0, cols.1 - cols.0],
            rand_distr::Uniform::new(0.0f32, 1.0),
        );
        x.narrow(2, rows.0, rows.1 - rows.0)
            .narrow(3, cols.0, cols.1 - cols.0)
            .copy_(&patch);
        x
    }

    /// `assert_same`, having checked that `forward_to_channels` frames `x` (runs only where the
    /// images differ from their background) at every layer up to `last`: equal results from a
    /// silent fallback to whole maps would prove nothing.
    fn assert_framed(net: &Network, x: &Tensor, last: usize, filters: &[i64], what: &str) {
        for layer in 0..=last {
            let framed = framing(&net.staged().stages[..=layer], x).unwrap();
            let steps = framed.map_or(0, |f| f.steps.len());
            assert!(steps > 0, "{what}: layer {layer} is not framed");
        }
        assert_same(net, x, filters, what);
    }

    /// How many stages `forward_to_channels` frames on images `x` through layer `last` of
    /// `net`, and what follows them.
    fn plan_of(net: &Network, x: &Tensor, last: usize) -> (usize, End) {
        let f = framing(&net.staged().stages[..=last], x)
            .unwrap()
            .expect("framed");
        (f.steps.len(), f.end)
    }

    fn assert_same(net: &Network, x: &Tensor, filters: &[i64], what: &str) {
        for layer in 0..net.staged().stages.len() {
            assert_same_at(net, x, layer, filters, what);
        }
    }

    fn assert_same_at(net: &Network, x: &Tensor, layer: usize, filters: &[i64], what: &str) {
        let index = Tensor::from_slice(filters);
        let full = tch::no_grad(|| net.forward_to(x, layer).unwrap().index_select(1, &index));
        let fast = net.forward_to_channels(x, layer, filters).unwrap();
        assert_eq!(fast.size(), full.size(), "{what}, layer {layer}");
        let err = (&fast - &full).abs().max().double_value(&[]);
        let scale = full.abs().max().double_value(&[]).max(1e-6);
        assert!(
            err <= 1e-5 * scale,
            "{what}, layer {layer}: {err} vs {scale}"
        );
    }

    /// Where the kept framing background's maps are (the same place: it was reused).
    fn kept_background(net: &Network) -> Vec<usize> {
        let kept = net.staged().background.lock().unwrap();
        let maps = &kept.as_ref().expect("a background was kept").maps;
        maps.iter().map(|m| m.data_ptr() as usize).collect()
    }

    #[test]
    fn a_kept_background_serves_other_filters_and_patches_but_not_other_colours() {
        let vgg = net(vgg_like);
        // framed through the narrowed convolution and the pooling after it (the kept maps
        // after the narrowed stage have every channel; each call takes its own)
        let layer = 7;
        let x = patched(5, 30, (0, 6), (20, 30));
        assert_eq!(plan_of(&vgg, &x, layer), (8, End::Paste));
        assert_same_at(&vgg, &x, layer, &[4, 0, 5], "first call");
        let kept = kept_background(&vgg);
        let y = patched(4, 30, (1, 5), (18, 29));
        assert_eq!(plan_of(&vgg, &y, layer), (8, End::Paste));
        for (images, filters) in [(&x, &[1][..]), (&y, &[2, 3]), (&x, &[5, 4])] {
            assert_same_at(&vgg, images, layer, filters, &format!("kept, {filters:?}"));
            assert_eq!(kept_background(&vgg), kept, "reused for {filters:?}");
        }
        let darker = &x * 0.5;
        assert_same_at(&vgg, &darker, layer, &[4, 0, 5], "another colour");
        assert_ne!(kept_background(&vgg), kept, "made again for another colour");
    }

    #[test]
    fn narrowed_forward_in_sub_batches_equals_the_whole_forward() {
        let vgg = net(vgg_like);
        for n in [1, CPU_SUB_BATCH, 2 * CPU_SUB_BATCH + 1] {
            let x = Tensor::rand([n, 3, 30, 30], (Kind::Float, Device::Cpu));
            assert_same(&vgg, &x, &[1, 5], &format!("{n} random images"));
        }
    }

    #[test]
    fn surround_finds_where_images_leave_the_background() {
        let x = patched(4, 30, (9, 20), (12, 17));
        let (background, region) = surround(&x).unwrap().unwrap();
        assert_eq!(
            region,
            Region {
                y0: 9,
                y1: 20,
                x0: 12,
                x1: 17
            }
        );
        let mean = Tensor::from_slice(&[0.485f32, 0.456, 0.406]).view([1, 3, 1, 1]);
        assert_eq!(background, mean, "the images' mean-colour surround");
        // too few images, or too large a region: not worth framing
        assert!(surround(&x.narrow(0, 0, 3)).unwrap().is_none());
        let big = patched(4, 30, (0, 28), (2, 30));
        assert!(surround(&big).unwrap().is_none());
    }

    #[test]
    fn framed_forward_equals_the_whole_forward() {
        let vgg = net(vgg_like);
        // odd size: the second pooling drops a row and a column
        // more images than a CPU sub-batch in the first case
        // framed throughout and pasted into the background's output, or until a stage reads
        // its whole input
        for (n, rows, cols, plan) in [
            (CPU_SUB_BATCH + 3, (9, 20), (12, 17), (6, End::Whole)),
            (5, (0, 6), (20, 30), (8, End::Paste)),
            (5, (25, 30), (0, 30), (8, End::Paste)),
        ] {
            let x = patched(n, 30, rows, cols);
            assert_eq!(plan_of(&vgg, &x, 7), plan, "{rows:?} x {cols:?}");
            assert_same(&vgg, &x, &[4, 0, 5], &format!("patch {rows:?} x {cols:?}"));
        }
        // a patch that only the rows and columns pooling drops: gone after the first stage
        let pooled = net(pool_first);
        let x = patched(4, 31, (30, 31), (30, 31));
        assert_eq!(plan_of(&pooled, &x, 2), (0, End::Background));
        assert_same(&pooled, &x, &[2, 1], "patch pooled away");
        let x = patched(4, 31, (3, 9), (10, 30));
        assert_eq!(plan_of(&pooled, &x, 2), (3, End::Paste));
        assert_same(&pooled, &x, &[2], "pool first");
        // pooling windows that overlap, at odd and even sizes, patches at the edges
        let overlapping = net(overlapping_pools);
        for (size, rows, cols) in [
            (31, (3, 9), (10, 30)),
            (32, (30, 32), (1, 2)),
            (33, (20, 21), (0, 33)),
        ] {
            let x = patched(4, size, rows, cols);
            let what = format!("{size} px, patch {rows:?} x {cols:?}");
            assert_framed(&overlapping, &x, 3, &[2, 1], &what);
        }
    }

    fn relu6() -> Box<dyn Op> {
        Box::new(Activation::Relu6)
    }

    /// EfficientNet's kinds of stages, small: stride-2 SAME convolutions of kernel 3 and 5,
    /// depthwise ones, inverted residual blocks with and without the skip, and a stage of two
    /// strided convolutions (their localities compose), then global pooling.
    fn efficientnet_like(p: &nn::Path) -> Vec<Stage> {
        let block = |name: &str, k, stride, expand, cin, cout| {
            let op = MbConv::new(&(p / name), k, stride, expand, cin, cout);
            Stage::new(name, &[], op)
        };
        let conv = |name: &str, cin, cout, k, stride, groups| {
            conv_bn(p / name, p / name / "bn", cin, cout, k, stride, groups)
        };
        vec![
            Stage::new(
                "stem",
                &[],
                Chain(vec![conv("stem", 3, 8, 3, 2, 1), relu6()]),
            ),
            block("b0", 3, 1, 1, 8, 8),
            Stage::new(
                "pair",
                &[],
                Chain(vec![
                    conv("pair0", 8, 8, 3, 2, 8),
                    relu6(),
                    conv("pair1", 8, 12, 5, 2, 1),
                ]),
            ),
            block("b1", 5, 2, 4, 12, 16),
            block("b2", 5, 1, 2, 16, 16),
            block("b3", 3, 1, 3, 16, 16),
            Stage::new(
                "head",
                &[],
                Chain(vec![conv("head", 16, 24, 1, 1, 1), relu6()]),
            ),
            Stage::new(
                "logits",
                &[],
                ops::PoolLinear(ops::Linear::new(&(p / "fc"), 24, 10)),
            ),
        ]
    }

    #[test]
    fn strided_localities_compose() {
        let net = net(efficientnet_like);
        let stage = |name: &str| &net.staged().stages[net.layer_index(name).unwrap()].op;
        // SAME, kernel 3, stride 2: padding (0, 1) on an even size, (1, 1) on an odd one
        let stem = |size| stage("stem").locality(size).unwrap();
        assert_eq!((stem(64).kernel, stem(64).stride), (3, 2));
        assert_eq!((stem(64).before, stem(64).outputs), (0, 32));
        assert_eq!((stem(61).before, stem(61).outputs), (1, 31));
        // kernel 3 stride 2, then kernel 5 stride 2 (padding (1, 2) on 16 rows, (2, 2) on 15):
        // kernel 4 * 2 + 3, stride 4, padding 2 * padding2 + padding1
        let pair = |size| stage("pair").locality(size).unwrap();
        assert_eq!((pair(32).kernel, pair(32).stride), (11, 4));
        assert_eq!((pair(32).before, pair(32).outputs), (2, 8));
        assert_eq!((pair(30).before, pair(30).outputs), (4, 8));
        assert_eq!((pair(29).before, pair(29).outputs), (5, 8));
        // the skip of a block adds nothing to its window
        let b2 = stage("b2").locality(16).unwrap();
        assert_eq!((b2.kernel, b2.stride, b2.before, b2.outputs), (5, 1, 2, 16));
        assert!(stage("logits").locality(4).is_none());
    }

    #[test]
    fn reach_runs_aligned_crops_padded_as_the_map() {
        // SAME, kernel 3, stride 2 on 8 rows (padding (0, 1)): row 3 feeds output 1 alone,
        // which reads rows 2..5; the crop 2..6 starts at a multiple of 2 and is even, as 8
        let l = Locality::strided(3, 2, (0, 1), 8).unwrap();
        assert_eq!(reach(l, 8, (3, 4)), Some([(2, 6), (1, 2), (0, 1)]));
        // the last row feeds the last output, which reads the padding beyond the edge
        assert_eq!(reach(l, 8, (7, 8)), Some([(6, 8), (3, 4), (0, 1)]));
        // 7 rows: padding (1, 1); row 1 feeds outputs 0 and 1 (rows -1..2 and 1..4); the crop
        // 0..5 is odd, as 7
        let l = Locality::strided(3, 2, (1, 1), 7).unwrap();
        assert_eq!(reach(l, 7, (1, 2)), Some([(0, 5), (0, 2), (0, 2)]));
        // pooling 2 x 2 drops the last of 7 rows
        let l = Locality::strided(2, 2, (0, 0), 7).unwrap();
        assert_eq!(reach(l, 7, (6, 7)), None);
        assert_eq!(reach(l, 7, (5, 7)), Some([(4, 7), (2, 3), (0, 1)]));
    }

    #[test]
    fn framed_strided_forward_equals_the_whole_forward() {
        let net = net(efficientnet_like);
        let head = net.layer_index("head").unwrap();
        // at 160 px every stage up to head is framed and pasted into the background's output;
        // on the smaller maps a late stage reads all of its input and whole maps run on
        for (size, end) in [(160, End::Paste), (61, End::Whole), (31, End::Whole)] {
            let s = size;
            // inside, at each edge and corner (but the top-left pixel, which gives the
            // background), single pixels at odd and even places, a column at the right edge,
            // rows at the bottom
            for (rows, cols) in [
                ((20, 29), (23, 30)),
                ((0, 5), (1, 7)),
                ((1, 6), (0, 4)),
                ((s - 6, s), (s - 3, s)),
                ((0, 3), (s - 9, s)),
                ((s - 1, s), (0, 4)),
                ((13, 14), (17, 18)),
                ((12, 13), (s - 1, s)),
                ((0, s), (s - 1, s)),
                ((s - 2, s), (0, s)),
            ] {
                let x = patched(5, size, rows, cols);
                let what = format!("{size} px, patch {rows:?} x {cols:?}");
                assert_eq!(plan_of(&net, &x, head).1, end, "{what}");
                assert_framed(&net, &x, head, &[3, 0, 7], &what);
            }
        }
    }

    #[test]
    fn framed_efficientnet_lite0_equals_the_whole_forward() {
        let net = Network::build("efficientnet_lite0", Device::Cpu).unwrap();
        randomise(&net);
        let head = net.layer_index("head").unwrap();
        let reads = localities(&net.staged().stages[..=head], 224, 224).unwrap();
        assert_eq!(reads[head][0].outputs, 7);
        assert!(
            localities(&net.staged().stages, 224, 224).is_none(),
            "logits pool"
        );
        // the probes' aperture: stem ... blocks.3 framed; blocks.4 reads all of its input, so
        // the background's maps are needed only that far
        let aperture = patched(4, 224, (34, 191), (34, 191));
        assert_eq!(plan_of(&net, &aperture, head), (5, End::Whole));
        // the probes' aperture (radius 0.7 * 112), a corner, a small patch at odd places
        for (rows, cols) in [
            ((34, 191), (34, 191)),
            ((0, 61), (150, 224)),
            ((101, 104), (7, 8)),
        ] {
            let x = patched(4, 224, rows, cols);
            let h = tch::no_grad(|| net.forward_to(&x, head).unwrap());
            let scale = h.abs().max().double_value(&[]);
            assert!(
                scale.is_finite() && scale > 1e-3,
                "head's activations: {scale}"
            );
            let what = format!("patch {rows:?} x {cols:?}");
            assert_framed(&net, &x, head, &[5, 15, 1], &what);
        }
    }

    /// Framing in bf16: the framed forward equals the whole bf16 forward up to bf16 rounding
    /// (crops run through other kernels than whole maps, and each rounds its outputs to bf16),
    /// and a background kept from bf16 calls never serves an fp32 one (which must stay exact).
    #[test]
    fn framed_bf16_forward_equals_the_whole_bf16_forward() {
        let lite = net(efficientnet_like);
        let head = lite.layer_index("head").unwrap();
        let cases: [(Network, usize, i64, &[i64]); 2] = [
            (net(vgg_like), 7, 30, &[4, 0, 5]),
            (lite, head, 160, &[3, 0, 7]),
        ];
        for (net, layer, size, filters) in cases {
            let x = patched(5, size, (4, 17), (9, 20));
            assert!(framing(&net.staged().stages[..=layer], &x)
                .unwrap()
                .is_some_and(|f| !f.steps.is_empty()));
            let index = Tensor::from_slice(filters);
            let whole = tch::no_grad(|| {
                net.forward_to_in(&x, layer, Precision::Bf16)
                    .unwrap()
                    .index_select(1, &index)
            });
            let framed = net
                .forward_to_channels_in(&x, layer, filters, Precision::Bf16)
                .unwrap();
            assert_eq!(framed.kind(), Kind::Float);
            let scale = whole.abs().max().double_value(&[]);
            let err = (&framed - &whole).abs().max().double_value(&[]) / scale;
            // measured 0 here (the crops ran the same kernels), rounding elsewhere
            assert!(err < 0.01, "layer {layer}: framed vs whole bf16 {err}");
            let exact = tch::no_grad(|| net.forward_to(&x, layer).unwrap().index_select(1, &index));
            let err = (&framed - &exact).abs().max().double_value(&[]) / scale;
            // measured 0.8% (VGG-like) and 1.4% (EfficientNet-like)
            assert!(
                err > 0.0 && err < 0.04,
                "layer {layer}: framed bf16 vs fp32 {err}"
            );
            // the same colour in fp32 right after: its own background, exact
            assert_same_at(&net, &x, layer, filters, "fp32 after bf16");
        }
    }
}
