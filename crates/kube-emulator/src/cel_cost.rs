//! The API server's CEL cost limits for custom resources, which kube-cel does not model.
//!
//! **At CRD creation/update** the API server estimates the worst-case cost of every
//! `x-kubernetes-validations` rule and refuses the CRD when one rule, multiplied by the number
//! of times it can run in one object, exceeds 10 000 000 (`StaticEstimatedCostLimit`) or when
//! the rules of the whole schema exceed 100 000 000 (`StaticEstimatedCRDCostLimit`), with
//! "estimated rule cost exceeds budget by factor of ...". Lists, maps and strings without
//! `maxItems` / `maxProperties` / `maxLength` are sized from the 3 MiB request limit.
//!
//! **Per request** each rule evaluation may cost at most 1 000 000 (`PerCallLimit`) and all
//! evaluations of one object at most 10 000 000 (`RuntimeCELCostBudget`).
//!
//! This module is a port of the parts of the upstream code that decide those numbers, for the
//! functions and macros CRD rules use:
//! - cel-go `checker/cost.go` (the coster: per-node costs, size tracking through
//!   comprehensions, the O(n)/O(n·m) string and list functions);
//! - k8s.io/apiserver `pkg/cel/library/cost.go` (Kubernetes library functions) and
//!   `pkg/cel/common/schemas.go` (the schema → CEL type model: `MaxElements`,
//!   `MinSerializedSize`);
//! - k8s.io/apiextensions-apiserver `schema/cel/compilation.go` (size estimator, unbounded
//!   cardinality) and `apis/apiextensions/validation` (cardinality from ancestors' bounds, the
//!   per-rule and per-CRD limits, the error texts).
//!
//! The checked AST cel-go gives its coster (types and overload ids) is replaced by a small type
//! inference over the schema model; see `crates/kube-emulator/GAPS.md` for what differs.
//! The runtime limits are checked against the same estimator with the object's actual sizes
//! (an upper bound of cel-go's actual cost, which also counts short-circuits).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use kube_cel::cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue, operators};
use serde_json::Value;

use crate::error::FieldError;

/// Largest estimated cost of one rule (times its cardinality), `StaticEstimatedCostLimit`.
pub const STATIC_ESTIMATED_COST_LIMIT: u64 = 10_000_000;
/// Largest estimated cost of all rules of one CRD schema, `StaticEstimatedCRDCostLimit`.
pub const STATIC_ESTIMATED_CRD_COST_LIMIT: u64 = 100_000_000;
/// Largest cost of one rule evaluation at admission time, `PerCallLimit`.
pub const PER_CALL_LIMIT: u64 = 1_000_000;
/// Largest cost of all rule evaluations for one object, `RuntimeCELCostBudget`.
pub const RUNTIME_CEL_COST_BUDGET: u64 = 10_000_000;
/// `DefaultMaxRequestSizeBytes`: what unbounded lists, maps and strings are sized from.
const MAX_REQUEST_SIZE_BYTES: u64 = 3 * 1024 * 1024;

// cel-go common/cost.go
const STRING_TRAVERSAL_COST_FACTOR: f64 = 0.1;
const REGEX_STRING_LENGTH_COST_FACTOR: f64 = 0.25;
const SELECT_AND_IDENT_COST: u64 = 1;
const LIST_CREATE_BASE_COST: u64 = 10;
const MAP_CREATE_BASE_COST: u64 = 30;
const STRUCT_CREATE_BASE_COST: u64 = 40;

// k8s.io/apiserver/pkg/cel/limits.go
const MAX_DURATION_SIZE_JSON: u64 = 32;
const MAX_DATETIME_SIZE_JSON: u64 = 32;
const MIN_DURATION_SIZE_JSON: u64 = 3;
const JSON_DATE_SIZE: u64 = 12;
const MIN_DATETIME_SIZE_JSON: u64 = 21;
const MIN_STRING_SIZE: u64 = 2;
const MIN_BOOL_SIZE: u64 = 4;
const MIN_NUMBER_SIZE: u64 = 1;

/// cel-go's `macros` accumulator names (`__result__`, and `@result` in cel-go ≥ 0.22 and in
/// the Rust `cel` parser).
fn is_accumulator(name: &str) -> bool {
    name == "__result__" || name == "@result"
}

// ------------------------------------------------------------------ estimates

/// A `[min, max]` size or cost estimate with saturating arithmetic (cel-go's `SizeEstimate` and
/// `CostEstimate`, which share their arithmetic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub min: u64,
    pub max: u64,
}

impl Range {
    const fn fixed(n: u64) -> Range {
        Range { min: n, max: n }
    }
    const ZERO: Range = Range::fixed(0);
    const UNKNOWN: Range = Range {
        min: 0,
        max: u64::MAX,
    };
    fn add(self, o: Range) -> Range {
        Range {
            min: self.min.saturating_add(o.min),
            max: self.max.saturating_add(o.max),
        }
    }
    fn mul(self, o: Range) -> Range {
        Range {
            min: self.min.saturating_mul(o.min),
            max: self.max.saturating_mul(o.max),
        }
    }
    fn factor(self, f: f64) -> Range {
        Range {
            min: mul_factor(self.min, f),
            max: mul_factor(self.max, f),
        }
    }
    fn union(self, o: Range) -> Range {
        Range {
            min: self.min.min(o.min),
            max: self.max.max(o.max),
        }
    }
}

/// `multiplyByCostFactor`: the product rounded up, saturating at u64::MAX.
fn mul_factor(x: u64, f: f64) -> u64 {
    let xf = x as f64;
    if xf > 0.0 && f > 0.0 && xf > u64::MAX as f64 / f {
        return u64::MAX;
    }
    let c = (xf * f).ceil();
    if c >= 18_446_744_073_709_551_616.0 {
        u64::MAX
    } else {
        c as u64
    }
}

// ------------------------------------------------------------------ schema model

/// The CEL declaration of a schema node (k8s `DeclType`): its kind, `MaxElements` (the size a
/// value can have: characters ×4 for strings with `maxLength`, items, properties) and
/// `MinSerializedSize` (the fewest JSON bytes a value takes, which sizes unbounded parents).
#[derive(Debug)]
pub(crate) struct Decl {
    kind: DeclKind,
    max_elements: u64,
    min_size: u64,
}

