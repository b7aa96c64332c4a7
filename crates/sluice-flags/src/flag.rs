//! Sluice's flag model — variants, a ramp, overrides with expiry, the kill switch — and its compilation to
//! an Unleash feature, so that an Unleash SDK evaluating the compiled feature locally answers exactly as
//! Sluice does.
//!
//! The compiled feature, strongest first:
//! 1. `enabled: false` when the kill switch is off (everyone gets the first, "off", variant);
//! 2. one `flexibleRollout` 100% strategy per group of overrides that pin a variant (`enable` pins the
//!    ramped one), constrained by `field IN [values]` and, when they expire, `currentTime DATE_BEFORE t`;
//! 3. the ramp: `flexibleRollout` at the percentage carrying the ramped variant, within the ramp's segments
//!    and constraints;
//! 4. when the base variant is not the off variant (a mode such as `warn`), a 100% strategy carrying it.
//!
//! "Disable for this context" overrides are `NOT_IN` constraints on every strategy, so they win over pins and
//! the ramp. Expiring ones are exact too: the strategies are repeated once per interval between expiry
//! instants, each copy guarded by `currentTime` and excluding only the overrides still in force then.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ofrep::{Reason, Resolution};
use crate::snapshot::payload_value;
use crate::unleash::{Constraint, Feature, Payload, Segment, Strategy, Variant};

/// Most distinct expiry instants of "disable" overrides one flag may carry: each adds one copy of every
/// strategy to the compiled feature.
pub const MAX_EXPIRING_DISABLES: usize = 32;

/// A feature flag as Sluice stores it.
///
/// ```
/// use sluice_flags::{Context, Flag, Override, Snapshot};
/// let mut flag = Flag::boolean("awf_bundle");
/// flag.ramp.percent = 25;
/// flag.overrides.push(Override::enable("userId", "user-123"));
/// let snap = Snapshot::from_flags(vec![flag], vec![]).unwrap();
/// assert!(snap.is_enabled("awf_bundle", &Context::new().user_id("user-123")));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Flag {
    /// Unique key: letters, digits, `_`, `-`, `.`.
    #[cfg_attr(feature = "openapi", schema(required = false))]
    pub key: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The kill switch: `false` serves the off variant to everyone.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The variants; the first is the **off** variant, served when the flag is disabled.
    #[serde(default = "boolean_variants")]
    pub variants: Vec<FlagVariant>,
    /// Who gets which variant.
    #[serde(default)]
    pub ramp: Ramp,
    /// Pinned answers for single context values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<Override>,
}

/// One variant of a flag and the value it serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FlagVariant {
    /// Variant name (`off`, `on`, `warn`, `enforce`, …).
    pub name: String,
    /// The value OFREP serves: boolean, string, number or JSON object; every variant of a flag has the same type.
    pub value: Value,
}

/// The ramp: at `percent`, contexts whose bucket is `<= percent` get `ramped`, every other eligible one `base`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Ramp {
    /// The variant outside the ramp (`off`, or the current mode such as `warn`).
    #[serde(default = "off")]
    pub base: String,
    /// The variant inside the ramp (`on`, `enforce`).
    #[serde(default = "on")]
    pub ramped: String,
    /// 0..=100.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(maximum = 100))]
    pub percent: u8,
    /// The context field that picks the bucket: `default` (userId, then sessionId, then random), `userId`,
    /// `sessionId`, `random`, or any property.
    #[serde(default = "default_stickiness")]
    pub stickiness: String,
    /// Eligibility: when non-empty, the ramp applies only within these segments (AND).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<String>,
    /// Eligibility: extra constraints (AND).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Constraint>,
}

impl Default for Ramp {
    fn default() -> Self {
        Ramp {
            base: off(),
            ramped: on(),
            percent: 0,
            stickiness: default_stickiness(),
            segments: Vec::new(),
            constraints: Vec::new(),
        }
    }
}

/// A pinned answer for one context value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// The context field: `userId`, `sessionId`, or any property.
    pub field: String,
    /// The value of that field this override is for.
    pub value: String,
    /// What it does.
    pub action: OverrideAction,
    /// When it stops applying (exclusive); never when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// What an override does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OverrideAction {
    /// Serve the ramped variant.
    Enable,
    /// Serve the off variant (Unleash: not enabled). Wins over every other override.
    Disable,
    /// Serve this variant.
    Variant(String),
}

