//! One load test from start to report: the command line, the ramp, the calls, the figures.
//!
//! [`run`] checks the arguments, starts the provider fakes and a local gateway when asked
//! (`--with-fakes`), loads the scenario and pairs its personas, samples the gateway's process,
//! starts call `i` of `N` at `ramp · i / N`, hangs every call up at `ramp + duration`,
//! measures each call's timeline, and writes `report.json` and `report.html`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::caller::{self, CallOptions, CallOutcome, CallPlan};
use super::carrier::CarrierKind;
use super::measure::{self, MeasureConfig};
use super::persona::{self, PersonaDeps, PersonaError, PersonaPair};
use super::progress::Progress;
use super::report::{self, ReportError};
use super::results::{CallEnd, CallMetrics, FakeDelays, LiveCounters, RunInfo, RunReport};
use super::scenario::{self, Scenario, ScenarioError};
use super::sysmon::{self, ProcSampler, SysmonError};
use super::with_fakes::{
    FakeProviders, GatewayOptions, LocalGateway, LogCounts, WithFakesError, count_log,
};
use crate::config::{Config, Overrides};

/// Exotel sample rates the harness can play.
const EXOTEL_RATES: [u32; 3] = [8_000, 16_000, 24_000];

/// How often the gateway's CPU and memory are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// How long calls get to finish after the planned hang-up before they are abandoned.
const HANG_UP_GRACE: Duration = Duration::from_secs(20);

/// The carrier played.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CarrierArg {
    /// Twilio Media Streams (μ-law 8 kHz).
    Twilio,
    /// Exotel Voicebot (16-bit PCM, see `--exotel-sample-rate`).
    Exotel,
}

/// `voicegw loadtest`: many simulated carrier calls against a gateway, with a report.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadtestArgs {
    /// The gateway's stream URL, e.g. `ws://127.0.0.1:8080/stream/twilio` (Exotel credentials
    /// may ride in the userinfo: `ws://KEY:TOKEN@host/stream/exotel`).
    #[arg(long, value_parser = parse_target, required_unless_present = "with_fakes", conflicts_with = "with_fakes")]
    pub target: Option<String>,
    /// The carrier played.
    #[arg(long, value_enum, default_value = "twilio")]
    pub carrier: CarrierArg,
    /// Exotel's sample rate: 8000, 16000 or 24000.
    #[arg(long, default_value_t = 8_000, value_parser = parse_exotel_rate)]
    pub exotel_sample_rate: u32,
    /// Shorthand for `--exotel-sample-rate 16000`.
    #[arg(long)]
    pub slin16: bool,
    /// Audio per Exotel `media` message, ms: 20 (one older Exotel sample) up to 100 (Exotel's
    /// docs), in whole 20 ms frames.
    #[arg(long, default_value_t = 20, value_parser = parse_exotel_chunk_ms)]
    pub exotel_chunk_ms: u32,
    /// Concurrent calls.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub calls: u32,
    /// Time over which the calls start (`30s`, `2m`, `500ms`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub ramp: Duration,
    /// Time every call stays up after the ramp.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// A scenario file (TOML); the built-in conversation when absent.
    #[arg(long, conflicts_with = "barge_in")]
    pub scenario: Option<PathBuf>,
    /// The built-in scenario that interrupts every second answer.
    #[arg(long)]
    pub barge_in: bool,
    /// The gateway's process id: sample its CPU and memory.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Where the reports go (default `./loadtest-report/<UTC time>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Start the provider fakes in this process and a local gateway pointed at them.
    #[arg(long)]
    pub with_fakes: bool,
    /// The speech-to-text fake's endpointing (ms), asked of it by the local gateway
    /// [default: 300].
    #[arg(long)]
    pub fake_stt_ms: Option<u64>,
    /// The chat fake's first-token delay (ms) [default: 200].
    #[arg(long)]
    pub fake_llm_ms: Option<u64>,
    /// The chat fake's delay between tokens (ms) [default: 2].
    #[arg(long)]
    pub fake_llm_token_ms: Option<u64>,
    /// The text-to-speech fake's first-byte delay (ms) [default: 120].
    #[arg(long)]
    pub fake_tts_ms: Option<u64>,
    /// The `voicegw` binary the local gateway runs (default: this one).
    #[arg(long)]
    pub gateway_bin: Option<PathBuf>,
    /// Extra TOML merged over the local gateway's generated config.
    #[arg(long)]
    pub gateway_config: Option<PathBuf>,
    /// The local gateway's greeting, said when each call starts (`""`: none, the caller
    /// speaks first).
    #[arg(long, default_value = DEFAULT_GREETING)]
    pub gateway_greeting: String,
    /// A gateway-style TOML config whose [stt], [llm] and [tts] the personas use (keys from
    /// DEEPGRAM_API_KEY / OPENAI_API_KEY); with `--with-fakes` the fakes by default.
    #[arg(long)]
    pub persona_config: Option<PathBuf>,
    /// Sign each stream's upgrade with X-Twilio-Signature using this token.
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub twilio_auth_token: Option<String>,
    /// No live progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Print the JSON report on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Exit 1 when any call failed or dropped, a turn went unanswered, a barge-in got no
    /// `clear`, or the gateway broke the protocol.
    #[arg(long)]
    pub strict: bool,
}

