//! The `voicegw` command line.

mod admin_cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use voicegw::config::{Config, Overrides};
use voicegw::loadtest::run::LoadtestArgs;
use voicegw::metrics::Metrics;
use voicegw::pipeline;
use voicegw::script::cache::PromptCache;
use voicegw::script::fixture_voice::{FIXTURE_VOICE, FixtureVoice};
use voicegw::script::loader;
use voicegw::tts::TtsProvider;

/// voicegw: a real-time voice gateway for telephone calls.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Log format: `text` or `json`.
    #[arg(
        long,
        env = "VOICEGW_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

// Parsed once at start-up, so the size of the `serve` variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway: carrier media streams on /stream/twilio and /stream/exotel.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "VOICEGW_LISTEN")]
        listen: Option<SocketAddr>,
        /// Agent for streams that name no known call (`echo`).
        #[arg(long, env = "VOICEGW_AGENT")]
        agent: Option<String>,
        /// A TOML config file (see README); flags and VOICEGW_* variables override it.
        #[arg(long, env = "VOICEGW_CONFIG")]
        config: Option<PathBuf>,
        /// Twilio auth token: require a valid X-Twilio-Signature on /stream/twilio (and the REST
        /// password with --twilio-account-sid).
        #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
        twilio_auth_token: Option<String>,
        /// KEY:TOKEN: require these Basic credentials on /stream/exotel.
        #[arg(long, env = "VOICEGW_EXOTEL_CREDENTIALS", hide_env_values = true)]
        exotel_credentials: Option<String>,
        /// The carriers' REST accounts.
        #[command(flatten)]
        carriers: CarrierArgs,
        /// The base URL carriers use to reach the gateway (for signature checks behind a proxy).
        #[arg(long, env = "VOICEGW_PUBLIC_URL")]
        public_url: Option<String>,
        /// A SUPERADMIN API key secret (`vgw_…`) to store at start-up.
        #[arg(long, env = "VOICEGW_ADMIN_KEY", hide_env_values = true)]
        admin_key: Option<String>,
        /// `redis://…`: the dialer's CPS limits shared by every instance.
        #[arg(long, env = "VOICEGW_REDIS_URL", hide_env_values = true)]
        redis_url: Option<String>,
        /// The database.
        #[command(flatten)]
        store: StoreArgs,
        /// Provider keys and endpoints.
        #[command(flatten)]
        providers: ProviderArgs,
    },
    /// Run only the outbound dialer (campaign jobs from the store's queue) until Ctrl-C or
    /// SIGTERM; calls it places are served by `serve` instances on the same store.
    Worker {
        /// A TOML config file (see README); flags and VOICEGW_* variables override it.
        #[arg(long, env = "VOICEGW_CONFIG")]
        config: Option<PathBuf>,
        /// Twilio auth token (the REST password with --twilio-account-sid).
        #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
        twilio_auth_token: Option<String>,
        /// The carriers' REST accounts.
        #[command(flatten)]
        carriers: CarrierArgs,
        /// The base URL carriers use to reach the gateways serving the calls (required).
        #[arg(long, env = "VOICEGW_PUBLIC_URL")]
        public_url: Option<String>,
        /// `redis://…`: CPS limits shared by every instance.
        #[arg(long, env = "VOICEGW_REDIS_URL", hide_env_values = true)]
        redis_url: Option<String>,
        /// The database.
        #[command(flatten)]
        store: StoreArgs,
        /// Provider keys and endpoints.
        #[command(flatten)]
        providers: ProviderArgs,
    },
    /// Destiny-Script tools (see docs/script.md).
    Script {
        #[command(subcommand)]
        command: ScriptCommand,
    },
    /// Tenants in the store: create, list.
    Tenants {
        #[command(subcommand)]
        command: admin_cli::TenantsCommand,
    },
    /// API keys in the store: create (prints the secret once), list, revoke.
    Keys {
        #[command(subcommand)]
        command: admin_cli::KeysCommand,
    },
    /// Tenants' phone numbers in the store: add, list.
    Numbers {
        #[command(subcommand)]
        command: admin_cli::NumbersCommand,
    },
    /// Many simulated carrier calls against a gateway, with latency reports (docs/loadtest.md).
    Loadtest(LoadtestArgs),
}