#[derive(Debug)]
enum DeclKind {
    Object(BTreeMap<String, Arc<Decl>>),
    List(Arc<Decl>),
    Map(Arc<Decl>, Arc<Decl>),
    Scalar(Scalar),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar {
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Duration,
    Timestamp,
    Null,
    Dyn,
}

fn scalar(s: Scalar, min_size: u64, max_elements: u64) -> Arc<Decl> {
    Arc::new(Decl {
        kind: DeclKind::Scalar(s),
        max_elements,
        min_size,
    })
}

fn u64_of(schema: &Value, key: &str) -> Option<u64> {
    schema
        .get(key)
        .and_then(|v| v.as_u64().or_else(|| v.as_i64().map(|_| 0)))
}

/// `SchemaDeclType`: the CEL type of a schema node, `None` for what CEL does not see.
/// `root` adds `apiVersion`, `kind` and `metadata.name/generateName` (custom resource and
/// embedded-resource roots). Enum values do not bound a string's size here (newer API servers
/// derive a length from them; older ones, like this model, do not).
pub(crate) fn decl_of(schema: &Value, root: bool) -> Option<Arc<Decl>> {
    let unbounded_string = MAX_REQUEST_SIZE_BYTES - 2;
    if schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true)
    {
        return Some(scalar(Scalar::Dyn, 1, unbounded_string));
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("array") => {
            let items = schema.get("items")?;
            let elem = decl_of(items, embedded(items))?;
            let max = u64_of(schema, "maxItems")
                .unwrap_or((MAX_REQUEST_SIZE_BYTES - 2) / (elem.min_size + 1));
            Some(Arc::new(Decl {
                kind: DeclKind::List(elem),
                max_elements: max,
                min_size: 2,
            }))
        }
        Some("object") => {
            if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                let elem = decl_of(ap, embedded(ap))?;
                let max = u64_of(schema, "maxProperties")
                    .unwrap_or((MAX_REQUEST_SIZE_BYTES - 2) / (elem.min_size + 6));
                return Some(Arc::new(Decl {
                    kind: DeclKind::Map(scalar(Scalar::String, MIN_STRING_SIZE, 0), elem),
                    max_elements: max,
                    min_size: 2,
                }));
            }
            let required: Vec<&str> = schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut fields = BTreeMap::new();
            let mut min_size = 2;
            let empty = serde_json::Map::new();
            let props = schema
                .get("properties")
                .and_then(Value::as_object)
                .unwrap_or(&empty);
            for (name, prop) in props {
                if root && matches!(name.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let Some(field) = decl_of(prop, embedded(prop)) else {
                    continue;
                };
                if required.contains(&name.as_str()) && prop.get("default").is_none() {
                    min_size += name.len() as u64 + field.min_size + 4;
                }
                if let Some(escaped) = escape(name) {
                    fields.insert(escaped, field);
                }
            }
            if root {
                let s = || scalar(Scalar::String, MIN_STRING_SIZE, unbounded_string);
                fields.insert("apiVersion".into(), s());
                fields.insert("kind".into(), s());
                let meta =
                    BTreeMap::from([("name".to_string(), s()), ("generateName".into(), s())]);
                fields.insert(
                    "metadata".into(),
                    Arc::new(Decl {
                        kind: DeclKind::Object(meta),
                        max_elements: 0,
                        min_size: 2,
                    }),
                );
            }
            Some(Arc::new(Decl {
                kind: DeclKind::Object(fields),
                max_elements: 0,
                min_size,
            }))
        }
        Some("string") => {
            let max_len = u64_of(schema, "maxLength");
            Some(match schema.get("format").and_then(Value::as_str) {
                Some("byte") => scalar(
                    Scalar::Bytes,
                    MIN_STRING_SIZE,
                    max_len.unwrap_or(unbounded_string),
                ),
                Some("duration") => scalar(
                    Scalar::Duration,
                    MIN_DURATION_SIZE_JSON,
                    MAX_DURATION_SIZE_JSON,
                ),
                Some("date") => scalar(Scalar::Timestamp, JSON_DATE_SIZE, JSON_DATE_SIZE),
                Some("date-time") => scalar(
                    Scalar::Timestamp,
                    MIN_DATETIME_SIZE_JSON,
                    MAX_DATETIME_SIZE_JSON,
                ),
                // maxLength counts characters; a character is up to 4 bytes.
                _ => scalar(
                    Scalar::String,
                    MIN_STRING_SIZE,
                    max_len.map(|m| m * 4).unwrap_or(unbounded_string),
                ),
            })
        }
        Some("boolean") => Some(scalar(Scalar::Bool, MIN_BOOL_SIZE, 0)),
        Some("number") => Some(scalar(Scalar::Double, MIN_NUMBER_SIZE, 0)),
        Some("integer") => Some(scalar(Scalar::Int, MIN_NUMBER_SIZE, 0)),
        _ => None,
    }
}

fn embedded(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-embedded-resource")
        .and_then(Value::as_bool)
        == Some(true)
}

const CEL_RESERVED: &[&str] = &[
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// How a property name is spelled in CEL (`apiservercel.Escape`); `None` when it cannot be.
fn escape(name: &str) -> Option<String> {
    if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    if CEL_RESERVED.contains(&name) {
        return Some(format!("__{name}__"));
    }
    let mut out = String::new();
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '_' if chars.peek() == Some(&'_') => {
                chars.next();
                out.push_str("__underscores__");
            }
            '.' => out.push_str("__dot__"),
            '-' => out.push_str("__dash__"),
            '/' => out.push_str("__slash__"),
            c if c.is_ascii_alphanumeric() || c == '_' => out.push(c),
            _ => return None,
        }
    }
    Some(out)
}

// ------------------------------------------------------------------ types

/// The CEL type of an expression, as far as the coster needs it (select costs, overloads,
/// scalar sizes, list element types).
#[derive(Clone, Debug)]
enum Ty {
    Scalar(Scalar),
    List(Box<Ty>),
    Map(Box<Ty>, Box<Ty>),
    Object(Arc<Decl>),
    /// Library types (quantity, url, ip, cidr, optional, type).
    Opaque,
}

impl Ty {
    fn of(decl: &Arc<Decl>) -> Ty {
        match &decl.kind {
            DeclKind::Object(_) => Ty::Object(decl.clone()),
            DeclKind::List(e) => Ty::List(Box::new(Ty::of(e))),
            DeclKind::Map(k, v) => Ty::Map(Box::new(Ty::of(k)), Box::new(Ty::of(v))),
            DeclKind::Scalar(s) => Ty::Scalar(*s),
        }
    }
    const DYN: Ty = Ty::Scalar(Scalar::Dyn);
    const BOOL: Ty = Ty::Scalar(Scalar::Bool);
    const INT: Ty = Ty::Scalar(Scalar::Int);
    const STRING: Ty = Ty::Scalar(Scalar::String);
    fn is(&self, s: Scalar) -> bool {
        matches!(self, Ty::Scalar(x) if *x == s)
    }
    fn is_dyn(&self) -> bool {
        self.is(Scalar::Dyn)
    }
    fn is_list(&self) -> bool {
        matches!(self, Ty::List(_))
    }
    fn is_map(&self) -> bool {
        matches!(self, Ty::Map(..))
    }
    /// cel-go `isScalar`: constant size at compile time (strings are not).
    fn is_fixed_size(&self) -> bool {
        matches!(
            self,
            Ty::Scalar(
                Scalar::Bool
                    | Scalar::Double
                    | Scalar::Duration
                    | Scalar::Int
                    | Scalar::Timestamp
                    | Scalar::Uint
            )
        )
    }
    /// Type parameters (`list(T)` → T, `map(K, V)` → K), as cel-go's `Type.Parameters()[0]`.
    fn first_param(&self) -> Option<Ty> {
        match self {
            Ty::List(e) => Some((**e).clone()),
            Ty::Map(k, _) => Some((**k).clone()),
            _ => None,
        }
    }
    fn elem(&self) -> Ty {
        match self {
            Ty::List(e) => (**e).clone(),
            Ty::Map(_, v) => (**v).clone(),
            _ => Ty::DYN,
        }
    }
    fn field(&self, name: &str) -> Ty {
        match self {
            Ty::Object(d) => match &d.kind {
                DeclKind::Object(f) => f.get(name).map(Ty::of).unwrap_or(Ty::DYN),
                _ => Ty::DYN,
            },
            Ty::Map(_, v) => (**v).clone(),
            _ => Ty::DYN,
        }
    }
}

// ------------------------------------------------------------------ sizes of the data

/// Where sizes of data reached through `self`/`oldSelf` come from: the schema bounds (CRD
/// creation) or an actual object (admission).
trait Sizes {
    /// `EstimateSize` for a field path (`self`, names, `@items`, `@values`, `@keys`).
    fn estimate(&self, path: &[String]) -> Option<Range>;
}

/// apiextensions' `sizeEstimator`: walks the declaration from the rule's node. The first path
/// element (the variable) is skipped whatever it is, as upstream does.
struct SchemaSizes<'a> {
    root: &'a Arc<Decl>,
}

impl Sizes for SchemaSizes<'_> {
    fn estimate(&self, path: &[String]) -> Option<Range> {
        if path.is_empty() {
            return None;
        }
        let mut node = self.root;
        for name in &path[1..] {
            node = match (name.as_str(), &node.kind) {
                ("@items" | "@values", DeclKind::List(e) | DeclKind::Map(_, e)) => e,
                ("@keys", DeclKind::Map(k, _)) => k,
                (_, DeclKind::Object(fields)) => fields.get(name.as_str())?,
                _ => return None,
            };
        }
        Some(Range {
            min: 0,
            max: node.max_elements,
        })
    }
}

/// Sizes of an actual object: the largest value the path reaches (characters of strings,
/// entries of lists and maps, 1 for other scalars).
struct ValueSizes<'a> {
    self_value: &'a Value,
    old_value: Option<&'a Value>,
}

impl Sizes for ValueSizes<'_> {
    fn estimate(&self, path: &[String]) -> Option<Range> {
        let first = path.first()?;
        let start = if first == "oldSelf" {
            // optionalOldSelf on create: there is nothing to traverse.
            let Some(old) = self.old_value else {
                return Some(Range::ZERO);
            };
            old
        } else {
            self.self_value
        };
        Some(Range {
            min: 0,
            max: largest(start, &path[1..]),
        })
    }
}

