//! Printer columns: what `kubectl get` shows for each kind (`meta.k8s.io/v1` Table).
//!
//! Every kind's columns start with `Name` and include `Age`; columns with `priority > 0` appear
//! only with `-o wide`. Cells are computed in Rust from the typed object, as kube-apiserver's
//! printers do for built-in kinds; ages are rendered on the server, as it does for CRDs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

/// A `TableColumnDefinition`.
#[derive(Clone, Copy, Debug)]
pub struct PrinterColumn {
    pub name: &'static str,
    /// OpenAPI type: `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: &'static str,
    /// `name` for the object name column (kubectl uses it to find the name).
    pub format: &'static str,
    pub description: &'static str,
    pub priority: i32,
}

impl PrinterColumn {
    pub const fn string(name: &'static str, description: &'static str) -> Self {
        Self {
            name,
            type_: "string",
            format: "",
            description,
            priority: 0,
        }
    }

    pub const fn integer(name: &'static str, description: &'static str) -> Self {
        Self {
            name,
            type_: "integer",
            format: "",
            description,
            priority: 0,
        }
    }

    pub const fn wide(mut self) -> Self {
        self.priority = 1;
        self
    }

    pub const NAME: PrinterColumn = PrinterColumn {
        name: "Name",
        type_: "string",
        format: "name",
        description:
            "Name must be unique within a namespace. More info: \
                      https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
        priority: 0,
    };

    pub const AGE: PrinterColumn = PrinterColumn {
        name: "Age",
        type_: "string",
        format: "",
        description: "CreationTimestamp is a timestamp representing the server time when this \
                      object was created.",
        priority: 0,
    };
}

/// The `Age` cell: how long ago `created` was, in kubectl's short form, or `<unknown>`.
pub fn age(created: Option<&Time>, now: Timestamp) -> Value {
    match created {
        Some(t) => Value::from(human_duration(now.as_second() - t.0.as_second())),
        None => Value::from("<unknown>"),
    }
}

/// A string cell, or `null` (kubectl prints `<none>`) when absent or empty.
pub fn text(s: Option<&str>) -> Value {
    match s {
        Some(s) if !s.is_empty() => Value::from(s),
        _ => Value::Null,
    }
}

/// Renders a duration in seconds as kubectl does (`45s`, `3m20s`, `5h`, `2d3h`, `3y12d`).
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        let years = hours / 24 / 365;
        return if days == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{days}d")
        };
    }
    format!("{}y", hours / 24 / 365)
}
