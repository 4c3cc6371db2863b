//! The input of [`compile`](crate::compile): resources and the Secrets they name, plus where each
//! was written so diagnostics can point at a file and line.
//!
//! The operator fills a [`Manifests`] from its reflector stores; standalone mode and
//! `switchyard validate` fill it from YAML files with [`Manifests::load_dir`]. Loading refuses
//! what the API server would refuse (YAML errors, unknown fields, wrong types, CEL rules); those
//! load errors are fatal for the whole input. Everything else is left to `compile`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use serde::de::DeserializeOwned;
use switchyard_api::{LLMGateway, LLMRoute, Provider, TeamBudget, VirtualKey, API_VERSION};

use crate::block;
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
    /// The document's text (shared: a reload that finds the document unchanged reuses it).
    pub text: Arc<str>,
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
    pub sources: HashMap<ObjectId, Source>,
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
        Self::load(dir, env, None)
    }

    /// [`Manifests::load_dir`] for a folder read again and again (standalone mode's reloads):
    /// documents whose file, first line and text are those of the previous load through `cache`
    /// are taken from it instead of being parsed and checked again, so a reload costs what the
    /// edit changed, not the whole folder. What it returns is what `load_dir` returns.
    pub fn load_dir_cached(
        dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        cache: &mut ParseCache,
    ) -> (Self, Vec<Diagnostic>) {
        Self::load(dir, env, Some(cache))
    }

    fn load(
        dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        cache: Option<&mut ParseCache>,
    ) -> (Self, Vec<Diagnostic>) {
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
        let parsed = match cache {
            None => parse_documents(&docs),
            Some(cache) => cache.parse(&docs),
        };
        let mut m = Manifests::default();
        // Sized once: a VirtualKey is large, and 10,000 of them pushed one by one are copied
        // again at every doubling.
        let count = |kind: fn(&Parsed) -> bool| parsed.iter().filter(|p| kind(p)).count();
        m.keys.reserve_exact(count(|p| matches!(p, Parsed::VirtualKey(_))));
        m.routes.reserve_exact(count(|p| matches!(p, Parsed::LLMRoute(_))));
        m.sources.reserve(parsed.len());
        let mut parsed = parsed.into_iter();
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

/// The documents of the last load through it, by file and first line, each with its text and
/// what parsing and checking it gave ([`Manifests::load_dir_cached`]). A document is taken from
/// here only when its file, first line and text are all the same: a document that moved is
/// parsed again, so every line in a diagnostic is where the document is now. What it holds is
/// what parsing is: nothing that depends on the other documents or on the environment.
#[derive(Default)]
pub struct ParseCache {
    /// Per file, its documents in order of their first line. Boxed: a `Parsed` is large, and
    /// these are moved from one load's map to the next.
    files: HashMap<String, Vec<CachedLine>>,
    last: CacheUse,
}

/// A document's first line, and its text and what parsing and checking it gave (`None` only
/// while it is being parsed).
type CachedLine = (usize, Option<Box<(String, Parsed)>>);

/// How the last load through a [`ParseCache`] went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheUse {
    /// Documents taken from the cache.
    pub reused: usize,
    /// Documents parsed and checked.
    pub parsed: usize,
}

impl ParseCache {
    /// How the last load through this cache went.
    pub fn last(&self) -> CacheUse {
        self.last
    }

