//! Values computed by the engine and the comparison and arithmetic rules between them.
//!
//! Rules (Tempo's, made total):
//! - a missing attribute is `nil`; every comparison with `nil` is false, except the explicit
//!   `= nil` / `!= nil` checks, so `span.x != "a"` does not match spans without `span.x`;
//! - operands of different types never match (`span.x = 1` is false when `span.x` is a
//!   string); integers, floats and durations form one numeric family;
//! - `&&` / `||` treat anything but boolean `true` as false; `!` of a non-boolean is `nil`;
//! - arrays (and multi-valued fields such as `event:name`) match `=`, `=~`, `<`… when any
//!   element does, and `!=`, `!~` when every element does;
//! - integer arithmetic stays integer (wrapping), division by zero yields `nil`, other
//!   numeric arithmetic is floating point with durations as nanoseconds.

use std::borrow::Cow;
use std::cmp::Ordering;

use regex::Regex;

use super::ast::{ArithOp, CompareOp, Kind, Literal, Status};
use super::model::AttrValue;

/// A value in a search result or series label.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    /// Nanoseconds.
    Duration(i64),
    Status(Status),
    Kind(Kind),
    Array(Vec<Value>),
}

impl Value {
    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }
}

/// A value during evaluation, borrowing from the trace or the query where it can.
#[derive(Debug, Clone)]
pub(crate) enum Val<'a> {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'a, str>),
    Dur(i64),
    Status(Status),
    Kind(Kind),
    /// An array-valued attribute.
    Attrs(&'a [AttrValue]),
    /// Several values of one field (one per event or link).
    List(Vec<Val<'a>>),
}

/// A hashable identity for grouping (`by()`, series labels).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum GroupKey {
    Nil,
    Bool(bool),
    Int(i64),
    Float(u64),
    Str(String),
    Dur(i64),
    Status(Status),
    Kind(Kind),
    Array(Vec<GroupKey>),
}