/// The largest size among the values `path` reaches from `v`.
fn largest(v: &Value, path: &[String]) -> u64 {
    let Some((name, rest)) = path.split_first() else {
        return match v {
            Value::String(s) => s.chars().count() as u64,
            Value::Array(a) => a.len() as u64,
            Value::Object(o) => o.len() as u64,
            _ => 1,
        };
    };
    let max = |it: &mut dyn Iterator<Item = u64>| it.max().unwrap_or(0);
    match (name.as_str(), v) {
        ("@items", Value::Array(a)) => max(&mut a.iter().map(|x| largest(x, rest))),
        ("@values", Value::Object(o)) => max(&mut o.values().map(|x| largest(x, rest))),
        // Keys are strings: nothing below them.
        ("@keys", Value::Object(o)) if rest.is_empty() => {
            max(&mut o.keys().map(|k| k.chars().count() as u64))
        }
        (field, Value::Object(o)) => o.get(field).map(|x| largest(x, rest)).unwrap_or(0),
        _ => 0,
    }
}

// ------------------------------------------------------------------ the coster

#[derive(Clone, Copy, Debug)]
struct EntrySize {
    list: bool,
    key: Range,
    val: Range,
}

fn union_entries(a: Option<EntrySize>, b: Option<EntrySize>) -> Option<EntrySize> {
    let (a, b) = (a?, b?);
    Some(EntrySize {
        list: a.list,
        key: a.key.union(b.key),
        val: a.val.union(b.val),
    })
}

#[derive(Clone)]
struct LocalVar {
    path: Vec<String>,
    size: Option<Range>,
    entry: Option<EntrySize>,
    ty: Ty,
}

/// cel-go's `AstNode` as the function estimators see an argument.
struct Node {
    /// Field path, dropped when rooted at an accumulator (only root variables have paths).
    path: Option<Vec<String>>,
    ty: Ty,
    computed: Option<Range>,
    entry: Option<EntrySize>,
    /// The literal, for `split`'s constant limit.
    literal: Option<LiteralValue>,
}

/// The overloads whose cost cel-go's coster special-cases; everything else is O(1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Overload {
    IndexList,
    IndexMap,
    FormatString,
    StringToBytes,
    BytesToString,
    QuoteString,
    StartsWith,
    EndsWith,
    InList,
    MatchesString,
    ContainsString,
    LogicalOr,
    LogicalAnd,
    Conditional,
    AddString,
    AddBytes,
    AddList,
    /// `<`, `<=`, `>`, `>=` on strings or bytes, `==`, `!=`: bounded by the smaller operand.
    Compare,
    /// Library overloads whose id matters (`cidr_ip`, `cidr_contains_*_string`).
    CidrIp,
    CidrContainsString,
    Other,
}

struct Coster<'a> {
    sizes: &'a dyn Sizes,
    self_ty: Ty,
    paths: HashMap<u64, Vec<String>>,
    types: HashMap<u64, Ty>,
    computed: HashMap<u64, Range>,
    entries: HashMap<u64, EntrySize>,
    locals: HashMap<String, Vec<LocalVar>>,
}

struct CallEstimate {
    cost: Range,
    result: Option<Range>,
}

impl<'a> Coster<'a> {
    fn new(sizes: &'a dyn Sizes, self_ty: Ty) -> Self {
        Coster {
            sizes,
            self_ty,
            paths: HashMap::new(),
            types: HashMap::new(),
            computed: HashMap::new(),
            entries: HashMap::new(),
            locals: HashMap::new(),
        }
    }

    fn ty(&self, e: &IdedExpr) -> Ty {
        self.types.get(&e.id).cloned().unwrap_or(Ty::DYN)
    }

    fn local(&self, name: &str) -> Option<&LocalVar> {
        self.locals.get(name).and_then(|s| s.last())
    }

    fn push_local(&mut self, name: &str, v: LocalVar) {
        self.locals.entry(name.to_string()).or_default().push(v);
    }

    fn pop_local(&mut self, name: &str) {
        if let Some(s) = self.locals.get_mut(name) {
            s.pop();
        }
    }

    fn path(&self, e: &IdedExpr) -> Vec<String> {
        if let Expr::Ident(name) = &e.expr
            && let Some(v) = self.local(name)
        {
            return v.path.clone();
        }
        self.paths.get(&e.id).cloned().unwrap_or_default()
    }