    /// [`parse_documents`] of `docs` (grouped by file, each file's in order of line, as
    /// [`Manifests::load_dir`] lists them), parsing only what the previous load did not have;
    /// keeps exactly `docs` for the next load.
    fn parse(&mut self, docs: &[(&str, usize, &str)]) -> Vec<Parsed> {
        let mut old = std::mem::take(&mut self.files);
        let mut out = Vec::with_capacity(docs.len());
        let mut missing = Vec::new();
        // The file being gone through, and what is kept of it.
        let (mut file, mut kept) = ("", Vec::new());
        for &(name, line, text) in docs {
            if name != file {
                let done = std::mem::take(&mut kept);
                if !done.is_empty() {
                    self.files.insert(file.to_owned(), done);
                }
                file = name;
            }
            let was = old.get_mut(name).and_then(|was| {
                let i = was.binary_search_by_key(&line, |(l, _)| *l).ok()?;
                was[i].1.take()
            });
            match was.filter(|was| was.0 == text) {
                Some(cached) => {
                    out.push(cached.1.clone());
                    kept.push((line, Some(cached)));
                }
                None => {
                    // A placeholder, replaced once the missing documents are parsed.
                    missing.push((out.len(), kept.len()));
                    out.push(Parsed::Other(Vec::new()));
                    kept.push((line, None));
                }
            }
        }
        if !kept.is_empty() {
            self.files.insert(file.to_owned(), kept);
        }
        drop(old);
        self.last = CacheUse {
            reused: docs.len() - missing.len(),
            parsed: missing.len(),
        };
        let to_parse: Vec<_> = missing.iter().map(|&(at, _)| docs[at]).collect();
        for (parsed, (at, slot)) in parse_documents(&to_parse).into_iter().zip(missing) {
            let (name, _, text) = docs[at];
            if let Some(kept) = self.files.get_mut(name) {
                kept[slot].1 = Some(Box::new((text.to_owned(), parsed.clone())));
            }
            out[at] = parsed;
        }
        out
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
#[derive(Clone)]
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
#[derive(Clone)]
struct Checked<T> {
    src: Source,
    result: Option<(T, ObjectId, bool)>,
    diags: Vec<Diagnostic>,
}

fn parse_document(file: &str, start: usize, doc: &str) -> Parsed {
    parse_plain(file, start, doc).unwrap_or_else(|| parse_general(file, start, doc))
}

/// Any document: parsed into a `serde_yaml::Value` for its kind, then into its resource.
fn parse_general(file: &str, start: usize, doc: &str) -> Parsed {
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
        text: Arc::from(doc),
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
    match result {
        Ok(obj) => finish(src, kind, obj, unknown),
        Err(e) => {
            let line = src.line + e.location().map_or(0, |l| l.line().saturating_sub(1));
            Checked {
                diags: vec![file_error(&src.file, line, format!("{kind}: {e}"))],
                src,
                result: None,
            }
        }
    }
}

/// The checks of a deserialised resource: its name, its unknown fields (`unknown`), its CEL
/// rules; and the default namespace.
fn finish<T>(src: Source, kind: &str, mut obj: T, unknown: Vec<String>) -> Checked<T>
where
    T: kube::Resource + CelCheck,
{
    let mut diags = Vec::new();
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
    // An error of the object at `line` of the document (0: its first line).
    let error = |line: Option<usize>, field: String, reason: &str, message: String| Diagnostic {
        location: Some(Location {
            file: src.file.clone(),
            line: line.map_or(src.line, |l| src.line + l),
        }),
        object: Some(id.clone()),
        severity: Severity::Error,
        field,
        reason: reason.into(),
        message,
    };
    for path in unknown {
        diags.push(error(
            locate_key(&src.text, &path),
            path,
            "UnknownField",
            "unknown field".into(),
        ));
        ok = false;
    }
    for (field, message) in obj.cel_errors() {
        diags.push(error(locate_field(&src.text, &field, None), field, "Invalid", message));
        ok = false;
    }
    Checked {
        src,
        result: Some((obj, id, ok)),
        diags,
    }
}

/// The common document, parsed once and straight into its resource: block-style YAML whose
/// `apiVersion` and `kind` are plain words, that deserialises from its text without an error or
/// an unknown field, and whose mappings have no key twice. That is what [`parse_document`] makes
/// of it too, without the `serde_yaml::Value` it builds first (most of a load's time: building
/// the value's maps; bench/results/profiling.md, sixth pass). `None` for any other document,
/// which then takes the general path, so every error and its line are the general path's.
///
/// Why the result is the same: the typed parse reads the same libyaml events, and the general
/// path's typed parse from the value, when it succeeds, gives what the parse from the text gives
/// (it only refuses more: a number for a string field); what the value alone refuses is a key
/// written twice in one mapping, which [`plain_scan`] rules out conservatively, and anchors,
/// aliases and tags are left to the general path altogether. The [`block`] reader, which takes
/// most such documents before libyaml sees them, gives what serde_yaml's typed parse gives for
/// the forms it takes and leaves every other form to serde_yaml (its module says how).
fn parse_plain(file: &str, start: usize, doc: &str) -> Option<Parsed> {
    let node = block::read(doc);
    let (api_version, kind) = match &node {
        Some(node) => (node.string_at("apiVersion")?, node.string_at("kind")?),
        None => plain_scan(doc)?,
    };
    let node = node.as_ref();
    let src = || Source {
        file: file.to_owned(),
        line: start,
        text: Arc::from(doc),
    };
    Some(match (api_version, kind) {
        (API_VERSION, "Provider") => Parsed::Provider(check_plain(src(), "Provider", doc, node)?),
        (API_VERSION, "LLMRoute") => Parsed::LLMRoute(check_plain(src(), "LLMRoute", doc, node)?),
        (API_VERSION, "VirtualKey") => Parsed::VirtualKey(check_plain(src(), "VirtualKey", doc, node)?),
        (API_VERSION, "Budget") => Parsed::Budget(check_plain(src(), "Budget", doc, node)?),
        (API_VERSION, "LLMGateway") => Parsed::LLMGateway(check_plain(src(), "LLMGateway", doc, node)?),
        ("v1", "Secret") => Parsed::Secret(check_plain(src(), "Secret", doc, node)?),
        ("v1", "Namespace") => Parsed::Namespace(check_plain(src(), "Namespace", doc, node)?),
        _ => return None,
    })
}

/// [`check`] of a document that deserialises from its text cleanly; `None` when it does not.
///
/// The document is read from `node`, what [`block::read`] made of it, when that deserialises
/// (most do: a third of the instructions of a load went to libyaml before), else by serde_yaml
/// when [`plain_scan`] admits it; either way only a clean result is kept.
fn check_plain<T>(src: Source, kind: &str, doc: &str, node: Option<&block::Node<'_>>) -> Option<Checked<T>>
where
    T: DeserializeOwned + kube::Resource + CelCheck,
{
    let obj = node.and_then(|node| clean(node).ok().flatten()).or_else(|| {
        plain_scan(doc)?;
        clean(serde_yaml::Deserializer::from_str(doc)).ok().flatten()
    })?;
    Some(finish(src, kind, obj, Vec::new()))
}

/// The resource `de` gives, when it has no field the resource does not know (`None` then).
fn clean<'de, T, D>(de: D) -> Result<Option<T>, D::Error>
where
    T: DeserializeOwned,
    D: serde::Deserializer<'de>,
{
    let mut clean = true;
    let obj: T = serde_ignored::deserialize(de, |path| {
        clean &= is_type_field(&path.to_string());
    })?;
    Ok(clean.then_some(obj))
}

/// `(apiVersion, kind)` of a document that [`parse_plain`] may take: written in block style
/// (no flow mapping, no anchor, alias, tag, directive or complex key), every mapping key a plain
/// or simply quoted word that YAML reads as a string, no key twice in one mapping, and
/// `apiVersion` and `kind` top-level words on one line each. `None` for anything else; being
/// wrong in that direction costs only time.
///
/// Mappings are told apart by indentation, as YAML does: a key belongs to the mapping of the
/// nearest key above it at the same column, unless a line less indented, or a `- ` item at or
/// left of that column, came in between.
fn plain_scan(doc: &str) -> Option<(&str, &str)> {
    // (column, keys) of the open mappings, innermost last.
    let mut open: Vec<(usize, Vec<&str>)> = Vec::new();
    let (mut api_version, mut kind) = (None, None);
    // The column of the key whose block scalar (`|`, `>`) the lines below belong to.
    let mut block_scalar: Option<usize> = None;
    let mut lines = doc.lines().peekable();
    while let Some(line) = lines.next() {
        let content = line.trim_start_matches(' ');
        let mut column = line.len() - content.len();
        if let Some(parent) = block_scalar {
            if content.is_empty() || column > parent {
                continue;
            }
            block_scalar = None;
        }
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let mut rest = content;
        let mut item = false;
        while rest == "-" || rest.starts_with("- ") {
            // A sequence item: whatever mapping starts on this line is a new one.
            item = true;
            let after = rest[1..].trim_start_matches(' ');
            column += rest.len() - after.len();
            rest = after;
        }
        if rest.starts_with(['\t', '%', '?', '&', '*', '!', '{', '[', '|', '>', '@', '`']) || rest == "..." {
            // A tab, a directive, a complex key, an anchor, alias or tag, a flow collection, a
            // block scalar where a key or item starts, a document end.
            return None;
        }
        if item {
            let dash = line.len() - content.len();
            open.retain(|(c, _)| *c <= dash);
        } else {
            open.retain(|(c, _)| *c <= column);
        }
        if rest.is_empty() || rest.starts_with('#') {
            continue;
        }
        let Some((key, value)) = split_key(rest)? else {
            // A scalar item or the continuation of a scalar: no key on this line.
            continue;
        };
        match open.last_mut() {
            Some((c, keys)) if *c == column && !item => {
                if keys.contains(&key) {
                    return None;
                }
                keys.push(key);
            }
            _ => open.push((column, vec![key])),
        }
        let value = value.split(" #").next().unwrap_or("").trim_end_matches(' ');
        if value.starts_with(['&', '*', '!', '{', '[', '%', '@', '`']) {
            // An anchor, alias or tag; a flow collection (it may hold keys of its own).
            return None;
        }
        if value.starts_with(['|', '>']) {
            block_scalar = Some(column);
        }
        if value.starts_with(['"', '\'']) && !closes_on_its_line(value) {
            // A quoted scalar over several lines: its lines could look like keys of any column.
            return None;
        }
        if column == 0 && !item && (key == "apiVersion" || key == "kind") {
            // Its value must be a word on this line alone: the next line, if any, starts a key of
            // its own (a more indented or blank one could continue the word).
            let word = plain_word(value)?;
            if lines
                .peek()
                .is_some_and(|next| next.is_empty() || next.starts_with([' ', '\t']))
            {
                return None;
            }
            if key == "kind" {
                kind = Some(word);
            } else {
                api_version = Some(word);
            }
        }
    }
    Some((api_version?, kind?))
}

/// `Some(Some((key, value)))` for a line (past its indentation and `- `) that is a mapping key
/// YAML reads as the string `key`; `Some(None)` for a line that holds no key (`: ` appears
/// nowhere in it outside a quoted word); `None` when it cannot tell.
fn split_key(rest: &str) -> Option<Option<(&str, &str)>> {
    let (key, after) = if let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let end = rest[1..].find(quote)? + 1;
        let key = &rest[1..end];
        if key.contains(['\\', '"', '\'']) {
            return None;
        }
        (key, &rest[end + 1..])
    } else {
        match rest.find(':') {
            Some(i) if rest[i + 1..].is_empty() || rest[i + 1..].starts_with(' ') => (&rest[..i], &rest[i..]),
            // `:` only inside words (`a:b`, a URL): not a key, unless `: ` comes later.
            _ if !rest.contains(": ") && !rest.ends_with(':') => return Some(None),
            _ => return None,
        }
    };
    let Some(value) = after.strip_prefix(':') else {
        // A quoted scalar, not a key: fine when nothing after it could be one.
        return (!after.contains(':')).then_some(None);
    };
    if !value.is_empty() && !value.starts_with(' ') {
        return None;
    }
    let quoted = rest.starts_with(['"', '\'']);
    if !quoted && plain_word(key).is_none() {
        return None;
    }
    Some(Some((key, value.trim_start_matches(' '))))
}

/// Whether a quoted scalar (`value` starts with its quote) ends on this line.
fn closes_on_its_line(value: &str) -> bool {
    let quote = if value.starts_with('"') { '"' } else { '\'' };
    let mut escaped = false;
    for c in value.chars().skip(1) {
        match c {
            '\\' if quote == '"' && !escaped => escaped = true,
            c if c == quote && !escaped => return true,
            _ => escaped = false,
        }
    }
    false
}

/// `word` when YAML reads it, written plain, as the string `word`: a letter or `_` first, then
/// letters, digits and `_ . / -`, and not a boolean or null.
fn plain_word(word: &str) -> Option<&str> {
    let first = word.chars().next()?;
    let ok = (first.is_ascii_alphabetic() || first == '_')
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
        && !["true", "false", "null", "yes", "no", "on", "off", "y", "n"]
            .iter()
            .any(|w| word.eq_ignore_ascii_case(w));
    ok.then_some(word)
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

/// The OpenAPI schema of `T`'s CRD (its first version), as JSON.
fn crd_schema<T: kube::CustomResourceExt>() -> Option<serde_json::Value> {
    T::crd()
        .spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| serde_json::to_value(s).ok())
}

macro_rules! cel_check {
    ($($t:ty),*) => {$(
        impl CelCheck for $t {
            fn cel_errors(&self) -> Vec<(String, String)> {
                thread_local! {
                    // `validate_cel()` generates the whole CRD and compiles its rules on every
                    // call: ~3 ms per document, 36 s to load 10,000 VirtualKeys (bench/results).
                    // The same schema and rules, compiled once per type and thread.
                    static CEL: Option<CelRules> = crd_schema::<$t>().map(|s| CelRules::new(&s));
                }
                CEL.with(|cel| match cel {
                    Some(rules) => rules.check(self),
                    None => cel_messages("", self.validate_cel()),
                })
            }
        }
    )*};
}
cel_check!(Provider, LLMRoute, VirtualKey, TeamBudget, LLMGateway);

/// A type's compiled CEL rules, with the schema pruned to the nodes that lead to them.
struct CelRules {
    validator: kube::core::cel::Validator,
    /// `None`: the schema has no rules at all.
    root: Option<RuleNode>,
    /// An LLMRoute's spec rules, checked natively, with the spec's defaults, its backends'
    /// defaults and what lies below the spec with rules of its own.
    spec: Option<(NativeSpec, Defaults, Defaults, Option<RuleNode>)>,
}

impl CelRules {
    fn new(schema: &serde_json::Value) -> Self {
        use kube::core::cel::compile_schema;
        let full = compile_schema(schema);
        let spec = NativeSpec::of(&full).and_then(|native| {
            // The spec's rules are checked natively: what is below them still goes to kube-cel.
            let mut spec = compile_schema(schema).properties.remove("spec")?;
            let defaults = spec
                .properties
                .iter()
                .filter_map(|(name, child)| Some((name.clone(), child.default.clone()?)))
                .collect();
            let item_defaults = spec
                .properties
                .get("backends")
                .and_then(|b| b.items.as_ref())
                .map(|items| {
                    items
                        .properties
                        .iter()
                        .filter_map(|(name, child)| Some((name.clone(), child.default.clone()?)))
                        .collect()
                })
                .unwrap_or_default();
            spec.validations.clear();
            Some((native, defaults, item_defaults, RuleNode::prune(spec)))
        });
        let root = RuleNode::prune(full);
        // Only when the spec is the one place the root leads to rules.
        let spec = spec.filter(|_| {
            root.as_ref().is_some_and(|r| {
                r.rules.is_none()
                    && r.additional.is_none()
                    && r.items.is_none()
                    && r.branches.is_empty()
                    && r.properties.len() == 1
                    && r.properties[0].0 == "spec"
                    && r.properties[0].2.is_none()
            })
        });
        Self {
            validator: kube::core::cel::Validator::new(),
            root,
            spec,
        }
    }

    /// `(field, message)` of every failed rule of `object`.
    fn check<T: serde::Serialize>(&self, object: &T) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        let (Some(root), Ok(value)) = (&self.root, serde_json::to_value(object)) else {
            return errors;
        };
        if let (Some((native, defaults, item_defaults, below)), Some(spec)) = (&self.spec, value.get("spec")) {
            if native.passes(spec, defaults, item_defaults) == Some(true) {
                if let Some(below) = below {
                    cel_walk(&self.validator, below, spec, "spec".to_owned(), &mut errors);
                }
                return errors;
            }
        }
        cel_walk(&self.validator, root, &value, String::new(), &mut errors);
        errors
    }
}

/// An LLMRoute's four spec rules, checked without CEL: kube-cel converts the spec (and each of
/// its subtrees again) to CEL values and builds a context per rule, ~330 k instructions per
/// route, for rules that every sound route passes. [`NativeSpec::passes`] answers only when it
/// is sure that all four pass, on the same defaulted value kube-cel reads; a failure, or a value
/// it does not expect, goes to kube-cel, so every message is kube-cel's. It is used only while
/// the spec's rules are exactly these (a test keeps them in step).
struct NativeSpec;

/// The rules [`NativeSpec`] checks, as `LLMRouteSpec` declares them.
const ROUTE_SPEC_RULES: [&str; 4] = [
    "self.backends.exists(b, b.weight > 0)",
    "self.backends.all(b, b.name == '' || self.backends.exists_one(c, c.name == b.name))",
    "!has(self.fallbacks) || self.fallbacks.all(f, f.route != self.model && (!has(self.aliases) || !(f.route in self.aliases)))",
    "!has(self.aliases) || !(self.model in self.aliases)",
];

type Defaults = BTreeMap<String, serde_json::Value>;

/// A field of a defaulted object: its value, else its schema default.
fn field<'a>(
    obj: &'a serde_json::Map<String, serde_json::Value>,
    name: &str,
    defaults: &'a Defaults,
) -> Option<&'a serde_json::Value> {
    obj.get(name).or_else(|| defaults.get(name))
}

