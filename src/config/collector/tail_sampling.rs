//! `tail_sampling`: its raw section, validated config, and the validation between them.
//! Keys follow the OpenTelemetry Collector contrib `tailsamplingprocessor`, so its
//! configs load unchanged as long as they use the policy types spoor implements; any
//! other policy type is an error naming it and its policy.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use super::processors::{compile, ConfigRegex};
use super::raw::RawComponent;
use crate::config::validate::Problems;
use crate::config::values::duration;
use crate::otlp::OtlpStatusCode;

/// Policy types spoor implements, as listed in errors.
const SUPPORTED_POLICIES: &str = "always_sample, and, boolean_attribute, composite, latency, \
numeric_attribute, probabilistic, rate_limiting, span_count, status_code, string_attribute";

// ------------------------------------------------------------ validated config

/// `processors.tail_sampling`.
#[derive(Debug, Clone, PartialEq)]
pub struct TailSamplingConfig {
    /// `decision_wait`: from a trace's first span to its sampling decision.
    pub decision_wait: Duration,
    /// `num_traces`: the most traces waiting for a decision at once (a hard bound: the
    /// oldest is decided early to make room).
    pub num_traces: usize,
    /// `acknowledge_after_decision` (spoor only): answer a request only once its traces
    /// are decided and, when sampled, queued; otherwise once its spans are held.
    pub acknowledge_after_decision: bool,
    /// `decision_cache.sampled_cache_size`: decided-sampled trace IDs remembered so late
    /// spans follow the decision; 0 disables.
    pub sampled_cache_size: usize,
    /// `decision_cache.non_sampled_cache_size`: the same for traces not sampled.
    pub non_sampled_cache_size: usize,
    /// `policies`, in order.
    pub policies: Vec<SamplingPolicy>,
}

/// One entry of `policies` (or of an `and` / `composite` policy's sub-policies).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingPolicy {
    /// `name`: the `policy` label of the metrics.
    pub name: String,
    /// `type` and its section.
    pub rule: PolicyRule,
}

/// How `string_attribute` compares values.
#[derive(Debug, Clone, PartialEq)]
pub enum StringValues {
    /// Exact matches.
    Exact(BTreeSet<String>),
    /// `enabled_regex_matching: true` (unanchored, as in contrib).
    Regex(Vec<ConfigRegex>),
}

/// A policy type with its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyRule {
    /// `always_sample`.
    AlwaysSample,
    /// `status_code`: a span's status code is one of these (OTLP numeric codes).
    StatusCode(Vec<i32>),
    /// `latency`: the trace's duration (earliest start to latest end) is at least
    /// `threshold` and, when set, at most `upper_threshold`.
    Latency {
        /// `threshold_ms`.
        threshold: Duration,
        /// `upper_threshold_ms` (0 = none).
        upper_threshold: Option<Duration>,
    },
    /// `probabilistic`: FNV-1a 64 of `hash_salt` + trace ID below the percentage.
    Probabilistic {
        /// `hash_salt` (contrib's default when empty).
        hash_salt: String,
        /// `sampling_percentage`, 0–100.
        sampling_percentage: f64,
    },
    /// `string_attribute`: a span or resource string attribute `key` matches `values`.
    StringAttribute {
        /// `key`.
        key: String,
        /// `values` (with `enabled_regex_matching`).
        values: StringValues,
        /// `invert_match`.
        invert_match: bool,
    },
    /// `numeric_attribute`: a span or resource integer attribute `key` in `[min, max]`.
    NumericAttribute {
        /// `key`.
        key: String,
        /// `min_value` (unbounded when absent).
        min_value: i64,
        /// `max_value` (unbounded when absent).
        max_value: i64,
        /// `invert_match`.
        invert_match: bool,
    },
    /// `boolean_attribute`: a span or resource boolean attribute `key` equals `value`.
    BooleanAttribute {
        /// `key`.
        key: String,
        /// `value`.
        value: bool,
        /// `invert_match`.
        invert_match: bool,
    },
    /// `span_count`: the trace has at least `min_spans` and at most `max_spans` spans.
    SpanCount {
        /// `min_spans`.
        min_spans: u64,
        /// `max_spans` (0 = none).
        max_spans: Option<u64>,
    },
    /// `rate_limiting`: sampled while the spans it sampled this second stay below.
    RateLimiting {
        /// `spans_per_second`.
        spans_per_second: u64,
    },
    /// `and`: every sub-policy samples.
    And(Vec<SamplingPolicy>),
    /// `composite`: sub-policies in `policy_order`, each within its rate budget.
    Composite(CompositePolicy),
}