    fn cost(&mut self, e: &IdedExpr) -> Range {
        let (cost, ty) = match &e.expr {
            Expr::Literal(l) => (Range::ZERO, literal_type(l)),
            Expr::Ident(name) => {
                let (path, ty) = match self.local(name) {
                    Some(v) => (v.path.clone(), v.ty.clone()),
                    None => (
                        vec![name.clone()],
                        match name.as_str() {
                            "self" | "oldSelf" => self.self_ty.clone(),
                            _ => Ty::DYN,
                        },
                    ),
                };
                self.paths.insert(e.id, path);
                (Range::fixed(SELECT_AND_IDENT_COST), ty)
            }
            Expr::Select(sel) => {
                if sel.test {
                    // has(): the presence test costs 1 and adds no path.
                    let c = Range::fixed(1).add(self.cost(&sel.operand));
                    (c, Ty::BOOL)
                } else {
                    let mut c = self.cost(&sel.operand);
                    let operand_ty = self.ty(&sel.operand);
                    if matches!(operand_ty, Ty::Map(..) | Ty::Object(_)) {
                        c = c.add(Range::fixed(SELECT_AND_IDENT_COST));
                    }
                    let mut path = self.path(&sel.operand);
                    path.push(sel.field.clone());
                    self.paths.insert(e.id, path);
                    (c, operand_ty.field(&sel.field))
                }
            }
            Expr::Call(call) => self.cost_call(e, call),
            Expr::List(list) => {
                let mut sum = Range::ZERO;
                let mut item = Range {
                    min: if list.elements.is_empty() {
                        0
                    } else {
                        u64::MAX
                    },
                    max: 0,
                };
                let mut elem_ty: Option<Ty> = None;
                for el in &list.elements {
                    sum = sum.add(self.cost(el));
                    item = item.union(self.size_or_unknown(el));
                    let t = self.ty(el);
                    elem_ty = Some(match elem_ty {
                        None => t,
                        Some(prev) if same_kind(&prev, &t) => prev,
                        Some(_) => Ty::DYN,
                    });
                }
                self.entries.insert(
                    e.id,
                    EntrySize {
                        list: true,
                        key: Range::fixed(1),
                        val: item,
                    },
                );
                (
                    sum.add(Range::fixed(LIST_CREATE_BASE_COST)),
                    Ty::List(Box::new(elem_ty.unwrap_or(Ty::DYN))),
                )
            }
            Expr::Map(map) => {
                let mut sum = Range::ZERO;
                let empty = map.entries.is_empty();
                let start = Range {
                    min: if empty { 0 } else { u64::MAX },
                    max: 0,
                };
                let (mut key, mut val) = (start, start);
                let (mut kt, mut vt) = (Ty::DYN, Ty::DYN);
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(me) = &entry.expr {
                        sum = sum.add(self.cost(&me.key)).add(self.cost(&me.value));
                        key = key.union(self.size_or_unknown(&me.key));
                        val = val.union(self.size_or_unknown(&me.value));
                        kt = self.ty(&me.key);
                        vt = self.ty(&me.value);
                    }
                }
                self.entries.insert(
                    e.id,
                    EntrySize {
                        list: false,
                        key,
                        val,
                    },
                );
                (
                    sum.add(Range::fixed(MAP_CREATE_BASE_COST)),
                    Ty::Map(Box::new(kt), Box::new(vt)),
                )
            }
            Expr::Struct(st) => {
                let mut sum = Range::ZERO;
                for entry in &st.entries {
                    if let EntryExpr::StructField(f) = &entry.expr {
                        sum = sum.add(self.cost(&f.value));
                    }
                }
                (sum.add(Range::fixed(STRUCT_CREATE_BASE_COST)), Ty::Opaque)
            }
            Expr::Comprehension(comp) => {
                if is_bind(comp) {
                    self.cost_bind(e, comp)
                } else {
                    self.cost_comprehension(e, comp)
                }
            }
            Expr::Unspecified => (Range::ZERO, Ty::DYN),
        };
        self.types.insert(e.id, ty);
        cost
    }

    fn cost_bind(
        &mut self,
        e: &IdedExpr,
        comp: &kube_cel::cel::common::ast::ComprehensionExpr,
    ) -> (Range, Ty) {
        let mut sum = self.cost(&comp.iter_range);
        sum = sum.add(self.cost(&comp.accu_init));
        let v = self.local_for(&comp.accu_init);
        self.push_local(&comp.accu_var, v);
        sum = sum.add(self.cost(&comp.result));
        self.pop_local(&comp.accu_var);
        self.copy_sizes(e.id, &comp.result);
        (sum, self.ty(&comp.result))
    }

    /// `pushLocalVar`: a variable bound to an expression keeps its path, size and entry size.
    fn local_for(&self, init: &IdedExpr) -> LocalVar {
        LocalVar {
            path: self.path(init),
            size: self.compute_size(init),
            entry: self.entry_size(init),
            ty: self.ty(init),
        }
    }

    fn cost_comprehension(
        &mut self,
        e: &IdedExpr,
        comp: &kube_cel::cel::common::ast::ComprehensionExpr,
    ) -> (Range, Ty) {
        let mut sum = self.cost(&comp.iter_range);
        sum = sum.add(self.cost(&comp.accu_init));
        let range_ty = self.ty(&comp.iter_range);
        let entry = self.entry_size(&comp.iter_range);
        let list = match entry {
            Some(es) => es.list,
            None => range_ty.is_list(),
        };
        let range_path = self.path(&comp.iter_range);
        let sub = |s: &str| {
            let mut p = range_path.clone();
            p.push(s.to_string());
            p
        };
        let (key_ty, val_ty) = match &range_ty {
            Ty::List(el) => (Ty::INT, (**el).clone()),
            Ty::Map(k, v) => ((**k).clone(), (**v).clone()),
            _ => (Ty::DYN, Ty::DYN),
        };
        // Iteration variables: a list's items, a map's keys (two variables: index/key, value).
        let iter_vars: Vec<(String, LocalVar)> = match &comp.iter_var2 {
            Some(v2) => vec![
                (
                    comp.iter_var.clone(),
                    LocalVar {
                        path: sub(if list { "@indices" } else { "@keys" }),
                        size: entry.map(|e| e.key),
                        entry: None,
                        ty: key_ty.clone(),
                    },
                ),
                (
                    v2.clone(),
                    LocalVar {
                        path: sub(if list { "@items" } else { "@values" }),
                        size: entry.map(|e| e.val),
                        entry: None,
                        ty: val_ty.clone(),
                    },
                ),
            ],
            None => vec![(
                comp.iter_var.clone(),
                LocalVar {
                    path: sub(if list { "@items" } else { "@keys" }),
                    size: entry.map(|e| if list { e.val } else { e.key }),
                    entry: None,
                    ty: if list { val_ty.clone() } else { key_ty.clone() },
                },
            )],
        };
        let mut accu = self.local_for(&comp.accu_init);
        if matches!(&comp.accu_init.expr, Expr::List(l) if l.elements.is_empty()) {
            // map()/filter() build `accu + [x]`: the accumulator is a list of x's type.
            accu.ty = Ty::List(Box::new(
                appended_elem(&comp.loop_step, &comp.accu_var)
                    .map(|x| self.infer(x, &iter_vars))
                    .unwrap_or(Ty::DYN),
            ));
        }
        self.push_local(&comp.accu_var, accu);
        for (name, v) in &iter_vars {
            self.push_local(name, v.clone());
        }
        let loop_cost = self.cost(&comp.loop_cond);
        let step_cost = self.cost(&comp.loop_step);
        for (name, _) in &iter_vars {
            self.pop_local(name);
        }
        sum = sum.add(self.cost(&comp.result));
        let result_ty = self.ty(&comp.result);
        self.pop_local(&comp.accu_var);

        let range_count = self.size_or_unknown(&comp.iter_range);
        sum = sum.add(range_count.mul(step_cost.add(loop_cost)));
        match &comp.accu_init.expr {
            Expr::Literal(_) => {
                if let Some(s) = self.compute_size(&comp.accu_init) {
                    self.computed.insert(e.id, s);
                }
            }
            Expr::List(_) | Expr::Map(_) => {
                self.computed.insert(e.id, range_count);
                if let Some(es) = self.entry_size(&comp.loop_step) {
                    self.entries.insert(e.id, es);
                }
            }
            _ => {}
        }
        (sum, result_ty)
    }

    /// The type an expression would have with the given iteration variables bound (for the
    /// element type of map()/filter() results, which cel-go's checker infers).
    fn infer(&mut self, e: &IdedExpr, vars: &[(String, LocalVar)]) -> Ty {
        let mut scratch = Coster::new(self.sizes, self.self_ty.clone());
        scratch.locals = self.locals.clone();
        for (name, v) in vars {
            scratch.push_local(name, v.clone());
        }
        scratch.cost(e);
        scratch.ty(e)
    }

    fn copy_sizes(&mut self, dst: u64, src: &IdedExpr) {
        if let Some(s) = self.compute_size(src) {
            self.computed.insert(dst, s);
        }
        if let Some(es) = self.entry_size(src) {
            self.entries.insert(dst, es);
        }
    }

    fn node(&self, e: &IdedExpr) -> Node {
        let path = self.path(e);
        let rooted_at_accumulator = path.first().is_some_and(|p| is_accumulator(p));
        Node {
            path: (!path.is_empty() && !rooted_at_accumulator).then_some(path),
            ty: self.ty(e),
            computed: self.compute_size(e),
            entry: self.entry_size(e),
            literal: match &e.expr {
                Expr::Literal(l) => Some(l.clone()),
                _ => None,
            },
        }
    }

    fn cost_call(
        &mut self,
        e: &IdedExpr,
        call: &kube_cel::cel::common::ast::CallExpr,
    ) -> (Range, Ty) {
        if call.func_name == "dyn" && call.target.is_none() && call.args.len() == 1 {
            let c = Range::fixed(1).add(self.cost(&call.args[0]));
            self.copy_sizes(e.id, &call.args[0]);
            return (c, Ty::DYN);
        }
        let mut arg_costs = Vec::with_capacity(call.args.len());
        let mut args = Vec::with_capacity(call.args.len());
        for a in &call.args {
            arg_costs.push(self.cost(a));
            args.push(self.node(a));
        }
        let mut sum = Range::ZERO;
        let target = match &call.target {
            Some(t) => {
                sum = sum.add(self.cost(t));
                Some(self.node(t))
            }
            None => None,
        };
        let (overloads, result_ty) = resolve(&call.func_name, target.as_ref(), &args);
        let mut fn_cost = Range {
            min: u64::MAX,
            max: 0,
        };
        let mut result_size: Option<Range> = None;
        for ov in &overloads {
            let est = self.function_cost(
                e.id,
                &call.func_name,
                *ov,
                target.as_ref(),
                &args,
                &arg_costs,
            );
            fn_cost = fn_cost.union(est.cost);
            if let Some(r) = est.result {
                result_size = Some(match result_size {
                    None => r,
                    Some(prev) => prev.union(r),
                });
            }
            match ov {
                Overload::IndexList | Overload::IndexMap if !args.is_empty() => {
                    result_size = args[0].entry.map(|es| es.val);
                    let mut path = self.path(&call.args[0]);
                    path.push(
                        if *ov == Overload::IndexList {
                            "@items"
                        } else {
                            "@values"
                        }
                        .to_string(),
                    );
                    self.paths.insert(e.id, path);
                }
                _ => {}
            }
            if result_size.is_none() {
                // The result's type must be known for its fixed size to count.
                self.types.insert(e.id, result_ty.clone());
                result_size = self.compute_size(e);
            }
        }
        if let Some(r) = result_size {
            self.computed.insert(e.id, r);
        }
        (sum.add(fn_cost), result_ty)
    }

    fn function_cost(
        &mut self,
        e_id: u64,
        function: &str,
        ov: Overload,
        target: Option<&Node>,
        args: &[Node],
        arg_costs: &[Range],
    ) -> CallEstimate {
        let arg_sum = arg_costs.iter().fold(Range::ZERO, |a, c| a.add(*c));
        if let Some(est) = self.library_cost(function, ov, target, args) {
            return CallEstimate {
                cost: est.cost.add(arg_sum),
                result: est.result,
            };
        }
        let size = |n: &Node| n.computed.unwrap_or(Range::UNKNOWN);
        let t = STRING_TRAVERSAL_COST_FACTOR;
        let fixed = |cost: Range| CallEstimate { cost, result: None };
        match ov {
            Overload::FormatString if target.is_some() && !args.is_empty() => {
                let ts = size(target.expect("checked"));
                let result = ts.add(size(&args[0]));
                return CallEstimate {
                    cost: ts.factor(t).add(arg_sum),
                    result: Some(result),
                };
            }
            Overload::StringToBytes if args.len() == 1 => {
                let sz = size(&args[0]);
                return CallEstimate {
                    cost: sz.factor(t).add(arg_sum),
                    result: Some(Range {
                        min: sz.min,
                        max: sz.max.saturating_mul(4),
                    }),
                };
            }
            Overload::BytesToString if args.len() == 1 => {
                let sz = size(&args[0]);
                return CallEstimate {
                    cost: sz.factor(t).add(arg_sum),
                    result: Some(Range {
                        min: sz.min / 4,
                        max: sz.max,
                    }),
                };
            }
            Overload::QuoteString if args.len() == 1 => {
                let sz = size(&args[0]);
                return CallEstimate {
                    cost: sz.factor(t).add(arg_sum),
                    result: Some(Range {
                        min: sz.min.saturating_add(2),
                        max: sz.max.saturating_mul(2).saturating_add(2),
                    }),
                };
            }
            Overload::StartsWith | Overload::EndsWith if args.len() == 1 => {
                return fixed(size(&args[0]).factor(t).add(arg_sum));
            }
            Overload::InList if args.len() == 2 => {
                return fixed(size(&args[1]).factor(1.0).add(arg_sum));
            }
            Overload::MatchesString if target.is_some() && args.len() == 1 => {
                let s = size(target.expect("checked"))
                    .add(Range::fixed(1))
                    .factor(t);
                let re = size(&args[0]).factor(REGEX_STRING_LENGTH_COST_FACTOR);
                return fixed(s.mul(re).add(arg_sum));
            }
            Overload::ContainsString if target.is_some() && args.len() == 1 => {
                let s = size(target.expect("checked")).factor(t);
                let sub = size(&args[0]).factor(t);
                return fixed(s.mul(sub).add(arg_sum));
            }
            Overload::LogicalOr | Overload::LogicalAnd if arg_costs.len() == 2 => {
                let (l, r) = (arg_costs[0], arg_costs[1]);
                return fixed(Range {
                    min: l.min,
                    max: l.add(r).max,
                });
            }
            Overload::Conditional if args.len() == 3 => {
                let result = size(&args[1]).union(size(&args[2]));
                if let Some(es) = union_entries(args[1].entry, args[2].entry) {
                    self.entries.insert(e_id, es);
                }
                return CallEstimate {
                    cost: arg_costs[0].add(arg_costs[1].union(arg_costs[2])),
                    result: Some(result),
                };
            }
            Overload::AddString | Overload::AddBytes | Overload::AddList if args.len() == 2 => {
                let result = size(&args[0]).add(size(&args[1]));
                if let Some(es) = union_entries(args[0].entry, args[1].entry) {
                    self.entries.insert(e_id, es);
                }
                let cost = if ov == Overload::AddList {
                    Range::fixed(1).add(arg_sum)
                } else {
                    result.factor(t).add(arg_sum)
                };
                return CallEstimate {
                    cost,
                    result: Some(result),
                };
            }
            Overload::Compare if args.len() == 2 => {
                let smallest = size(&args[0]).max.min(size(&args[1]).max);
                let min = u64::from(smallest > 0);
                return fixed(Range { min, max: smallest }.factor(t).add(arg_sum));
            }
            _ => {}
        }
        fixed(Range::fixed(1).add(arg_sum))
    }

    /// k8s.io/apiserver's `library.CostEstimator.EstimateCallCost`, by function name; `None`
    /// leaves the call to cel-go's estimates.
    fn library_cost(
        &self,
        function: &str,
        ov: Overload,
        target: Option<&Node>,
        args: &[Node],
    ) -> Option<CallEstimate> {
        let t = STRING_TRAVERSAL_COST_FACTOR;
        let cost = |cost: Range| Some(CallEstimate { cost, result: None });
        match function {
            "isSorted" | "sum" | "max" | "min" | "indexOf" | "lastIndexOf" => {
                let target = target?;
                match self.list_element(target) {
                    Some((el_path, el_ty)) => {
                        let mut el_cost = Range::fixed(1);
                        if el_ty.is(Scalar::String) || el_ty.is(Scalar::Bytes) {
                            let sz = el_path
                                .and_then(|p| self.sizes.estimate(&p))
                                .unwrap_or(Range::UNKNOWN);
                            el_cost = el_cost.add(sz.factor(t));
                        }
                        cost(self.size_estimate(target).mul(el_cost))
                    }
                    None => cost(self.size_estimate(target).factor(t)),
                }
            }
            "url" if args.len() == 1 => cost(self.size_estimate(&args[0]).factor(t)),
            "lowerAscii" | "upperAscii" | "substring" | "trim" => {
                let sz = self.size_estimate(target?);
                Some(CallEstimate {
                    cost: sz.factor(t),
                    result: Some(sz),
                })
            }
            "replace" if target.is_some() && args.len() >= 2 => {
                let sz = self.size_estimate(target?);
                let to_replace = self.size_estimate(&args[0]);
                let with = self.size_estimate(&args[1]);
                let mut count = Range::ZERO;
                let mut retained = Range::ZERO;
                if to_replace.min == 0 {
                    // An empty needle replaces around every character.
                    count.max = sz.max.saturating_add(1);
                    retained.max = sz.max;
                } else if with.max <= to_replace.min {
                    retained.max = sz.max;
                } else {
                    count.max = (sz.max as f64 / to_replace.min as f64).ceil() as u64;
                }
                if to_replace.max == 0 {
                    count.min = sz.min.saturating_add(1);
                    retained.min = sz.min;
                } else if to_replace.max <= with.min {
                    retained.min = sz.min;
                } else {
                    count.min = (sz.min as f64 / to_replace.max as f64).ceil() as u64;
                }
                Some(CallEstimate {
                    cost: sz.factor(2.0 * t),
                    result: Some(count.mul(with).add(retained)),
                })
            }
            "split" => {
                let sz = self.size_estimate(target?);
                let mut max = sz.max;
                if let Some(LiteralValue::Int(n)) = args.get(1).and_then(|a| a.literal.as_ref()) {
                    max = u64::try_from(*n.inner()).unwrap_or(0);
                }
                if let Some(LiteralValue::UInt(n)) = args.get(1).and_then(|a| a.literal.as_ref()) {
                    max = *n.inner();
                }
                Some(CallEstimate {
                    cost: sz.factor(2.0 * t),
                    result: Some(Range { min: 0, max }),
                })
            }
            "join" => {
                let target = target?;
                let list = self.size_estimate(target);
                let mut sz = Range::ZERO;
                if let Some((el_path, _)) = self.list_element(target) {
                    let el = el_path
                        .and_then(|p| self.sizes.estimate(&p))
                        .unwrap_or(Range::UNKNOWN);
                    sz = list.mul(el);
                }
                if let Some(sep) = args.first() {
                    let seps = Range {
                        min: list.min.saturating_sub(1),
                        max: list.max.saturating_sub(1),
                    };
                    sz = sz.add(self.size_estimate(sep).mul(seps));
                }
                Some(CallEstimate {
                    cost: sz.factor(t),
                    result: Some(sz),
                })
            }
            "find" | "findAll" if target.is_some() && !args.is_empty() => {
                let sz = self.size_estimate(target?);
                let s = sz.add(Range::fixed(1)).factor(t);
                let re = self
                    .size_estimate(&args[0])
                    .factor(REGEX_STRING_LENGTH_COST_FACTOR);
                Some(CallEstimate {
                    cost: s.mul(re),
                    result: Some(Range {
                        min: 0,
                        max: sz.max,
                    }),
                })
            }
            "cidr" | "isIP" | "isCIDR" | "quantity" | "isQuantity"
                if target.is_some() && !args.is_empty() =>
            {
                cost(self.size_estimate(&args[0]).factor(t))
            }
            "ip" if target.is_some() && !args.is_empty() => {
                if ov == Overload::CidrIp {
                    cost(Range::fixed(1))
                } else {
                    cost(self.size_estimate(&args[0]).factor(t))
                }
            }
            "ip" if target.is_some() => cost(Range::fixed(1)),
            "ip.isCanonical" if target.is_some() && !args.is_empty() => {
                cost(self.size_estimate(&args[0]).factor(2.0 * t))
            }
            "masked"
            | "prefixLength"
            | "family"
            | "isUnspecified"
            | "isLoopback"
            | "isLinkLocalMulticast"
            | "isLinkLocalUnicast"
            | "sign"
            | "asInteger"
            | "isInteger"
            | "asApproximateFloat"
            | "isGreaterThan"
            | "isLessThan"
            | "compareTo"
            | "add"
            | "sub" => cost(Range::fixed(1)),
            "containsIP" | "containsCIDR" if target.is_some() && !args.is_empty() => {
                let ip = Range { min: 4, max: 16 };
                let mut c = ip.add(ip).factor(t);
                if function == "containsCIDR" {
                    c = c.add(ip.factor(t)).add(Range::fixed(1));
                }
                if ov == Overload::CidrContainsString {
                    c = c.add(self.size_estimate(&args[0]).factor(t));
                }
                cost(c)
            }
            _ => None,
        }
    }

    /// `listElementNode`: the element of a list-typed (or map-typed: its key) node.
    fn list_element(&self, list: &Node) -> Option<(Option<Vec<String>>, Ty)> {
        let el = list.ty.first_param()?;
        let path = list.path.clone().map(|mut p| {
            p.push("@items".into());
            p
        });
        Some((path, el))
    }

    /// The library estimator's `sizeEstimate`.
    fn size_estimate(&self, n: &Node) -> Range {
        n.computed
            .or_else(|| n.path.as_ref().and_then(|p| self.sizes.estimate(p)))
            .unwrap_or(Range::UNKNOWN)
    }

    fn size_or_unknown(&self, e: &IdedExpr) -> Range {
        self.compute_size(e).unwrap_or(Range::UNKNOWN)
    }

    /// cel-go `computeSize`, in its order: a size recorded for the node, a literal's size, the
    /// size estimator by field path, a fixed-size type, then a local variable's size.
    fn compute_size(&self, e: &IdedExpr) -> Option<Range> {
        if let Some(s) = self.computed.get(&e.id) {
            return Some(*s);
        }
        if let Some(s) = literal_size(e) {
            return Some(s);
        }
        if let Some(s) = self.sizes.estimate(&self.path(e)) {
            return Some(s);
        }
        if self.ty(e).is_fixed_size() {
            return Some(Range::fixed(1));
        }
        if let Expr::Ident(name) = &e.expr
            && let Some(v) = self.local(name)
        {
            return v.size;
        }
        None
    }

    fn entry_size(&self, e: &IdedExpr) -> Option<EntrySize> {
        if let Some(es) = self.entries.get(&e.id) {
            return Some(*es);
        }
        if let Expr::Ident(name) = &e.expr {
            return self.local(name).and_then(|v| v.entry);
        }
        None
    }
}

