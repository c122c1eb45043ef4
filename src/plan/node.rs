//! The spanned value tree both plan syntaxes lower into. TOML and KDL differ in shape; this
//! module is where they become one: tables with ordered keys, lists, scalars, each carrying the
//! byte span it came from so any later error can point at it. It owns the lowering rules for
//! both syntaxes (documented in `docs/plan-language.md`); it does not know what a plan means.

use std::fmt;

use super::kdl_scan;
use super::limits::MAX_DEPTH;
use crate::diag::{Diag, Source, Span};

#[derive(Clone, Debug)]
pub struct Node {
    pub span: Span,
    pub kind: NodeKind,
}

#[derive(Clone, Debug)]
pub enum NodeKind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Node>),
    Table(Table),
}

/// A table keeps its keys in source order, each with the span of the key itself.
#[derive(Clone, Debug, Default)]
pub struct Table {
    pub entries: Vec<Entry>,
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub key: String,
    pub key_span: Span,
    pub value: Node,
}

impl Table {
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.key == key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.key.as_str())
    }

    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        let i = self.entries.iter().position(|e| e.key == key)?;
        Some(self.entries.remove(i))
    }
}

impl Node {
    pub fn new(span: Span, kind: NodeKind) -> Self {
        Node { span, kind }
    }

    pub fn type_name(&self) -> &'static str {
        match self.kind {
            NodeKind::Null => "null",
            NodeKind::Bool(_) => "a boolean",
            NodeKind::Int(_) => "an integer",
            NodeKind::Float(_) => "a float",
            NodeKind::Str(_) => "a string",
            NodeKind::List(_) => "a list",
            NodeKind::Table(_) => "a table",
        }
    }

    pub fn as_table(&self) -> Option<&Table> {
        match &self.kind {
            NodeKind::Table(t) => Some(t),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Plain JSON view (spans dropped), for equality checks and serialization.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.kind {
            NodeKind::Null => J::Null,
            NodeKind::Bool(b) => J::Bool(*b),
            NodeKind::Int(i) => J::from(*i),
            NodeKind::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            NodeKind::Str(s) => J::String(s.clone()),
            NodeKind::List(l) => J::Array(l.iter().map(Node::to_json).collect()),
            NodeKind::Table(t) => J::Object(t.entries.iter().map(|e| (e.key.clone(), e.value.to_json())).collect()),
        }
    }

    /// Build a node from JSON, every part pointing at `span`.
    pub fn from_json(v: &serde_json::Value, span: &Span) -> Node {
        use serde_json::Value as J;
        let kind = match v {
            J::Null => NodeKind::Null,
            J::Bool(b) => NodeKind::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => NodeKind::Int(i),
                None => NodeKind::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            J::String(s) => NodeKind::Str(s.clone()),
            J::Array(a) => NodeKind::List(a.iter().map(|x| Node::from_json(x, span)).collect()),
            J::Object(o) => NodeKind::Table(Table {
                entries: o
                    .iter()
                    .map(|(k, x)| Entry { key: k.clone(), key_span: span.clone(), value: Node::from_json(x, span) })
                    .collect(),
            }),
        };
        Node::new(span.clone(), kind)
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

/// A float a plan can use: infinities and NaN would silently become null in every later pass
/// (JSON has neither), so they are refused where they are written.
fn finite(f: f64, text: &str, span: &Span, src: &Source) -> Result<NodeKind, Diag> {
    if f.is_finite() {
        return Ok(NodeKind::Float(f));
    }
    Err(Diag::new(format!("`{text}` is not a finite number"))
        .at(src, span.clone())
        .help("plans take finite numbers only: write a number, or leave the field out"))
}

/// Lower a TOML document.
pub fn from_toml(src: &Source) -> Result<Node, Diag> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(&src.text).map_err(|e| {
        let msg = e.message().trim();
        let diag = match e.span() {
            Some(span) => Diag::new(format!("TOML syntax error: {msg}")).at(src, span).label("here"),
            None => Diag::new(format!("TOML syntax error: {msg}")).in_source(src),
        };
        // The toml parser's own depth limit (80) is past ours; say it the same way.
        if msg.contains("recursion") || msg.contains("recurse") {
            return diag.help(format!("plans nest at most {MAX_DEPTH} levels; flatten the deepest key or value"));
        }
        diag
    })?;
    fn value(v: &toml::Spanned<DeValue<'_>>, depth: usize, src: &Source) -> Result<Node, Diag> {
        let span = v.span();
        let kind = match v.get_ref() {
            DeValue::String(s) => NodeKind::Str(s.to_string()),
            DeValue::Integer(i) => match i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()) {
                Ok(n) => NodeKind::Int(n),
                Err(_) => return Err(Diag::new("integer out of range").at(src, span)),
            },
            DeValue::Float(x) => {
                let text = x.as_str().replace('_', "");
                match text.parse::<f64>() {
                    Ok(n) => finite(n, &text, &span, src)?,
                    Err(_) => return Err(Diag::new(format!("invalid float `{text}`")).at(src, span)),
                }
            }
            DeValue::Boolean(b) => NodeKind::Bool(*b),
            DeValue::Datetime(d) => NodeKind::Str(d.to_string()),
            DeValue::Array(a) => {
                nested(depth, &span, src)?;
                NodeKind::List(a.iter().map(|x| value(x, depth + 1, src)).collect::<Result<_, _>>()?)
            }
            DeValue::Table(t) => {
                nested(depth, &span, src)?;
                NodeKind::Table(table(t, depth + 1, src)?)
            }
        };
        Ok(Node::new(span, kind))
    }
    fn table(t: &DeTable<'_>, depth: usize, src: &Source) -> Result<Table, Diag> {
        let mut out = Table::default();
        for (k, v) in t.iter() {
            out.entries.push(Entry { key: k.get_ref().to_string(), key_span: k.span(), value: value(v, depth, src)? });
        }
        Ok(out)
    }
    let span = doc.span();
    Ok(Node::new(span, NodeKind::Table(table(doc.get_ref(), 0, src)?)))
}

