//! `meta.k8s.io/v1` Tables, `PartialObjectMetadata` and lists, written as JSON bytes.
//!
//! ```text
//! {"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{"resourceVersion":"7"},
//!  "columnDefinitions":[{"name":"Name","type":"string","format":"name",...},...],   or null
//!  "rows":[{"cells":["edge-1","retail",...],"object":<per includeObject>},...]}
//! ```
//!
//! What each row carries besides its cells is the request's `includeObject`: `None` (nothing),
//! `Metadata` (the default: `{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1",
//! "metadata":<the object's metadata>}`, which kubectl reads names and labels from), or `Object`
//! (the whole object). `columnDefinitions` is `null` when the client asked for rows without
//! headers (`as=Table;…;includeObject=…` with `?includeObject` and kubectl's watch, which sends
//! headers only in the first event).
//!
//! Everything is written from each object's JSON **bytes**: the metadata of a row is the stored
//! text of the object's `metadata`, spliced in without being decoded into values and encoded
//! again, and a list splices its items the same way; a 10,000-object list or Table costs about
//! one copy of its objects. The kinds' columns and cells are defined with the kinds
//! (`edgefleet_api::table`, the simulator's core kinds); this module only assembles them.

use bytes::{BufMut, Bytes, BytesMut};
use edgefleet_api::table::PrinterColumn;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// `apiVersion` of Tables and partial metadata.
pub const META_API_VERSION: &str = "meta.k8s.io/v1";

/// `?includeObject=`: what a Table row carries besides its cells.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    /// `PartialObjectMetadata` (kube's default).
    #[default]
    Metadata,
    Object,
}

impl IncludeObject {
    /// From the query parameter's value: absent or empty is the default; anything but `None`,
    /// `Metadata` and `Object` is refused, as kube's `ValidateTableOptions` refuses it.
    pub fn from_query(value: Option<&str>) -> Result<Self, TableError> {
        match value {
            None | Some("") | Some("Metadata") => Ok(Self::Metadata),
            Some("None") => Ok(Self::None),
            Some("Object") => Ok(Self::Object),
            Some(other) => Err(TableError::IncludeObject(other.to_owned())),
        }
    }
}

/// Why a Table or partial metadata could not be written.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The request's `includeObject` is not one kube knows (a `400 BadRequest`).
    #[error("includeObject: Unsupported value: {0:?}: supported values: \"Metadata\", \"None\", \"Object\"")]
    IncludeObject(String),
    /// An object given as JSON is not (a server fault).
    #[error("object is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// An object has no `metadata` (a server fault).
    #[error("object has no metadata")]
    NoMetadata,
}

/// `metadata` of a list or Table (`metav1.ListMeta`).
#[derive(Clone, Debug, Default)]
pub struct ListMeta {
    pub resource_version: String,
    pub continue_token: Option<String>,
    pub remaining: Option<i64>,
}

impl ListMeta {
    /// A list's metadata at `resource_version`, with nothing more to fetch.
    pub fn at(resource_version: impl Into<String>) -> Self {
        Self {
            resource_version: resource_version.into(),
            ..Self::default()
        }
    }

    fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "resourceVersion".into(),
            self.resource_version.clone().into(),
        );
        if let Some(c) = &self.continue_token {
            m.insert("continue".into(), c.clone().into());
        }
        if let Some(r) = self.remaining {
            m.insert("remainingItemCount".into(), r.into());
        }
        Value::Object(m)
    }
}

/// The `metadata` of an object, as the bytes it was written with.
#[derive(serde::Deserialize)]
struct MetadataOf<'a> {
    #[serde(borrow)]
    metadata: Option<&'a RawValue>,
}

fn raw_metadata(object: &[u8]) -> Result<&RawValue, TableError> {
    let parsed: MetadataOf<'_> = serde_json::from_slice(object).map_err(TableError::NotJson)?;
    parsed.metadata.ok_or(TableError::NoMetadata)
}