/// `composite`.
#[derive(Debug, Clone, PartialEq)]
pub struct CompositePolicy {
    /// `max_total_spans_per_second`.
    pub max_total_spans_per_second: u64,
    /// Sub-policies in evaluation order (`policy_order`, then any not listed there, in
    /// declaration order), each with its spans-per-second budget from `rate_allocation`
    /// (0 when not listed, as in contrib).
    pub sub_policies: Vec<(SamplingPolicy, u64)>,
}

// ------------------------------------------------------------------ raw config

/// `processors.tail_sampling`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawTailSampling {
    #[serde(with = "duration")]
    pub(crate) decision_wait: Duration,
    pub(crate) num_traces: u64,
    /// A sizing hint in contrib; spoor sizes its maps by `num_traces`.
    pub(crate) expected_new_traces_per_sec: u64,
    /// Acknowledge end to end (after the decision) instead of when the spans are held.
    /// Off by default: with contrib's 30 s `decision_wait`, clients would time out.
    pub(crate) acknowledge_after_decision: bool,
    pub(crate) decision_cache: RawDecisionCache,
    pub(crate) policies: Vec<RawPolicy>,
}

impl Default for RawTailSampling {
    fn default() -> Self {
        RawTailSampling {
            decision_wait: Duration::from_secs(30),
            num_traces: 50_000,
            expected_new_traces_per_sec: 0,
            acknowledge_after_decision: false,
            decision_cache: RawDecisionCache::default(),
            policies: Vec::new(),
        }
    }
}

impl RawComponent for RawTailSampling {
    fn key_schema() -> Self {
        RawTailSampling {
            // Top level → composite → and → leaf.
            policies: vec![RawPolicy::schema(2)],
            ..RawTailSampling::default()
        }
    }
}

/// `decision_cache`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawDecisionCache {
    pub(crate) sampled_cache_size: u64,
    pub(crate) non_sampled_cache_size: u64,
}

impl Default for RawDecisionCache {
    fn default() -> Self {
        RawDecisionCache {
            sampled_cache_size: 100_000,
            non_sampled_cache_size: 100_000,
        }
    }
}

/// One policy; only the section named by `type` is read.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawPolicy {
    pub(crate) name: String,
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) status_code: Option<RawStatusCode>,
    pub(crate) latency: Option<RawLatency>,
    pub(crate) probabilistic: Option<RawProbabilistic>,
    pub(crate) string_attribute: Option<RawStringAttribute>,
    pub(crate) numeric_attribute: Option<RawNumericAttribute>,
    pub(crate) boolean_attribute: Option<RawBooleanAttribute>,
    pub(crate) span_count: Option<RawSpanCount>,
    pub(crate) rate_limiting: Option<RawRateLimiting>,
    pub(crate) and: Option<RawAnd>,
    pub(crate) composite: Option<RawComposite>,
    /// Sections of contrib policy types spoor does not implement: accepted here so the
    /// error names the policy type rather than an unknown key.
    pub(crate) trace_state: Option<Value>,
    pub(crate) ottl_condition: Option<Value>,
    pub(crate) drop: Option<Value>,
    pub(crate) bytes_limiting: Option<Value>,
}

