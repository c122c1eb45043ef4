//! The command line: clap definitions (raw arguments) and the dispatch from each subcommand to
//! the library. This is the only place that prints verdicts and maps outcomes to exit codes
//! (through `crate::exit`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, ColorChoice, CommandFactory, Parser, Subcommand, ValueHint};
use clap_complete::engine::ArgValueCompleter;

use crate::analyze::{self, AnalyzeOptions, report_data::Report};
use crate::diag::{Diag, Diags};
use crate::drivers::Registry;
use crate::exit::{EXIT_CODES_HELP, Exit};
use crate::plan::{ClockKind, LoadOptions, Selector, load_file_with};
use crate::report::{DEFAULT_FORMATS, Format, Renderer};
use crate::run::progress::Mode;
use crate::run::{self, RunError, RunOptions, schedule};

mod complete;
use crate::rundir::RunStatus;

#[derive(Parser, Debug)]
#[command(name = "planrun", version, about = "Run declarative test plans against agent fleets, and analyze what happened.", after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// When to color output: auto (a terminal, unless NO_COLOR is set), always, never.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Check a plan and print a one-screen summary (exit 2 with diagnostics if it is wrong).
    Validate {
        /// The plan file (.toml or .kdl).
        #[arg(value_hint = ValueHint::FilePath)]
        plan: PathBuf,
        #[command(flatten)]
        vars: VarArgs,
    },
    /// Run a plan; prints the run directory it writes.
    Run(RunArgs),
    /// Continue an interrupted run from its last checkpoint.
    Resume {
        /// The run directory `planrun run` printed (results/NAME-TIMESTAMP).
        #[arg(value_hint = ValueHint::DirPath)]
        run_dir: PathBuf,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
        /// Progress as timestamped lines, every stage start and end (no bars).
        #[arg(long, short, conflicts_with = "quiet")]
        verbose: bool,
        /// Stop cleanly again at the first checkpoint after this much plan time.
        #[arg(long, value_parser = duration)]
        suspend_after: Option<std::time::Duration>,
    },
    /// Inspect plans.
    Plan {
        #[command(subcommand)]
        cmd: PlanCmd,
    },
    /// Analyze a run: metrics, criteria, findings; writes report.md, report.json, junit.xml.
    Analyze(AnalyzeArgs),
    /// Every run of a plan under a results directory, oldest first: each metric and criterion
    /// across the runs, and where a run regressed beyond the tolerance against the run before
    /// and the best; writes history.md, history.json, history.html (exit 1: the newest regressed).
    History(HistoryArgs),
    /// Serve a run directory (finished or still running) as a live page with charts, with
    /// /api/stats (JSON) and /metrics (Prometheus); until Ctrl-C.
    Dashboard {
        /// The run directory (or a results directory: its newest run).
        run_dir: PathBuf,
        /// Where to listen (loopback by default; another address is an explicit choice).
        #[arg(long, default_value = "127.0.0.1:8090")]
        addr: std::net::SocketAddr,
    },
    /// Run the built-in fleet agent (the fleet driver starts these; see docs/agent-protocol.md).
    Agent(crate::drivers::fleet::agent::AgentArgs),
    /// Serve stages from this host: wait on Redis for a share of a stage (a fleet stage's
    /// agents, an http stage's load), run it, repeat (docs/distributed.md).
    Worker(crate::run::worker::WorkerArgs),
    /// Serve a stand-in for an agent fleet over HTTP (the target of plans/fleet-http and
    /// plans/multimodal-stress; endpoints in docs/drivers/http.md).
    ServeDemo(crate::demo::DemoArgs),
    /// Print a shell completion script (it completes profile, phase and stage names from the
    /// plan on the command line, and report formats): `source <(planrun completions bash)`.
    Completions { shell: clap_complete::Shell },
}

