//! Diagnostics: what is wrong, in which resource and field, and where it was written.

use std::fmt;

use serde::Serialize;

/// How bad a diagnostic is.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The resource (or the whole input, for parse errors) was left out.
    Error,
    /// Served, but probably not what was meant.
    Warning,
}

/// A resource, named the way `kubectl` names it.
#[derive(Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId {
    /// Kind (`LLMRoute`...).
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectId {
    /// A new id.
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// Where a resource or field was written.
#[derive(Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// File path as given.
    pub file: String,
    /// 1-based line.
    pub line: usize,
}

/// One finding of loading or compiling.
#[derive(Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Diagnostic {
    /// Where, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// The resource, when the finding is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectId>,
    /// Severity.
    pub severity: Severity,
    /// JSON path of the field (`spec.backends[1].providerRef.name`), or empty.
    pub field: String,
    /// Machine-readable reason, used in status conditions (`ProviderNotFound`...).
    pub reason: String,
    /// What is wrong, for people.
    pub message: String,
}

impl Diagnostic {
    /// An error about a resource field.
    pub fn error(object: &ObjectId, field: &str, reason: &str, message: impl Into<String>) -> Self {
        Self {
            location: None,
            object: Some(object.clone()),
            severity: Severity::Error,
            field: field.to_owned(),
            reason: reason.to_owned(),
            message: message.into(),
        }
    }

    /// A warning about a resource field.
    pub fn warning(object: &ObjectId, field: &str, reason: &str, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(object, field, reason, message)
        }
    }

    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    /// `file:line: Kind/name: field: message` (parts omitted when unknown).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(loc) = &self.location {
            write!(f, "{}:{}: ", loc.file, loc.line)?;
        }
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if let Some(obj) = &self.object {
            write!(f, "{obj}: ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}