fn literal_type(l: &LiteralValue) -> Ty {
    Ty::Scalar(match l {
        LiteralValue::Boolean(_) => Scalar::Bool,
        LiteralValue::Bytes(_) => Scalar::Bytes,
        LiteralValue::Double(_) => Scalar::Double,
        LiteralValue::Int(_) => Scalar::Int,
        LiteralValue::Null => Scalar::Null,
        LiteralValue::String(_) => Scalar::String,
        LiteralValue::UInt(_) => Scalar::Uint,
    })
}

/// `computeExprSize`: sizes known from the expression itself.
fn literal_size(e: &IdedExpr) -> Option<Range> {
    let n = match &e.expr {
        Expr::Literal(LiteralValue::String(s)) => s.inner().chars().count() as u64,
        Expr::Literal(LiteralValue::Bytes(b)) => b.inner().len() as u64,
        Expr::Literal(_) => 1,
        Expr::List(l) => l.elements.len() as u64,
        Expr::Map(m) => m.entries.len() as u64,
        _ => return None,
    };
    Some(Range::fixed(n))
}

fn same_kind(a: &Ty, b: &Ty) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
        && match (a, b) {
            (Ty::Scalar(x), Ty::Scalar(y)) => x == y,
            _ => true,
        }
}

/// `isBind`: cel.bind() is a comprehension over an empty list that never loops.
fn is_bind(comp: &kube_cel::cel::common::ast::ComprehensionExpr) -> bool {
    matches!(&comp.iter_range.expr, Expr::List(l) if l.elements.is_empty())
        && matches!(&comp.loop_cond.expr, Expr::Literal(LiteralValue::Boolean(b)) if !*b.inner())
        && !is_accumulator(&comp.accu_var)
}

