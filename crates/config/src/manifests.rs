//! The input of [`compile`](crate::compile): resources and the Secrets they name, plus where each
//! was written so diagnostics can point at a file and line.
//!
//! The operator fills a [`Manifests`] from its reflector stores; standalone mode and
//! `switchyard validate` fill it from YAML files with [`Manifests::load_dir`]. Loading refuses
//! what the API server would refuse (YAML errors, unknown fields, wrong types, CEL rules); those
//! load errors are fatal for the whole input. Everything else is left to `compile`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use serde::de::DeserializeOwned;
use switchyard_api::{LLMGateway, LLMRoute, Provider, TeamBudget, VirtualKey, API_VERSION};

use crate::diagnostics::{Diagnostic, Location, ObjectId, Severity};

/// Namespace given to resources written without one (as `kubectl apply` does).
pub const DEFAULT_NAMESPACE: &str = "default";

/// A Secret's decoded values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretData {
    /// Values by key. Keys whose environment variable was unset are absent.
    pub values: BTreeMap<String, String>,
    /// Keys whose `${VAR}` reference named an unset environment variable, with the variable.
    pub missing_env: BTreeMap<String, String>,
    /// The Secret's resourceVersion, when it came from the API server: with the reader's own,
    /// what [`CompileMemo`](crate::CompileMemo) keys a compiled object on.
    pub version: Option<String>,
}

/// Where a resource was written, and its text, to locate fields in it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Source {
    /// File path.
    pub file: String,
    /// First line of the resource's YAML document (1-based).
    pub line: usize,
    /// The document's text.
    pub text: String,
}

/// Everything `compile` reads.
#[derive(Clone, Debug, Default)]
pub struct Manifests {
    /// Providers.
    pub providers: Vec<Provider>,
    /// Routes.
    pub routes: Vec<LLMRoute>,
    /// Virtual keys.
    pub keys: Vec<VirtualKey>,
    /// Budgets over groups of keys (kind `Budget`).
    pub budgets: Vec<TeamBudget>,
    /// Gateways.
    pub gateways: Vec<LLMGateway>,
    /// Secrets by (namespace, name).
    pub secrets: BTreeMap<(String, String), SecretData>,
    /// Namespace labels, for gateways that admit namespaces by selector.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Where each resource was written (files only).
    pub sources: BTreeMap<ObjectId, Source>,
}

impl Manifests {
    /// Adds a Kubernetes Secret (both `data` and `stringData`).
    pub fn add_secret(&mut self, secret: &Secret) {
        let ns = secret.namespace().unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        let mut data = SecretData {
            version: secret.metadata.resource_version.clone(),
            ..SecretData::default()
        };
        for (k, v) in secret.data.iter().flatten() {
            if let Ok(s) = String::from_utf8(v.0.clone()) {
                data.values.insert(k.clone(), s);
            }
        }
        for (k, v) in secret.string_data.iter().flatten() {
            data.values.insert(k.clone(), v.clone());
        }
        self.secrets.insert((ns, secret.name_any()), data);
    }

