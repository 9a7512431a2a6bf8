//! Loading `collector.yaml`: file or built-in default → `${env:…}` substitution →
//! `SPOOR_` environment overlay → per-component key checks and typed deserialization →
//! validation. Every problem is collected; the first one never hides the others.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};

use super::expand::{expand_tree, Expansion};
use super::raw::{describe_yaml, RawComponent};
use super::validate::{validate, RawCollector, RawSection};
use super::CollectorConfig;
use crate::config::error::{ConfigError, ConfigErrors, ValueOrigin};
use crate::config::load::edit_distance;
use crate::config::validate::Problems;
use crate::config::{ENV_PREFIX, ENV_SEPARATOR};

/// The configuration used when no file is given: the OTLP receivers on loopback → `batch`
/// → an `otlp` exporter to a spoor-server on the same host, with a persistent queue
/// under `./data/queue`, plus the health check. spoor-server and spoor-collector started
/// side by side with no flags form a working appliance.
pub const DEFAULT_CONFIG_YAML: &str = r#"receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:4317
      http:
        endpoint: 127.0.0.1:4318

processors:
  batch:

exporters:
  otlp:
    endpoint: 127.0.0.1:4319
    tls:
      insecure: true
    sending_queue:
      persistent:
        directory: ./data/queue

extensions:
  health_check:
    endpoint: 127.0.0.1:13133

service:
  extensions: [health_check]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp]
  telemetry:
    metrics:
      address: 127.0.0.1:8888
"#;

/// Environment variables under the prefix that are not config keys.
const ENV_IGNORED: &[&str] = &["CONFIG"];

/// Top-level sections of `collector.yaml`.
const TOP_LEVEL_KEYS: &[&str] = &[
    "receivers",
    "processors",
    "exporters",
    "extensions",
    "connectors",
    "service",
];
const SERVICE_KEYS: &[&str] = &["extensions", "pipelines", "telemetry"];

/// Loads and validates spoor-collector's configuration from `config_file` (or the
/// built-in [`DEFAULT_CONFIG_YAML`]), with `${env:…}` references and `SPOOR_` overrides
/// taken from the process environment.
///
/// # Errors
/// Every problem found, each naming its key path.
pub fn load_collector_config(config_file: Option<&Path>) -> Result<CollectorConfig, ConfigErrors> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    load_collector_config_with_env(config_file, &env)
}

/// [`load_collector_config`] with an explicit environment, so tests never touch the real
/// one.
///
/// # Errors
/// Every problem found, each naming its key path.
pub fn load_collector_config_with_env(
    config_file: Option<&Path>,
    env: &BTreeMap<String, String>,
) -> Result<CollectorConfig, ConfigErrors> {
    let text = match config_file {
        Some(path) => std::fs::read_to_string(path).map_err(|error| {
            ConfigErrors::new(vec![ConfigError::File {
                path: path.to_owned(),
                message: format!("cannot read: {error}"),
            }])
        })?,
        None => DEFAULT_CONFIG_YAML.to_owned(),
    };
    load_collector_config_from_str(&text, config_file, env)
}