/// Why a load test could not run.
#[derive(Debug, thiserror::Error)]
pub enum LoadtestError {
    /// The arguments do not make sense together.
    #[error("{0}")]
    Args(String),
    /// The scenario file is invalid.
    #[error("scenario {path}: {source}")]
    Scenario {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: ScenarioError,
    },
    /// The personas cannot be used.
    #[error("personas: {0}")]
    Persona(#[from] PersonaError),
    /// The persona config cannot be loaded.
    #[error("persona config {path}: {detail}")]
    PersonaConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The fakes or the local gateway failed.
    #[error("{0}")]
    WithFakes(#[from] WithFakesError),
    /// The gateway's process cannot be sampled.
    #[error("--pid: {0}")]
    Sysmon(#[from] SysmonError),
    /// The reports cannot be written.
    #[error("reports: {0}")]
    Report(#[from] ReportError),
    /// A directory or file could not be made.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl LoadtestError {
    /// The process exit code: 2 for bad input (arguments, scenario, personas), else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            LoadtestError::Args(_)
            | LoadtestError::Scenario { .. }
            | LoadtestError::Persona(_)
            | LoadtestError::PersonaConfig { .. } => 2,
            _ => 1,
        }
    }
}

/// Parses `500ms`, `30s`, `2m`, `1h` or `1.5s` (a number and a unit; no unit means seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    // The scenario file's parser, plus what a command line may say: a bare number of
    // seconds, `min` for minutes, and up to a week.
    let with_unit = if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit() || c == '.') {
        format!("{text}s")
    } else if let Some(minutes) = text.strip_suffix("min") {
        format!("{minutes}m")
    } else {
        text.to_owned()
    };
    scenario::parse_duration_up_to(&with_unit, MAX_RUN_DURATION)
}

/// The longest `--ramp` or `--duration`.
const MAX_RUN_DURATION: Duration = Duration::from_secs(7 * 86_400);

/// Accepts `ws://` and `wss://` URLs with a host.
fn parse_target(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "ws" | "wss") {
        return Err(format!(
            "{text:?}: the target is a WebSocket URL (ws:// or wss://)"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?} has no host"));
    }
    Ok(text.to_owned())
}

fn parse_exotel_rate(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(rate) if EXOTEL_RATES.contains(&rate) => Ok(rate),
        _ => Err(format!(
            "{text:?}: Exotel streams at 8000, 16000 or 24000 Hz"
        )),
    }
}

fn parse_exotel_chunk_ms(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(ms) if (20..=100).contains(&ms) && ms % 20 == 0 => Ok(ms),
        _ => Err(format!(
            "{text:?}: 20, 40, 60, 80 or 100 (ms of audio per message)"
        )),
    }
}

/// The local gateway's greeting unless `--gateway-greeting` says otherwise: a first bot turn
/// on every call, as real agents greet.
pub const DEFAULT_GREETING: &str = "Hello! How can I help you today?";