/// A table or list opened at `depth` (the top-level table's entries are at depth 0).
fn nested(depth: usize, span: &Span, src: &Source) -> Result<(), Diag> {
    if depth >= MAX_DEPTH {
        // Point at the opening character, not the whole (possibly huge) value.
        return Err(kdl_scan::too_deep(src, span.start..span.start + 1));
    }
    Ok(())
}

/// Lower a KDL v2 document. The rules, in short (full text in docs/plan-language.md):
/// `key value` is a scalar, `key a b c` a list, a bare `key` is `true`; a node with properties or
/// children is a table, and its single argument, if any, becomes the table's `name`; a node name
/// repeated in one block makes a list; a block whose children are all `-` is a list.
pub fn from_kdl(src: &Source) -> Result<Node, Diag> {
    let text = kdl_scan::prepare(src)?;
    let doc = parse_kdl(&text, src)?.map_err(|e| {
        let first = e.diagnostics.first();
        let span = first.map(|d| d.span.offset()..d.span.offset() + d.span.len()).unwrap_or(0..0);
        let msg = first.and_then(|d| d.message.clone()).unwrap_or_else(|| "invalid document".into());
        let mut diag = Diag::new(format!("KDL syntax error: {msg}")).at(src, span);
        if let Some(label) = first.and_then(|d| d.label.clone()) {
            diag = diag.label(label);
        }
        if let Some(help) = first.and_then(|d| d.help.clone()) {
            diag = diag.help(help);
        }
        diag
    })?;
    let span = 0..src.text.len();
    Ok(Node::new(span, kdl_block(&doc, 0, src)?))
}

/// Stack for the KDL parser's thread. Its frames are large (tens of kilobytes a level in a
/// debug build), so it runs on a stack of known size rather than the caller's: test threads
/// and tokio workers have 2 MiB. With nesting capped at `MAX_DEPTH`, this is ample.
const KDL_PARSER_STACK: usize = 16 * 1024 * 1024;

/// Run the `kdl` parser on its own thread (see `KDL_PARSER_STACK`). A panic inside the parser
/// becomes an error about the file instead of taking planrun down.
fn parse_kdl(text: &str, src: &Source) -> Result<Result<kdl::KdlDocument, kdl::KdlError>, Diag> {
    std::thread::scope(|scope| {
        let parser = std::thread::Builder::new()
            .name("kdl-parser".into())
            .stack_size(KDL_PARSER_STACK)
            .spawn_scoped(scope, || kdl::KdlDocument::parse_v2(text))
            .map_err(|e| Diag::new(format!("cannot start the KDL parser: {e}")).in_source(src))?;
        parser.join().map_err(|_| {
            Diag::new("the KDL parser failed on this file (a bug in planrun's KDL library)")
                .in_source(src)
                .help("please report it with the file; the TOML form of the plan may load meanwhile")
        })
    })
}

fn sspan(s: miette::SourceSpan) -> Span {
    s.offset()..s.offset() + s.len()
}

fn kdl_value(v: &kdl::KdlValue, span: Span, src: &Source) -> Result<Node, Diag> {
    let kind = match v {
        kdl::KdlValue::String(s) => NodeKind::Str(s.clone()),
        kdl::KdlValue::Integer(i) => match i64::try_from(*i) {
            Ok(n) => NodeKind::Int(n),
            Err(_) => return Err(Diag::new("integer out of range").at(src, span)),
        },
        kdl::KdlValue::Float(f) => finite(*f, &v.to_string(), &span, src)?,
        kdl::KdlValue::Bool(b) => NodeKind::Bool(*b),
        kdl::KdlValue::Null => NodeKind::Null,
    };
    Ok(Node::new(span, kind))
}

