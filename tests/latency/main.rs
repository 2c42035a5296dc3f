//! The timing tests: they measure how fast Redis keeps answering, so `scripts/test.sh` runs
//! them after every other test, one module per step, single-threaded
//! (`cargo test --release --test latency chaos:: -- --test-threads=1`), and their bounds mean
//! something only on an otherwise idle machine.

// Tests unwrap: a failure is a panic with the error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod blackhole;
mod chaos;
mod chaos_kill;
mod drain;
mod snapshot;
mod trickle;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use testkit::Pings;

/// How often the pinger PINGs, and the round trip it counts as slow.
pub(crate) const PING_EVERY: Duration = Duration::from_millis(2);
pub(crate) const PING_BOUND: Duration = Duration::from_millis(5);
/// The module's own slices of main-thread work (spill, refill, trim, a snapshot's keys), in
/// CPU time (`main_thread_step_max_us`). Measured for the drain: 0.4-0.8 ms in most runs, once
/// 3.7 ms; for the snapshot 1.02-1.29 ms in 20 runs, once 6.8 ms in CI (see
/// [`within_step_bound`]). The bound catches a step that does unbounded work (the unsliced
/// snapshot: 48.7 ms every time), not the last millisecond.
pub(crate) const STEP_BOUND: Duration = Duration::from_millis(5);

/// How many times [`within_step_bound`] runs a measurement whose longest step is over the bound.
const STEP_RUNS: usize = 2;

/// Runs `run` (a whole measurement on new servers: it checks its own results and returns the
/// module's longest main-thread step) again while that step is over [`STEP_BOUND`], up to
/// [`STEP_RUNS`] times; panics when every run is over. The data and the module's work are the
/// same in each run, so a step the module makes long is long every time. One step's CPU time
/// can also take in what the host does on the thread's behalf: this kernel has no
/// IRQ_TIME_ACCOUNTING, so interrupts are charged to the task they interrupt, and page faults
/// count too; a second run tells the two apart.
pub(crate) fn within_step_bound(what: &str, mut run: impl FnMut() -> Duration) {
    let mut steps = Vec::new();
    for _ in 0..STEP_RUNS {
        let step_max = run();
        eprintln!("{what}: longest main-thread step of the module: {step_max:?}");
        steps.push(step_max);
        if step_max < STEP_BOUND {
            return;
        }
    }
    panic!(
        "{what}: the module held the main thread for over {STEP_BOUND:?} in one step in each \
         of {STEP_RUNS} runs: {steps:?}"
    );
}

/// Sets the flag when dropped, so the PING thread also stops when the test panics.
pub(crate) struct StopOnDrop(pub(crate) Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Sets the calling thread's nice value (Linux: per thread). Returns whether it worked (going
/// below 0 needs root).
pub(crate) fn set_thread_nice(nice: i32) -> bool {
    // SAFETY: plain syscalls on the calling thread.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) == 0
    }
}

/// PINGs every [`PING_EVERY`] until `stop`, recording the round trips. The thread asks for the
/// highest priority (root only; otherwise it keeps the default): it is the measuring
/// instrument, and its own wake-ups should not count as Redis being slow.
pub(crate) fn spawn_pinger(
    mut c: redis::Connection,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<Pings> {
    thread::spawn(move || {
        set_thread_nice(-20);
        let started = Instant::now();
        let mut pings = Pings::new(Some(PING_BOUND));
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            let pong: String = redis::cmd("PING").query(&mut c).expect("PING");
            let took = t.elapsed();
            assert_eq!(pong, "PONG");
            pings.record(started.elapsed(), took);
            thread::sleep(PING_EVERY);
        }
        pings
    })
}
