//! MNIST-style data: an IDX reader and the bundled 10,000-digit sample.
//!
//! # Sources
//!
//! - **Bundled** (default): `data/mnist-10k-images-idx3-ubyte.gz` and
//!   `data/mnist-10k-labels-idx1-ubyte.gz` (10,000 real MNIST digits, see `data/README.md`),
//!   split with a seeded, stratified shuffle into 8,000 training and 2,000 test digits (80/20 in
//!   every class). The folder is found, in order, from the `DOWNHILL_BUNDLED_DATA` environment
//!   variable, from the source tree this binary was built from (`CARGO_MANIFEST_DIR/../../data`),
//!   and from `./data`.
//! - **A folder** (`--data-dir DIR`): the standard MNIST / Fashion-MNIST names
//!   `train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`, `t10k-images-idx3-ubyte[.gz]`,
//!   `t10k-labels-idx1-ubyte[.gz]` (used as given, no split); or, if those are absent, the two
//!   bundled file names (split as above).
//!
//! # IDX format
//!
//! Big-endian: a 4-byte magic `0x00 0x00 type ndims` (`type` 0x08 = unsigned byte), `ndims`
//! 4-byte sizes, then the data. Images are `0x00000803` (count, rows, cols), labels `0x00000801`
//! (count). Files may be gzip-compressed (detected by the `1f 8b` magic, not by the name).
//! Pixels are scaled to `x / 255` in `[0, 1]`; no mean/std normalisation.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::rng::SplitMix64;
use crate::{LabError, Result};

/// Magic number of an IDX3 unsigned-byte file (images).
pub const IDX3_UBYTE_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX1 unsigned-byte file (labels).
pub const IDX1_UBYTE_MAGIC: u32 = 0x0000_0801;
/// File name of the bundled images.
pub const BUNDLED_IMAGES: &str = "mnist-10k-images-idx3-ubyte.gz";
/// File name of the bundled labels.
pub const BUNDLED_LABELS: &str = "mnist-10k-labels-idx1-ubyte.gz";
/// Number of classes (digits 0-9).
pub const NUM_CLASSES: usize = 10;
/// Fraction of every class put in the test set when splitting one file pair.
pub const TEST_FRACTION: f64 = 0.2;

/// Images and labels in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// `len * rows * cols` pixels, row-major per image, scaled to `[0, 1]`.
    pub images: Vec<f32>,
    /// One label per image, in `0..10`.
    pub labels: Vec<u8>,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
}

impl Dataset {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels per image (`rows * cols`).
    pub fn pixels(&self) -> usize {
        self.rows * self.cols
    }

    /// Pixels of image `i`.
    pub fn image(&self, i: usize) -> &[f32] {
        let p = self.pixels();
        &self.images[i * p..(i + 1) * p]
    }

    /// A new dataset with the examples at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        let mut images = Vec::with_capacity(indices.len() * self.pixels());
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        Dataset {
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            rows: self.rows,
            cols: self.cols,
        }
    }

    /// The first `n` examples (all if `n >= len`).
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset {
            images: self.images[..n * self.pixels()].to_vec(),
            labels: self.labels[..n].to_vec(),
            rows: self.rows,
            cols: self.cols,
        }
    }

    /// Examples per class.
    pub fn class_counts(&self) -> [usize; NUM_CLASSES] {
        let mut counts = [0; NUM_CLASSES];
        for &l in &self.labels {
            counts[usize::from(l)] += 1;
        }
        counts
    }
}

/// A training and a test set, and where they came from.
#[derive(Debug, Clone)]
pub struct Split {
    /// Training set.
    pub train: Dataset,
    /// Test set.
    pub test: Dataset,
    /// Where the data came from, in words (stored in `config.json`).
    pub description: String,
}

/// Where to read the data from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DataSource {
    /// The bundled 10k sample (see the module docs for how its folder is found).
    #[default]
    Bundled,
    /// A folder with the standard MNIST file names, or with the bundled names.
    Dir(PathBuf),
}