fn put_partial(out: &mut BytesMut, object: &[u8]) -> Result<(), TableError> {
    let metadata = raw_metadata(object)?;
    out.put_slice(br#"{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":"#);
    out.put_slice(metadata.get().as_bytes());
    out.put_u8(b'}');
    Ok(())
}

fn put_json<T: serde::Serialize + ?Sized>(out: &mut BytesMut, value: &T) {
    // Values, strings and numbers always serialize; writing into memory cannot fail.
    let _ = serde_json::to_writer(out.writer(), value);
}

/// The `columnDefinitions` entry of a printer column.
fn column_definition(c: &PrinterColumn) -> Value {
    serde_json::json!({
        "name": c.name,
        "type": c.type_,
        "format": c.format,
        "description": c.description,
        "priority": c.priority,
    })
}

/// A Table written row by row.
pub struct TableWriter {
    out: BytesMut,
    include: IncludeObject,
    rows: usize,
}

impl TableWriter {
    /// Starts a Table with `meta`; `columns` are written as its definitions, or `null` for
    /// `None` (rows without headers). `capacity` is a hint: the objects' total size.
    pub fn new(
        meta: &ListMeta,
        columns: Option<&[PrinterColumn]>,
        include: IncludeObject,
        capacity: usize,
    ) -> Self {
        let mut out = BytesMut::with_capacity(capacity + 1024);
        out.put_slice(br#"{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":"#);
        put_json(&mut out, &meta.to_value());
        out.put_slice(br#","columnDefinitions":"#);
        match columns {
            Some(columns) => {
                let defs: Vec<Value> = columns.iter().map(column_definition).collect();
                put_json(&mut out, &defs);
            }
            None => out.put_slice(b"null"),
        }
        out.put_slice(br#","rows":["#);
        Self {
            out,
            include,
            rows: 0,
        }
    }

    /// Appends the row of the object whose JSON is `object`, with its `cells`.
    pub fn row(&mut self, cells: &[Value], object: &[u8]) -> Result<(), TableError> {
        if self.rows > 0 {
            self.out.put_u8(b',');
        }
        self.out.put_slice(br#"{"cells":"#);
        put_json(&mut self.out, cells);
        match self.include {
            IncludeObject::None => {}
            IncludeObject::Metadata => {
                self.out.put_slice(br#","object":"#);
                put_partial(&mut self.out, object)?;
            }
            IncludeObject::Object => {
                self.out.put_slice(br#","object":"#);
                self.out.put_slice(object);
            }
        }
        self.out.put_u8(b'}');
        self.rows += 1;
        Ok(())
    }

    pub fn finish(mut self) -> Bytes {
        self.out.put_slice(b"]}");
        self.out.freeze()
    }
}

/// `PartialObjectMetadata` of the object whose JSON is `object`.
pub fn partial_object_metadata(object: &[u8]) -> Result<Bytes, TableError> {
    let mut out = BytesMut::with_capacity(object.len() + 96);
    put_partial(&mut out, object)?;
    Ok(out.freeze())
}

/// `PartialObjectMetadataList` of `objects` (each its JSON).
pub fn partial_object_metadata_list<'a>(
    meta: &ListMeta,
    objects: impl ExactSizeIterator<Item = &'a [u8]>,
) -> Result<Bytes, TableError> {
    let mut out = BytesMut::with_capacity(256 * objects.len() + 256);
    out.put_slice(
        br#"{"kind":"PartialObjectMetadataList","apiVersion":"meta.k8s.io/v1","metadata":"#,
    );
    put_json(&mut out, &meta.to_value());
    out.put_slice(br#","items":["#);
    for (i, object) in objects.enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        put_partial(&mut out, object)?;
    }
    out.put_slice(b"]}");
    Ok(out.freeze())
}

/// A `<Kind>List` of `items` (each its JSON, spliced in as is).
pub fn list<'a>(
    api_version: &str,
    list_kind: &str,
    meta: &ListMeta,
    items: impl Iterator<Item = &'a [u8]> + Clone,
) -> Bytes {
    let size: usize = items.clone().map(|o| o.len() + 1).sum();
    let mut out = BytesMut::with_capacity(size + 128);
    out.put_slice(br#"{"apiVersion":"#);
    put_json(&mut out, api_version);
    out.put_slice(br#","kind":"#);
    put_json(&mut out, list_kind);
    out.put_slice(br#","metadata":"#);
    put_json(&mut out, &meta.to_value());
    out.put_slice(br#","items":["#);
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(item);
    }
    out.put_slice(b"]}");
    out.freeze()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const COLUMNS: [PrinterColumn; 2] = [
        PrinterColumn::NAME,
        PrinterColumn::string("Status", "The status").wide(),
    ];

    fn object(name: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"a": "b"}}, "spec": {"x": 1}}))
        .unwrap()
    }

    fn table(include: IncludeObject, headers: bool) -> Value {
        let meta = ListMeta {
            resource_version: "7".into(),
            continue_token: Some("c".into()),
            remaining: Some(3),
        };
        let mut t = TableWriter::new(&meta, headers.then_some(&COLUMNS[..]), include, 0);
        for name in ["n1", "n2"] {
            t.row(&[json!(name), Value::Null], &object(name)).unwrap();
        }
        serde_json::from_slice(&t.finish()).unwrap()
    }

    #[test]
    fn rows_carry_what_include_object_asks_for() {
        let t = table(IncludeObject::Metadata, true);
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(
            t["metadata"],
            json!({"resourceVersion": "7", "continue": "c", "remainingItemCount": 3})
        );
        assert_eq!(
            t["columnDefinitions"][1],
            json!({"name": "Status", "type": "string", "format": "", "description": "The status", "priority": 1})
        );
        assert_eq!(t["rows"][0]["cells"], json!(["n1", null]));
        assert_eq!(
            t["rows"][1]["object"],
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                   "metadata": {"name": "n2", "labels": {"a": "b"}}})
        );
        let whole = table(IncludeObject::Object, false);
        assert_eq!(whole["columnDefinitions"], Value::Null);
        assert_eq!(whole["rows"][0]["object"]["spec"], json!({"x": 1}));
        let bare = table(IncludeObject::None, true);
        assert!(bare["rows"][0].get("object").is_none());
    }

    #[test]
    fn include_object_values_are_kube_s() {
        assert_eq!(
            IncludeObject::from_query(None).unwrap(),
            IncludeObject::Metadata
        );
        assert_eq!(
            IncludeObject::from_query(Some("")).unwrap(),
            IncludeObject::Metadata
        );
        assert_eq!(
            IncludeObject::from_query(Some("None")).unwrap(),
            IncludeObject::None
        );
        assert_eq!(
            IncludeObject::from_query(Some("Object")).unwrap(),
            IncludeObject::Object
        );
        let err = IncludeObject::from_query(Some("object")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "includeObject: Unsupported value: \"object\": supported values: \"Metadata\", \"None\", \"Object\""
        );
    }

    #[test]
    fn partial_metadata_and_lists_splice_the_objects() {
        let (a, b) = (object("a"), object("b"));
        let one: Value = serde_json::from_slice(&partial_object_metadata(&a).unwrap()).unwrap();
        assert_eq!(one["metadata"]["name"], "a");
        let items = [a.as_slice(), b.as_slice()];
        let list: Value = serde_json::from_slice(
            &partial_object_metadata_list(&ListMeta::at("9"), items.iter().copied()).unwrap(),
        )
        .unwrap();
        assert_eq!(list["kind"], "PartialObjectMetadataList");
        assert_eq!(list["items"][1]["metadata"]["name"], "b");
        let full: Value = serde_json::from_slice(&super::list(
            "v1",
            "NodeList",
            &ListMeta::at("9"),
            items.iter().copied(),
        ))
        .unwrap();
        assert_eq!(full["kind"], "NodeList");
        assert_eq!(full["metadata"]["resourceVersion"], "9");
        assert_eq!(full["items"][0]["spec"], json!({"x": 1}));
        assert!(matches!(
            partial_object_metadata(b"{}"),
            Err(TableError::NoMetadata)
        ));
        assert!(matches!(
            partial_object_metadata(b"{"),
            Err(TableError::NotJson(_))
        ));
    }
}
