//! Durations as plans write them: `30s`, `5m`, `24h`, `2d`, `1w`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration of a plan (`hold: 24h`, `for: 5m`), kept with the text it was written as.
///
/// ```
/// let d: sluice_plan::Dur = "90m".parse().unwrap();
/// assert_eq!(d.as_secs(), 5400);
/// assert!("5 minutes".parse::<sluice_plan::Dur>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    /// Whole seconds.
    pub fn as_secs(&self) -> u64 {
        self.0.as_secs()
    }
}

impl std::str::FromStr for Dur {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (n, unit) = t.split_at(split);
        let bad = || format!("`{s}` is not a duration: write a whole number and a unit, like 30s, 5m, 24h, 2d or 1w");
        let n: u64 = n.parse().map_err(|_| bad())?;
        let secs = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            "w" => 604_800,
            _ => return Err(bad()),
        };
        if n == 0 {
            return Err(format!("`{s}` is zero; leave the key out instead"));
        }
        n.checked_mul(secs)
            .filter(|&t| t <= 10 * 365 * 86_400)
            .map(|t| Dur(Duration::from_secs(t)))
            .ok_or_else(|| format!("`{s}` is longer than ten years"))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs();
        for (unit, size) in [("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)] {
            if s.is_multiple_of(size) {
                return write!(f, "{}{unit}", s / size);
            }
        }
        write!(f, "{s}s")
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
