//! Human durations in plans: `"250ms"`, `"90s"`, `"8h"`, `"10d"` (parsed by `humantime`). A
//! duration in a plan is always *plan time*; the run clock applies `--time-scale`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::limits::{MAX_DURATION, MAX_DURATION_TEXT};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub Duration);

impl Dur {
    pub fn parse(s: &str) -> Result<Dur, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err("empty duration".into());
        }
        if t.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("duration \"{t}\" has no unit: write e.g. \"{t}s\" or \"{t}ms\""));
        }
        let d = humantime::parse_duration(t).map_err(|e| {
            format!("bad duration \"{t}\": {e} (examples: \"250ms\", \"90s\", \"5m\", \"8h\", \"10d\")")
        })?;
        if d >= MAX_DURATION {
            return Err(format!("duration \"{t}\" is too long: durations are under {MAX_DURATION_TEXT}"));
        }
        Ok(Dur(d))
    }

    /// True for strings that read as a duration with a unit, e.g. `"8h"`; used to infer var types.
    pub fn looks_like(s: &str) -> bool {
        let t = s.trim();
        t.starts_with(|c: char| c.is_ascii_digit())
            && t.contains(|c: char| c.is_ascii_alphabetic())
            && Dur::parse(t).is_ok()
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            return f.write_str("0s");
        }
        // humantime writes "1h 30m"; plans read better without the spaces.
        let s = humantime::format_duration(self.0).to_string();
        f.write_str(&s.replace(' ', ""))
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string like \"90s\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Dur, E> {
                Dur::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plan_durations() {
        assert_eq!(Dur::parse("250ms").unwrap().0, Duration::from_millis(250));
        assert_eq!(Dur::parse("90s").unwrap().0, Duration::from_secs(90));
        assert_eq!(Dur::parse("8h").unwrap().0, Duration::from_secs(8 * 3600));
        assert_eq!(Dur::parse("10d").unwrap().0, Duration::from_secs(10 * 86400));
        assert!(Dur::parse("90").unwrap_err().contains("no unit"));
        assert!(Dur::parse("5 parsecs").is_err());
        assert!(Dur::parse("99y").is_ok());
        assert!(Dur::parse("300000000000y").unwrap_err().contains("too long"));
    }

    #[test]
    fn display_round_trips() {
        for s in ["250ms", "1h30m", "10days", "0s"] {
            let d = Dur::parse(s).unwrap();
            assert_eq!(Dur::parse(&d.to_string()).unwrap(), d, "{s}");
        }
    }
}