// Parsed once at start-up: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum ScriptCommand {
    /// Check a script: print its errors and warnings as FILE:line:col, then (when it has no
    /// errors) a summary of the flow. Exit code 0 when it loads, 1 when it has errors.
    Check {
        /// The script file.
        file: PathBuf,
        /// Print the parsed flow as JSON instead of the summary.
        #[arg(long)]
        json: bool,
    },
    /// Synthesize every prompt of a script that has no variables into the prompt cache
    /// (only those not cached yet), with the configured text-to-speech. Prints each prompt and
    /// the totals; exit code 1 when any failed, 2 when the script or config cannot be used.
    Prime {
        /// The script file.
        file: PathBuf,
        /// The prompt cache folder (default: `[script] cache_dir`).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// The synthesizer voice (default: `[script] voice`, else the script's `@voice`).
        #[arg(long, conflicts_with = "fixtures")]
        voice: Option<String>,
        /// Use the recorded prompts (`[script] recorded_prompts`) instead of a synthesizer.
        #[arg(long)]
        fixtures: bool,
        /// A TOML config file; flags and environment variables override it.
        #[arg(long, env = "VOICEGW_CONFIG")]
        config: Option<PathBuf>,
        /// Provider keys and endpoints.
        #[command(flatten)]
        providers: ProviderArgs,
    },
}

/// The carriers' REST accounts, shared by the commands that place calls.
#[derive(Debug, Args)]
struct CarrierArgs {
    /// Twilio account SID: with the auth token, calls, transfers and texts through Twilio.
    #[arg(long, env = "TWILIO_ACCOUNT_SID")]
    twilio_account_sid: Option<String>,
    /// Twilio REST API base URL.
    #[arg(long, env = "TWILIO_BASE_URL")]
    twilio_base_url: Option<String>,
    /// Exotel account SID: with the API key and token, outbound Connect Voice AI calls.
    #[arg(long, env = "EXOTEL_ACCOUNT_SID")]
    exotel_account_sid: Option<String>,
    /// Exotel API key (Basic auth user).
    #[arg(long, env = "EXOTEL_API_KEY")]
    exotel_api_key: Option<String>,
    /// Exotel API token (Basic auth password).
    #[arg(long, env = "EXOTEL_API_TOKEN", hide_env_values = true)]
    exotel_api_token: Option<String>,
    /// Exotel REST API base URL (the account's cluster).
    #[arg(long, env = "EXOTEL_BASE_URL")]
    exotel_base_url: Option<String>,
    /// The ExoPhone outbound Exotel calls show.
    #[arg(long, env = "EXOTEL_CALLER_ID")]
    exotel_caller_id: Option<String>,
}

impl CarrierArgs {
    /// These values over `base`.
    fn over(self, base: Overrides) -> Overrides {
        Overrides {
            twilio_account_sid: self.twilio_account_sid,
            twilio_base_url: self.twilio_base_url,
            exotel_account_sid: self.exotel_account_sid,
            exotel_api_key: self.exotel_api_key,
            exotel_api_token: self.exotel_api_token,
            exotel_base_url: self.exotel_base_url,
            exotel_caller_id: self.exotel_caller_id,
            ..base
        }
    }
}

