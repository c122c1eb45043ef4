//! serde over the spanned tree: any `#[derive(Deserialize)]` type — the plan model, each driver's
//! config — reads from a `Node`, and every error comes back with the span of the key or value at
//! fault plus a "did you mean" for unknown keys. It owns only the mapping from `Node` to serde's
//! data model; what a valid value is belongs to the types being deserialized.

use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};

use super::node::{Entry, Node, NodeKind};
use super::spanned;
use crate::diag::{Diag, Span, did_you_mean};

/// A deserialization error, located where possible.
#[derive(Debug, Clone)]
pub struct DeError {
    pub message: String,
    pub help: Option<String>,
    pub span: Option<Span>,
    /// Set for unknown keys, so callers that flatten can widen the suggestion list.
    pub unknown_key: Option<(String, Vec<&'static str>)>,
}

impl DeError {
    fn or_span(mut self, span: &Span) -> Self {
        if self.span.is_none() {
            self.span = Some(span.clone());
        }
        self
    }

    pub fn into_diag(self) -> Diag {
        let mut d = Diag::new(self.message);
        if let Some(span) = self.span {
            d = d.with_span(span);
        }
        if let Some(h) = self.help {
            d = d.help(h);
        }
        d
    }

    /// Rebuild the "did you mean" hint for an unknown key against a wider set of names.
    pub fn widen_unknown_key(mut self, extra: &[&'static str]) -> Self {
        if let Some((key, mut expected)) = self.unknown_key.take() {
            expected.extend_from_slice(extra);
            expected.sort_unstable();
            expected.dedup();
            self.help = Some(unknown_key_help(&key, &expected));
            self.unknown_key = Some((key, expected));
        }
        self
    }
}

fn unknown_key_help(key: &str, expected: &[&'static str]) -> String {
    match did_you_mean(key, expected.iter().copied()) {
        Some(s) => format!("did you mean `{s}`?"),
        None if expected.is_empty() => "this table takes no keys".into(),
        None => format!("valid keys: {}", expected.join(", ")),
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError { message: msg.to_string(), help: None, span: None, unknown_key: None }
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::custom(format!("wrong type: expected {}, found {}", plain_expected(exp), describe(unexp)))
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::custom(format!("invalid value {}: expected {exp}", describe(unexp)))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError {
            message: format!("unknown key `{field}`"),
            help: Some(unknown_key_help(field, expected)),
            span: None,
            unknown_key: Some((field.to_string(), expected.to_vec())),
        }
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let help = match did_you_mean(variant, expected.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("expected one of: {}", expected.join(", ")),
        };
        DeError { message: format!("unknown value `{variant}`"), help: Some(help), span: None, unknown_key: None }
    }

    fn missing_field(field: &'static str) -> Self {
        Self::custom(format!("missing key `{field}`"))
    }

    fn duplicate_field(field: &'static str) -> Self {
        Self::custom(format!("key `{field}` is given twice"))
    }
}

/// serde names Rust types ("u32"); a plan author thinks in kinds of value.
fn plain_expected(exp: &dyn de::Expected) -> String {
    let s = exp.to_string();
    match s.as_str() {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number (0 or more)".into(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "a boolean" | "bool" => "true or false".into(),
        _ => s,
    }
}

fn describe(u: de::Unexpected<'_>) -> String {
    use de::Unexpected as U;
    match u {
        U::Bool(b) => format!("boolean `{b}`"),
        U::Signed(i) => format!("integer `{i}`"),
        U::Unsigned(i) => format!("integer `{i}`"),
        U::Float(f) => format!("float `{f}`"),
        U::Str(s) => format!("string \"{s}\""),
        U::Seq => "a list".into(),
        U::Map => "a table".into(),
        U::Unit => "null".into(),
        other => other.to_string(),
    }
}

/// Deserialize `T` from a node.
pub fn from_node<T: DeserializeOwned>(node: &Node) -> Result<T, DeError> {
    T::deserialize(node).map_err(|e| e.or_span(&node.span))
}

impl<'de> de::Deserializer<'de> for &'de Node {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.kind {
            NodeKind::Null => visitor.visit_unit(),
            NodeKind::Bool(b) => visitor.visit_bool(*b),
            NodeKind::Int(i) => visitor.visit_i64(*i),
            NodeKind::Float(f) => visitor.visit_f64(*f),
            NodeKind::Str(s) => visitor.visit_str(s),
            NodeKind::List(items) => visitor.visit_seq(Seq { iter: items.iter() }),
            NodeKind::Table(t) => visitor.visit_map(Map { iter: t.entries.iter(), value: None }),
        }
        .map_err(|e| e.or_span(&self.span))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.kind {
            NodeKind::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    /// Floats accept integers: `rate = 1` is a fine way to write 1.0.
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.kind {
            NodeKind::Int(i) => visitor.visit_f64(i as f64),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    /// One-or-many: where a list is expected, a single value is a list of one. This is what lets
    /// a KDL plan write a single `stage` block where TOML writes `[[phase.stage]]` once.
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.kind {
            NodeKind::List(items) => visitor.visit_seq(Seq { iter: items.iter() }),
            _ => visitor.visit_seq(Seq { iter: std::slice::from_ref(self).iter() }),
        }
        .map_err(|e| e.or_span(&self.span))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, DeError> {
        if name == spanned::NAME {
            return visitor.visit_map(SpannedMap { node: self, field: 0 });
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.kind {
            NodeKind::Str(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            NodeKind::Table(t) if t.entries.len() == 1 => visitor.visit_enum(EnumAccess { entry: &t.entries[0] }),
            _ => Err(de::Error::custom(format!("wrong type: expected a name, found {}", self.type_name()))),
        }
        .map_err(|e: DeError| e.or_span(&self.span))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 char str string
        bytes byte_buf unit unit_struct tuple tuple_struct map struct identifier ignored_any
    }
}

struct Seq<'de> {
    iter: std::slice::Iter<'de, Node>,
}

impl<'de> SeqAccess<'de> for Seq<'de> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DeError> {
        match self.iter.next() {
            Some(n) => seed.deserialize(n).map(Some).map_err(|e| e.or_span(&n.span)),
            None => Ok(None),
        }
    }
}

struct Map<'de> {
    iter: std::slice::Iter<'de, Entry>,
    value: Option<&'de Node>,
}

impl<'de> MapAccess<'de> for Map<'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        match self.iter.next() {
            Some(e) => {
                self.value = Some(&e.value);
                let key: de::value::StrDeserializer<'_, DeError> = e.key.as_str().into_deserializer();
                seed.deserialize(key).map(Some).map_err(|err| err.or_span(&e.key_span))
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let n = self.value.take().ok_or_else(|| de::Error::custom("value requested before key"))?;
        seed.deserialize(n).map_err(|e| e.or_span(&n.span))
    }
}