/// Parses and validates configuration text as [`load_collector_config_with_env`] does
/// once it has read the file: `config_file` only names where `text` came from in error
/// messages and value origins (`None` is the built-in default). Lets the text be checked
/// without a file, e.g. by the fuzzer (`fuzz/fuzz_targets/collector_config.rs`).
///
/// # Errors
/// Every problem found, each naming its key path.
pub fn load_collector_config_from_str(
    text: &str,
    config_file: Option<&Path>,
    env: &BTreeMap<String, String>,
) -> Result<CollectorConfig, ConfigErrors> {
    let file_error = |message: String| {
        ConfigErrors::new(vec![ConfigError::File {
            path: config_file
                .map(Path::to_owned)
                .unwrap_or_else(|| "(built-in default)".into()),
            message,
        }])
    };
    let mut tree = match serde_yaml::from_str::<Value>(text) {
        Ok(Value::Mapping(mapping)) => Value::Mapping(mapping),
        Ok(Value::Null) => Value::Mapping(Mapping::new()),
        Ok(_) => {
            return Err(file_error(
                "expected a mapping of sections (receivers:, processors:, exporters:, service:) at the top level"
                    .to_owned(),
            ))
        }
        Err(error) => return Err(file_error(format!("invalid YAML: {error}"))),
    };

    let lookup = |name: &str| env.get(name).cloned();
    let mut expansion = Expansion::default();
    expand_tree(&mut tree, "", &lookup, &mut expansion);
    let overlay = apply_env_overlay(&mut tree, env);

    let file_origin = config_file.map(|path| ValueOrigin::File(path.to_owned()));
    let origin_of = |key: &str| -> Option<ValueOrigin> {
        if let Some(variable) = overlay.origins.get(key) {
            return Some(ValueOrigin::EnvVar(variable.clone()));
        }
        file_origin.clone()
    };
    let mut problems = Problems::new(&origin_of);
    for error in &expansion.errors {
        problems.invalid(&error.key, error.message.clone());
    }
    let mut warnings: Vec<String> = expansion
        .unset_variables
        .iter()
        .map(|(key, name)| {
            format!(
                "{key}: environment variable {name} is not set; it was replaced by an empty string"
            )
        })
        .collect();

    let mut reader = SectionReader {
        problems: &mut problems,
    };
    let mut raw = reader.read_top_level(tree);
    raw.env_strings = overlay.raw_text.clone();
    let config = validate(raw, &mut problems, &mut warnings);
    problems.into_result(config)
}

/// What the `SPOOR_` overlay set: the variable behind each key, and its exact text (for
/// keys that turn out to be strings, which YAML parsing would otherwise retype).
#[derive(Debug, Default)]
struct EnvOverlay {
    origins: HashMap<String, String>,
    raw_text: HashMap<String, String>,
}

/// Sets `a.b.c` from `SPOOR_A__B__C` for every variable under the prefix. Values are read
/// as YAML scalars or flow lists (`[otlp, debug]`), so numbers and lists can be set.
fn apply_env_overlay(tree: &mut Value, env: &BTreeMap<String, String>) -> EnvOverlay {
    let mut overlay = EnvOverlay::default();
    for (variable, text) in env {
        let Some(rest) = variable.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if rest.is_empty() || ENV_IGNORED.contains(&rest) {
            continue;
        }
        let path: Vec<String> = rest
            .split(ENV_SEPARATOR)
            .map(str::to_ascii_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            continue;
        }
        let value = match serde_yaml::from_str::<Value>(text) {
            Ok(
                value @ (Value::Bool(_) | Value::Number(_) | Value::String(_) | Value::Sequence(_)),
            ) => value,
            _ => Value::String(text.clone()),
        };
        set_path(tree, &path, value);
        let key = path.join(".");
        overlay.origins.insert(key.clone(), variable.clone());
        overlay.raw_text.insert(key, text.clone());
    }
    overlay
}

fn set_path(tree: &mut Value, path: &[String], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        *tree = value;
        return;
    };
    if !matches!(tree, Value::Mapping(_)) {
        *tree = Value::Mapping(Mapping::new());
    }
    if let Value::Mapping(mapping) = tree {
        let child = mapping
            .entry(Value::String(first.clone()))
            .or_insert(Value::Null);
        set_path(child, rest, value);
    }
}

fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// Turns sections of the tree into raw structs, reporting every problem.
struct SectionReader<'a, 'p> {
    problems: &'a mut Problems<'p>,
}

impl SectionReader<'_, '_> {
    fn read_top_level(&mut self, tree: Value) -> RawCollector {
        let mut raw = RawCollector::default();
        let Value::Mapping(top) = tree else {
            return raw;
        };
        for (key, value) in top {
            let Some(name) = self.key_name(&key, "") else {
                continue;
            };
            match name.as_str() {
                "receivers" => raw.receivers = self.component_map("receivers", value),
                "processors" => raw.processors = self.component_map("processors", value),
                "exporters" => raw.exporters = self.component_map("exporters", value),
                "extensions" => raw.extensions = self.component_map("extensions", value),
                "connectors" => raw.connectors = self.component_map("connectors", value),
                "service" => self.read_service(value, &mut raw),
                _ => self.unknown_key(&name, "", TOP_LEVEL_KEYS),
            }
        }
        raw
    }

