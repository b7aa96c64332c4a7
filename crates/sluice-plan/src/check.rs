//! Where a plan is checked: every rule a plan must follow before a rollout may start, each problem named by
//! file, line, column and key. The plan's own rules are here; each plug-in's block is checked by its
//! plug-in, asked through [`Capabilities`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use crate::model::*;
use crate::{AllPlugins, Capabilities, Catalog, Family, Level, PluginKind, Problem, Report, Supports};

struct Checker<'a> {
    file: &'a str,
    plan: &'a Plan,
    catalog: Option<&'a Catalog>,
    plugins: &'a dyn Capabilities,
    problems: Vec<Problem>,
    /// Kinds this server knows but cannot run → where each is first used, and every key using it.
    unavailable: BTreeMap<PluginKind, (Location, Vec<String>)>,
}

impl Checker<'_> {
    fn report(&mut self, prefix: &str) -> Report<'_> {
        Report::new(self.file, self.plan, prefix, &mut self.problems)
    }

    fn error(&mut self, loc: Location, key: impl Into<String>, message: impl Into<String>) {
        let key = key.into();
        self.report("").error(loc, &key, message);
    }

    fn note(&mut self, loc: Location, key: impl Into<String>, message: impl Into<String>) {
        let key = key.into();
        self.report("").note(loc, &key, message);
    }

    /// A kind this server knows but lacks is noted once, with every key using it.
    fn available(&mut self, loc: Location, kind: PluginKind, key: &str) {
        if !self.plugins.can(&kind) {
            self.unavailable.entry(kind).or_insert_with(|| (loc, Vec::new())).1.push(key.to_string());
        }
    }

    /// The kinds of `family` this server knows, for messages: `prometheus (query, slo), builtin (metric)`.
    fn known(&self, family: Family) -> String {
        let kinds = self.plugins.kinds(family).unwrap_or_default();
        let names: Vec<String> = kinds.iter().map(|k| format!("`{}`", k.hint)).collect();
        names.join(", ")
    }

    /// A captured `baseline` and its margin; whether the check has one (then the margin is its threshold).
    fn baseline(&mut self, v: &Check, key: &str) -> bool {
        let Some(b) = &v.baseline else { return false };
        let loc = b.referenced;
        match (v.max_increase, v.max_increase_pct) {
            (None, None) => self.error(
                loc,
                format!("{key}.baseline"),
                "a baseline needs its margin: `max_increase` (absolute) or `max_increase_pct`",
            ),
            (Some(_), Some(_)) => {
                self.error(loc, format!("{key}.baseline"), "give `max_increase` or `max_increase_pct`, not both")
            }
            _ => {}
        }
        if v.below.is_some() || v.above.is_some() || v.between.is_some() {
            self.error(
                loc,
                format!("{key}.baseline"),
                "a baseline's threshold is its margin: drop below/above/between",
            );
        }
        if v.compare.is_some() {
            self.error(loc, format!("{key}.baseline"), "give `baseline` or `compare`, not both");
        }
        let interval = self.plan.analysis.interval.value;
        if b.value.window.value < interval {
            self.error(
                b.value.window.referenced,
                format!("{key}.baseline.window"),
                format!("`{}` is shorter than the analysis interval {interval}: the baseline averages the value at every interval of it", b.value.window.value),
            );
        }
        true
    }

    /// A statistical comparison (`compare:`) and its margin; whether the check has one.
    fn comparison(&mut self, v: &Check, key: &str) -> bool {
        let Some(cmp) = &v.compare else { return false };
        match (v.max_increase, v.max_increase_pct) {
            (None, None) => self.error(
                cmp.referenced,
                format!("{key}.compare"),
                "a comparison needs its margin: `max_increase` (absolute) or `max_increase_pct`",
            ),
            (Some(_), Some(_)) => self.error(
                cmp.referenced,
                format!("{key}.compare"),
                "give `max_increase` or `max_increase_pct`, not both",
            ),
            _ => {}
        }
        if v.below.is_some() || v.above.is_some() || v.between.is_some() {
            self.error(
                cmp.referenced,
                format!("{key}.compare"),
                "a comparison's threshold is its margin: drop below/above/between",
            );
        }
        if let (Compare::Control, Some(w)) = (cmp.value, &v.window) {
            self.error(
                w.referenced,
                format!("{key}.window"),
                "a comparison with control uses every request since the percentage took effect: `window` is for plain thresholds (and the baseline's period)",
            );
        }
        true
    }

    /// An action: the flag action (the controller's own) or a plug-in's, whose block its plug-in checks.
    fn action(&mut self, a: &Spanned<Action>, key: &str) {
        let loc = a.referenced;
        if let Some(f) = &a.value.flag {
            if !a.value.block.is_empty() {
                let kinds: Vec<String> = a.value.block.keys().map(|k| format!("`{}`", k.value)).collect();
                self.error(
                    loc,
                    key,
                    format!("a flag action sets another flag and nothing else: drop {}", kinds.join(", ")),
                );
            }
            self.flag_action(f, a, key);
            return;
        }
        let named = crate::kinds_named(&a.value.block, Family::Action, self.plugins);
        let kind = match (self.plugins.kinds(Family::Action), named.len()) {
            // Any kind: the plan's own rules only.
            (None, _) if a.value.block.is_empty() => {
                self.error(loc, key, "an action needs its kind's key, e.g. `exec: [program, args…]`, `webhook: {url: …}` or `flag: {key: …, percent: …}`");
                return;
            }
            (None, _) => return,
            (Some(_), 1) => named[0].clone(),
            (Some(_), 0) => {
                let known = self.known(Family::Action);
                self.error(loc, key, format!("an action needs one of {known} or `flag: {{key: …, percent: …}}`"));
                return;
            }
            (Some(_), _) => {
                let known = self.known(Family::Action);
                self.error(loc, key, format!("an action is one of {known} or `flag`: not several"));
                return;
            }
        };
        self.available(loc, PluginKind::action(&kind), key);
        let action = &a.value;
        let plugins = self.plugins;
        plugins.check_action(&kind, action, loc, &mut self.report(key));
    }

    fn flag_action(&mut self, f: &Spanned<FlagAction>, a: &Spanned<Action>, key: &str) {
        let at = format!("{key}.flag");
        let v = &f.value;
        if v.key.value == self.plan.flag.value {
            self.error(
                v.key.referenced,
                format!("{at}.key"),
                "the rollout's own flag is set by its phases; a flag action sets another flag",
            );
        }
        if v.enabled.is_none() && v.percent.is_none() && v.variant.is_none() {
            self.error(f.referenced, &at, "say what to set: `enabled`, `percent` or `variant`");
        }
        if let Some(p) = &v.percent {
            if !(0..=100).contains(&p.value) {
                self.error(p.referenced, format!("{at}.percent"), format!("{} is outside 0..100", p.value));
            }
        }
        if self.known_flag(v.key.referenced, &format!("{at}.key"), &v.key.value) {
            let catalog_flag = self.catalog.and_then(|c| c.flags.iter().find(|cf| cf.key == v.key.value));
            if let (Some(cf), Some(variant)) = (catalog_flag, &v.variant) {
                if !cf.variants.contains(&variant.value) {
                    let message = format!(
                        "flag `{}` has no variant `{}` (it has {})",
                        cf.key,
                        variant.value,
                        cf.variants.join(", ")
                    );
                    self.error(variant.referenced, format!("{at}.variant"), message);
                }
            }
        }
        if a.value.idempotent {
            self.note(
                a.referenced,
                format!("{key}.idempotent"),
                "a flag action sets a state: it is always safe to repeat",
            );
        }
    }

    /// One gate or trigger. `trigger` says which: where its value comes from, its margin or threshold,
    /// its timing, and what it does when it holds.
    fn check(&mut self, c: &Spanned<Check>, key: &str, trigger: bool) {
        let v = &c.value;
        if v.name.value.trim().is_empty() {
            self.error(v.name.referenced, format!("{key}.name"), "must not be empty");
        }
        let Some(source) = self.check_source(c, key, trigger) else { return };
        let margin = self.check_margin(c, key);
        self.check_threshold(c, key, source != SIGNAL && !margin);
        self.check_timing(c, key);
        self.check_severity(c, key, trigger);
    }

    /// Which source a check's value comes from, with that source's own rules; `None` when it cannot be
    /// told (reported), and the rest of the check would only add noise.
    fn check_source(&mut self, c: &Spanned<Check>, key: &str, trigger: bool) -> Option<String> {
        let (loc, v) = (c.referenced, &c.value);
        let kinds = self.plugins.kinds(Family::Source);
        let named = crate::kinds_named(&v.block, Family::Source, self.plugins);
        if v.source.is_none() && named.len() > 1 {
            self.error(
                loc,
                key,
                format!("give the keys of one source ({}), or say which with `source`", self.known(Family::Source)),
            );
            return None;
        }
        let resolved = v.source_kind(self.plan, self.plugins);
        // Without a registry any kind goes: its block is its plug-in's to check.
        let resolved = resolved.or_else(|| kinds.is_none().then(String::new));
        let Some(source) = resolved else {
            // Keys no source this server knows: each is refused, with the sources there are.
            let keys: Vec<String> = v.block.keys().map(|k| format!("`{}`", k.value)).collect();
            let first = v.block.keys().next().map_or(loc, |k| k.referenced);
            self.error(
                first,
                key,
                format!(
                    "{} {} not a key of a check; where does the value come from? give one of {} (or `source:`)",
                    keys.join(", "),
                    if keys.len() == 1 { "is" } else { "are" },
                    self.known(Family::Source)
                ),
            );
            return None;
        };
        if source == SIGNAL {
            self.check_signal(c, key, trigger);
            // A gate cannot be a signal (reported): nothing more to say about it.
            return trigger.then_some(source);
        }
        let info = match &kinds {
            None => None,
            Some(list) => match list.iter().find(|k| k.name == source) {
                Some(info) => Some(info.clone()),
                None => {
                    // `source:` as written; `analysis.source` is reported there, not at each check.
                    let at = v.source.as_ref()?.referenced;
                    let names: Vec<&str> = list.iter().map(|k| k.name.as_str()).collect();
                    self.error(
                        at,
                        format!("{key}.source"),
                        format!("unknown source `{source}`: this server has {}, and `signal`", names.join(", ")),
                    );
                    return None;
                }
            },
        };
        let supports = info.as_ref().map_or(Supports { compare: true, baseline: true, window: true }, |i| i.supports);
        for (present, field, ok) in [
            (v.compare.as_ref().map(|c| c.referenced), "compare", supports.compare),
            (v.baseline.as_ref().map(|b| b.referenced), "baseline", supports.baseline),
            (v.window.as_ref().map(|w| w.referenced), "window", supports.window),
        ] {
            if let (Some(at), false) = (present, ok) {
                self.error(at, format!("{key}.{field}"), format!("`{field}` does not apply to a `{source}` source"));
            }
        }
        if !source.is_empty() {
            self.available(loc, PluginKind::source(&source), key);
            let plugins = self.plugins;
            plugins.check_source(&source, v, trigger, loc, &mut self.report(key));
        }
        Some(source)
    }

    /// A trigger fired by a person or an alert: no source keys, nothing measured.
    fn check_signal(&mut self, c: &Spanned<Check>, key: &str, trigger: bool) {
        let (loc, v) = (c.referenced, &c.value);
        if !trigger {
            let message = if v.source.is_none() {
                format!("where does the value come from? give {}", self.known(Family::Source))
            } else {
                "a gate needs a measured value; `signal` is for triggers fired by a person or an alert".to_string()
            };
            self.error(loc, key, message);
            return;
        }
        if let Some(k) = v.block.keys().next() {
            self.error(
                k.referenced,
                format!("{key}.{}", k.value),
                "a signal is fired by a person or an alert: it has no source keys",
            );
        }
        for (present, field) in [
            (v.compare.as_ref().map(|c| c.referenced), "compare"),
            (v.baseline.as_ref().map(|b| b.referenced), "baseline"),
            (v.window.as_ref().map(|w| w.referenced), "window"),
        ] {
            if let Some(at) = present {
                self.error(at, format!("{key}.{field}"), format!("`{field}` does not apply to a `signal`"));
            }
        }
    }

    /// A margin (`baseline`, `compare`) and its error rate; whether the check has one (then it needs no
    /// threshold).
    fn check_margin(&mut self, c: &Spanned<Check>, key: &str) -> bool {
        let (loc, v) = (c.referenced, &c.value);
        let margin = self.baseline(v, key) || self.comparison(v, key);
        if !margin && (v.max_increase.is_some() || v.max_increase_pct.is_some()) {
            self.error(
                loc,
                format!("{key}.max_increase"),
                "a margin needs `compare: control | baseline` (a statistical comparison) or `baseline: {window: 1h}` (the value's own average before the start)",
            );
        }
        if let Some(a) = v.alpha {
            if !(0.0 < a && a < 0.5) {
                self.error(loc, format!("{key}.alpha"), "alpha is between 0 and 0.5, e.g. 0.05");
            }
            if v.compare.is_none() {
                self.error(
                    loc,
                    format!("{key}.alpha"),
                    "`alpha` is the error rate of a comparison: it needs `compare`",
                );
            }
        }
        margin
    }

    /// One finite threshold, unless the check has a margin or is a signal (`needed` false).
    fn check_threshold(&mut self, c: &Spanned<Check>, key: &str, needed: bool) {
        let (loc, v) = (c.referenced, &c.value);
        let thresholds = [v.below.is_some(), v.above.is_some(), v.between.is_some()].iter().filter(|b| **b).count();
        if needed && thresholds == 0 {
            self.error(
                loc,
                key,
                format!("`{}` has no threshold: add `below`, `above` or `between: [lo, hi]`", v.name.value),
            );
        }
        if thresholds > 1 {
            self.error(loc, key, "give one threshold: `below`, `above` or `between`");
        }
        let numbers = [v.below, v.above, v.max_increase, v.max_increase_pct]
            .into_iter()
            .flatten()
            .chain(v.between.iter().flat_map(|b| b.value.iter().copied()));
        if numbers.into_iter().any(|n| !n.is_finite()) {
            // `.nan` never compares true and `.inf` always does: the check would never pass, or never fire.
            self.error(loc, key, "thresholds must be finite numbers (not .nan or .inf)");
        }
        if let Some(b) = &v.between {
            if b.value.len() != 2 || b.value[0] >= b.value[1] {
                self.error(b.referenced, format!("{key}.between"), "needs [lo, hi] with lo < hi");
            }
        }
    }

    /// `timeout` and `for` against the plan's analysis interval.
    fn check_timing(&mut self, c: &Spanned<Check>, key: &str) {
        let v = &c.value;
        if let Some(t) = &v.timeout {
            if t.value.0.is_zero() {
                self.error(t.referenced, format!("{key}.timeout"), "a timeout longer than 0s");
            }
        }
        let interval = self.plan.analysis.interval.value;
        if let Some(f) = &v.for_ {
            if f.value < interval {
                self.error(f.referenced, format!("{key}.for"), format!("`for: {}` is shorter than the analysis interval {interval}: one tick already decides; drop `for` or make it longer", f.value));
            }
        }
    }

    /// What a trigger does when it holds (`severity` and a soft trigger's decision rule); a gate has none.
    fn check_severity(&mut self, c: &Spanned<Check>, key: &str, trigger: bool) {
        let (loc, v) = (c.referenced, &c.value);
        if trigger {
            match v.severity.as_ref().map(|s| s.value) {
                None => self.error(
                    loc,
                    format!("{key}.severity"),
                    "a trigger needs `severity: hard` (roll back at once) or `severity: soft` (pause and ask)",
                ),
                Some(Severity::Soft) => {
                    if v.decide_within.is_none() || v.default.is_none() {
                        self.error(loc, key, format!("soft trigger `{}` has no decision rule: add `decide_within: 1h` and `default: rollback` (or `resume`) for when nobody decides", v.name.value));
                    }
                }
                Some(Severity::Hard) => {
                    if let Some(d) = &v.decide_within {
                        self.error(
                            d.referenced,
                            format!("{key}.decide_within"),
                            "a hard trigger rolls back at once; only soft triggers wait for a decision",
                        );
                    }
                    if let Some(d) = &v.default {
                        self.error(
                            d.referenced,
                            format!("{key}.default"),
                            "a hard trigger rolls back at once; only soft triggers have a default decision",
                        );
                    }
                }
            }
        } else {
            for (present, field) in [
                (v.severity.as_ref().map(|s| s.referenced), "severity"),
                (v.decide_within.as_ref().map(|s| s.referenced), "decide_within"),
                (v.default.as_ref().map(|s| s.referenced), "default"),
            ] {
                if let Some(at) = present {
                    self.error(
                        at,
                        format!("{key}.{field}"),
                        format!("`{field}` is for triggers; a gate only blocks promotion"),
                    );
                }
            }
        }
    }

    fn notifier(&mut self, n: &Spanned<Notifier>, key: &str) {
        let named = crate::kinds_named(&n.value.block, Family::Notifier, self.plugins);
        match (self.plugins.kinds(Family::Notifier), named.len()) {
            (None, _) if n.value.block.is_empty() => self.error(
                n.referenced,
                key,
                "a notifier needs its kind's key, e.g. `slack: {url_env: …}`, `webhook: {url: …}` or `alertmanager: {url: …}`",
            ),
            (None, _) => {}
            (Some(_), 1) => {
                let kind = named[0].clone();
                self.available(n.referenced, PluginKind::notifier(&kind), key);
                let plugins = self.plugins;
                plugins.check_notifier(&kind, &n.value, n.referenced, &mut self.report(key));
            }
            (Some(_), 0) => {
                let known = self.known(Family::Notifier);
                self.error(n.referenced, key, format!("a notifier is one of {known}"));
            }
            (Some(_), _) => {
                let known = self.known(Family::Notifier);
                self.error(n.referenced, key, format!("one notifier per list item: {known}"));
            }
        }
        for (j, event) in n.value.on.iter().enumerate() {
            if !crate::EVENTS.iter().any(|(kind, _)| *kind == event.as_str()) {
                let known: Vec<&str> = crate::EVENTS.iter().map(|(k, _)| *k).collect();
                self.error(
                    n.referenced,
                    format!("{key}.on[{j}]"),
                    format!("no event `{event}`: one of {}", known.join(", ")),
                );
            }
        }
    }

    /// `analysis`: the plan's own settings, and each source's plan-wide settings (`analysis.prometheus`).
    fn analysis(&mut self) {
        let plan = self.plan;
        let a = &plan.analysis;
        if let Some(alpha) = a.alpha {
            if !(0.0 < alpha && alpha < 0.5) {
                self.error(a.interval.referenced, "analysis.alpha", "alpha is between 0 and 0.5, e.g. 0.05");
            }
        }
        if a.max_source_errors.value == 0 {
            self.error(
                a.max_source_errors.referenced,
                "analysis.max_source_errors",
                "at least 1: the number of source errors in a row that stops the rollout",
            );
        }
        if a.max_inconclusive.value == 0 {
            self.error(
                a.max_inconclusive.referenced,
                "analysis.max_inconclusive",
                "at least 1: the number of inconclusive ticks in a row after which people are told a trigger cannot fire",
            );
        }
        let kinds = self.plugins.kinds(Family::Source);
        if let (Some(s), Some(list)) = (&a.source, &kinds) {
            if s.value != SIGNAL && !list.iter().any(|k| k.name == s.value) {
                let names: Vec<&str> = list.iter().map(|k| k.name.as_str()).collect();
                self.error(
                    s.referenced,
                    "analysis.source",
                    format!("unknown source `{}`: this server has {}", s.value, names.join(", ")),
                );
            }
        }
        for (k, node) in &a.settings.entries {
            let key = format!("analysis.{}", k.value);
            match &kinds {
                None => {}
                Some(list) if list.iter().any(|i| i.name == k.value) => {
                    let plugins = self.plugins;
                    plugins.check_settings(&k.value, node, &mut self.report(&key));
                }
                Some(list) => {
                    let names: Vec<&str> = list.iter().map(|i| i.name.as_str()).collect();
                    self.error(
                        k.referenced,
                        key,
                        format!(
                            "unknown field `{}`: analysis takes {}, and a source's settings under its name ({})",
                            k.value,
                            ANALYSIS_KEYS.join(", "),
                            names.join(", ")
                        ),
                    );
                }
            }
        }
    }

    fn known_flag(&mut self, loc: Location, key: &str, flag: &str) -> bool {
        let Some(catalog) = self.catalog else { return true };
        if catalog.flags.iter().any(|f| f.key == flag) {
            true
        } else {
            self.error(loc, key, format!("unknown flag `{flag}`: create it first (`sluice flag create {flag}`)"));
            false
        }
    }

    fn ramp(&mut self, r: &Spanned<RampSpec>, key: &str, flag_known: bool) {
        if r.value.base.value == r.value.ramped.value {
            self.error(r.referenced, key, "`base` and `ramped` are the same variant");
        }
        let Some(catalog) = self.catalog.filter(|_| flag_known) else { return };
        let Some(flag) = catalog.flags.iter().find(|f| f.key == self.plan.flag.value) else { return };
        for (field, v) in [("base", &r.value.base), ("ramped", &r.value.ramped)] {
            if !flag.variants.contains(&v.value) {
                self.error(
                    v.referenced,
                    format!("{key}.{field}"),
                    format!("flag `{}` has no variant `{}` (it has {})", flag.key, v.value, flag.variants.join(", ")),
                );
            }
        }
    }

    /// Where a comparison with control has no control to compare with. At 100% the control is the one
    /// measured in the last phase that served one, for 24 hours: a 100% phase with none before it holds
    /// its control gates inconclusive for ever, and a bake longer than a day leaves its control triggers
    /// blind for the rest.
    fn control_reach(&mut self) {
        let plan = self.plan;
        let is_control = |c: &Spanned<Check>| c.value.compare.as_ref().is_some_and(|m| m.value == Compare::Control);
        let splits = |p: &Spanned<Phase>| p.value.percent.value > 0 && p.value.percent.value < 100;
        let first_split = plan.phases.iter().position(splits);
        for (i, p) in plan.phases.iter().enumerate() {
            if p.value.percent.value < 100 || first_split.is_some_and(|f| f < i) {
                continue;
            }
            let gates = plan.gates.iter().enumerate().map(|(j, g)| (format!("gates[{j}]"), g));
            let own = p.value.gates.iter().enumerate().map(|(j, g)| (format!("phases[{i}].gates[{j}]"), g));
            for (key, g) in gates.chain(own).filter(|(_, g)| is_control(g)).collect::<Vec<_>>() {
                let at = g.value.compare.as_ref().map_or(g.referenced, |c| c.referenced);
                self.error(
                    at,
                    format!("{key}.compare"),
                    format!(
                        "phase {} serves 100% and no phase before it served a control: this gate could never pass; \
                         compare with `baseline` (the value before the start) or add a phase below 100% first",
                        i + 1
                    ),
                );
            }
        }
        for (i, t) in plan.triggers.iter().enumerate().filter(|(_, t)| is_control(t)) {
            let at = t.value.compare.as_ref().map_or(t.referenced, |c| c.referenced);
            if first_split.is_none() {
                self.note(
                    at,
                    format!("triggers[{i}].compare"),
                    "no phase serves a percentage between 0 and 100, so there is never a control: this trigger never fires",
                );
            } else if plan.bake.as_ref().is_some_and(|b| b.value.0 > Duration::from_secs(24 * 3600)) {
                self.note(
                    at,
                    format!("triggers[{i}].compare"),
                    "at 100% a comparison with control uses the control of the last phase that had one, for 24 h: \
                     past that this trigger is inconclusive for the rest of the bake (add a threshold or a `baseline` trigger to watch it)",
                );
            }
        }
    }

    fn run(mut self) -> Vec<Problem> {
        let plan = self.plan;
        if plan.name.value.trim().is_empty() {
            self.error(plan.name.referenced, "name", "must not be empty");
        }
        let flag_known = self.known_flag(plan.flag.referenced, "flag", &plan.flag.value);
        for name in plan.vars.keys() {
            let ok = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok || crate::BUILTIN_TEMPLATES.contains(&name.as_str()) {
                self.error(
                    plan.flag.referenced,
                    format!("vars.{name}"),
                    "a variable name is letters, digits and `_`, and not a built-in template name",
                );
            }
        }
        self.analysis();
        if let Some(r) = &plan.ramp {
            self.ramp(r, "ramp", flag_known);
        }
        let mut plan_names = BTreeSet::new();
        for (i, g) in plan.gates.iter().enumerate() {
            self.check(g, &format!("gates[{i}]"), false);
            self.unique(&mut plan_names, g, &format!("gates[{i}].name"));
        }
        for (i, t) in plan.triggers.iter().enumerate() {
            self.check(t, &format!("triggers[{i}]"), true);
            self.unique(&mut plan_names, t, &format!("triggers[{i}].name"));
        }
        if plan.phases.is_empty() {
            self.error(plan.name.referenced, "phases", "a plan needs at least one phase");
        }
        let mut previous: Option<(String, String, i64)> = None;
        for (i, p) in plan.phases.iter().enumerate() {
            let key = format!("phases[{i}]");
            let ph = &p.value;
            if !(0..=100).contains(&ph.percent.value) {
                self.error(
                    ph.percent.referenced,
                    format!("{key}.percent"),
                    format!("{} is outside 0..100", ph.percent.value),
                );
            }
            if let Some(r) = &ph.ramp {
                self.ramp(r, &format!("{key}.ramp"), flag_known);
            }
            let ramp = ph
                .ramp
                .as_ref()
                .or(plan.ramp.as_ref())
                .map(|r| (r.value.base.value.clone(), r.value.ramped.value.clone()))
                .unwrap_or_default();
            if let Some((base, ramped, pct)) = &previous {
                if (base, ramped) == (&ramp.0, &ramp.1) && ph.percent.value <= *pct {
                    self.error(
                        ph.percent.referenced,
                        format!("{key}.percent"),
                        format!("percentages must increase from phase to phase: {} after {pct}", ph.percent.value),
                    );
                }
            }
            previous = Some((ramp.0, ramp.1, ph.percent.value));
            for (j, s) in ph.segments.iter().enumerate() {
                if let Some(catalog) = self.catalog {
                    if !catalog.segments.contains(&s.value) {
                        self.error(
                            s.referenced,
                            format!("{key}.segments[{j}]"),
                            format!(
                                "unknown segment `{}` (create it with `sluice segment set {} --constraint …`)",
                                s.value, s.value
                            ),
                        );
                    }
                }
            }
            let mut approvals = BTreeSet::new();
            for (j, a) in ph.approvals.iter().enumerate() {
                if a.value.item.trim().is_empty() || !approvals.insert(a.value.item.clone()) {
                    self.error(
                        a.referenced,
                        format!("{key}.approvals[{j}]"),
                        "approval items are unique, non-empty names",
                    );
                }
            }
            let mut names = plan_names.clone();
            for (j, g) in ph.gates.iter().enumerate() {
                self.check(g, &format!("{key}.gates[{j}]"), false);
                self.unique(&mut names, g, &format!("{key}.gates[{j}].name"));
            }
            for (j, a) in ph.hooks.before.iter().enumerate() {
                self.action(a, &format!("{key}.hooks.before[{j}]"));
            }
            for (j, a) in ph.hooks.after.iter().enumerate() {
                self.action(a, &format!("{key}.hooks.after[{j}]"));
            }
        }
        self.control_reach();
        for (i, f) in plan.rollback.flags_off.iter().enumerate() {
            if f.value == plan.flag.value {
                self.error(
                    f.referenced,
                    format!("rollback.flags_off[{i}]"),
                    "the plan's own flag is restored by the rollback already",
                );
            } else {
                self.known_flag(f.referenced, &format!("rollback.flags_off[{i}]"), &f.value);
            }
        }
        for (i, a) in plan.rollback.actions.iter().enumerate() {
            self.action(a, &format!("rollback.actions[{i}]"));
        }
        let mut confirm_names = BTreeSet::new();
        for (i, c) in plan.confirm.iter().enumerate() {
            let key = format!("confirm[{i}]");
            let name = &c.value.name;
            if name.value.trim().is_empty() {
                self.error(name.referenced, format!("{key}.name"), "must not be empty");
            } else if !confirm_names.insert(name.value.clone()) {
                self.error(
                    name.referenced,
                    format!("{key}.name"),
                    format!("a second confirm gate named `{}`", name.value),
                );
            }
            if c.value.before.is_empty() {
                self.error(
                    c.referenced,
                    format!("{key}.before"),
                    "say which steps it guards: `start`, `increase`, `promotion`",
                );
            }
            // The call is checked as the webhook action it becomes.
            let action = Spanned::new(c.value.action(), c.referenced, c.defined);
            self.action(&action, &key);
        }
        for (i, n) in plan.notify.iter().enumerate() {
            self.notifier(n, &format!("notify[{i}]"));
        }
        for (kind, (loc, keys)) in std::mem::take(&mut self.unavailable) {
            let first = keys[0].clone();
            let more = if keys.len() > 1 {
                format!(" (and {} more: {})", keys.len() - 1, keys[1..].join(", "))
            } else {
                String::new()
            };
            let report = &mut self.report("");
            report.at(
                Level::Unavailable,
                loc,
                &first,
                format!("{kind} is not available on this server{more}: the plan is valid but cannot start here"),
            );
        }
        self.problems
    }

    fn unique(&mut self, names: &mut BTreeSet<String>, c: &Spanned<Check>, key: &str) {
        if !names.insert(c.value.name.value.clone()) {
            self.error(
                c.value.name.referenced,
                key,
                format!("a second check named `{}`: names identify checks in decisions", c.value.name.value),
            );
        }
    }
}