/// Hands a node's span to `Spanned<T>` as `$start`, `$end`, then the node itself as `$value`.
struct SpannedMap<'de> {
    node: &'de Node,
    field: usize,
}

impl<'de> MapAccess<'de> for SpannedMap<'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        let Some(name) = spanned::FIELDS.get(self.field) else { return Ok(None) };
        let key: de::value::StrDeserializer<'_, DeError> = name.into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        self.field += 1;
        match self.field {
            1 => seed.deserialize(self.node.span.start.into_deserializer()),
            2 => seed.deserialize(self.node.span.end.into_deserializer()),
            _ => seed.deserialize(self.node).map_err(|e| e.or_span(&self.node.span)),
        }
    }
}

struct EnumAccess<'de> {
    entry: &'de Entry,
}

impl<'de> de::EnumAccess<'de> for EnumAccess<'de> {
    type Error = DeError;
    type Variant = &'de Node;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, &'de Node), DeError> {
        let key: de::value::StrDeserializer<'_, DeError> = self.entry.key.as_str().into_deserializer();
        let v = seed.deserialize(key).map_err(|e| e.or_span(&self.entry.key_span))?;
        Ok((v, &self.entry.value))
    }
}

impl<'de> de::VariantAccess<'de> for &'de Node {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_any(self, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Source;
    use crate::plan::node::from_toml;
    use serde::Deserialize;

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct T {
        count: u32,
        #[serde(default)]
        ratio: f64,
        #[serde(default)]
        tags: Vec<String>,
    }

    fn parse(s: &str) -> Result<T, DeError> {
        from_node(&from_toml(&Source::new("t.toml", s)).unwrap())
    }

    #[test]
    fn reads_values_and_one_or_many() {
        assert_eq!(
            parse("count = 2\nratio = 1\ntags = \"a\"").unwrap(),
            T { count: 2, ratio: 1.0, tags: vec!["a".into()] }
        );
    }

    #[test]
    fn unknown_key_points_at_key_with_suggestion() {
        let e = parse("count = 2\ncoutn = 3").unwrap_err();
        assert_eq!(e.message, "unknown key `coutn`");
        assert_eq!(e.span, Some(10..15));
        assert_eq!(e.help.as_deref(), Some("did you mean `count`?"));
    }

    #[test]
    fn wrong_type_points_at_value() {
        let e = parse("count = \"two\"").unwrap_err();
        assert_eq!(e.span, Some(8..13));
        assert_eq!(e.message, "wrong type: expected a whole number (0 or more), found string \"two\"");
    }
}
