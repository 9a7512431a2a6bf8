//! `attributes`, `resource`, `redaction` and `probabilistic_sampler`: their raw sections,
//! validated configs, and the validation between them. Keys and semantics follow the
//! OpenTelemetry Collector contrib processors (`attraction` actions, `filterconfig`
//! include/exclude) so existing collector configs load unchanged.

use std::fmt;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use super::raw::RawComponent;
use crate::config::validate::Problems;

// ------------------------------------------------------------ validated config

/// A regular expression from the configuration, compiled once at load time. Compared by
/// its source text.
#[derive(Clone)]
pub struct ConfigRegex(pub(crate) Regex);

impl ConfigRegex {
    /// The compiled expression.
    pub fn regex(&self) -> &Regex {
        &self.0
    }
}

impl PartialEq for ConfigRegex {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl fmt::Debug for ConfigRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0.as_str())
    }
}

/// A scalar attribute value written in the configuration (`value:`).
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeValue {
    /// A string.
    String(String),
    /// A boolean.
    Bool(bool),
    /// A 64-bit integer.
    Int(i64),
    /// A double.
    Double(f64),
}

/// `converted_type` of a `convert` action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvertedType {
    /// `int`.
    Int,
    /// `double`.
    Double,
    /// `string`.
    String,
}

/// Which attributes an action applies to.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionTarget {
    /// `key`: exactly this key.
    Key(String),
    /// `pattern` (for `delete` and `hash`): every key the expression matches.
    Pattern(ConfigRegex),
}

/// One entry of `actions` (the contrib `attraction` library).
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeAction {
    /// `insert`: sets `key` only when it is absent.
    Insert {
        /// `key`.
        key: String,
        /// `value`.
        value: AttributeValue,
    },
    /// `update`: sets `key` only when it is present.
    Update {
        /// `key`.
        key: String,
        /// `value`.
        value: AttributeValue,
    },
    /// `upsert`: sets `key` whether or not it is present.
    Upsert {
        /// `key`.
        key: String,
        /// `value`.
        value: AttributeValue,
    },
    /// `delete`: removes the key, or every key matching `pattern`.
    Delete(ActionTarget),
    /// `hash`: replaces the value by the hex SHA-256 of its bytes.
    Hash(ActionTarget),
    /// `extract`: upserts each named capture of `pattern` applied to the string value of
    /// `key`.
    Extract {
        /// `key`: the source attribute.
        key: String,
        /// `pattern`: with at least one named capture group.
        pattern: ConfigRegex,
    },
    /// `convert`: changes the type of `key`'s value; values that do not convert are left
    /// unchanged.
    Convert {
        /// `key`.
        key: String,
        /// `converted_type`.
        to: ConvertedType,
    },
}

/// How `include`/`exclude` compare strings.
#[derive(Debug, Clone, PartialEq)]
pub enum MatchString {
    /// `match_type: strict`.
    Strict(String),
    /// `match_type: regexp` (unanchored, as in the OpenTelemetry Collector).
    Regexp(ConfigRegex),
}

/// An attribute condition in `include`/`exclude`.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchAttribute {
    /// `key`: must be present.
    pub key: String,
    /// `value`: when set, the value must match it.
    pub value: Option<MatchString>,
}

/// `include` or `exclude`: every listed property must match (lists match if any entry
/// does; attribute lists match if all entries do).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MatchProperties {
    /// `services`: against the resource's `service.name`.
    pub services: Vec<MatchString>,
    /// `span_names`.
    pub span_names: Vec<MatchString>,
    /// `span_kinds` (`SPAN_KIND_SERVER`, ...), always compared exactly.
    pub span_kinds: Vec<i32>,
    /// `attributes`: span attributes.
    pub attributes: Vec<MatchAttribute>,
    /// `resources`: resource attributes.
    pub resources: Vec<MatchAttribute>,
    /// `libraries`: instrumentation scope name (and version when given).
    pub libraries: Vec<(MatchString, Option<MatchString>)>,
}

/// `processors.attributes`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributesConfig {
    /// `actions`, applied in order to span attributes.
    pub actions: Vec<AttributeAction>,
    /// `include`.
    pub include: Option<MatchProperties>,
    /// `exclude`.
    pub exclude: Option<MatchProperties>,
}