impl Override {
    /// `field = value` gets the ramped variant.
    pub fn enable(field: &str, value: &str) -> Self {
        Override { field: field.into(), value: value.into(), action: OverrideAction::Enable, expires_at: None }
    }

    /// `field = value` gets the off variant.
    pub fn disable(field: &str, value: &str) -> Self {
        Override { field: field.into(), value: value.into(), action: OverrideAction::Disable, expires_at: None }
    }

    /// `field = value` gets `variant`.
    pub fn variant(field: &str, value: &str, variant: &str) -> Self {
        Override {
            field: field.into(),
            value: value.into(),
            action: OverrideAction::Variant(variant.into()),
            expires_at: None,
        }
    }

    /// The same override, expiring at `at`.
    pub fn until(mut self, at: DateTime<Utc>) -> Self {
        self.expires_at = Some(at);
        self
    }
}

/// A named, reusable list of constraints (e.g. `internal_qa`), with the id Unleash SDKs see.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SegmentDef {
    /// Stable numeric id (Unleash strategies refer to segments by id).
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Constraints, all of which must hold.
    pub constraints: Vec<Constraint>,
}

impl SegmentDef {
    /// The Unleash form.
    pub fn to_unleash(&self) -> Segment {
        Segment { id: self.id, name: Some(self.name.clone()), constraints: self.constraints.clone() }
    }
}

/// An invalid flag: which flag, which field, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagError {
    /// The flag key.
    pub flag: String,
    /// The field path, e.g. `ramp.percent` or `overrides[2].action`.
    pub field: String,
    /// What is wrong and what would be right.
    pub message: String,
}

impl std::fmt::Display for FlagError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "flag `{}`, field `{}`: {}", self.flag, self.field, self.message)
    }
}

impl std::error::Error for FlagError {}

/// The operators Sluice accepts when a flag is written (Unleash SDKs treat any other as "never").
pub const OPERATORS: &[&str] = &[
    "IN",
    "NOT_IN",
    "STR_CONTAINS",
    "STR_STARTS_WITH",
    "STR_ENDS_WITH",
    "NUM_EQ",
    "NUM_GT",
    "NUM_GTE",
    "NUM_LT",
    "NUM_LTE",
    "DATE_AFTER",
    "DATE_BEFORE",
    "SEMVER_EQ",
    "SEMVER_GT",
    "SEMVER_GTE",
    "SEMVER_LT",
    "SEMVER_LTE",
    "REGEX",
    "IN_CIDR",
];

/// The rule for a new flag key or segment name: 1 to 100 characters, each a Unicode letter or digit or
/// one of `-_.!~*'()` (what `encodeURIComponent` leaves as it is), and not `.` or `..`. Such a key is the
/// same in a URL path as in the catalog, so the CLI and every SDK reach it; the Unicode letters are the
/// ones Unleash's client specification uses (`Feature.UTF-8.Hellø_Wørld`). Keys stored before this rule
/// keep working: it applies when a key is created.
///
/// ```
/// use sluice_flags::check_key;
/// assert!(check_key("checkout.v2-beta").is_ok());
/// assert!(check_key("Feature.UTF-8.Hellø_Wørld").is_ok());
/// assert!(check_key("..").unwrap_err().contains("`.` and `..`"));
/// assert!(check_key("a/b").unwrap_err().contains("`/`"));
/// assert!(check_key(&"x".repeat(101)).unwrap_err().contains("1 to 100"));
/// ```
pub fn check_key(key: &str) -> Result<(), String> {
    let n = key.chars().count();
    if n == 0 || n > 100 {
        return Err(format!("must be 1 to 100 characters (this one has {n})"));
    }
    if key == "." || key == ".." {
        return Err("`.` and `..` are path segments in a URL, not keys: the CLI and SDKs could never reach it".into());
    }
    if let Some(c) = key.chars().find(|c| !(c.is_alphanumeric() || "-_.!~*'()".contains(*c))) {
        let shown = if c.is_whitespace() || c.is_control() { format!("{:?}", c) } else { format!("`{c}`") };
        return Err(format!(
            "{shown} is not allowed: a key is letters, digits and `-_.!~*'()` (what a URL path carries as it is)"
        ));
    }
    Ok(())
}