#[derive(Args, Debug, Clone, Default)]
pub struct ReportArgs {
    /// Report formats to write.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = DEFAULT_FORMATS.to_vec())]
    pub format: Vec<Format>,
    /// Directory whose report.md.j2 / report.json.j2 / junit.xml.j2 / report.html.j2 replace the built-in ones.
    #[arg(long)]
    pub templates: Option<PathBuf>,
    /// Directory of extra `*.sql` analysis queries.
    #[arg(long)]
    pub analysis: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct AnalyzeArgs {
    /// A run directory, or a directory of runs (the newest is analyzed).
    #[arg(value_hint = ValueHint::DirPath)]
    pub path: PathBuf,
    /// Compare against another run; regressions beyond the tolerance are listed.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Relative change that counts as a regression (default 0.10, or the plan's).
    #[arg(long, value_parser = tolerance)]
    pub tolerance: Option<f64>,
    /// Where to write the reports (default: the run directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Analyze every run under PATH and add a comparison table.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub report: ReportArgs,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// A results directory (the runs right under it).
    #[arg(value_hint = ValueHint::DirPath)]
    pub dir: PathBuf,
    /// Which plan's runs (default: the newest run's plan).
    #[arg(long)]
    pub plan: Option<String>,
    /// Relative change that counts as a regression (default 0.10, or the plan's).
    #[arg(long, value_parser = tolerance)]
    pub tolerance: Option<f64>,
    /// Formats to write (md, json, html).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Format::Md, Format::Json, Format::Html])]
    pub format: Vec<Format>,
    /// Where to write them (default: DIR/history).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum PlanCmd {
    /// Print which build of planrun the plan wants: `debug` when every stage is simulated (its
    /// results do not depend on planrun's own speed), `release` when a stage drives real
    /// processes or the network. `just run` uses it to pick the build.
    Build {
        /// The plan file (.toml or .kdl).
        #[arg(value_hint = ValueHint::FilePath)]
        plan: PathBuf,
        #[command(flatten)]
        vars: VarArgs,
    },
    /// Print the resolved plan: phases, stages, durations after scaling.
    Show {
        /// The plan file (.toml or .kdl).
        #[arg(value_hint = ValueHint::FilePath)]
        plan: PathBuf,
        #[command(flatten)]
        vars: VarArgs,
        /// Multiply every plan duration by this factor.
        #[arg(long, default_value_t = 1.0, value_parser = time_scale)]
        time_scale: f64,
    },
}

#[derive(Args, Debug, Clone, Default)]
pub struct VarArgs {
    /// Apply a named profile's var overrides.
    #[arg(long, add = ArgValueCompleter::new(complete::profiles))]
    pub profile: Option<String>,
    /// Override a var (typed by its declaration); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = key_value)]
    pub sets: Vec<(String, String)>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The plan file (.toml or .kdl).
    #[arg(value_hint = ValueHint::FilePath)]
    pub plan: PathBuf,
    /// Directory that receives the run directory.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    #[command(flatten)]
    pub vars: VarArgs,
    /// Multiply every plan duration and interval by this factor (0.001 turns 8h into 28.8s).
    #[arg(long, default_value_t = 1.0, value_parser = time_scale)]
    pub time_scale: f64,
    /// Seed for every random choice (overrides the plan's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Real time, or virtual time for simulated stages (overrides the plan's).
    #[arg(long, value_enum)]
    pub clock: Option<ClockKind>,
    /// Run only these phases or stages (repeatable, or comma-separated).
    #[arg(long, value_name = "PHASE[/STAGE]", value_delimiter = ',', add = ArgValueCompleter::new(complete::stages))]
    pub only: Vec<Selector>,
    /// Leave these phases or stages out (repeatable, or comma-separated).
    #[arg(long, value_name = "PHASE[/STAGE]", value_delimiter = ',', add = ArgValueCompleter::new(complete::stages))]
    pub skip: Vec<Selector>,
    /// Run only the http tasks carrying one of these tags (comma-separated; Locust's --tags).
    #[arg(long, value_name = "TAG", value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Never run the http tasks carrying one of these tags.
    #[arg(long, value_name = "TAG", value_delimiter = ',')]
    pub exclude_tags: Vec<String>,
    /// Print the resolved schedule and run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
    /// Progress as timestamped lines, every stage start and end (no bars).
    #[arg(long, short, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Stop cleanly at the first checkpoint after this much plan time (e.g. 2h); resume later.
    #[arg(long, value_parser = duration)]
    pub suspend_after: Option<std::time::Duration>,
    /// Skip the analysis at the end (the exit code then reflects the stages only).
    #[arg(long)]
    pub no_analyze: bool,
    /// Serve a live dashboard of the run while it goes: charts, criteria, /api/stats and
    /// /metrics (default address 127.0.0.1 on a free port; it is printed).
    /// (`--dashboard=ADDR` to choose where.)
    #[arg(long, value_name = "ADDR", num_args = 0..=1, require_equals = true, default_missing_value = "127.0.0.1:0")]
    pub dashboard: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub report: ReportArgs,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got \"{s}\"")),
    }
}