/// `processors.resource`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceConfig {
    /// `attributes`: actions applied in order to resource attributes.
    pub actions: Vec<AttributeAction>,
}

/// `processors.redaction.summary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedactionSummary {
    /// `debug`: the affected keys and their counts.
    Debug,
    /// `info`: counts only.
    Info,
    /// `silent` (and the default): nothing.
    Silent,
}

/// `processors.redaction`.
#[derive(Debug, Clone, PartialEq)]
pub struct RedactionConfig {
    /// `allow_all_keys`.
    pub allow_all_keys: bool,
    /// `allowed_keys`: the keys kept when `allow_all_keys` is false (fails closed).
    pub allowed_keys: Vec<String>,
    /// `ignored_keys`: passed through untouched.
    pub ignored_keys: Vec<String>,
    /// `blocked_values`: matches in string values are masked with `****`.
    pub blocked_values: Vec<ConfigRegex>,
    /// `allowed_values`: string values matching one of these are never masked.
    pub allowed_values: Vec<ConfigRegex>,
    /// `blocked_key_patterns`: values of matching keys are masked whole.
    pub blocked_key_patterns: Vec<ConfigRegex>,
    /// spoor's built-in deny-list (bearer tokens, JWTs, PEM private keys, card numbers):
    /// `default_blocked_values`, on by default when `blocked_values` is empty.
    pub default_blocked_values: bool,
    /// `summary`.
    pub summary: RedactionSummary,
}

/// `processors.probabilistic_sampler` (mode `hash_seed`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProbabilisticSamplerConfig {
    /// `sampling_percentage`, 0–100.
    pub sampling_percentage: f64,
    /// `hash_seed`: collectors of one tier must share it.
    pub hash_seed: u32,
}

// ------------------------------------------------------------------ raw config

/// One entry of `actions`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAction {
    pub(crate) key: String,
    pub(crate) value: Option<Value>,
    pub(crate) pattern: String,
    pub(crate) action: String,
    pub(crate) converted_type: String,
    pub(crate) from_attribute: String,
    pub(crate) from_context: String,
}

/// `attributes`/`resources` entries of `include`/`exclude`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawMatchAttribute {
    pub(crate) key: String,
    pub(crate) value: Option<Value>,
}

/// `libraries` entries of `include`/`exclude`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLibrary {
    pub(crate) name: String,
    pub(crate) version: Option<String>,
}

/// `include`/`exclude`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawMatch {
    pub(crate) match_type: String,
    pub(crate) services: Vec<String>,
    pub(crate) span_names: Vec<String>,
    pub(crate) span_kinds: Vec<String>,
    pub(crate) attributes: Vec<RawMatchAttribute>,
    pub(crate) resources: Vec<RawMatchAttribute>,
    pub(crate) libraries: Vec<RawLibrary>,
    /// The regexp cache settings; spoor compiles every expression once, so it has none.
    pub(crate) regexp: Option<Value>,
}

impl RawMatch {
    fn schema() -> RawMatch {
        RawMatch {
            attributes: vec![RawMatchAttribute::default()],
            resources: vec![RawMatchAttribute::default()],
            libraries: vec![RawLibrary::default()],
            ..RawMatch::default()
        }
    }
}

/// `processors.attributes`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAttributes {
    pub(crate) actions: Vec<RawAction>,
    pub(crate) include: Option<RawMatch>,
    pub(crate) exclude: Option<RawMatch>,
}

impl RawComponent for RawAttributes {
    fn key_schema() -> Self {
        RawAttributes {
            actions: vec![RawAction::default()],
            include: Some(RawMatch::schema()),
            exclude: Some(RawMatch::schema()),
        }
    }
}

/// `processors.resource`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawResource {
    pub(crate) attributes: Vec<RawAction>,
}

impl RawComponent for RawResource {
    fn key_schema() -> Self {
        RawResource {
            attributes: vec![RawAction::default()],
        }
    }
}

/// `processors.redaction`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRedaction {
    pub(crate) allow_all_keys: bool,
    pub(crate) allowed_keys: Vec<String>,
    pub(crate) ignored_keys: Vec<String>,
    pub(crate) blocked_values: Vec<String>,
    pub(crate) allowed_values: Vec<String>,
    pub(crate) blocked_key_patterns: Vec<String>,
    pub(crate) hash_function: String,
    pub(crate) summary: String,
    pub(crate) default_blocked_values: Option<bool>,
}