impl NativeSpec {
    /// `Some` when the schema's spec has exactly the route's rules, with no message expression.
    fn of(schema: &kube::core::cel::CompiledSchema) -> Option<Self> {
        let spec = schema.properties.get("spec")?;
        let rules: Vec<&str> = spec
            .validations
            .iter()
            .map(|v| match v {
                Ok(c) if c.message_program.is_none() && !c.is_transition_rule => Some(c.rule.rule.as_str()),
                _ => None,
            })
            .collect::<Option<_>>()?;
        (rules == ROUTE_SPEC_RULES).then_some(Self)
    }

    /// `Some(true)` when all four rules pass on `spec` with its defaults; `None` when unsure.
    fn passes(&self, spec: &serde_json::Value, defaults: &Defaults, item_defaults: &Defaults) -> Option<bool> {
        let spec = spec.as_object()?;
        let model = field(spec, "model", defaults)?.as_str()?;
        let mut names = Vec::new();
        let mut positive = false;
        for b in field(spec, "backends", defaults)?.as_array()? {
            let b = b.as_object()?;
            positive |= field(b, "weight", item_defaults)?.as_u64()? > 0;
            let name = field(b, "name", item_defaults)?.as_str()?;
            if !name.is_empty() && names.contains(&name) {
                return None;
            }
            names.push(name);
        }
        if !positive {
            return None;
        }
        let aliases: Option<Vec<&str>> = match field(spec, "aliases", defaults) {
            None => None,
            Some(a) => Some(
                a.as_array()?
                    .iter()
                    .map(serde_json::Value::as_str)
                    .collect::<Option<_>>()?,
            ),
        };
        if aliases.as_ref().is_some_and(|a| a.contains(&model)) {
            return None;
        }
        if let Some(fallbacks) = field(spec, "fallbacks", defaults) {
            for f in fallbacks.as_array()? {
                let route = f.as_object()?.get("route")?.as_str()?;
                if route == model || aliases.as_ref().is_some_and(|a| a.contains(&route)) {
                    return None;
                }
            }
        }
        Some(true)
    }
}

