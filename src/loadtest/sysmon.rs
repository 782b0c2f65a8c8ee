//! CPU and memory samples of a process, from /proc.
//!
//! CPU is `utime + stime` from `/proc/PID/stat` (clock ticks, `getconf CLK_TCK`, 100 when
//! unknown) over the wall time between two samples, as percent of one core; memory is
//! `VmRSS` from `/proc/PID/status`.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::results::{LiveCounters, ResourceSample};

/// The shortest interval [`spawn_sampler`] samples at.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// At most this many samples are kept by [`spawn_sampler`]; it stops sampling after that.
pub const MAX_SAMPLES: usize = 200_000;

/// Why a process cannot be sampled.
#[derive(Debug, thiserror::Error)]
pub enum SysmonError {
    /// The process does not exist (any more), or is a zombie.
    #[error("process {pid} is gone")]
    Gone {
        /// The process.
        pid: u32,
    },
    /// A /proc file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A /proc file did not hold what was expected.
    #[error("cannot parse {path}: {what}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
}

/// Clock ticks per second for /proc times: `getconf CLK_TCK`, or 100 when that fails.
pub fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0 && t.is_finite())
            .unwrap_or(100.0)
    })
}

/// `utime + stime` (clock ticks) from the text of `/proc/PID/stat`.
///
/// The command name (field 2) is in parentheses and may itself hold spaces and parentheses,
/// so fields are counted from the last `)`.
pub fn parse_stat_ticks(stat: &str) -> Result<u64, String> {
    let close = stat
        .rfind(')')
        .ok_or_else(|| "no ')' after the command name".to_string())?;
    // Fields after the name start at field 3 (state); utime is field 14, stime field 15.
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let field = |n: usize| -> Result<u64, String> {
        let text = fields
            .get(n - 3)
            .ok_or_else(|| format!("field {n} missing"))?;
        text.parse::<u64>()
            .map_err(|e| format!("field {n} {text:?}: {e}"))
    };
    Ok(field(14)? + field(15)?)
}

/// `VmRSS` in KiB from the text of `/proc/PID/status`; `None` when absent (a zombie, or a
/// kernel thread).
pub fn parse_vmrss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Percent of one core: `ticks` of CPU time over `elapsed` wall time.
pub fn cpu_percent(ticks: u64, clock_ticks: f64, elapsed: Duration) -> f64 {
    let wall = elapsed.as_secs_f64();
    if wall <= 0.0 || clock_ticks <= 0.0 {
        return 0.0;
    }
    ticks as f64 / clock_ticks / wall * 100.0
}

/// Samples one process.
#[derive(Debug)]
pub struct ProcSampler {
    pid: u32,
    clock_ticks: f64,
    last_ticks: u64,
    last_at: Instant,
}

impl ProcSampler {
    /// A sampler of `pid`; fails when the process cannot be read.
    pub fn new(pid: u32) -> Result<Self, SysmonError> {
        let ticks = read_ticks(pid)?;
        Ok(ProcSampler {
            pid,
            clock_ticks: clock_ticks(),
            last_ticks: ticks,
            last_at: Instant::now(),
        })
    }

    /// The process sampled.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// CPU % of one core since the last sample (or since [`ProcSampler::new`]), and RSS in MiB.
    pub fn sample(&mut self) -> Result<(f64, f64), SysmonError> {
        let ticks = read_ticks(self.pid)?;
        let now = Instant::now();
        let rss_kib = read_rss_kib(self.pid)?;
        let cpu = cpu_percent(
            ticks.saturating_sub(self.last_ticks),
            self.clock_ticks,
            now.duration_since(self.last_at),
        );
        self.last_ticks = ticks;
        self.last_at = now;
        Ok((cpu, rss_kib as f64 / 1024.0))
    }
}

fn read_proc(pid: u32, file: &str) -> Result<String, SysmonError> {
    let path = PathBuf::from(format!("/proc/{pid}/{file}"));
    std::fs::read_to_string(&path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => SysmonError::Gone { pid },
        // ESRCH: the process went away while the file was being read.
        _ if source.raw_os_error() == Some(3) => SysmonError::Gone { pid },
        _ => SysmonError::Read { path, source },
    })
}

fn read_ticks(pid: u32) -> Result<u64, SysmonError> {
    let stat = read_proc(pid, "stat")?;
    parse_stat_ticks(&stat).map_err(|what| SysmonError::Parse {
        path: PathBuf::from(format!("/proc/{pid}/stat")),
        what,
    })
}

fn read_rss_kib(pid: u32) -> Result<u64, SysmonError> {
    let status = read_proc(pid, "status")?;
    parse_vmrss_kib(&status).ok_or(SysmonError::Gone { pid })
}