/// The carrier the arguments ask for.
pub fn carrier_kind(args: &LoadtestArgs) -> CarrierKind {
    match args.carrier {
        CarrierArg::Twilio => CarrierKind::Twilio,
        CarrierArg::Exotel => CarrierKind::Exotel {
            sample_rate: if args.slin16 {
                16_000
            } else {
                args.exotel_sample_rate
            },
        },
    }
}

/// `twilio`, or `exotel/RATE`.
pub fn carrier_label(carrier: CarrierKind) -> String {
    match carrier {
        CarrierKind::Twilio => "twilio".into(),
        CarrierKind::Exotel { sample_rate } => format!("exotel/{sample_rate}"),
    }
}

/// The stream URL to open: the target, with `sample-rate=RATE` added for Exotel unless the
/// URL already names a rate (as the carrier's stream URL would).
pub fn stream_url(target: &str, carrier: CarrierKind) -> Result<String, String> {
    let CarrierKind::Exotel { sample_rate } = carrier else {
        return Ok(target.to_owned());
    };
    let mut url = reqwest::Url::parse(target).map_err(|e| format!("{target:?}: {e}"))?;
    if url
        .query_pairs()
        .any(|(k, _)| k == "sample-rate" || k == "sample_rate")
    {
        return Ok(target.to_owned());
    }
    url.query_pairs_mut()
        .append_pair("sample-rate", &sample_rate.to_string());
    Ok(url.to_string())
}

/// The checks clap cannot make: flags that only mean something together.
pub fn check_args(args: &LoadtestArgs) -> Result<(), String> {
    if args.target.is_none() && !args.with_fakes {
        return Err("give --target ws://HOST/stream/CARRIER, or --with-fakes".into());
    }
    if args.slin16 && args.carrier != CarrierArg::Exotel {
        return Err("--slin16 is for --carrier exotel".into());
    }
    if args.exotel_chunk_ms != 20 && args.carrier != CarrierArg::Exotel {
        return Err("--exotel-chunk-ms is for --carrier exotel".into());
    }
    if args.exotel_sample_rate != 8_000 && args.carrier != CarrierArg::Exotel {
        return Err("--exotel-sample-rate is for --carrier exotel".into());
    }
    if args.duration.is_zero() {
        return Err("--duration must be above 0".into());
    }
    if !args.with_fakes {
        let fake_flags = [
            ("--fake-stt-ms", args.fake_stt_ms.is_some()),
            ("--fake-llm-ms", args.fake_llm_ms.is_some()),
            ("--fake-llm-token-ms", args.fake_llm_token_ms.is_some()),
            ("--fake-tts-ms", args.fake_tts_ms.is_some()),
            ("--gateway-bin", args.gateway_bin.is_some()),
            ("--gateway-config", args.gateway_config.is_some()),
            (
                "--gateway-greeting",
                args.gateway_greeting != DEFAULT_GREETING,
            ),
        ];
        if let Some((flag, _)) = fake_flags.iter().find(|(_, given)| *given) {
            return Err(format!("{flag} is for --with-fakes runs"));
        }
    }
    Ok(())
}

/// The fakes' delays: the flags given, [`FakeProviders::DEFAULT_DELAYS`] for the rest.
pub fn fake_delays(args: &LoadtestArgs) -> FakeDelays {
    let d = FakeProviders::DEFAULT_DELAYS;
    FakeDelays {
        stt_endpointing_ms: args.fake_stt_ms.unwrap_or(d.stt_endpointing_ms),
        llm_first_token_ms: args.fake_llm_ms.unwrap_or(d.llm_first_token_ms),
        llm_token_ms: args.fake_llm_token_ms.unwrap_or(d.llm_token_ms),
        tts_first_byte_ms: args.fake_tts_ms.unwrap_or(d.tts_first_byte_ms),
    }
}

