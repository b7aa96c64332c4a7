//! Metric sources, one file each, each behind [`Source`](crate::Source): one line each below. Which source a
//! check uses is [`Check::source_kind`](sluice_plan::model::Check::source_kind): its `source:`, else the
//! source whose key it has (`query`, `metric`, `http`, `command`, `json`).

plugins! { add_source:
    builtin => |c: &crate::Config| builtin::Builtin::new(c.metrics.clone()),
    command => command::Command::new,
    http => http::Http::new,
    json => json::Json::new,
    prometheus => prometheus::Prometheus::new,
}