impl RawComponent for RawRedaction {
    fn key_schema() -> Self {
        RawRedaction {
            default_blocked_values: Some(true),
            ..RawRedaction::default()
        }
    }
}

/// `processors.probabilistic_sampler`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawProbabilisticSampler {
    pub(crate) sampling_percentage: f64,
    pub(crate) hash_seed: u32,
    pub(crate) mode: String,
    pub(crate) fail_closed: Option<bool>,
    pub(crate) sampling_precision: Option<u32>,
    pub(crate) attribute_source: String,
    pub(crate) from_attribute: String,
    pub(crate) sampling_priority: String,
}

impl RawComponent for RawProbabilisticSampler {
    fn key_schema() -> Self {
        RawProbabilisticSampler {
            fail_closed: Some(true),
            sampling_precision: Some(4),
            ..RawProbabilisticSampler::default()
        }
    }
}

// ------------------------------------------------------------------ validation

pub(crate) fn compile(problems: &mut Problems<'_>, key: &str, text: &str) -> Option<ConfigRegex> {
    match Regex::new(text) {
        Ok(regex) => Some(ConfigRegex(regex)),
        Err(error) => {
            problems.invalid(key, format!("invalid regular expression {text:?}: {error}"));
            None
        }
    }
}

fn attribute_value(
    problems: &mut Problems<'_>,
    key: &str,
    value: &Value,
) -> Option<AttributeValue> {
    match value {
        Value::String(text) => Some(AttributeValue::String(text.clone())),
        Value::Bool(flag) => Some(AttributeValue::Bool(*flag)),
        Value::Number(number) => match number.as_i64() {
            Some(int) => Some(AttributeValue::Int(int)),
            None => number.as_f64().map(AttributeValue::Double),
        },
        _ => {
            problems.invalid(key, "must be a string, number or boolean");
            None
        }
    }
}

pub(crate) fn actions(
    problems: &mut Problems<'_>,
    key: &str,
    raw: Vec<RawAction>,
) -> Vec<AttributeAction> {
    let mut out = Vec::new();
    for (index, action) in raw.into_iter().enumerate() {
        let at = format!("{key}[{index}]");
        if let Some(action) = one_action(problems, &at, action) {
            out.push(action);
        }
    }
    out
}

fn one_action(problems: &mut Problems<'_>, at: &str, raw: RawAction) -> Option<AttributeAction> {
    if !raw.from_attribute.is_empty() || !raw.from_context.is_empty() {
        let which = if raw.from_attribute.is_empty() {
            "from_context"
        } else {
            "from_attribute"
        };
        problems.invalid(
            &format!("{at}.{which}"),
            "is not supported by spoor-collector; use value",
        );
        return None;
    }
    let kind = raw.action.to_ascii_lowercase();
    let needs_key = |problems: &mut Problems<'_>| {
        if raw.key.is_empty() {
            problems.invalid(&format!("{at}.key"), format!("is required for {kind}"));
            None
        } else {
            Some(raw.key.clone())
        }
    };
    let target = |problems: &mut Problems<'_>| match (raw.key.is_empty(), raw.pattern.is_empty()) {
        (false, true) => Some(ActionTarget::Key(raw.key.clone())),
        (true, false) => {
            compile(problems, &format!("{at}.pattern"), &raw.pattern).map(ActionTarget::Pattern)
        }
        (false, false) => {
            problems.invalid(
                &format!("{at}.pattern"),
                "set either key or pattern, not both",
            );
            None
        }
        (true, true) => {
            problems.invalid(&format!("{at}.key"), format!("{kind} needs key or pattern"));
            None
        }
    };
    let value = |problems: &mut Problems<'_>| match &raw.value {
        Some(value) => attribute_value(problems, &format!("{at}.value"), value),
        None => {
            problems.invalid(&format!("{at}.value"), format!("is required for {kind}"));
            None
        }
    };
    match kind.as_str() {
        "insert" | "update" | "upsert" => {
            let key = needs_key(problems);
            let value = value(problems);
            let (key, value) = (key?, value?);
            Some(match kind.as_str() {
                "insert" => AttributeAction::Insert { key, value },
                "update" => AttributeAction::Update { key, value },
                _ => AttributeAction::Upsert { key, value },
            })
        }
        "delete" => target(problems).map(AttributeAction::Delete),
        "hash" => target(problems).map(AttributeAction::Hash),
        "extract" => {
            let key = needs_key(problems);
            let pattern_key = format!("{at}.pattern");
            if raw.pattern.is_empty() {
                problems.invalid(&pattern_key, "is required for extract");
                return None;
            }
            let pattern = compile(problems, &pattern_key, &raw.pattern)?;
            if !pattern.0.capture_names().any(|name| name.is_some()) {
                problems.invalid(
                    &pattern_key,
                    "must contain at least one named capture group (?P<name>...)",
                );
                return None;
            }
            Some(AttributeAction::Extract { key: key?, pattern })
        }
        "convert" => {
            let key = needs_key(problems);
            let to = match raw.converted_type.as_str() {
                "int" => Some(ConvertedType::Int),
                "double" => Some(ConvertedType::Double),
                "string" => Some(ConvertedType::String),
                other => {
                    problems.invalid(
                        &format!("{at}.converted_type"),
                        format!("must be int, double or string, got {other:?}"),
                    );
                    None
                }
            };
            Some(AttributeAction::Convert { key: key?, to: to? })
        }
        "" => {
            problems.invalid(&format!("{at}.action"), "is required");
            None
        }
        other => {
            problems.invalid(
                &format!("{at}.action"),
                format!(
                    "unsupported action {other:?} (supported: insert, update, upsert, delete, hash, extract, convert)"
                ),
            );
            None
        }
    }
}