/// In a map()/filter() step (`accu + [x]`, possibly under `cond ? … : accu`), the `x`.
fn appended_elem<'e>(step: &'e IdedExpr, accu: &str) -> Option<&'e IdedExpr> {
    let Expr::Call(c) = &step.expr else {
        return None;
    };
    match c.func_name.as_str() {
        operators::CONDITIONAL => c.args.get(1).and_then(|a| appended_elem(a, accu)),
        operators::ADD if c.args.len() == 2 => match (&c.args[0].expr, &c.args[1].expr) {
            (Expr::Ident(a), Expr::List(l)) if a == accu => l.elements.first(),
            _ => None,
        },
        _ => None,
    }
}

/// Overload resolution (what cel-go's checker records): the overloads the coster tells apart,
/// and the result type.
fn resolve(function: &str, target: Option<&Node>, args: &[Node]) -> (Vec<Overload>, Ty) {
    use Overload::*;
    let arg = |i: usize| args.get(i).map(|a| a.ty.clone()).unwrap_or(Ty::DYN);
    let t = target.map(|n| n.ty.clone());
    let on_string = t
        .as_ref()
        .is_some_and(|t| t.is(Scalar::String) || t.is_dyn());
    let one = |o: Overload, ty: Ty| (vec![o], ty);
    match function {
        operators::INDEX => {
            let a = arg(0);
            match &a {
                Ty::List(_) => one(IndexList, a.elem()),
                Ty::Map(..) => one(IndexMap, a.elem()),
                Ty::Object(_) => one(Other, Ty::DYN),
                _ => (vec![IndexList, IndexMap], Ty::DYN),
            }
        }
        operators::LOGICAL_AND => one(LogicalAnd, Ty::BOOL),
        operators::LOGICAL_OR => one(LogicalOr, Ty::BOOL),
        operators::CONDITIONAL => {
            let a = arg(1);
            one(Conditional, if a.is_dyn() { arg(2) } else { a })
        }
        operators::EQUALS | operators::NOT_EQUALS => one(Compare, Ty::BOOL),
        operators::LESS
        | operators::LESS_EQUALS
        | operators::GREATER
        | operators::GREATER_EQUALS => {
            let a = arg(0);
            if a.is(Scalar::String) || a.is(Scalar::Bytes) || a.is_dyn() {
                one(Compare, Ty::BOOL)
            } else {
                one(Other, Ty::BOOL)
            }
        }
        operators::ADD => {
            let (a, b) = (arg(0), arg(1));
            let ty = if a.is_dyn() { b.clone() } else { a.clone() };
            if ty.is(Scalar::String) {
                one(AddString, ty)
            } else if ty.is(Scalar::Bytes) {
                one(AddBytes, ty)
            } else if ty.is_list() {
                one(AddList, ty)
            } else if ty.is_dyn() {
                (vec![AddString, AddBytes, AddList, Other], Ty::DYN)
            } else {
                one(Other, ty)
            }
        }
        operators::IN => {
            let c = arg(1);
            if c.is_map() {
                one(Other, Ty::BOOL)
            } else {
                one(InList, Ty::BOOL)
            }
        }
        operators::LOGICAL_NOT | operators::NOT_STRICTLY_FALSE => one(Other, Ty::BOOL),
        operators::SUBSTRACT | operators::MULTIPLY | operators::DIVIDE | operators::MODULO => {
            one(Other, arg(0))
        }
        operators::NEGATE => one(Other, arg(0)),
        "startsWith" if on_string => one(StartsWith, Ty::BOOL),
        "endsWith" if on_string => one(EndsWith, Ty::BOOL),
        "contains" if on_string => one(ContainsString, Ty::BOOL),
        // Only the member form has the O(n·m) estimate; the global matches(s, re) is O(1).
        "matches" if target.is_some() => one(MatchesString, Ty::BOOL),
        "format" if on_string => one(FormatString, Ty::STRING),
        "strings.quote" => one(QuoteString, Ty::STRING),
        "bytes" if arg(0).is(Scalar::String) => one(StringToBytes, Ty::Scalar(Scalar::Bytes)),
        "string" if arg(0).is(Scalar::Bytes) => one(BytesToString, Ty::STRING),
        "ip" if t.as_ref().is_some_and(|t| matches!(t, Ty::Opaque)) => one(CidrIp, Ty::Opaque),
        "containsIP" | "containsCIDR" => {
            if arg(0).is(Scalar::String) {
                one(CidrContainsString, Ty::BOOL)
            } else {
                one(Other, Ty::BOOL)
            }
        }
        _ => one(Other, result_type(function, t.as_ref(), args)),
    }
}