/// A block's nodes; `depth` counts the blocks around it (the document is at 0).
fn kdl_block(doc: &kdl::KdlDocument, depth: usize, src: &Source) -> Result<NodeKind, Diag> {
    let nodes = doc.nodes();
    if !nodes.is_empty() && nodes.iter().all(|n| n.name().value() == "-") {
        let items = nodes.iter().map(|n| kdl_node(n, depth, src)).collect::<Result<_, _>>()?;
        return Ok(NodeKind::List(items));
    }
    let mut table = TableBuilder::default();
    for n in nodes {
        table.push(n.name().value().to_string(), sspan(n.name().span()), kdl_node(n, depth, src)?);
    }
    Ok(NodeKind::Table(table.table))
}

/// Builds a table where a repeated key collects its values into a list, in source order.
/// Keys are indexed so a block of many nodes builds in linear time.
#[derive(Default)]
struct TableBuilder {
    table: Table,
    index: std::collections::HashMap<String, usize>,
    collected: std::collections::HashSet<String>,
}

impl TableBuilder {
    fn push(&mut self, key: String, key_span: Span, value: Node) {
        let collected = self.collected.contains(&key);
        let Some(&at) = self.index.get(&key) else {
            self.index.insert(key.clone(), self.table.entries.len());
            self.table.entries.push(Entry { key, key_span, value });
            return;
        };
        let existing = &mut self.table.entries[at];
        if collected {
            if let NodeKind::List(items) = &mut existing.value.kind {
                items.push(value);
            }
            return;
        }
        let first = std::mem::replace(&mut existing.value, Node::new(0..0, NodeKind::Null));
        let span = first.span.start..value.span.end;
        existing.value = Node::new(span, NodeKind::List(vec![first, value]));
        self.collected.insert(key);
    }
}

fn kdl_node(n: &kdl::KdlNode, depth: usize, src: &Source) -> Result<Node, Diag> {
    let span = sspan(n.span());
    let mut args = Vec::new();
    let mut props = Vec::new();
    for e in n.entries() {
        let espan = sspan(e.span());
        // The entry span covers `key=value`; point values at themselves where we can.
        match e.name() {
            None => args.push(kdl_value(e.value(), espan, src)?),
            Some(k) => props.push(Entry {
                key: k.value().to_string(),
                key_span: sspan(k.span()),
                value: kdl_value(e.value(), espan, src)?,
            }),
        }
    }
    let children = n.children();
    if props.is_empty() && children.is_none() {
        return Ok(match args.len() {
            0 => Node::new(span, NodeKind::Bool(true)),
            1 => args.pop().unwrap_or_else(|| Node::new(0..0, NodeKind::Null)),
            _ => Node::new(span, NodeKind::List(args)),
        });
    }
    if args.len() > 1 {
        return Err(Diag::new(format!(
            "node `{}` has {} arguments and a block; a node with properties or children takes at most one argument (its name)",
            n.name().value(),
            args.len()
        ))
        .at(src, args[1].span.clone()));
    }
    let mut table = TableBuilder::default();
    if let Some(name) = args.pop() {
        table.push("name".into(), name.span.clone(), name);
    }
    for p in props {
        table.push(p.key, p.key_span, p.value);
    }
    if let Some(doc) = children {
        nested(depth, &span, src)?;
        match kdl_block(doc, depth + 1, src)? {
            NodeKind::Table(t) => {
                for e in t.entries {
                    table.push(e.key, e.key_span, e.value);
                }
            }
            list @ NodeKind::List(_) if table.table.entries.is_empty() => return Ok(Node::new(span, list)),
            _ => {
                return Err(Diag::new(format!(
                    "node `{}` mixes a `-` list block with arguments or properties",
                    n.name().value()
                ))
                .at(src, span));
            }
        }
    }
    Ok(Node::new(span, NodeKind::Table(table.table)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kdl(s: &str) -> serde_json::Value {
        from_kdl(&Source::new("t.kdl", s)).unwrap().to_json()
    }

    #[test]
    fn kdl_lowering_rules() {
        assert_eq!(kdl("a 1\nb 1 2\nc\n"), json!({"a": 1, "b": [1, 2], "c": true}));
        assert_eq!(kdl("s \"x\" k=1 { d 2 }"), json!({"s": {"name": "x", "k": 1, "d": 2}}));
        assert_eq!(kdl("p \"a\"\np \"b\"\np \"c\""), json!({"p": ["a", "b", "c"]}));
        assert_eq!(kdl("l { - 1; - 2 }"), json!({"l": [1, 2]}));
    }

    #[test]
    fn toml_lowering_keeps_order_and_types() {
        let n = from_toml(&Source::new("t.toml", "b = 1\na = [1.5, \"x\"]\n[t]\nk = true\n")).unwrap();
        assert_eq!(n.to_json(), json!({"b": 1, "a": [1.5, "x"], "t": {"k": true}}));
        let keys: Vec<_> = n.as_table().unwrap().keys().collect();
        assert_eq!(keys, ["b", "a", "t"]);
    }
}