    /// Loads every `*.yaml` / `*.yml` file below `dir` (sorted, recursive), expanding `${VAR}`
    /// in Secret values with `env`. Returns the manifests and the load errors; any error means
    /// the input as a whole is invalid.
    ///
    /// Documents are parsed and checked on every core ([`parse_documents`]), then added in file
    /// and document order, so duplicates and diagnostics come out as a one-by-one load gives them.
    pub fn load_dir(dir: &Path, env: &dyn Fn(&str) -> Option<String>) -> (Self, Vec<Diagnostic>) {
        let mut paths = Vec::new();
        let mut diags = Vec::new();
        collect_yaml_files(dir, &mut paths, &mut diags);
        paths.sort();
        let files: Vec<(String, std::io::Result<String>)> = paths
            .iter()
            .map(|path| (path.display().to_string(), std::fs::read_to_string(path)))
            .collect();
        let mut docs = Vec::new();
        let mut counts = Vec::new();
        for (name, text) in &files {
            let before = docs.len();
            if let Ok(text) = text {
                docs.extend(
                    split_documents(text)
                        .into_iter()
                        .map(|(line, doc)| (name.as_str(), line, doc)),
                );
            }
            counts.push(docs.len() - before);
        }
        let mut parsed = parse_documents(&docs).into_iter();
        let mut m = Manifests::default();
        for ((name, text), count) in files.iter().zip(counts) {
            if let Err(e) = text {
                diags.push(file_error(name, 1, format!("cannot read: {e}")));
            }
            for doc in parsed.by_ref().take(count) {
                m.add_parsed(doc, env, &mut diags);
            }
        }
        if m.providers.is_empty() && m.routes.is_empty() && diags.is_empty() {
            diags.push(file_error(
                &dir.display().to_string(),
                1,
                "no Switchyard resources found (expected YAML files with Provider and LLMRoute resources)".into(),
            ));
        }
        (m, diags)
    }

    /// Adds the resources of one YAML file (one or more documents). Returns its load errors.
    pub fn add_yaml(&mut self, file: &str, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Vec<Diagnostic> {
        let mut diags = Vec::new();
        for (line, doc) in split_documents(text) {
            self.add_parsed(parse_document(file, line, doc), env, &mut diags);
        }
        diags
    }

    /// Adds one parsed document: the checks that need the documents before it (duplicates) and
    /// the environment (Secret values) happen here.
    fn add_parsed(&mut self, doc: Parsed, env: &dyn Fn(&str) -> Option<String>, diags: &mut Vec<Diagnostic>) {
        match doc {
            Parsed::Other(d) => diags.extend(d),
            Parsed::Provider(c) => {
                if let Some(p) = self.admit(c, diags) {
                    self.providers.push(p);
                }
            }
            Parsed::LLMRoute(c) => {
                if let Some(r) = self.admit(c, diags) {
                    self.routes.push(r);
                }
            }
            Parsed::VirtualKey(c) => {
                if let Some(k) = self.admit(c, diags) {
                    self.keys.push(k);
                }
            }
            Parsed::Budget(c) => {
                if let Some(b) = self.admit(c, diags) {
                    self.budgets.push(b);
                }
            }
            Parsed::LLMGateway(c) => {
                if let Some(g) = self.admit(c, diags) {
                    self.gateways.push(g);
                }
            }
            Parsed::Secret(c) => {
                let src = c.src.clone();
                if let Some(s) = self.admit(c, diags) {
                    self.add_secret_expanding(&s, &src, env, diags);
                }
            }
            Parsed::Namespace(c) => {
                if let Some(ns) = self.admit(c, diags) {
                    self.namespaces.insert(ns.name_any(), ns.labels().clone());
                }
            }
        }
    }

    /// Records where a checked resource was written; refuses a second one of the same kind,
    /// namespace and name. Returns the resource when it passed every check.
    fn admit<T>(&mut self, checked: Checked<T>, diags: &mut Vec<Diagnostic>) -> Option<T> {
        diags.extend(checked.diags);
        let (obj, id, ok) = checked.result?;
        let src = checked.src;
        if let Some(previous) = self.sources.get(&id) {
            diags.push(Diagnostic {
                location: Some(Location {
                    file: src.file.clone(),
                    line: src.line,
                }),
                object: Some(id.clone()),
                severity: Severity::Error,
                field: String::new(),
                reason: "Duplicate".into(),
                message: format!("defined twice (first at {}:{})", previous.file, previous.line),
            });
            return None;
        }
        self.sources.insert(id, src);
        ok.then_some(obj)
    }

    fn add_secret_expanding(
        &mut self,
        secret: &Secret,
        src: &Source,
        env: &dyn Fn(&str) -> Option<String>,
        diags: &mut Vec<Diagnostic>,
    ) {
        let ns = secret.namespace().unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        let mut data = SecretData {
            version: secret.metadata.resource_version.clone(),
            ..SecretData::default()
        };
        for (k, v) in secret.data.iter().flatten() {
            match String::from_utf8(v.0.clone()) {
                Ok(s) => {
                    data.values.insert(k.clone(), s);
                }
                Err(_) => diags.push(file_error(
                    &src.file,
                    src.line,
                    format!("Secret/{}: data.{k} is not UTF-8 text", secret.name_any()),
                )),
            }
        }
        for (k, v) in secret.string_data.iter().flatten() {
            match expand_env(v, env) {
                Ok(s) => {
                    data.values.insert(k.clone(), s);
                }
                Err(var) => {
                    data.missing_env.insert(k.clone(), var);
                }
            }
        }
        self.secrets.insert((ns, secret.name_any()), data);
    }

    /// The line in its source file of a field of a resource, when the resource came from a file.
    /// `hint` narrows the search to a line that also contains that text (a value).
    pub fn locate(&self, object: &ObjectId, field: &str, hint: Option<&str>) -> Option<Location> {
        let src = self.sources.get(object)?;
        let line = locate_field(&src.text, field, hint).map_or(src.line, |l| src.line + l);
        Some(Location {
            file: src.file.clone(),
            line,
        })
    }
}

/// Documents per unit of work in [`parse_documents`]: small enough to share the work evenly,
/// large enough that taking one costs nothing beside parsing it.
const DOCUMENTS_PER_TAKE: usize = 64;

/// [`parse_document`] of each `(file, first line, text)`, in order, on every core: parsing and
/// checking documents is most of a load (10,000 keys with their Secrets: bench/results), and each
/// document is parsed on its own.
fn parse_documents(docs: &[(&str, usize, &str)]) -> Vec<Parsed> {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(docs.len().div_ceil(DOCUMENTS_PER_TAKE));
    if threads <= 1 {
        return docs
            .iter()
            .map(|&(file, line, doc)| parse_document(file, line, doc))
            .collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let take = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(chunk) = docs.chunks(DOCUMENTS_PER_TAKE).nth(take) else {
                return done;
            };
            let parsed: Vec<Parsed> = chunk
                .iter()
                .map(|&(file, line, doc)| parse_document(file, line, doc))
                .collect();
            done.push((take, parsed));
        }
    };
    let mut takes = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
        let mut takes = work();
        for helper in helpers {
            match helper.join() {
                Ok(t) => takes.extend(t),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        takes
    });
    takes.sort_unstable_by_key(|(take, _)| *take);
    takes.into_iter().flat_map(|(_, parsed)| parsed).collect()
}

