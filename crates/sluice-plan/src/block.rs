//! A plug-in's block: the keys of a check, action or notifier that belong to its plug-in rather than to
//! the plan, kept as written with where each part is, and turned into the plug-in's own typed
//! configuration by [`Block::parse`] — so that a plug-in's error still names its line and column.
//!
//! ```
//! use serde::Deserialize;
//! use sluice_plan::model::Spanned;
//!
//! #[derive(Debug, Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Probe { url: Spanned<String>, pointer: String }
//!
//! let yaml = "name: p\nflag: f\nphases: [ { percent: 5 } ]\ngates:\n  - name: depth\n    json: { url: 'http://127.0.0.1:1/q', pointer: /depth }\n    below: 10\n";
//! let plan = sluice_plan::parse("p.yaml", yaml).unwrap();
//! let gate = &plan.gates[0].value;
//! let json = gate.block.get("json").unwrap();
//! let probe: Probe = sluice_plan::block::parse(json).unwrap();
//! assert_eq!((probe.url.referenced.line(), probe.url.referenced.column()), (6, 18));
//! assert_eq!(probe.pointer, "/depth");
//!
//! let yaml = yaml.replace("pointer", "pointr");
//! let plan = sluice_plan::parse("p.yaml", &yaml).unwrap();
//! let err = sluice_plan::block::parse::<Probe>(plan.gates[0].value.block.get("json").unwrap()).unwrap_err();
//! assert_eq!((err.at.line(), err.at.column()), (6, 42));
//! assert!(err.message.starts_with("unknown field `pointr`, expected `url` or `pointer`"), "{}", err.message);
//! ```

use std::fmt;

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

/// A YAML value as written, each part with where it is.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// `~`, `null` or nothing.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A negative whole number.
    Int(i64),
    /// A whole number.
    UInt(u64),
    /// A number with a fraction or an exponent.
    Float(f64),
    /// Text.
    Str(String),
    /// A list.
    Seq(Vec<Spanned<Node>>),
    /// A mapping, in the order written.
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl Node {
    /// What it is, for a person: `a string`, `a list`, …
    pub fn describe(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Int(_) | Node::UInt(_) | Node::Float(_) => "a number",
            Node::Str(_) => "a string",
            Node::Seq(_) => "a list",
            Node::Map(_) => "a mapping",
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(if v >= 0 { Node::UInt(v as u64) } else { Node::Int(v) })
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(Node::UInt(v))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Node, E> {
                Ok(Node::Str(v))
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<Node>>()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    entries.push((key, map.next_value::<Spanned<Node>>()?));
                }
                Ok(Node::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// The keys of a check, action or notifier that its plug-in reads, in the order written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Block {
    /// Each key with its value.
    pub entries: Vec<(Spanned<String>, Spanned<Node>)>,
}

impl Block {
    /// A block of these entries (e.g. a confirm gate's webhook, made into an action).
    pub fn of(entries: Vec<(Spanned<String>, Spanned<Node>)>) -> Block {
        Block { entries }
    }

    /// No key at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value of `key`, with where it is.
    pub fn get(&self, key: &str) -> Option<&Spanned<Node>> {
        self.entries.iter().find(|(k, _)| k.value == key).map(|(_, v)| v)
    }

    /// Whether `key` is given.
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The keys, in the order written.
    pub fn keys(&self) -> impl Iterator<Item = &Spanned<String>> {
        self.entries.iter().map(|(k, _)| k)
    }

    /// The block as a plug-in's typed configuration: a struct whose fields are its keys (with
    /// `#[serde(deny_unknown_fields)]`, an unknown key is refused with the known ones listed). `at` is where
    /// the block's owner is, for a missing key.
    pub fn parse<T: DeserializeOwned>(&self, at: Location) -> Result<T, BlockError> {
        run(MapDe { entries: &self.entries, at, at_end: at })
    }
}

/// One value of a block as a typed value (a plug-in whose configuration is the value of its key, such as
/// `http: {…}`).
pub fn parse<T: DeserializeOwned>(node: &Spanned<Node>) -> Result<T, BlockError> {
    run(NodeDe { node })
}

fn run<'de, T: DeserializeOwned, D: de::Deserializer<'de, Error = DeError>>(d: D) -> Result<T, BlockError> {
    serde_path_to_error::deserialize(d).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { crate::without_span_hops(&path) };
        let inner = e.into_inner();
        BlockError { path, at: inner.at.unwrap_or(Location::UNKNOWN), message: inner.message }
    })
}

/// Why a block is not its plug-in's configuration, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockError {
    /// The key path inside the block (`requests[1].url`; empty for the block itself).
    pub path: String,
    /// Where in the plan.
    pub at: Location,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// An error while reading a block, with where it happened once known.
#[derive(Debug)]
pub struct DeError {
    message: String,
    at: Option<Location>,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError { message: msg.to_string(), at: None }
    }
}