/// Checks one constraint as a writer would want: a known operator with values of the right form.
pub fn validate_constraint(c: &Constraint) -> Result<(), (String, String)> {
    if c.context_name.trim().is_empty() {
        return Err(("contextName".into(), "must name a context field".into()));
    }
    if !OPERATORS.contains(&c.operator.as_str()) {
        return Err((
            "operator".into(),
            format!("unknown operator `{}`; expected one of {}", c.operator, OPERATORS.join(", ")),
        ));
    }
    let list = matches!(
        c.operator.as_str(),
        "IN" | "NOT_IN" | "STR_CONTAINS" | "STR_STARTS_WITH" | "STR_ENDS_WITH" | "IN_CIDR"
    );
    if list {
        if c.values.is_none() {
            return Err(("values".into(), format!("`{}` needs a list of values", c.operator)));
        }
        if c.operator == "IN_CIDR" {
            for (i, v) in c.values.iter().flatten().enumerate() {
                if crate::constraint::parse_net(v).is_none() {
                    return Err((format!("values[{i}]"), format!("`{v}` is not an IP address or CIDR range")));
                }
            }
        }
        return Ok(());
    }
    let Some(v) = c.value.as_deref() else {
        return Err(("value".into(), format!("`{}` needs a single value", c.operator)));
    };
    let ok = match c.operator.as_str() {
        op if op.starts_with("NUM_") => v.trim().parse::<f64>().is_ok_and(|n| n.is_finite()),
        op if op.starts_with("DATE_") => crate::constraint::parse_date(v).is_some(),
        op if op.starts_with("SEMVER_") => semver::Version::parse(v).is_ok(),
        _ => crate::constraint::build_regex(v, c.case_insensitive).is_ok(),
    };
    if ok {
        Ok(())
    } else {
        Err(("value".into(), format!("`{v}` is not a valid value for `{}`", c.operator)))
    }
}

/// What a Sluice flag says beyond its Unleash form: the typed value of each variant, which variant is off,
/// and why each compiled strategy matches (the OFREP reason).
#[derive(Debug, Clone)]
pub(crate) struct FlagMeta {
    values: Vec<(Box<str>, Value)>,
    /// Index into `values` served when the flag is off or does not target the context.
    off: usize,
    /// Index into `values` served when the flag is on with no variant (plain Unleash boolean features).
    on: Option<usize>,
    base_is_off: bool,
    reasons: Box<[Reason]>,
    /// The stickiness field of a partial ramp (1..=99%): without it a context cannot be bucketed stably.
    pub(crate) split_on: Option<Box<str>>,
}

impl FlagMeta {
    /// Plain Unleash features: booleans without variants; otherwise the variants' payloads.
    pub(crate) fn for_unleash(f: &Feature) -> FlagMeta {
        let mut values: Vec<(Box<str>, Value)> = Vec::new();
        let all = f.variants.iter().flatten().chain(f.strategies.iter().flat_map(|s| s.variants.iter().flatten()));
        for v in all {
            if !values.iter().any(|(n, _)| **n == *v.name) {
                let value = v.payload.as_ref().map_or_else(|| Value::String(v.name.clone()), payload_value);
                values.push((v.name.as_str().into(), value));
            }
        }
        let reasons = f.strategies.iter().map(|_| Reason::TargetingMatch).collect();
        if values.is_empty() {
            FlagMeta {
                values: vec![("off".into(), Value::Bool(false)), ("on".into(), Value::Bool(true))],
                off: 0,
                on: Some(1),
                base_is_off: true,
                reasons,
                split_on: None,
            }
        } else {
            values.push((crate::snapshot::DISABLED_VARIANT.into(), Value::Null));
            FlagMeta { off: values.len() - 1, values, on: None, base_is_off: true, reasons, split_on: None }
        }
    }

    pub(crate) fn reason_of(&self, strategy: usize) -> Reason {
        self.reasons.get(strategy).copied().unwrap_or(Reason::TargetingMatch)
    }

    /// Not enabled while the kill switch is on: the base when the base is off; otherwise a disable override
    /// matched (the only way a flag with an enabled base mode stays off).
    pub(crate) fn not_enabled_reason(&self) -> Reason {
        if self.base_is_off {
            Reason::Default
        } else {
            Reason::TargetingMatch
        }
    }

    /// The names of the values the flag can serve, in order: every OFREP answer's variant is one of them.
    pub(crate) fn value_names(&self) -> impl Iterator<Item = &str> + Clone {
        self.values.iter().map(|(n, _)| &**n)
    }

    pub(crate) fn resolution<'s>(&'s self, key: &'s str, variant: Option<&str>, reason: Reason) -> Resolution<'s> {
        let i = match variant {
            None => self.off,
            Some(name) => self.values.iter().position(|(n, _)| **n == *name).or(self.on).unwrap_or(self.off),
        };
        let (name, value) = &self.values[i];
        Resolution { key, value, variant: name, reason }
    }
}

