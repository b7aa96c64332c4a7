//! A recorded timeline of measurements and human actions, for `sluice simulate`: CSV rows of
//! `at,name,value`, where `at` is a duration from the start (`0s`, `90m`, `2d`) and `name` is a check name
//! (the value is a number, empty for "no data", or `error`), or one of `approve:ITEM`, `signal:NAME`
//! (value `hard` or `soft`), `decide` (value `resume` or `rollback`), `promote`, `abort`, or
//! `baseline:NAME` (the reference of check NAME's `baseline`, as if captured at the start; `at` is ignored).

use std::collections::BTreeMap;

use crate::{CheckRef, Measurement, MetricSource, Millis};

/// A person's or an alert's action at a time.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// Sign an approval item.
    Approve(String),
    /// Fire a trigger by hand.
    Signal {
        /// The trigger's name.
        name: String,
        /// Hard (roll back) or soft (pause).
        hard: bool,
    },
    /// Decide on a pause: resume (`true`) or roll back.
    Decide {
        /// Resume rather than roll back.
        resume: bool,
    },
    /// Skip the rest of the hold.
    Promote,
    /// End the rollout.
    Abort,
}

/// Measurements by check name, in time order, and the controls.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    series: BTreeMap<String, Vec<(Millis, Measurement)>>,
    /// Human and alert actions, in time order.
    pub controls: Vec<(Millis, Control)>,
    /// Baselines by check name (`baseline:NAME` rows).
    pub baselines: BTreeMap<String, f64>,
}

impl Timeline {
    /// Parses the CSV; errors name the line.
    ///
    /// ```
    /// let t = sluice_engine::timeline::Timeline::parse("# spike\nat,name,value\n0s,error-rate,0.001\n2h,error-rate,0.2\n").unwrap();
    /// assert_eq!(t.rows(), 2);
    /// let err = sluice_engine::timeline::Timeline::parse("at,name,value\n5 min,error-rate,1\n").unwrap_err();
    /// assert!(err.starts_with("line 2: `5 min` is not a duration"));
    /// ```
    pub fn parse(csv: &str) -> Result<Timeline, String> {
        let mut t = Timeline::default();
        let mut first = true;
        for (n, raw) in csv.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // The header, if any, is the first line that is not a comment.
            if std::mem::take(&mut first) && line.replace(' ', "") == "at,name,value" {
                continue;
            }
            let err = |m: String| format!("line {}: {m}", n + 1);
            let mut cols = line.splitn(3, ',');
            let (at, name, value) =
                (cols.next().unwrap_or(""), cols.next().unwrap_or("").trim(), cols.next().unwrap_or("").trim());
            let at: sluice_plan::Dur = if at.trim() == "0" || at.trim() == "0s" {
                sluice_plan::Dur(std::time::Duration::ZERO)
            } else {
                at.parse().map_err(err)?
            };
            let at = at.0.as_millis() as Millis;
            if name.is_empty() {
                return Err(err("no name: rows are `at,name,value`".into()));
            }
            if let Some(check) = name.strip_prefix("baseline:") {
                let v = value.parse().map_err(|_| err(format!("a baseline is a number, not `{value}`")))?;
                t.baselines.insert(check.to_string(), v);
                continue;
            }
            let control = if let Some(item) = name.strip_prefix("approve:") {
                Some(Control::Approve(item.to_string()))
            } else if let Some(trigger) = name.strip_prefix("signal:") {
                match value {
                    "hard" => Some(Control::Signal { name: trigger.into(), hard: true }),
                    "soft" => Some(Control::Signal { name: trigger.into(), hard: false }),
                    other => return Err(err(format!("a signal is `hard` or `soft`, not `{other}`"))),
                }
            } else if name == "decide" {
                match value {
                    "resume" => Some(Control::Decide { resume: true }),
                    "rollback" => Some(Control::Decide { resume: false }),
                    other => return Err(err(format!("a decision is `resume` or `rollback`, not `{other}`"))),
                }
            } else if name == "promote" {
                Some(Control::Promote)
            } else if name == "abort" {
                Some(Control::Abort)
            } else {
                None
            };
            match control {
                Some(c) => t.controls.push((at, c)),
                None => {
                    let m = match value {
                        "" => Measurement::Empty,
                        "error" => Measurement::Error("recorded error".into()),
                        v => Measurement::Value(
                            v.parse().map_err(|_| err(format!("`{v}` is not a number, empty, or `error`")))?,
                        ),
                    };
                    t.series.entry(name.to_string()).or_default().push((at, m));
                }
            }
        }
        for s in t.series.values_mut() {
            s.sort_by_key(|(at, _)| *at);
        }
        t.controls.sort_by_key(|(at, _)| *at);
        Ok(t)
    }

    /// Number of measurement rows.
    pub fn rows(&self) -> usize {
        self.series.values().map(Vec::len).sum()
    }

    /// Names measured, for telling a user which checks the timeline never mentions.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.series.keys().map(String::as_str)
    }
}

impl MetricSource for Timeline {
    /// The last recorded value at or before `now`; no data before the first row.
    fn measure(&mut self, check: &CheckRef<'_>, now: Millis) -> Measurement {
        let Some(series) = self.series.get(check.name) else { return Measurement::Empty };
        let i = series.partition_point(|(at, _)| *at <= now);
        if i == 0 {
            Measurement::Empty
        } else {
            series[i - 1].1.clone()
        }
    }

    /// A phase gate's baseline is the recorded `baseline:CHECK` row, as a plan gate's is.
    fn baseline(&mut self, check: &sluice_plan::model::Check, _before: Millis) -> Option<f64> {
        self.baselines.get(&check.name.value).copied()
    }
}
