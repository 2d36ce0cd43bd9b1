//! Schema-directed walks over JSON objects: SMD's `typed` package for our values.
//!
//! | walk | SMD | used for |
//! |---|---|---|
//! | [`ObjectSchema::validate`] | `Validate` | rejecting a bad apply configuration |
//! | [`ObjectSchema::field_set`] | `ToFieldSet` | the fields an applier sets |
//! | [`ObjectSchema::merge`] | `Merge` | the applied configuration over the live object |
//! | [`ObjectSchema::compare`] | `Compare` | what a write added, modified and removed |
//! | [`ObjectSchema::remove_items`] | `RemoveItems` | pruning fields an applier dropped |
//! | [`ObjectSchema::ensure_named_fields_are_members`] | same | making struct fields removable |
//! | [`ObjectSchema::reconcile`] | `ReconcileFieldSetWithSchema` | sets stored before a list or map became atomic |
//!
//! Granularity is what the schema says: struct fields and map entries are separate fields,
//! map-lists are keyed by their key fields, sets by value, and atomic lists and maps (and
//! scalars) are single leaves. Stored objects are walked leniently (a value of an unexpected
//! kind is a leaf); only the applied configuration is validated strictly.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::fieldpath::{values_equal, FieldSet, PathElement};
use super::schema::{
    ListType, MapType, ObjectSchema, Scalar, Shape, TypeId, DEDUCED, UNTYPED_ATOMIC,
};

/// The outcome of [`ObjectSchema::compare`]: no path is in more than one set, except for a
/// list item that gains or loses duplicates (as in SMD).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Comparison {
    pub removed: FieldSet,
    pub modified: FieldSet,
    pub added: FieldSet,
}

impl Comparison {
    pub fn map(self, f: impl Fn(&FieldSet) -> FieldSet) -> Comparison {
        Comparison {
            removed: f(&self.removed),
            modified: f(&self.modified),
            added: f(&self.added),
        }
    }
}