/// Read the whole file, gunzipping it if it starts with the gzip magic `1f 8b`.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = fs::read(path).map_err(|e| LabError::io(path, e))?;
    decode_maybe_gz(raw, path)
}

/// The bytes of a file read whole, gunzipped if they start with the gzip magic `1f 8b`.
/// `path` is only used in error messages.
pub fn decode_maybe_gz(raw: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| LabError::data(path, format!("not a valid gzip stream: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Parse IDX bytes with the expected `magic`; returns the dimensions and the data bytes.
/// `path` is only used in error messages.
pub fn parse_idx<'a>(bytes: &'a [u8], magic: u32, path: &Path) -> Result<(Vec<usize>, &'a [u8])> {
    let ndims = (magic & 0xff) as usize;
    let header = 4 + 4 * ndims;
    if bytes.len() < 4 {
        return Err(LabError::data(
            path,
            format!(
                "file has {} bytes, too short for an IDX magic number",
                bytes.len()
            ),
        ));
    }
    let found = be_u32(bytes, 0);
    if found != magic {
        return Err(LabError::data(
            path,
            format!(
                "wrong magic number 0x{found:08x}, expected 0x{magic:08x} ({})",
                describe_magic(magic)
            ),
        ));
    }
    if bytes.len() < header {
        return Err(LabError::data(
            path,
            format!(
                "file has {} bytes, too short for the {header}-byte IDX header",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| be_u32(bytes, 4 + 4 * i) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| LabError::data(path, format!("header dimensions {dims:?} overflow")))?;
    let data = &bytes[header..];
    let shape = dims
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x");
    if data.len() < expected {
        return Err(LabError::data(
            path,
            format!(
                "truncated: header says {shape} ({expected} bytes of data) but the file has only {} bytes after the header",
                data.len()
            ),
        ));
    }
    if data.len() > expected {
        return Err(LabError::data(
            path,
            format!(
                "header says {shape} ({expected} bytes of data) but the file has {} extra bytes after them",
                data.len() - expected
            ),
        ));
    }
    Ok((dims, data))
}

fn describe_magic(magic: u32) -> &'static str {
    match magic {
        IDX3_UBYTE_MAGIC => "IDX3 unsigned-byte images",
        IDX1_UBYTE_MAGIC => "IDX1 unsigned-byte labels",
        _ => "IDX",
    }
}

/// Read an IDX3 image file (raw or gzip): returns `(pixels, count, rows, cols)`.
pub fn read_images(path: &Path) -> Result<(Vec<u8>, usize, usize, usize)> {
    parse_images(&read_maybe_gz(path)?, path)
}

/// The images of an IDX3 file's (gunzipped) bytes: `(pixels, count, rows, cols)`. `path` is
/// only used in error messages.
pub fn parse_images(bytes: &[u8], path: &Path) -> Result<(Vec<u8>, usize, usize, usize)> {
    let (dims, data) = parse_idx(bytes, IDX3_UBYTE_MAGIC, path)?;
    if dims[1] == 0 || dims[2] == 0 {
        return Err(LabError::data(
            path,
            format!("image size {}x{} is empty", dims[1], dims[2]),
        ));
    }
    Ok((data.to_vec(), dims[0], dims[1], dims[2]))
}

/// Read an IDX1 label file (raw or gzip); every label must be in `0..=9`.
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    parse_labels(&read_maybe_gz(path)?, path)
}

/// The labels of an IDX1 file's (gunzipped) bytes; every label must be in `0..=9`. `path` is
/// only used in error messages.
pub fn parse_labels(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    let (_, data) = parse_idx(bytes, IDX1_UBYTE_MAGIC, path)?;
    if let Some(i) = data.iter().position(|&l| usize::from(l) >= NUM_CLASSES) {
        return Err(LabError::data(
            path,
            format!("label {} at index {i} is out of range 0..=9", data[i]),
        ));
    }
    Ok(data.to_vec())
}

/// Read an image file and a label file into a [`Dataset`]; their counts must agree.
pub fn load_pair(images_path: &Path, labels_path: &Path) -> Result<Dataset> {
    let (pixels, n, rows, cols) = read_images(images_path)?;
    let labels = read_labels(labels_path)?;
    if labels.len() != n {
        return Err(LabError::data(
            images_path,
            format!(
                "has {n} images but {} has {} labels",
                labels_path.display(),
                labels.len()
            ),
        ));
    }
    Ok(Dataset {
        images: pixels.iter().map(|&p| f32::from(p) / 255.0).collect(),
        labels,
        rows,
        cols,
    })
}

/// Split example indices by class into training and test indices: in every class, after a
/// seeded shuffle, `test_fraction` of the examples (rounded so that the total test count is
/// `round(len * test_fraction)`, largest remainders first) go to the test set. Both index
/// lists are then shuffled with the same seed.
pub fn stratified_split(labels: &[u8], test_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut rng = SplitMix64::derive(seed, "split");
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); NUM_CLASSES];
    for (i, &l) in labels.iter().enumerate() {
        by_class[usize::from(l) % NUM_CLASSES].push(i);
    }
    // Largest-remainder rounding of the per-class test counts.
    let total_test = (labels.len() as f64 * test_fraction).round() as usize;
    let exact: Vec<f64> = by_class
        .iter()
        .map(|c| c.len() as f64 * test_fraction)
        .collect();
    let mut counts: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
    let mut order: Vec<usize> = (0..NUM_CLASSES).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    let mut missing = total_test.saturating_sub(counts.iter().sum());
    for &c in order.iter().cycle().take(NUM_CLASSES * 2) {
        if missing == 0 {
            break;
        }
        if counts[c] < by_class[c].len() {
            counts[c] += 1;
            missing -= 1;
        }
    }
    let mut train = Vec::with_capacity(labels.len() - total_test);
    let mut test = Vec::with_capacity(total_test);
    for (class, idx) in by_class.iter_mut().enumerate() {
        rng.shuffle(idx);
        test.extend_from_slice(&idx[..counts[class]]);
        train.extend_from_slice(&idx[counts[class]..]);
    }
    rng.shuffle(&mut train);
    rng.shuffle(&mut test);
    (train, test)
}

/// The bundled data folder: `DOWNHILL_BUNDLED_DATA`, else the source tree's `data/`, else
/// `./data` (the first that holds [`BUNDLED_IMAGES`]).
pub fn bundled_data_dir() -> PathBuf {
    let candidates = [
        std::env::var_os("DOWNHILL_BUNDLED_DATA").map(PathBuf::from),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .nth(2)
            .map(|root| root.join("data")),
        Some(PathBuf::from("data")),
    ];
    candidates
        .iter()
        .flatten()
        .find(|d| d.join(BUNDLED_IMAGES).is_file())
        .cloned()
        .unwrap_or_else(|| PathBuf::from("data"))
}

/// Find `dir/name` or `dir/name.gz`.
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(name), dir.join(format!("{name}.gz"))]
        .into_iter()
        .find(|p| p.is_file())
}