impl Flag {
    /// A boolean flag: variants `off` = false, `on` = true, ramp `off` → `on` at 0%, enabled.
    pub fn boolean(key: &str) -> Flag {
        Flag {
            key: key.into(),
            description: String::new(),
            enabled: true,
            variants: boolean_variants(),
            ramp: Ramp::default(),
            overrides: Vec::new(),
        }
    }

    /// A flag whose variants are string modes, e.g. `off`, `warn`, `enforce`: the first is the off variant and
    /// the ramp goes from the first to the second.
    pub fn modes(key: &str, modes: &[&str]) -> Flag {
        let variants: Vec<FlagVariant> =
            modes.iter().map(|m| FlagVariant { name: (*m).into(), value: Value::String((*m).into()) }).collect();
        let mut flag = Flag::boolean(key);
        flag.ramp.base = modes.first().copied().unwrap_or("off").into();
        flag.ramp.ramped = modes.get(1).copied().unwrap_or("on").into();
        flag.variants = variants;
        flag
    }

    /// The off variant: the first.
    pub fn off_variant(&self) -> &str {
        self.variants.first().map_or("off", |v| &v.name)
    }

    /// Checks everything a writer can get wrong, naming the field. `segments` are the known segments.
    pub fn validate(&self, segments: &[SegmentDef]) -> Result<(), FlagError> {
        let err = |field: &str, message: String| FlagError { flag: self.key.clone(), field: field.into(), message };
        // A key the rule of an earlier version let in (up to 200 ASCII letters, digits, `_-.`) keeps
        // working; the store holds new ones to `check_key` when they are created.
        let earlier_rule = !self.key.is_empty()
            && self.key.len() <= 200
            && self.key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !earlier_rule {
            check_key(&self.key).map_err(|message| err("key", message))?;
        }
        if self.variants.is_empty() {
            return Err(err("variants", "needs at least one variant; the first is served when the flag is off".into()));
        }
        for (i, v) in self.variants.iter().enumerate() {
            if v.name.is_empty() || v.name == crate::snapshot::DISABLED_VARIANT {
                return Err(err(
                    &format!("variants[{i}].name"),
                    "must be non-empty and not `disabled` (reserved by Unleash)".into(),
                ));
            }
            if self.variants[..i].iter().any(|w| w.name == v.name) {
                return Err(err(&format!("variants[{i}].name"), format!("duplicate variant `{}`", v.name)));
            }
            if v.value.is_null() || value_kind(&v.value) != value_kind(&self.variants[0].value) {
                return Err(err(
                    &format!("variants[{i}].value"),
                    format!("must be a {} like the first variant's value", value_kind(&self.variants[0].value)),
                ));
            }
        }
        let known = |name: &str| self.variants.iter().any(|v| v.name == name);
        if !known(&self.ramp.base) {
            return Err(err("ramp.base", format!("unknown variant `{}`", self.ramp.base)));
        }
        if !known(&self.ramp.ramped) {
            return Err(err("ramp.ramped", format!("unknown variant `{}`", self.ramp.ramped)));
        }
        if self.ramp.percent > 100 {
            return Err(err("ramp.percent", format!("{} is outside 0..100", self.ramp.percent)));
        }
        if self.ramp.stickiness.trim().is_empty() {
            return Err(err("ramp.stickiness", "must name a context field or `default`".into()));
        }
        for (i, s) in self.ramp.segments.iter().enumerate() {
            if !segments.iter().any(|d| &d.name == s) {
                return Err(err(&format!("ramp.segments[{i}]"), format!("unknown segment `{s}`")));
            }
        }
        for (i, c) in self.ramp.constraints.iter().enumerate() {
            validate_constraint(c).map_err(|(f, m)| err(&format!("ramp.constraints[{i}].{f}"), m))?;
        }
        let mut expiring = Vec::new();
        for (i, o) in self.overrides.iter().enumerate() {
            if o.field.trim().is_empty() {
                return Err(err(&format!("overrides[{i}].field"), "must name a context field".into()));
            }
            if let OverrideAction::Variant(v) = &o.action {
                if !known(v) {
                    return Err(err(&format!("overrides[{i}].action"), format!("unknown variant `{v}`")));
                }
            }
            if o.expires_at.is_some_and(|t| !(0..=9999).contains(&t.year())) {
                // Unleash dates have four-digit years: a later expiry could not be written as a constraint.
                return Err(err(&format!("overrides[{i}].expires_at"), "a year from 0 to 9999".to_string()));
            }
            if self.overrides[..i].iter().any(|p| p.field == o.field && p.value == o.value) {
                return Err(err(
                    &format!("overrides[{i}]"),
                    format!("a second override for {} = {}", o.field, o.value),
                ));
            }
            if let (OverrideAction::Disable, Some(t)) = (&o.action, o.expires_at) {
                if !expiring.contains(&t) {
                    expiring.push(t);
                }
            }
        }
        if expiring.len() > MAX_EXPIRING_DISABLES {
            return Err(err(
                "overrides",
                format!("at most {MAX_EXPIRING_DISABLES} distinct expiry times for `disable` overrides; give some the same expiry"),
            ));
        }
        Ok(())
    }