/// Samples `pid` every `every` (at least [`MIN_INTERVAL`]) until `stop` is cancelled or the
/// process is gone, and returns the samples (with the calls up from `live` at each).
///
/// Times are seconds since `run_start`. A process that cannot be read at all gives no samples.
pub fn spawn_sampler(
    pid: u32,
    every: Duration,
    run_start: tokio::time::Instant,
    live: Arc<LiveCounters>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Vec<ResourceSample>> {
    tokio::spawn(async move {
        let mut samples = Vec::new();
        let mut sampler = match ProcSampler::new(pid) {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(%error, "gateway process cannot be sampled");
                return samples;
            }
        };
        let mut interval = tokio::time::interval(every.max(MIN_INTERVAL));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; the sampler's baseline was just taken.
        interval.tick().await;
        while samples.len() < MAX_SAMPLES {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = interval.tick() => {}
            }
            match sampler.sample() {
                Ok((cpu_pct, rss_mib)) => samples.push(ResourceSample {
                    t_s: run_start.elapsed().as_secs_f64(),
                    cpu_pct,
                    rss_mib,
                    live_calls: u32::try_from(live.calls_up.load(Ordering::Relaxed))
                        .unwrap_or(u32::MAX),
                }),
                Err(SysmonError::Gone { .. }) => {
                    tracing::info!(pid, "gateway process gone; sampling stopped");
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "gateway sample failed; sampling stopped");
                    break;
                }
            }
        }
        samples
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (my (odd) proc) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                        150 75 0 0 20 0 9 0 123456 1048576000 2560 18446744073709551615";

    #[test]
    fn stat_ticks_from_the_last_paren() {
        assert_eq!(parse_stat_ticks(STAT), Ok(225));
        assert!(parse_stat_ticks("12 (x) S 1 2").is_err());
        assert!(parse_stat_ticks("no parens").is_err());
        let bad = STAT.replace(" 150 ", " x ");
        assert!(
            parse_stat_ticks(&bad)
                .err()
                .is_some_and(|e| e.contains("field 14"))
        );
    }

    #[test]
    fn vmrss() {
        let status = "Name:\tvoicegw\nVmPeak:\t  9999 kB\nVmRSS:\t   51200 kB\nThreads:\t9\n";
        assert_eq!(parse_vmrss_kib(status), Some(51_200));
        assert_eq!(parse_vmrss_kib("Name:\tzombie\nState:\tZ (zombie)\n"), None);
    }

    #[test]
    fn cpu_arithmetic() {
        assert_eq!(cpu_percent(50, 100.0, Duration::from_secs(1)), 50.0);
        assert_eq!(cpu_percent(300, 100.0, Duration::from_secs(2)), 150.0);
        assert_eq!(cpu_percent(5, 100.0, Duration::ZERO), 0.0);
    }

    #[test]
    fn samples_this_process() {
        let mut sampler = ProcSampler::new(std::process::id()).expect("own /proc");
        let begin = Instant::now();
        let mut x = 0u64;
        while begin.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let (cpu, rss) = sampler.sample().expect("sample");
        assert!(cpu >= 0.0 && cpu.is_finite());
        assert!(rss > 0.0);
    }

    #[test]
    fn missing_process_is_gone() {
        // Pids are below 2^22 on Linux.
        let err = ProcSampler::new(u32::MAX - 1).err();
        assert!(matches!(err, Some(SysmonError::Gone { .. })));
    }

    #[tokio::test]
    async fn sampler_task_stops_when_cancelled() {
        let live = Arc::new(LiveCounters::default());
        live.calls_up.store(7, Ordering::Relaxed);
        let stop = CancellationToken::new();
        let task = spawn_sampler(
            std::process::id(),
            Duration::from_millis(20),
            tokio::time::Instant::now(),
            live,
            stop.clone(),
        );
        tokio::time::sleep(Duration::from_millis(120)).await;
        stop.cancel();
        let samples = task.await.expect("sampler task");
        assert!(!samples.is_empty());
        assert!(samples.iter().all(|s| s.live_calls == 7 && s.rss_mib > 0.0));
        assert!(samples.windows(2).all(|w| w[0].t_s <= w[1].t_s));
    }

    #[tokio::test]
    async fn sampler_of_missing_process_returns_nothing() {
        let task = spawn_sampler(
            u32::MAX - 1,
            Duration::from_millis(20),
            tokio::time::Instant::now(),
            Arc::new(LiveCounters::default()),
            CancellationToken::new(),
        );
        assert!(task.await.expect("sampler task").is_empty());
    }
}
