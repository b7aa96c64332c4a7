//! Importing an Unleash client-API export as Sluice flags. Every feature must map onto one ramp and its
//! overrides exactly — same buckets, same answers — or the import fails naming the feature and field:
//! a migration that silently changed cohorts would be worse than none.

use crate::unleash::{ClientFeatures, Feature};
use crate::{Flag, FlagError, Override, SegmentDef};

/// The flags and segments an Unleash export describes, or the first thing that cannot be expressed.
///
/// ```
/// let export: sluice_flags::unleash::ClientFeatures = serde_json::from_value(serde_json::json!({
///     "version": 2,
///     "features": [{"name": "awf_bundle", "enabled": true, "strategies": [
///         {"name": "flexibleRollout", "parameters": {"rollout": "25", "stickiness": "default", "groupId": "awf_bundle"}},
///         {"name": "userWithId", "parameters": {"userIds": "user-123, user-7"}}]}]
/// })).unwrap();
/// let (flags, _) = sluice_flags::import::from_unleash(&export).unwrap();
/// assert_eq!(flags[0].ramp.percent, 25);
/// assert_eq!(flags[0].overrides.len(), 2);
/// ```
pub fn from_unleash(state: &ClientFeatures) -> Result<(Vec<Flag>, Vec<SegmentDef>), FlagError> {
    let segments: Vec<SegmentDef> = state
        .segments
        .iter()
        .flatten()
        .map(|s| SegmentDef {
            id: s.id,
            name: s.name.clone().unwrap_or_else(|| format!("segment-{}", s.id)),
            description: String::new(),
            constraints: s.constraints.clone(),
        })
        .collect();
    let flags = state.features.iter().map(|f| flag_of(f, &segments)).collect::<Result<Vec<_>, _>>()?;
    Ok((flags, segments))
}

fn flag_of(f: &Feature, segments: &[SegmentDef]) -> Result<Flag, FlagError> {
    let err = |field: String, message: String| FlagError { flag: f.name.clone(), field, message };
    if f.variants.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(err("variants".into(), "feature variants cannot be imported yet; remove them or recreate the flag with `sluice flag create --variants`".into()));
    }
    if f.dependencies.as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(err("dependencies".into(), "dependent features cannot be imported yet".into()));
    }
    let mut flag = Flag::boolean(&f.name);
    flag.enabled = f.enabled;
    flag.description = f.description.clone().unwrap_or_default();
    if f.strategies.is_empty() {
        flag.ramp.percent = 100;
    }
    let mut ramp_seen = false;
    for (i, s) in f.strategies.iter().enumerate() {
        let field = |k: &str| format!("strategies[{i}].{k}");
        if s.variants.as_ref().is_some_and(|v| !v.is_empty()) {
            return Err(err(field("variants"), "strategy variants cannot be imported yet".into()));
        }
        let param = |k: &str| s.parameters.as_ref().and_then(|p| p.get(k)).map(String::as_str);
        if s.name == "userWithId" {
            if s.constraints.as_ref().is_some_and(|c| !c.is_empty())
                || s.segments.as_ref().is_some_and(|c| !c.is_empty())
            {
                return Err(err(
                    field("constraints"),
                    "a userWithId strategy with constraints has no Sluice equivalent".into(),
                ));
            }
            for user in param("userIds").unwrap_or("").split(',').map(str::trim).filter(|u| !u.is_empty()) {
                if !flag.overrides.iter().any(|o| o.value == user) {
                    flag.overrides.push(Override::enable("userId", user));
                }
            }
            continue;
        }
        let (percent_key, stickiness) = match s.name.as_str() {
            "default" => (None, "default".to_string()),
            "flexibleRollout" => (Some("rollout"), param("stickiness").unwrap_or("default").to_string()),
            "gradualRolloutUserId" => (Some("percentage"), "userId".to_string()),
            "gradualRolloutSessionId" => (Some("percentage"), "sessionId".to_string()),
            "gradualRolloutRandom" => (Some("percentage"), "random".to_string()),
            other => {
                return Err(err(field("name"), format!("the `{other}` strategy has no Sluice equivalent; express it as constraints on a flexibleRollout")));
            }
        };
        if ramp_seen {
            return Err(err(field("name"), "a Sluice flag has one ramp; this feature has several rollout strategies — merge them or split the feature".into()));
        }
        ramp_seen = true;
        if let Some(group) = param("groupId") {
            if group != f.name && s.name != "default" {
                return Err(err(field("parameters.groupId"), format!("groupId `{group}` differs from the flag key; Sluice buckets by the key, so users would change cohort")));
            }
        }
        flag.ramp.percent = match percent_key {
            None => 100,
            Some(k) => {
                let raw = param(k).unwrap_or("0");
                raw.trim().parse::<u8>().ok().filter(|p| *p <= 100).ok_or_else(|| {
                    err(field(&format!("parameters.{k}")), format!("`{raw}` is not a whole percentage 0..100"))
                })?
            }
        };
        flag.ramp.stickiness = stickiness;
        flag.ramp.constraints = s.constraints.clone().unwrap_or_default();
        for (j, id) in s.segments.iter().flatten().enumerate() {
            let seg = segments.iter().find(|d| d.id == *id).ok_or_else(|| {
                err(field(&format!("segments[{j}]")), format!("segment id {id} is not in the export"))
            })?;
            flag.ramp.segments.push(seg.name.clone());
        }
    }
    Ok(flag)
}