/// When call `index` of `calls` starts, after the run began: `ramp · index / calls`.
pub fn start_offset(ramp: Duration, index: u32, calls: u32) -> Duration {
    if calls == 0 {
        return Duration::ZERO;
    }
    let nanos = ramp.as_nanos() * u128::from(index) / u128::from(calls);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// The run's measurement windows: the scenario's answer timeout, 2 s for a `clear`, 1 s for
/// an underrun, 500 ms of quiet ending the bot's turn.
pub fn measure_config(scenario: &Scenario) -> MeasureConfig {
    MeasureConfig {
        answer_timeout: scenario.answer_timeout,
        clear_timeout: Duration::from_secs(2),
        underrun_window: Duration::from_secs(1),
        turn_gap: Duration::from_millis(500),
    }
}

/// Whether a strict run fails: calls failed or dropped, turns unanswered, barge-ins missed,
/// or protocol violations.
pub fn has_failures(report: &RunReport) -> bool {
    let s = &report.summary;
    s.failed > 0 || s.dropped > 0 || s.unanswered > 0 || s.barge_missed > 0 || s.violations > 0
}

/// Moves every call's turns and barge-ins into the report's flat lists.
pub fn assemble(
    info: RunInfo,
    summary: super::results::Summary,
    mut calls: Vec<CallMetrics>,
    resources: Vec<super::results::ResourceSample>,
    transcripts_dir: Option<String>,
) -> RunReport {
    let mut turns = Vec::new();
    let mut barge_ins = Vec::new();
    for call in &mut calls {
        turns.append(&mut call.turns);
        barge_ins.append(&mut call.barge_ins);
    }
    RunReport {
        info,
        summary,
        turns,
        barge_ins,
        resources,
        calls,
        transcripts_dir,
    }
}

/// The default report directory: `./loadtest-report/<UTC time>`.
fn default_out_dir() -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    PathBuf::from("loadtest-report").join(stamp)
}