impl<'a> Val<'a> {
    pub(crate) fn from_attr(value: &'a AttrValue) -> Val<'a> {
        match value {
            AttrValue::String(s) => Val::Str(Cow::Borrowed(s)),
            AttrValue::Int(i) => Val::Int(*i),
            AttrValue::Float(x) => Val::Float(*x),
            AttrValue::Bool(b) => Val::Bool(*b),
            AttrValue::Array(items) => Val::Attrs(items),
        }
    }

    pub(crate) fn from_literal(value: &'a Literal) -> Val<'a> {
        match value {
            Literal::Nil => Val::Nil,
            Literal::Bool(b) => Val::Bool(*b),
            Literal::Int(i) => Val::Int(*i),
            Literal::Float(x) => Val::Float(*x),
            Literal::String(s) => Val::Str(Cow::Borrowed(s)),
            Literal::Duration(d) => Val::Dur(*d),
            Literal::Status(s) => Val::Status(*s),
            Literal::Kind(k) => Val::Kind(*k),
        }
    }

    pub(crate) fn is_nil(&self) -> bool {
        matches!(self, Val::Nil)
    }

    pub(crate) fn is_true(&self) -> bool {
        matches!(self, Val::Bool(true))
    }

    fn is_many(&self) -> bool {
        matches!(self, Val::Attrs(_) | Val::List(_))
    }

    /// The elements of an array or list; a scalar is its own single element.
    fn elements(&self) -> Vec<Val<'a>> {
        match self {
            // Nested arrays have no TraceQL meaning; they never match.
            Val::Attrs(items) => items
                .iter()
                .map(|item| match item {
                    AttrValue::Array(_) => Val::Nil,
                    other => Val::from_attr(other),
                })
                .collect(),
            Val::List(items) => items.clone(),
            other => vec![other.clone()],
        }
    }

    /// The numeric view used for comparisons and floating-point arithmetic.
    fn as_f64(&self) -> Option<f64> {
        match self {
            Val::Int(i) => Some(*i as f64),
            Val::Float(x) => Some(*x),
            Val::Dur(d) => Some(*d as f64),
            _ => None,
        }
    }

    /// Integers and durations compare exactly as i64.
    fn as_exact(&self) -> Option<i64> {
        match self {
            Val::Int(i) | Val::Dur(i) => Some(*i),
            _ => None,
        }
    }

    /// A float for metrics: durations in seconds, non-numeric values absent.
    pub(crate) fn metric_value(&self) -> Option<f64> {
        match self {
            Val::Int(i) => Some(*i as f64),
            Val::Float(x) if !x.is_nan() => Some(*x),
            Val::Dur(d) => Some(*d as f64 / 1e9),
            _ => None,
        }
    }

    pub(crate) fn to_value(&self) -> Value {
        match self {
            Val::Nil => Value::Nil,
            Val::Bool(b) => Value::Bool(*b),
            Val::Int(i) => Value::Int(*i),
            Val::Float(x) => Value::Float(*x),
            Val::Str(s) => Value::String(s.to_string()),
            Val::Dur(d) => Value::Duration(*d),
            Val::Status(s) => Value::Status(*s),
            Val::Kind(k) => Value::Kind(*k),
            Val::Attrs(_) | Val::List(_) => {
                Value::Array(self.elements().iter().map(Val::to_value).collect())
            }
        }
    }

    pub(crate) fn group_key(&self) -> GroupKey {
        match self {
            Val::Nil => GroupKey::Nil,
            Val::Bool(b) => GroupKey::Bool(*b),
            Val::Int(i) => GroupKey::Int(*i),
            Val::Float(x) => GroupKey::Float(x.to_bits()),
            Val::Str(s) => GroupKey::Str(s.to_string()),
            Val::Dur(d) => GroupKey::Dur(*d),
            Val::Status(s) => GroupKey::Status(*s),
            Val::Kind(k) => GroupKey::Kind(*k),
            Val::Attrs(_) | Val::List(_) => {
                GroupKey::Array(self.elements().iter().map(Val::group_key).collect())
            }
        }
    }

    /// `self.group_key() == *key`, without building the key (no allocation for scalars).
    pub(crate) fn has_group_key(&self, key: &GroupKey) -> bool {
        match (self, key) {
            (Val::Nil, GroupKey::Nil) => true,
            (Val::Bool(a), GroupKey::Bool(b)) => a == b,
            (Val::Int(a), GroupKey::Int(b)) | (Val::Dur(a), GroupKey::Dur(b)) => a == b,
            (Val::Float(a), GroupKey::Float(b)) => a.to_bits() == *b,
            (Val::Str(a), GroupKey::Str(b)) => a.as_ref() == b.as_str(),
            (Val::Status(a), GroupKey::Status(b)) => a == b,
            (Val::Kind(a), GroupKey::Kind(b)) => a == b,
            (Val::Attrs(_) | Val::List(_), GroupKey::Array(_)) => self.group_key() == *key,
            _ => false,
        }
    }
}

impl GroupKey {
    pub(crate) fn of_value(value: &Value) -> GroupKey {
        match value {
            Value::Nil => GroupKey::Nil,
            Value::Bool(b) => GroupKey::Bool(*b),
            Value::Int(i) => GroupKey::Int(*i),
            Value::Float(x) => GroupKey::Float(x.to_bits()),
            Value::String(s) => GroupKey::Str(s.clone()),
            Value::Duration(d) => GroupKey::Dur(*d),
            Value::Status(s) => GroupKey::Status(*s),
            Value::Kind(k) => GroupKey::Kind(*k),
            Value::Array(items) => GroupKey::Array(items.iter().map(GroupKey::of_value).collect()),
        }
    }
}

/// `lhs op rhs` with array semantics.
pub(crate) fn compare(op: CompareOp, lhs: &Val<'_>, rhs: &Val<'_>) -> bool {
    let match_all = op == CompareOp::Ne;
    match (lhs.is_many(), rhs.is_many()) {
        (true, true) => false,
        (true, false) => {
            let elements = lhs.elements();
            if match_all {
                elements.iter().all(|e| compare_scalar(op, e, rhs))
            } else {
                elements.iter().any(|e| compare_scalar(op, e, rhs))
            }
        }
        (false, true) => {
            let elements = rhs.elements();
            let flipped = op.flipped();
            if match_all {
                elements.iter().all(|e| compare_scalar(flipped, e, lhs))
            } else {
                elements.iter().any(|e| compare_scalar(flipped, e, lhs))
            }
        }
        (false, false) => compare_scalar(op, lhs, rhs),
    }
}

fn compare_scalar(op: CompareOp, lhs: &Val<'_>, rhs: &Val<'_>) -> bool {
    let ordering: Option<Ordering> = match (lhs, rhs) {
        (Val::Str(a), Val::Str(b)) => Some(a.as_ref().cmp(b.as_ref())),
        (Val::Bool(a), Val::Bool(b)) if matches!(op, CompareOp::Eq | CompareOp::Ne) => {
            Some(a.cmp(b))
        }
        (Val::Status(a), Val::Status(b)) if matches!(op, CompareOp::Eq | CompareOp::Ne) => {
            Some(a.cmp(b))
        }
        (Val::Kind(a), Val::Kind(b)) if matches!(op, CompareOp::Eq | CompareOp::Ne) => {
            Some(a.cmp(b))
        }
        _ => match (lhs.as_exact(), rhs.as_exact()) {
            (Some(a), Some(b)) => Some(a.cmp(&b)),
            _ => match (lhs.as_f64(), rhs.as_f64()) {
                (Some(a), Some(b)) => return op.holds_f64(a, b),
                _ => return false,
            },
        },
    };
    ordering.is_some_and(|o| op.holds(o))
}

/// `lhs =~ re` (or `!~` when `negate`), with array semantics. Non-strings never match.
pub(crate) fn match_regex(lhs: &Val<'_>, re: &Regex, negate: bool) -> bool {
    let one = |v: &Val<'_>| match v {
        Val::Str(s) => Some(re.is_match(s)),
        _ => None,
    };
    if lhs.is_many() {
        let elements = lhs.elements();
        if negate {
            elements.iter().all(|e| one(e) == Some(false))
        } else {
            elements.iter().any(|e| one(e) == Some(true))
        }
    } else {
        one(lhs) == Some(!negate)
    }
}