/// A schema node on the way to CEL rules: kube-cel's walk (`validate_compiled`) converts the
/// value of every node it passes and copies the object to default it, rules or not, so
/// [`cel_walk`] enters kube-cel only at the topmost nodes with rules. The subtrees without any
/// rule are dropped here, once per type, so that a VirtualKey's walk goes `spec` -> `budget` and
/// no further (its metadata, limits and labels hold no rules).
struct RuleNode {
    /// The node itself when it has rules: kube-cel checks it and everything below it.
    rules: Option<kube::core::cel::CompiledSchema>,
    /// Properties with rules below, with the default that stands in for an absent one.
    properties: Vec<(String, RuleNode, Option<serde_json::Value>)>,
    /// Map values (every key not a declared property, `all_properties`) with rules below.
    additional: Option<Box<RuleNode>>,
    /// Every declared property name, to tell map values from properties.
    all_properties: std::collections::HashSet<String>,
    /// Array items with rules below.
    items: Option<Box<RuleNode>>,
    /// allOf, oneOf and anyOf branches with rules below, in that order.
    branches: Vec<RuleNode>,
}

impl RuleNode {
    /// The node, or `None` when neither it nor anything below it has a rule.
    fn prune(node: kube::core::cel::CompiledSchema) -> Option<Self> {
        if !node.validations.is_empty() {
            return Some(Self {
                rules: Some(node),
                properties: Vec::new(),
                additional: None,
                all_properties: std::collections::HashSet::new(),
                items: None,
                branches: Vec::new(),
            });
        }
        let mut all_properties: std::collections::HashSet<String> = node.properties.keys().cloned().collect();
        // By name, so that errors of several properties come out in one order (kube-cel's map
        // iterates in a random one).
        let mut properties: Vec<_> = node
            .properties
            .into_iter()
            .filter_map(|(name, child)| {
                let default = child.default.clone();
                Self::prune(child).map(|c| (name, c, default))
            })
            .collect();
        properties.sort_by(|a, b| a.0.cmp(&b.0));
        let additional = match (node.preserve_unknown_fields, node.additional_properties) {
            (false, Some(additional)) => Self::prune(*additional).map(Box::new),
            _ => None,
        };
        if additional.is_none() {
            all_properties.clear();
        }
        let items = node.items.and_then(|i| Self::prune(*i)).map(Box::new);
        let branches: Vec<_> = node
            .all_of
            .into_iter()
            .chain(node.one_of)
            .chain(node.any_of)
            .filter_map(Self::prune)
            .collect();
        let leads_to_rules = !properties.is_empty() || additional.is_some() || items.is_some() || !branches.is_empty();
        leads_to_rules.then_some(Self {
            rules: None,
            properties,
            additional,
            all_properties,
            items,
            branches,
        })
    }
}