fn duration(s: &str) -> Result<std::time::Duration, String> {
    crate::plan::Dur::parse(s).map(|d| d.0)
}

/// `--time-scale`: above 0 and at most `MAX_TIME_SCALE`, so every plan duration (under 100
/// years) times the scale still fits a `Duration`.
fn time_scale(s: &str) -> Result<f64, String> {
    let max = crate::plan::limits::MAX_TIME_SCALE;
    match s.trim().parse::<f64>() {
        Ok(f) if f > 0.0 && f <= max => Ok(f),
        _ => Err(format!("expected a number above 0 and at most {max} ({max:e}), got \"{s}\"")),
    }
}

/// `--tolerance`: a relative change, from 0 to 10 (1000%).
fn tolerance(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(f) if (0.0..=10.0).contains(&f) => Ok(f),
        _ => Err(format!("expected a relative change from 0 to 10 (0.1 is 10%), got \"{s}\"")),
    }
}

static COLOR: std::sync::OnceLock<ColorChoice> = std::sync::OnceLock::new();

/// Whether diagnostics on stderr get color: `--color`, else a terminal without NO_COLOR.
fn color() -> bool {
    match COLOR.get().copied().unwrap_or(ColorChoice::Auto) {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    }
}

fn report_diags(d: &Diags) -> Exit {
    eprint!("{}", d.render(color()));
    Exit::Usage
}

fn opts(v: &VarArgs) -> LoadOptions {
    LoadOptions { profile: v.profile.clone(), sets: v.sets.clone() }
}

/// Load a plan and check its criteria.
fn load_checked(path: &std::path::Path, v: &VarArgs) -> Result<(run::Plan, crate::diag::Source), Diags> {
    let (plan, src) = load_file_with(path, &opts(v), &Registry)?;
    let problems = crate::criteria::check_criteria(&plan, &src);
    if problems.is_empty() { Ok((plan, src)) } else { Err(Diags(problems)) }
}

/// Entry point: parse arguments, run, return the process exit code.
pub fn main() -> i32 {
    // Shell completion requests (`COMPLETE=bash planrun …`) are answered here and exit.
    clap_complete::CompleteEnv::with_factory(Cli::command).complete();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => Exit::Usage.code(),
            };
        }
    };
    dispatch(cli).code()
}

pub fn dispatch(cli: Cli) -> Exit {
    let _ = COLOR.set(cli.color);
    match cli.cmd {
        Cmd::Validate { plan, vars } => match load_checked(&plan, &vars) {
            Ok((p, _)) => {
                print!("{}", schedule::summary(&p, &plan.display().to_string()));
                Exit::Passed
            }
            Err(d) => report_diags(&d),
        },
        Cmd::Plan { cmd: PlanCmd::Show { plan, vars, time_scale } } => match load_checked(&plan, &vars) {
            Ok((p, _)) => {
                print!("{}", schedule::schedule(&p, time_scale));
                Exit::Passed
            }
            Err(d) => report_diags(&d),
        },
        Cmd::Plan { cmd: PlanCmd::Build { plan, vars } } => match load_checked(&plan, &vars) {
            Ok((p, _)) => {
                println!("{}", if run::real_world_stages(&p).is_empty() { "debug" } else { "release" });
                Exit::Passed
            }
            Err(d) => report_diags(&d),
        },
        Cmd::Run(args) => run_cmd(args),
        Cmd::Resume { run_dir, quiet, verbose, suspend_after } => finish(
            run::resume(&run_dir, Mode::detect(quiet, verbose), suspend_after),
            quiet,
            Some(&ReportArgs::default_formats()),
        ),
        Cmd::Analyze(args) => analyze_cmd(args),
        Cmd::History(args) => history_cmd(args),
        Cmd::Dashboard { run_dir, addr } => dashboard_cmd(&run_dir, addr),
        Cmd::ServeDemo(args) => match crate::demo::serve(&args) {
            Ok(()) => Exit::Passed,
            Err(e) => {
                eprintln!("planrun serve-demo: {e}");
                Exit::Runtime
            }
        },
        Cmd::Worker(args) => match crate::run::worker::run(args) {
            0 => Exit::Passed,
            _ => Exit::Runtime,
        },
        Cmd::Agent(args) => match crate::drivers::fleet::agent::run(args) {
            0 => Exit::Passed,
            _ => Exit::Runtime,
        },
        Cmd::Completions { shell } => match complete::registration(shell, &mut std::io::stdout()) {
            Ok(()) => Exit::Passed,
            Err(e) => {
                eprintln!("cannot write the completion script: {e}");
                Exit::Runtime
            }
        },
    }
}