/// Load the bundled pair of files from `dir` and split it ([`stratified_split`],
/// [`TEST_FRACTION`]).
pub fn load_bundled_from(dir: &Path, seed: u64) -> Result<Split> {
    let all = load_pair(&dir.join(BUNDLED_IMAGES), &dir.join(BUNDLED_LABELS))?;
    let (train, test) = stratified_split(&all.labels, TEST_FRACTION, seed);
    Ok(Split {
        train: all.select(&train),
        test: all.select(&test),
        description: format!(
            "bundled MNIST sample ({}, {} digits), stratified split seed {seed}: {} train / {} test",
            dir.join(BUNDLED_IMAGES).display(),
            all.len(),
            train.len(),
            test.len()
        ),
    })
}

/// Load a folder with the standard MNIST names (`train-*`, `t10k-*`, raw or `.gz`), or, if
/// absent, the bundled names.
pub fn load_dir(dir: &Path, seed: u64) -> Result<Split> {
    let names = [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ];
    let found: Vec<Option<PathBuf>> = names.iter().map(|n| find_file(dir, n)).collect();
    if found.iter().all(Option::is_none) && dir.join(BUNDLED_IMAGES).is_file() {
        return load_bundled_from(dir, seed);
    }
    let mut paths = Vec::with_capacity(4);
    for (name, path) in names.iter().zip(found) {
        paths.push(path.ok_or_else(|| {
            LabError::data(
                dir,
                format!("no {name} or {name}.gz (expected the standard MNIST file names, or {BUNDLED_IMAGES} and {BUNDLED_LABELS})"),
            )
        })?);
    }
    let train = load_pair(&paths[0], &paths[1])?;
    let test = load_pair(&paths[2], &paths[3])?;
    if (train.rows, train.cols) != (test.rows, test.cols) {
        return Err(LabError::data(
            &paths[2],
            format!(
                "images are {}x{} but the training images are {}x{}",
                test.rows, test.cols, train.rows, train.cols
            ),
        ));
    }
    Ok(Split {
        description: format!(
            "{}: {} train / {} test",
            dir.display(),
            train.len(),
            test.len()
        ),
        train,
        test,
    })
}

