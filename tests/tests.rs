//! Integration tests: one binary, a module per area (see `support` for the runner builder).

mod analyze;
mod bench;
mod browser;
mod cli;
mod criteria;
mod dashboard;
mod diagnostics;
mod fleet;
mod fuzz;
mod history;
mod http;
mod include;
mod llm;
mod plans;
mod redis;
mod resume;
mod run;
mod scale;
mod structure;
mod suite;
mod support;
mod ws;