trait At<T> {
    /// The innermost place wins: set only when nothing deeper said where.
    fn at(self, at: Location) -> Result<T, DeError>;
}

impl<T> At<T> for Result<T, DeError> {
    fn at(self, at: Location) -> Result<T, DeError> {
        self.map_err(|mut e| {
            e.at.get_or_insert(at);
            e
        })
    }
}

/// The name serde-saphyr gives [`Spanned`]'s newtype, and the marker of its synthesized map: a block's
/// values keep their places by speaking the same protocol (tested below, so an upgrade that changes it
/// fails the build's tests rather than losing positions).
const SPANNED: &str = "__yaml_spanned";
const SPANNED_MARKER: &str = "__serde_saphyr_private_spanned";

/// Reads one node.
struct NodeDe<'a> {
    node: &'a Spanned<Node>,
}

impl<'de, 'a> de::Deserializer<'de> for NodeDe<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let at = self.node.referenced;
        match &self.node.value {
            Node::Null => visitor.visit_unit(),
            Node::Bool(b) => visitor.visit_bool(*b),
            Node::Int(i) => visitor.visit_i64(*i),
            Node::UInt(u) => visitor.visit_u64(*u),
            Node::Float(x) => visitor.visit_f64(*x),
            Node::Str(s) => visitor.visit_str(s),
            Node::Seq(items) => visitor.visit_seq(SeqDe { items: items.iter(), at }),
            Node::Map(entries) => visitor.visit_map(MapAccess { entries: entries.iter(), value: None, at }),
        }
        .at(at)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node.value {
            Node::Null => visitor.visit_none().at(self.node.referenced),
            _ => visitor.visit_some(self),
        }
    }

    /// Text wanted where a plain number or boolean was written (`version: 1.2`): its YAML text, as
    /// serde-saphyr would give it.
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let at = self.node.referenced;
        match &self.node.value {
            Node::Int(i) => visitor.visit_string(i.to_string()),
            Node::UInt(u) => visitor.visit_string(u.to_string()),
            Node::Float(x) => visitor.visit_string(x.to_string()),
            Node::Bool(b) => visitor.visit_string(b.to_string()),
            _ => return self.deserialize_any(visitor),
        }
        .at(at)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, DeError> {
        if name == SPANNED {
            visitor.visit_newtype_struct(SpannedDe { node: self.node }).at(self.node.referenced)
        } else {
            visitor.visit_newtype_struct(self)
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let at = self.node.referenced;
        match &self.node.value {
            Node::Str(s) => visitor
                .visit_enum(s.as_str().into_deserializer())
                .map_err(|e: de::value::Error| DeError { message: e.to_string(), at: Some(at) }),
            Node::Map(entries) if entries.len() == 1 => {
                visitor.visit_enum(EnumDe { key: &entries[0].0, value: &entries[0].1 }).at(at)
            }
            other => Err(DeError {
                message: format!("invalid type: {}, expected one of the names it takes", other.describe()),
                at: Some(at),
            }),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf
        unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

struct SeqDe<'a> {
    items: std::slice::Iter<'a, Spanned<Node>>,
    at: Location,
}

impl<'de, 'a> de::SeqAccess<'de> for SeqDe<'a> {
    type Error = DeError;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some(node) => seed.deserialize(NodeDe { node }).map(Some),
            None => Ok(None),
        }
        .at(self.at)
    }
}

/// A mapping's entries; `at_end` says where a missing key is reported.
struct MapDe<'a> {
    entries: &'a [(Spanned<String>, Spanned<Node>)],
    at: Location,
    at_end: Location,
}

impl<'de, 'a> de::Deserializer<'de> for MapDe<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let at = self.at_end;
        visitor.visit_map(MapAccess { entries: self.entries.iter(), value: None, at: self.at }).at(at)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

struct MapAccess<'a> {
    entries: std::slice::Iter<'a, (Spanned<String>, Spanned<Node>)>,
    value: Option<&'a Spanned<Node>>,
    at: Location,
}

impl<'de, 'a> de::MapAccess<'de> for MapAccess<'a> {
    type Error = DeError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        match self.entries.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(KeyDe { key }).map(Some).at(key.referenced)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        match self.value.take() {
            Some(node) => seed.deserialize(NodeDe { node }),
            None => Err(DeError { message: "a value without its key".into(), at: Some(self.at) }),
        }
    }
}

/// A mapping's key: text (or a spanned text).
struct KeyDe<'a> {
    key: &'a Spanned<String>,
}

