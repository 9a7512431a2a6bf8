//! The per-block tag index: attribute names per scope and the distinct values of resource
//! and span attributes, built while a block is encoded and stored beside it
//! (`tags.json.zst`).
//!
//! Blocks never change, so their tags can be computed once. Without the index, the first
//! tag-values request after a start scans the attribute columns of every block in range
//! (seconds on a few million spans); with it, one small read per block answers Grafana's
//! dropdowns. The index is an accelerator only: anything it does not hold completely
//! (a high-cardinality attribute, a block written before it existed) is answered by the
//! scan, so it never changes an answer.
//!
//! What counts as a name or value mirrors the search path exactly: attributes whose value
//! has a TraceQL type (string, int, double, bool, arrays of those); kvlist and bytes values
//! are neither names nor values there, nor here. Values are stored as the typed text the
//! tag-values API returns (`f64`'s and `i64`'s `Display`), which also keeps NaN out of
//! the JSON.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::otlp::{OtlpKeyValue, OtlpValue};

/// Distinct values one attribute may have before it is left to the scan. Dropdowns want
/// tens of values; an ID-like attribute would only bloat every block's index.
const MAX_VALUES_PER_KEY: usize = 1_000;

/// Bytes of values one index holds at most; attributes first seen after this are not
/// indexed (`values_truncated`).
const MAX_VALUE_BYTES: usize = 4 << 20;

/// Names one scope may list before the scope is left to the scan.
const MAX_NAMES_PER_SCOPE: usize = 10_000;

/// The zstd level of the stored index: small objects, read once per block.
const ZSTD_LEVEL: i32 = 3;

/// Attribute scopes as named in the index (and in TraceQL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexScope {
    Resource,
    Span,
    Event,
    Link,
    Instrumentation,
}

/// A value's TraceQL type, as the v2 tag-values API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexedType {
    String,
    Int,
    Float,
    Bool,
}

/// The stored object. `v1` is the only version; a reader that meets another one ignores
/// the index and scans.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TagIndex {
    /// Attribute names per scope. A scope missing here with `names_complete` has none.
    pub names: BTreeMap<IndexScope, BTreeSet<String>>,
    /// Scopes whose names overflowed [`MAX_NAMES_PER_SCOPE`]: not answerable here.
    pub names_overflowed: BTreeSet<IndexScope>,
    /// Every distinct value of each indexed resource and span attribute.
    pub values: BTreeMap<IndexScope, BTreeMap<String, BTreeSet<(IndexedType, String)>>>,
    /// Attributes with more than [`MAX_VALUES_PER_KEY`] values: not answerable here.
    pub values_overflowed: BTreeMap<IndexScope, BTreeSet<String>>,
    /// Set when the byte budget ran out: an attribute absent from `values` may still
    /// exist in the block.
    pub values_truncated: bool,
}

/// What the index knows about one attribute's values.
#[derive(Debug, PartialEq)]
pub enum IndexedValues<'a> {
    /// Every value in the block (possibly none).
    Complete(Option<&'a BTreeSet<(IndexedType, String)>>),
    /// Ask the data file.
    Unknown,
}