pub(crate) fn arith<'a>(op: ArithOp, lhs: &Val<'_>, rhs: &Val<'_>) -> Val<'a> {
    if let (Val::Int(a), Val::Int(b)) = (lhs, rhs) {
        let (a, b) = (*a, *b);
        return match op {
            ArithOp::Add => Val::Int(a.wrapping_add(b)),
            ArithOp::Sub => Val::Int(a.wrapping_sub(b)),
            ArithOp::Mul => Val::Int(a.wrapping_mul(b)),
            ArithOp::Div => a.checked_div(b).map_or(Val::Nil, Val::Int),
            ArithOp::Mod => a.checked_rem(b).map_or(Val::Nil, Val::Int),
            ArithOp::Pow if b >= 0 => {
                Val::Int(a.wrapping_pow(u32::try_from(b).unwrap_or(u32::MAX)))
            }
            ArithOp::Pow => Val::Float((a as f64).powf(b as f64)),
        };
    }
    let (Some(a), Some(b)) = (lhs.as_f64(), rhs.as_f64()) else {
        return Val::Nil;
    };
    Val::Float(match op {
        ArithOp::Add => a + b,
        ArithOp::Sub => a - b,
        ArithOp::Mul => a * b,
        ArithOp::Div => a / b,
        ArithOp::Mod => a % b,
        ArithOp::Pow => a.powf(b),
    })
}