/// Result types of the other functions rules call.
fn result_type(function: &str, target: Option<&Ty>, args: &[Node]) -> Ty {
    match function {
        "matches"
        | "startsWith"
        | "endsWith"
        | "contains"
        | "isSorted"
        | "isURL"
        | "isIP"
        | "isCIDR"
        | "isQuantity"
        | "isSemver"
        | "isInteger"
        | "isGreaterThan"
        | "isLessThan"
        | "isUnspecified"
        | "isLoopback"
        | "isLinkLocalMulticast"
        | "isLinkLocalUnicast"
        | "ip.isCanonical"
        | "hasValue"
        | "exists"
        | "all" => Ty::BOOL,
        "size" | "int" | "indexOf" | "lastIndexOf" | "compareTo" | "sign" | "asInteger"
        | "getFullYear" | "getMonth" | "getDayOfYear" | "getDayOfMonth" | "getDate"
        | "getDayOfWeek" | "getHours" | "getMinutes" | "getSeconds" | "getMilliseconds"
        | "prefixLength" | "family" | "major" | "minor" | "patch" => Ty::INT,
        "uint" => Ty::Scalar(Scalar::Uint),
        "double" | "asApproximateFloat" => Ty::Scalar(Scalar::Double),
        "string" | "lowerAscii" | "upperAscii" | "trim" | "substring" | "replace" | "join"
        | "format" | "charAt" | "reverse" | "find" | "getScheme" | "getHost" | "getHostname"
        | "getPort" | "getEscapedPath" => Ty::STRING,
        "split" | "findAll" => Ty::List(Box::new(Ty::STRING)),
        "bytes" => Ty::Scalar(Scalar::Bytes),
        "duration" => Ty::Scalar(Scalar::Duration),
        "timestamp" => Ty::Scalar(Scalar::Timestamp),
        "bool" => Ty::BOOL,
        "sum" | "min" | "max" => target
            .map(Ty::elem)
            .unwrap_or_else(|| args.first().map(|a| a.ty.elem()).unwrap_or(Ty::DYN)),
        "getQuery" => Ty::Map(
            Box::new(Ty::STRING),
            Box::new(Ty::List(Box::new(Ty::STRING))),
        ),
        "quantity" | "url" | "ip" | "cidr" | "semver" | "masked" | "optional.of"
        | "optional.none" | "type" => Ty::Opaque,
        "value" | "orValue" => Ty::DYN,
        _ => Ty::DYN,
    }
}

// ------------------------------------------------------------------ parsing

/// Parsed rules, by source text (rules are parsed once per process).
fn parse(rule: &str) -> Option<Arc<IdedExpr>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<Arc<IdedExpr>>>>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    cache
        .entry(rule.to_string())
        .or_insert_with(|| {
            kube_cel::cel::parser::Parser::new()
                .enable_optional_syntax(true)
                .parse(rule)
                .ok()
                .map(Arc::new)
        })
        .clone()
}

/// The worst-case cost of one expression whose `self` is a value of `decl` (cel-go
/// `EstimateCost(...).Max`), or `None` when it does not parse (compilation reports that).
pub(crate) fn estimate_expression(expr: &str, decl: &Arc<Decl>) -> Option<u64> {
    let ast = parse(expr)?;
    let sizes = SchemaSizes { root: decl };
    Some(Coster::new(&sizes, Ty::of(decl)).cost(&ast).max)
}

fn uses_old_self(e: &IdedExpr) -> bool {
    match &e.expr {
        Expr::Ident(n) => n == "oldSelf",
        Expr::Select(s) => uses_old_self(&s.operand),
        Expr::Call(c) => {
            c.target.as_deref().is_some_and(uses_old_self) || c.args.iter().any(uses_old_self)
        }
        Expr::List(l) => l.elements.iter().any(uses_old_self),
        Expr::Map(m) => m.entries.iter().any(|en| match &en.expr {
            EntryExpr::MapEntry(me) => uses_old_self(&me.key) || uses_old_self(&me.value),
            EntryExpr::StructField(f) => uses_old_self(&f.value),
        }),
        Expr::Struct(s) => s.entries.iter().any(|en| match &en.expr {
            EntryExpr::MapEntry(me) => uses_old_self(&me.key) || uses_old_self(&me.value),
            EntryExpr::StructField(f) => uses_old_self(&f.value),
        }),
        Expr::Comprehension(c) => [
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ]
        .into_iter()
        .any(uses_old_self),
        Expr::Literal(_) | Expr::Unspecified => false,
    }
}

// ------------------------------------------------------------------ CRD creation

/// The estimated cost of one rule of a CRD schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleCost {
    /// `spec.validation.openAPIV3Schema.properties[spec]...x-kubernetes-validations[0].rule`
    pub field: String,
    pub rule: String,
    /// cel-go's estimate for one evaluation.
    pub per_call: u64,
    /// How many times the rule can run in one object (product of the ancestors' bounds, or
    /// the request-size estimate under an unbounded list or map).
    pub cardinality: u64,
    /// `per_call × cardinality`: what the limits apply to.
    pub cost: u64,
    /// The same for the rule's `messageExpression` (not multiplied by the cardinality).
    pub message_expression: Option<u64>,
}

/// The estimated costs of every rule of one CRD version's schema.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SchemaCost {
    pub rules: Vec<RuleCost>,
    pub total: u64,
}

impl SchemaCost {
    /// The refusals a real API server gives for these costs (empty: within budget), rendered
    /// as `field: Forbidden: ...`; `schema_field` names the schema (see [`crd_schemas`]).
    pub fn refusals(&self, schema_field: &str) -> Vec<String> {
        self.errors(schema_field)
            .iter()
            .map(FieldError::render)
            .collect()
    }

    pub(crate) fn errors(&self, schema_field: &str) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let mut expensive: Vec<(String, u64)> = Vec::new();
        let mut observe = |field: String, cost: u64| {
            if cost >= STATIC_ESTIMATED_CRD_COST_LIMIT / 100 {
                expensive.push((field, cost));
                expensive.sort_by_key(|e| std::cmp::Reverse(e.1));
                expensive.truncate(4);
            }
        };
        for r in &self.rules {
            if r.cost > STATIC_ESTIMATED_COST_LIMIT {
                errs.push(FieldError::forbidden(
                    &r.field,
                    &cost_error_message("estimated rule cost", r.cost, STATIC_ESTIMATED_COST_LIMIT),
                ));
            }
            observe(r.field.clone(), r.cost);
            if let Some(m) = r.message_expression {
                let field = format!(
                    "{}messageExpression",
                    r.field.strip_suffix("rule").unwrap_or(&r.field)
                );
                if m > STATIC_ESTIMATED_COST_LIMIT {
                    errs.push(FieldError::forbidden(
                        &field,
                        &cost_error_message(
                            "estimated messageExpression cost",
                            m,
                            STATIC_ESTIMATED_COST_LIMIT,
                        ),
                    ));
                }
                observe(field, m);
            }
        }
        if self.total > STATIC_ESTIMATED_CRD_COST_LIMIT {
            for (field, _) in expensive {
                errs.push(FieldError::forbidden(
                    &field,
                    "contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema",
                ));
            }
            errs.push(FieldError::forbidden(
                schema_field,
                &cost_error_message(
                    "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema",
                    self.total,
                    STATIC_ESTIMATED_CRD_COST_LIMIT,
                ),
            ));
        }
        errs
    }
}