/// Start the dashboard on `addr` and say where, with a word when it is not loopback only.
fn start_dashboard(
    addr: std::net::SocketAddr,
    dir: Option<PathBuf>,
    live: Option<Arc<crate::analyze::charts::LiveCharts>>,
) -> Result<crate::dashboard::Dashboard, String> {
    let d = crate::dashboard::serve(addr, dir, live)?;
    eprintln!("dashboard: http://{}/  (also /api/stats and /metrics)", d.addr);
    if !d.addr.ip().is_loopback() {
        eprintln!("note: the dashboard listens on {} — reachable from other hosts", d.addr.ip());
    }
    Ok(d)
}

fn dashboard_cmd(run_dir: &Path, addr: std::net::SocketAddr) -> Exit {
    let dir = match analyze::find_runs(run_dir) {
        Ok(r) => match r.last() {
            Some(d) => d.clone(),
            None => {
                eprint!("{}", Diag::new(format!("no run directory in {}", run_dir.display())).render(color()));
                return Exit::Usage;
            }
        },
        Err(e) => {
            eprint!("{}", Diag::new(e.to_string()).render(color()));
            return Exit::Usage;
        }
    };
    if let Err(e) = start_dashboard(addr, Some(dir.clone()), None) {
        eprint!("{}", Diag::new(e).render(color()));
        return Exit::Usage;
    }
    println!("{}", dir.display());
    // Serve until Ctrl-C or SIGTERM.
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return Exit::Runtime };
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    });
    Exit::Passed
}

fn run_cmd(args: RunArgs) -> Exit {
    let (plan, src) = match load_checked(&args.plan, &args.vars) {
        Ok(p) => p,
        Err(d) => return report_diags(&d),
    };
    let plan = match plan.select(&args.only, &args.skip) {
        Ok(p) => p,
        Err(e) => {
            eprint!("{}", Diag::new(format!("{}: {e}", args.plan.display())).render(color()));
            return Exit::Usage;
        }
    };
    if args.dry_run {
        print!("{}", schedule::schedule(&plan, args.time_scale));
        return Exit::Passed;
    }
    let options = RunOptions {
        out: args.out.clone(),
        time_scale: args.time_scale,
        seed: args.seed,
        clock: args.clock,
        progress: Mode::detect(args.quiet, args.verbose),
        args: std::env::args().collect(),
        suspend_after: args.suspend_after,
        tags: crate::drivers::TagFilter::new(args.tags.clone(), args.exclude_tags.clone()),
        announce: None,
        watch: None,
    };
    let mut options = options;
    let mut dashboard = None;
    if let Some(addr) = args.dashboard {
        // The charts are kept as the events come (a run-clock span the plan expects, scaled).
        let expected = plan.expected_duration().as_secs_f64() * args.time_scale;
        let live = Arc::new(crate::analyze::charts::LiveCharts::new(expected));
        options.watch = Some(Arc::clone(&live) as Arc<dyn crate::events::Observer>);
        match start_dashboard(addr, None, Some(live)) {
            Ok(d) => {
                let d = Arc::new(d);
                dashboard = Some(Arc::clone(&d));
                let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
                options.announce = Some(tx);
                std::thread::spawn(move || {
                    for dir in rx {
                        d.show(dir);
                    }
                });
            }
            Err(e) => {
                eprint!("{}", Diag::new(e).render(color()));
                return Exit::Usage;
            }
        }
    }
    let report = (!args.no_analyze).then_some(&args.report);
    let exit = finish(run::start(plan, &args.plan, &src.text, &options), args.quiet, report);
    if let Some(d) = dashboard {
        // The final state (the verdict, every stage ended) reaches the browsers still watching.
        d.settle();
    }
    exit
}