pub(crate) fn negate<'a>(value: &Val<'_>) -> Val<'a> {
    match value {
        Val::Int(i) => Val::Int(i.wrapping_neg()),
        Val::Float(x) => Val::Float(-x),
        Val::Dur(d) => Val::Dur(d.wrapping_neg()),
        _ => Val::Nil,
    }
}

/// Running aggregate over span values (`avg`, `min`, `max`, `sum`). Keeps the type of the
/// inputs where Tempo does: integer sums stay integers, duration sums and averages stay
/// durations.
#[derive(Debug, Default)]
pub(crate) struct Accumulator {
    count: u64,
    all_int: bool,
    all_dur: bool,
    int_sum: i64,
    float_sum: f64,
    min: Option<(f64, Value)>,
    max: Option<(f64, Value)>,
}

impl Accumulator {
    pub(crate) fn new() -> Accumulator {
        Accumulator {
            all_int: true,
            all_dur: true,
            ..Accumulator::default()
        }
    }

    pub(crate) fn add(&mut self, value: &Val<'_>) {
        let Some(x) = value.as_f64() else {
            return;
        };
        self.count += 1;
        self.all_int &= matches!(value, Val::Int(_));
        self.all_dur &= matches!(value, Val::Dur(_));
        if let Some(exact) = value.as_exact() {
            self.int_sum = self.int_sum.wrapping_add(exact);
        }
        self.float_sum += x;
        if self.min.as_ref().is_none_or(|(m, _)| x < *m) {
            self.min = Some((x, value.to_value()));
        }
        if self.max.as_ref().is_none_or(|(m, _)| x > *m) {
            self.max = Some((x, value.to_value()));
        }
    }

    pub(crate) fn sum(&self) -> Option<Value> {
        if self.count == 0 {
            return None;
        }
        Some(if self.all_int {
            Value::Int(self.int_sum)
        } else if self.all_dur {
            Value::Duration(self.int_sum)
        } else {
            Value::Float(self.float_sum)
        })
    }

    pub(crate) fn avg(&self) -> Option<Value> {
        if self.count == 0 {
            return None;
        }
        Some(if self.all_dur {
            Value::Duration((self.float_sum / self.count as f64) as i64)
        } else {
            Value::Float(self.float_sum / self.count as f64)
        })
    }

    pub(crate) fn min(&self) -> Option<Value> {
        self.min.as_ref().map(|(_, v)| v.clone())
    }

    pub(crate) fn max(&self) -> Option<Value> {
        self.max.as_ref().map(|(_, v)| v.clone())
    }
}