impl ObjectSchema {
    /// Checks a value against the schema as SMD does for an applied configuration: scalar
    /// kinds, declared fields, list item keys, no duplicate items. Messages carry the path:
    /// `.spec.nodePools[name="gpu"].replicas: expected numeric (int or float), got string`.
    pub(crate) fn validate(&self, value: &Value) -> Result<(), String> {
        let mut errors = Vec::new();
        self.validate_node(self.root(), value, &mut String::new(), &mut errors);
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.swap_remove(0)),
            _ => Err(format!("errors:\n  {}", errors.join("\n  "))),
        }
    }

    fn validate_node(
        &self,
        ty: TypeId,
        value: &Value,
        path: &mut String,
        errors: &mut Vec<String>,
    ) {
        if value.is_null() {
            return;
        }
        let at = |path: &str, message: String| {
            if path.is_empty() {
                message
            } else {
                format!("{path}: {message}")
            }
        };
        let Some(shape) = self.matching_shape(ty, value) else {
            let expected = match self.default_shape(ty) {
                Shape::Map(_) => "map".to_owned(),
                Shape::List(_) => "list".to_owned(),
                Shape::Scalar(s) => expected_scalar(s).to_owned(),
            };
            errors.push(at(
                path,
                format!("expected {expected}, got {}", kind_name(value)),
            ));
            return;
        };
        match shape {
            Shape::Scalar(scalar) => {
                let ok = match scalar {
                    Scalar::Numeric => value.is_number(),
                    Scalar::String => value.is_string(),
                    Scalar::Boolean => value.is_boolean(),
                    Scalar::Untyped => true,
                };
                if !ok {
                    errors.push(at(
                        path,
                        format!(
                            "expected {}, got {}",
                            expected_scalar(scalar),
                            kind_name(value)
                        ),
                    ));
                }
            }
            Shape::List(list) => {
                let Some(items) = value.as_array() else {
                    return;
                };
                let mut seen = BTreeSet::new();
                for (i, item) in items.iter().enumerate() {
                    let segment = if list.is_atomic() {
                        format!("[{i}]")
                    } else {
                        match self.item_element(list, item) {
                            Ok(pe) => {
                                let segment = pe.to_string();
                                if !seen.insert(pe) {
                                    errors.push(at(
                                        path,
                                        format!("duplicate entries for key {segment}"),
                                    ));
                                }
                                segment
                            }
                            Err(message) => {
                                // Without the item's identity nothing below it can be named.
                                errors.push(at(path, format!("element {i}: {message}")));
                                return;
                            }
                        }
                    };
                    let len = path.len();
                    path.push_str(&segment);
                    self.validate_node(list.element, item, path, errors);
                    path.truncate(len);
                }
            }
            Shape::Map(map) => {
                let Some(obj) = value.as_object() else { return };
                for (key, child) in obj {
                    let len = path.len();
                    path.push('.');
                    path.push_str(key);
                    match map.field(key).or(map.element) {
                        Some(child_ty) => self.validate_node(child_ty, child, path, errors),
                        None => {
                            errors.push(at(path, "field not declared in schema".to_owned()));
                            path.truncate(len);
                            return;
                        }
                    }
                    path.truncate(len);
                }
            }
        }
    }

    /// Every field `value` sets (SMD's `ToFieldSet`): scalars and atomic values, list items,
    /// map entries; a struct field only when its value is null or `{}` (otherwise it is
    /// implied by what is below it).
    pub fn field_set(&self, value: &Value) -> FieldSet {
        let mut out = FieldSet::new();
        self.field_set_node(self.root(), value, &mut Vec::new(), &mut out);
        out
    }

    fn field_set_node(
        &self,
        ty: TypeId,
        value: &Value,
        path: &mut Vec<PathElement>,
        out: &mut FieldSet,
    ) {
        match self.shape(ty, value) {
            Shape::Scalar(_) => out.insert(path),
            Shape::List(list) => {
                if list.is_atomic() {
                    out.insert(path);
                    return;
                }
                let Some(items) = value.as_array() else {
                    return;
                };
                let Some(pes) = self.item_elements(list, items) else {
                    out.insert(path);
                    return;
                };
                let mut counts: BTreeMap<&PathElement, usize> = BTreeMap::new();
                for pe in &pes {
                    *counts.entry(pe).or_default() += 1;
                }
                for (pe, item) in pes.iter().zip(items) {
                    path.push(pe.clone());
                    if counts[pe] > 1 {
                        // Duplicated items are owned together, as one field without children.
                        out.insert(path);
                    } else {
                        self.field_set_node(list.element, item, path, out);
                        out.insert(path);
                    }
                    path.pop();
                }
            }
            Shape::Map(map) => {
                if map.atomic {
                    out.insert(path);
                    return;
                }
                let Some(obj) = value.as_object() else { return };
                for (key, child) in obj {
                    path.push(PathElement::Field(key.clone()));
                    self.field_set_node(map.child(key), child, path, out);
                    let empty = child.is_null() || child.as_object().is_some_and(Map::is_empty);
                    if empty || map.field(key).is_none() {
                        out.insert(path);
                    }
                    path.pop();
                }
            }
        }
    }

    /// Merges `config` over `live` (SMD's `Merge`): config wins for scalars and atomic values,
    /// maps and structs merge by key, map-lists by item key and sets by value, keeping live
    /// items the config does not mention. Item order follows the config for items it names.
    pub(crate) fn merge(&self, live: &Value, config: &Value) -> Value {
        self.merge_node(self.root(), Some(live), Some(config))
            .unwrap_or(Value::Object(Map::new()))
    }

    fn merge_node(&self, ty: TypeId, lhs: Option<&Value>, rhs: Option<&Value>) -> Option<Value> {
        let (lhs, rhs) = match (lhs, rhs) {
            (None, None) => return None,
            (Some(v), None) | (None, Some(v)) => return Some(v.clone()),
            (Some(l), Some(r)) => (l, r),
        };
        // When the two sides take different shapes, the config's shape decides.
        match self.shape(ty, rhs) {
            Shape::Scalar(_) => Some(rhs.clone()),
            Shape::List(list) => {
                let (l, r) = (lhs.as_array(), rhs.as_array());
                if list.is_atomic() || (is_empty_list(l) && is_empty_list(r)) {
                    return Some(rhs.clone());
                }
                let empty = Vec::new();
                let out = self.merge_list(list, l.unwrap_or(&empty), r.unwrap_or(&empty));
                Some(out.unwrap_or_else(|| rhs.clone()))
            }
            Shape::Map(map) => {
                let (l, r) = (lhs.as_object(), rhs.as_object());
                if map.atomic || (is_empty_map(l) && is_empty_map(r)) {
                    return Some(rhs.clone());
                }
                let mut out = Map::new();
                if let Some(l) = l {
                    for (key, lv) in l {
                        let rv = r.and_then(|r| r.get(key));
                        if let Some(v) = self.merge_node(map.child(key), Some(lv), rv) {
                            out.insert(key.clone(), v);
                        }
                    }
                }
                if let Some(r) = r {
                    for (key, rv) in r {
                        if l.is_none_or(|l| !l.contains_key(key)) {
                            out.insert(key.clone(), rv.clone());
                        }
                    }
                }
                Some(Value::Object(out))
            }
        }
    }

    /// SMD's associative list merge. Live items keep their place; config items are merged
    /// into the live item with the same key and, where the config orders items differently,
    /// the config's order wins. `None` when an item has no identity (merge as atomic).
    fn merge_list(&self, list: &ListType, lhs: &[Value], rhs: &[Value]) -> Option<Value> {
        let lhs_pes = self.item_elements(list, lhs)?;
        let rhs_pes = self.item_elements(list, rhs)?;
        // A duplicated live item has no single value to merge with (`None`).
        let mut observed_lhs: BTreeMap<&PathElement, Option<&Value>> = BTreeMap::new();
        for (pe, item) in lhs_pes.iter().zip(lhs) {
            observed_lhs
                .entry(pe)
                .and_modify(|v| *v = None)
                .or_insert(Some(item));
        }
        let mut observed_rhs: BTreeMap<&PathElement, &Value> = BTreeMap::new();
        let mut rhs_order: Vec<&PathElement> = Vec::with_capacity(rhs_pes.len());
        for (pe, item) in rhs_pes.iter().zip(rhs) {
            // The configuration was validated free of duplicates; keep the first if not.
            if !observed_rhs.contains_key(pe) {
                observed_rhs.insert(pe, item);
                rhs_order.push(pe);
            }
        }
        let mut shared = rhs_order
            .iter()
            .copied()
            .filter(|pe| observed_lhs.contains_key(pe));
        let mut next_shared = shared.next();
        let mut merged_rhs: BTreeSet<&PathElement> = BTreeSet::new();
        let mut out = Vec::with_capacity(lhs.len().max(rhs_order.len()));
        let elem = list.element;
        let (mut li, mut ri) = (0, 0);
        while li < lhs_pes.len() || ri < rhs_order.len() {
            if li < lhs_pes.len() && ri < rhs_order.len() {
                let pe = &lhs_pes[li];
                if pe == rhs_order[ri] {
                    merged_rhs.insert(pe);
                    let l = observed_lhs.get(pe).copied().flatten();
                    out.extend(self.merge_node(elem, l, observed_rhs.get(pe).copied()));
                    li += 1;
                    ri += 1;
                    next_shared = shared.next();
                    continue;
                }
                if observed_rhs.contains_key(pe) && next_shared.is_some_and(|n| n != pe) {
                    // A shared item the config places later: take it when the config gets there.
                    li += 1;
                    continue;
                }
            }
            if li < lhs_pes.len() {
                let pe = &lhs_pes[li];
                if !observed_rhs.contains_key(pe) {
                    out.push(lhs[li].clone());
                    li += 1;
                    continue;
                } else if merged_rhs.contains(pe) {
                    li += 1;
                }
            }
            if ri < rhs_order.len() {
                let pe = rhs_order[ri];
                merged_rhs.insert(pe);
                let l = observed_lhs.get(pe).copied().flatten();
                out.extend(self.merge_node(elem, l, observed_rhs.get(pe).copied()));
                ri += 1;
                if next_shared == Some(pe) {
                    next_shared = shared.next();
                }
            }
        }
        Some(Value::Array(out))
    }

    /// What changed from `lhs` to `rhs` (SMD's `Compare`). A leaf (scalar, atomic value) is
    /// added, removed or modified as a whole; a container that appears or disappears is
    /// added or removed itself, along with everything below it.
    pub(crate) fn compare(&self, lhs: &Value, rhs: &Value) -> Comparison {
        let mut out = Comparison::default();
        self.compare_node(self.root(), Some(lhs), Some(rhs), &mut Vec::new(), &mut out);
        out
    }

    fn compare_node(
        &self,
        ty: TypeId,
        lhs: Option<&Value>,
        rhs: Option<&Value>,
        path: &mut Vec<PathElement>,
        out: &mut Comparison,
    ) {
        let mut leaf = false;
        match (lhs, rhs) {
            (None, None) => return,
            (Some(v), None) | (None, Some(v)) => {
                leaf = self.compare_shape(self.shape(ty, v), lhs, rhs, path, out)
            }
            (Some(l), Some(r)) => {
                let (ls, rs) = (self.shape(ty, l), self.shape(ty, r));
                if !ls.same_kind(&rs) {
                    // SMD walks both readings; each sees the other side as absent below here.
                    self.compare_shape(ls, lhs, rhs, path, out);
                }
                self.compare_shape(rs, lhs, rhs, path, out);
            }
        }
        if !leaf {
            if lhs.is_none() {
                out.added.insert(path);
            } else if rhs.is_none() {
                out.removed.insert(path);
            }
        }
    }

    /// Returns whether the node was compared as a leaf.
    fn compare_shape(
        &self,
        shape: Shape<'_>,
        lhs: Option<&Value>,
        rhs: Option<&Value>,
        path: &mut Vec<PathElement>,
        out: &mut Comparison,
    ) -> bool {
        match shape {
            Shape::Scalar(_) => {}
            Shape::List(list) => {
                let (l, r) = (lhs.and_then(Value::as_array), rhs.and_then(Value::as_array));
                let as_leaf = list.is_atomic() || (is_empty_list(l) && is_empty_list(r));
                if !as_leaf {
                    let empty = Vec::new();
                    let (l, r) = (l.unwrap_or(&empty), r.unwrap_or(&empty));
                    if let (Some(lp), Some(rp)) =
                        (self.item_elements(list, l), self.item_elements(list, r))
                    {
                        self.compare_items(list, (l, &lp), (r, &rp), path, out);
                        return false;
                    }
                }
            }
            Shape::Map(map) => {
                let (l, r) = (
                    lhs.and_then(Value::as_object),
                    rhs.and_then(Value::as_object),
                );
                let as_leaf = map.atomic || (is_empty_map(l) && is_empty_map(r));
                if !as_leaf {
                    self.compare_entries(map, l, r, path, out);
                    return false;
                }
            }
        }
        compare_leaf(lhs, rhs, path, out);
        true
    }

    fn compare_entries(
        &self,
        map: &MapType,
        l: Option<&Map<String, Value>>,
        r: Option<&Map<String, Value>>,
        path: &mut Vec<PathElement>,
        out: &mut Comparison,
    ) {
        let keys = l.into_iter().flat_map(|l| l.keys()).chain(
            r.into_iter()
                .flat_map(|r| r.keys())
                .filter(|k| l.is_none_or(|l| !l.contains_key(*k))),
        );
        for key in keys {
            path.push(PathElement::Field(key.clone()));
            let (lv, rv) = (l.and_then(|l| l.get(key)), r.and_then(|r| r.get(key)));
            self.compare_node(map.child(key), lv, rv, path, out);
            path.pop();
        }
    }

    /// Compares list items by identity; each side is `(items, their path elements)`.
    fn compare_items(
        &self,
        list: &ListType,
        (l, lp): (&[Value], &[PathElement]),
        (r, rp): (&[Value], &[PathElement]),
        path: &mut Vec<PathElement>,
        out: &mut Comparison,
    ) {
        let mut order: Vec<&PathElement> = Vec::new();
        let mut by_pe: BTreeMap<&PathElement, (Vec<&Value>, Vec<&Value>)> = BTreeMap::new();
        for (pe, item) in lp.iter().zip(l) {
            let entry = by_pe.entry(pe).or_insert_with(|| {
                order.push(pe);
                Default::default()
            });
            entry.0.push(item);
        }
        for (pe, item) in rp.iter().zip(r) {
            let entry = by_pe.entry(pe).or_insert_with(|| {
                order.push(pe);
                Default::default()
            });
            entry.1.push(item);
        }
        for pe in order {
            let (ls, rs) = &by_pe[pe];
            path.push(pe.clone());
            match (ls.len(), rs.len()) {
                (0..=1, 0..=1) => self.compare_node(
                    list.element,
                    ls.first().copied(),
                    rs.first().copied(),
                    path,
                    out,
                ),
                // Duplicates on both sides compare as one atomic value.
                (2.., 2..) => {
                    let same =
                        ls.len() == rs.len() && ls.iter().zip(rs).all(|(a, b)| values_equal(a, b));
                    if !same {
                        out.modified.insert(path);
                    }
                }
                (2.., _) => {
                    if let Some(r) = rs.first() {
                        self.compare_node(list.element, None, Some(r), path, out);
                    }
                    out.removed.insert(path);
                }
                (_, _) => {
                    if let Some(l) = ls.first() {
                        self.compare_node(list.element, Some(l), None, path, out);
                    }
                    out.added.insert(path);
                }
            }
            path.pop();
        }
    }

    /// `value` without the fields in `to_remove` (SMD's `RemoveItems`). A container whose
    /// items are all removed disappears too.
    pub(crate) fn remove_items(&self, value: &Value, to_remove: &FieldSet) -> Value {
        self.remove_node(self.root(), value, to_remove)
            .unwrap_or(Value::Object(Map::new()))
    }

    fn remove_node(&self, ty: TypeId, value: &Value, to_remove: &FieldSet) -> Option<Value> {
        match self.shape(ty, value) {
            Shape::Scalar(_) => Some(value.clone()),
            Shape::List(list) => {
                let Some(items) = value.as_array() else {
                    return Some(value.clone());
                };
                if items.is_empty() || list.is_atomic() {
                    return Some(value.clone());
                }
                let Some(pes) = self.item_elements(list, items) else {
                    return Some(value.clone());
                };
                let kept: Vec<Value> = pes
                    .iter()
                    .zip(items)
                    .filter(|(pe, _)| !to_remove.members().contains(*pe))
                    .filter_map(|(pe, item)| match to_remove.child(pe) {
                        Some(below) => self.remove_node(list.element, item, below),
                        None => Some(item.clone()),
                    })
                    .collect();
                (!kept.is_empty()).then_some(Value::Array(kept))
            }
            Shape::Map(map) => {
                let Some(obj) = value.as_object() else {
                    return Some(value.clone());
                };
                if obj.is_empty() || map.atomic {
                    return Some(value.clone());
                }
                let mut kept = Map::new();
                for (key, child) in obj {
                    let pe = PathElement::Field(key.clone());
                    if to_remove.members().contains(&pe) {
                        continue;
                    }
                    let child = match to_remove.child(&pe) {
                        Some(below) => self.remove_node(map.child(key), child, below),
                        None => Some(child.clone()),
                    };
                    if let Some(child) = child {
                        kept.insert(key.clone(), child);
                    }
                }
                (!kept.is_empty()).then_some(Value::Object(kept))
            }
        }
    }

    /// `set` plus every declared struct field that has members below it. Sets only list a
    /// struct field as a member when nothing below it is set; pruning needs the field itself
    /// to be removable once nothing below it is owned.
    pub(crate) fn ensure_named_fields_are_members(&self, set: &FieldSet) -> FieldSet {
        self.ensure_node(Some(self.root()), set)
    }

    fn ensure_node(&self, ty: Option<TypeId>, set: &FieldSet) -> FieldSet {
        let atom = ty.map(|ty| self.atom(ty));
        let map = atom.and_then(|a| a.map.as_ref());
        let list = atom.and_then(|a| a.list.as_ref());
        let mut out = FieldSet::new();
        for pe in set.members() {
            out.insert_member(pe.clone());
        }
        for (pe, child) in set.children() {
            let child_ty = match pe {
                PathElement::Field(name) => map.map(|m| {
                    if m.field(name).is_some() {
                        out.insert_member(pe.clone());
                    }
                    m.child(name)
                }),
                PathElement::Key(_) => list.map(|l| l.element),
                _ => None,
            };
            out.insert_child(pe.clone(), self.ensure_node(child_ty, child));
        }
        out
    }

    /// Adapts a stored set to the current schema: where a list or map has become atomic, an
    /// owner of anything inside it now owns it whole. `None` when nothing needs to change.
    pub(crate) fn reconcile(&self, set: &FieldSet) -> Option<FieldSet> {
        let mut collapse = FieldSet::new();
        self.reconcile_node(
            self.root(),
            Some(set),
            false,
            &mut Vec::new(),
            &mut collapse,
        );
        (!collapse.is_empty()).then(|| set.recursive_difference(&collapse).union(&collapse))
    }

    fn reconcile_node(
        &self,
        ty: TypeId,
        set: Option<&FieldSet>,
        owned_whole: bool,
        path: &mut Vec<PathElement>,
        collapse: &mut FieldSet,
    ) {
        // No value here: SMD resolves the type alone, preferring the map reading.
        match self.default_shape(ty) {
            Shape::Scalar(_) => {}
            Shape::Map(map) => {
                if map.is_deduced() {
                    return;
                }
                if map.atomic && !owned_whole {
                    if set.is_some_and(|s| !s.is_empty()) {
                        collapse.insert(path);
                    }
                    return;
                }
                let Some(set) = set else { return };
                self.reconcile_elements(
                    set,
                    |pe| match pe {
                        PathElement::Field(name) => map.field(name).or(map.element),
                        _ => map.element,
                    },
                    path,
                    collapse,
                );
            }
            Shape::List(list) => {
                if list.is_atomic() && !owned_whole {
                    collapse.insert(path);
                    return;
                }
                let Some(set) = set else { return };
                self.reconcile_elements(set, |_| Some(list.element), path, collapse);
            }
        }
    }

    fn reconcile_elements(
        &self,
        set: &FieldSet,
        child_type: impl Fn(&PathElement) -> Option<TypeId>,
        path: &mut Vec<PathElement>,
        collapse: &mut FieldSet,
    ) {
        let children_only = set
            .children()
            .keys()
            .filter(|pe| !set.members().contains(*pe));
        let elements = children_only
            .map(|pe| (pe, false))
            .chain(set.members().iter().map(|pe| (pe, true)));
        for (pe, is_member) in elements {
            let Some(ty) = child_type(pe) else { continue };
            let below = set.child(pe);
            path.push(pe.clone());
            self.reconcile_node(ty, below, is_member && below.is_none(), path, collapse);
            path.pop();
        }
    }

    /// Drops null struct fields and map entries of typed maps, as kube-apiserver's pruning does
    /// for structural schemas: applying `field: null` owns the field and leaves it unset.
    /// Free-form (deduced) and atomic values keep their nulls; they are data.
    pub(crate) fn drop_nulls(&self, value: &mut Value) {
        self.drop_nulls_node(self.root(), value);
    }

    fn drop_nulls_node(&self, ty: TypeId, value: &mut Value) {
        match self.shape(ty, value) {
            Shape::Scalar(_) => {}
            Shape::List(list) => {
                if list.is_atomic() {
                    return;
                }
                if let Some(items) = value.as_array_mut() {
                    items
                        .iter_mut()
                        .for_each(|item| self.drop_nulls_node(list.element, item));
                }
            }
            Shape::Map(map) => {
                if map.atomic || map.is_deduced() {
                    return;
                }
                let Some(obj) = value.as_object_mut() else {
                    return;
                };
                let typed_entries = map
                    .element
                    .is_some_and(|e| e != DEDUCED && e != UNTYPED_ATOMIC);
                obj.retain(|key, v| !(v.is_null() && (typed_entries || map.field(key).is_some())));
                for (key, v) in obj.iter_mut() {
                    self.drop_nulls_node(map.child(key), v);
                }
            }
        }
    }
}

fn compare_leaf(
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    path: &[PathElement],
    out: &mut Comparison,
) {
    match (lhs, rhs) {
        (None, Some(_)) => out.added.insert(path),
        (Some(_), None) => out.removed.insert(path),
        (Some(l), Some(r)) if !values_equal(l, r) => out.modified.insert(path),
        _ => {}
    }
}

fn is_empty_list(list: Option<&Vec<Value>>) -> bool {
    list.is_none_or(Vec::is_empty)
}

fn is_empty_map(map: Option<&Map<String, Value>>) -> bool {
    map.is_none_or(Map::is_empty)
}

fn expected_scalar(scalar: Scalar) -> &'static str {
    match scalar {
        Scalar::Numeric => "numeric (int or float)",
        Scalar::String => "string",
        Scalar::Boolean => "boolean",
        Scalar::Untyped => "any scalar",
    }
}

fn kind_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}
