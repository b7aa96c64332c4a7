//! The evaluation context: who is asking. Field names and semantics follow the Unleash context.

use serde::{Deserialize, Deserializer, Serialize};

/// Who is asking: the Unleash context. Build one per request; evaluation only borrows it.
///
/// ```
/// use sluice_flags::Context;
/// let ctx = Context::new().user_id("user-123").property("tenant", "acme");
/// assert_eq!(ctx.get("tenant"), Some("acme"));
/// assert_eq!(ctx.get("userId"), Some("user-123"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Context {
    /// The user; the first choice of `default` stickiness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The session; the second choice of `default` stickiness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The client's IP address, for `remoteAddress` and `IN_CIDR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_address: Option<String>,
    /// e.g. `production`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// The calling application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_name: Option<String>,
    /// RFC 3339 time for `DATE_*` constraints; the wall clock when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_time: Option<String>,
    /// Every other field. A short list beats a hash map here: contexts carry a handful of properties, and a
    /// linear scan of a few short keys is faster than hashing one.
    #[serde(default, deserialize_with = "properties", serialize_with = "serialize_properties")]
    pub properties: Vec<(String, String)>,
}

impl Context {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `userId`.
    pub fn user_id(mut self, v: impl Into<String>) -> Self {
        self.user_id = Some(v.into());
        self
    }

    /// Sets `sessionId`.
    pub fn session_id(mut self, v: impl Into<String>) -> Self {
        self.session_id = Some(v.into());
        self
    }

    /// Sets `remoteAddress`.
    pub fn remote_address(mut self, v: impl Into<String>) -> Self {
        self.remote_address = Some(v.into());
        self
    }

    /// Sets `environment`.
    pub fn environment(mut self, v: impl Into<String>) -> Self {
        self.environment = Some(v.into());
        self
    }

    /// Sets `appName`.
    pub fn app_name(mut self, v: impl Into<String>) -> Self {
        self.app_name = Some(v.into());
        self
    }

    /// Sets `currentTime` (RFC 3339).
    pub fn current_time(mut self, v: impl Into<String>) -> Self {
        self.current_time = Some(v.into());
        self
    }

    /// Sets a property, replacing an earlier value of the same name.
    pub fn property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.set_property(name.into(), value.into());
        self
    }

    /// Sets a property in place, replacing an earlier value of the same name.
    pub fn set_property(&mut self, name: String, value: String) {
        match self.properties.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.properties.push((name, value)),
        }
    }

    /// A field by its Unleash name: the standard fields first, then properties.
    pub fn get(&self, name: &str) -> Option<&str> {
        match name {
            "userId" => self.user_id.as_deref(),
            "sessionId" => self.session_id.as_deref(),
            "remoteAddress" => self.remote_address.as_deref(),
            "environment" => self.environment.as_deref(),
            "appName" => self.app_name.as_deref(),
            "currentTime" => self.current_time.as_deref(),
            _ => self.property_value(name),
        }
    }

    /// A property by name.
    #[inline]
    pub fn property_value(&self, name: &str) -> Option<&str> {
        self.properties.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

fn properties<'de, D>(d: D) -> Result<Vec<(String, String)>, D::Error>
where
    D: Deserializer<'de>,
{
    // A JSON `null` property means "not set" (Unleash SDKs drop it); numbers and booleans become text.
    let raw = Option::<std::collections::BTreeMap<String, serde_json::Value>>::deserialize(d)?;
    Ok(raw
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| match v {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some((k, s)),
            other => Some((k, other.to_string())),
        })
        .collect())
}

fn serialize_properties<S: serde::Serializer>(props: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(props.len()))?;
    for (k, v) in props {
        map.serialize_entry(k, v)?;
    }
    map.end()
}