/// `getCostErrorMessage`.
fn cost_error_message(what: &str, cost: u64, limit: u64) -> String {
    let factor = cost as f64 / limit as f64;
    let factor = if factor > 100.0 {
        "more than 100x".to_string()
    } else if factor < 1.5 {
        format!("{factor:.6}x")
    } else {
        format!("{factor:.1}x")
    };
    format!(
        "{what} exceeds budget by factor of {factor} (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
    )
}

/// Estimates every rule of an `openAPIV3Schema` (`field` is its path in the CRD, for the
/// error texts), as the API server does at CRD creation.
pub fn estimate_schema(schema: &Value, field: &str) -> SchemaCost {
    let mut out = SchemaCost::default();
    walk_schema(schema, field, true, Some(1), &mut out);
    out.total = out.rules.iter().fold(0u64, |t, r| {
        t.saturating_add(r.cost)
            .saturating_add(r.message_expression.unwrap_or(0))
    });
    out
}

/// `extractMaxElements`: by how much a schema multiplies the number of its children.
fn max_elements(schema: &Value) -> Option<u64> {
    match schema.get("type").and_then(Value::as_str) {
        Some("object") if schema.get("additionalProperties").is_some() => {
            u64_of(schema, "maxProperties")
        }
        Some("array") => u64_of(schema, "maxItems"),
        _ => Some(1),
    }
}

fn walk_schema(
    schema: &Value,
    field: &str,
    root: bool,
    cardinality: Option<u64>,
    out: &mut SchemaCost,
) {
    if let Some(rules) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        && let Some(decl) = decl_of(schema, root || embedded(schema))
    {
        for (i, r) in rules.iter().enumerate() {
            let Some(rule) = r.get("rule").and_then(Value::as_str) else {
                continue;
            };
            let Some(per_call) = estimate_expression(rule, &decl) else {
                continue;
            };
            // Under an unbounded list or map: as many as fit in a request.
            let card = cardinality.unwrap_or(MAX_REQUEST_SIZE_BYTES / (decl.min_size + 1));
            let cost = if per_call == 0 {
                0
            } else {
                per_call.saturating_mul(card)
            };
            out.rules.push(RuleCost {
                field: format!("{field}.x-kubernetes-validations[{i}].rule"),
                rule: rule.to_string(),
                per_call,
                cardinality: card,
                cost,
                message_expression: r
                    .get("messageExpression")
                    .and_then(Value::as_str)
                    .and_then(|m| estimate_expression(m, &decl)),
            });
        }
    }
    let child_cardinality = cardinality
        .zip(max_elements(schema))
        .map(|(c, m)| c.saturating_mul(m));
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        let mut names: Vec<&String> = props.keys().collect();
        names.sort();
        for name in names {
            walk_schema(
                &props[name],
                &format!("{field}.properties[{name}]"),
                false,
                child_cardinality,
                out,
            );
        }
    }
    if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        walk_schema(
            ap,
            &format!("{field}.additionalProperties"),
            false,
            child_cardinality,
            out,
        );
    }
    if let Some(items) = schema.get("items").filter(|a| a.is_object()) {
        walk_schema(
            items,
            &format!("{field}.items"),
            false,
            child_cardinality,
            out,
        );
    }
}

/// The CRD's schemas and the paths the API server names them by: `spec.validation.openAPIV3Schema`
/// when every version has the same schema (the internal API hoists it), else per version.
pub fn crd_schemas(crd: &Value) -> Vec<(String, &Value)> {
    let versions: Vec<&Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    let schemas: Vec<Option<&Value>> = versions
        .iter()
        .map(|v| v.pointer("/schema/openAPIV3Schema"))
        .collect();
    if let Some(Some(first)) = schemas.first()
        && schemas.iter().all(|s| *s == Some(*first))
    {
        return vec![("spec.validation.openAPIV3Schema".to_string(), *first)];
    }
    schemas
        .into_iter()
        .enumerate()
        .filter_map(|(i, s)| Some((format!("spec.versions[{i}].schema.openAPIV3Schema"), s?)))
        .collect()
}

/// The API server's cost check at CRD creation/update: every rule within
/// [`STATIC_ESTIMATED_COST_LIMIT`], every schema within [`STATIC_ESTIMATED_CRD_COST_LIMIT`].
pub(crate) fn check_crd(crd: &Value) -> Result<(), Vec<FieldError>> {
    let errs: Vec<FieldError> = crd_schemas(crd)
        .into_iter()
        .flat_map(|(field, schema)| estimate_schema(schema, &field).errors(&field))
        .collect();
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

// ------------------------------------------------------------------ admission

/// The API server's runtime limits for one object: each rule evaluation within
/// [`PER_CALL_LIMIT`], all of them within [`RUNTIME_CEL_COST_BUDGET`]. Costs are the estimator's
/// with the object's actual sizes. Returns the refusal (empty: within budget).
pub(crate) fn check_object(schema: &Value, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut budget = RUNTIME_CEL_COST_BUDGET;
    let mut errs = Vec::new();
    walk_object(schema, obj, old, "", true, &mut budget, &mut errs);
    errs
}

/// Walks the object like the API server's CEL validator (rules at a node, then its
/// properties, map values and list items). Returns false once evaluation has stopped.
fn walk_object(
    schema: &Value,
    v: &Value,
    old: Option<&Value>,
    field: &str,
    root: bool,
    budget: &mut u64,
    errs: &mut Vec<FieldError>,
) -> bool {
    if v.is_null() {
        return true;
    }
    if let Some(rules) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        && let Some(decl) = decl_of(schema, root || embedded(schema))
    {
        let type_name = schema
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("object");
        let invalid =
            |msg: String| FieldError::invalid(field, &Value::String(type_name.to_string()), &msg);
        for r in rules {
            let Some(rule) = r.get("rule").and_then(Value::as_str) else {
                continue;
            };
            let Some(ast) = parse(rule) else { continue };
            let optional_old = r.get("optionalOldSelf").and_then(Value::as_bool) == Some(true);
            if uses_old_self(&ast) && old.is_none() && !optional_old {
                continue; // transition rules run on update only
            }
            let sizes = ValueSizes {
                self_value: v,
                old_value: old,
            };
            let cost = Coster::new(&sizes, Ty::of(&decl)).cost(&ast).max;
            let name = r
                .get("message")
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .unwrap_or(rule.trim());
            if cost > PER_CALL_LIMIT {
                errs.push(invalid(format!(
                    "'operation cancelled: actual cost limit exceeded': no further validation rules will be run due to call cost exceeds limit for rule: {name}"
                )));
                return false;
            }
            if cost > *budget {
                errs.push(invalid(
                    "validation failed due to running out of cost budget, no further validation rules will be run".into(),
                ));
                return false;
            }
            *budget -= cost;
        }
    }
    let join = |f: &str| {
        if field.is_empty() {
            f.to_string()
        } else {
            format!("{field}.{f}")
        }
    };
    match v {
        Value::Object(o) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let ap = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, child) in o {
                if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let sub = props.and_then(|p| p.get(k)).or(ap);
                if let Some(sub) = sub {
                    let old_child = old.and_then(|o| o.get(k));
                    if !walk_object(sub, child, old_child, &join(k), false, budget, errs) {
                        return false;
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                let keys: Vec<&str> = schema
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|k| k.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let map_list =
                    schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map");
                for (i, item) in items.iter().enumerate() {
                    // Only list-map items correlate with the old object (by their keys).
                    let old_item = if map_list {
                        old.and_then(Value::as_array).and_then(|olds| {
                            olds.iter()
                                .find(|o| keys.iter().all(|k| o.get(k) == item.get(k)))
                        })
                    } else {
                        None
                    };
                    if !walk_object(
                        sub,
                        item,
                        old_item,
                        &format!("{field}[{i}]"),
                        false,
                        budget,
                        errs,
                    ) {
                        return false;
                    }
                }
            }
        }
        _ => {}
    }
    true
}

#[cfg(test)]
mod tests;