impl<'de, 'a> de::Deserializer<'de> for KeyDe<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_str(&self.key.value).at(self.key.referenced)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, DeError> {
        let node = Spanned::new(Node::Str(self.key.value.clone()), self.key.referenced, self.key.defined);
        if name == SPANNED {
            // The key's own place: a fresh node, not borrowed from the block.
            visitor.visit_newtype_struct(SpannedOwned { node }).at(self.key.referenced)
        } else {
            visitor.visit_newtype_struct(self)
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// `{key: value}` as an enum variant with its content.
struct EnumDe<'a> {
    key: &'a Spanned<String>,
    value: &'a Spanned<Node>,
}

impl<'de, 'a> de::EnumAccess<'de> for EnumDe<'a> {
    type Error = DeError;
    type Variant = NodeDe<'a>;

    fn variant_seed<V: de::DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, NodeDe<'a>), DeError> {
        let v = seed.deserialize(KeyDe { key: self.key })?;
        Ok((v, NodeDe { node: self.value }))
    }
}

impl<'de, 'a> de::VariantAccess<'de> for NodeDe<'a> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        de::Deserialize::deserialize(self)
    }

    fn newtype_variant_seed<T: de::DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_any(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_any(self, visitor)
    }
}

/// [`Spanned`]'s synthesized map: the marker, the value, and its two places.
struct SpannedDe<'a> {
    node: &'a Spanned<Node>,
}

impl<'de, 'a> de::Deserializer<'de> for SpannedDe<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_map(SpannedMap { node: self.node, state: 0 })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// [`SpannedDe`] of a node made on the spot (a key).
struct SpannedOwned {
    node: Spanned<Node>,
}

impl<'de> de::Deserializer<'de> for SpannedOwned {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_map(SpannedMap { node: &self.node, state: 0 })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

struct SpannedMap<'a> {
    node: &'a Spanned<Node>,
    state: u8,
}

impl<'de, 'a> de::MapAccess<'de> for SpannedMap<'a> {
    type Error = DeError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        let key = match self.state {
            0 => SPANNED_MARKER,
            1 => "value",
            2 => "referenced",
            3 => "defined",
            _ => return Ok(None),
        };
        seed.deserialize(de::value::StrDeserializer::<DeError>::new(key)).map(Some)
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        self.state += 1;
        match self.state {
            1 => seed.deserialize(de::value::BoolDeserializer::<DeError>::new(true)),
            2 => seed.deserialize(NodeDe { node: self.node }),
            3 => seed.deserialize(LocationDe(self.node.referenced)),
            _ => seed.deserialize(LocationDe(self.node.defined)),
        }
    }
}

/// A [`Location`] as the map serde-saphyr reads it back from.
struct LocationDe(Location);

impl<'de> de::Deserializer<'de> for LocationDe {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let entries = [("line", self.0.line()), ("column", self.0.column())];
        visitor.visit_map(de::value::MapDeserializer::new(entries.into_iter()))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        url: Spanned<String>,
        #[serde(default)]
        tries: Option<u8>,
        #[serde(default)]
        mode: Option<Mode>,
        #[serde(default)]
        list: Vec<Spanned<f64>>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        Fast,
        Slow,
    }

    fn node(yaml: &str) -> Spanned<Node> {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn places_survive_the_round_trip() {
        let n = node("url: http://x\ntries: 3\nmode: slow\nlist: [1, 2.5]\n");
        let inner: Inner = parse(&n).unwrap();
        assert_eq!((inner.url.referenced.line(), inner.url.referenced.column()), (1, 6));
        assert_eq!(inner.tries, Some(3));
        assert_eq!(inner.mode, Some(Mode::Slow));
        assert_eq!(inner.list[1].value, 2.5);
        assert_eq!((inner.list[1].referenced.line(), inner.list[1].referenced.column()), (4, 11));
    }

    #[test]
    fn errors_name_the_place_and_the_path() {
        let e = parse::<Inner>(&node("url: http://x\ntries: 300\n")).unwrap_err();
        assert_eq!((e.path.as_str(), e.at.line(), e.at.column()), ("tries", 2, 8));
        let e = parse::<Inner>(&node("url: http://x\nmode: quick\n")).unwrap_err();
        assert_eq!((e.path.as_str(), e.at.line()), ("mode", 2));
        assert!(e.message.contains("unknown variant `quick`"), "{}", e.message);
        let e = parse::<Inner>(&node("tries: 1\n")).unwrap_err();
        assert!(e.message.contains("missing field `url`"), "{}", e.message);
        let e = parse::<Inner>(&node("url: x\nurls: y\n")).unwrap_err();
        assert_eq!((e.at.line(), e.at.column()), (2, 1));
        let e = parse::<Inner>(&node("url: [1]\n")).unwrap_err();
        assert_eq!((e.path.as_str(), e.at.line(), e.at.column()), ("url", 1, 6));
    }

    #[test]
    fn numbers_read_as_text_where_text_is_wanted() {
        let n = node("url: 1.5\n");
        let inner: Inner = parse(&n).unwrap();
        assert_eq!(inner.url.value, "1.5");
    }
}