/// Borrowed view of an owned value, for comparisons of aggregates with literals.
pub(crate) fn val_of(value: &Value) -> Val<'_> {
    match value {
        Value::Nil => Val::Nil,
        Value::Bool(b) => Val::Bool(*b),
        Value::Int(i) => Val::Int(*i),
        Value::Float(x) => Val::Float(*x),
        Value::String(s) => Val::Str(Cow::Borrowed(s)),
        Value::Duration(d) => Val::Dur(*d),
        Value::Status(s) => Val::Status(*s),
        Value::Kind(k) => Val::Kind(*k),
        Value::Array(items) => Val::List(items.iter().map(val_of).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Val<'_> {
        Val::Str(Cow::Borrowed(x))
    }

    #[test]
    fn has_group_key_agrees_with_group_key() {
        let array = [AttrValue::Int(1), AttrValue::String("a".into())];
        let values = [
            Val::Nil,
            Val::Bool(true),
            Val::Bool(false),
            Val::Int(3),
            Val::Dur(3),
            Val::Float(3.0),
            Val::Float(-0.0),
            Val::Float(0.0),
            s("a"),
            s("b"),
            Val::Status(Status::Error),
            Val::Status(Status::Ok),
            Val::Kind(Kind::Server),
            Val::Kind(Kind::Client),
            Val::Attrs(&array),
            Val::List(vec![Val::Int(1), s("a")]),
            Val::List(vec![Val::Int(1)]),
        ];
        for value in &values {
            for other in &values {
                let key = other.group_key();
                assert_eq!(
                    value.has_group_key(&key),
                    value.group_key() == key,
                    "{value:?} vs {other:?}"
                );
            }
        }
    }

    #[test]
    fn nil_and_mismatched_types_never_match() {
        for op in [CompareOp::Eq, CompareOp::Ne, CompareOp::Lt, CompareOp::Ge] {
            assert!(!compare(op, &Val::Nil, &s("a")));
            assert!(!compare(op, &Val::Int(1), &s("1")));
        }
    }

    #[test]
    fn numeric_family_compares_across_types() {
        assert!(compare(CompareOp::Eq, &Val::Int(2), &Val::Float(2.0)));
        assert!(compare(CompareOp::Gt, &Val::Dur(2_000), &Val::Int(1_999)));
        assert!(compare(
            CompareOp::Lt,
            &Val::Int(i64::MAX - 1),
            &Val::Int(i64::MAX)
        ));
        assert!(compare(
            CompareOp::Ne,
            &Val::Float(f64::NAN),
            &Val::Float(1.0)
        ));
        assert!(compare(CompareOp::Lt, &s("400"), &s("500")));
    }

    #[test]
    fn arrays_match_any_or_all() {
        let items = [AttrValue::from("a"), AttrValue::from("b")];
        let arr = Val::Attrs(&items);
        assert!(compare(CompareOp::Eq, &arr, &s("b")));
        assert!(!compare(CompareOp::Ne, &arr, &s("b")));
        assert!(compare(CompareOp::Ne, &arr, &s("c")));
        assert!(compare(CompareOp::Eq, &s("a"), &arr));
        let re = regex::Regex::new("^(?:a)$").unwrap();
        assert!(match_regex(&arr, &re, false));
        assert!(!match_regex(&arr, &re, true));
        let ints = [AttrValue::Int(1), AttrValue::Int(5)];
        assert!(compare(CompareOp::Gt, &Val::Attrs(&ints), &Val::Int(4)));
        assert!(compare(CompareOp::Lt, &Val::Int(4), &Val::Attrs(&ints)));
    }

    #[test]
    fn arithmetic_keeps_integers_and_never_panics() {
        assert!(matches!(
            arith(ArithOp::Add, &Val::Int(2), &Val::Int(3)),
            Val::Int(5)
        ));
        assert!(matches!(
            arith(ArithOp::Div, &Val::Int(1), &Val::Int(0)),
            Val::Nil
        ));
        assert!(matches!(
            arith(ArithOp::Div, &Val::Int(i64::MIN), &Val::Int(-1)),
            Val::Nil
        ));
        assert!(matches!(
            arith(ArithOp::Pow, &Val::Int(2), &Val::Int(10)),
            Val::Int(1024)
        ));
        assert!(matches!(
            arith(ArithOp::Mul, &Val::Dur(2), &Val::Int(3)),
            Val::Float(x) if x == 6.0
        ));
        assert!(matches!(
            arith(ArithOp::Add, &s("a"), &Val::Int(1)),
            Val::Nil
        ));
    }

    #[test]
    fn accumulator_keeps_types() {
        let mut acc = Accumulator::new();
        acc.add(&Val::Dur(10));
        acc.add(&Val::Dur(20));
        acc.add(&s("ignored"));
        assert_eq!(acc.sum(), Some(Value::Duration(30)));
        assert_eq!(acc.avg(), Some(Value::Duration(15)));
        assert_eq!(acc.min(), Some(Value::Duration(10)));
        let mut acc = Accumulator::new();
        acc.add(&Val::Int(1));
        acc.add(&Val::Float(2.5));
        assert_eq!(acc.sum(), Some(Value::Float(3.5)));
        assert_eq!(acc.max(), Some(Value::Float(2.5)));
        assert_eq!(Accumulator::new().avg(), None);
    }
}