/// One document, parsed and checked on its own: everything but what depends on the other
/// documents (duplicates) or on the environment (Secret values).
// Resources differ in size (an LLMGateway is over 1 KiB, a Secret a fraction): boxing them would
// cost an allocation per document for a list that lives only through one load.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Provider(Checked<Provider>),
    LLMRoute(Checked<LLMRoute>),
    VirtualKey(Checked<VirtualKey>),
    Budget(Checked<TeamBudget>),
    LLMGateway(Checked<LLMGateway>),
    Secret(Checked<Secret>),
    Namespace(Checked<k8s_openapi::api::core::v1::Namespace>),
    /// Not one of ours (or empty): its errors, if any.
    Other(Vec<Diagnostic>),
}

/// A resource deserialised and checked: `result` is `None` when it did not deserialise, else the
/// resource, its id and whether it passed every check; `diags` says what failed.
struct Checked<T> {
    src: Source,
    result: Option<(T, ObjectId, bool)>,
    diags: Vec<Diagnostic>,
}

fn parse_document(file: &str, start: usize, doc: &str) -> Parsed {
    let value: serde_yaml::Value = match serde_yaml::from_str(doc) {
        Ok(v) => v,
        Err(e) => {
            let line = start + e.location().map_or(0, |l| l.line().saturating_sub(1));
            return Parsed::Other(vec![file_error(file, line, format!("invalid YAML: {e}"))]);
        }
    };
    if value.is_null() {
        return Parsed::Other(Vec::new());
    }
    let field = |name: &str| value.get(name).and_then(|v| v.as_str()).unwrap_or("").to_owned();
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    let src = || Source {
        file: file.to_owned(),
        line: start,
        text: doc.to_owned(),
    };
    match (api_version.as_str(), kind.as_str()) {
        (API_VERSION, "Provider") => Parsed::Provider(check(src(), "Provider", value)),
        (API_VERSION, "LLMRoute") => Parsed::LLMRoute(check(src(), "LLMRoute", value)),
        (API_VERSION, "VirtualKey") => Parsed::VirtualKey(check(src(), "VirtualKey", value)),
        (API_VERSION, "Budget") => Parsed::Budget(check(src(), "Budget", value)),
        (API_VERSION, "LLMGateway") => Parsed::LLMGateway(check(src(), "LLMGateway", value)),
        ("v1", "Secret") => Parsed::Secret(check(src(), "Secret", value)),
        ("v1", "Namespace") => Parsed::Namespace(check(src(), "Namespace", value)),
        ("", _) | (_, "") => Parsed::Other(vec![file_error(
            file,
            start,
            "document has no apiVersion or kind".into(),
        )]),
        (a, k) if a.starts_with("switchyard.dev/") => Parsed::Other(vec![file_error(
            file,
            start,
            format!("unknown Switchyard resource {a} {k} (this version knows {API_VERSION} Provider, LLMRoute, VirtualKey, Budget, LLMGateway)"),
        )]),
        // Other Kubernetes objects may live beside ours (a kustomization's Deployment...).
        _ => Parsed::Other(Vec::new()),
    }
}