    fn read_service(&mut self, value: Value, raw: &mut RawCollector) {
        let service = match value {
            Value::Null => return,
            Value::Mapping(mapping) => mapping,
            other => {
                self.problems.invalid(
                    "service",
                    format!("expected a section of keys, got {}", describe_yaml(&other)),
                );
                return;
            }
        };
        for (key, value) in service {
            let Some(name) = self.key_name(&key, "service") else {
                continue;
            };
            match name.as_str() {
                "extensions" => {
                    raw.service_extensions = self.string_list("service.extensions", value);
                }
                "pipelines" => raw.pipelines = self.component_map("service.pipelines", value),
                "telemetry" => raw.telemetry = Some(value),
                _ => self.unknown_key(&name, "service", SERVICE_KEYS),
            }
        }
    }

    /// A mapping of component IDs to their (still untyped) sections, in file order.
    fn component_map(&mut self, key: &str, value: Value) -> Vec<RawSection> {
        let mapping = match value {
            Value::Null => return Vec::new(),
            Value::Mapping(mapping) => mapping,
            other => {
                self.problems.invalid(
                    key,
                    format!(
                        "expected a section of components, got {}",
                        describe_yaml(&other)
                    ),
                );
                return Vec::new();
            }
        };
        mapping
            .into_iter()
            .filter_map(|(id, section)| {
                let id = self.key_name(&id, key)?;
                Some(RawSection {
                    key: join_key(key, &id),
                    id,
                    value: section,
                })
            })
            .collect()
    }

    fn string_list(&mut self, key: &str, value: Value) -> Vec<String> {
        match value {
            Value::Null => Vec::new(),
            Value::Sequence(items) => items
                .into_iter()
                .enumerate()
                .filter_map(|(index, item)| match item {
                    Value::String(text) => Some(text),
                    other => {
                        self.problems.invalid(
                            &format!("{key}[{index}]"),
                            format!("expected a component ID, got {}", describe_yaml(&other)),
                        );
                        None
                    }
                })
                .collect(),
            other => {
                self.problems.invalid(
                    key,
                    format!("expected a list like [a, b], got {}", describe_yaml(&other)),
                );
                Vec::new()
            }
        }
    }

    fn key_name(&mut self, key: &Value, parent: &str) -> Option<String> {
        match key {
            Value::String(name) => Some(name.clone()),
            other => {
                self.problems.invalid(
                    parent,
                    format!("keys must be strings, got {}", describe_yaml(other)),
                );
                None
            }
        }
    }

    fn unknown_key(&mut self, name: &str, parent: &str, known: &[&str]) {
        let key = join_key(parent, name);
        let suggestion = closest(name, known.iter().copied()).map(str::to_owned);
        let origin = self.problems.origin_of(&key);
        self.problems.push(ConfigError::UnknownKey {
            key,
            suggestion,
            origin,
        });
    }
}

/// Key-checks and deserializes one component section into `T`, reporting every unknown
/// key and every type error under `key`. `None` when the section could not be read at all.
pub(crate) fn read_component<T: RawComponent>(
    key: &str,
    value: Value,
    env_strings: &HashMap<String, String>,
    problems: &mut Problems<'_>,
) -> Option<T> {
    let mut value = match value {
        Value::Null => Value::Mapping(Mapping::new()),
        mapping @ Value::Mapping(_) => mapping,
        other => {
            problems.invalid(
                key,
                format!("expected a section of keys, got {}", describe_yaml(&other)),
            );
            return None;
        }
    };
    let schema = match serde_yaml::to_value(T::key_schema()) {
        Ok(schema) => schema,
        Err(error) => {
            problems.invalid(key, format!("internal error describing keys: {error}"));
            return None;
        }
    };
    let checker = KeyChecker {
        root_schema: &schema,
        env_strings,
    };
    checker.check(&mut value, &schema, key, "", problems);
    deserialize_reporting_all(key, value, problems)
}