/// Load `source` (the split, if any, is seeded with `seed`).
pub fn load(source: &DataSource, seed: u64) -> Result<Split> {
    match source {
        DataSource::Bundled => load_bundled_from(&bundled_data_dir(), seed),
        DataSource::Dir(dir) => load_dir(dir, seed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn idx_images(n: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
        let mut b = IDX3_UBYTE_MAGIC.to_be_bytes().to_vec();
        for d in [n, rows, cols] {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(pixels);
        b
    }

    fn idx_labels(labels: &[u8]) -> Vec<u8> {
        let mut b = IDX1_UBYTE_MAGIC.to_be_bytes().to_vec();
        b.extend_from_slice(&(labels.len() as u32).to_be_bytes());
        b.extend_from_slice(labels);
        b
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn pixels(n: usize) -> Vec<u8> {
        (0..n * 4).map(|i| (i * 37 % 256) as u8).collect()
    }

    #[test]
    fn reads_raw_and_gzip_identically() {
        let dir = tempfile::tempdir().unwrap();
        let px = pixels(3);
        let img = idx_images(3, 2, 2, &px);
        let lab = idx_labels(&[0, 9, 4]);
        let (ri, rl) = (dir.path().join("i"), dir.path().join("l"));
        let (gi, gl) = (dir.path().join("i.gz"), dir.path().join("l.gz"));
        fs::write(&ri, &img).unwrap();
        fs::write(&rl, &lab).unwrap();
        fs::write(&gi, gz(&img)).unwrap();
        fs::write(&gl, gz(&lab)).unwrap();
        let raw = load_pair(&ri, &rl).unwrap();
        let zipped = load_pair(&gi, &gl).unwrap();
        assert_eq!(raw, zipped);
        assert_eq!((raw.len(), raw.rows, raw.cols), (3, 2, 2));
        assert_eq!(raw.labels, vec![0, 9, 4]);
        assert_eq!(raw.images[1], f32::from(px[1]) / 255.0);
        assert_eq!(raw.image(2).len(), 4);
    }

    #[test]
    fn wrong_magic_names_file_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("labels-as-images");
        fs::write(&p, idx_labels(&[1, 2])).unwrap();
        let err = read_images(&p).unwrap_err().to_string();
        assert!(err.contains("labels-as-images"), "{err}");
        assert!(
            err.contains("wrong magic number 0x00000801, expected 0x00000803"),
            "{err}"
        );
    }

    #[test]
    fn truncated_file_reports_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("short.gz");
        let mut img = idx_images(3, 2, 2, &pixels(3));
        img.truncate(img.len() - 5);
        fs::write(&p, gz(&img)).unwrap();
        let err = read_images(&p).unwrap_err().to_string();
        assert!(err.contains("short.gz"), "{err}");
        assert!(
            err.contains("header says 3x2x2 (12 bytes of data) but the file has only 7"),
            "{err}"
        );
        // Shorter than the header itself.
        fs::write(&p, &img[..9]).unwrap();
        let err = read_images(&p).unwrap_err().to_string();
        assert!(
            err.contains("too short for the 16-byte IDX header"),
            "{err}"
        );
        fs::write(&p, [0u8, 0]).unwrap();
        assert!(read_images(&p).is_err());
    }

    #[test]
    fn trailing_bytes_and_bad_gzip_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("long");
        let mut lab = idx_labels(&[1, 2]);
        lab.push(3);
        fs::write(&p, &lab).unwrap();
        let err = read_labels(&p).unwrap_err().to_string();
        assert!(err.contains("1 extra bytes"), "{err}");
        fs::write(&p, [0x1f, 0x8b, 0, 1, 2]).unwrap();
        let err = read_labels(&p).unwrap_err().to_string();
        assert!(err.contains("not a valid gzip stream"), "{err}");
    }

    #[test]
    fn count_mismatch_and_bad_label_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (i, l) = (dir.path().join("imgs"), dir.path().join("labs"));
        fs::write(&i, idx_images(3, 2, 2, &pixels(3))).unwrap();
        fs::write(&l, idx_labels(&[1, 2])).unwrap();
        let err = load_pair(&i, &l).unwrap_err().to_string();
        assert!(err.contains("imgs: has 3 images but"), "{err}");
        assert!(err.contains("labs has 2 labels"), "{err}");
        fs::write(&l, idx_labels(&[1, 12, 3])).unwrap();
        let err = load_pair(&i, &l).unwrap_err().to_string();
        assert!(
            err.contains("label 12 at index 1 is out of range 0..=9"),
            "{err}"
        );
        let missing = dir.path().join("nope");
        let err = load_pair(&missing, &l).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn standard_folder_names_raw_or_gz() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(
            d.join("train-images-idx3-ubyte.gz"),
            gz(&idx_images(4, 2, 2, &pixels(4))),
        )
        .unwrap();
        fs::write(d.join("train-labels-idx1-ubyte"), idx_labels(&[0, 1, 2, 3])).unwrap();
        fs::write(
            d.join("t10k-images-idx3-ubyte"),
            idx_images(2, 2, 2, &pixels(2)),
        )
        .unwrap();
        let err = load(&DataSource::Dir(d.to_path_buf()), 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no t10k-labels-idx1-ubyte"), "{err}");
        fs::write(
            d.join("t10k-labels-idx1-ubyte.gz"),
            gz(&idx_labels(&[5, 6])),
        )
        .unwrap();
        let split = load(&DataSource::Dir(d.to_path_buf()), 0).unwrap();
        assert_eq!((split.train.len(), split.test.len()), (4, 2));
        assert_eq!(split.test.labels, vec![5, 6]);
    }

    #[test]
    fn stratified_split_is_seeded_exact_and_disjoint() {
        let labels: Vec<u8> = (0..1000).map(|i| ((i * 7) % 10) as u8).collect();
        let (train, test) = stratified_split(&labels, 0.2, 3);
        assert_eq!((train.len(), test.len()), (800, 200));
        let mut all: Vec<usize> = train.iter().chain(&test).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        for class in 0..10u8 {
            let n = test.iter().filter(|&&i| labels[i] == class).count();
            assert_eq!(n, 20);
        }
        assert_eq!(stratified_split(&labels, 0.2, 3), (train.clone(), test));
        assert_ne!(stratified_split(&labels, 0.2, 4).0, train);
    }

    #[test]
    fn bundled_data_loads_with_documented_counts() {
        let split = load(&DataSource::Bundled, 0).unwrap();
        assert_eq!((split.train.len(), split.test.len()), (8000, 2000));
        assert_eq!((split.train.rows, split.train.cols), (28, 28));
        let counts: Vec<usize> = split
            .train
            .class_counts()
            .iter()
            .zip(split.test.class_counts())
            .map(|(a, b)| a + b)
            .collect();
        assert_eq!(
            counts,
            [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
        );
        for (tr, te) in split
            .train
            .class_counts()
            .iter()
            .zip(split.test.class_counts())
        {
            let frac = te as f64 / (tr + te) as f64;
            assert!((frac - 0.2).abs() < 0.005, "{frac}");
        }
    }
}
