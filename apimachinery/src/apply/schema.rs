//! The compiled form of a kind's structural OpenAPI v3 schema: only what server-side apply
//! needs to know about each node, in SMD's vocabulary.
//!
//! Every node compiles to an [`Atom`]: the shapes a value there may take (scalar, list, map),
//! with, for lists, how items are identified (atomic, set, map-list by keys) and, for maps,
//! the declared fields, the type of other keys, and whether the map is atomic. Atoms live in
//! one vector and refer to each other by index, so that `$ref`s (and recursion) are cheap.
//!
//! The conversion follows kube-openapi's `schemaconv`, which is what kube-apiserver uses for
//! CRDs:
//!
//! | OpenAPI | SMD |
//! |---|---|
//! | `integer`, `number` / `string` / `boolean` | numeric / string / boolean scalar (`string` with a format other than `byte`: untyped scalar) |
//! | no `type` (`x-kubernetes-int-or-string`, free-form) | scalar, list or map, whichever the value is |
//! | `array` | list: `x-kubernetes-list-type` `atomic` (the default), `set`, or `map` keyed by `x-kubernetes-list-map-keys` |
//! | `object` with `properties` | struct: granular, unknown fields rejected |
//! | `object` with `additionalProperties` | granular map of that type |
//! | `object` with neither, or under `x-kubernetes-preserve-unknown-fields` | unknown keys are *deduced*: maps granular, lists atomic, all the way down |
//! | `x-kubernetes-map-type: atomic` | atomic map |
//! | `x-kubernetes-embedded-resource` | `apiVersion`, `kind` and `metadata` (ObjectMeta) declared |
//!
//! `allOf: [{$ref}]` (how `metadata` refers to ObjectMeta) is a plain reference.
//!
//! A kind without a schema (any kind a simulated cluster stores) uses
//! [`ObjectSchema::deduced`], SMD's `DeducedParseableType`: every map is granular and its keys
//! are fields (so `metadata.labels.app` and `data.key` are owned one by one), every list is
//! atomic (owned and replaced whole), every other value a scalar; nothing is refused as an
//! unknown field. Apply, update tracking and conflicts work on it as on a typed schema.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::apply::fieldpath::PathElement;

pub(crate) type TypeId = usize;

/// Scalar, list or map; lists atomic, of [`UNTYPED_ATOMIC`]; maps atomic, of [`UNTYPED_ATOMIC`].
pub(crate) const UNTYPED_ATOMIC: TypeId = 0;
/// What unknown fields under `x-kubernetes-preserve-unknown-fields` are: scalar, atomic list
/// of [`UNTYPED_ATOMIC`], or granular map of [`DEDUCED`].
pub(crate) const DEDUCED: TypeId = 1;

