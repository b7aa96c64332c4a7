//! The Unleash client-API model: the JSON an Unleash SDK fetches from `/api/client/features`, and the delta
//! events of the streaming API.
//!
//! These types are the single source of truth for what a flag says. Sluice's own flag model
//! ([`crate::Flag`]) compiles into them, so that an Unleash SDK evaluating the same JSON locally agrees with
//! Sluice for every context. Parsing is deliberately lenient where Unleash is lenient (unknown operators and
//! strategy names parse, and then never match), and strict where a wrong type would change an answer.
//!
//! ```
//! let json = r#"{"version":2,"features":[{"name":"checkout","enabled":true,
//!   "strategies":[{"name":"flexibleRollout","parameters":{"rollout":"25","stickiness":"default","groupId":"checkout"}}]}]}"#;
//! let state: sluice_flags::unleash::ClientFeatures = serde_json::from_str(json).unwrap();
//! assert_eq!(state.features[0].name, "checkout");
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// The body of `GET /api/client/features`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ClientFeatures {
    /// Format version; Unleash servers send 2.
    #[serde(default = "default_version")]
    pub version: u32,
    /// Every feature, in a stable order.
    #[serde(default)]
    pub features: Vec<Feature>,
    /// Segments referenced by strategies through their ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<Vec<Segment>>,
}

fn default_version() -> u32 {
    2
}

/// One feature toggle.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Feature {
    /// The toggle's name (Sluice: the flag key).
    pub name: String,
    /// `false` turns the toggle off for everyone: the kill switch.
    pub enabled: bool,
    /// Strategies, OR'd; an enabled feature with none is on for everyone.
    #[serde(default, deserialize_with = "null_as_default")]
    pub strategies: Vec<Strategy>,
    /// Feature-level variants, used when the matching strategy carries none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variants: Option<Vec<Variant>>,
    /// Parent features that must hold for this one to be enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependencies: Option<Vec<Dependency>>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Unleash's toggle type (`release`, `experiment`, …); informational.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Unleash project; informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale: Option<bool>,
    /// Informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impression_data: Option<bool>,
}

/// A targeting rule: the named activation check, its constraints (AND) and segments (AND).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Strategy {
    /// `default`, `flexibleRollout`, `userWithId`, `gradualRolloutUserId`, `gradualRolloutSessionId`,
    /// `gradualRolloutRandom`, `remoteAddress`, `applicationHostname`. Any other name never matches.
    pub name: String,
    /// Strategy parameters; Unleash sends strings, some exports send numbers.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "parameters")]
    pub parameters: Option<BTreeMap<String, String>>,
    /// Constraints, all of which must hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Vec<Constraint>>,
    /// Ids of segments whose constraints must all hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<Vec<i64>>,
    /// Variants served when this strategy is the first to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variants: Option<Vec<Variant>>,
}

/// One condition on a context field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Constraint {
    /// `userId`, `sessionId`, `remoteAddress`, `environment`, `appName`, `currentTime`, or a property name.
    pub context_name: String,
    /// The operator name, e.g. `IN`, `STR_CONTAINS`, `SEMVER_GT`, `REGEX`, `IN_CIDR`. An unknown operator
    /// parses and never matches, as in every Unleash SDK.
    pub operator: String,
    /// Values of list operators (`IN`, `NOT_IN`, `STR_*`, `IN_CIDR`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    /// Value of single-value operators (`NUM_*`, `DATE_*`, `SEMVER_*`, `REGEX`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Negates the result.
    #[serde(default, skip_serializing_if = "is_false")]
    pub inverted: bool,
    /// For `STR_*` and `REGEX`: compare ignoring case.
    #[serde(default, skip_serializing_if = "is_false")]
    pub case_insensitive: bool,
}

/// A named, reusable list of constraints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Segment {
    /// The id strategies refer to.
    pub id: i64,
    /// Human name (e.g. `internal_qa`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Constraints, all of which must hold.
    #[serde(default)]
    pub constraints: Vec<Constraint>,
}

/// A variant of a feature or strategy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Variant {
    /// Variant name, returned to the SDK.
    pub name: String,
    /// Relative weight; the bucket is `murmur3(groupId:stickiness, 86028157) % sum + 1`.
    pub weight: u32,
    /// `fix` or `variable`: how the Unleash UI splits weights; clients ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_type: Option<String>,
    /// Context field that picks the bucket; `default` means userId, then sessionId, then random.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stickiness: Option<String>,
    /// Data returned with the variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Payload>,
    /// Contexts pinned to this variant (feature-level variants only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<Vec<VariantOverride>>,
}