#[derive(Debug, thiserror::Error)]
pub enum TagIndexError {
    #[error("tag index is not valid zstd: {0}")]
    Compression(#[source] std::io::Error),
    #[error("tag index is not valid JSON for any known version: {0}")]
    Json(#[from] serde_json::Error),
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
enum VersionedTagIndex {
    #[serde(rename = "v1")]
    V1(TagIndex),
}

impl TagIndex {
    /// Names of one scope, when the index holds all of them.
    pub fn names(&self, scope: IndexScope) -> Option<Vec<&str>> {
        if self.names_overflowed.contains(&scope) {
            return None;
        }
        Some(
            self.names
                .get(&scope)
                .map(|names| names.iter().map(String::as_str).collect())
                .unwrap_or_default(),
        )
    }

    /// Values of a resource or span attribute.
    pub fn values(&self, scope: IndexScope, key: &str) -> IndexedValues<'_> {
        if !matches!(scope, IndexScope::Resource | IndexScope::Span)
            || self
                .values_overflowed
                .get(&scope)
                .is_some_and(|keys| keys.contains(key))
        {
            return IndexedValues::Unknown;
        }
        match self.values.get(&scope).and_then(|keys| keys.get(key)) {
            Some(values) => IndexedValues::Complete(Some(values)),
            None if self.values_truncated => IndexedValues::Unknown,
            None => IndexedValues::Complete(None),
        }
    }

    /// zstd-compressed, versioned JSON.
    ///
    /// # Errors
    /// Serialization or compression failed.
    pub fn encode(&self) -> Result<Vec<u8>, TagIndexError> {
        let json = serde_json::to_vec(&VersionedTagIndex::V1(self.clone()))?;
        zstd::bulk::compress(&json, ZSTD_LEVEL).map_err(TagIndexError::Compression)
    }

    /// # Errors
    /// Not zstd, not JSON, or an unknown version.
    pub fn decode(bytes: &[u8]) -> Result<TagIndex, TagIndexError> {
        let json = zstd::stream::decode_all(bytes).map_err(TagIndexError::Compression)?;
        match serde_json::from_slice::<VersionedTagIndex>(&json)? {
            VersionedTagIndex::V1(index) => Ok(index),
        }
    }

    /// Rough in-memory size, for caches.
    pub fn approximate_bytes(&self) -> usize {
        let names: usize = self.names.values().flatten().map(|n| n.len() + 32).sum();
        let values: usize = self
            .values
            .values()
            .flat_map(|keys| keys.iter())
            .map(|(key, values)| {
                key.len() + values.iter().map(|(_, v)| v.len() + 40).sum::<usize>()
            })
            .sum();
        names + values
    }
}

/// Collects a block's tags while it is encoded. This runs for every attribute of every
/// span at each cut, so the common case (a name and value already seen) is a few hash
/// lookups on borrowed keys: no allocation, numbers kept as numbers until `finish`.
#[derive(Debug, Default)]
pub struct TagIndexBuilder {
    /// Per [`IndexScope`], by its position in `SCOPES`.
    names: [HashSet<String>; 5],
    /// Resource (0) and span (1) attribute values.
    values: [HashMap<String, ValueSet>; 2],
    values_overflowed: [BTreeSet<String>; 2],
    value_bytes: usize,
    values_truncated: bool,
}

const SCOPES: [IndexScope; 5] = [
    IndexScope::Resource,
    IndexScope::Span,
    IndexScope::Event,
    IndexScope::Link,
    IndexScope::Instrumentation,
];

#[derive(Debug, Default)]
struct ValueSet {
    strings: HashSet<String>,
    ints: HashSet<i64>,
    /// Bit patterns, so NaN is one value like any other.
    floats: HashSet<u64>,
    bools: [bool; 2],
}

impl ValueSet {
    fn len(&self) -> usize {
        self.strings.len()
            + self.ints.len()
            + self.floats.len()
            + self.bools.iter().filter(|seen| **seen).count()
    }

    /// Adds a value, or an array's scalar items (nested arrays have no TraceQL meaning);
    /// returns the bytes it added.
    fn insert(&mut self, value: &OtlpValue) -> usize {
        match value {
            OtlpValue::StringValue(s) => {
                if self.strings.contains(s.as_str()) {
                    return 0;
                }
                self.strings.insert(s.clone());
                s.len()
            }
            OtlpValue::IntValue(i) => usize::from(self.ints.insert(*i)) * 8,
            OtlpValue::DoubleValue(x) => usize::from(self.floats.insert(x.to_bits())) * 8,
            OtlpValue::BoolValue(b) => {
                self.bools[usize::from(*b)] = true;
                0
            }
            OtlpValue::ArrayValue(array) => array
                .values
                .iter()
                .filter_map(|item| item.value.as_ref())
                .filter(|item| !matches!(item, OtlpValue::ArrayValue(_)))
                .map(|item| self.insert(item))
                .sum(),
            _ => 0,
        }
    }

    fn into_typed(self) -> BTreeSet<(IndexedType, String)> {
        let strings = self.strings.into_iter().map(|s| (IndexedType::String, s));
        let ints = self
            .ints
            .into_iter()
            .map(|i| (IndexedType::Int, i.to_string()));
        let floats = self
            .floats
            .into_iter()
            .map(|bits| (IndexedType::Float, f64::from_bits(bits).to_string()));
        let bools = [false, true]
            .into_iter()
            .filter(|b| self.bools[usize::from(*b)])
            .map(|b| (IndexedType::Bool, b.to_string()));
        strings.chain(ints).chain(floats).chain(bools).collect()
    }
}

impl TagIndexBuilder {
    /// Adds one attribute list of `scope`: names for every scope, values for resource and
    /// span attributes.
    pub fn add(&mut self, scope: IndexScope, attributes: &[OtlpKeyValue]) {
        // Declaration order, as in `SCOPES`.
        let position = scope as usize;
        for kv in attributes {
            let Some(value) = kv.value.as_ref().and_then(|v| v.value.as_ref()) else {
                continue;
            };
            if !has_traceql_type(value) {
                continue;
            }
            let names = &mut self.names[position];
            if names.len() <= MAX_NAMES_PER_SCOPE && !names.contains(kv.key.as_str()) {
                names.insert(kv.key.clone());
            }
            if position < self.values.len() {
                self.add_value(position, &kv.key, value);
            }
        }
    }

    fn add_value(&mut self, position: usize, key: &str, value: &OtlpValue) {
        let keys = &mut self.values[position];
        let set = match keys.get_mut(key) {
            Some(set) => set,
            None => {
                if self.values_overflowed[position].contains(key) {
                    return;
                }
                if self.value_bytes >= MAX_VALUE_BYTES {
                    self.values_truncated = true;
                    return;
                }
                self.value_bytes += key.len();
                keys.entry(key.to_string()).or_default()
            }
        };
        self.value_bytes += set.insert(value);
        if set.len() > MAX_VALUES_PER_KEY {
            keys.remove(key);
            self.values_overflowed[position].insert(key.to_string());
        }
    }

    pub fn finish(self) -> TagIndex {
        let mut index = TagIndex {
            values_truncated: self.values_truncated,
            ..TagIndex::default()
        };
        for (scope, names) in SCOPES.into_iter().zip(self.names) {
            if names.len() > MAX_NAMES_PER_SCOPE {
                index.names_overflowed.insert(scope);
            } else if !names.is_empty() {
                index.names.insert(scope, names.into_iter().collect());
            }
        }
        for ((scope, keys), overflowed) in SCOPES
            .into_iter()
            .zip(self.values)
            .zip(self.values_overflowed)
        {
            if !keys.is_empty() {
                let keys = keys
                    .into_iter()
                    .map(|(key, set)| (key, set.into_typed()))
                    .collect();
                index.values.insert(scope, keys);
            }
            if !overflowed.is_empty() {
                index.values_overflowed.insert(scope, overflowed);
            }
        }
        index
    }
}

/// Whether the search path sees this value (see `search::convert::attr_value`).
fn has_traceql_type(value: &OtlpValue) -> bool {
    matches!(
        value,
        OtlpValue::StringValue(_)
            | OtlpValue::BoolValue(_)
            | OtlpValue::IntValue(_)
            | OtlpValue::DoubleValue(_)
            | OtlpValue::ArrayValue(_)
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::otlp::{OtlpAnyValue, OtlpArrayValue};

    fn kv(key: &str, value: OtlpValue) -> OtlpKeyValue {
        OtlpKeyValue {
            key: key.to_string(),
            value: Some(OtlpAnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    #[test]
    fn values_are_typed_text_and_arrays_flatten() {
        let mut builder = TagIndexBuilder::default();
        builder.add(
            IndexScope::Span,
            &[
                kv("s", OtlpValue::StringValue("a".into())),
                kv("i", OtlpValue::IntValue(-3)),
                kv("f", OtlpValue::DoubleValue(f64::NAN)),
                kv("b", OtlpValue::BoolValue(true)),
                kv(
                    "arr",
                    OtlpValue::ArrayValue(OtlpArrayValue {
                        values: vec![
                            OtlpAnyValue {
                                value: Some(OtlpValue::StringValue("x".into())),
                            },
                            OtlpAnyValue {
                                value: Some(OtlpValue::IntValue(7)),
                            },
                        ],
                    }),
                ),
                kv("raw", OtlpValue::BytesValue(vec![1, 2])),
            ],
        );
        let index = TagIndex::decode(&builder.finish().encode().unwrap()).unwrap();
        assert_eq!(
            index.names(IndexScope::Span).unwrap(),
            vec!["arr", "b", "f", "i", "s"]
        );
        let values = |key| match index.values(IndexScope::Span, key) {
            IndexedValues::Complete(Some(set)) => set.iter().cloned().collect::<Vec<_>>(),
            other => panic!("{key}: {other:?}"),
        };
        assert_eq!(values("f"), vec![(IndexedType::Float, "NaN".into())]);
        assert_eq!(values("i"), vec![(IndexedType::Int, "-3".into())]);
        assert_eq!(
            values("arr"),
            vec![
                (IndexedType::String, "x".into()),
                (IndexedType::Int, "7".into())
            ]
        );
        assert_eq!(
            index.values(IndexScope::Span, "raw"),
            IndexedValues::Complete(None)
        );
        assert_eq!(index.values(IndexScope::Event, "s"), IndexedValues::Unknown);
    }

    #[test]
    fn high_cardinality_keys_are_left_to_the_scan() {
        let mut builder = TagIndexBuilder::default();
        for i in 0..=MAX_VALUES_PER_KEY {
            builder.add(
                IndexScope::Span,
                &[
                    kv("id", OtlpValue::IntValue(i as i64)),
                    kv("few", OtlpValue::StringValue(format!("{}", i % 3))),
                ],
            );
        }
        let index = builder.finish();
        assert_eq!(index.values(IndexScope::Span, "id"), IndexedValues::Unknown);
        assert!(matches!(
            index.values(IndexScope::Span, "few"),
            IndexedValues::Complete(Some(set)) if set.len() == 3
        ));
        assert_eq!(
            index.values(IndexScope::Span, "absent"),
            IndexedValues::Complete(None)
        );
        assert_eq!(index.names(IndexScope::Span).unwrap(), vec!["few", "id"]);
    }

    #[test]
    fn unknown_versions_and_garbage_are_errors() {
        let json = br#"{"version":"v9","names":{}}"#;
        let compressed = zstd::bulk::compress(json, 3).unwrap();
        assert!(matches!(
            TagIndex::decode(&compressed),
            Err(TagIndexError::Json(_))
        ));
        assert!(matches!(
            TagIndex::decode(b"not zstd"),
            Err(TagIndexError::Compression(_))
        ));
    }
}