const OBJECT_META_REF: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
// kube-openapi hard-codes these two (their Go types serialize unlike their schemas say).
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";
const RAW_EXTENSION: &str = "io.k8s.apimachinery.pkg.runtime.RawExtension";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scalar {
    Numeric,
    String,
    Boolean,
    Untyped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListKind {
    Atomic,
    Set,
    Map(Vec<String>),
}

#[derive(Debug)]
pub(crate) struct ListType {
    pub kind: ListKind,
    pub element: TypeId,
}

impl ListType {
    pub fn is_atomic(&self) -> bool {
        self.kind == ListKind::Atomic
    }
}

#[derive(Debug, Default)]
pub(crate) struct MapType {
    pub fields: HashMap<String, TypeId>,
    /// The type of keys that are not declared fields; `None`: such keys are not allowed.
    pub element: Option<TypeId>,
    pub atomic: bool,
}

impl MapType {
    pub fn field(&self, name: &str) -> Option<TypeId> {
        self.fields.get(name).copied()
    }

    /// The type of the value at `name`, declared or not. Keys the schema does not allow are
    /// treated as deduced, so that an object stored before a schema change still walks.
    pub fn child(&self, name: &str) -> TypeId {
        self.field(name).or(self.element).unwrap_or(DEDUCED)
    }

    /// A free-form map: no declared fields, everything deduced.
    pub fn is_deduced(&self) -> bool {
        self.fields.is_empty() && self.element == Some(DEDUCED)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Atom {
    pub scalar: Option<Scalar>,
    pub list: Option<ListType>,
    pub map: Option<MapType>,
}

/// The shape a node takes for one value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shape<'s> {
    Scalar(Scalar),
    List(&'s ListType),
    Map(&'s MapType),
}

impl Shape<'_> {
    pub fn same_kind(&self, other: &Shape<'_>) -> bool {
        matches!(
            (self, other),
            (Shape::Scalar(_), Shape::Scalar(_))
                | (Shape::List(_), Shape::List(_))
                | (Shape::Map(_), Shape::Map(_))
        )
    }
}

/// `group`, `version`, `kind` of the root, from `x-kubernetes-group-version-kind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupVersionKind {
    pub group: String,
    pub version: String,
    pub kind: String,
}

impl GroupVersionKind {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// Why a schema could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("{at}: schema must be a JSON object")]
    NotAnObject { at: String },
    #[error("{at}: unresolved reference {reference:?}")]
    UnresolvedRef { at: String, reference: String },
    #[error("{at}: unsupported type {ty:?}")]
    UnsupportedType { at: String, ty: String },
    #[error("{at}: unknown x-kubernetes-list-type {list_type:?}")]
    UnknownListType { at: String, list_type: String },
    #[error("{at}: x-kubernetes-list-type map needs x-kubernetes-list-map-keys")]
    MissingMapKeys { at: String },
    #[error("{at}: unknown x-kubernetes-map-type {map_type:?}")]
    UnknownMapType { at: String, map_type: String },
}

/// A kind's schema compiled for server-side apply. Build it once per kind and share it
/// (`Arc<ObjectSchema>`); every query is a lookup.
#[derive(Debug)]
pub struct ObjectSchema {
    atoms: Vec<Atom>,
    root: TypeId,
    gvk: Option<GroupVersionKind>,
}

impl ObjectSchema {
    /// Compiles `root` (a kind's schema) with `components` (the schemas `$ref`s point to, by
    /// name: `#/components/schemas/<name>`).
    pub fn new(root: &Value, components: &Map<String, Value>) -> Result<Self, SchemaError> {
        let mut compiler = Compiler {
            components,
            atoms: Vec::new(),
            named: HashMap::new(),
        };
        compiler.atoms.push(untyped_atomic());
        compiler.atoms.push(deduced());
        let root_id = compiler.compile(root, false, "#")?;
        let gvk = root
            .get("x-kubernetes-group-version-kind")
            .and_then(Value::as_array)
            .and_then(|list| list.first())
            .and_then(|gvk| {
                Some(GroupVersionKind {
                    group: gvk.get("group")?.as_str()?.to_owned(),
                    version: gvk.get("version")?.as_str()?.to_owned(),
                    kind: gvk.get("kind")?.as_str()?.to_owned(),
                })
            });
        Ok(ObjectSchema {
            atoms: compiler.atoms,
            root: root_id,
            gvk,
        })
    }

    /// The schema of an object of a kind nobody described (see the module docs): every node
    /// deduced from its value.
    pub fn deduced() -> Self {
        ObjectSchema {
            atoms: vec![untyped_atomic(), deduced()],
            root: DEDUCED,
            gvk: None,
        }
    }

    /// The kind the schema is for, when the schema says.
    pub fn group_version_kind(&self) -> Option<&GroupVersionKind> {
        self.gvk.as_ref()
    }

    pub(crate) fn root(&self) -> TypeId {
        self.root
    }

    pub(crate) fn atom(&self, ty: TypeId) -> &Atom {
        &self.atoms[ty]
    }

    /// The shape `value` takes at a node of type `ty`, or `None` when the node does not allow
    /// that kind of value (or the value is null).
    pub(crate) fn matching_shape(&self, ty: TypeId, value: &Value) -> Option<Shape<'_>> {
        let atom = self.atom(ty);
        match value {
            Value::Bool(_) | Value::Number(_) | Value::String(_) => atom.scalar.map(Shape::Scalar),
            Value::Array(_) => atom.list.as_ref().map(Shape::List),
            Value::Object(_) => atom.map.as_ref().map(Shape::Map),
            Value::Null => None,
        }
    }

    /// The shape SMD picks when the value does not decide it: map, then scalar, then list.
    pub(crate) fn default_shape(&self, ty: TypeId) -> Shape<'_> {
        let atom = self.atom(ty);
        if let Some(map) = &atom.map {
            Shape::Map(map)
        } else if let Some(scalar) = atom.scalar {
            Shape::Scalar(scalar)
        } else if let Some(list) = &atom.list {
            Shape::List(list)
        } else {
            // Every compiled atom has at least one shape; an empty one only arises from a
            // hand-built schema and behaves like an untyped scalar.
            Shape::Scalar(Scalar::Untyped)
        }
    }

    pub(crate) fn shape(&self, ty: TypeId, value: &Value) -> Shape<'_> {
        self.matching_shape(ty, value)
            .unwrap_or_else(|| self.default_shape(ty))
    }

    /// The path element that identifies `item` in an associative list.
    pub(crate) fn item_element(
        &self,
        list: &ListType,
        item: &Value,
    ) -> Result<PathElement, String> {
        match &list.kind {
            ListKind::Map(keys) => {
                let obj = match item {
                    Value::Object(obj) => obj,
                    Value::Null => {
                        return Err("associative list with keys may not have a null element".into())
                    }
                    _ => {
                        return Err(
                            "associative list with keys may not have non-map elements".into()
                        )
                    }
                };
                let fields: Vec<(&String, Value)> = keys
                    .iter()
                    .filter_map(|k| Some((k, obj.get(k)?.clone())))
                    .collect();
                if fields.is_empty() {
                    return Err(format!(
                        "associative list with keys has an element that omits all key fields {keys:?} \
                         (and doesn't have default values for any key fields)"
                    ));
                }
                Ok(PathElement::key(
                    fields.into_iter().map(|(k, v)| (k.clone(), v)),
                ))
            }
            ListKind::Set => match item {
                Value::Object(_) => {
                    Err("associative list without keys has an element that's a map type".into())
                }
                Value::Array(_) => {
                    Err("not supported: associative list with lists as elements".into())
                }
                Value::Null => Err(
                    "associative list without keys has an element that's an explicit null".into(),
                ),
                scalar => Ok(PathElement::Value(scalar.clone())),
            },
            ListKind::Atomic => Err("invalid indexing of non-associative list".into()),
        }
    }

    /// Path elements of all items, or `None` when an item has none (the list is then treated
    /// as atomic, which is the safe reading of a stored list the schema no longer describes).
    pub(crate) fn item_elements(
        &self,
        list: &ListType,
        items: &[Value],
    ) -> Option<Vec<PathElement>> {
        items
            .iter()
            .map(|item| self.item_element(list, item).ok())
            .collect()
    }
}