/// kube-cel's walk, entered only where rules are. This descends the schema as kube-cel does
/// (properties, with their defaults standing in for absent ones; array items; map values;
/// allOf/oneOf/anyOf branches) without converting anything, and hands kube-cel each topmost node
/// that has rules, with its value, so every rule still runs on the same value with the same
/// defaults; field paths are re-rooted.
fn cel_walk(
    validator: &kube::core::cel::Validator,
    node: &RuleNode,
    value: &serde_json::Value,
    path: String,
    out: &mut Vec<(String, String)>,
) {
    if let Some(rules) = &node.rules {
        out.extend(cel_messages(&path, validator.validate_compiled(rules, value, None)));
        return;
    }
    if let Some(object) = value.as_object() {
        for (name, child, default) in &node.properties {
            if let Some(v) = object.get(name).or(default.as_ref()) {
                cel_walk(validator, child, v, join_field(&path, name), out);
            }
        }
        if let Some(additional) = &node.additional {
            for (name, v) in object.iter().filter(|(k, _)| !node.all_properties.contains(*k)) {
                cel_walk(validator, additional, v, join_field(&path, name), out);
            }
        }
    }
    if let (Some(items), Some(array)) = (&node.items, value.as_array()) {
        for (i, v) in array.iter().enumerate() {
            cel_walk(validator, items, v, format!("{path}[{i}]"), out);
        }
    }
    for branch in &node.branches {
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
    fn routes_spec_rules_pass_natively_only_where_cel_passes() {
        // The native check is on for LLMRoute (its rules are still ROUTE_SPEC_RULES) and says
        // what kube-cel's whole walk says, passing or failing, fallbacks and aliases included.
        let on = crd_schema::<LLMRoute>().map(|s| CelRules::new(&s).spec.is_some());
        assert_eq!(on, Some(true), "LLMRouteSpec's rules changed: update ROUTE_SPEC_RULES");
        let specs = [
            "backends:\n  - {providerRef: {name: p}, model: x}\n",
            "backends:\n  - {providerRef: {name: p}, model: x, weight: 0}\n  - {providerRef: {name: p}, model: y}\n",
            "backends:\n  - {providerRef: {name: p}, model: x, weight: 0}\n",
            "backends:\n  - {name: a, providerRef: {name: p}, model: x}\n  - {name: b, providerRef: {name: p}, model: y}\n  - {providerRef: {name: p}, model: z}\n  - {providerRef: {name: p}, model: w}\n",
            "backends:\n  - {name: a, providerRef: {name: p}, model: x}\n  - {name: a, providerRef: {name: p}, model: y}\n",
            "aliases: [n, o]\nbackends:\n  - {providerRef: {name: p}, model: x}\n",
            "aliases: [n, m]\nbackends:\n  - {providerRef: {name: p}, model: x}\n",
            "aliases: [n]\nfallbacks: [{route: other}]\nbackends:\n  - {providerRef: {name: p}, model: x}\n",
            "aliases: [n]\nfallbacks: [{route: n}]\nbackends:\n  - {providerRef: {name: p}, model: x}\n",
            "fallbacks: [{route: m}]\nbackends:\n  - {providerRef: {name: p}, model: x}\n",
            "hedging: {enabled: true}\nbackends:\n  - {providerRef: {name: p}, model: x}\n",
            "rules:\n  - name: empty\n    action: {}\nbackends:\n  - {providerRef: {name: p}, model: x}\n",
        ];
        for spec in specs {
            let indented: String = spec.lines().flat_map(|l| ["  ", l, "\n"]).collect();
            let route: LLMRoute = serde_yaml::from_str(&format!(
                "apiVersion: switchyard.dev/v1alpha1\nkind: LLMRoute\nmetadata:\n  name: r\nspec:\n  model: m\n{indented}"
            ))
            .unwrap_or_else(|e| panic!("{e}"));
            let mut ours = route.cel_errors();
            let mut theirs = cel_messages("", route.validate_cel());
            ours.sort();
            theirs.sort();
            assert_eq!(ours, theirs, "{spec}");
        }
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
    fn a_cached_reload_parses_only_what_changed_and_loads_what_a_fresh_load_does() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let key = |i: usize, rpm: usize| {
            format!("apiVersion: switchyard.dev/v1alpha1\nkind: VirtualKey\nmetadata:\n  name: k{i}\nspec:\n  secretRef:\n    name: s{i}\n  limits:\n    rpm: {rpm}\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: s{i}\nstringData:\n  key: ${{KEY_{i}}}\n---\n")
        };
        let route = "apiVersion: switchyard.dev/v1alpha1\nkind: Provider\nmetadata:\n  name: p\nspec:\n  type: openai\n  baseUrl: http://127.0.0.1:9/v1\n---\napiVersion: switchyard.dev/v1alpha1\nkind: LLMRoute\nmetadata:\n  name: r\nspec:\n  model: m\n  backends: [{providerRef: {name: p}, model: x}]\n";
        let keys = |rpm_of_7: usize| {
            (0..200)
                .map(|i| key(i, if i == 7 { rpm_of_7 } else { 10 }))
                .collect::<String>()
        };
        let write =
            |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap_or_else(|e| panic!("{e}"));
        write("a.yaml", &keys(10));
        write("b.yaml", route);
        let env = |v: &str| (v != "KEY_3").then(|| format!("sk-{v}"));
        let mut cache = ParseCache::default();
        // Each step: the cached load gives exactly what a fresh load of the folder gives.
        let mut step = |want: CacheUse| {
            let (cached, cached_diags) = Manifests::load_dir_cached(dir.path(), &env, &mut cache);
            let (fresh, fresh_diags) = Manifests::load_dir(dir.path(), &env);
            assert_eq!(cache.last(), want);
            assert_eq!(cached_diags, fresh_diags);
            let json = |m: &Manifests| {
                serde_json::to_string(&(&m.providers, &m.routes, &m.keys)).unwrap_or_else(|e| panic!("{e}"))
            };
            assert_eq!(json(&cached), json(&fresh));
            assert_eq!(cached.secrets, fresh.secrets);
            assert_eq!(cached.sources, fresh.sources);
            (cached, cached_diags)
        };
        let (first, diags) = step(CacheUse { reused: 0, parsed: 402 });
        assert_eq!(first.keys.len(), 200);
        // The Provider has no credentials: a diagnostic on its `spec` line.
        let lines: Vec<_> = diags
            .iter()
            .filter_map(|d| d.location.as_ref().map(|l| l.line))
            .collect();
        assert_eq!(lines, vec![5], "{diags:?}");
        // Nothing changed (an editor's save): nothing parsed.
        step(CacheUse { reused: 402, parsed: 0 });
        // One value changed in place: that document alone.
        write("a.yaml", &keys(99));
        let (edited, _) = step(CacheUse { reused: 401, parsed: 1 });
        let rpm = |m: &Manifests| {
            serde_json::to_value(&m.keys[7]).unwrap_or_else(|e| panic!("{e}"))["spec"]["limits"]["rpm"].clone()
        };
        assert_eq!(rpm(&edited), 99);
        // A broken document in front of the route moves it down: the moved documents are parsed
        // again, so the errors and sources name the lines they are on now.
        write("b.yaml", &format!("kind: [unclosed\n---\n{route}"));
        let (_, diags) = step(CacheUse { reused: 400, parsed: 3 });
        let lines: Vec<_> = diags
            .iter()
            .filter_map(|d| d.location.as_ref().map(|l| l.line))
            .collect();
        assert_eq!(lines, vec![2, 7], "{diags:?}");
        // The same text as an earlier load, after a different one: parsed again, not confused.
        write("a.yaml", &keys(10));
        let (back, _) = step(CacheUse { reused: 402, parsed: 1 });
        assert_eq!(rpm(&back), 10);
        // A file removed: its resources are gone, and it is not kept.
        std::fs::remove_file(dir.path().join("b.yaml")).unwrap_or_else(|e| panic!("{e}"));
        let (gone, _) = step(CacheUse { reused: 400, parsed: 0 });
        assert!(gone.routes.is_empty() && gone.providers.is_empty());
        write("b.yaml", route);
        step(CacheUse { reused: 400, parsed: 2 });
    }

    /// What a parse gave, to compare two: the resource as JSON, its id, whether it passed, its
    /// source and its diagnostics.
    fn outcome(parsed: Parsed) -> String {
        fn of<T: serde::Serialize>(c: Checked<T>) -> String {
            let result = c
                .result
                .map(|(obj, id, ok)| (serde_json::to_string(&obj).unwrap_or_else(|e| panic!("{e}")), id, ok));
            format!("{result:?} {:?} {:?}", c.src, c.diags)
        }
        match parsed {
            Parsed::Provider(c) => format!("Provider {}", of(c)),
            Parsed::LLMRoute(c) => format!("LLMRoute {}", of(c)),
            Parsed::VirtualKey(c) => format!("VirtualKey {}", of(c)),
            Parsed::Budget(c) => format!("Budget {}", of(c)),
            Parsed::LLMGateway(c) => format!("LLMGateway {}", of(c)),
            Parsed::Secret(c) => format!("Secret {}", of(c)),
            Parsed::Namespace(c) => format!("Namespace {}", of(c)),
            Parsed::Other(d) => format!("Other {d:?}"),
        }
    }

    #[test]
    fn the_plain_path_gives_what_the_general_path_gives() {
        // Every document of the repository's manifests (examples, fixtures, charts' test values)
        // that the plain path takes comes out as the general path makes it.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut paths = Vec::new();
        let mut diags = Vec::new();
        for dir in ["examples", "crates", "tests", "bench", "docs"] {
            collect_yaml_files(&root.join(dir), &mut paths, &mut diags);
        }
        let (mut taken, mut read) = (0, 0);
        for path in &paths {
            let Ok(text) = std::fs::read_to_string(path) else {
                continue;
            };
            let file = path.display().to_string();
            for (line, doc) in split_documents(&text) {
                if let Some(plain) = parse_plain(&file, line, doc) {
                    taken += 1;
                    read += usize::from(block::read(doc).is_some());
                    assert_eq!(
                        outcome(plain),
                        outcome(parse_general(&file, line, doc)),
                        "{file}:{line}"
                    );
                }
            }
        }
        assert!(taken > 50, "only {taken} documents took the plain path");
        // Most of them through the block reader rather than serde_yaml.
        assert!(
            read > 50,
            "only {read} of {taken} documents were read by the block reader"
        );
    }

    #[test]
    fn the_block_reader_gives_what_the_general_path_gives() {
        // Resources whose scalars each path could read its own way: numbers, booleans and words
        // that look like either for string fields, nulls, comments, CRLF, a list at its key's
        // column. Each must be read by the block reader and come out as the general path makes it.
        let docs = [
            "apiVersion: switchyard.dev/v1alpha1\nkind: VirtualKey\nmetadata:\n  name: k  # the key\n  labels:\n    tier: 1\n    beta: \"true\"\n    zone: 'on'\n    ver: 1.5\nspec:\n  secretRef:\n    name: s\n  labels:\n    team: 007s\n    cost: 30s\n  limits:\n    rpm: 10\n    tpm: 0\n",
            "apiVersion: v1\r\nkind: Secret\r\nmetadata:\r\n  name: s\r\n  namespace: team-a\r\nstringData:\r\n  key: 12345\r\n  other: sk-1 # not part of it\r\n  empty: ''\r\n",
            "apiVersion: switchyard.dev/v1alpha1\nkind: LLMRoute\nmetadata:\n  name: r\nspec:\n  model: gpt-4o\n  aliases:\n  - '4o'\n  - gpt4\n  backends:\n  - providerRef:\n      name: p\n    model: 4.1\n    weight: 3\n  -   providerRef:\n        name: q\n      model: '0.5'\n",
            "apiVersion: switchyard.dev/v1alpha1\nkind: Provider\nmetadata:\n  name: p\nspec:\n  type: openai\n  baseUrl: http://10.0.0.1:8080/v1\n  credentials:\n    secretRef:\n      name: s\n      key: apiKey\n",
        ];
        for doc in docs {
            assert!(block::read(doc).is_some(), "{doc}");
            let plain = parse_plain("f.yaml", 3, doc).unwrap_or_else(|| panic!("not taken: {doc}"));
            assert_eq!(outcome(plain), outcome(parse_general("f.yaml", 3, doc)), "{doc}");
        }
        // What the block reader cannot give as serde_yaml would (a null read as a string, a
        // type error), it leaves to serde_yaml, and the errors and their lines are the general
        // path's.
        for doc in [
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  key:\n",
            "apiVersion: switchyard.dev/v1alpha1\nkind: VirtualKey\nmetadata:\n  name: k\nspec:\n  secretRef:\n    name: s\n  limits:\n    rpm: many\n",
            "apiVersion: switchyard.dev/v1alpha1\nkind: VirtualKey\nmetadata:\n  name: k\nspec:\n  secretRef:\n    name: s\n  limitz:\n    rpm: 1\n",
            "apiVersion: switchyard.dev/v1alpha1\nkind: VirtualKey\nmetadata:\n  name: k\n  name: l\nspec:\n  secretRef:\n    name: s\n",
        ] {
            let taken = parse_plain("f.yaml", 3, doc).map(outcome);
            let general = outcome(parse_general("f.yaml", 3, doc));
            assert!(taken.is_none() || taken.as_ref() == Some(&general), "{doc}");
            assert_eq!(outcome(parse_document("f.yaml", 3, doc)), general, "{doc}");
        }
    }

    #[test]
    fn the_plain_path_leaves_what_it_cannot_vouch_for() {
        let head = "apiVersion: switchyard.dev/v1alpha1\nkind: VirtualKey\nmetadata:\n  name: k\n";
        let left = [
            // A key twice, at the top, in a nested map, in one list item.
            "spec:\n  blocked: false\nspec:\n  blocked: true\n",
            "spec:\n  labels:\n    a: x\n    b: y\n    a: z\n",
            "spec:\n  labels:\n    a: x\n    \"a\": z\n",
            "spec:\n  secretRef:\n    name: a\n    name: b\n",
            // Flow collections, anchors, aliases, tags, block scalars as keys' neighbours.
            "spec:\n  labels: {a: x, a: y}\n",
            "spec:\n  labels: &l\n    a: x\n",
            "spec:\n  labels: !!map\n    a: x\n",
            "spec:\n  labels:\n    a: \"x\n  y\"\n",
            "spec:\n  labels:\n    ? a\n    : x\n",
            // Keys YAML does not read as strings.
            "spec:\n  labels:\n    1: x\n    01: y\n",
            "spec:\n  labels:\n    true: x\n",
        ];
        for tail in left {
            let doc = format!("{head}{tail}");
            assert!(plain_scan(&doc).is_none(), "{doc}");
            assert!(block::read(&doc).is_none(), "{doc}");
        }
        let words = [
            "apiVersion: v1\nkind: Secret # a comment\n",
            "\"apiVersion\": v1\nkind: 'Secret'\n",
        ];
        assert_eq!(plain_scan(words[0]), Some(("v1", "Secret")));
        // A quoted kind is left to the general path.
        assert_eq!(plain_scan(words[1]), None);
        let kept = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n  labels:\n    a: x\nstringData:\n  a: |\n    a: 1\n    a: 2\n  b: x\n";
        assert_eq!(plain_scan(kept), Some(("v1", "Secret")));
        let items = "apiVersion: v1\nkind: X\nitems:\n- name: a\n  model: x\n- name: a\n  model: y\n-\n  name: a\n";
        assert_eq!(plain_scan(items), Some(("v1", "X")));
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
