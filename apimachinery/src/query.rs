//! Query parameters as kube-apiserver's parameter codec reads them (`runtime.ParameterCodec`
//! over `url.Values`, `k8s.io/apimachinery/pkg/runtime/conversion.go`).
//!
//! A query string is a sequence of `key=value` pairs separated by `&`, each percent-decoded with
//! `+` as a space; `key` alone is `key=`. A key may repeat: kube keeps every value in order and
//! each option reads the **first** one (`Convert_Slice_string_To_*` take `in[0]`).
//!
//! Booleans (`watch`, `allowWatchBookmarks`, `sendInitialEvents`, `force`, …) follow
//! `Convert_Slice_string_To_bool`:
//!
//! | query                          | value  |
//! |--------------------------------|--------|
//! | absent                         | false  |
//! | `watch=0`, `watch=false`, `watch=FALSE`, `watch=False` | false |
//! | `watch=1`, `watch=true`, `watch=yes`, `watch=` , `watch` | true |
//! | `watch=true&watch=false`       | true (the first value) |
//!
//! kube never rejects a boolean value: anything but `0` and `false` (any case) is true, the
//! empty value included. We therefore never answer 400 for one either.
//!
//! Integers (`limit`, `timeoutSeconds`) are `strconv.ParseInt(v, 10, 64)` of the first value:
//! present but not an integer (the empty value included) is a decoding error.

use std::borrow::Cow;

/// A decoded query string: every `(key, value)` pair in order, as Go's `url.Values` keeps them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryParams<'a> {
    pairs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> QueryParams<'a> {
    /// Decodes `query` (without the leading `?`); `None` is the empty query.
    pub fn parse(query: Option<&'a str>) -> Self {
        let pairs = form_urlencoded::parse(query.unwrap_or_default().as_bytes()).collect();
        Self { pairs }
    }

    /// The first value of `name`, as every kube option reads it.
    pub fn first(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    }

    /// Every value of `name`, in order (`dryRun` is the one option that reads them all).
    pub fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    }

    /// Whether `name` occurs at all.
    pub fn contains(&self, name: &str) -> bool {
        self.first(name).is_some()
    }

    /// The boolean `name` (see the module table).
    pub fn flag(&self, name: &str) -> bool {
        bool_value(self.first(name))
    }

    /// The 64-bit integer `name`: `Ok(None)` when absent, an error when present and not an
    /// integer.
    pub fn int(&self, name: &str) -> Result<Option<i64>, InvalidInteger> {
        self.first(name)
            .map(|v| {
                v.parse::<i64>().map_err(|_| InvalidInteger {
                    name: name.to_owned(),
                    value: v.to_owned(),
                })
            })
            .transpose()
    }
}

/// A query parameter that must be an integer and is not.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for {name}: {value:?}: not an integer")]
pub struct InvalidInteger {
    /// The parameter.
    pub name: String,
    /// What it said.
    pub value: String,
}

/// kube's `Convert_Slice_string_To_bool` of a parameter's first value (`None`: absent).
pub fn bool_value(first: Option<&str>) -> bool {
    match first {
        None => false,
        Some(v) => v != "0" && !v.eq_ignore_ascii_case("false"),
    }
}

/// The boolean `name` of a raw query string, without decoding the rest into a
/// [`QueryParams`].
pub fn flag(query: Option<&str>, name: &str) -> bool {
    bool_value(QueryParams::parse(query).first(name))
}

#[cfg(test)]
mod tests;
