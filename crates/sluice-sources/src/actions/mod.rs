//! Actions, one file each, each behind [`ActionRunner`](crate::ActionRunner): one line each below.

plugins! { add_action:
    exec => exec::Exec::new,
    webhook => webhook::Webhook::new,
}
