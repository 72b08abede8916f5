//! Results are bit-identical for any thread count and chunk size, and the fast kernels agree
//! with the reference implementations, for every optimizer and option combination (the test
//! kit's batteries over the cases generated from the registry).

use downhill::testkit::{cases, Battery, Workload};
use downhill::Mode;

#[test]
fn every_thread_count_and_chunk_size_gives_the_same_bits() {
    for case in cases() {
        Battery::of_case(&case).assert_deterministic();
    }
}

#[test]
fn fast_kernels_agree_with_the_reference() {
    for case in cases() {
        Battery::of_case(&case).fast_matches_reference(50);
    }
}

/// Lengths that cross reduction blocks and chunk boundaries, plus many small tensors.
fn lens() -> Vec<usize> {
    let mut l = vec![300_001, 4096 * 3 + 5, 1];
    l.extend((0..40).map(|i| 17 + 31 * i));
    l
}

/// The parameters after 4 single-threaded fast steps of the workload.
fn run(cfg: &downhill::OptimizerConfig) -> Vec<Vec<f32>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        let mut work = Workload::new(&lens());
        let mut opt = cfg.build(work.specs()).unwrap();
        opt.set_mode(Mode::Fast);
        for _ in 0..4 {
            work.step(opt.as_mut());
        }
        work.params
    })
}

#[test]
fn every_instruction_set_gives_the_same_bits() {
    // The kernels never contract into FMA, so AVX-512, AVX2 and the baseline agree exactly.
    // This is checked in a child process per ISA (the choice is made once per process).
    let exe = std::env::current_exe().unwrap();
    let mut outputs = Vec::new();
    for isa in ["baseline", "avx2", "avx512"] {
        let out = std::process::Command::new(&exe)
            .args([
                "--exact",
                "isa_fingerprint",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("DOWNHILL_ISA", isa)
            .env("DOWNHILL_PRINT_FINGERPRINT", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let line = text
            .lines()
            .find_map(|l| l.find("fingerprint ").map(|i| l[i..].to_string()))
            .unwrap_or_else(|| panic!("no fingerprint for {isa}: {text}"));
        let line = line.split(" isa ").next().unwrap_or_default().to_string();
        outputs.push((isa, line));
    }
    for w in outputs.windows(2) {
        assert_eq!(w[0].1, w[1].1, "{} vs {}", w[0].0, w[1].0);
    }
}

#[test]
fn isa_fingerprint() {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for case in cases() {
        for v in run(&case.config) {
            for x in v {
                h = (h ^ x.to_bits() as u64).wrapping_mul(0x100_0000_01b3);
            }
        }
    }
    if std::env::var("DOWNHILL_PRINT_FINGERPRINT").is_ok() {
        println!("fingerprint {h:016x} isa {:?}", downhill::isa());
    }
}