impl RawPolicy {
    /// Every section present, nesting `and` / `composite` `depth` levels.
    fn schema(depth: usize) -> RawPolicy {
        let nested = || (depth > 0).then(|| vec![RawPolicy::schema(depth - 1)]);
        RawPolicy {
            status_code: Some(RawStatusCode::default()),
            latency: Some(RawLatency::default()),
            probabilistic: Some(RawProbabilistic::default()),
            string_attribute: Some(RawStringAttribute::default()),
            numeric_attribute: Some(RawNumericAttribute {
                min_value: Some(0),
                max_value: Some(0),
                ..RawNumericAttribute::default()
            }),
            boolean_attribute: Some(RawBooleanAttribute::default()),
            span_count: Some(RawSpanCount::default()),
            rate_limiting: Some(RawRateLimiting::default()),
            and: nested().map(|and_sub_policy| RawAnd { and_sub_policy }),
            composite: nested().map(|composite_sub_policy| RawComposite {
                composite_sub_policy,
                rate_allocation: vec![RawRateAllocation::default()],
                ..RawComposite::default()
            }),
            ..RawPolicy::default()
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawStatusCode {
    pub(crate) status_codes: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLatency {
    pub(crate) threshold_ms: u64,
    pub(crate) upper_threshold_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawProbabilistic {
    pub(crate) hash_salt: String,
    pub(crate) sampling_percentage: f64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawStringAttribute {
    pub(crate) key: String,
    pub(crate) values: Vec<String>,
    pub(crate) enabled_regex_matching: bool,
    /// contrib's regex result cache; spoor compiles each expression once and keeps none.
    pub(crate) cache_max_size: u64,
    pub(crate) invert_match: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawNumericAttribute {
    pub(crate) key: String,
    pub(crate) min_value: Option<i64>,
    pub(crate) max_value: Option<i64>,
    pub(crate) invert_match: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawBooleanAttribute {
    pub(crate) key: String,
    pub(crate) value: bool,
    pub(crate) invert_match: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawSpanCount {
    pub(crate) min_spans: u64,
    pub(crate) max_spans: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRateLimiting {
    pub(crate) spans_per_second: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAnd {
    pub(crate) and_sub_policy: Vec<RawPolicy>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawComposite {
    pub(crate) max_total_spans_per_second: u64,
    pub(crate) policy_order: Vec<String>,
    pub(crate) composite_sub_policy: Vec<RawPolicy>,
    pub(crate) rate_allocation: Vec<RawRateAllocation>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRateAllocation {
    pub(crate) policy: String,
    pub(crate) percent: u64,
}

// ------------------------------------------------------------------ validation

/// Where a policy sits, which decides the types it may have (as in contrib: `and`
/// holds only plain policies, `composite` plain ones and `and`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Top,
    CompositeSub,
    AndSub,
}

pub(crate) fn tail_sampling(
    problems: &mut Problems<'_>,
    key: &str,
    raw: RawTailSampling,
) -> TailSamplingConfig {
    if raw.decision_wait.is_zero() {
        problems.invalid(&format!("{key}.decision_wait"), "must be greater than 0");
    }
    if raw.num_traces == 0 {
        problems.invalid(&format!("{key}.num_traces"), "must be at least 1");
    }
    let policies_key = format!("{key}.policies");
    if raw.policies.is_empty() {
        problems.invalid(&policies_key, "at least one policy is required");
    }
    TailSamplingConfig {
        decision_wait: raw.decision_wait,
        num_traces: to_usize(raw.num_traces.max(1)),
        acknowledge_after_decision: raw.acknowledge_after_decision,
        sampled_cache_size: to_usize(raw.decision_cache.sampled_cache_size),
        non_sampled_cache_size: to_usize(raw.decision_cache.non_sampled_cache_size),
        policies: policy_list(problems, &policies_key, raw.policies, Level::Top),
    }
}

fn to_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// Validates a list of policies.
fn policy_list(
    problems: &mut Problems<'_>,
    key: &str,
    raw: Vec<RawPolicy>,
    level: Level,
) -> Vec<SamplingPolicy> {
    check_names(problems, key, &raw);
    raw.into_iter()
        .enumerate()
        .filter_map(|(index, policy)| {
            one_policy(problems, &format!("{key}[{index}]"), policy, level)
        })
        .collect()
}

/// Policy names are required and distinct within one list (they label the metrics).
fn check_names(problems: &mut Problems<'_>, key: &str, policies: &[RawPolicy]) {
    let mut names = BTreeSet::new();
    for (index, policy) in policies.iter().enumerate() {
        if policy.name.is_empty() {
            problems.invalid(&format!("{key}[{index}].name"), "is required");
        } else if !names.insert(policy.name.as_str()) {
            problems.invalid(
                &format!("{key}[{index}].name"),
                format!("duplicate policy name {:?}", policy.name),
            );
        }
    }
}

/// The section a policy type needs, or an error saying it is missing.
fn section<T>(problems: &mut Problems<'_>, at: &str, kind: &str, value: Option<T>) -> Option<T> {
    if value.is_none() {
        problems.invalid(
            &format!("{at}.{kind}"),
            format!("is required for a policy of type {kind}"),
        );
    }
    value
}

fn one_policy(
    problems: &mut Problems<'_>,
    at: &str,
    raw: RawPolicy,
    level: Level,
) -> Option<SamplingPolicy> {
    let kind = raw.kind.as_str();
    let nested_not_allowed = match (kind, level) {
        ("and", Level::AndSub) => Some("an and policy"),
        ("composite", Level::AndSub) => Some("an and policy"),
        ("composite", Level::CompositeSub) => Some("a composite policy"),
        _ => None,
    };
    if let Some(parent) = nested_not_allowed {
        problems.invalid(
            &format!("{at}.type"),
            format!(
                "a {kind} policy cannot be a sub-policy of {parent} (policy {:?})",
                raw.name
            ),
        );
        return None;
    }
    let rule = match kind {
        "always_sample" => Some(PolicyRule::AlwaysSample),
        "status_code" => section(problems, at, kind, raw.status_code)
            .and_then(|raw| status_code(problems, &format!("{at}.{kind}"), raw)),
        "latency" => section(problems, at, kind, raw.latency)
            .and_then(|raw| latency(problems, &format!("{at}.{kind}"), raw)),
        "probabilistic" => section(problems, at, kind, raw.probabilistic)
            .and_then(|raw| probabilistic(problems, &format!("{at}.{kind}"), raw)),
        "string_attribute" => section(problems, at, kind, raw.string_attribute)
            .and_then(|raw| string_attribute(problems, &format!("{at}.{kind}"), raw)),
        "numeric_attribute" => section(problems, at, kind, raw.numeric_attribute)
            .and_then(|raw| numeric_attribute(problems, &format!("{at}.{kind}"), raw)),
        "boolean_attribute" => section(problems, at, kind, raw.boolean_attribute).and_then(|raw| {
            required_key(problems, &format!("{at}.{kind}"), &raw.key)?;
            Some(PolicyRule::BooleanAttribute {
                key: raw.key,
                value: raw.value,
                invert_match: raw.invert_match,
            })
        }),
        "span_count" => section(problems, at, kind, raw.span_count)
            .and_then(|raw| span_count(problems, &format!("{at}.{kind}"), raw)),
        "rate_limiting" => section(problems, at, kind, raw.rate_limiting).and_then(|raw| {
            if raw.spans_per_second == 0 {
                problems.invalid(
                    &format!("{at}.{kind}.spans_per_second"),
                    "must be greater than 0",
                );
                return None;
            }
            Some(PolicyRule::RateLimiting {
                spans_per_second: raw.spans_per_second,
            })
        }),
        "and" => section(problems, at, kind, raw.and).and_then(|raw| {
            let key = format!("{at}.and.and_sub_policy");
            if raw.and_sub_policy.is_empty() {
                problems.invalid(&key, "at least one sub-policy is required");
                return None;
            }
            Some(PolicyRule::And(policy_list(
                problems,
                &key,
                raw.and_sub_policy,
                Level::AndSub,
            )))
        }),
        "composite" => section(problems, at, kind, raw.composite)
            .and_then(|raw| composite(problems, &format!("{at}.{kind}"), raw)),
        "" => {
            problems.invalid(&format!("{at}.type"), "is required");
            None
        }
        other => {
            problems.invalid(
                &format!("{at}.type"),
                format!(
                    "unsupported policy type {other:?} in policy {:?} (supported: {SUPPORTED_POLICIES})",
                    raw.name
                ),
            );
            None
        }
    };
    Some(SamplingPolicy {
        name: raw.name,
        rule: rule?,
    })
}

fn required_key(problems: &mut Problems<'_>, at: &str, key: &str) -> Option<()> {
    if key.is_empty() {
        problems.invalid(&format!("{at}.key"), "is required");
        return None;
    }
    Some(())
}

fn status_code(problems: &mut Problems<'_>, at: &str, raw: RawStatusCode) -> Option<PolicyRule> {
    let key = format!("{at}.status_codes");
    if raw.status_codes.is_empty() {
        problems.invalid(
            &key,
            "at least one status code is required (OK, ERROR, UNSET)",
        );
        return None;
    }
    let mut codes = Vec::new();
    for (index, name) in raw.status_codes.iter().enumerate() {
        let code = match name.as_str() {
            "OK" => OtlpStatusCode::Ok,
            "ERROR" => OtlpStatusCode::Error,
            "UNSET" => OtlpStatusCode::Unset,
            other => {
                problems.invalid(
                    &format!("{key}[{index}]"),
                    format!("unknown status code {other:?} (OK, ERROR, UNSET)"),
                );
                continue;
            }
        };
        codes.push(code as i32);
    }
    (codes.len() == raw.status_codes.len()).then_some(PolicyRule::StatusCode(codes))
}

fn latency(problems: &mut Problems<'_>, at: &str, raw: RawLatency) -> Option<PolicyRule> {
    if raw.upper_threshold_ms != 0 && raw.upper_threshold_ms < raw.threshold_ms {
        problems.invalid(
            &format!("{at}.upper_threshold_ms"),
            format!(
                "must not be below threshold_ms ({}), got {}",
                raw.threshold_ms, raw.upper_threshold_ms
            ),
        );
        return None;
    }
    Some(PolicyRule::Latency {
        threshold: Duration::from_millis(raw.threshold_ms),
        upper_threshold: (raw.upper_threshold_ms != 0)
            .then(|| Duration::from_millis(raw.upper_threshold_ms)),
    })
}

fn probabilistic(
    problems: &mut Problems<'_>,
    at: &str,
    raw: RawProbabilistic,
) -> Option<PolicyRule> {
    if !(0.0..=100.0).contains(&raw.sampling_percentage) {
        problems.invalid(
            &format!("{at}.sampling_percentage"),
            format!("must be between 0 and 100, got {}", raw.sampling_percentage),
        );
        return None;
    }
    Some(PolicyRule::Probabilistic {
        hash_salt: raw.hash_salt,
        sampling_percentage: raw.sampling_percentage,
    })
}

fn string_attribute(
    problems: &mut Problems<'_>,
    at: &str,
    raw: RawStringAttribute,
) -> Option<PolicyRule> {
    let key = required_key(problems, at, &raw.key);
    let values_key = format!("{at}.values");
    if raw.values.is_empty() {
        problems.invalid(&values_key, "at least one value is required");
        return None;
    }
    let values = if raw.enabled_regex_matching {
        let compiled: Vec<ConfigRegex> = raw
            .values
            .iter()
            .enumerate()
            .filter_map(|(index, text)| compile(problems, &format!("{values_key}[{index}]"), text))
            .collect();
        if compiled.len() != raw.values.len() {
            return None;
        }
        StringValues::Regex(compiled)
    } else {
        StringValues::Exact(raw.values.into_iter().collect())
    };
    key?;
    Some(PolicyRule::StringAttribute {
        key: raw.key,
        values,
        invert_match: raw.invert_match,
    })
}

fn numeric_attribute(
    problems: &mut Problems<'_>,
    at: &str,
    raw: RawNumericAttribute,
) -> Option<PolicyRule> {
    let key = required_key(problems, at, &raw.key);
    let (min_value, max_value) = match (raw.min_value, raw.max_value) {
        (None, None) => {
            problems.invalid(
                &format!("{at}.min_value"),
                "min_value or max_value (or both) is required",
            );
            return None;
        }
        (min, max) => (min.unwrap_or(i64::MIN), max.unwrap_or(i64::MAX)),
    };
    if min_value > max_value {
        problems.invalid(
            &format!("{at}.max_value"),
            format!("must not be below min_value ({min_value}), got {max_value}"),
        );
        return None;
    }
    key?;
    Some(PolicyRule::NumericAttribute {
        key: raw.key,
        min_value,
        max_value,
        invert_match: raw.invert_match,
    })
}

fn span_count(problems: &mut Problems<'_>, at: &str, raw: RawSpanCount) -> Option<PolicyRule> {
    if raw.min_spans == 0 {
        problems.invalid(&format!("{at}.min_spans"), "must be at least 1");
        return None;
    }
    if raw.max_spans != 0 && raw.max_spans < raw.min_spans {
        problems.invalid(
            &format!("{at}.max_spans"),
            format!(
                "must not be below min_spans ({}), got {}",
                raw.min_spans, raw.max_spans
            ),
        );
        return None;
    }
    Some(PolicyRule::SpanCount {
        min_spans: raw.min_spans,
        max_spans: (raw.max_spans != 0).then_some(raw.max_spans),
    })
}

fn composite(problems: &mut Problems<'_>, at: &str, raw: RawComposite) -> Option<PolicyRule> {
    let max_total = raw.max_total_spans_per_second;
    if max_total == 0 {
        problems.invalid(
            &format!("{at}.max_total_spans_per_second"),
            "must be greater than 0",
        );
    }
    let subs_key = format!("{at}.composite_sub_policy");
    if raw.composite_sub_policy.is_empty() {
        problems.invalid(&subs_key, "at least one sub-policy is required");
        return None;
    }
    check_names(problems, &subs_key, &raw.composite_sub_policy);
    let declared: Vec<String> = raw
        .composite_sub_policy
        .iter()
        .map(|policy| policy.name.clone())
        .collect();
    let mut subs: Vec<Option<SamplingPolicy>> = raw
        .composite_sub_policy
        .into_iter()
        .enumerate()
        .map(|(index, policy)| {
            one_policy(
                problems,
                &format!("{subs_key}[{index}]"),
                policy,
                Level::CompositeSub,
            )
        })
        .collect();
    let mut budgets = vec![0u64; declared.len()];
    let mut total_percent = 0;
    // contrib: a listed policy with percent 0 gets an equal share of the total.
    let equal_share = max_total / declared.len() as u64;
    for (index, allocation) in raw.rate_allocation.iter().enumerate() {
        let allocation_key = format!("{at}.rate_allocation[{index}]");
        let Some(position) = declared.iter().position(|name| *name == allocation.policy) else {
            problems.invalid(
                &format!("{allocation_key}.policy"),
                format!("no composite_sub_policy named {:?}", allocation.policy),
            );
            continue;
        };
        total_percent += allocation.percent;
        budgets[position] = if allocation.percent == 0 {
            equal_share
        } else {
            max_total.saturating_mul(allocation.percent) / 100
        };
    }
    if total_percent > 100 {
        problems.invalid(
            &format!("{at}.rate_allocation"),
            format!("percentages add up to {total_percent}, more than 100"),
        );
    }
    let mut order: Vec<usize> = Vec::new();
    for (index, name) in raw.policy_order.iter().enumerate() {
        match declared.iter().position(|declared| declared == name) {
            Some(position) if !order.contains(&position) => order.push(position),
            Some(_) => problems.invalid(
                &format!("{at}.policy_order[{index}]"),
                format!("{name:?} is listed twice"),
            ),
            None => problems.invalid(
                &format!("{at}.policy_order[{index}]"),
                format!("no composite_sub_policy named {name:?}"),
            ),
        }
    }
    let unlisted: Vec<usize> = (0..declared.len())
        .filter(|position| !order.contains(position))
        .collect();
    order.extend(unlisted);
    let mut sub_policies = Vec::new();
    for position in order {
        sub_policies.push((subs[position].take()?, budgets[position]));
    }
    Some(PolicyRule::Composite(CompositePolicy {
        max_total_spans_per_second: max_total,
        sub_policies,
    }))
}
