//! The command line: clap definitions (raw arguments) and the dispatch from each subcommand to
//! the library. This is the only place that prints verdicts and maps outcomes to exit codes
//! (through `crate::exit`).

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::diag::{Diag, Diags};
use crate::exit::{EXIT_CODES_HELP, Exit};
use crate::plan::{ClockKind, LoadOptions, load_file};
use crate::run::manifest::RunStatus;
use crate::run::{self, RunError, RunOptions, schedule};

#[derive(Parser, Debug)]
#[command(name = "planrun", version, about = "Run declarative test plans against agent fleets, and analyze what happened.", after_help = EXIT_CODES_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Check a plan and print a one-screen summary (exit 2 with diagnostics if it is wrong).
    Validate {
        plan: PathBuf,
        #[command(flatten)]
        vars: VarArgs,
    },
    /// Run a plan; prints the run directory it writes.
    Run(RunArgs),
    /// Continue an interrupted run from its last checkpoint.
    Resume {
        run_dir: PathBuf,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Inspect plans.
    Plan {
        #[command(subcommand)]
        cmd: PlanCmd,
    },
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand, Debug)]
pub enum PlanCmd {
    /// Print the resolved plan: phases, stages, durations after scaling.
    Show {
        plan: PathBuf,
        #[command(flatten)]
        vars: VarArgs,
        /// Multiply every plan duration by this factor.
        #[arg(long, default_value_t = 1.0, value_parser = positive)]
        time_scale: f64,
    },
}

#[derive(Args, Debug, Clone, Default)]
pub struct VarArgs {
    /// Apply a named profile's var overrides.
    #[arg(long)]
    pub profile: Option<String>,
    /// Override a var (typed by its declaration); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = key_value)]
    pub sets: Vec<(String, String)>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    pub plan: PathBuf,
    /// Directory that receives the run directory.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    #[command(flatten)]
    pub vars: VarArgs,
    /// Multiply every plan duration and interval by this factor (0.001 turns 8h into 28.8s).
    #[arg(long, default_value_t = 1.0, value_parser = positive)]
    pub time_scale: f64,
    /// Seed for every random choice (overrides the plan's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Real time, or virtual time for simulated stages (overrides the plan's).
    #[arg(long, value_enum)]
    pub clock: Option<ClockArg>,
    /// Print the resolved schedule and run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum ClockArg {
    Real,
    Virtual,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got \"{s}\"")),
    }
}

fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f.is_finite() => Ok(f),
        _ => Err(format!("expected a positive number, got \"{s}\"")),
    }
}

fn color() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn report_diags(d: &Diags) -> Exit {
    eprint!("{}", d.render(color()));
    Exit::Usage
}

fn opts(v: &VarArgs) -> LoadOptions {
    LoadOptions { profile: v.profile.clone(), sets: v.sets.clone() }
}

/// Entry point: parse arguments, run, return the process exit code.
pub fn main() -> i32 {
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
    match cli.cmd {
        Cmd::Validate { plan, vars } => match load_file(&plan, &opts(&vars)) {
            Ok((p, _)) => {
                print!("{}", schedule::summary(&p, &plan.display().to_string()));
                Exit::Passed
            }
            Err(d) => report_diags(&d),
        },
        Cmd::Plan { cmd: PlanCmd::Show { plan, vars, time_scale } } => match load_file(&plan, &opts(&vars)) {
            Ok((p, _)) => {
                print!("{}", schedule::schedule(&p, time_scale));
                Exit::Passed
            }
            Err(d) => report_diags(&d),
        },
        Cmd::Run(args) => run_cmd(args),
        Cmd::Resume { run_dir, quiet } => finish(run::resume(&run_dir, quiet)),
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "planrun", &mut std::io::stdout());
            Exit::Passed
        }
    }
}

fn run_cmd(args: RunArgs) -> Exit {
    let (plan, src) = match load_file(&args.plan, &opts(&args.vars)) {
        Ok(p) => p,
        Err(d) => return report_diags(&d),
    };
    if args.dry_run {
        print!("{}", schedule::schedule(&plan, args.time_scale));
        return Exit::Passed;
    }
    let options = RunOptions {
        out: args.out.clone(),
        time_scale: args.time_scale,
        seed: args.seed,
        clock: args.clock.map(|c| match c {
            ClockArg::Real => ClockKind::Real,
            ClockArg::Virtual => ClockKind::Virtual,
        }),
        quiet: args.quiet,
        args: std::env::args().collect(),
    };
    finish(run::start(plan, &args.plan, &src.text, &options))
}

fn finish(result: Result<run::RunResult, RunError>) -> Exit {
    match result {
        Ok(r) => {
            println!("{}", r.dir.display());
            if let Some(m) = &r.message {
                eprintln!("note: {m}");
            }
            match r.status {
                RunStatus::Completed => Exit::Passed,
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