    /// The Unleash feature this flag compiles to, and what OFREP needs beyond it.
    pub(crate) fn compile(&self, segments: &[SegmentDef]) -> Result<(Feature, FlagMeta), FlagError> {
        self.validate(segments)?;
        let variant = |name: &str, stickiness: &str| {
            let v = self.variants.iter().find(|v| v.name == name).expect("validated");
            Variant {
                name: v.name.clone(),
                weight: 1000,
                weight_type: Some("variable".into()),
                stickiness: Some(stickiness.into()),
                payload: Some(payload_of(&v.value)),
                overrides: None,
            }
        };
        let rollout = |percent: u8, stickiness: &str| {
            let mut p = BTreeMap::new();
            p.insert("rollout".to_string(), percent.to_string());
            p.insert("stickiness".to_string(), stickiness.to_string());
            p.insert("groupId".to_string(), self.key.clone());
            Some(p)
        };

        // Strategies before the disable guards, with the reason each one stands for.
        let mut plain: Vec<(Strategy, Reason)> = Vec::new();

        // Pins, grouped so that a long list of users costs one strategy: same field, target and expiry.
        let mut pins: BTreeMap<PinGroup<'_>, Vec<String>> = BTreeMap::new();
        for o in &self.overrides {
            let target = match &o.action {
                OverrideAction::Disable => continue,
                OverrideAction::Enable => self.ramp.ramped.as_str(),
                OverrideAction::Variant(v) => v.as_str(),
            };
            pins.entry((field_rank(&o.field), &o.field, target, o.expires_at)).or_default().push(o.value.clone());
        }
        for ((_, field, target, expires), values) in pins {
            let mut constraints = vec![Constraint {
                context_name: field.into(),
                operator: "IN".into(),
                values: Some(values),
                ..Default::default()
            }];
            if let Some(t) = expires {
                constraints.push(time_constraint("DATE_BEFORE", t, false));
            }
            plain.push((
                Strategy {
                    name: "flexibleRollout".into(),
                    parameters: rollout(100, "default"),
                    constraints: Some(constraints),
                    segments: None,
                    variants: Some(vec![variant(target, "default")]),
                },
                Reason::TargetingMatch,
            ));
        }

        let segment_ids: Vec<i64> = self
            .ramp
            .segments
            .iter()
            .map(|name| segments.iter().find(|s| &s.name == name).expect("validated").id)
            .collect();
        // The ramp's assignment at every percentage, 100 included: a context the ramp serves is the canary
        // (OFREP `SPLIT`) whether it is one of a hundred or all of them, so that checks of the ramped
        // variant keep counting at 100% and through the bake. Overrides say `TARGETING_MATCH`.
        let ramp_reason = Reason::Split;
        plain.push((
            Strategy {
                name: "flexibleRollout".into(),
                parameters: rollout(self.ramp.percent, &self.ramp.stickiness),
                constraints: Some(self.ramp.constraints.clone()),
                segments: if segment_ids.is_empty() { None } else { Some(segment_ids) },
                variants: Some(vec![variant(&self.ramp.ramped, &self.ramp.stickiness)]),
            },
            ramp_reason,
        ));
        let base_is_off = self.ramp.base == self.off_variant();
        if !base_is_off {
            plain.push((
                Strategy {
                    name: "flexibleRollout".into(),
                    parameters: rollout(100, &self.ramp.stickiness),
                    constraints: Some(Vec::new()),
                    segments: None,
                    variants: Some(vec![variant(&self.ramp.base, &self.ramp.stickiness)]),
                },
                Reason::Default,
            ));
        }

        let (strategies, reasons) = self.guard_with_disables(plain);
        let feature = Feature {
            name: self.key.clone(),
            enabled: self.enabled,
            strategies,
            variants: Some(Vec::new()),
            dependencies: None,
            description: if self.description.is_empty() { None } else { Some(self.description.clone()) },
            kind: Some("release".into()),
            project: Some("default".into()),
            stale: Some(false),
            impression_data: Some(false),
        };
        let values: Vec<(Box<str>, Value)> =
            self.variants.iter().map(|v| (v.name.as_str().into(), v.value.clone())).collect();
        let split_on = (self.ramp.percent > 0 && self.ramp.percent < 100 && self.ramp.stickiness != "random")
            .then(|| self.ramp.stickiness.as_str().into());
        let meta = FlagMeta { values, off: 0, on: None, base_is_off, reasons: reasons.into_boxed_slice(), split_on };
        Ok((feature, meta))
    }