/// Deserialises a document strictly: unknown fields are errors (as with
/// `kubectl apply --validate=strict`), then CEL rules are checked.
///
/// The document was parsed once already (`value`, to read its kind): the resource is taken from
/// that value rather than by parsing the text a second time. Only the text gives lines for
/// errors, and only the text turns a number or `true` into a string field, so a document that does
/// not come out of the value cleanly (an error, an unknown field) is deserialised again from its
/// text: what it loads to, and every error, are the text's.
fn check<T>(src: Source, kind: &str, value: serde_yaml::Value) -> Checked<T>
where
    T: DeserializeOwned + kube::Resource + CelCheck,
{
    let mut unknown = Vec::new();
    let from_value: Result<T, _> = serde_ignored::deserialize(value, |path| {
        if !is_type_field(&path.to_string()) {
            unknown.push(path.to_string());
        }
    });
    let result = match from_value {
        Ok(obj) if unknown.is_empty() => Ok(obj),
        _ => {
            unknown.clear();
            let de = serde_yaml::Deserializer::from_str(&src.text);
            serde_ignored::deserialize(de, |path| {
                let path = path.to_string();
                if !is_type_field(&path) {
                    unknown.push(path);
                }
            })
        }
    };
    let mut diags = Vec::new();
    let mut obj: T = match result {
        Ok(o) => o,
        Err(e) => {
            let line = src.line + e.location().map_or(0, |l| l.line().saturating_sub(1));
            diags.push(file_error(&src.file, line, format!("{kind}: {e}")));
            return Checked {
                src,
                result: None,
                diags,
            };
        }
    };
    if obj.meta().namespace.is_none() {
        obj.meta_mut().namespace = Some(DEFAULT_NAMESPACE.to_owned());
    }
    let id = ObjectId::new(
        kind,
        obj.meta().namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE),
        obj.meta().name.as_deref().unwrap_or(""),
    );
    let mut ok = true;
    if id.name.is_empty() {
        diags.push(file_error(&src.file, src.line, format!("{kind} has no metadata.name")));
        ok = false;
    }
    for path in unknown {
        let line = locate_key(&src.text, &path).map_or(src.line, |l| src.line + l);
        diags.push(Diagnostic {
            location: Some(Location {
                file: src.file.clone(),
                line,
            }),
            object: Some(id.clone()),
            severity: Severity::Error,
            field: path.clone(),
            reason: "UnknownField".into(),
            message: "unknown field".into(),
        });
        ok = false;
    }
    for (field, message) in obj.cel_errors() {
        let line = locate_field(&src.text, &field, None).map_or(src.line, |l| src.line + l);
        diags.push(Diagnostic {
            location: Some(Location {
                file: src.file.clone(),
                line,
            }),
            object: Some(id.clone()),
            severity: Severity::Error,
            field,
            reason: "Invalid".into(),
            message,
        });
        ok = false;
    }
    Checked {
        src,
        result: Some((obj, id, ok)),
        diags,
    }
}

