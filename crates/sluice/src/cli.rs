//! The command line as clap reads it: every command, subcommand, flag and its help text. Nothing here runs.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sluice_store::Role;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Progressive delivery in one binary: serve flags, ramp them, roll back on SLOs"
)]
pub struct Cli {
    /// The Sluice server the CLI talks to.
    #[arg(long, global = true, env = "SLUICE_SERVER", default_value = "http://127.0.0.1:4242")]
    pub server: String,
    /// API token (`sluice serve` prints the admin token on first start).
    #[arg(long, global = true, env = "SLUICE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The environment a command acts in (`staging`, `production`); needed only when the server has
    /// several and the token is not limited to one.
    #[arg(long, global = true, env = "SLUICE_ENV")]
    pub env: Option<String>,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// See Sluice work in about a minute: a server on a temporary store, a synthetic service reporting its
    /// requests, a good canary promoted to 100% and a bad one rolled back on the evidence.
    Demo(DemoArgs),
    /// Run the server: OFREP, the Unleash client API, the admin API and the rollouts, on an embedded SQLite file
    /// or, for several replicas, on PostgreSQL (`--database postgres://…`).
    Serve(ServeArgs),
    /// This server replica: which replica leads the controller, and whether this one is caught up.
    Status,
    /// Work on a store directly, without a server.
    #[command(subcommand)]
    Store(StoreCmd),
    /// Manage flags.
    #[command(subcommand)]
    Flag(FlagCmd),
    /// Manage segments (named, reusable constraint lists).
    #[command(subcommand)]
    Segment(SegmentCmd),
    /// Manage API tokens (admin).
    #[command(subcommand)]
    Token(TokenCmd),
    /// Manage environments (staging, production): one server, a flag's state per environment.
    #[command(subcommand)]
    Env(EnvCmd),
    /// Read and check the audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Import flags, all or nothing.
    #[command(subcommand)]
    Import(ImportCmd),
    /// Rollout plans.
    #[command(subcommand)]
    Plan(PlanCmd),
    /// Run and steer rollouts.
    #[command(subcommand)]
    Rollout(RolloutCmd),
    /// Golden suites of HTTP requests: record each answer, verify against the recorded ones, or test the
    /// expectations. Runs here, without a server.
    #[command(subcommand)]
    Probe(ProbeCmd),
    /// A plan in the tools on-call already uses: Prometheus rules or a Grafana dashboard. Runs here,
    /// without a server.
    #[command(subcommand)]
    Export(ExportCmd),
    /// The post-rollout review: per phase its duration, each gate and trigger over time, the decisions
    /// that mattered, incidents, approvals, actions and the audit excerpt (Markdown or one HTML file).
    Report {
        /// The rollout's id (or a unique prefix of it).
        rollout: String,
        /// `md` reads well in a code review; `html` is one self-contained file with charts.
        #[arg(long, value_enum, default_value = "md")]
        format: ReportFormat,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run a plan in virtual time and print every decision it makes: against a recorded timeline, or
    /// against real history in Prometheus ("would this plan have caught last Tuesday's incident?").
    #[command(
        after_help = "Examples:\n  sluice simulate plan.yaml --metrics incident.csv\n  sluice simulate plan.yaml --prometheus http://prometheus:9090 --from 2026-11-17T14:00:00Z --to 2026-11-17T20:00:00Z"
    )]
    Simulate {
        /// The plan.
        plan: PathBuf,
        /// CSV of `at,name,value`: check values over time, and `approve:ITEM`, `signal:NAME`, `decide`,
        /// `promote`, `abort` rows for what people and alerts did. With `--prometheus`, it supplies the
        /// checks of other sources (times from `--from`).
        #[arg(long, required_unless_present = "prometheus")]
        metrics: Option<PathBuf>,
        /// Replay the plan's Prometheus checks on this Prometheus' history (range queries) instead of the
        /// plan's `analysis.prometheus.url`; its credentials still apply.
        #[arg(long, requires_all = ["from", "to"])]
        prometheus: Option<String>,
        /// Start of the replayed history: RFC 3339 (`2026-11-17T14:00:00Z`), Unix seconds, or `now-6h`.
        #[arg(long, requires = "prometheus")]
        from: Option<String>,
        /// End of the replayed history, as `--from`.
        #[arg(long, requires = "prometheus")]
        to: Option<String>,
        /// Print every check at every tick, not only when its outcome changes.
        #[arg(long)]
        verbose: bool,
    },
}