fn match_properties(problems: &mut Problems<'_>, key: &str, raw: RawMatch) -> MatchProperties {
    let regexp = match raw.match_type.as_str() {
        "strict" => false,
        "regexp" => true,
        other => {
            problems.invalid(
                &format!("{key}.match_type"),
                format!("must be strict or regexp, got {other:?}"),
            );
            false
        }
    };
    let string = |problems: &mut Problems<'_>, at: &str, text: &str| {
        if regexp {
            compile(problems, at, text).map(MatchString::Regexp)
        } else {
            Some(MatchString::Strict(text.to_owned()))
        }
    };
    let strings = |problems: &mut Problems<'_>, name: &str, list: &[String]| {
        list.iter()
            .enumerate()
            .filter_map(|(index, text)| string(problems, &format!("{key}.{name}[{index}]"), text))
            .collect::<Vec<_>>()
    };
    let attributes = |problems: &mut Problems<'_>, name: &str, list: &[RawMatchAttribute]| {
        let mut out = Vec::new();
        for (index, attribute) in list.iter().enumerate() {
            let at = format!("{key}.{name}[{index}]");
            if attribute.key.is_empty() {
                problems.invalid(&format!("{at}.key"), "must not be empty");
                continue;
            }
            let value = match &attribute.value {
                None => None,
                Some(value) => {
                    let text = match value {
                        Value::String(text) => text.clone(),
                        Value::Bool(flag) => flag.to_string(),
                        Value::Number(number) => number.to_string(),
                        _ => {
                            problems.invalid(&format!("{at}.value"), "must be a scalar");
                            continue;
                        }
                    };
                    match string(problems, &format!("{at}.value"), &text) {
                        Some(value) => Some(value),
                        None => continue,
                    }
                }
            };
            out.push(MatchAttribute {
                key: attribute.key.clone(),
                value,
            });
        }
        out
    };
    let mut span_kinds = Vec::new();
    for (index, kind) in raw.span_kinds.iter().enumerate() {
        match crate::otlp::OtlpSpanKind::from_str_name(kind) {
            Some(kind) => span_kinds.push(kind as i32),
            None => problems.invalid(
                &format!("{key}.span_kinds[{index}]"),
                format!("unknown span kind {kind:?} (e.g. SPAN_KIND_SERVER)"),
            ),
        }
    }
    let mut libraries = Vec::new();
    for (index, library) in raw.libraries.iter().enumerate() {
        let at = format!("{key}.libraries[{index}]");
        let name = string(problems, &format!("{at}.name"), &library.name);
        let version = match &library.version {
            Some(version) => match string(problems, &format!("{at}.version"), version) {
                Some(version) => Some(version),
                None => continue,
            },
            None => None,
        };
        if let Some(name) = name {
            libraries.push((name, version));
        }
    }
    let properties = MatchProperties {
        services: strings(problems, "services", &raw.services),
        span_names: strings(problems, "span_names", &raw.span_names),
        span_kinds,
        attributes: attributes(problems, "attributes", &raw.attributes),
        resources: attributes(problems, "resources", &raw.resources),
        libraries,
    };
    if raw.services.is_empty()
        && raw.span_names.is_empty()
        && raw.span_kinds.is_empty()
        && raw.attributes.is_empty()
        && raw.resources.is_empty()
        && raw.libraries.is_empty()
    {
        problems.invalid(
            key,
            "must specify at least one of services, span_names, span_kinds, attributes, resources or libraries",
        );
    }
    properties
}