/// The generated resource types check apiVersion and kind themselves.
fn is_type_field(path: &str) -> bool {
    path == "apiVersion" || path == "kind"
}

/// Resources whose CEL rules can be checked client-side.
pub trait CelCheck {
    /// `(field, message)` of every failed rule.
    fn cel_errors(&self) -> Vec<(String, String)>;
}

macro_rules! cel_check {
    ($($t:ty),*) => {$(
        impl CelCheck for $t {
            fn cel_errors(&self) -> Vec<(String, String)> {
                use kube::core::cel::{compile_schema, CompiledSchema, Validator};
                thread_local! {
                    // `validate_cel()` generates the whole CRD and compiles its rules on every
                    // call: ~3 ms per document, 36 s to load 10,000 VirtualKeys (bench/results).
                    // The same schema and rules, built once per type and thread.
                    static CEL: Option<(Validator, CompiledSchema)> =
                        <$t as kube::CustomResourceExt>::crd()
                            .spec
                            .versions
                            .first()
                            .and_then(|v| v.schema.as_ref())
                            .and_then(|s| s.open_api_v3_schema.as_ref())
                            .and_then(|s| serde_json::to_value(s).ok())
                            .map(|s| (Validator::new(), compile_schema(&s)));
                }
                CEL.with(|cel| match (cel, serde_json::to_value(self)) {
                    (Some((validator, schema)), Ok(object)) => {
                        let mut errors = Vec::new();
                        cel_walk(validator, schema, &object, String::new(), &mut errors);
                        errors
                    }
                    _ => cel_messages("", self.validate_cel()),
                })
            }
        }
    )*};
}
cel_check!(Provider, LLMRoute, VirtualKey, TeamBudget, LLMGateway);

/// kube-cel's walk, entered only where rules are. `validate_compiled` converts the value of every
/// schema node it passes (the whole object at the root, each subtree again below) and copies the
/// object to default it, rules or not: most of a VirtualKey's load time, for rules that sit under
/// `spec.budget` only. This descends the schema as kube-cel does (properties, with their defaults
/// standing in for absent ones; array items; map values; allOf/oneOf/anyOf branches) without
/// converting anything, and hands kube-cel each topmost node that has rules, with its value, so
/// every rule still runs on the same value with the same defaults; field paths are re-rooted.
fn cel_walk(
    validator: &kube::core::cel::Validator,
    node: &kube::core::cel::CompiledSchema,
    value: &serde_json::Value,
    path: String,
    out: &mut Vec<(String, String)>,
) {
    if !node.validations.is_empty() {
        out.extend(cel_messages(&path, validator.validate_compiled(node, value, None)));
        return;
    }
    if let Some(object) = value.as_object() {
        for (name, child) in &node.properties {
            if let Some(v) = object.get(name).or(child.default.as_ref()) {
                cel_walk(validator, child, v, join_field(&path, name), out);
            }
        }
        if let (false, Some(additional)) = (node.preserve_unknown_fields, &node.additional_properties) {
            for (name, v) in object.iter().filter(|(k, _)| !node.properties.contains_key(*k)) {
                cel_walk(validator, additional, v, join_field(&path, name), out);
            }
        }
    }
    if let (Some(items), Some(array)) = (&node.items, value.as_array()) {
        for (i, v) in array.iter().enumerate() {
            cel_walk(validator, items, v, format!("{path}[{i}]"), out);
        }
    }
    for branch in node.all_of.iter().chain(&node.one_of).chain(&node.any_of) {
        cel_walk(validator, branch, value, path.clone(), out);
    }
}