/// What `sluice report` writes.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// Markdown.
    Md,
    /// One self-contained HTML file.
    Html,
}

#[derive(Subcommand)]
pub enum ExportCmd {
    /// Recording rules for the plan's Prometheus checks and alerting rules for its Prometheus triggers
    /// (YAML; check with `promtool check rules`). Notes on stderr name what is not exported.
    PrometheusRules {
        /// The plan.
        plan: PathBuf,
        /// Write here instead of stdout.
        #[arg(long, short = 'f')]
        out: Option<PathBuf>,
    },
    /// A Grafana dashboard (JSON): a panel per gate and trigger with its threshold drawn, and the
    /// rollout's percentage.
    Grafana {
        /// The plan.
        plan: PathBuf,
        /// Write here instead of stdout.
        #[arg(long, short = 'f')]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum ProbeCmd {
    /// Send every request and store each answer as a golden file in SUITE.golden/ beside the suite. Records
    /// nothing unless every answer meets its expectations.
    Record(ProbeArgs),
    /// Send every request and compare each answer with its golden file (ignored fields skipped), and with
    /// its expectations; exits non-zero on any difference.
    Verify(ProbeArgs),
    /// Send every request and check each answer against its expectations only; exits non-zero on a failure.
    Test(ProbeArgs),
}

#[derive(Args)]
pub struct ProbeArgs {
    /// The suite (YAML: `vars`, `ignore`, `timeout`, `requests: [{name, url, method, headers, body,
    /// expect, ignore}]`).
    pub suite: PathBuf,
    /// Only the request of this name (repeatable).
    #[arg(long)]
    pub only: Vec<String>,
    /// Where `secret_file:` headers are read from.
    #[arg(long)]
    pub secrets_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum RolloutCmd {
    /// Check a plan against the server's flags and start it.
    Start { plan: PathBuf },
    /// Every rollout.
    List,
    /// One rollout: phase, percentage, hold, approvals, history.
    Status { id: String },
    /// Follow a rollout until it ends (Ctrl-C to stop watching).
    Watch {
        id: String,
        /// Seconds between redraws for the hold's countdown; the rollout's own events (ticks, transitions)
        /// on the change stream redraw at once.
        #[arg(long, default_value_t = 2)]
        every: u64,
    },
    /// Every tick's decisions: each gate and trigger with value, threshold, outcome.
    Decisions {
        id: String,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Pause (triggers stay armed).
    Pause {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume a paused rollout.
    Resume {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Skip the rest of the current hold (gates and approvals still apply).
    Promote {
        id: String,
        #[arg(long, required = true)]
        reason: String,
    },
    /// Roll back now: to the start (the flag's ramp as before the rollout, the plan's rollback
    /// actions), or with `--to previous-phase` one phase back, paused for a person.
    Rollback {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        /// `start` (the default, whatever the plan's `rollback.to`) or `previous-phase`.
        #[arg(long, value_parser = ["start", "previous-phase"])]
        to: Option<String>,
    },
    /// End the rollout where it is.
    Abort {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Sign a go/no-go item of the current phase.
    Approve { id: String, item: String },
    /// Say what happened to an action that waits for a person — one cut off by a restart while it ran, or
    /// one that failed for good: --ran (it did run: do not run it again), --retry (run it now) or --failed
    /// (it failed: accept that). The rest of the rollout's pending effects then go on.
    Settle {
        id: String,
        /// Why (audited).
        #[arg(long)]
        reason: Option<String>,
        /// It ran and succeeded: do not run it again; the rollout goes on.
        #[arg(long, group = "outcome", required = true)]
        ran: bool,
        /// It did not run: run it now.
        #[arg(long, group = "outcome")]
        retry: bool,
        /// It ran and failed: a phase hook's failure steps the rollout back and pauses it, as if seen.
        #[arg(long, group = "outcome")]
        failed: bool,
    },
    /// Send the rollout's notifications that were given up (a permanent failure such as a 404, or too many
    /// failed attempts) again, once the receiver is fixed.
    Redeliver {
        id: String,
        /// Why (audited).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Fire a trigger by hand: --hard rolls back now, --soft pauses and asks.
    Signal {
        id: String,
        name: String,
        #[arg(long, conflicts_with = "soft", required_unless_present = "soft")]
        hard: bool,
        #[arg(long)]
        soft: bool,
        /// Why (required): it goes to the audit log and the notifications.
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
pub enum PlanCmd {
    /// Check plans: every problem with file, line, column and key. Exit 1 when one is invalid.
    ///
    /// The flags, variants and segments a plan names are checked against the server's (it needs --server
    /// and --token), against a flag file with --catalog FILE, or not at all with --offline: the plan alone,
    /// as a CI lint without a server runs it. A source, action or notifier this build of Sluice lacks is a
    /// note: the plan is valid but cannot start on this server.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Check flags, variants and segments against this flag file (YAML or JSON) instead of the server.
        #[arg(long)]
        catalog: Option<PathBuf>,
        /// Check the plan alone, without the server: its own rules and plug-ins, not its flags, variants
        /// and segments.
        #[arg(long, conflicts_with = "catalog")]
        offline: bool,
    },
}

#[derive(Args)]
pub struct DemoArgs {
    /// Keep serving after the rollouts end (Ctrl-C to stop), to look around with the CLI.
    #[arg(long)]
    pub keep_running: bool,
    /// Address to listen on (a free port by default).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
}

#[derive(Subcommand)]
pub enum StoreCmd {
    /// Copy a whole installation (flags, segments, tokens, rollouts, decisions, the audit log) into an empty
    /// store, e.g. from SQLite to PostgreSQL; the audit chain is verified on arrival. Stop the servers first.
    Copy {
        /// The store to copy: `sqlite:PATH` (the file, e.g. `sqlite:sluice-data/sluice.db`) or `postgres://…`.
        #[arg(long)]
        from: String,
        /// The empty store to copy into: `postgres://user@host:port/db` or `sqlite:PATH`.
        #[arg(long)]
        to: String,
    },
}

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SLUICE_LISTEN", default_value = "127.0.0.1:4242")]
    pub listen: SocketAddr,
    /// Folder of the SQLite database, created on first start (when no `--database` is given).
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "sluice-data")]
    pub data_dir: PathBuf,
    /// The database: `postgres://user:password@host:port/db` for several replicas on one PostgreSQL, or
    /// `sqlite:PATH`. Default: the SQLite file in `--data-dir`.
    #[arg(long, env = "SLUICE_DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
    /// This replica's name, unique among the replicas on one database (default: host name and port).
    #[arg(long, env = "SLUICE_REPLICA_NAME")]
    pub replica_name: Option<String>,
    /// Where the other replicas reach this one (`http://10.0.0.5:4242`): rollout commands sent to a replica
    /// that does not lead are forwarded to the leader there. Default: `http://` and `--listen`.
    #[arg(long, env = "SLUICE_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// How long the controller lease lasts without renewal (renewed every third of it): a replica that
    /// dies is replaced within this time.
    #[arg(long, default_value = "15s", value_parser = lease_time)]
    pub lease: std::time::Duration,
    /// Serve OFREP and the Unleash client API without a token (local use only).
    #[arg(long)]
    pub anonymous_evaluation: bool,
    /// Most evaluation requests per second per token; beyond it, 429 with Retry-After.
    #[arg(long)]
    pub rate_limit: Option<u32>,
    /// How log lines are written to stderr: text for people, json (one object a line) for a log
    /// collector. Which lines: SLUICE_LOG, else RUST_LOG (e.g. `debug`, `sluice::http=warn,info`),
    /// else `info`.
    #[arg(long, env = "SLUICE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// How long every tick's decisions are kept (`30m`, `24h`, `7d`); after that only the decisions whose
    /// outcome changed stay, so a two-week bake does not keep 200k rows per rollout.
    #[arg(long, env = "SLUICE_KEEP_DECISIONS", default_value = "7d")]
    pub keep_decisions: sluice_plan::Dur,
    /// A program operators may start plans with (exec actions and hooks, command checks), e.g.
    /// `--allow-exec kubectl`; repeat for more. Plans running other programs are started by admins.
    #[arg(long = "allow-exec", value_name = "PROGRAM")]
    pub allow_exec: Vec<String>,
    /// Attempts at a notification that keeps failing transiently (a chat outage, 5xx, timeouts) before it
    /// is given up and shown on its rollout until someone runs `sluice rollout redeliver`. A permanent
    /// failure (a 404, a bad URL) is given up at the first attempt.
    #[arg(long, env = "SLUICE_DELIVERY_ATTEMPTS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub delivery_attempts: u32,
    /// How long after it was queued a notification that keeps failing transiently is given up (`24h`).
    #[arg(long, env = "SLUICE_DELIVERY_GIVE_UP", default_value = "24h")]
    pub delivery_give_up: sluice_plan::Dur,
    /// Folder of the secret files plans may name (`env: {X: {secret_file: NAME}}`); besides these, plans
    /// read only environment variables named SLUICE_SECRET_*.
    #[arg(long, env = "SLUICE_SECRETS_DIR")]
    pub secrets_dir: Option<PathBuf>,
    /// This server's address as people reach it (`https://sluice.example.com`): Slack messages and
    /// Alertmanager alerts link to the rollout's page there.
    #[arg(long, env = "SLUICE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// First wait before a failed webhook action is retried (doubled on each retry, with jitter).
    #[arg(long, default_value = "1s", value_parser = humantime_like)]
    pub retry_backoff: std::time::Duration,
    /// On SIGTERM or SIGINT: how long requests under way may take to finish before their connections are
    /// closed. Change streams end at once (their clients reconnect); metrics are saved and the lease let
    /// go after.
    #[arg(long, env = "SLUICE_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = humantime_like)]
    pub shutdown_timeout: std::time::Duration,
    /// The longest a connection may take to send a request's headers, counted from when the server waits
    /// for them (so also the longest a kept-alive connection may sit idle between requests).
    #[arg(long, env = "SLUICE_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime_like)]
    pub header_read_timeout: std::time::Duration,
    /// A connection with no bytes moving either way for this long is closed.
    #[arg(long, env = "SLUICE_IDLE_TIMEOUT", default_value = "120s", value_parser = humantime_like)]
    pub idle_timeout: std::time::Duration,
    /// Open connections at most (per replica); one more is answered 503 and closed.
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
    /// Open change streams (/api/v1/stream, and OFREP event streams with a token) per token, per replica.
    #[arg(long, env = "SLUICE_MAX_STREAMS_PER_TOKEN", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_streams_per_token: u32,
    /// Open OFREP event streams without a token per client address, per replica.
    #[arg(long, env = "SLUICE_MAX_ANONYMOUS_STREAMS", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_anonymous_streams: u32,
    /// Failed dashboard logins per client address per minute (per replica); past it, 429 with Retry-After.
    #[arg(long, env = "SLUICE_FAILED_LOGINS_PER_MINUTE", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub failed_logins_per_minute: u32,
    /// Writes to the admin API per token per minute (per replica); past it, 429 with Retry-After.
    #[arg(long, env = "SLUICE_CHANGES_PER_MINUTE", default_value_t = 600, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub changes_per_minute: u32,
    /// A proxy (an address or a CIDR, e.g. 10.0.0.0/8) whose X-Forwarded-For names the client, for the
    /// per-address limits; repeat for more. Without it, the client is the TCP peer.
    #[arg(long = "trusted-proxy", value_name = "CIDR", value_parser = parse_net)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// `10.0.0.0/8`, or one address (`10.0.0.7`, `::1`).
fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{s}` is not an address or a CIDR block (e.g. 10.0.0.7 or 10.0.0.0/8)"))
}

/// A lease time: a second at least, so that renewals (every third of it) do not hammer the database.
fn lease_time(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime_like(s)?;
    if d < std::time::Duration::from_secs(1) {
        return Err(format!("`{s}` is too short for a lease: give 1s or more (15s by default)"));
    }
    Ok(d)
}

/// `500ms`, `2s`, `1m`: a short duration.
fn humantime_like(s: &str) -> Result<std::time::Duration, String> {
    match s.strip_suffix("ms").map(str::parse::<u64>) {
        Some(Ok(ms)) => Ok(std::time::Duration::from_millis(ms)),
        Some(Err(_)) => Err(format!("`{s}` is not a duration: write 500ms, 2s or 1m")),
        None => s.parse::<sluice_plan::Dur>().map(|d| d.0),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
pub struct Reason {
    /// Why: recorded in the audit log.
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Subcommand)]
pub enum FlagCmd {
    /// List flags.
    List,
    /// Show one flag.
    Get { key: String },
    /// Create a flag. `--variants off,on` is a boolean flag; other names are string modes (off,warn,enforce).
    Create {
        key: String,
        /// Variant names; the first is served when the flag is off.
        #[arg(long, value_delimiter = ',', default_value = "off,on")]
        variants: Vec<String>,
        /// The variant outside the ramp (default: the first).
        #[arg(long)]
        base: Option<String>,
        /// The variant inside the ramp (default: the second).
        #[arg(long)]
        ramped: Option<String>,
        /// Context field that picks the bucket: default, userId, sessionId, random, or a property.
        #[arg(long, default_value = "default")]
        stickiness: String,
        /// Limit the ramp to these segments.
        #[arg(long, value_delimiter = ',')]
        segments: Vec<String>,
        /// Starting percentage.
        #[arg(long, default_value_t = 0)]
        percent: u8,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        why: Reason,
    },
    /// Change a flag's ramp: percentage, base / ramped variant, stickiness, segments.
    Set {
        key: String,
        #[arg(long)]
        percent: Option<u8>,
        #[arg(long)]
        base: Option<String>,
        #[arg(long)]
        ramped: Option<String>,
        #[arg(long)]
        stickiness: Option<String>,
        /// Replace the ramp's segments (empty string: none).
        #[arg(long, value_delimiter = ',')]
        segments: Option<Vec<String>>,
        /// Change it although an active rollout drives the flag (needs --reason; audited). The rollout's
        /// next step or its rollback will set the ramp again.
        #[arg(long, requires = "reason")]
        force: bool,
        #[command(flatten)]
        why: Reason,
    },
    /// Turn the kill switch off: the flag serves its variants again.
    Enable {
        key: String,
        #[command(flatten)]
        why: Reason,
    },
    /// Kill switch: everyone gets the off variant.
    Disable {
        key: String,
        #[command(flatten)]
        why: Reason,
    },
    /// Pin one user, session or property value: --enable, --disable or --variant; or --list, --clear-all, --remove.
    Override(OverrideArgs),
    /// Delete a flag.
    Delete {
        key: String,
        #[command(flatten)]
        why: Reason,
    },
}

#[derive(Args)]
pub struct OverrideArgs {
    pub key: String,
    #[arg(long, group = "who")]
    pub user: Option<String>,
    #[arg(long, group = "who")]
    pub session: Option<String>,
    /// Another context field, with --value.
    #[arg(long, group = "who", requires = "value")]
    pub field: Option<String>,
    #[arg(long)]
    pub value: Option<String>,
    #[arg(long, group = "what")]
    pub enable: bool,
    #[arg(long, group = "what")]
    pub disable: bool,
    /// Pin this variant.
    #[arg(long, group = "what")]
    pub variant: Option<String>,
    /// Remove the override of --user / --session / --field.
    #[arg(long, group = "what", conflicts_with = "expires")]
    pub remove: bool,
    /// List the flag's overrides.
    #[arg(long, group = "what", conflicts_with_all = ["user", "session", "field", "expires"])]
    pub list: bool,
    /// Remove every override of the flag.
    #[arg(long, group = "what", conflicts_with_all = ["user", "session", "field", "expires"])]
    pub clear_all: bool,
    /// Expire after this long: 30m, 2h, 7d.
    #[arg(long)]
    pub expires: Option<String>,
    #[command(flatten)]
    pub why: Reason,
}

#[derive(Subcommand)]
pub enum SegmentCmd {
    /// List segments.
    List,
    /// Create or replace a segment. Each --constraint is `FIELD [NOT] OPERATOR VALUE[,VALUE…]`,
    /// e.g. `email STR_ENDS_WITH @example.com`.
    Set {
        name: String,
        #[arg(long = "constraint", required = true)]
        constraints: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        why: Reason,
    },
    /// Delete a segment no flag uses.
    Delete {
        name: String,
        #[command(flatten)]
        why: Reason,
    },
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create a token; its text is printed once.
    Create {
        name: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// The environments it may act in, comma-separated (default: `--env` if given; else every one, and
        /// for an `sdk` token the server's only one).
        #[arg(long, value_delimiter = ',')]
        envs: Vec<String>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token.
    Revoke { name: String },
    /// Give a token a new secret (printed once); the old one keeps working for `--overlap` so that its
    /// users can switch, and is revoked after.
    Rotate {
        name: String,
        /// How long the old secret keeps working, at most 30 days (`1h`, `2d`); without it, the old
        /// secret ends at once.
        #[arg(long, value_parser = humantime_like)]
        overlap: Option<std::time::Duration>,
    },
}

#[derive(Subcommand)]
pub enum EnvCmd {
    /// List the environments, with their revisions and how many flags are enabled in each.
    List,
    /// Create an environment; every flag appears in it disabled at 0 %.
    Create {
        name: String,
        #[command(flatten)]
        why: Reason,
    },
    /// Rename an environment: its flags, tokens, rollouts and counts follow.
    Rename {
        from: String,
        to: String,
        #[command(flatten)]
        why: Reason,
    },
    /// Delete an environment (refused while a flag is enabled in it, a rollout runs in it, or a token
    /// belongs to it alone).
    Delete {
        name: String,
        #[command(flatten)]
        why: Reason,
    },
}

#[derive(Subcommand)]
pub enum AuditCmd {
    /// List audit events, newest first.
    List {
        #[arg(long)]
        actor: Option<String>,
        /// e.g. flag:awf_bundle
        #[arg(long)]
        entity: Option<String>,
        /// Action prefix, e.g. `flag.` or `token.create`.
        #[arg(long)]
        action: Option<String>,
        /// RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Fetch the whole chain and recompute every hash here, naming the first broken record.
    Verify {
        /// A head hash anchored earlier: catches a consistent rewrite of the tail.
        #[arg(long)]
        head: Option<String>,
        /// Events fetched per request.
        #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        page_size: u32,
    },
    /// Print the head hash, to anchor elsewhere.
    Head,
}

#[derive(Subcommand)]
pub enum ImportCmd {
    /// An Unleash client-API export (`/api/client/features` JSON).
    Unleash {
        file: PathBuf,
        #[command(flatten)]
        why: Reason,
    },
    /// A Sluice flag file (YAML or JSON): `segments:` and `flags:`.
    Flags {
        file: PathBuf,
        #[command(flatten)]
        why: Reason,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}