impl ReportArgs {
    fn default_formats() -> ReportArgs {
        ReportArgs { format: DEFAULT_FORMATS.to_vec(), templates: None, analysis: vec![] }
    }
}

/// Why an analysis produced no verdict, with the exit code that says whose fault it is: the
/// input (no such run, an unreadable log: 2) or planrun's own work (writing reports: 3).
struct Failed {
    exit: Exit,
    message: String,
}

impl From<analyze::AnalyzeError> for Failed {
    fn from(e: analyze::AnalyzeError) -> Failed {
        let exit = match e {
            analyze::AnalyzeError::Polars(_) => Exit::Runtime,
            _ => Exit::Usage,
        };
        Failed { exit, message: e.to_string() }
    }
}

impl From<crate::report::ReportError> for Failed {
    fn from(e: crate::report::ReportError) -> Failed {
        use crate::report::ReportError as R;
        let exit = match e {
            R::Write { .. } | R::CreateDir { .. } => Exit::Runtime,
            _ => Exit::Usage,
        };
        Failed { exit, message: e.to_string() }
    }
}

/// Analyze one run directory and write its reports; returns the verdict's exit code.
fn analyze_dir(
    dir: &std::path::Path,
    out: &std::path::Path,
    r: &ReportArgs,
    opts: &AnalyzeOptions,
    quiet: bool,
) -> Result<(Exit, Report), Failed> {
    let run = analyze::load_run(dir)?;
    if let Some(note) = &run.source.note {
        eprintln!("note: {}: {note}", dir.display());
    }
    let opts = AnalyzeOptions { locust: r.format.contains(&Format::LocustCsv), ..opts.clone() };
    let report = analyze::analyze(&run, &opts)?;
    let renderer = Renderer::new(r.templates.as_deref())?;
    let written = renderer.write_all(&report, &r.format, out)?;
    if !quiet {
        let v = &report.verdict;
        // One line that cannot read as a contradiction: the label with its cause, then the
        // criteria and the confidence (which alone does not decide the verdict).
        let cause = v.cause.as_deref().map(|c| format!(": {c}")).unwrap_or_default();
        let criteria = match (v.criteria_total, v.criteria_skipped) {
            (0, _) => "no criteria".to_string(),
            (n, 0) => format!("criteria {}/{n} passed", v.criteria_passed),
            (n, k) => format!("criteria {}/{n} passed, {k} skipped", v.criteria_passed),
        };
        eprintln!(
            "{}{cause} · {criteria} · confidence {:.2} (pass at ≥ {:.2}) · {}",
            v.label,
            v.confidence,
            v.threshold,
            written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        );
        for reason in v.reasons.iter().take(10) {
            eprintln!("  - {reason}");
        }
    }
    Ok((if report.verdict.pass { Exit::Passed } else { Exit::Failed }, report))
}

fn analyze_cmd(args: AnalyzeArgs) -> Exit {
    let usage = |m: String| {
        eprint!("{}", Diag::new(m).render(color()));
        Exit::Usage
    };
    let runs = match analyze::find_runs(&args.path) {
        Ok(r) => r,
        Err(e) => return usage(e.to_string()),
    };
    let opts = AnalyzeOptions {
        baseline: args.baseline.clone(),
        analysis_dirs: args.report.analysis.clone(),
        tolerance: args.tolerance,
        locust: false,
    };
    let chosen: Vec<PathBuf> = if args.all { runs } else { runs.last().cloned().into_iter().collect() };
    let mut worst = Exit::Passed;
    let mut reports = Vec::new();
    for dir in &chosen {
        let out = match (&args.out, args.all) {
            (Some(o), true) => o.join(dir.file_name().unwrap_or_default()),
            (Some(o), false) => o.clone(),
            (None, _) => dir.clone(),
        };
        match analyze_dir(dir, &out, &args.report, &opts, false) {
            Ok((exit, report)) => {
                println!("{}", out.display());
                if exit != Exit::Passed {
                    worst = exit;
                }
                reports.push(report);
            }
            Err(f) => {
                eprint!("{}", Diag::new(f.message).render(color()));
                return f.exit;
            }
        }
    }
    if args.all && reports.len() > 1 {
        let rows: Vec<_> = reports.iter().map(analyze::comparison_row).collect();
        let Some(mut last) = reports.pop() else { return worst };
        last.comparison = rows;
        let out = args.out.clone().unwrap_or_else(|| args.path.clone());
        let r = Renderer::new(args.report.templates.as_deref())
            .and_then(|r| r.write_all(&last, &[Format::Md, Format::Json], &out.join("comparison")));
        match r {
            Ok(files) => eprintln!("comparison of {} runs: {}", last.comparison.len(), files[0].display()),
            Err(e) => return usage(e.to_string()),
        }
    }
    worst
}

