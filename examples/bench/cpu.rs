//! CPU time from /proc and getrusage: of a process's threads, of this process, of its waited-for
//! children, of RabbitMQ.

/// CPU seconds (utime+stime) of the threads of `pid` whose name is in `names`.
pub fn threads_cpu(pid: u32, names: &[&str]) -> f64 {
    // SAFETY: sysconf only reads a system value.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut ticks = 0u64;
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in dir.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let name = &stat[open + 1..close];
            if !names.iter().any(|n| name.starts_with(n)) {
                continue;
            }
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            // After ")": state is field 3, utime 14, stime 15 (1-based over the whole line).
            let get = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok());
            ticks += get(14).unwrap_or(0) + get(15).unwrap_or(0);
        }
    }
    ticks as f64 / tck
}

/// CPU seconds of this process (the raw lapin publisher of measurement 2).
pub fn self_cpu() -> f64 {
    rusage_cpu(libc::RUSAGE_SELF)
}

/// CPU seconds of every process named `comm` (RabbitMQ's Erlang VM: `beam.smp`).
fn processes_cpu(comm: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .map(|pid| threads_cpu(pid, &[""]))
        .sum()
}

/// CPU seconds of the children this process has waited for (redis-benchmark runs).
fn children_cpu() -> f64 {
    rusage_cpu(libc::RUSAGE_CHILDREN)
}

/// User and system CPU seconds of `who` (`RUSAGE_SELF` or `RUSAGE_CHILDREN`).
fn rusage_cpu(who: libc::c_int) -> f64 {
    // SAFETY: rusage is plain data (all zeroes is a valid value); getrusage fills the one we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Where the machine's CPU went during one redis-benchmark run, in CPU seconds.
#[derive(Clone, Copy, Default)]
pub struct CpuSplit {
    pub wall: f64,
    pub redis: f64,
    pub publisher: f64,
    pub benchmark: f64,
    pub rabbitmq: f64,
    pub consumer: f64,
    /// The Redis that keeps RabbitMQ busy in the control run (0 elsewhere).
    pub feeder: f64,
}

impl CpuSplit {
    pub fn now(redis: u32, consumer: u32, feeder: Option<u32>) -> CpuSplit {
        CpuSplit {
            wall: 0.0,
            redis: threads_cpu(redis, &[""]),
            publisher: threads_cpu(redis, PUBLISHER_THREADS),
            benchmark: children_cpu(),
            rabbitmq: processes_cpu("beam.smp"),
            consumer: threads_cpu(consumer, &[""]),
            feeder: feeder.map_or(0.0, |pid| threads_cpu(pid, &[""])),
        }
    }

    pub fn since(self, before: CpuSplit, wall: f64) -> CpuSplit {
        CpuSplit {
            wall,
            redis: self.redis - before.redis,
            publisher: self.publisher - before.publisher,
            benchmark: self.benchmark - before.benchmark,
            rabbitmq: self.rabbitmq - before.rabbitmq,
            consumer: self.consumer - before.consumer,
            feeder: self.feeder - before.feeder,
        }
    }
}

/// The module's only thread of its own: it connects, publishes and reads confirms.
pub const PUBLISHER_THREADS: &[&str] = &["kea-publisher"];