/// Loads the config (exit code 2 when it is invalid) and a multi-threaded runtime, and runs
/// `run` on it to the end.
fn run_loaded<F, Fut, E>(file: Option<&std::path::Path>, overrides: &Overrides, run: F) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let config = match Config::load(file, overrides) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("voicegw: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("voicegw: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("voicegw: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The database, shared by the commands that use the store.
#[derive(Debug, Args)]
struct StoreArgs {
    /// `sqlite://PATH` or `postgres://…` (default: `[store] url`, else sqlite://data/voicegw.db).
    #[arg(long, env = "VOICEGW_DATABASE_URL")]
    database_url: Option<String>,
}

/// Provider keys and endpoints, shared by the commands that reach providers.
#[derive(Debug, Args)]
struct ProviderArgs {
    /// Deepgram API key (speech-to-text, and Aura text-to-speech).
    #[arg(long, env = "DEEPGRAM_API_KEY", hide_env_values = true)]
    deepgram_api_key: Option<String>,
    /// Deepgram base URL (self-hosted or a local test server).
    #[arg(long, env = "DEEPGRAM_BASE_URL")]
    deepgram_base_url: Option<String>,
    /// OpenAI (or compatible) API key; with it the default agent is `llm`.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    openai_api_key: Option<String>,
    /// OpenAI-compatible base URL, including `/v1`.
    #[arg(long, env = "OPENAI_BASE_URL")]
    openai_base_url: Option<String>,
    /// Chat model name.
    #[arg(long, env = "OPENAI_MODEL")]
    openai_model: Option<String>,
    /// ElevenLabs API key (with `--tts-provider elevenlabs`).
    #[arg(long, env = "ELEVENLABS_API_KEY", hide_env_values = true)]
    elevenlabs_api_key: Option<String>,
    /// ElevenLabs base URL.
    #[arg(long, env = "ELEVENLABS_BASE_URL")]
    elevenlabs_base_url: Option<String>,
    /// Text-to-speech provider: deepgram, elevenlabs or openai.
    #[arg(long, env = "VOICEGW_TTS_PROVIDER")]
    tts_provider: Option<String>,
}

impl ProviderArgs {
    /// These values as config overrides.
    fn overrides(self) -> Overrides {
        Overrides {
            deepgram_api_key: self.deepgram_api_key,
            deepgram_base_url: self.deepgram_base_url,
            openai_api_key: self.openai_api_key,
            openai_base_url: self.openai_base_url,
            openai_model: self.openai_model,
            elevenlabs_api_key: self.elevenlabs_api_key,
            elevenlabs_base_url: self.elevenlabs_base_url,
            tts_provider: self.tts_provider,
            ..Overrides::default()
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// What `voicegw script prime` was asked.
struct PrimeArgs {
    file: PathBuf,
    cache_dir: Option<PathBuf>,
    voice: Option<String>,
    fixtures: bool,
    config: Option<PathBuf>,
    overrides: Overrides,
}

/// `voicegw script prime FILE`: exit 0 when every prompt is cached, 1 when any failed, 2 when
/// the config, the script or the synthesizer cannot be used.
fn script_prime(args: PrimeArgs) -> ExitCode {
    let fail = |message: String| {
        eprintln!("voicegw: {message}");
        ExitCode::from(2)
    };
    let config = match Config::load(args.config.as_deref(), &args.overrides) {
        Ok(config) => config,
        Err(error) => return fail(error.to_string()),
    };
    let script = match loader::read_script(&args.file) {
        Ok(script) => script,
        Err(error) => return fail(error.to_string()),
    };
    for warning in script.warnings() {
        eprintln!("warning: {warning}");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return fail(format!("cannot start the runtime: {error}")),
    };
    runtime.block_on(async {
        let (provider, voice): (Arc<dyn TtsProvider>, String) = if args.fixtures {
            match FixtureVoice::load(&config.script.recorded_prompts) {
                Ok(recorded) => (Arc::new(recorded), FIXTURE_VOICE.to_owned()),
                Err(error) => return fail(error.to_string()),
            }
        } else {
            let metrics = match Metrics::new() {
                Ok(metrics) => metrics,
                Err(error) => return fail(format!("metrics: {error}")),
            };
            let wanted = args.voice.clone().or_else(|| {
                pipeline::chosen_voice(&config, script.parsed.flow.settings.voice.as_deref())
            });
            match pipeline::script_synth(&config, &metrics, wanted.as_deref()) {
                Ok(Some(voice)) => (voice.provider(), voice.key().to_owned()),
                Ok(None) => {
                    return fail(format!(
                        "no text-to-speech key for `{}`: set DEEPGRAM_API_KEY (or the key of --tts-provider), or use --fixtures",
                        config.tts.provider
                    ));
                }
                Err(error) => return fail(error.to_string()),
            }
        };
        let cache = PromptCache::new(args.cache_dir.unwrap_or(config.script.cache_dir.clone()));
        println!(
            "priming {} (script {}, voice {voice}) into {}",
            script.path.display(),
            script.hash,
            cache.root().display()
        );
        match cache
            .prime(&script.parsed.flow, &script.hash, provider.as_ref(), &voice)
            .await
        {
            Ok(report) => {
                println!("{report}");
                if report.complete() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(error) => fail(error.to_string()),
        }
    })
}

/// `voicegw script check FILE [--json]`.
fn script_check(file: &std::path::Path, json: bool) -> ExitCode {
    let source = match std::fs::read_to_string(file) {
        Ok(source) => source,
        Err(error) => {
            eprintln!("voicegw: cannot read {}: {error}", file.display());
            return ExitCode::from(2);
        }
    };
    let output = voicegw::script::check::check(&file.display().to_string(), &source, json);
    for line in &output.diagnostics {
        eprintln!("{line}");
    }
    print!("{}", output.report);
    if output.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Runs `voicegw loadtest`: exit 0 with the report printed; with `--strict`, 1 when calls
/// failed or dropped, turns went unanswered, barge-ins got no `clear` or the gateway broke
/// the protocol; 2 for bad input; 1 when the run itself could not be made.
fn loadtest(args: LoadtestArgs) -> ExitCode {
    let strict = args.strict;
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("voicegw: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(voicegw::loadtest::run::run(args)) {
        Ok(report) if strict && voicegw::loadtest::run::has_failures(&report) => {
            eprintln!("voicegw loadtest: failures in the run (--strict)");
            ExitCode::FAILURE
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("voicegw loadtest: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

fn main() -> ExitCode {
    // deepgram's TLS sockets need one process-wide rustls crypto provider.
    let _ = deepgram::rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Tenants { command } => admin_cli::tenants(command),
        Command::Keys { command } => admin_cli::keys(command),
        Command::Numbers { command } => admin_cli::numbers(command),
        Command::Loadtest(args) => loadtest(args),
        Command::Script {
            command:
                ScriptCommand::Prime {
                    file,
                    cache_dir,
                    voice,
                    fixtures,
                    config,
                    providers,
                },
        } => script_prime(PrimeArgs {
            file,
            cache_dir,
            voice,
            fixtures,
            config,
            overrides: providers.overrides(),
        }),
        Command::Script {
            command: ScriptCommand::Check { file, json },
        } => script_check(&file, json),
        Command::Worker {
            config,
            twilio_auth_token,
            carriers,
            public_url,
            redis_url,
            store,
            providers,
        } => {
            let overrides = carriers.over(Overrides {
                twilio_auth_token,
                public_url,
                redis_url,
                database_url: store.database_url,
                ..providers.overrides()
            });
            run_loaded(
                config.as_deref(),
                &overrides,
                voicegw::dialer::run::run_worker,
            )
        }
        Command::Serve {
            listen,
            agent,
            config,
            twilio_auth_token,
            exotel_credentials,
            carriers,
            public_url,
            admin_key,
            redis_url,
            store,
            providers,
        } => {
            let overrides = carriers.over(Overrides {
                redis_url,
                listen,
                agent,
                twilio_auth_token,
                exotel_credentials,
                public_url,
                admin_key,
                database_url: store.database_url,
                ..providers.overrides()
            });
            run_loaded(config.as_deref(), &overrides, voicegw::server::serve)
        }
    }
}