/// `(field, message)` of failed rules, their field paths (relative to `base`) made whole.
fn cel_messages(base: &str, result: Result<(), kube::core::cel::ValidationErrors>) -> Vec<(String, String)> {
    let Err(errors) = result else {
        return Vec::new();
    };
    errors
        .as_slice()
        .iter()
        .map(|e| {
            let rel = e.field_path.as_str();
            let field = if rel.is_empty() {
                base.to_owned()
            } else if base.is_empty() || rel.starts_with(['[', '.']) {
                format!("{base}{rel}")
            } else {
                format!("{base}.{rel}")
            };
            (field.trim_start_matches('.').to_owned(), e.message.clone())
        })
        .collect()
}

fn join_field(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_owned()
    } else {
        format!("{base}.{name}")
    }
}

impl CelCheck for Secret {
    fn cel_errors(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

impl CelCheck for k8s_openapi::api::core::v1::Namespace {
    fn cel_errors(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

fn file_error(file: &str, line: usize, message: String) -> Diagnostic {
    Diagnostic {
        location: Some(Location {
            file: file.to_owned(),
            line,
        }),
        object: None,
        severity: Severity::Error,
        field: String::new(),
        reason: "Invalid".into(),
        message,
    }
}

fn collect_yaml_files(dir: &Path, out: &mut Vec<PathBuf>, diags: &mut Vec<Diagnostic>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            diags.push(file_error(
                &dir.display().to_string(),
                1,
                format!("cannot read directory: {e}"),
            ));
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let hidden = name.to_string_lossy().starts_with('.');
        if hidden {
            continue;
        }
        if path.is_dir() {
            collect_yaml_files(&path, out, diags);
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(path);
        }
    }
}

/// Splits a multi-document YAML text at `---` lines; yields (first line, text) per document.
fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let mut start_byte = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") {
            docs.push((start_line, &text[start_byte..offset]));
            start_byte = offset + line.len();
            start_line = i + 2;
        }
        offset += line.len();
    }
    docs.push((start_line, &text[start_byte..]));
    docs.into_iter().filter(|(_, d)| !d.trim().is_empty()).collect()
}