/// [`read_component`] for the env-string map of a reader; used by validation, which
/// reads sections once it knows their type.
pub(crate) fn read_section<T: RawComponent>(
    section: &RawSection,
    env_strings: &HashMap<String, String>,
    problems: &mut Problems<'_>,
) -> Option<T> {
    read_component(&section.key, section.value.clone(), env_strings, problems)
}

struct KeyChecker<'a> {
    root_schema: &'a Value,
    env_strings: &'a HashMap<String, String>,
}

impl KeyChecker<'_> {
    /// Removes and reports keys the schema does not have; turns explicit nulls into the
    /// default (an empty section, an empty list, or the key's default value); restores
    /// the exact text of string values set from the environment.
    fn check(
        &self,
        value: &mut Value,
        schema: &Value,
        full_key: &str,
        relative_key: &str,
        problems: &mut Problems<'_>,
    ) {
        match (value, schema) {
            (Value::Mapping(mapping), Value::Mapping(schema_mapping)) => {
                if schema_mapping.is_empty() {
                    // A free-form map (headers): any key is fine.
                    return;
                }
                let keys: Vec<Value> = mapping.keys().cloned().collect();
                for key in keys {
                    let Value::String(name) = &key else {
                        problems.invalid(full_key, "keys must be strings");
                        mapping.remove(&key);
                        continue;
                    };
                    let child_full = join_key(full_key, name);
                    let child_relative = join_key(relative_key, name);
                    let Some(child_schema) = schema_mapping.get(&key) else {
                        mapping.remove(&key);
                        let suggestion = self.suggest(name, schema_mapping, relative_key);
                        let origin = problems.origin_of(&child_full);
                        problems.push(ConfigError::UnknownKey {
                            key: child_full,
                            suggestion,
                            origin,
                        });
                        continue;
                    };
                    let Some(child) = mapping.get_mut(&key) else {
                        continue;
                    };
                    if child.is_null() {
                        match child_schema {
                            Value::Mapping(_) => *child = Value::Mapping(Mapping::new()),
                            Value::Sequence(_) => *child = Value::Sequence(Vec::new()),
                            // `key:` with nothing after it means "the default".
                            _ => {
                                mapping.remove(&key);
                                continue;
                            }
                        }
                    }
                    if child_schema.is_string() {
                        if let Some(text) = self.env_strings.get(&child_full) {
                            *child = Value::String(text.clone());
                        }
                    }
                    self.check(child, child_schema, &child_full, &child_relative, problems);
                }
            }
            (Value::Sequence(items), Value::Sequence(schema_items)) => {
                let Some(item_schema) = schema_items.first() else {
                    return;
                };
                for (index, item) in items.iter_mut().enumerate() {
                    self.check(
                        item,
                        item_schema,
                        &format!("{full_key}[{index}]"),
                        &format!("{relative_key}[{index}]"),
                        problems,
                    );
                }
            }
            _ => {}
        }
    }

    /// A sibling within a small edit distance, else a key of the same name elsewhere in
    /// the component (`insecure` → `tls.insecure`); relative to the component.
    fn suggest(&self, unknown: &str, siblings: &Mapping, parent: &str) -> Option<String> {
        let names = siblings.keys().filter_map(Value::as_str);
        if let Some(sibling) = closest(unknown, names) {
            return Some(join_key(parent, sibling));
        }
        find_key_named(self.root_schema, "", &unknown.to_ascii_lowercase())
    }
}

/// The candidate within an edit distance of a third of the word (at least 2).
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    let threshold = (word.len() / 3).max(2);
    candidates
        .map(|candidate| (edit_distance(&word, candidate), candidate))
        .filter(|(distance, _)| *distance <= threshold)
        .min()
        .map(|(_, candidate)| candidate)
}

fn find_key_named(schema: &Value, parent: &str, name: &str) -> Option<String> {
    let Value::Mapping(mapping) = schema else {
        return None;
    };
    mapping.iter().find_map(|(key, value)| {
        let key = key.as_str()?;
        let full = join_key(parent, key);
        if key == name {
            return Some(full);
        }
        find_key_named(value, &full, name)
    })
}

