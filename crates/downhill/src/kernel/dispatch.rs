//! Runtime CPU dispatch: every kernel loop is compiled once per instruction set
//! (AVX-512, AVX2+FMA, the target's baseline) and the best one the CPU supports is picked when
//! a step runs; [`monomorphise!`] turns loop-invariant flags into const generics.

use std::sync::atomic::{AtomicU8, Ordering};

/// `monomorphise!(f [flag, ...] (args...))` calls `f::<flag, ...>(args...)` with each runtime
/// `bool` turned into a const generic argument, so that every combination gets its own loop
/// with no branch inside. A branch on a loop-invariant flag is cheap, but LLVM does not always
/// vectorise a loop that contains one (AVX2 builds of Adam and RMSprop stayed scalar).
macro_rules! monomorphise {
    ($f:ident [$($done:expr),*] [] ($($arg:expr),*)) => {
        $f::<$($done),*>($($arg),*)
    };
    ($f:ident [$($done:expr),*] [$flag:expr $(, $rest:expr)*] ($($arg:expr),*)) => {
        if $flag {
            monomorphise!($f [$($done,)* true] [$($rest),*] ($($arg),*))
        } else {
            monomorphise!($f [$($done,)* false] [$($rest),*] ($($arg),*))
        }
    };
    ($f:ident [$($flag:expr),*] ($($arg:expr),*)) => {
        monomorphise!($f [] [$($flag),*] ($($arg),*))
    };
}
pub(crate) use monomorphise;

/// The instruction sets the kernels are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// No explicit vector extension beyond the target's baseline (SSE2 on x86-64, NEON on
    /// aarch64).
    Baseline,
    /// AVX2 and FMA.
    Avx2,
    /// AVX-512 F/VL.
    Avx512,
}

static ISA: AtomicU8 = AtomicU8::new(u8::MAX);

/// The best instruction set this CPU supports, detected once. The environment variable
/// `DOWNHILL_ISA` (`baseline`, `avx2`, `avx512`) can lower it, for tests and benchmarks.
pub fn isa() -> Isa {
    let v = ISA.load(Ordering::Relaxed);
    let isa = match v {
        0 => Isa::Baseline,
        1 => Isa::Avx2,
        2 => Isa::Avx512,
        _ => {
            let detected = detect_isa();
            let wanted = match std::env::var("DOWNHILL_ISA").as_deref() {
                Ok("baseline") | Ok("scalar") => Isa::Baseline,
                Ok("avx2") => Isa::Avx2,
                _ => Isa::Avx512,
            };
            let isa = detected.min(wanted);
            ISA.store(isa as u8, Ordering::Relaxed);
            isa
        }
    };
    isa
}

fn detect_isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            return Isa::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Isa::Avx2;
        }
    }
    Isa::Baseline
}

/// A loop that [`run_for`] compiles once per instruction set. `run` must be
/// `#[inline(always)]` (and so must everything it calls in the hot loop), so that its body is
/// generated inside each `#[target_feature]` wrapper below.
pub(crate) trait Body {
    /// Runs the loop.
    ///
    /// # Safety
    /// Whatever the implementation documents; [`run_for`] adds nothing.
    unsafe fn run(&self);
}

/// Runs `body` compiled for `isa`.
///
/// # Safety
/// `isa` must be supported by this CPU (as [`isa()`] guarantees), and `body.run()`'s own
/// contract must hold.
#[inline(always)]
pub(crate) unsafe fn run_for<B: Body>(isa: Isa, body: &B) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => run_avx512(body),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => run_avx2(body),
        _ => body.run(),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn run_avx512<B: Body>(body: &B) {
    body.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<B: Body>(body: &B) {
    body.run()
}