pub(crate) fn attributes(
    problems: &mut Problems<'_>,
    key: &str,
    raw: RawAttributes,
) -> AttributesConfig {
    let actions_key = format!("{key}.actions");
    if raw.actions.is_empty() {
        problems.invalid(&actions_key, "at least one action is required");
    }
    AttributesConfig {
        actions: actions(problems, &actions_key, raw.actions),
        include: raw
            .include
            .map(|raw| match_properties(problems, &format!("{key}.include"), raw)),
        exclude: raw
            .exclude
            .map(|raw| match_properties(problems, &format!("{key}.exclude"), raw)),
    }
}

pub(crate) fn resource(problems: &mut Problems<'_>, key: &str, raw: RawResource) -> ResourceConfig {
    let actions_key = format!("{key}.attributes");
    if raw.attributes.is_empty() {
        problems.invalid(&actions_key, "at least one action is required");
    }
    ResourceConfig {
        actions: actions(problems, &actions_key, raw.attributes),
    }
}

pub(crate) fn redaction(
    problems: &mut Problems<'_>,
    key: &str,
    raw: RawRedaction,
) -> RedactionConfig {
    let regexes = |problems: &mut Problems<'_>, name: &str, list: &[String]| {
        list.iter()
            .enumerate()
            .filter_map(|(index, text)| compile(problems, &format!("{key}.{name}[{index}]"), text))
            .collect::<Vec<_>>()
    };
    let summary = match raw.summary.as_str() {
        "debug" => RedactionSummary::Debug,
        "info" => RedactionSummary::Info,
        "silent" | "" => RedactionSummary::Silent,
        other => {
            problems.invalid(
                &format!("{key}.summary"),
                format!("must be debug, info or silent, got {other:?}"),
            );
            RedactionSummary::Silent
        }
    };
    if !matches!(raw.hash_function.as_str(), "" | "none") {
        problems.invalid(
            &format!("{key}.hash_function"),
            format!(
                "{:?} is not supported by spoor-collector (values are masked with ****)",
                raw.hash_function
            ),
        );
    }
    RedactionConfig {
        allow_all_keys: raw.allow_all_keys,
        allowed_keys: raw.allowed_keys,
        ignored_keys: raw.ignored_keys,
        default_blocked_values: raw
            .default_blocked_values
            .unwrap_or(raw.blocked_values.is_empty()),
        blocked_values: regexes(problems, "blocked_values", &raw.blocked_values),
        allowed_values: regexes(problems, "allowed_values", &raw.allowed_values),
        blocked_key_patterns: regexes(problems, "blocked_key_patterns", &raw.blocked_key_patterns),
        summary,
    }
}

pub(crate) fn probabilistic_sampler(
    problems: &mut Problems<'_>,
    key: &str,
    raw: RawProbabilisticSampler,
) -> ProbabilisticSamplerConfig {
    if !(0.0..=100.0).contains(&raw.sampling_percentage) || raw.sampling_percentage.is_nan() {
        problems.invalid(
            &format!("{key}.sampling_percentage"),
            format!("must be between 0 and 100, got {}", raw.sampling_percentage),
        );
    }
    if !matches!(raw.mode.as_str(), "" | "hash_seed") {
        problems.invalid(
            &format!("{key}.mode"),
            format!(
                "only hash_seed is supported by spoor-collector, got {:?}",
                raw.mode
            ),
        );
    }
    if !matches!(raw.attribute_source.as_str(), "" | "traceID") {
        problems.invalid(
            &format!("{key}.attribute_source"),
            "only traceID is supported for traces",
        );
    }
    ProbabilisticSamplerConfig {
        sampling_percentage: raw.sampling_percentage.clamp(0.0, 100.0),
        hash_seed: raw.hash_seed,
    }
}