/// Deserializes `value`, reporting every type error: serde stops at the first, so each
/// failed pass reports it, removes the offending key (its default applies) and retries.
fn deserialize_reporting_all<T: DeserializeOwned>(
    key: &str,
    mut value: Value,
    problems: &mut Problems<'_>,
) -> Option<T> {
    // Each pass removes one key, so a section cannot need more passes than it has values.
    let max_passes = count_values(&value) + 1;
    for _ in 0..max_passes {
        let error = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(parsed) => return Some(parsed),
            Err(error) => error,
        };
        let segments: Vec<PathSegment> = error
            .path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Map { key } => Some(PathSegment::Key(key.clone())),
                serde_path_to_error::Segment::Seq { index } => Some(PathSegment::Index(*index)),
                _ => None,
            })
            .collect();
        let mut error_key = key.to_owned();
        for segment in &segments {
            match segment {
                PathSegment::Key(name) => error_key = join_key(&error_key, name),
                PathSegment::Index(index) => error_key.push_str(&format!("[{index}]")),
            }
        }
        problems.invalid(&error_key, clean_serde_message(&error.inner().to_string()));
        if segments.is_empty() || !remove_at(&mut value, &segments) {
            return None;
        }
    }
    None
}

enum PathSegment {
    Key(String),
    Index(usize),
}

fn remove_at(value: &mut Value, path: &[PathSegment]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut current = value;
    for segment in parents {
        let next = match (segment, current) {
            (PathSegment::Key(name), Value::Mapping(mapping)) => mapping.get_mut(name.as_str()),
            (PathSegment::Index(index), Value::Sequence(items)) => items.get_mut(*index),
            _ => None,
        };
        match next {
            Some(next) => current = next,
            None => return false,
        }
    }
    match (last, current) {
        (PathSegment::Key(name), Value::Mapping(mapping)) => {
            mapping.remove(name.as_str()).is_some()
        }
        (PathSegment::Index(index), Value::Sequence(items)) if *index < items.len() => {
            items.remove(*index);
            true
        }
        _ => false,
    }
}

fn count_values(value: &Value) -> usize {
    match value {
        Value::Mapping(mapping) => mapping.values().map(count_values).sum::<usize>() + 1,
        Value::Sequence(items) => items.iter().map(count_values).sum::<usize>() + 1,
        _ => 1,
    }
}

/// serde_yaml's messages without Rust type names: `invalid type: string "x", expected u32`
/// becomes `expected a number, got "x"`.
fn clean_serde_message(message: &str) -> String {
    let Some(rest) = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
    else {
        return message.to_owned();
    };
    let Some((actual, expected)) = rest.split_once(", expected ") else {
        return message.to_owned();
    };
    let actual = actual
        .strip_prefix("string ")
        .or_else(|| actual.strip_prefix("integer "))
        .or_else(|| actual.strip_prefix("floating point "))
        .or_else(|| actual.strip_prefix("boolean "))
        .unwrap_or(actual);
    let actual = match actual {
        "map" => "a section of keys",
        "sequence" => "a list",
        "unit value" => "nothing",
        other => other,
    };
    let expected = match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" | "i32" | "i64" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" => "true or false",
        "a string" => "a string",
        "a sequence" => "a list like [a, b]",
        other if other.starts_with("struct ") => "a section of keys",
        other => other,
    };
    format!("expected {expected}, got {actual}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_read_like_config_messages() {
        assert_eq!(
            clean_serde_message("invalid type: string \"many\", expected u32"),
            "expected a whole number, got \"many\""
        );
        assert_eq!(
            clean_serde_message("invalid type: map, expected a boolean"),
            "expected true or false, got a section of keys"
        );
        assert_eq!(clean_serde_message("something else"), "something else");
    }

    #[test]
    fn closest_needs_a_small_distance() {
        let keys = ["endpoint", "compression", "headers"];
        assert_eq!(closest("endpiont", keys.iter().copied()), Some("endpoint"));
        assert_eq!(
            closest("compresion", keys.iter().copied()),
            Some("compression")
        );
        assert_eq!(closest("zzz", keys.iter().copied()), None);
    }
}