fn history_cmd(args: HistoryArgs) -> Exit {
    let usage = |m: String| {
        eprint!("{}", Diag::new(m).render(color()));
        Exit::Usage
    };
    if let Some(f) = args.format.iter().find(|f| !matches!(f, Format::Md | Format::Json | Format::Html)) {
        return usage(format!("history writes md, json and html, not {f:?}").to_lowercase());
    }
    let h = match analyze::history::collect(&args.dir, args.plan.as_deref(), args.tolerance) {
        Ok(h) => h,
        Err(e) => return usage(e.to_string()),
    };
    let out = args.out.clone().unwrap_or_else(|| args.dir.join("history"));
    let written = match Renderer::new(None).and_then(|r| r.write_history(&h, &args.format, &out)) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("planrun history: {e}");
            return Exit::Runtime;
        }
    };
    for s in &h.skipped {
        eprintln!("skipped {}: {}", s.dir, s.reason);
    }
    if !h.other_plans.is_empty() {
        eprintln!("note: {} also has runs of {} (--plan NAME)", args.dir.display(), h.other_plans.join(", "));
    }
    let files = written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
    for r in h.newest_vs_previous.iter().take(5) {
        eprintln!("note: against the run before only (not counted): {r}");
    }
    if h.newest_regressions.is_empty() {
        eprintln!(
            "{} runs of {} · the newest shows no regression (tolerance {:.0}%) · {files}",
            h.runs.len(),
            h.plan,
            h.tolerance * 100.0
        );
        println!("{}", out.display());
        Exit::Passed
    } else {
        eprintln!(
            "{} runs of {} · the newest regressed (tolerance {:.0}%) · {files}",
            h.runs.len(),
            h.plan,
            h.tolerance * 100.0
        );
        for r in h.newest_regressions.iter().take(10) {
            eprintln!("  - {r}");
        }
        if h.newest_regressions.len() > 10 {
            eprintln!("  … and {} more in history.md", h.newest_regressions.len() - 10);
        }
        println!("{}", out.display());
        Exit::Failed
    }
}

fn finish(result: Result<run::RunResult, RunError>, quiet: bool, report: Option<&ReportArgs>) -> Exit {
    match result {
        Ok(r) => {
            println!("{}", r.dir.display());
            if let Some(m) = &r.message {
                eprintln!("note: {m}");
            }
            let verdict = match report {
                Some(args) => match analyze_dir(&r.dir, &r.dir, args, &AnalyzeOptions::default(), quiet) {
                    Ok((exit, _)) => Some(exit),
                    Err(f) => {
                        eprintln!("analysis failed: {}", f.message);
                        return Exit::Runtime;
                    }
                },
                None => None,
            };
            match r.status {
                RunStatus::Completed => verdict.unwrap_or(Exit::Passed),
                RunStatus::Failed => Exit::Failed,
                RunStatus::Interrupted => {
                    eprintln!("interrupted; continue with: planrun resume {}", r.dir.display());
                    Exit::Interrupted
                }
                RunStatus::Error | RunStatus::Running => Exit::Runtime,
            }
        }
        Err(RunError::Plan(d)) => report_diags(&d),
        Err(RunError::Usage(m)) => {
            eprint!("{}", Diag::new(m).render(color()));
            Exit::Usage
        }
        Err(RunError::Io(m)) => {
            eprint!("{}", Diag::new(m).render(color()));
            Exit::Runtime
        }
    }
}
