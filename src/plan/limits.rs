//! The bounds a plan must stay within, in one place (documented in docs/plan-language.md,
//! "Limits"). They exist so that no input — however large, deep or hostile — makes loading
//! panic, overflow the stack or run without end: each is far above what a real plan uses, and
//! going past one is a located error, never a crash. Where each limit is enforced lives with
//! the pass it guards (reading, lowering, templates, durations); this file only names them.

use std::time::Duration;

/// Largest plan file, in bytes. Real plans are a few kilobytes (the largest in plans/ is
/// 11 KB). Parsing is linear but heavy: a KDL file dense with small nodes takes about 150 bytes
/// of memory per byte of text in the `kdl` crate, and about a second per MiB in a release
/// build, so the cap is 1 MiB — a hundred times the largest real plan.
pub const MAX_PLAN_BYTES: usize = 1024 * 1024;

/// Deepest nesting of tables, lists and KDL blocks. Real plans nest about six levels; the
/// parsers recurse once per level, so an unbounded depth would overflow the stack.
pub const MAX_DEPTH: usize = 64;

/// Every duration, and a plan's total expected duration, is shorter than this (100 years of
/// 365.25 days). It keeps every sum of durations, and any duration times `--time-scale`
/// (at most [`MAX_TIME_SCALE`]), inside what `std::time::Duration` can hold.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600);

/// [`MAX_DURATION`] in words, for messages.
pub const MAX_DURATION_TEXT: &str = "100 years";

/// The largest `--time-scale` (the command line checks it).
pub const MAX_TIME_SCALE: f64 = 1e6;

/// Instructions all of a plan's load-time templates may execute together (minijinja fuel).
/// A template that renders a field of a real plan takes tens of instructions.
pub const TEMPLATE_FUEL: u64 = 1_000_000;

/// Largest text one load-time template may render, in bytes.
pub const MAX_TEMPLATE_OUTPUT: usize = 1024 * 1024;

/// Largest text all of a plan's load-time templates may render together, in bytes.
pub const MAX_TEMPLATES_OUTPUT: usize = 16 * 1024 * 1024;

/// "10 MiB", "1.5 KiB", "12 bytes": sizes in messages.
pub fn human_bytes(n: usize) -> String {
    const KIB: f64 = 1024.0;
    let f = n as f64;
    if f >= KIB * KIB {
        format!("{:.1} MiB", f / (KIB * KIB)).replace(".0 ", " ")
    } else if f >= KIB {
        format!("{:.1} KiB", f / KIB).replace(".0 ", " ")
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(MAX_PLAN_BYTES), "1 MiB");
        assert_eq!(human_bytes(10 * 1024 * 1024), "10 MiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12), "12 bytes");
    }

    #[test]
    fn the_longest_duration_scaled_by_the_largest_scale_fits() {
        assert!(MAX_DURATION.checked_mul(MAX_TIME_SCALE as u32).is_some());
        // Two of them still add up: a stage's duration plus its pauses are each below the max.
        assert!(MAX_DURATION.checked_add(MAX_DURATION).is_some());
    }
}