fn create_dir(path: &Path) -> Result<(), LoadtestError> {
    std::fs::create_dir_all(path).map_err(|source| LoadtestError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The scenario the arguments name.
fn load_scenario(args: &LoadtestArgs) -> Result<Scenario, LoadtestError> {
    match &args.scenario {
        Some(path) => scenario::load(path).map_err(|source| LoadtestError::Scenario {
            path: path.clone(),
            source,
        }),
        None if args.barge_in => Ok(scenario::default_barge_in()),
        None => Ok(scenario::default_conversation()),
    }
}

/// The personas' providers: `--persona-config`, else the fakes.
fn persona_deps(
    args: &LoadtestArgs,
    fakes: Option<&FakeProviders>,
    transcripts: PathBuf,
) -> Result<PersonaDeps, LoadtestError> {
    let config = match (&args.persona_config, fakes) {
        (Some(path), _) => {
            let env = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
            let overrides = Overrides {
                deepgram_api_key: env("DEEPGRAM_API_KEY"),
                deepgram_base_url: env("DEEPGRAM_BASE_URL"),
                openai_api_key: env("OPENAI_API_KEY"),
                openai_base_url: env("OPENAI_BASE_URL"),
                openai_model: env("OPENAI_MODEL"),
                ..Overrides::default()
            };
            Config::load(Some(path), &overrides).map_err(|e| LoadtestError::PersonaConfig {
                path: path.clone(),
                detail: e.to_string(),
            })?
        }
        (None, Some(fakes)) => fakes.persona_config(),
        (None, None) => {
            return Err(LoadtestError::Args(
                "the scenario has personas: give --persona-config FILE (their STT, LLM and \
                 TTS) or use --with-fakes"
                    .into(),
            ));
        }
    };
    Ok(PersonaDeps::from_config(&config, Some(transcripts))?)
}

/// The call's outcome when its task did not finish (it panicked or was abandoned).
fn lost_call(index: u32, started_s: f64, reason: String) -> CallMetrics {
    CallMetrics {
        end: CallEnd::Dropped { reason },
        ..CallMetrics::new(index, started_s)
    }
}

/// Runs one load test and prints its summary table (or, with `--json`, the JSON report) on
/// stdout. Returns the report; the caller decides the exit code ([`has_failures`] with
/// `--strict`).
pub async fn run(args: LoadtestArgs) -> Result<RunReport, LoadtestError> {
    check_args(&args).map_err(LoadtestError::Args)?;
    let carrier = carrier_kind(&args);
    let out_dir = args.out.clone().unwrap_or_else(default_out_dir);
    create_dir(&out_dir)?;
    let scenario = Arc::new(load_scenario(&args)?);

    let fakes = if args.with_fakes {
        Some(FakeProviders::start(fake_delays(&args)).await?)
    } else {
        None
    };

    let personas = match &scenario.personas {
        Some(set) => {
            let transcripts = out_dir.join("transcripts");
            create_dir(&transcripts)?;
            let deps = Arc::new(persona_deps(&args, fakes.as_ref(), transcripts.clone())?);
            let pairs = persona::pair(set, usize::try_from(args.calls).unwrap_or(usize::MAX));
            if pairs.is_empty() {
                return Err(LoadtestError::Args(
                    "the scenario's personas pair no customer with an agent".into(),
                ));
            }
            Some((deps, pairs, transcripts))
        }
        None => None,
    };

    let gateway = match &fakes {
        Some(fakes) => {
            let bin = match &args.gateway_bin {
                Some(bin) => bin.clone(),
                None => std::env::current_exe().map_err(|source| LoadtestError::Io {
                    path: PathBuf::from("voicegw"),
                    source,
                })?,
            };
            let options = GatewayOptions {
                bin,
                dir: out_dir.clone(),
                greeting: Some(args.gateway_greeting.clone()).filter(|g| !g.is_empty()),
                extra_config: args.gateway_config.clone(),
            };
            Some(LocalGateway::start(fakes, &options).await?)
        }
        None => None,
    };
    let result = drive(
        &args,
        carrier,
        scenario,
        fakes.as_ref(),
        gateway.as_ref(),
        personas,
        &out_dir,
    )
    .await;
    let log = match gateway {
        Some(gateway) => {
            let path = gateway.log_path().to_path_buf();
            Some((count_log(&gateway.stop().await), path))
        }
        None => None,
    };
    let (report, files) = result?;
    let mut out = if args.json {
        serde_json::to_string_pretty(&report).unwrap_or_default()
    } else {
        report::summary_table(&report)
    };
    if !args.json {
        if let Some((counts, path)) = &log {
            out.push_str(&gateway_log_line(counts, path));
        }
        if let Some(fakes) = &fakes {
            out.push_str(&fakes.served());
            out.push('\n');
        }
    }
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{}", out.trim_end());
    let _ = stdout.flush();
    eprintln!(
        "reports: {} and {}",
        files.json.display(),
        files.html.display()
    );
    Ok(report)
}

/// One line on the local gateway's log.
fn gateway_log_line(counts: &LogCounts, path: &Path) -> String {
    format!(
        "gateway log: {} warnings, {} errors, {} other lines ({})\n",
        counts.warnings,
        counts.errors,
        counts.other,
        path.display()
    )
}

/// Everything between "the gateway is up" and "the reports are written".
async fn drive(
    args: &LoadtestArgs,
    carrier: CarrierKind,
    scenario: Arc<Scenario>,
    fakes: Option<&FakeProviders>,
    gateway: Option<&LocalGateway>,
    personas: Option<(Arc<PersonaDeps>, Vec<PersonaPair>, PathBuf)>,
    out_dir: &Path,
) -> Result<(RunReport, report::ReportFiles), LoadtestError> {
    let target = match (gateway, &args.target) {
        (Some(gateway), _) => gateway.stream_url(carrier),
        (None, Some(target)) => stream_url(target, carrier).map_err(LoadtestError::Args)?,
        (None, None) => {
            return Err(LoadtestError::Args("no --target".into()));
        }
    };
    let live = Arc::new(LiveCounters::default());
    let pid = args.pid.or(gateway.map(LocalGateway::pid));
    let baseline_rss_mib = match pid {
        Some(pid) => {
            let mut sampler = ProcSampler::new(pid)?;
            Some(sampler.sample()?.1)
        }
        None => None,
    };

    let run_start = Instant::now();
    let ramp_end = run_start + args.ramp;
    let hang_up_at = ramp_end + args.duration;
    let stop_sampling = CancellationToken::new();
    let sampler = pid.map(|pid| {
        sysmon::spawn_sampler(
            pid,
            SAMPLE_EVERY,
            run_start,
            Arc::clone(&live),
            stop_sampling.clone(),
        )
    });
    let progress = Progress::start(
        u64::from(args.calls),
        Arc::clone(&live),
        hang_up_at,
        !args.no_progress,
    );

    let mut tasks = Vec::with_capacity(usize::try_from(args.calls).unwrap_or(0));
    for index in 0..args.calls {
        let starts_at = run_start + start_offset(args.ramp, index, args.calls);
        let (parameters, pair) = match &personas {
            Some((_, pairs, _)) => {
                let pair = pairs
                    .get(usize::try_from(index).unwrap_or(0) % pairs.len())
                    .cloned();
                let parameters = pair
                    .as_ref()
                    .map(|p| persona::agent_parameters(&p.agent))
                    .unwrap_or_default();
                (parameters, pair)
            }
            None => (BTreeMap::new(), None),
        };
        let deps = personas.as_ref().map(|(deps, _, _)| Arc::clone(deps));
        let plan_url = target.clone();
        let scenario = Arc::clone(&scenario);
        let live = Arc::clone(&live);
        let token = args.twilio_auth_token.clone();
        let options = CallOptions {
            exotel_chunk_ms: args.exotel_chunk_ms,
            ..CallOptions::default()
        };
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(starts_at).await;
            let persona = match (deps, pair) {
                (Some(deps), Some(pair)) => Some(persona::spawn(deps, pair, index)),
                _ => None,
            };
            caller::run_call_with(
                CallPlan {
                    index,
                    url: plan_url,
                    carrier,
                    scenario,
                    parameters,
                    persona,
                    twilio_auth_token: token,
                    hang_up_at,
                    live,
                },
                options,
            )
            .await
        }));
    }

    let give_up_at = hang_up_at + HANG_UP_GRACE;
    let mut outcomes: Vec<Result<CallOutcome, (u32, String)>> = Vec::with_capacity(tasks.len());
    for (index, mut task) in (0u32..).zip(tasks) {
        match tokio::time::timeout_at(give_up_at, &mut task).await {
            Ok(Ok(outcome)) => outcomes.push(Ok(outcome)),
            Ok(Err(error)) => {
                outcomes.push(Err((index, format!("harness: call task failed: {error}"))))
            }
            Err(_) => {
                task.abort();
                outcomes.push(Err((
                    index,
                    "harness: the call did not end within 20 s of its hang-up".into(),
                )));
            }
        }
    }
    progress.finish();
    stop_sampling.cancel();
    let resources = match sampler {
        Some(task) => task.await.unwrap_or_default(),
        None => Vec::new(),
    };

    let config = measure_config(&scenario);
    let mut calls = Vec::with_capacity(outcomes.len());
    let mut tick_late_ms = Vec::new();
    for outcome in outcomes {
        match outcome {
            Ok(outcome) => {
                let started_s = outcome
                    .started
                    .saturating_duration_since(run_start)
                    .as_secs_f64();
                let mut metrics =
                    measure::analyze(outcome.index, started_s, &outcome.timeline, &config);
                metrics.frames_sent = outcome.frames_sent;
                metrics.marks_echoed = outcome.marks_echoed;
                tick_late_ms.extend_from_slice(&outcome.tick_late_ms);
                calls.push(metrics);
            }
            Err((index, reason)) => {
                let started_s = start_offset(args.ramp, index, args.calls).as_secs_f64();
                calls.push(lost_call(index, started_s, reason));
            }
        }
    }
    let fake_delays = fakes.map(|f| f.delays);
    let summary = measure::summarize(
        &calls,
        &tick_late_ms,
        &resources,
        fake_delays,
        args.ramp.as_secs_f64(),
        baseline_rss_mib,
    );
    let info = RunInfo {
        target,
        carrier: carrier_label(carrier),
        calls: args.calls,
        ramp_s: args.ramp.as_secs_f64(),
        duration_s: args.duration.as_secs_f64(),
        scenario: scenario.name.clone(),
        fake_delays,
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let transcripts_dir = personas.map(|(_, _, dir)| dir.display().to_string());
    let report = assemble(info, summary, calls, resources, transcripts_dir);
    let files = report::write_reports(&report, out_dir)?;
    Ok((report, files))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use proptest::prelude::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadtestArgs,
    }

    fn parse(args: &[&str]) -> Result<LoadtestArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("loadtest").chain(args.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1.2.3s").is_err());
        assert!(parse_duration("9999999h").is_err());
    }

    proptest! {
        #[test]
        fn duration_parser_never_panics(text in "\\PC{0,12}") {
            let _ = parse_duration(&text);
        }

        #[test]
        fn millis_round_trip(ms in 0u64..10_000_000) {
            prop_assert_eq!(parse_duration(&format!("{ms}ms")), Ok(Duration::from_millis(ms)));
        }
    }

    #[test]
    fn ramp_offsets() {
        let ramp = Duration::from_secs(10);
        assert_eq!(start_offset(ramp, 0, 4), Duration::ZERO);
        assert_eq!(start_offset(ramp, 1, 4), Duration::from_millis(2500));
        assert_eq!(start_offset(ramp, 3, 4), Duration::from_millis(7500));
        assert_eq!(start_offset(Duration::ZERO, 3, 4), Duration::ZERO);
        assert_eq!(start_offset(ramp, 0, 0), Duration::ZERO);
    }

    #[test]
    fn exotel_urls_get_their_rate() {
        let exotel = CarrierKind::Exotel {
            sample_rate: 16_000,
        };
        assert_eq!(
            stream_url("ws://127.0.0.1:8080/stream/exotel", exotel).as_deref(),
            Ok("ws://127.0.0.1:8080/stream/exotel?sample-rate=16000")
        );
        assert_eq!(
            stream_url("ws://k:t@127.0.0.1:8080/stream/exotel?a=b", exotel).as_deref(),
            Ok("ws://k:t@127.0.0.1:8080/stream/exotel?a=b&sample-rate=16000")
        );
        assert_eq!(
            stream_url("ws://h/stream/exotel?sample-rate=8000", exotel).as_deref(),
            Ok("ws://h/stream/exotel?sample-rate=8000")
        );
        assert_eq!(
            stream_url("ws://h/stream/twilio", CarrierKind::Twilio).as_deref(),
            Ok("ws://h/stream/twilio")
        );
    }

    #[test]
    fn defaults() {
        let args = parse(&["--target", "ws://127.0.0.1:9/stream/twilio"]).unwrap();
        assert_eq!(args.calls, 10);
        assert_eq!(args.ramp, Duration::from_secs(10));
        assert_eq!(args.duration, Duration::from_secs(60));
        assert_eq!(carrier_kind(&args), CarrierKind::Twilio);
        assert!(!args.with_fakes && !args.strict && !args.json);
        let fakes = parse(&["--with-fakes"]).unwrap();
        assert_eq!(fake_delays(&fakes), FakeProviders::DEFAULT_DELAYS);
        let slow = parse(&["--with-fakes", "--fake-llm-ms", "900", "--fake-tts-ms", "0"]).unwrap();
        assert_eq!(
            fake_delays(&slow),
            FakeDelays {
                stt_endpointing_ms: 300,
                llm_first_token_ms: 900,
                llm_token_ms: 2,
                tts_first_byte_ms: 0,
            }
        );
    }

    #[test]
    fn exotel_rates() {
        let args = parse(&["--with-fakes", "--carrier", "exotel", "--slin16"]).unwrap();
        assert_eq!(
            carrier_kind(&args),
            CarrierKind::Exotel {
                sample_rate: 16_000
            }
        );
        assert_eq!(carrier_label(carrier_kind(&args)), "exotel/16000");
        let args = parse(&[
            "--with-fakes",
            "--carrier",
            "exotel",
            "--exotel-sample-rate",
            "24000",
        ])
        .unwrap();
        assert_eq!(
            carrier_kind(&args),
            CarrierKind::Exotel {
                sample_rate: 24_000
            }
        );
        assert!(parse(&["--with-fakes", "--exotel-sample-rate", "44100"]).is_err());
    }

    #[test]
    fn bad_arguments_are_refused() {
        use clap::error::ErrorKind;
        let kind = |a: &[&str]| parse(a).map(|_| ()).map_err(|e| e.kind());
        assert_eq!(kind(&[]), Err(ErrorKind::MissingRequiredArgument));
        assert_eq!(
            kind(&["--with-fakes", "--calls", "0"]),
            Err(ErrorKind::ValueValidation)
        );
        assert_eq!(
            kind(&["--with-fakes", "--carrier", "vonage"]),
            Err(ErrorKind::InvalidValue)
        );
        assert_eq!(
            kind(&["--target", "http://h/stream/twilio"]),
            Err(ErrorKind::ValueValidation)
        );
        assert_eq!(
            kind(&["--with-fakes", "--ramp", "ten"]),
            Err(ErrorKind::ValueValidation)
        );
        assert_eq!(
            kind(&["--with-fakes", "--target", "ws://h/stream/twilio"]),
            Err(ErrorKind::ArgumentConflict)
        );
        assert_eq!(
            kind(&["--with-fakes", "--barge-in", "--scenario", "x.toml"]),
            Err(ErrorKind::ArgumentConflict)
        );
    }

    #[test]
    fn flags_that_need_each_other() {
        let check = |a: &[&str]| check_args(&parse(a).unwrap());
        assert_eq!(check(&["--with-fakes"]), Ok(()));
        assert_eq!(
            check(&["--target", "ws://h/s", "--fake-llm-ms", "5"]),
            Err("--fake-llm-ms is for --with-fakes runs".to_owned())
        );
        assert_eq!(
            check(&["--target", "ws://h/s", "--gateway-bin", "/bin/x"]),
            Err("--gateway-bin is for --with-fakes runs".to_owned())
        );
        assert_eq!(
            check(&["--with-fakes", "--slin16"]),
            Err("--slin16 is for --carrier exotel".to_owned())
        );
        assert_eq!(
            check(&["--with-fakes", "--exotel-sample-rate", "16000"]),
            Err("--exotel-sample-rate is for --carrier exotel".to_owned())
        );
        assert_eq!(
            check(&["--with-fakes", "--duration", "0s"]),
            Err("--duration must be above 0".to_owned())
        );
    }

    #[test]
    fn error_exit_codes() {
        assert_eq!(LoadtestError::Args("x".into()).exit_code(), 2);
        assert_eq!(
            LoadtestError::Io {
                path: PathBuf::from("x"),
                source: std::io::Error::other("y"),
            }
            .exit_code(),
            1
        );
    }

    fn metrics(call: u32, turns: u32) -> CallMetrics {
        let mut m = lost_call(call, 0.0, String::new());
        m.end = CallEnd::Completed;
        m.turns = (0..turns)
            .map(|turn| super::super::results::TurnSample {
                call,
                turn,
                kind: super::super::results::TurnKind::Speech,
                at_s: f64::from(turn),
                response_ms: Some(700.0),
                voiced_ms: Some(720.0),
                overlapped: false,
                unanswered: false,
            })
            .collect();
        m
    }

    #[test]
    fn assemble_moves_turns_out_of_calls() {
        let info = RunInfo {
            target: "ws://h".into(),
            carrier: "twilio".into(),
            calls: 2,
            ramp_s: 1.0,
            duration_s: 2.0,
            scenario: "s".into(),
            fake_delays: None,
            started_at: "2026-01-01T00:00:00Z".into(),
            version: "0".into(),
        };
        let report = assemble(
            info,
            super::super::results::Summary::default(),
            vec![metrics(0, 2), metrics(1, 3)],
            Vec::new(),
            None,
        );
        assert_eq!(report.turns.len(), 5);
        assert_eq!(
            report
                .turns
                .iter()
                .map(|t| (t.call, t.turn))
                .collect::<Vec<_>>(),
            vec![(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
        );
        assert!(report.calls.iter().all(|c| c.turns.is_empty()));
        assert_eq!(report.calls.len(), 2);
    }

    #[test]
    fn strict_failures() {
        let info = RunInfo {
            target: "ws://h".into(),
            carrier: "twilio".into(),
            calls: 1,
            ramp_s: 0.0,
            duration_s: 1.0,
            scenario: "s".into(),
            fake_delays: None,
            started_at: String::new(),
            version: String::new(),
        };
        let mut report = assemble(
            info,
            super::super::results::Summary::default(),
            Vec::new(),
            Vec::new(),
            None,
        );
        assert!(!has_failures(&report));
        report.summary.unanswered = 1;
        assert!(has_failures(&report));
        report.summary.unanswered = 0;
        report.summary.violations = 2;
        assert!(has_failures(&report));
    }
}