/// A variant's payload: Unleash always transports the value as a string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Payload {
    /// `string`, `json`, `csv` or `number`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The value, as text.
    pub value: String,
}

/// Pins contexts whose field has one of `values` to a feature-level variant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct VariantOverride {
    /// The context field.
    pub context_name: String,
    /// The values that select the variant.
    pub values: Vec<String>,
}

/// A parent a feature depends on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Dependency {
    /// The parent feature's name.
    pub feature: String,
    /// `false`: the parent must be disabled. Absent or `true`: enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// When non-empty, the parent's variant must be one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variants: Option<Vec<String>>,
}

/// One event of Unleash's delta API (`/api/client/delta`), applied in order to a [`ClientFeatures`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum DeltaEvent {
    /// Replaces the whole state.
    #[serde(rename_all = "camelCase")]
    Hydration {
        /// Monotonic event id.
        event_id: u64,
        /// Every feature.
        features: Vec<Feature>,
        /// Every segment.
        #[serde(default)]
        segments: Vec<Segment>,
    },
    /// Adds or replaces one feature.
    #[serde(rename_all = "camelCase")]
    FeatureUpdated {
        /// Monotonic event id.
        event_id: u64,
        /// The new feature.
        feature: Feature,
    },
    /// Removes one feature.
    #[serde(rename_all = "camelCase")]
    FeatureRemoved {
        /// Monotonic event id.
        event_id: u64,
        /// The removed feature's name.
        feature_name: String,
        /// Its project.
        #[serde(default)]
        project: Option<String>,
    },
    /// Adds or replaces one segment.
    #[serde(rename_all = "camelCase")]
    SegmentUpdated {
        /// Monotonic event id.
        event_id: u64,
        /// The new segment.
        segment: Segment,
    },
    /// Removes one segment.
    #[serde(rename_all = "camelCase")]
    SegmentRemoved {
        /// Monotonic event id.
        event_id: u64,
        /// The removed segment's id.
        segment_id: i64,
    },
}

impl ClientFeatures {
    /// Applies delta events in order, exactly as an Unleash SDK consuming the delta stream would.
    ///
    /// ```
    /// use sluice_flags::unleash::{ClientFeatures, DeltaEvent, Feature};
    /// let mut state = ClientFeatures::default();
    /// state.apply(&[DeltaEvent::FeatureUpdated { event_id: 1,
    ///     feature: Feature { name: "a".into(), enabled: true, ..Default::default() } }]);
    /// assert_eq!(state.features.len(), 1);
    /// ```
    pub fn apply(&mut self, events: &[DeltaEvent]) {
        for event in events {
            match event {
                DeltaEvent::Hydration { features, segments, .. } => {
                    self.features = features.clone();
                    self.segments = Some(segments.clone());
                }
                DeltaEvent::FeatureUpdated { feature, .. } => {
                    match self.features.iter_mut().find(|f| f.name == feature.name) {
                        Some(existing) => *existing = feature.clone(),
                        None => self.features.push(feature.clone()),
                    }
                }
                DeltaEvent::FeatureRemoved { feature_name, .. } => {
                    self.features.retain(|f| &f.name != feature_name);
                }
                DeltaEvent::SegmentUpdated { segment, .. } => {
                    let segments = self.segments.get_or_insert_with(Vec::new);
                    match segments.iter_mut().find(|s| s.id == segment.id) {
                        Some(existing) => *existing = segment.clone(),
                        None => segments.push(segment.clone()),
                    }
                }
                DeltaEvent::SegmentRemoved { segment_id, .. } => {
                    if let Some(segments) = self.segments.as_mut() {
                        segments.retain(|s| s.id != *segment_id);
                    }
                }
            }
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Unleash parameters are strings, but exports and hand-written files carry numbers and booleans too.
fn parameters<'de, D>(d: D) -> Result<Option<BTreeMap<String, String>>, D::Error>
where
    D: Deserializer<'de>,
{
    let raw = Option::<BTreeMap<String, serde_json::Value>>::deserialize(d)?;
    Ok(raw.map(|map| {
        map.into_iter()
            .filter_map(|(k, v)| {
                let text = match v {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Null => return None,
                    other => other.to_string(),
                };
                Some((k, text))
            })
            .collect()
    }))
}