    /// Adds the "disable" overrides to every strategy as `NOT_IN` constraints; see the module doc for how
    /// expiring ones stay exact.
    fn guard_with_disables(&self, plain: Vec<(Strategy, Reason)>) -> (Vec<Strategy>, Vec<Reason>) {
        let disables: Vec<&Override> = self.overrides.iter().filter(|o| o.action == OverrideAction::Disable).collect();
        let mut instants: Vec<DateTime<Utc>> = disables.iter().filter_map(|o| o.expires_at).collect();
        instants.sort();
        instants.dedup();
        // Window k covers [instants[k-1], instants[k]); the overrides in force there expire after its start.
        let mut strategies = Vec::new();
        let mut reasons = Vec::new();
        for k in 0..=instants.len() {
            let start = k.checked_sub(1).map(|i| instants[i]);
            let end = instants.get(k).copied();
            let mut guards: Vec<Constraint> = Vec::new();
            if let Some(t) = start {
                guards.push(time_constraint("DATE_BEFORE", t, true));
            }
            if let Some(t) = end {
                guards.push(time_constraint("DATE_BEFORE", t, false));
            }
            let mut excluded: BTreeMap<(u8, &str), Vec<String>> = BTreeMap::new();
            for o in &disables {
                if o.expires_at.is_none_or(|t| start.is_none_or(|s| t > s)) {
                    excluded.entry((field_rank(&o.field), &o.field)).or_default().push(o.value.clone());
                }
            }
            for ((_, field), values) in excluded {
                guards.push(Constraint {
                    context_name: field.into(),
                    operator: "NOT_IN".into(),
                    values: Some(values),
                    ..Default::default()
                });
            }
            for (s, reason) in &plain {
                let mut s = s.clone();
                let mut constraints = guards.clone();
                constraints.extend(s.constraints.take().unwrap_or_default());
                s.constraints = Some(constraints);
                strategies.push(s);
                reasons.push(*reason);
            }
        }
        (strategies, reasons)
    }
}

/// Pins that compile to one strategy: (field order, field, target variant, expiry).
type PinGroup<'a> = (u8, &'a str, &'a str, Option<DateTime<Utc>>);

fn field_rank(field: &str) -> u8 {
    match field {
        "userId" => 0,
        "sessionId" => 1,
        _ => 2,
    }
}

/// `currentTime DATE_BEFORE t` (now < t), or inverted (now >= t): together they tile time with no gap.
fn time_constraint(op: &str, t: DateTime<Utc>, inverted: bool) -> Constraint {
    Constraint {
        context_name: "currentTime".into(),
        operator: op.into(),
        value: Some(t.to_rfc3339_opts(SecondsFormat::Millis, true)),
        inverted,
        ..Default::default()
    }
}

fn value_kind(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "boolean",
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Object(_) | Value::Array(_) => "JSON object",
        Value::Null => "null",
    }
}

/// The Unleash payload of a variant value, so that Unleash SDKs see the same data.
fn payload_of(v: &Value) -> Payload {
    match v {
        Value::String(s) => Payload { kind: "string".into(), value: s.clone() },
        Value::Number(n) => Payload { kind: "number".into(), value: n.to_string() },
        other => Payload { kind: "json".into(), value: other.to_string() },
    }
}

fn yes() -> bool {
    true
}
fn off() -> String {
    "off".into()
}
fn on() -> String {
    "on".into()
}
fn default_stickiness() -> String {
    "default".into()
}
fn boolean_variants() -> Vec<FlagVariant> {
    vec![
        FlagVariant { name: "off".into(), value: Value::Bool(false) },
        FlagVariant { name: "on".into(), value: Value::Bool(true) },
    ]
}