fn untyped_atomic() -> Atom {
    Atom {
        scalar: Some(Scalar::Untyped),
        list: Some(ListType {
            kind: ListKind::Atomic,
            element: UNTYPED_ATOMIC,
        }),
        map: Some(MapType {
            fields: HashMap::new(),
            element: Some(UNTYPED_ATOMIC),
            atomic: true,
        }),
    }
}

fn deduced() -> Atom {
    Atom {
        scalar: Some(Scalar::Untyped),
        list: Some(ListType {
            kind: ListKind::Atomic,
            element: UNTYPED_ATOMIC,
        }),
        map: Some(MapType {
            fields: HashMap::new(),
            element: Some(DEDUCED),
            atomic: false,
        }),
    }
}

struct Compiler<'a> {
    components: &'a Map<String, Value>,
    atoms: Vec<Atom>,
    /// Component name → its atom; inserted before the component is compiled, so that a
    /// recursive reference resolves to the slot being filled.
    named: HashMap<String, TypeId>,
}

impl Compiler<'_> {
    /// Compiles a schema node. `preserve` is inherited from an ancestor that set
    /// `x-kubernetes-preserve-unknown-fields`.
    fn compile(&mut self, schema: &Value, preserve: bool, at: &str) -> Result<TypeId, SchemaError> {
        let Some(obj) = schema.as_object() else {
            return Err(SchemaError::NotAnObject { at: at.to_owned() });
        };
        if let Some(reference) = reference_of(obj) {
            return self.named(reference, at);
        }
        let atom = self.compile_atom(obj, preserve, at)?;
        self.atoms.push(atom);
        Ok(self.atoms.len() - 1)
    }

    fn named(&mut self, reference: &str, at: &str) -> Result<TypeId, SchemaError> {
        // `#/components/schemas/<name>` (or `#/definitions/<name>`): the name is the last segment.
        let name = reference.rsplit('/').next().unwrap_or(reference);
        if let Some(&id) = self.named.get(name) {
            return Ok(id);
        }
        let id = self.atoms.len();
        self.atoms.push(Atom::default());
        self.named.insert(name.to_owned(), id);
        let atom = match name {
            QUANTITY => Atom {
                scalar: Some(Scalar::Untyped),
                ..Atom::default()
            },
            RAW_EXTENSION => untyped_atomic(),
            _ => {
                let Some(schema) = self.components.get(name) else {
                    return Err(SchemaError::UnresolvedRef {
                        at: at.to_owned(),
                        reference: reference.to_owned(),
                    });
                };
                let Some(obj) = schema.as_object() else {
                    return Err(SchemaError::NotAnObject {
                        at: reference.to_owned(),
                    });
                };
                if let Some(inner) = reference_of(obj) {
                    // A component that is only a reference: alias it.
                    let target = self.named(inner, reference)?;
                    self.named.insert(name.to_owned(), target);
                    return Ok(target);
                }
                // Named types start without inherited preserve-unknown-fields, as in kube-openapi.
                self.compile_atom(obj, false, reference)?
            }
        };
        self.atoms[id] = atom;
        Ok(id)
    }

    fn compile_atom(
        &mut self,
        obj: &Map<String, Value>,
        preserve: bool,
        at: &str,
    ) -> Result<Atom, SchemaError> {
        let preserve =
            preserve || obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        let ty = obj.get("type").and_then(Value::as_str).unwrap_or("");
        Ok(match ty {
            "" => Atom {
                scalar: Some(Scalar::Untyped),
                list: Some(self.list(obj, preserve, at)?),
                map: Some(self.map(obj, preserve, at)?),
            },
            "object" => Atom {
                map: Some(self.map(obj, preserve, at)?),
                ..Atom::default()
            },
            "array" => Atom {
                list: Some(self.list(obj, preserve, at)?),
                ..Atom::default()
            },
            "integer" | "number" => Atom {
                scalar: Some(Scalar::Numeric),
                ..Atom::default()
            },
            "boolean" => Atom {
                scalar: Some(Scalar::Boolean),
                ..Atom::default()
            },
            "string" => {
                let scalar = match obj.get("format").and_then(Value::as_str).unwrap_or("") {
                    "" | "byte" => Scalar::String,
                    _ => Scalar::Untyped,
                };
                Atom {
                    scalar: Some(scalar),
                    ..Atom::default()
                }
            }
            other => {
                return Err(SchemaError::UnsupportedType {
                    at: at.to_owned(),
                    ty: other.to_owned(),
                })
            }
        })
    }

    fn map(
        &mut self,
        obj: &Map<String, Value>,
        preserve: bool,
        at: &str,
    ) -> Result<MapType, SchemaError> {
        let mut fields = HashMap::new();
        if let Some(props) = obj.get("properties").and_then(Value::as_object) {
            for (name, schema) in props {
                let id = self.compile(schema, preserve, &format!("{at}.{name}"))?;
                fields.insert(name.clone(), id);
            }
        }
        if obj.get("x-kubernetes-embedded-resource") == Some(&Value::Bool(true)) {
            // kube-apiserver declares these on embedded objects before converting for SMD.
            for name in ["apiVersion", "kind"] {
                if !fields.contains_key(name) {
                    self.atoms.push(Atom {
                        scalar: Some(Scalar::String),
                        ..Atom::default()
                    });
                    fields.insert(name.to_owned(), self.atoms.len() - 1);
                }
            }
            if !fields.contains_key("metadata") && self.components.contains_key(OBJECT_META_REF) {
                let meta = self.named(OBJECT_META_REF, at)?;
                fields.insert("metadata".to_owned(), meta);
            }
        }
        let element = match obj.get("additionalProperties") {
            None if preserve || fields.is_empty() => Some(DEDUCED),
            None | Some(Value::Bool(false)) => None,
            Some(Value::Bool(true)) => Some(DEDUCED),
            Some(schema) => Some(self.compile(schema, preserve, &format!("{at}.*"))?),
        };
        let atomic = match obj.get("x-kubernetes-map-type").and_then(Value::as_str) {
            None | Some("granular") => false,
            Some("atomic") => true,
            Some(other) => {
                return Err(SchemaError::UnknownMapType {
                    at: at.to_owned(),
                    map_type: other.to_owned(),
                });
            }
        };
        Ok(MapType {
            fields,
            element,
            atomic,
        })
    }

    fn list(
        &mut self,
        obj: &Map<String, Value>,
        preserve: bool,
        at: &str,
    ) -> Result<ListType, SchemaError> {
        let kind = match obj.get("x-kubernetes-list-type").and_then(Value::as_str) {
            None | Some("atomic") => ListKind::Atomic,
            Some("set") => ListKind::Set,
            Some("map") => {
                let keys: Vec<String> = obj
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|keys| {
                        keys.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                if keys.is_empty() {
                    return Err(SchemaError::MissingMapKeys { at: at.to_owned() });
                }
                ListKind::Map(keys)
            }
            Some(other) => {
                return Err(SchemaError::UnknownListType {
                    at: at.to_owned(),
                    list_type: other.to_owned(),
                });
            }
        };
        let element = match obj.get("items") {
            Some(items) => self.compile(items, preserve, &format!("{at}[]"))?,
            None => UNTYPED_ATOMIC,
        };
        Ok(ListType { kind, element })
    }
}

/// `{"$ref": r}` or `{"allOf": [{"$ref": r}]}`.
fn reference_of(obj: &Map<String, Value>) -> Option<&str> {
    if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
        return Some(r);
    }
    match obj
        .get("allOf")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    {
        Some([only]) => only.get("$ref").and_then(Value::as_str),
        _ => None,
    }
}