/// Expands `${VAR}` with `env`; returns the first unset variable as the error.
fn expand_env(value: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match after.find('}') {
            Some(j) => {
                let var = &after[..j];
                match env(var) {
                    Some(v) => out.push_str(&v),
                    None => return Err(var.to_owned()),
                }
                rest = &after[j + 1..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Zero-based line offset of the last key of a serde_ignored path (`spec.backends.0.weigth`).
fn locate_key(text: &str, path: &str) -> Option<usize> {
    let key = path.rsplit('.').find(|s| s.parse::<usize>().is_err())?;
    find_key_line(text, key, None)
}

/// Zero-based line offset of a field path such as `spec.backends[1].providerRef.name`: each
/// key is searched from where the previous one was found, list indexes count `- ` items.
fn locate_field(text: &str, field: &str, hint: Option<&str>) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut pos = 0;
    let mut found = None;
    for seg in field.split('.') {
        let (key, index) = match seg.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        if key.is_empty() {
            continue;
        }
        let offset = find_key_line(&lines[pos.min(lines.len())..].join("\n"), key, None)?;
        pos += offset;
        found = Some(pos);
        if let Some(n) = index {
            let items: Vec<usize> = lines
                .iter()
                .enumerate()
                .skip(pos + 1)
                .filter(|(_, l)| l.trim_start().starts_with("- "))
                .map(|(i, _)| i)
                .collect();
            if let Some(&item) = items.get(n) {
                pos = item;
                found = Some(pos);
            }
        }
    }
    match (found, hint) {
        (Some(f), Some(h)) if !lines.get(f).is_some_and(|l| l.contains(h)) => {
            lines.iter().position(|l| l.contains(h)).or(Some(f))
        }
        (f, _) => f,
    }
}

fn find_key_line(text: &str, key: &str, hint: Option<&str>) -> Option<usize> {
    text.lines().position(|line| {
        let t = line.trim_start().trim_start_matches("- ").trim_start();
        let is_key = t.starts_with(key) && t[key.len()..].trim_start().starts_with(':')
            || t.contains(&format!("{{{key}:"))
            || t.contains(&format!(" {key}:"));
        is_key && hint.is_none_or(|h| line.contains(h))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn split_keeps_line_numbers() {
        let docs = split_documents("a: 1\n---\nb: 2\nc: 3\n---\n\n---\nd: 4\n");
        let lines: Vec<usize> = docs.iter().map(|d| d.0).collect();
        assert_eq!(lines, vec![1, 3, 8]);
    }

    #[test]
    fn env_expansion() {
        let env = |v: &str| (v == "A").then(|| "x".to_string());
        assert_eq!(expand_env("k-${A}-z", &env), Ok("k-x-z".into()));
        assert_eq!(expand_env("${B}", &env), Err("B".into()));
        assert_eq!(expand_env("plain", &env), Ok("plain".into()));
    }

    #[test]
    fn unknown_field_is_an_error_with_its_line() {
        let mut m = Manifests::default();
        let diags = m.add_yaml(
            "r.yaml",
            "apiVersion: switchyard.dev/v1alpha1\nkind: LLMRoute\nmetadata:\n  name: r\nspec:\n  model: m\n  backends:\n    - providerRef: {name: p}\n      model: x\n      weigth: 3\n",
            &no_env,
        );
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(
            diags[0].to_string(),
            "r.yaml:10: LLMRoute/r: spec.backends.0.weigth: unknown field"
        );
        assert!(m.routes.is_empty());
    }

    #[test]
    fn type_error_names_the_line() {
        let mut m = Manifests::default();
        let diags = m.add_yaml(
            "p.yaml",
            "# comment\n---\napiVersion: switchyard.dev/v1alpha1\nkind: Provider\nmetadata:\n  name: p\nspec:\n  type: not-a-type\n",
            &no_env,
        );
        assert_eq!(diags.len(), 1);
        let text = diags[0].to_string();
        assert!(text.starts_with("p.yaml:8: Provider: "), "{text}");
        assert!(text.contains("unknown variant `not-a-type`"), "{text}");
    }

    #[test]
    fn cel_rules_apply_client_side() {
        let mut m = Manifests::default();
        let diags = m.add_yaml(
            "p.yaml",
            "apiVersion: switchyard.dev/v1alpha1\nkind: Provider\nmetadata:\n  name: p\nspec:\n  type: anthropic\n",
            &no_env,
        );
        assert_eq!(diags.len(), 1);
        assert!(
            diags[0].to_string().contains("credentials.secretRef is required"),
            "{}",
            diags[0]
        );
    }

    #[test]
    fn cel_walk_reports_what_kube_cels_whole_walk_reports() {
        // Rules on spec, on list items and on nested objects, failing and passing: entering
        // kube-cel only where rules are gives the same (field, message) pairs as its own walk.
        let route: LLMRoute = serde_yaml::from_str(
            "apiVersion: switchyard.dev/v1alpha1\nkind: LLMRoute\nmetadata:\n  name: r\nspec:\n  model: m\n  aliases: [m]\n  backends:\n  - {name: a, providerRef: {name: p}, model: x, weight: 0}\n  - {name: a, providerRef: {name: p}, model: y, weight: 0}\n  rules:\n  - name: ok\n    action: {route: other}\n  - name: empty\n    action: {}\n  hedging: {enabled: true}\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let provider: Provider = serde_yaml::from_str(
            "apiVersion: switchyard.dev/v1alpha1\nkind: Provider\nmetadata:\n  name: p\nspec:\n  type: anthropic\n  circuitBreaker: {consecutiveFailures: 0}\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let sorted = |mut v: Vec<(String, String)>| {
            v.sort();
            v
        };
        let ours = sorted(route.cel_errors());
        assert_eq!(ours, sorted(cel_messages("", route.validate_cel())));
        let fields: Vec<&str> = ours.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            ["spec", "spec", "spec", "spec.hedging", "spec.rules[1]"],
            "{ours:?}"
        );
        let ours = sorted(provider.cel_errors());
        assert_eq!(ours, sorted(cel_messages("", provider.validate_cel())));
        let fields: Vec<&str> = ours.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["spec", "spec.circuitBreaker"], "{ours:?}");
    }

    #[test]
    fn a_folder_loads_as_its_files_do_one_document_after_another() {
        // Enough documents that they are parsed on several threads: duplicates (across files and
        // work units), errors and Secrets come out as adding each file in order gives them.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let key = |i: usize| {
            format!("apiVersion: switchyard.dev/v1alpha1\nkind: VirtualKey\nmetadata:\n  name: k{i}\nspec:\n  secretRef:\n    name: s{i}\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: s{i}\nstringData:\n  key: ${{KEY_{i}}}\n---\n")
        };
        let a: String = (0..150).map(key).collect::<String>()
            + "apiVersion: switchyard.dev/v1alpha1\nkind: LLMRoute\nmetadata:\n  name: r\nspec:\n  model: m\n  backends: [{providerRef: {name: p}, model: x, weigth: 1}]\n";
        let b: String = (140..300).map(key).collect::<String>()
            + "kind: [unclosed\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: bad\ndata:\n  key: 12\n";
        std::fs::write(dir.path().join("a.yaml"), &a).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("b.yaml"), &b).unwrap_or_else(|e| panic!("{e}"));
        let env = |v: &str| (v != "KEY_7").then(|| format!("sk-{v}"));
        let (loaded, diags) = Manifests::load_dir(dir.path(), &env);
        let mut one_by_one = Manifests::default();
        let a_name = dir.path().join("a.yaml").display().to_string();
        let b_name = dir.path().join("b.yaml").display().to_string();
        let mut expected = one_by_one.add_yaml(&a_name, &a, &env);
        expected.extend(one_by_one.add_yaml(&b_name, &b, &env));
        assert_eq!(diags, expected);
        assert_eq!(
            diags.iter().filter(|d| d.reason == "Duplicate").count(),
            20,
            "{diags:?}"
        );
        let json = |keys: &[VirtualKey]| serde_json::to_value(keys).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(json(&loaded.keys), json(&one_by_one.keys));
        assert_eq!(loaded.secrets, one_by_one.secrets);
        assert_eq!(loaded.sources, one_by_one.sources);
        assert_eq!(loaded.keys.len(), 300);
        assert_eq!(
            loaded.secrets[&("default".to_string(), "s7".to_string())]
                .missing_env
                .len(),
            1
        );
    }

    #[test]
    fn secrets_expand_env_and_record_missing() {
        let mut m = Manifests::default();
        let env = |v: &str| (v == "SET").then(|| "value".to_string());
        let diags = m.add_yaml(
            "s.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n  namespace: team\nstringData:\n  a: ${SET}\n  b: ${UNSET}\n",
            &env,
        );
        assert!(diags.is_empty());
        let data = &m.secrets[&("team".to_string(), "s".to_string())];
        assert_eq!(data.values.get("a").map(String::as_str), Some("value"));
        assert_eq!(data.missing_env.get("b").map(String::as_str), Some("UNSET"));
    }
}
