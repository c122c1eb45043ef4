//! `Spanned<T>`: a value that remembers where in the plan file it was written, so checks that
//! run after loading (criteria parsing, cross-references) can still point at file:line:col.
//! The span travels through serde with a private newtype name only `plan::de` understands;
//! from any other deserializer a `Spanned<T>` reads as a plain `T` with no span.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::{Serialize, Serializer};

use crate::diag::Span;

pub(crate) const NAME: &str = "$planrun::Spanned";
pub(crate) const FIELDS: &[&str] = &["$start", "$end", "$value"];

#[derive(Clone, Debug)]
pub struct Spanned<T> {
    pub span: Option<Span>,
    pub value: T,
}

impl<T> Spanned<T> {
    pub fn new(value: T) -> Self {
        Spanned { span: None, value }
    }
}

/// Spans never take part in equality: the same plan in two syntaxes is the same plan.
impl<T: PartialEq> PartialEq for Spanned<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T: Serialize> Serialize for Spanned<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Spanned<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }
            fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Spanned<T>, D::Error> {
                T::deserialize(d).map(Spanned::new)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Spanned<T>, A::Error> {
                let mut start = 0usize;
                let mut end = 0usize;
                let mut value = None;
                while let Some(k) = map.next_key::<String>()? {
                    match k.as_str() {
                        "$start" => start = map.next_value()?,
                        "$end" => end = map.next_value()?,
                        _ => value = Some(map.next_value::<T>()?),
                    }
                }
                let value = value.ok_or_else(|| serde::de::Error::custom("spanned value missing"))?;
                Ok(Spanned { span: Some(start..end), value })
            }
        }
        d.deserialize_newtype_struct(NAME, V(std::marker::PhantomData))
    }
}