/// The programs a plan runs (`exec` actions and hooks, `command` checks, as their plug-ins say), by the
/// name it gives them: starting such a plan takes an admin, or an operator when the server allows each of
/// them.
pub fn programs(plan: &Plan, plugins: &dyn Capabilities) -> BTreeSet<String> {
    let actions = plan
        .rollback
        .actions
        .iter()
        .chain(plan.phases.iter().flat_map(|p| p.value.hooks.before.iter().chain(p.value.hooks.after.iter())))
        .filter_map(|a| a.value.kind(plugins).map(|k| (k, &a.value.block)))
        .flat_map(|(kind, block)| plugins.programs(Family::Action, &kind, block));
    let checks =
        plan.gates.iter().chain(plan.triggers.iter()).chain(plan.phases.iter().flat_map(|p| p.value.gates.iter()));
    let checks = checks
        .filter_map(|c| c.value.source_kind(plan, plugins).map(|k| (k, &c.value.block)))
        .flat_map(|(kind, block)| plugins.programs(Family::Source, &kind, block));
    actions.chain(checks).collect()
}

/// Every problem of a parsed plan, errors and notes, in file order, assuming every kind of source, action
/// and notifier exists and checking none of their blocks: the plan's own rules. [`check_with`] checks
/// blocks too, and names what a given server cannot run.
pub fn check(file: &str, plan: &Plan, catalog: Option<&Catalog>) -> Vec<Problem> {
    check_with(file, plan, catalog, &AllPlugins)
}

/// [`check`] against a server's plug-ins: each block checked by its plug-in, unknown kinds refused, and a
/// note for each kind the plan uses that `plugins` knows but cannot run (a plan with such a note is valid
/// but cannot start on that server).
pub fn check_with(file: &str, plan: &Plan, catalog: Option<&Catalog>, plugins: &dyn Capabilities) -> Vec<Problem> {
    let checker = Checker { file, plan, catalog, plugins, problems: Vec::new(), unavailable: Default::default() };
    let mut problems = checker.run();
    problems.sort_by_key(|p| (p.line, p.column));
    problems
}
