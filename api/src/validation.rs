//! Kubernetes-style validation of wk's API objects, with errors that name the field.
//!
//! Every check returns a list of [`FieldError`]s rather than stopping at the first, and
//! each error prints exactly as the Kubernetes API server words it:
//!
//! ```text
//! spec.replicas: Invalid value: -1: must be greater than or equal to 0
//! metadata.name: Required value: name or generateName is required
//! spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"
//! ```
//!
//! There is one function per served kind taking the `k8s-openapi` type
//! ([`validate_pod`], [`validate_deployment`], ...), built from shared pieces that are
//! public too: [`validate_object_meta`], [`validate_pod_spec`],
//! [`validate_label_selector`], and string checks such as [`is_dns1123_label`] and
//! [`qualified_name_errors`] (which return Kubernetes' messages).
//!
//! The rules follow Kubernetes' `pkg/apis/*/validation` on objects *after* defaulting:
//! an absent optional field stands for its default (a pod's `restartPolicy` is `Always`,
//! a port's `protocol` is `TCP`), so it is never reported as missing. Where wk departs
//! from Kubernetes it says so at the check; the main ones are that `runtimeClassName`
//! must be `wasm` or `oci`, and that values which Kubernetes prints as Go structs are
//! printed as JSON or in Kubernetes' own string forms.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetUpdateStrategy, Deployment, DeploymentStrategy, ReplicaSet,
};
use k8s_openapi::api::batch::v1::{CronJob, Job, JobSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, EndpointAddress, EndpointPort, Endpoints, EnvVar, Event,
    ExecAction, GRPCAction, HTTPGetAction, Lifecycle, Namespace, Node, Pod, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, Secret, Service, ServiceAccount, ServicePort,
    ServiceSpec, SleepAction, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector as K8sLabelSelector, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::quantity::{Quantity, QuantityError};
use crate::selector::LabelSelector;

// ---------------------------------------------------------------------------------------
// Field paths and errors
// ---------------------------------------------------------------------------------------

/// A path to a field, printed as Kubernetes prints it: `spec.containers[0].ports[1].name`,
/// `metadata.labels[app]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FieldPath(String);

impl FieldPath {
    /// A path starting at `root` (`"metadata"`, `"spec"`); `""` is the object itself.
    pub fn new(root: &str) -> FieldPath {
        FieldPath(root.to_owned())
    }

    /// The path of a named child field.
    pub fn child(&self, name: &str) -> FieldPath {
        if self.0.is_empty() {
            FieldPath(name.to_owned())
        } else {
            FieldPath(format!("{}.{name}", self.0))
        }
    }

    /// The path of a list element.
    pub fn index(&self, i: usize) -> FieldPath {
        FieldPath(format!("{}[{i}]", self.0))
    }

    /// The path of a map entry.
    pub fn key(&self, key: &str) -> FieldPath {
        FieldPath(format!("{}[{key}]", self.0))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&FieldPath> for String {
    fn from(p: &FieldPath) -> String {
        p.0.clone()
    }
}

impl From<FieldPath> for String {
    fn from(p: FieldPath) -> String {
        p.0
    }
}

/// The kind of a [`FieldError`], matching Kubernetes' `field.ErrorType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldErrorKind {
    /// A required field is missing.
    Required,
    /// A value is malformed or out of range.
    Invalid,
    /// A value is not one of an enumerated set.
    NotSupported,
    /// A value that must be unique appears twice.
    Duplicate,
    /// A value is longer than allowed.
    TooLong,
    /// A field may not be set (here, or together with another).
    Forbidden,
    /// A value refers to something that does not exist (a volume mount naming no volume).
    NotFound,
}

impl FieldErrorKind {
    /// Kubernetes' `CauseType` for a `Status` cause (`FieldValueInvalid`).
    pub fn reason(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::NotFound => "FieldValueNotFound",
        }
    }

    /// The words that start the message (`Invalid value`).
    pub fn as_str(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Invalid => "Invalid value",
            FieldErrorKind::NotSupported => "Unsupported value",
            FieldErrorKind::Duplicate => "Duplicate value",
            FieldErrorKind::TooLong => "Too long",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::NotFound => "Not found",
        }
    }

    /// Whether Kubernetes prints the bad value for this kind.
    fn shows_value(self) -> bool {
        !matches!(
            self,
            FieldErrorKind::Required | FieldErrorKind::Forbidden | FieldErrorKind::TooLong
        )
    }
}

impl fmt::Display for FieldErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One validation error, printed as `<field>: <kind>[: <value>][: <detail>]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field path (`spec.replicas`).
    pub field: String,
    /// What is wrong.
    pub kind: FieldErrorKind,
    /// The bad value as printed (`-1`, `"Sometimes"`), or `None` to print none.
    pub value: Option<String>,
    /// The explanation; empty for none.
    pub detail: String,
}

impl FieldError {
    /// `<field>: Required value[: <detail>]`.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Required,
            value: None,
            detail: detail.into(),
        }
    }

    /// `<field>: Forbidden: <detail>`.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Forbidden,
            value: None,
            detail: detail.into(),
        }
    }

    /// `<field>: Invalid value: <value>: <detail>`.
    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<BadValue>,
        detail: impl Into<String>,
    ) -> FieldError {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Invalid,
            value: Some(value.into().0),
            detail: detail.into(),
        }
    }

    /// `<field>: Unsupported value: <value>: supported values: "a", "b"`.
    pub fn not_supported(
        field: impl Into<String>,
        value: impl Into<BadValue>,
        supported: &[&str],
    ) -> FieldError {
        let detail = if supported.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
            format!("supported values: {}", quoted.join(", "))
        };
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::NotSupported,
            value: Some(value.into().0),
            detail,
        }
    }

    /// `<field>: Duplicate value: <value>`.
    pub fn duplicate(field: impl Into<String>, value: impl Into<BadValue>) -> FieldError {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Duplicate,
            value: Some(value.into().0),
            detail: String::new(),
        }
    }

    /// `<field>: Not found: <value>`.
    pub fn not_found(field: impl Into<String>, value: impl Into<BadValue>) -> FieldError {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::NotFound,
            value: Some(value.into().0),
            detail: String::new(),
        }
    }

    /// `<field>: Too long: may not be more than <max> bytes`.
    pub fn too_long(field: impl Into<String>, max_bytes: usize) -> FieldError {
        let unit = if max_bytes == 1 { "byte" } else { "bytes" };
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::TooLong,
            value: None,
            detail: format!("may not be more than {max_bytes} {unit}"),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.kind)?;
        if let Some(value) = self.value.as_ref().filter(|_| self.kind.shows_value()) {
            write!(f, ": {value}")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

impl std::error::Error for FieldError {}

/// A bad value rendered as Kubernetes renders it: numbers and booleans bare, strings
/// quoted Go-style. [`BadValue::raw`] takes an already rendered form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadValue(String);

impl BadValue {
    /// A value printed exactly as given (a map, a JSON object).
    pub fn raw(rendered: impl Into<String>) -> BadValue {
        BadValue(rendered.into())
    }
}

macro_rules! bare_bad_value {
    ($($t:ty),*) => {
        $(impl From<$t> for BadValue {
            fn from(v: $t) -> BadValue {
                BadValue(v.to_string())
            }
        })*
    };
}
bare_bad_value!(i32, i64, u16, u32, u64, usize, bool);

impl From<&str> for BadValue {
    fn from(s: &str) -> BadValue {
        BadValue(go_quote(s))
    }
}

impl From<&String> for BadValue {
    fn from(s: &String) -> BadValue {
        BadValue(go_quote(s))
    }
}

impl From<String> for BadValue {
    fn from(s: String) -> BadValue {
        BadValue(go_quote(&s))
    }
}

impl From<&IntOrString> for BadValue {
    fn from(v: &IntOrString) -> BadValue {
        match v {
            IntOrString::Int(i) => BadValue::from(*i),
            IntOrString::String(s) => BadValue::from(s),
        }
    }
}

/// Quotes like Go's `strconv.Quote`, as Kubernetes' `%q` does.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A string map as Go's `%#v` prints it: `map[string]string{"a":"b", "c":"d"}`.
fn go_string_map(map: Option<&BTreeMap<String, String>>) -> String {
    match map {
        None => "map[string]string(nil)".to_owned(),
        Some(m) => {
            let entries: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}:{}", go_quote(k), go_quote(v)))
                .collect();
            format!("map[string]string{{{}}}", entries.join(", "))
        }
    }
}

/// A structured label selector as JSON (Kubernetes prints a Go struct here).
fn selector_value(sel: &K8sLabelSelector) -> BadValue {
    BadValue::raw(serde_json::to_string(sel).unwrap_or_default())
}

// ---------------------------------------------------------------------------------------
// String checks (k8s.io/apimachinery/pkg/util/validation), with Kubernetes' messages
// ---------------------------------------------------------------------------------------

const IS_NEGATIVE: &str = "must be greater than or equal to 0";
const AT_LEAST_ONE: &str = "must be greater than or equal to 1";
const POSITIVE: &str = "must be greater than 0";
const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";
const INVALID_IP: &str = "must be a valid IP address (e.g. 10.9.8.7 or 2001:db8::ffff)";
const INVALID_CIDR: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const ENV_VAR_NAME_MSG: &str = "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')";
const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";
const PERCENT_MSG: &str = "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')";
const QUANTITY_MSG: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

fn max_len_error(max: usize) -> String {
    format!("must be no more than {max} characters")
}

/// Whether `s` is non-empty, starts and ends with an `edge` byte and has only `inner` bytes.
fn is_run(s: &str, edge: fn(u8) -> bool, inner: fn(u8) -> bool) -> bool {
    let b = s.as_bytes();
    !b.is_empty() && edge(b[0]) && edge(b[b.len() - 1]) && b.iter().all(|&c| inner(c))
}

fn lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn matches_dns1123_label(s: &str) -> bool {
    is_run(s, lower_alnum, |c| lower_alnum(c) || c == b'-')
}

fn matches_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(matches_dns1123_label)
}

fn matches_qualified_name_part(s: &str) -> bool {
    is_run(
        s,
        |c| c.is_ascii_alphanumeric(),
        |c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'),
    )
}

/// Kubernetes' `IsDNS1123Label` messages: at most 63 characters of `[a-z0-9-]`, starting
/// and ending alphanumeric.
pub fn dns1123_label_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !matches_dns1123_label(value) {
        if matches_dns1123_subdomain(value) {
            errs.push("must not contain dots".to_owned());
        } else {
            errs.push(DNS1123_LABEL_MSG.to_owned());
        }
    }
    errs
}

/// Whether `value` is a DNS-1123 label (`my-name`).
pub fn is_dns1123_label(value: &str) -> bool {
    dns1123_label_errors(value).is_empty()
}

/// Kubernetes' `IsDNS1123Subdomain` messages: at most 253 characters of dot-separated
/// DNS-1123 labels.
pub fn dns1123_subdomain_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 253 {
        errs.push(max_len_error(253));
    }
    if !matches_dns1123_subdomain(value) {
        errs.push(DNS1123_SUBDOMAIN_MSG.to_owned());
    }
    errs
}

/// Whether `value` is a DNS-1123 subdomain (`example.com`).
pub fn is_dns1123_subdomain(value: &str) -> bool {
    dns1123_subdomain_errors(value).is_empty()
}

/// Kubernetes' `IsDNS1035Label` messages: a DNS-1123 label that starts with a letter.
pub fn dns1035_label_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !(matches_dns1123_label(value) && value.as_bytes()[0].is_ascii_lowercase()) {
        errs.push(DNS1035_LABEL_MSG.to_owned());
    }
    errs
}

/// Whether `value` is a DNS-1035 label (`my-name`, not `1-name`).
pub fn is_dns1035_label(value: &str) -> bool {
    dns1035_label_errors(value).is_empty()
}

/// Kubernetes' `IsQualifiedName` messages, for label keys and annotation keys: an
/// optional DNS subdomain prefix and `/`, then a name of at most 63 characters.
pub fn qualified_name_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_owned());
            } else {
                errs.extend(
                    dns1123_subdomain_errors(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name {QUALIFIED_NAME_MSG} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_owned());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len_error(63)));
    }
    if !matches_qualified_name_part(name) {
        errs.push(format!("name part {QUALIFIED_NAME_MSG}"));
    }
    errs
}

/// Whether `value` is a qualified name (`app`, `example.com/tier`).
pub fn is_qualified_name(value: &str) -> bool {
    qualified_name_errors(value).is_empty()
}

/// Kubernetes' `IsValidLabelValue` messages: empty, or at most 63 characters like a
/// qualified name's name part.
pub fn label_value_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !value.is_empty() && !matches_qualified_name_part(value) {
        errs.push(LABEL_VALUE_MSG.to_owned());
    }
    errs
}

/// Whether `value` is a valid label value.
pub fn is_label_value(value: &str) -> bool {
    label_value_errors(value).is_empty()
}

/// Kubernetes' `IsValidPortName` messages (an IANA service name): at most 15 characters
/// of `[a-z0-9-]`, at least one letter, no `--`, no leading or trailing `-`.
pub fn port_name_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 15 {
        errs.push(max_len_error(15));
    }
    if value.is_empty() || !value.bytes().all(|c| lower_alnum(c) || c == b'-') {
        errs.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_owned(),
        );
    }
    if !value.bytes().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".to_owned());
    }
    if value.contains("--") {
        errs.push("must not contain consecutive hyphens (-)".to_owned());
    }
    if value.starts_with('-') || value.ends_with('-') {
        errs.push("must not begin or end with a hyphen (-)".to_owned());
    }
    errs
}

/// Whether `value` is a valid port name (`http`, `metrics-2`).
pub fn is_port_name(value: &str) -> bool {
    port_name_errors(value).is_empty()
}

/// Kubernetes' `IsValidPortNum` message for ports outside 1–65535.
pub fn port_number_errors(port: i64) -> Vec<String> {
    if (1..=65535).contains(&port) {
        Vec::new()
    } else {
        vec![PORT_RANGE.to_owned()]
    }
}

/// The messages for a name that may not be `.` or `..` or start with `..`.
fn relative_path_prefix_errors(value: &str) -> Vec<String> {
    if value == "." {
        vec!["must not be '.'".to_owned()]
    } else if value == ".." {
        vec!["must not be '..'".to_owned()]
    } else if value.starts_with("..") {
        vec!["must not start with '..'".to_owned()]
    } else {
        Vec::new()
    }
}

/// Kubernetes' `IsEnvVarName` messages: `[-._a-zA-Z][-._a-zA-Z0-9]*`, and not `.`/`..`.
pub fn env_var_name_errors(value: &str) -> Vec<String> {
    let first_ok = |c: u8| c.is_ascii_alphabetic() || matches!(c, b'-' | b'.' | b'_');
    let mut errs = Vec::new();
    let b = value.as_bytes();
    if b.is_empty() || !first_ok(b[0]) || !b.iter().all(|&c| first_ok(c) || c.is_ascii_digit()) {
        errs.push(ENV_VAR_NAME_MSG.to_owned());
    }
    errs.extend(relative_path_prefix_errors(value));
    errs
}

/// Whether `value` is a valid environment variable name.
pub fn is_env_var_name(value: &str) -> bool {
    env_var_name_errors(value).is_empty()
}

/// Kubernetes' `IsConfigMapKey` messages: at most 253 characters of `[-._a-zA-Z0-9]`,
/// and not `.`/`..`.
pub fn config_map_key_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 253 {
        errs.push(max_len_error(253));
    }
    if value.is_empty()
        || !value
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'))
    {
        errs.push(CONFIG_KEY_MSG.to_owned());
    }
    errs.extend(relative_path_prefix_errors(value));
    errs
}

/// Whether `value` is a valid ConfigMap or Secret key.
pub fn is_config_map_key(value: &str) -> bool {
    config_map_key_errors(value).is_empty()
}

fn is_percent(value: &str) -> bool {
    value
        .strip_suffix('%')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
}

fn is_cidr(value: &str) -> bool {
    let Some((ip, prefix)) = value.split_once('/') else {
        return false;
    };
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    !prefix.is_empty()
        && prefix.bytes().all(|c| c.is_ascii_digit())
        && prefix.parse::<u32>().is_ok_and(|p| p <= max)
}

// ---------------------------------------------------------------------------------------
// Small checks that push onto an error list
// ---------------------------------------------------------------------------------------

fn check_non_negative(errs: &mut Vec<FieldError>, value: Option<impl Into<i64>>, path: &FieldPath) {
    if let Some(v) = value.map(Into::into)
        && v < 0
    {
        errs.push(FieldError::invalid(path, v, IS_NEGATIVE));
    }
}

fn check_at_least_one(errs: &mut Vec<FieldError>, value: Option<impl Into<i64>>, path: &FieldPath) {
    if let Some(v) = value.map(Into::into)
        && v < 1
    {
        errs.push(FieldError::invalid(path, v, AT_LEAST_ONE));
    }
}

fn check_positive(errs: &mut Vec<FieldError>, value: Option<impl Into<i64>>, path: &FieldPath) {
    if let Some(v) = value.map(Into::into)
        && v <= 0
    {
        errs.push(FieldError::invalid(path, v, POSITIVE));
    }
}

/// Checks an enumerated field; absent or empty means the default and passes.
fn check_supported(
    errs: &mut Vec<FieldError>,
    value: Option<&str>,
    path: &FieldPath,
    supported: &[&str],
) {
    if let Some(v) = value
        && !v.is_empty()
        && !supported.contains(&v)
    {
        errs.push(FieldError::not_supported(path, v, supported));
    }
}

/// One `Invalid` error per message of a string check.
fn check_with(
    errs: &mut Vec<FieldError>,
    value: &str,
    path: &FieldPath,
    check: fn(&str) -> Vec<String>,
) {
    errs.extend(
        check(value)
            .into_iter()
            .map(|m| FieldError::invalid(path, value, m)),
    );
}

fn check_port_number(errs: &mut Vec<FieldError>, port: i32, path: &FieldPath) {
    errs.extend(
        port_number_errors(port.into())
            .into_iter()
            .map(|m| FieldError::invalid(path, port, m)),
    );
}

/// Kubernetes' `ValidatePortNumOrName`.
fn check_port_num_or_name(errs: &mut Vec<FieldError>, port: &IntOrString, path: &FieldPath) {
    match port {
        IntOrString::Int(p) => check_port_number(errs, *p, path),
        IntOrString::String(name) => check_with(errs, name, path, port_name_errors),
    }
}

fn check_protocol(errs: &mut Vec<FieldError>, protocol: Option<&str>, path: &FieldPath) {
    check_supported(errs, protocol, path, PROTOCOLS);
}

fn check_ip(errs: &mut Vec<FieldError>, ip: &str, path: &FieldPath) {
    if ip.is_empty() {
        errs.push(FieldError::required(path, ""));
    } else if ip.parse::<IpAddr>().is_err() {
        errs.push(FieldError::invalid(path, ip, INVALID_IP));
    }
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

// ---------------------------------------------------------------------------------------
// Metadata, labels and selectors
// ---------------------------------------------------------------------------------------

/// Which rule an object's `metadata.name` follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// A DNS-1123 subdomain of at most 253 characters (most kinds).
    Dns1123Subdomain,
    /// A DNS-1123 label of at most 63 characters (Namespace).
    Dns1123Label,
    /// A DNS-1035 label: a DNS-1123 label starting with a letter (Service, as in
    /// Kubernetes, since its name becomes a DNS name and environment variables).
    Dns1035Label,
}

impl NameRule {
    /// The messages for `name`; with `prefix`, a trailing `-` is allowed, as for
    /// `generateName`.
    pub fn errors(self, name: &str, prefix: bool) -> Vec<String> {
        let masked;
        let name = if prefix && name.len() > 1 && name.ends_with('-') {
            masked = format!("{}a", &name[..name.len() - 1]);
            masked.as_str()
        } else {
            name
        };
        match self {
            NameRule::Dns1123Subdomain => dns1123_subdomain_errors(name),
            NameRule::Dns1123Label => dns1123_label_errors(name),
            NameRule::Dns1035Label => dns1035_label_errors(name),
        }
    }
}

/// Validates `metadata` whose name is a DNS-1123 subdomain; see
/// [`validate_object_meta_with`].
pub fn validate_object_meta(
    meta: &ObjectMeta,
    namespaced: bool,
    path: &FieldPath,
) -> Vec<FieldError> {
    validate_object_meta_with(meta, namespaced, NameRule::Dns1123Subdomain, path)
}

/// Kubernetes' `ValidateObjectMeta`: `name` or `generateName` is required and follows
/// `rule` (`generateName` as a prefix); `namespace` is required for namespaced kinds and
/// forbidden otherwise; labels, annotation keys and finalizers must be well formed.
pub fn validate_object_meta_with(
    meta: &ObjectMeta,
    namespaced: bool,
    rule: NameRule,
    path: &FieldPath,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let generate_name = non_empty(&meta.generate_name);
    if let Some(prefix) = generate_name {
        let p = path.child("generateName");
        errs.extend(
            rule.errors(prefix, true)
                .into_iter()
                .map(|m| FieldError::invalid(&p, prefix, m)),
        );
    }
    match non_empty(&meta.name) {
        // Kubernetes fills `name` from `generateName` before validating; wk may validate first.
        None if generate_name.is_none() => {
            errs.push(FieldError::required(
                path.child("name"),
                "name or generateName is required",
            ));
        }
        None => {}
        Some(name) => {
            let p = path.child("name");
            errs.extend(
                rule.errors(name, false)
                    .into_iter()
                    .map(|m| FieldError::invalid(&p, name, m)),
            );
        }
    }
    match (namespaced, non_empty(&meta.namespace)) {
        (true, None) => errs.push(FieldError::required(path.child("namespace"), "")),
        (true, Some(ns)) => check_with(
            &mut errs,
            ns,
            &path.child("namespace"),
            dns1123_label_errors,
        ),
        (false, Some(_)) => errs.push(FieldError::forbidden(
            path.child("namespace"),
            "not allowed on this type",
        )),
        (false, None) => {}
    }
    check_non_negative(&mut errs, meta.generation, &path.child("generation"));
    errs.extend(validate_labels(meta.labels.as_ref(), &path.child("labels")));
    errs.extend(validate_annotations(
        meta.annotations.as_ref(),
        &path.child("annotations"),
    ));
    let finalizers = path.child("finalizers");
    for f in meta.finalizers.iter().flatten() {
        check_with(&mut errs, f, &finalizers, qualified_name_errors);
    }
    errs
}

/// Kubernetes' `ValidateLabels`: keys are qualified names, values label values; errors
/// are reported at `path` itself.
pub fn validate_labels(
    labels: Option<&BTreeMap<String, String>>,
    path: &FieldPath,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (k, v) in labels.into_iter().flatten() {
        check_with(&mut errs, k, path, qualified_name_errors);
        check_with(&mut errs, v, path, label_value_errors);
    }
    errs
}

/// The most bytes all annotations of one object may take, keys and values together.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// Kubernetes' `ValidateAnnotations`: keys are qualified names (compared in lower case)
/// and the total size is at most 256 KiB.
pub fn validate_annotations(
    annotations: Option<&BTreeMap<String, String>>,
    path: &FieldPath,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut total = 0;
    for (k, v) in annotations.into_iter().flatten() {
        errs.extend(
            qualified_name_errors(&k.to_lowercase())
                .into_iter()
                .map(|m| FieldError::invalid(path, k, m)),
        );
        total += k.len() + v.len();
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    errs
}

/// Kubernetes' `ValidateLabelSelector` for the structured form: `matchLabels` as labels,
/// and each of `matchExpressions` with a known operator, values exactly when it needs
/// them, a qualified-name key and valid values.
pub fn validate_label_selector(sel: &K8sLabelSelector, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = validate_labels(sel.match_labels.as_ref(), &path.child("matchLabels"));
    for (i, expr) in sel.match_expressions.iter().flatten().enumerate() {
        let p = path.child("matchExpressions").index(i);
        let values = expr.values.as_deref().unwrap_or_default();
        match expr.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => errs.push(FieldError::required(
                p.child("values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if !values.is_empty() => errs.push(FieldError::forbidden(
                p.child("values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => errs.push(FieldError::invalid(
                p.child("operator"),
                other,
                "not a valid selector operator",
            )),
        }
        check_with(&mut errs, &expr.key, &p.child("key"), qualified_name_errors);
        for (j, v) in values.iter().enumerate() {
            check_with(
                &mut errs,
                v,
                &p.child("values").index(j),
                label_value_errors,
            );
        }
    }
    errs
}

fn is_empty_selector(sel: &K8sLabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && sel.match_expressions.as_ref().is_none_or(Vec::is_empty)
}

/// Reports template labels a (valid, non-empty) selector does not match.
fn check_selector_matches_template(
    errs: &mut Vec<FieldError>,
    sel: &K8sLabelSelector,
    template: &PodTemplateSpec,
    template_path: &FieldPath,
) {
    let Ok(selector) = LabelSelector::from_k8s(sel) else {
        return;
    };
    let labels = template.metadata.as_ref().and_then(|m| m.labels.as_ref());
    let none = BTreeMap::new();
    if !selector.is_empty() && !selector.matches(labels.unwrap_or(&none)) {
        errs.push(FieldError::invalid(
            template_path.child("metadata").child("labels"),
            BadValue::raw(go_string_map(labels)),
            "`selector` does not match template `labels`",
        ));
    }
}

/// The selector checks shared by Deployment, ReplicaSet and DaemonSet: valid, not empty,
/// and matching the template's labels.
fn check_workload_selector(
    errs: &mut Vec<FieldError>,
    sel: &K8sLabelSelector,
    template: Option<&PodTemplateSpec>,
    spec_path: &FieldPath,
    resource: &str,
) {
    let sel_path = spec_path.child("selector");
    let sel_errs = validate_label_selector(sel, &sel_path);
    let valid = sel_errs.is_empty();
    errs.extend(sel_errs);
    if is_empty_selector(sel) {
        errs.push(FieldError::invalid(
            &sel_path,
            selector_value(sel),
            format!("empty selector is invalid for {resource}"),
        ));
    } else if valid && let Some(template) = template {
        check_selector_matches_template(errs, sel, template, &spec_path.child("template"));
    }
}

// ---------------------------------------------------------------------------------------
// Pods
// ---------------------------------------------------------------------------------------

/// The `runtimeClassName`s wk runs (a wk rule: Kubernetes accepts any DNS subdomain).
pub const RUNTIME_CLASSES: &[&str] = &["wasm", "oci"];

/// Validates a Pod: metadata (namespaced) and [`validate_pod_spec`].
pub fn validate_pod(pod: &Pod) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&pod.metadata, true, &FieldPath::new("metadata"));
    let default = PodSpec::default();
    errs.extend(validate_pod_spec(
        pod.spec.as_ref().unwrap_or(&default),
        &FieldPath::new("spec"),
    ));
    errs
}

/// Validates a pod template: its labels and annotations and [`validate_pod_spec`].
pub fn validate_pod_template_spec(template: &PodTemplateSpec, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(meta) = &template.metadata {
        let meta_path = path.child("metadata");
        errs.extend(validate_labels(
            meta.labels.as_ref(),
            &meta_path.child("labels"),
        ));
        errs.extend(validate_annotations(
            meta.annotations.as_ref(),
            &meta_path.child("annotations"),
        ));
    }
    let default = PodSpec::default();
    errs.extend(validate_pod_spec(
        template.spec.as_ref().unwrap_or(&default),
        &path.child("spec"),
    ));
    errs
}

/// Kubernetes' `ValidatePodSpec`, for the fields wk uses: volumes, containers and init
/// containers (names, images, ports, env, resources, mounts, probes, lifecycle), restart
/// and DNS policies, `runtimeClassName` (`wasm` or `oci`), grace periods and deadlines,
/// node selector and host names.
pub fn validate_pod_spec(spec: &PodSpec, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let volumes = validate_volumes(
        &mut errs,
        spec.volumes.as_deref().unwrap_or_default(),
        &path.child("volumes"),
    );
    let grace = spec.termination_grace_period_seconds.unwrap_or(30);
    let ctx = ContainerContext {
        volumes: &volumes,
        grace_period: grace,
    };

    let mut names = HashSet::new();
    if spec.containers.is_empty() {
        errs.push(FieldError::required(path.child("containers"), ""));
    }
    for (i, c) in spec.containers.iter().enumerate() {
        validate_container(
            &mut errs,
            c,
            &path.child("containers").index(i),
            false,
            &ctx,
            &mut names,
        );
    }
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        validate_container(
            &mut errs,
            c,
            &path.child("initContainers").index(i),
            true,
            &ctx,
            &mut names,
        );
    }

    check_supported(
        &mut errs,
        spec.restart_policy.as_deref(),
        &path.child("restartPolicy"),
        &["Always", "OnFailure", "Never"],
    );
    let dns_policy = spec.dns_policy.as_deref();
    check_supported(
        &mut errs,
        dns_policy,
        &path.child("dnsPolicy"),
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
    );
    if dns_policy == Some("None") && spec.dns_config.is_none() {
        errs.push(FieldError::required(
            path.child("dnsConfig"),
            "must provide `dnsConfig` when `dnsPolicy` is None",
        ));
    }
    if let Some(rc) = &spec.runtime_class_name
        && !RUNTIME_CLASSES.contains(&rc.as_str())
    {
        errs.push(FieldError::not_supported(
            path.child("runtimeClassName"),
            rc,
            RUNTIME_CLASSES,
        ));
    }
    check_non_negative(
        &mut errs,
        spec.termination_grace_period_seconds,
        &path.child("terminationGracePeriodSeconds"),
    );
    if let Some(v) = spec.active_deadline_seconds
        && !(1..=i64::from(u32::MAX)).contains(&v)
    {
        errs.push(FieldError::invalid(
            path.child("activeDeadlineSeconds"),
            v,
            format!("must be between 1 and {}, inclusive", u32::MAX),
        ));
    }
    errs.extend(validate_labels(
        spec.node_selector.as_ref(),
        &path.child("nodeSelector"),
    ));
    if let Some(node) = non_empty(&spec.node_name) {
        check_with(
            &mut errs,
            node,
            &path.child("nodeName"),
            dns1123_subdomain_errors,
        );
    }
    if let Some(h) = non_empty(&spec.hostname) {
        check_with(&mut errs, h, &path.child("hostname"), dns1123_label_errors);
    }
    if let Some(s) = non_empty(&spec.subdomain) {
        check_with(&mut errs, s, &path.child("subdomain"), dns1123_label_errors);
    }
    if let Some(sa) = non_empty(&spec.service_account_name) {
        check_with(
            &mut errs,
            sa,
            &path.child("serviceAccountName"),
            dns1123_subdomain_errors,
        );
    }
    errs
}

/// Validates volumes and returns their names.
fn validate_volumes(
    errs: &mut Vec<FieldError>,
    volumes: &[Volume],
    path: &FieldPath,
) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let p = path.index(i);
        validate_volume_source(errs, v, &p);
        let name_path = p.child("name");
        if v.name.is_empty() {
            errs.push(FieldError::required(&name_path, ""));
            continue;
        }
        check_with(errs, &v.name, &name_path, dns1123_label_errors);
        if !names.insert(v.name.clone()) {
            errs.push(FieldError::duplicate(&name_path, &v.name));
        }
    }
    names
}

/// Exactly one volume source, and the required field of the common ones.
fn validate_volume_source(errs: &mut Vec<FieldError>, v: &Volume, path: &FieldPath) {
    let sources = [
        ("hostPath", v.host_path.is_some()),
        ("emptyDir", v.empty_dir.is_some()),
        ("gitRepo", v.git_repo.is_some()),
        ("gcePersistentDisk", v.gce_persistent_disk.is_some()),
        ("awsElasticBlockStore", v.aws_elastic_block_store.is_some()),
        ("secret", v.secret.is_some()),
        ("nfs", v.nfs.is_some()),
        ("iscsi", v.iscsi.is_some()),
        ("glusterfs", v.glusterfs.is_some()),
        ("persistentVolumeClaim", v.persistent_volume_claim.is_some()),
        ("rbd", v.rbd.is_some()),
        ("flexVolume", v.flex_volume.is_some()),
        ("cinder", v.cinder.is_some()),
        ("cephfs", v.cephfs.is_some()),
        ("flocker", v.flocker.is_some()),
        ("downwardAPI", v.downward_api.is_some()),
        ("fc", v.fc.is_some()),
        ("azureFile", v.azure_file.is_some()),
        ("configMap", v.config_map.is_some()),
        ("vsphereVolume", v.vsphere_volume.is_some()),
        ("quobyte", v.quobyte.is_some()),
        ("azureDisk", v.azure_disk.is_some()),
        ("photonPersistentDisk", v.photon_persistent_disk.is_some()),
        ("projected", v.projected.is_some()),
        ("portworxVolume", v.portworx_volume.is_some()),
        ("scaleIO", v.scale_io.is_some()),
        ("storageos", v.storageos.is_some()),
        ("csi", v.csi.is_some()),
        ("ephemeral", v.ephemeral.is_some()),
        ("image", v.image.is_some()),
    ];
    let mut count = 0;
    for (name, set) in sources {
        if set {
            if count > 0 {
                errs.push(FieldError::forbidden(
                    path.child(name),
                    "may not specify more than 1 volume type",
                ));
            }
            count += 1;
        }
    }
    if count == 0 {
        errs.push(FieldError::required(path, "must specify a volume type"));
    }
    if let Some(hp) = &v.host_path
        && hp.path.is_empty()
    {
        errs.push(FieldError::required(
            path.child("hostPath").child("path"),
            "",
        ));
    }
    if let Some(cm) = &v.config_map
        && cm.name.is_empty()
    {
        errs.push(FieldError::required(
            path.child("configMap").child("name"),
            "",
        ));
    }
    if let Some(s) = &v.secret
        && non_empty(&s.secret_name).is_none()
    {
        errs.push(FieldError::required(
            path.child("secret").child("secretName"),
            "",
        ));
    }
    if let Some(pvc) = &v.persistent_volume_claim
        && pvc.claim_name.is_empty()
    {
        errs.push(FieldError::required(
            path.child("persistentVolumeClaim").child("claimName"),
            "",
        ));
    }
}

/// What a container's checks need from its pod.
struct ContainerContext<'a> {
    volumes: &'a BTreeSet<String>,
    grace_period: i64,
}

fn validate_container(
    errs: &mut Vec<FieldError>,
    c: &Container,
    path: &FieldPath,
    init: bool,
    ctx: &ContainerContext<'_>,
    names: &mut HashSet<String>,
) {
    let name_path = path.child("name");
    if c.name.is_empty() {
        errs.push(FieldError::required(&name_path, ""));
    } else {
        check_with(errs, &c.name, &name_path, dns1123_label_errors);
        if !names.insert(c.name.clone()) {
            errs.push(FieldError::duplicate(&name_path, &c.name));
        }
    }
    match c.image.as_deref() {
        None | Some("") => errs.push(FieldError::required(path.child("image"), "")),
        Some(image) if image.trim() != image => {
            errs.push(FieldError::invalid(
                path.child("image"),
                image,
                "must not have leading or trailing whitespace",
            ));
        }
        Some(_) => {}
    }
    check_supported(
        errs,
        c.image_pull_policy.as_deref(),
        &path.child("imagePullPolicy"),
        &["Always", "IfNotPresent", "Never"],
    );
    validate_container_ports(
        errs,
        c.ports.as_deref().unwrap_or_default(),
        &path.child("ports"),
    );
    validate_env(
        errs,
        c.env.as_deref().unwrap_or_default(),
        &path.child("env"),
    );
    if let Some(r) = &c.resources {
        validate_resources(errs, r, &path.child("resources"));
    }
    validate_volume_mounts(
        errs,
        c.volume_mounts.as_deref().unwrap_or_default(),
        ctx.volumes,
        &path.child("volumeMounts"),
    );

    // An init container with restartPolicy Always is a sidecar: it runs alongside the
    // regular containers, so probes and lifecycle hooks make sense for it.
    let restart_path = path.child("restartPolicy");
    let sidecar = init && c.restart_policy.as_deref() == Some("Always");
    match (&c.restart_policy, init) {
        (Some(_), false) => errs.push(FieldError::forbidden(
            &restart_path,
            "may not be set for non-init containers",
        )),
        (Some(p), true) if p != "Always" => {
            errs.push(FieldError::not_supported(&restart_path, p, &["Always"]))
        }
        _ => {}
    }
    if init && !sidecar {
        for (field, set) in [
            ("lifecycle", c.lifecycle.is_some()),
            ("livenessProbe", c.liveness_probe.is_some()),
            ("readinessProbe", c.readiness_probe.is_some()),
            ("startupProbe", c.startup_probe.is_some()),
        ] {
            if set {
                errs.push(FieldError::forbidden(
                    path.child(field),
                    "may not be set for init containers without restartPolicy=Always",
                ));
            }
        }
        return;
    }
    if let Some(p) = &c.liveness_probe {
        validate_probe(errs, p, &path.child("livenessProbe"), true);
    }
    if let Some(p) = &c.readiness_probe {
        validate_probe(errs, p, &path.child("readinessProbe"), false);
    }
    if let Some(p) = &c.startup_probe {
        validate_probe(errs, p, &path.child("startupProbe"), true);
    }
    if let Some(l) = &c.lifecycle {
        validate_lifecycle(errs, l, &path.child("lifecycle"), ctx.grace_period);
    }
}

fn validate_container_ports(errs: &mut Vec<FieldError>, ports: &[ContainerPort], path: &FieldPath) {
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = path.index(i);
        if let Some(name) = non_empty(&port.name) {
            let name_path = p.child("name");
            let msgs = port_name_errors(name);
            if !msgs.is_empty() {
                errs.extend(
                    msgs.into_iter()
                        .map(|m| FieldError::invalid(&name_path, name, m)),
                );
            } else if !names.insert(name) {
                errs.push(FieldError::duplicate(&name_path, name));
            }
        }
        if port.container_port == 0 {
            errs.push(FieldError::required(p.child("containerPort"), ""));
        } else {
            check_port_number(errs, port.container_port, &p.child("containerPort"));
        }
        if let Some(hp) = port.host_port.filter(|&hp| hp != 0) {
            check_port_number(errs, hp, &p.child("hostPort"));
        }
        check_protocol(errs, port.protocol.as_deref(), &p.child("protocol"));
    }
}

fn validate_env(errs: &mut Vec<FieldError>, env: &[EnvVar], path: &FieldPath) {
    for (i, e) in env.iter().enumerate() {
        let p = path.index(i);
        if e.name.is_empty() {
            errs.push(FieldError::required(p.child("name"), ""));
        } else {
            check_with(errs, &e.name, &p.child("name"), env_var_name_errors);
        }
        let Some(from) = &e.value_from else { continue };
        let from_path = p.child("valueFrom");
        let mut sources = 0;
        if from.field_ref.is_some() {
            sources += 1;
        }
        if from.resource_field_ref.is_some() {
            sources += 1;
        }
        for (field, key_ref) in [
            (
                "configMapKeyRef",
                from.config_map_key_ref.as_ref().map(|r| (&r.name, &r.key)),
            ),
            (
                "secretKeyRef",
                from.secret_key_ref.as_ref().map(|r| (&r.name, &r.key)),
            ),
        ] {
            let Some((name, key)) = key_ref else { continue };
            sources += 1;
            let ref_path = from_path.child(field);
            if name.is_empty() {
                errs.push(FieldError::required(ref_path.child("name"), ""));
            }
            if key.is_empty() {
                errs.push(FieldError::required(ref_path.child("key"), ""));
            } else {
                check_with(errs, key, &ref_path.child("key"), config_map_key_errors);
            }
        }
        if sources == 0 {
            errs.push(FieldError::invalid(
                &from_path,
                "",
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ));
        } else if non_empty(&e.value).is_some() {
            errs.push(FieldError::invalid(
                &from_path,
                "",
                "may not be specified when `value` is not empty",
            ));
        } else if sources > 1 {
            errs.push(FieldError::invalid(
                &from_path,
                "",
                "may not have more than one field specified at a time",
            ));
        }
    }
}

/// The quantity of one resource, or why it is not acceptable.
fn check_quantity(
    errs: &mut Vec<FieldError>,
    q: &K8sQuantity,
    path: &FieldPath,
) -> Option<Quantity> {
    match Quantity::from_k8s(q) {
        Err(e) => {
            let detail = match e {
                QuantityError::Empty
                | QuantityError::Syntax(_)
                | QuantityError::UnknownSuffix { .. } => QUANTITY_MSG.to_owned(),
                other => other.to_string(),
            };
            errs.push(FieldError::invalid(path, &q.0, detail));
            None
        }
        Ok(v) if v.is_negative() => {
            errs.push(FieldError::invalid(path, v.to_string(), IS_NEGATIVE));
            None
        }
        Ok(v) => Some(v),
    }
}

/// Kubernetes' `validateContainerResourceName`.
fn check_container_resource_name(errs: &mut Vec<FieldError>, name: &str, path: &FieldPath) {
    let msgs = qualified_name_errors(name);
    if !msgs.is_empty() {
        errs.extend(msgs.into_iter().map(|m| FieldError::invalid(path, name, m)));
        return;
    }
    let standard =
        matches!(name, "cpu" | "memory" | "ephemeral-storage") || name.starts_with("hugepages-");
    if !name.contains('/') && !standard {
        errs.push(FieldError::invalid(
            path,
            name,
            "must be a standard resource for containers",
        ));
    }
}

/// Native resources other than huge pages may be overcommitted (request below limit);
/// extended resources (`example.com/gpu`) may not.
fn overcommit_allowed(name: &str) -> bool {
    let native = !name.contains('/') || name.contains("kubernetes.io/");
    native && !name.starts_with("hugepages-")
}

fn validate_resources(errs: &mut Vec<FieldError>, r: &ResourceRequirements, path: &FieldPath) {
    let limits_path = path.child("limits");
    let requests_path = path.child("requests");
    let mut limits = BTreeMap::new();
    for (name, q) in r.limits.iter().flatten() {
        let p = limits_path.key(name);
        check_container_resource_name(errs, name, &p);
        if let Some(q) = check_quantity(errs, q, &p) {
            limits.insert(name.as_str(), q);
        }
    }
    for (name, q) in r.requests.iter().flatten() {
        let p = requests_path.key(name);
        check_container_resource_name(errs, name, &p);
        let Some(request) = check_quantity(errs, q, &p) else {
            continue;
        };
        let Some(limit) = limits.get(name.as_str()) else {
            continue;
        };
        if request != *limit && !overcommit_allowed(name) {
            errs.push(FieldError::invalid(
                &requests_path,
                request.to_string(),
                format!("must be equal to {name} limit of {limit}"),
            ));
        } else if request > *limit {
            errs.push(FieldError::invalid(
                &requests_path,
                request.to_string(),
                format!("must be less than or equal to {name} limit of {limit}"),
            ));
        }
    }
}

fn validate_volume_mounts(
    errs: &mut Vec<FieldError>,
    mounts: &[VolumeMount],
    volumes: &BTreeSet<String>,
    path: &FieldPath,
) {
    let mut mount_paths = HashSet::new();
    for (i, m) in mounts.iter().enumerate() {
        let p = path.index(i);
        if m.name.is_empty() {
            errs.push(FieldError::required(p.child("name"), ""));
        } else if !volumes.contains(&m.name) {
            errs.push(FieldError::not_found(p.child("name"), &m.name));
        }
        if m.mount_path.is_empty() {
            errs.push(FieldError::required(p.child("mountPath"), ""));
        } else if !mount_paths.insert(m.mount_path.as_str()) {
            errs.push(FieldError::invalid(
                p.child("mountPath"),
                &m.mount_path,
                "must be unique",
            ));
        }
        if let Some(sub) = non_empty(&m.sub_path) {
            let sub_path = p.child("subPath");
            if sub.starts_with('/') {
                errs.push(FieldError::invalid(
                    &sub_path,
                    sub,
                    "must be a relative path",
                ));
            }
            if sub.split('/').any(|part| part == "..") {
                errs.push(FieldError::invalid(&sub_path, sub, "must not contain '..'"));
            }
        }
    }
}

/// The handlers a probe or lifecycle hook may have; exactly one must be set.
struct Handlers<'a> {
    exec: Option<&'a ExecAction>,
    http_get: Option<&'a HTTPGetAction>,
    tcp_socket: Option<&'a TCPSocketAction>,
    grpc: Option<&'a GRPCAction>,
    sleep: Option<&'a SleepAction>,
}

fn validate_handlers(
    errs: &mut Vec<FieldError>,
    h: &Handlers<'_>,
    path: &FieldPath,
    grace_period: i64,
) {
    let mut count = 0;
    let mut one = |errs: &mut Vec<FieldError>, set: bool, field: &str| -> bool {
        if !set {
            return false;
        }
        count += 1;
        if count > 1 {
            errs.push(FieldError::forbidden(
                path.child(field),
                "may not specify more than 1 handler type",
            ));
            return false;
        }
        true
    };
    if one(errs, h.exec.is_some(), "exec")
        && let Some(exec) = h.exec
        && exec.command.as_ref().is_none_or(Vec::is_empty)
    {
        errs.push(FieldError::required(
            path.child("exec").child("command"),
            "",
        ));
    }
    if one(errs, h.http_get.is_some(), "httpGet")
        && let Some(http) = h.http_get
    {
        let p = path.child("httpGet");
        check_port_num_or_name(errs, &http.port, &p.child("port"));
        check_supported(
            errs,
            http.scheme.as_deref(),
            &p.child("scheme"),
            &["HTTP", "HTTPS"],
        );
    }
    if one(errs, h.tcp_socket.is_some(), "tcpSocket")
        && let Some(tcp) = h.tcp_socket
    {
        check_port_num_or_name(errs, &tcp.port, &path.child("tcpSocket").child("port"));
    }
    if one(errs, h.grpc.is_some(), "grpc")
        && let Some(grpc) = h.grpc
    {
        check_port_number(errs, grpc.port, &path.child("grpc").child("port"));
    }
    if one(errs, h.sleep.is_some(), "sleep")
        && let Some(sleep) = h.sleep
        && !(0..=grace_period).contains(&sleep.seconds)
    {
        errs.push(FieldError::invalid(
            path.child("sleep").child("seconds"),
            sleep.seconds,
            format!(
                "must be non-negative and less than terminationGracePeriodSeconds ({grace_period})"
            ),
        ));
    }
    if count == 0 {
        errs.push(FieldError::required(path, "must specify a handler type"));
    }
}

/// A probe: one handler, and sane timings. Liveness and startup probes must succeed once
/// to count, so their `successThreshold` must be 1.
fn validate_probe(
    errs: &mut Vec<FieldError>,
    probe: &Probe,
    path: &FieldPath,
    success_must_be_one: bool,
) {
    let handlers = Handlers {
        exec: probe.exec.as_ref(),
        http_get: probe.http_get.as_ref(),
        tcp_socket: probe.tcp_socket.as_ref(),
        grpc: probe.grpc.as_ref(),
        sleep: None,
    };
    validate_handlers(errs, &handlers, path, 0);
    check_non_negative(
        errs,
        probe.initial_delay_seconds,
        &path.child("initialDelaySeconds"),
    );
    check_at_least_one(errs, probe.timeout_seconds, &path.child("timeoutSeconds"));
    check_at_least_one(errs, probe.period_seconds, &path.child("periodSeconds"));
    match probe.success_threshold {
        Some(v) if success_must_be_one && v != 1 => {
            errs.push(FieldError::invalid(
                path.child("successThreshold"),
                v,
                "must be 1",
            ));
        }
        v => check_at_least_one(errs, v, &path.child("successThreshold")),
    }
    check_at_least_one(
        errs,
        probe.failure_threshold,
        &path.child("failureThreshold"),
    );
    check_positive(
        errs,
        probe.termination_grace_period_seconds,
        &path.child("terminationGracePeriodSeconds"),
    );
}

fn validate_lifecycle(
    errs: &mut Vec<FieldError>,
    l: &Lifecycle,
    path: &FieldPath,
    grace_period: i64,
) {
    for (field, hook) in [("postStart", &l.post_start), ("preStop", &l.pre_stop)] {
        let Some(hook) = hook else { continue };
        let handlers = Handlers {
            exec: hook.exec.as_ref(),
            http_get: hook.http_get.as_ref(),
            tcp_socket: hook.tcp_socket.as_ref(),
            grpc: None,
            sleep: hook.sleep.as_ref(),
        };
        validate_handlers(errs, &handlers, &path.child(field), grace_period);
    }
}

// ---------------------------------------------------------------------------------------
// Workloads: Deployment, ReplicaSet, DaemonSet
// ---------------------------------------------------------------------------------------

/// Template checks shared by the controllers whose pods run forever.
fn check_long_running_template(
    errs: &mut Vec<FieldError>,
    template: &PodTemplateSpec,
    template_path: &FieldPath,
    kind: &str,
) {
    let spec_path = template_path.child("spec");
    let Some(spec) = &template.spec else { return };
    if let Some(p) = non_empty(&spec.restart_policy)
        && p != "Always"
    {
        errs.push(FieldError::not_supported(
            spec_path.child("restartPolicy"),
            p,
            &["Always"],
        ));
    }
    if let Some(v) = spec.active_deadline_seconds {
        errs.push(FieldError::invalid(
            spec_path.child("activeDeadlineSeconds"),
            v,
            format!("activeDeadlineSeconds in {kind} is not Supported"),
        ));
    }
}

/// `maxSurge`/`maxUnavailable`: a non-negative integer or a percentage (`25%`).
fn check_int_or_percent(errs: &mut Vec<FieldError>, v: &IntOrString, path: &FieldPath) {
    match v {
        IntOrString::Int(i) if *i < 0 => errs.push(FieldError::invalid(path, *i, IS_NEGATIVE)),
        IntOrString::String(s) if !is_percent(s) => {
            errs.push(FieldError::invalid(path, s, PERCENT_MSG))
        }
        _ => {}
    }
}

fn int_or_percent_value(v: &IntOrString) -> i64 {
    match v {
        IntOrString::Int(i) => i64::from(*i),
        IntOrString::String(s) => s.replace('%', "").parse().unwrap_or(0),
    }
}

fn check_not_more_than_100_percent(errs: &mut Vec<FieldError>, v: &IntOrString, path: &FieldPath) {
    if let IntOrString::String(s) = v
        && is_percent(s)
        && int_or_percent_value(v) > 100
    {
        errs.push(FieldError::invalid(
            path,
            s,
            "must not be greater than 100%",
        ));
    }
}

fn validate_deployment_strategy(
    errs: &mut Vec<FieldError>,
    strategy: Option<&DeploymentStrategy>,
    path: &FieldPath,
) {
    let Some(strategy) = strategy else { return };
    let ru_path = path.child("rollingUpdate");
    match strategy.type_.as_deref().unwrap_or_default() {
        "Recreate" => {
            if strategy.rolling_update.is_some() {
                errs.push(FieldError::forbidden(
                    &ru_path,
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" | "" => {
            // Absent fields take Kubernetes' defaults, 25% each.
            let default = IntOrString::String("25%".to_owned());
            let ru = strategy.rolling_update.as_ref();
            let max_unavailable = ru
                .and_then(|r| r.max_unavailable.as_ref())
                .unwrap_or(&default);
            let max_surge = ru.and_then(|r| r.max_surge.as_ref()).unwrap_or(&default);
            let mu_path = ru_path.child("maxUnavailable");
            check_int_or_percent(errs, max_unavailable, &mu_path);
            check_int_or_percent(errs, max_surge, &ru_path.child("maxSurge"));
            if int_or_percent_value(max_unavailable) == 0 && int_or_percent_value(max_surge) == 0 {
                errs.push(FieldError::invalid(
                    &mu_path,
                    max_unavailable,
                    "may not be 0 when `maxSurge` is 0",
                ));
            }
            check_not_more_than_100_percent(errs, max_unavailable, &mu_path);
        }
        other => errs.push(FieldError::not_supported(
            path.child("type"),
            other,
            &["Recreate", "RollingUpdate"],
        )),
    }
}

/// Validates a Deployment: metadata; `replicas` ≥ 0; a non-empty selector matching the
/// template's labels; the template, whose `restartPolicy` must be `Always`; the strategy
/// (`RollingUpdate` with `maxSurge`/`maxUnavailable` not both zero, or `Recreate`); and
/// the non-negative counters.
pub fn validate_deployment(d: &Deployment) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&d.metadata, true, &FieldPath::new("metadata"));
    let path = FieldPath::new("spec");
    let Some(spec) = &d.spec else {
        errs.push(FieldError::required(&path, ""));
        return errs;
    };
    check_non_negative(&mut errs, spec.replicas, &path.child("replicas"));
    check_workload_selector(
        &mut errs,
        &spec.selector,
        Some(&spec.template),
        &path,
        "deployment",
    );
    let template_path = path.child("template");
    errs.extend(validate_pod_template_spec(&spec.template, &template_path));
    check_long_running_template(&mut errs, &spec.template, &template_path, "Deployment");
    validate_deployment_strategy(&mut errs, spec.strategy.as_ref(), &path.child("strategy"));
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    check_non_negative(
        &mut errs,
        spec.min_ready_seconds,
        &path.child("minReadySeconds"),
    );
    check_non_negative(
        &mut errs,
        spec.revision_history_limit,
        &path.child("revisionHistoryLimit"),
    );
    if let Some(deadline) = spec.progress_deadline_seconds {
        let p = path.child("progressDeadlineSeconds");
        check_non_negative(&mut errs, Some(deadline), &p);
        if deadline <= min_ready {
            errs.push(FieldError::invalid(
                &p,
                deadline,
                "must be greater than minReadySeconds",
            ));
        }
    }
    errs
}

/// Validates a ReplicaSet: as a Deployment without strategy; the template is required.
pub fn validate_replica_set(rs: &ReplicaSet) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&rs.metadata, true, &FieldPath::new("metadata"));
    let path = FieldPath::new("spec");
    let Some(spec) = &rs.spec else {
        errs.push(FieldError::required(&path, ""));
        return errs;
    };
    check_non_negative(&mut errs, spec.replicas, &path.child("replicas"));
    check_non_negative(
        &mut errs,
        spec.min_ready_seconds,
        &path.child("minReadySeconds"),
    );
    check_workload_selector(
        &mut errs,
        &spec.selector,
        spec.template.as_ref(),
        &path,
        "replicaset",
    );
    let template_path = path.child("template");
    match &spec.template {
        None => errs.push(FieldError::required(&template_path, "")),
        Some(template) => {
            errs.extend(validate_pod_template_spec(template, &template_path));
            check_long_running_template(&mut errs, template, &template_path, "ReplicaSet");
        }
    }
    errs
}

fn validate_daemon_set_strategy(
    errs: &mut Vec<FieldError>,
    strategy: Option<&DaemonSetUpdateStrategy>,
    path: &FieldPath,
) {
    let Some(strategy) = strategy else { return };
    match strategy.type_.as_deref().unwrap_or_default() {
        "OnDelete" => {}
        "RollingUpdate" | "" => {
            // Absent fields take Kubernetes' defaults: maxUnavailable 1, maxSurge 0.
            let (one, zero) = (IntOrString::Int(1), IntOrString::Int(0));
            let ru = strategy.rolling_update.as_ref();
            let max_unavailable = ru.and_then(|r| r.max_unavailable.as_ref()).unwrap_or(&one);
            let max_surge = ru.and_then(|r| r.max_surge.as_ref()).unwrap_or(&zero);
            let ru_path = path.child("rollingUpdate");
            let (mu_path, ms_path) = (ru_path.child("maxUnavailable"), ru_path.child("maxSurge"));
            check_int_or_percent(errs, max_unavailable, &mu_path);
            check_int_or_percent(errs, max_surge, &ms_path);
            check_not_more_than_100_percent(errs, max_unavailable, &mu_path);
            check_not_more_than_100_percent(errs, max_surge, &ms_path);
            match (
                int_or_percent_value(max_unavailable) != 0,
                int_or_percent_value(max_surge) != 0,
            ) {
                (true, true) => errs.push(FieldError::invalid(
                    &ms_path,
                    max_surge,
                    "may not be set when maxUnavailable is non-zero",
                )),
                (false, false) => errs.push(FieldError::required(
                    &mu_path,
                    "cannot be 0 when maxSurge is 0",
                )),
                _ => {}
            }
        }
        other => errs.push(FieldError::not_supported(
            path.child("type"),
            other,
            &["RollingUpdate", "OnDelete"],
        )),
    }
}

/// Validates a DaemonSet: metadata; a non-empty selector matching the template; the
/// template with `restartPolicy` `Always`; the update strategy (`RollingUpdate` with
/// exactly one of `maxSurge`/`maxUnavailable` non-zero, or `OnDelete`); the counters.
pub fn validate_daemon_set(ds: &DaemonSet) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&ds.metadata, true, &FieldPath::new("metadata"));
    let path = FieldPath::new("spec");
    let Some(spec) = &ds.spec else {
        errs.push(FieldError::required(&path, ""));
        return errs;
    };
    check_workload_selector(
        &mut errs,
        &spec.selector,
        Some(&spec.template),
        &path,
        "daemonset",
    );
    let template_path = path.child("template");
    errs.extend(validate_pod_template_spec(&spec.template, &template_path));
    check_long_running_template(&mut errs, &spec.template, &template_path, "DaemonSet");
    check_non_negative(
        &mut errs,
        spec.min_ready_seconds,
        &path.child("minReadySeconds"),
    );
    validate_daemon_set_strategy(
        &mut errs,
        spec.update_strategy.as_ref(),
        &path.child("updateStrategy"),
    );
    check_non_negative(
        &mut errs,
        spec.revision_history_limit,
        &path.child("revisionHistoryLimit"),
    );
    errs
}

// ---------------------------------------------------------------------------------------
// Batch: Job, CronJob
// ---------------------------------------------------------------------------------------

/// The checks a Job spec gets both in a Job and in a CronJob's `jobTemplate`.
fn validate_job_spec(errs: &mut Vec<FieldError>, spec: &JobSpec, path: &FieldPath) {
    check_non_negative(errs, spec.parallelism, &path.child("parallelism"));
    check_non_negative(errs, spec.completions, &path.child("completions"));
    // Kubernetes accepts 0 here; a job that may never run is a mistake, so wk refuses it.
    check_positive(
        errs,
        spec.active_deadline_seconds,
        &path.child("activeDeadlineSeconds"),
    );
    check_non_negative(errs, spec.backoff_limit, &path.child("backoffLimit"));
    check_non_negative(
        errs,
        spec.backoff_limit_per_index,
        &path.child("backoffLimitPerIndex"),
    );
    check_non_negative(
        errs,
        spec.ttl_seconds_after_finished,
        &path.child("ttlSecondsAfterFinished"),
    );
    let mode = spec.completion_mode.as_deref();
    check_supported(
        errs,
        mode,
        &path.child("completionMode"),
        &["NonIndexed", "Indexed"],
    );
    if mode == Some("Indexed") && spec.completions.is_none() {
        errs.push(FieldError::required(
            path.child("completions"),
            "when completion mode is Indexed",
        ));
    }
    let template_path = path.child("template");
    errs.extend(validate_pod_template_spec(&spec.template, &template_path));
    let restart_path = template_path.child("spec").child("restartPolicy");
    match spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
    {
        // Pods default to Always, which a Job cannot use: the policy must be explicit.
        None | Some("" | "Always") => {
            errs.push(FieldError::required(
                &restart_path,
                "valid values: \"OnFailure\", \"Never\"",
            ));
        }
        Some("OnFailure" | "Never") => {}
        Some(other) => errs.push(FieldError::not_supported(
            &restart_path,
            other,
            &["OnFailure", "Never"],
        )),
    }
}

/// Validates a Job: metadata; non-negative parallelism, completions and backoff limit;
/// `activeDeadlineSeconds` > 0; the template with `restartPolicy` `OnFailure` or
/// `Never`; a given selector must be valid and match the template.
pub fn validate_job(job: &Job) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&job.metadata, true, &FieldPath::new("metadata"));
    let path = FieldPath::new("spec");
    let Some(spec) = &job.spec else {
        errs.push(FieldError::required(&path, ""));
        return errs;
    };
    validate_job_spec(&mut errs, spec, &path);
    if let Some(sel) = &spec.selector {
        let sel_errs = validate_label_selector(sel, &path.child("selector"));
        if sel_errs.is_empty() {
            check_selector_matches_template(
                &mut errs,
                sel,
                &spec.template,
                &path.child("template"),
            );
        }
        errs.extend(sel_errs);
    }
    errs
}

/// The longest CronJob name: 63 less the 11 characters of the suffix of its Jobs' names.
const MAX_CRON_JOB_NAME: usize = 52;

/// Validates a CronJob: metadata (name at most 52 characters); a valid cron `schedule`
/// without `TZ=`; `timeZone`; `concurrencyPolicy` `Allow`, `Forbid` or `Replace`;
/// non-negative deadlines and history limits; and the job template, whose selector is
/// generated and so may not be given.
pub fn validate_cron_job(cj: &CronJob) -> Vec<FieldError> {
    let meta_path = FieldPath::new("metadata");
    let mut errs = validate_object_meta(&cj.metadata, true, &meta_path);
    if let Some(name) = non_empty(&cj.metadata.name)
        && name.len() > MAX_CRON_JOB_NAME
    {
        errs.push(FieldError::invalid(
            meta_path.child("name"),
            name,
            max_len_error(MAX_CRON_JOB_NAME),
        ));
    }
    let path = FieldPath::new("spec");
    let Some(spec) = &cj.spec else {
        errs.push(FieldError::required(&path, ""));
        return errs;
    };
    let schedule_path = path.child("schedule");
    if spec.schedule.is_empty() {
        errs.push(FieldError::required(&schedule_path, ""));
    } else if spec.schedule.contains("TZ") {
        errs.push(FieldError::invalid(
            &schedule_path,
            &spec.schedule,
            "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
        ));
    } else if let Err(e) = validate_cron_schedule(&spec.schedule) {
        errs.push(FieldError::invalid(&schedule_path, &spec.schedule, e));
    }
    check_non_negative(
        &mut errs,
        spec.starting_deadline_seconds,
        &path.child("startingDeadlineSeconds"),
    );
    if let Some(tz) = &spec.time_zone {
        let tz_path = path.child("timeZone");
        if tz.is_empty() {
            errs.push(FieldError::invalid(
                &tz_path,
                tz,
                "timeZone must be nil or non-empty string",
            ));
        } else if tz.eq_ignore_ascii_case("local") {
            errs.push(FieldError::invalid(
                &tz_path,
                tz,
                "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
            ));
        }
    }
    check_supported(
        &mut errs,
        spec.concurrency_policy.as_deref(),
        &path.child("concurrencyPolicy"),
        &["Allow", "Forbid", "Replace"],
    );

    let jt_path = path.child("jobTemplate");
    if let Some(meta) = &spec.job_template.metadata {
        let p = jt_path.child("metadata");
        errs.extend(validate_labels(meta.labels.as_ref(), &p.child("labels")));
        errs.extend(validate_annotations(
            meta.annotations.as_ref(),
            &p.child("annotations"),
        ));
    }
    let default = JobSpec::default();
    let job_spec = spec.job_template.spec.as_ref().unwrap_or(&default);
    let js_path = jt_path.child("spec");
    validate_job_spec(&mut errs, job_spec, &js_path);
    if let Some(sel) = &job_spec.selector {
        errs.push(FieldError::invalid(
            js_path.child("selector"),
            selector_value(sel),
            "`selector` will be auto-generated",
        ));
    }
    if job_spec.manual_selector == Some(true) {
        errs.push(FieldError::not_supported(
            js_path.child("manualSelector"),
            true,
            &["nil", "false"],
        ));
    }

    check_non_negative(
        &mut errs,
        spec.successful_jobs_history_limit,
        &path.child("successfulJobsHistoryLimit"),
    );
    check_non_negative(
        &mut errs,
        spec.failed_jobs_history_limit,
        &path.child("failedJobsHistoryLimit"),
    );
    errs
}

/// One field of a cron expression: its bounds and, for months and weekdays, names.
struct CronField {
    min: i64,
    max: i64,
    names: &'static [(&'static str, i64)],
}

const CRON_FIELDS: [CronField; 5] = [
    CronField {
        min: 0,
        max: 59,
        names: &[],
    },
    CronField {
        min: 0,
        max: 23,
        names: &[],
    },
    CronField {
        min: 1,
        max: 31,
        names: &[],
    },
    CronField {
        min: 1,
        max: 12,
        names: &[
            ("jan", 1),
            ("feb", 2),
            ("mar", 3),
            ("apr", 4),
            ("may", 5),
            ("jun", 6),
            ("jul", 7),
            ("aug", 8),
            ("sep", 9),
            ("oct", 10),
            ("nov", 11),
            ("dec", 12),
        ],
    },
    CronField {
        min: 0,
        max: 6,
        names: &[
            ("sun", 0),
            ("mon", 1),
            ("tue", 2),
            ("wed", 3),
            ("thu", 4),
            ("fri", 5),
            ("sat", 6),
        ],
    },
];

/// Checks a CronJob schedule as Kubernetes does (robfig/cron's standard parser): five
/// fields (minute, hour, day of month, month, day of week) of `*`, `?`, numbers, names
/// (`jan`, `mon`), ranges `a-b`, steps `/n` and lists `a,b`; or one of `@yearly`,
/// `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly` and
/// `@every <duration>` (`@every 1h30m`). The error is robfig's message.
pub fn validate_cron_schedule(schedule: &str) -> Result<(), String> {
    CronSchedule::parse(schedule).map(|_| ())
}

/// A parsed CronJob schedule: a bit per allowed minute, hour, day of month, month and
/// weekday, or a fixed interval (`@every`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CronSchedule {
    Fields {
        bits: [u64; 5],
        /// Day of month or day of week was `*`/`?`: then both must match, else either.
        any_day: bool,
    },
    /// `@every <duration>`, in whole seconds (at least 1).
    Every(u64),
}

impl CronSchedule {
    /// Parses a schedule (see `validate_cron_schedule`); the error is robfig's message.
    pub fn parse(schedule: &str) -> Result<CronSchedule, String> {
        if schedule.is_empty() {
            return Err("empty spec string".to_owned());
        }
        if schedule.starts_with('@') {
            let fields = match schedule {
                "@yearly" | "@annually" => "0 0 1 1 *",
                "@monthly" => "0 0 1 * *",
                "@weekly" => "0 0 * * 0",
                "@daily" | "@midnight" => "0 0 * * *",
                "@hourly" => "0 * * * *",
                _ => {
                    return match schedule.strip_prefix("@every ") {
                        Some(d) => {
                            check_go_duration(d)
                                .map_err(|e| format!("failed to parse duration {schedule}: {e}"))?;
                            Ok(CronSchedule::Every(go_duration_secs(d).unwrap_or(1).max(1)))
                        }
                        None => Err(format!("unrecognized descriptor: {schedule}")),
                    };
                }
            };
            return CronSchedule::parse(fields);
        }
        let fields: Vec<&str> = schedule.split_whitespace().collect();
        if fields.len() != CRON_FIELDS.len() {
            return Err(format!(
                "expected exactly 5 fields, found {}: [{}]",
                fields.len(),
                fields.join(" ")
            ));
        }
        let mut bits = [0u64; 5];
        for (i, (field, bounds)) in fields.iter().zip(&CRON_FIELDS).enumerate() {
            for expr in field.split(',') {
                bits[i] |= cron_range_bits(expr, bounds)?;
            }
        }
        let star = |f: &str| f.starts_with('*') || f.starts_with('?');
        Ok(CronSchedule::Fields {
            bits,
            any_day: star(fields[2]) || star(fields[4]),
        })
    }

    /// The first scheduled time strictly after `t` (to the minute, or to the second for
    /// `@every`), within the next five years.
    pub fn next_after(&self, t: jiff::Zoned) -> Option<jiff::Zoned> {
        use jiff::ToSpan;
        let (bits, any_day) = match self {
            CronSchedule::Every(secs) => return t.checked_add((*secs as i64).seconds()).ok(),
            CronSchedule::Fields { bits, any_day } => (bits, *any_day),
        };
        let has = |field: usize, v: i64| bits[field] & (1u64 << v) != 0;
        let mut c = t
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        let limit = t.year() + 5;
        while c.year() <= limit {
            if !has(3, c.month() as i64) {
                c = c
                    .with()
                    .day(1)
                    .hour(0)
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(1.month())
                    .ok()?;
                continue;
            }
            let dom = has(2, c.day() as i64);
            let dow = has(4, c.weekday().to_sunday_zero_offset() as i64);
            let day_ok = if any_day { dom && dow } else { dom || dow };
            if !day_ok {
                c = c
                    .with()
                    .hour(0)
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(1.day())
                    .ok()?;
                continue;
            }
            if !has(1, c.hour() as i64) {
                c = c
                    .with()
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if !has(0, c.minute() as i64) {
                c = c.checked_add(1.minute()).ok()?;
                continue;
            }
            return Some(c);
        }
        None
    }
}

/// Whole seconds of a Go duration made of integer parts (`1h30m`, `90s`); `None` for
/// fractions or units below a second.
fn go_duration_secs(s: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut rest = s;
    while !rest.is_empty() {
        let n = rest.find(|c: char| !c.is_ascii_digit())?;
        let value: u64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "h" => 3600,
            "m" => 60,
            "s" => 1,
            _ => return None,
        };
        total += value * mult;
        rest = &rest[unit_len..];
    }
    Some(total)
}

fn cron_range_bits(expr: &str, f: &CronField) -> Result<u64, String> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_and_high: Vec<&str> = range_and_step[0].split('-').collect();
    let (start, mut end) = if low_and_high[0] == "*" || low_and_high[0] == "?" {
        (f.min, f.max)
    } else {
        let start = cron_int_or_name(low_and_high[0], f)?;
        match low_and_high.len() {
            1 => (start, start),
            2 => (start, cron_int_or_name(low_and_high[1], f)?),
            _ => return Err(format!("too many hyphens: {expr}")),
        }
    };
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            // `5/15` means from 5 to the end, every 15.
            if low_and_high.len() == 1 {
                end = f.max;
            }
            cron_int(range_and_step[1])?
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < f.min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            f.min
        ));
    }
    if end > f.max {
        return Err(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            f.max
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    let mut bits = 0u64;
    let mut v = start;
    while v <= end {
        bits |= 1u64 << v;
        v += step;
    }
    Ok(bits)
}

fn cron_int_or_name(s: &str, f: &CronField) -> Result<i64, String> {
    let lower = s.to_ascii_lowercase();
    match f.names.iter().find(|(name, _)| *name == lower) {
        Some((_, v)) => Ok(*v),
        None => cron_int(s),
    }
}

/// Go's `strconv.Atoi`, refusing negative numbers, with robfig's messages.
fn cron_int(s: &str) -> Result<i64, String> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "failed to parse int from {s}: strconv.Atoi: parsing {}: invalid syntax",
            go_quote(s)
        ));
    }
    let n: i64 = s.parse().map_err(|_| {
        format!(
            "failed to parse int from {s}: strconv.Atoi: parsing {}: value out of range",
            go_quote(s)
        )
    })?;
    if n < 0 {
        return Err(format!("negative number ({n}) not allowed: {s}"));
    }
    Ok(n)
}

/// Checks the syntax of a Go duration (`1h30m`, `90s`, `1.5h`), with Go's messages.
fn check_go_duration(s: &str) -> Result<(), String> {
    let invalid = || format!("time: invalid duration {}", go_quote(s));
    let mut rest = s.strip_prefix(['+', '-']).unwrap_or(s);
    if rest == "0" {
        return Ok(());
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let int_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let mut digits = int_len;
        rest = &rest[int_len..];
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after_dot.len());
            digits += frac_len;
            rest = &after_dot[frac_len..];
        }
        if digits == 0 {
            return Err(invalid());
        }
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        if unit.is_empty() {
            return Err(format!("time: missing unit in duration {}", go_quote(s)));
        }
        if !matches!(unit, "ns" | "us" | "µs" | "μs" | "ms" | "s" | "m" | "h") {
            return Err(format!(
                "time: unknown unit {} in duration {}",
                go_quote(unit),
                go_quote(s)
            ));
        }
        rest = &rest[unit_len..];
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Services and endpoints
// ---------------------------------------------------------------------------------------

/// The lowest and highest node port (Kubernetes' default `--service-node-port-range`).
pub const NODE_PORT_RANGE: (i32, i32) = (30000, 32767);

/// Validates a Service: metadata (name a DNS-1035 label); ports (required unless
/// headless or ExternalName; named when several, names unique; port, targetPort,
/// nodePort and protocol in range; no duplicate port or node port per protocol); type,
/// session affinity, cluster IP and external name.
pub fn validate_service(svc: &Service) -> Vec<FieldError> {
    let mut errs = validate_object_meta_with(
        &svc.metadata,
        true,
        NameRule::Dns1035Label,
        &FieldPath::new("metadata"),
    );
    let path = FieldPath::new("spec");
    let default = ServiceSpec::default();
    let spec = svc.spec.as_ref().unwrap_or(&default);
    let type_ = non_empty(&spec.type_).unwrap_or("ClusterIP");
    let cluster_ip = non_empty(&spec.cluster_ip);
    let headless = cluster_ip == Some("None");
    let ports = spec.ports.as_deref().unwrap_or_default();
    let ports_path = path.child("ports");

    if ports.is_empty() && !headless && type_ != "ExternalName" {
        errs.push(FieldError::required(&ports_path, ""));
    }
    let mut names = HashSet::new();
    let mut port_keys = HashSet::new();
    let mut node_port_keys = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = ports_path.index(i);
        validate_service_port(&mut errs, port, ports.len() > 1, &mut names, &p);
        let protocol = non_empty(&port.protocol).unwrap_or("TCP");
        if let Some(node_port) = port.node_port.filter(|&n| n != 0) {
            let np_path = p.child("nodePort");
            if type_ == "ClusterIP" {
                errs.push(FieldError::forbidden(
                    &np_path,
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else if !(NODE_PORT_RANGE.0..=NODE_PORT_RANGE.1).contains(&node_port) {
                errs.push(FieldError::invalid(
                    &np_path,
                    node_port,
                    format!(
                        "provided port is not in the valid range. The range of valid ports is {}-{}",
                        NODE_PORT_RANGE.0, NODE_PORT_RANGE.1
                    ),
                ));
            }
            if !node_port_keys.insert((protocol, node_port)) {
                errs.push(FieldError::duplicate(&np_path, node_port));
            }
        }
        if !port_keys.insert((protocol, port.port)) {
            // Kubernetes prints a Go struct here; wk prints the pair as JSON.
            let value = format!(
                "{{\"port\":{},\"protocol\":{}}}",
                port.port,
                go_quote(protocol)
            );
            errs.push(FieldError::duplicate(&p, BadValue::raw(value)));
        }
    }

    errs.extend(validate_labels(
        spec.selector.as_ref(),
        &path.child("selector"),
    ));
    check_supported(
        &mut errs,
        spec.session_affinity.as_deref(),
        &path.child("sessionAffinity"),
        &["ClientIP", "None"],
    );
    check_supported(
        &mut errs,
        spec.type_.as_deref(),
        &path.child("type"),
        &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
    );

    let ip_path = path.child("clusterIP");
    match cluster_ip {
        Some(_) if type_ == "ExternalName" => {
            errs.push(FieldError::forbidden(
                &ip_path,
                "may not be set for ExternalName services",
            ));
        }
        Some("None") if matches!(type_, "NodePort" | "LoadBalancer") => {
            errs.push(FieldError::invalid(
                &ip_path,
                "None",
                format!("may not be set to 'None' for {type_} services"),
            ));
        }
        Some("None") | None => {}
        Some(ip) => {
            if ip.parse::<IpAddr>().is_err() {
                errs.push(FieldError::invalid(&ip_path, ip, INVALID_IP));
            }
        }
    }
    if type_ == "ExternalName" {
        let name_path = path.child("externalName");
        let cname = spec.external_name.as_deref().unwrap_or_default();
        // A trailing dot marks the name fully qualified.
        let cname = cname.strip_suffix('.').unwrap_or(cname);
        if cname.is_empty() {
            errs.push(FieldError::required(&name_path, ""));
        } else {
            check_with(&mut errs, cname, &name_path, dns1123_subdomain_errors);
        }
    }
    errs
}

fn validate_service_port<'a>(
    errs: &mut Vec<FieldError>,
    port: &'a ServicePort,
    require_name: bool,
    names: &mut HashSet<&'a str>,
    path: &FieldPath,
) {
    let name_path = path.child("name");
    match non_empty(&port.name) {
        None if require_name => errs.push(FieldError::required(&name_path, "")),
        None => {}
        Some(name) => {
            check_with(errs, name, &name_path, dns1123_label_errors);
            if !names.insert(name) {
                errs.push(FieldError::duplicate(&name_path, name));
            }
        }
    }
    check_port_number(errs, port.port, &path.child("port"));
    check_protocol(errs, port.protocol.as_deref(), &path.child("protocol"));
    match &port.target_port {
        // Absent, 0 and "" all default to `port`.
        None | Some(IntOrString::Int(0)) => {}
        Some(IntOrString::String(s)) if s.is_empty() => {}
        Some(tp) => check_port_num_or_name(errs, tp, &path.child("targetPort")),
    }
    if let Some(ap) = &port.app_protocol {
        check_with(errs, ap, &path.child("appProtocol"), qualified_name_errors);
    }
}

/// Validates Endpoints: metadata; each subset has addresses with valid IPs (loopback
/// and link-local addresses are allowed, unlike Kubernetes, since wk's pods may use
/// them) and ports with a port number, protocol and, when several, names.
pub fn validate_endpoints(ep: &Endpoints) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&ep.metadata, true, &FieldPath::new("metadata"));
    let path = FieldPath::new("subsets");
    for (i, subset) in ep.subsets.iter().flatten().enumerate() {
        let p = path.index(i);
        let addresses = subset.addresses.as_deref().unwrap_or_default();
        let not_ready = subset.not_ready_addresses.as_deref().unwrap_or_default();
        if addresses.is_empty() && not_ready.is_empty() {
            errs.push(FieldError::required(
                &p,
                "must specify `addresses` or `notReadyAddresses`",
            ));
        }
        for (j, a) in addresses.iter().enumerate() {
            validate_endpoint_address(&mut errs, a, &p.child("addresses").index(j));
        }
        for (j, a) in not_ready.iter().enumerate() {
            validate_endpoint_address(&mut errs, a, &p.child("notReadyAddresses").index(j));
        }
        let ports = subset.ports.as_deref().unwrap_or_default();
        for (j, port) in ports.iter().enumerate() {
            validate_endpoint_port(&mut errs, port, ports.len() > 1, &p.child("ports").index(j));
        }
    }
    errs
}

fn validate_endpoint_address(errs: &mut Vec<FieldError>, a: &EndpointAddress, path: &FieldPath) {
    check_ip(errs, &a.ip, &path.child("ip"));
    if let Some(h) = non_empty(&a.hostname) {
        check_with(errs, h, &path.child("hostname"), dns1123_label_errors);
    }
    if let Some(n) = non_empty(&a.node_name) {
        check_with(errs, n, &path.child("nodeName"), dns1123_subdomain_errors);
    }
}

fn validate_endpoint_port(
    errs: &mut Vec<FieldError>,
    port: &EndpointPort,
    require_name: bool,
    path: &FieldPath,
) {
    match non_empty(&port.name) {
        None if require_name => errs.push(FieldError::required(path.child("name"), "")),
        None => {}
        Some(name) => check_with(errs, name, &path.child("name"), dns1123_label_errors),
    }
    check_port_number(errs, port.port, &path.child("port"));
    check_protocol(errs, port.protocol.as_deref(), &path.child("protocol"));
    if let Some(ap) = &port.app_protocol {
        check_with(errs, ap, &path.child("appProtocol"), qualified_name_errors);
    }
}

// ---------------------------------------------------------------------------------------
// Configuration: ConfigMap, Secret
// ---------------------------------------------------------------------------------------

/// The most bytes the data of one ConfigMap or Secret may take.
pub const MAX_DATA_SIZE: usize = 1024 * 1024;

/// Validates a ConfigMap: metadata; keys of `data` and `binaryData` are config keys and
/// appear in only one of them; at most 1 MiB of data.
pub fn validate_config_map(cm: &ConfigMap) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&cm.metadata, true, &FieldPath::new("metadata"));
    let (data_path, binary_path) = (FieldPath::new("data"), FieldPath::new("binaryData"));
    let data = cm.data.as_ref();
    let binary = cm.binary_data.as_ref();
    let mut total = 0;
    for (k, v) in data.into_iter().flatten() {
        let p = data_path.key(k);
        check_with(&mut errs, k, &p, config_map_key_errors);
        if binary.is_some_and(|b| b.contains_key(k)) {
            errs.push(FieldError::invalid(
                &p,
                k,
                "duplicate of key present in binaryData",
            ));
        }
        total += v.len();
    }
    for (k, v) in binary.into_iter().flatten() {
        let p = binary_path.key(k);
        check_with(&mut errs, k, &p, config_map_key_errors);
        if data.is_some_and(|d| d.contains_key(k)) {
            errs.push(FieldError::invalid(
                &p,
                k,
                "duplicate of key present in data",
            ));
        }
        total += v.0.len();
    }
    if total > MAX_DATA_SIZE {
        errs.push(FieldError::too_long(&data_path, MAX_DATA_SIZE));
    }
    errs
}

/// A ServiceAccount: its metadata (wk stores ServiceAccounts for the manifests that carry
/// them; it issues no tokens).
pub fn validate_service_account(sa: &ServiceAccount) -> Vec<FieldError> {
    validate_object_meta(&sa.metadata, true, &FieldPath::new("metadata"))
}

/// Validates a Secret: metadata; keys of `data` and `stringData` are config keys; at
/// most 1 MiB; and the keys its `type` requires (`tls.crt` and `tls.key` for
/// `kubernetes.io/tls`, and so on). `Opaque` and unknown types require nothing.
pub fn validate_secret(secret: &Secret) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&secret.metadata, true, &FieldPath::new("metadata"));
    let data_path = FieldPath::new("data");
    let string_path = FieldPath::new("stringData");
    let data = secret.data.as_ref();
    let strings = secret.string_data.as_ref();
    let mut total = 0;
    for (k, v) in data.into_iter().flatten() {
        check_with(&mut errs, k, &data_path.key(k), config_map_key_errors);
        total += v.0.len();
    }
    for (k, v) in strings.into_iter().flatten() {
        check_with(&mut errs, k, &string_path.key(k), config_map_key_errors);
        total += v.len();
    }
    if total > MAX_DATA_SIZE {
        errs.push(FieldError::too_long(&data_path, MAX_DATA_SIZE));
    }
    // `stringData` is merged into `data` on write, so either may hold a required key.
    let value_len = |key: &str| -> Option<usize> {
        data.and_then(|d| d.get(key))
            .map(|v| v.0.len())
            .or_else(|| strings.and_then(|s| s.get(key)).map(String::len))
    };
    let has = |key: &str| value_len(key).is_some();
    let required_keys: &[&str] = match secret.type_.as_deref().unwrap_or_default() {
        "kubernetes.io/service-account-token" => {
            let key = "kubernetes.io/service-account.name";
            let named = secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(key))
                .is_some_and(|v| !v.is_empty());
            if !named {
                errs.push(FieldError::required(
                    FieldPath::new("metadata").child("annotations").key(key),
                    "",
                ));
            }
            &[]
        }
        "kubernetes.io/dockercfg" if !has(".dockercfg") => &[".dockercfg"],
        "kubernetes.io/dockerconfigjson" if !has(".dockerconfigjson") => &[".dockerconfigjson"],
        // Either may be empty, but one must be there.
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            &["username", "password"]
        }
        "kubernetes.io/ssh-auth" if value_len("ssh-privatekey").unwrap_or(0) == 0 => {
            &["ssh-privatekey"]
        }
        "kubernetes.io/tls" => match (has("tls.crt"), has("tls.key")) {
            (true, true) => &[],
            (true, false) => &["tls.key"],
            (false, true) => &["tls.crt"],
            (false, false) => &["tls.crt", "tls.key"],
        },
        _ => &[],
    };
    for key in required_keys {
        errs.push(FieldError::required(data_path.key(key), ""));
    }
    errs
}

// ---------------------------------------------------------------------------------------
// Cluster objects: Namespace, Node, Lease, Event
// ---------------------------------------------------------------------------------------

/// Validates a Namespace: metadata (cluster-scoped, name a DNS-1123 label) and the
/// finalizer names of its spec.
pub fn validate_namespace(ns: &Namespace) -> Vec<FieldError> {
    let mut errs = validate_object_meta_with(
        &ns.metadata,
        false,
        NameRule::Dns1123Label,
        &FieldPath::new("metadata"),
    );
    let path = FieldPath::new("spec").child("finalizers");
    for f in ns.spec.iter().flat_map(|s| s.finalizers.iter().flatten()) {
        check_with(&mut errs, f, &path, qualified_name_errors);
    }
    errs
}

/// Validates a Node: metadata (cluster-scoped), pod CIDRs and taints (qualified-name
/// key, label value, a known effect, unique by key and effect).
pub fn validate_node(node: &Node) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&node.metadata, false, &FieldPath::new("metadata"));
    let path = FieldPath::new("spec");
    let Some(spec) = &node.spec else { return errs };
    if let Some(cidr) = non_empty(&spec.pod_cidr)
        && !is_cidr(cidr)
    {
        errs.push(FieldError::invalid(
            path.child("podCIDR"),
            cidr,
            INVALID_CIDR,
        ));
    }
    for (i, cidr) in spec.pod_cidrs.iter().flatten().enumerate() {
        if !is_cidr(cidr) {
            errs.push(FieldError::invalid(
                path.child("podCIDRs").index(i),
                cidr,
                INVALID_CIDR,
            ));
        }
    }
    let mut seen = HashSet::new();
    for (i, taint) in spec.taints.iter().flatten().enumerate() {
        let p = path.child("taints").index(i);
        check_with(
            &mut errs,
            &taint.key,
            &p.child("key"),
            qualified_name_errors,
        );
        let value = taint.value.as_deref().unwrap_or_default();
        let msgs = label_value_errors(value);
        if !msgs.is_empty() {
            errs.push(FieldError::invalid(p.child("value"), value, msgs.join(";")));
        }
        let effect_path = p.child("effect");
        if taint.effect.is_empty() {
            errs.push(FieldError::required(&effect_path, ""));
        } else {
            check_supported(
                &mut errs,
                Some(taint.effect.as_str()),
                &effect_path,
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            );
        }
        if !seen.insert((taint.key.as_str(), taint.effect.as_str())) {
            let mut e =
                FieldError::duplicate(&p, format!("{}={}:{}", taint.key, value, taint.effect));
            e.detail = "taints must be unique by key and effect pair".to_owned();
            errs.push(e);
        }
    }
    errs
}

/// Validates a Lease: metadata, `leaseDurationSeconds` > 0 and `leaseTransitions` ≥ 0.
pub fn validate_lease(lease: &Lease) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&lease.metadata, true, &FieldPath::new("metadata"));
    if let Some(spec) = &lease.spec {
        let path = FieldPath::new("spec");
        check_positive(
            &mut errs,
            spec.lease_duration_seconds,
            &path.child("leaseDurationSeconds"),
        );
        check_non_negative(
            &mut errs,
            spec.lease_transitions,
            &path.child("leaseTransitions"),
        );
    }
    errs
}

/// Validates an Event: metadata; `involvedObject` names a `kind` and `name` (a wk rule),
/// and its `namespace`, when set, is the event's own; `type` is `Normal` or `Warning`.
pub fn validate_event(event: &Event) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&event.metadata, true, &FieldPath::new("metadata"));
    let io = &event.involved_object;
    let io_path = FieldPath::new("involvedObject");
    if non_empty(&io.kind).is_none() {
        errs.push(FieldError::required(io_path.child("kind"), ""));
    }
    if non_empty(&io.name).is_none() {
        errs.push(FieldError::required(io_path.child("name"), ""));
    }
    if let Some(ns) = non_empty(&io.namespace)
        && non_empty(&event.metadata.namespace) != Some(ns)
    {
        errs.push(FieldError::invalid(
            io_path.child("namespace"),
            ns,
            "does not match event.namespace",
        ));
    }
    check_supported(
        &mut errs,
        event.type_.as_deref(),
        &FieldPath::new("type"),
        &["Normal", "Warning"],
    );
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::de::DeserializeOwned;
    use serde_json::{Value, json};

    fn from<T: DeserializeOwned>(v: Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    fn messages(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(ToString::to_string).collect()
    }

    /// Asserts the exact list of messages, in order.
    #[track_caller]
    fn assert_errors(errs: Vec<FieldError>, expected: &[&str]) {
        assert_eq!(messages(&errs), expected);
    }

    /// Asserts one message is among the errors.
    #[track_caller]
    fn assert_has(errs: &[FieldError], expected: &str) {
        let got = messages(errs);
        assert!(
            got.iter().any(|m| m == expected),
            "{expected:?} not in {got:#?}"
        );
    }

    fn pod_json() -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}
        })
    }

    fn pod(edit: impl FnOnce(&mut Value)) -> Vec<FieldError> {
        let mut v = pod_json();
        edit(&mut v);
        validate_pod(&from(v))
    }

    fn container(edit: impl FnOnce(&mut Value)) -> Vec<FieldError> {
        pod(|v| edit(&mut v["spec"]["containers"][0]))
    }

    fn template_json(restart: Option<&str>) -> Value {
        let mut t = json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]}
        });
        if let Some(r) = restart {
            t["spec"]["restartPolicy"] = json!(r);
        }
        t
    }

    fn deployment(edit: impl FnOnce(&mut Value)) -> Vec<FieldError> {
        let mut v = json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": template_json(None)
            }
        });
        edit(&mut v);
        validate_deployment(&from(v))
    }

    fn job(edit: impl FnOnce(&mut Value)) -> Vec<FieldError> {
        let mut v = json!({
            "metadata": {"name": "batch", "namespace": "default"},
            "spec": {"template": template_json(Some("Never"))}
        });
        edit(&mut v);
        validate_job(&from(v))
    }

    fn cron_job(edit: impl FnOnce(&mut Value)) -> Vec<FieldError> {
        let mut v = json!({
            "metadata": {"name": "nightly", "namespace": "default"},
            "spec": {
                "schedule": "0 3 * * *",
                "jobTemplate": {"spec": {"template": template_json(Some("OnFailure"))}}
            }
        });
        edit(&mut v);
        validate_cron_job(&from(v))
    }

    fn service(edit: impl FnOnce(&mut Value)) -> Vec<FieldError> {
        let mut v = json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
        });
        edit(&mut v);
        validate_service(&from(v))
    }

    // ---- errors and paths -------------------------------------------------------------

    #[test]
    fn field_errors_print_like_kubernetes() {
        let spec = FieldPath::new("spec");
        let cases = [
            (
                FieldError::invalid(spec.child("replicas"), -1, IS_NEGATIVE),
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
            ),
            (
                FieldError::required("metadata.name", "name or generateName is required"),
                "metadata.name: Required value: name or generateName is required",
            ),
            (
                FieldError::required(spec.child("containers").index(0).child("image"), ""),
                "spec.containers[0].image: Required value",
            ),
            (
                FieldError::not_supported(
                    spec.child("restartPolicy"),
                    "Sometimes",
                    &["Always", "OnFailure", "Never"],
                ),
                "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
            ),
            (
                FieldError::duplicate(spec.child("containers").index(1).child("name"), "web"),
                "spec.containers[1].name: Duplicate value: \"web\"",
            ),
            (
                FieldError::too_long("metadata.annotations", 262144),
                "metadata.annotations: Too long: may not be more than 262144 bytes",
            ),
            (
                FieldError::forbidden("metadata.namespace", "not allowed on this type"),
                "metadata.namespace: Forbidden: not allowed on this type",
            ),
            (
                FieldError::not_found("spec.volumes[0].name", "data"),
                "spec.volumes[0].name: Not found: \"data\"",
            ),
            (
                FieldError::invalid("spec.paused", true, "must be false"),
                "spec.paused: Invalid value: true: must be false",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn kinds_have_kubernetes_reasons() {
        let reasons: Vec<_> = [
            FieldErrorKind::Required,
            FieldErrorKind::Invalid,
            FieldErrorKind::NotSupported,
            FieldErrorKind::Duplicate,
            FieldErrorKind::TooLong,
            FieldErrorKind::Forbidden,
            FieldErrorKind::NotFound,
        ]
        .into_iter()
        .map(FieldErrorKind::reason)
        .collect();
        assert_eq!(
            reasons,
            [
                "FieldValueRequired",
                "FieldValueInvalid",
                "FieldValueNotSupported",
                "FieldValueDuplicate",
                "FieldValueTooLong",
                "FieldValueForbidden",
                "FieldValueNotFound",
            ]
        );
    }

    #[test]
    fn paths_and_values_render_like_go() {
        let p = FieldPath::new("metadata").child("labels").key("app");
        assert_eq!(p.as_str(), "metadata.labels[app]");
        assert_eq!(FieldPath::new("").child("kind").to_string(), "kind");
        assert_eq!(go_quote("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\x01\"");
        assert_eq!(go_quote("héllo"), "\"héllo\"");
        let labels: BTreeMap<String, String> =
            [("b".into(), "2".into()), ("a".into(), "1".into())].into();
        assert_eq!(
            go_string_map(Some(&labels)),
            "map[string]string{\"a\":\"1\", \"b\":\"2\"}"
        );
        assert_eq!(go_string_map(None), "map[string]string(nil)");
        // An error without a value prints none, even for kinds that show one.
        let e = FieldError {
            field: "x".into(),
            kind: FieldErrorKind::Invalid,
            value: None,
            detail: "bad".into(),
        };
        assert_eq!(e.to_string(), "x: Invalid value: bad");
    }

    // ---- string checks ----------------------------------------------------------------

    #[test]
    fn dns_names() {
        for ok in ["a", "my-name", "123-abc", &"a".repeat(63)] {
            assert!(is_dns1123_label(ok), "{ok}");
        }
        assert_eq!(dns1123_label_errors("my.name"), ["must not contain dots"]);
        assert_eq!(dns1123_label_errors("My-Name"), [DNS1123_LABEL_MSG]);
        assert_eq!(dns1123_label_errors(""), [DNS1123_LABEL_MSG]);
        assert_eq!(
            dns1123_label_errors(&"a".repeat(64)),
            ["must be no more than 63 characters"]
        );
        for bad in ["-a", "a-", "a_b", "a b"] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
        assert!(is_dns1123_subdomain("example.com"));
        assert!(is_dns1123_subdomain("a.b-c.1"));
        for bad in ["", ".a", "a.", "a..b", "A.com", "a_b.com"] {
            assert_eq!(
                dns1123_subdomain_errors(bad),
                [DNS1123_SUBDOMAIN_MSG],
                "{bad}"
            );
        }
        let long = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(63)
        );
        assert_eq!(
            dns1123_subdomain_errors(&long),
            ["must be no more than 253 characters"]
        );
        assert!(is_dns1035_label("web-1"));
        assert_eq!(dns1035_label_errors("1web"), [DNS1035_LABEL_MSG]);
    }

    #[test]
    fn qualified_names_and_label_values() {
        for ok in [
            "app",
            "MyName",
            "my.name",
            "123-abc",
            "example.com/tier",
            "a/b",
        ] {
            assert!(is_qualified_name(ok), "{ok}");
        }
        assert_eq!(
            qualified_name_errors("/a"),
            ["prefix part must be non-empty"]
        );
        assert_eq!(
            qualified_name_errors("Example.com/a"),
            [format!("prefix part {DNS1123_SUBDOMAIN_MSG}")]
        );
        assert_eq!(
            qualified_name_errors("a/"),
            [
                "name part must be non-empty".to_owned(),
                format!("name part {QUALIFIED_NAME_MSG}")
            ]
        );
        assert_eq!(
            qualified_name_errors("_a"),
            [format!("name part {QUALIFIED_NAME_MSG}")]
        );
        assert_eq!(
            qualified_name_errors(&"k".repeat(64)),
            ["name part must be no more than 63 characters"]
        );
        assert_eq!(
            qualified_name_errors("a/b/c"),
            [
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            ]
        );
        assert!(is_label_value(""));
        assert!(is_label_value("My_Value.1"));
        assert_eq!(label_value_errors("-x"), [LABEL_VALUE_MSG]);
        assert_eq!(
            label_value_errors(&"v".repeat(64)),
            ["must be no more than 63 characters"]
        );
    }

    #[test]
    fn port_names_env_names_and_config_keys() {
        assert!(is_port_name("http"));
        assert!(is_port_name("metrics-2"));
        assert_eq!(
            port_name_errors("1234"),
            ["must contain at least one letter (a-z)"]
        );
        assert_eq!(
            port_name_errors("HTTP_port"),
            ["must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"]
        );
        assert_eq!(
            port_name_errors("a--b"),
            ["must not contain consecutive hyphens (-)"]
        );
        assert_eq!(
            port_name_errors("-ab"),
            ["must not begin or end with a hyphen (-)"]
        );
        assert_eq!(
            port_name_errors("a-very-long-port-name"),
            ["must be no more than 15 characters"]
        );
        assert_eq!(port_number_errors(0), [PORT_RANGE]);
        assert!(port_number_errors(65535).is_empty());

        for ok in [
            "PATH",
            "my.env-name",
            "MY_ENV.NAME",
            "MyEnvName1",
            "_x",
            "-x",
        ] {
            assert!(is_env_var_name(ok), "{ok}");
        }
        assert_eq!(env_var_name_errors("1FOO"), [ENV_VAR_NAME_MSG]);
        assert_eq!(env_var_name_errors("A B"), [ENV_VAR_NAME_MSG]);
        assert_eq!(env_var_name_errors(".."), ["must not be '..'"]);
        assert_eq!(env_var_name_errors("..x"), ["must not start with '..'"]);

        for ok in ["key.name", "KEY_NAME", "key-name", ".hidden", "1"] {
            assert!(is_config_map_key(ok), "{ok}");
        }
        assert_eq!(config_map_key_errors("a/b"), [CONFIG_KEY_MSG]);
        assert_eq!(config_map_key_errors("."), ["must not be '.'"]);
        assert_eq!(
            config_map_key_errors(&"k".repeat(254)),
            ["must be no more than 253 characters"]
        );
    }

    // ---- metadata ---------------------------------------------------------------------

    #[test]
    fn object_meta_rules() {
        let meta = |v: Value| -> ObjectMeta { from(v) };
        let path = FieldPath::new("metadata");
        assert_errors(
            validate_object_meta(&meta(json!({"namespace": "default"})), true, &path),
            &["metadata.name: Required value: name or generateName is required"],
        );
        assert_errors(
            validate_object_meta(
                &meta(json!({"generateName": "web-", "namespace": "default"})),
                true,
                &path,
            ),
            &[],
        );
        assert_errors(
            validate_object_meta(
                &meta(json!({"generateName": "Web-", "namespace": "default"})),
                true,
                &path,
            ),
            &[&format!(
                "metadata.generateName: Invalid value: \"Web-\": {DNS1123_SUBDOMAIN_MSG}"
            )],
        );
        assert_errors(
            validate_object_meta(&meta(json!({"name": "Web"})), true, &path),
            &[
                &format!("metadata.name: Invalid value: \"Web\": {DNS1123_SUBDOMAIN_MSG}"),
                "metadata.namespace: Required value",
            ],
        );
        assert_errors(
            validate_object_meta(
                &meta(json!({"name": "n1", "namespace": "default"})),
                false,
                &path,
            ),
            &["metadata.namespace: Forbidden: not allowed on this type"],
        );
        assert_errors(
            validate_object_meta(
                &meta(json!({"name": "n1", "namespace": "Bad.NS"})),
                true,
                &path,
            ),
            &[&format!(
                "metadata.namespace: Invalid value: \"Bad.NS\": {DNS1123_LABEL_MSG}"
            )],
        );
        assert_errors(
            validate_object_meta(
                &meta(
                    json!({"name": "n1", "namespace": "d", "labels": {"app": "bad value", "-k": "v"}}),
                ),
                true,
                &path,
            ),
            &[
                &format!("metadata.labels: Invalid value: \"-k\": name part {QUALIFIED_NAME_MSG}"),
                &format!("metadata.labels: Invalid value: \"bad value\": {LABEL_VALUE_MSG}"),
            ],
        );
        assert_errors(
            validate_object_meta(
                &meta(json!({"name": "n1", "namespace": "d", "finalizers": ["a/b/c"]})),
                true,
                &path,
            ),
            &[&format!(
                "metadata.finalizers: Invalid value: \"a/b/c\": {}",
                qualified_name_errors("a/b/c")[0]
            )],
        );
        let huge = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT);
        assert_errors(
            validate_object_meta(
                &meta(json!({"name": "n1", "namespace": "d", "annotations": {"note": huge}})),
                true,
                &path,
            ),
            &["metadata.annotations: Too long: may not be more than 262144 bytes"],
        );
        // Annotation keys are compared in lower case, so upper case prefixes pass.
        assert_errors(
            validate_object_meta(
                &meta(
                    json!({"name": "n1", "namespace": "d", "annotations": {"Example.com/Note": ""}}),
                ),
                true,
                &path,
            ),
            &[],
        );
    }

    #[test]
    fn name_rules_per_kind() {
        let ns: Namespace = from(json!({"metadata": {"name": "my.ns"}}));
        assert_errors(
            validate_namespace(&ns),
            &["metadata.name: Invalid value: \"my.ns\": must not contain dots"],
        );
        let ns: Namespace =
            from(json!({"metadata": {"name": "team-a"}, "spec": {"finalizers": ["kubernetes"]}}));
        assert_errors(validate_namespace(&ns), &[]);
        assert_errors(
            service(|v| v["metadata"]["name"] = json!("1web")),
            &[&format!(
                "metadata.name: Invalid value: \"1web\": {DNS1035_LABEL_MSG}"
            )],
        );
        let long = "a".repeat(53);
        assert_errors(
            cron_job(|v| v["metadata"]["name"] = json!(long)),
            &[&format!(
                "metadata.name: Invalid value: \"{long}\": must be no more than 52 characters"
            )],
        );
    }

    // ---- pods -------------------------------------------------------------------------

    #[test]
    fn a_good_pod_is_valid() {
        assert_errors(pod(|_| {}), &[]);
        let full = pod(|v| {
            v["spec"] = json!({
                "runtimeClassName": "wasm",
                "restartPolicy": "OnFailure",
                "dnsPolicy": "ClusterFirst",
                "terminationGracePeriodSeconds": 10,
                "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cfg"}}],
                "initContainers": [
                    {"name": "setup", "image": "setup:1"},
                    {"name": "proxy", "image": "proxy:1", "restartPolicy": "Always",
                     "readinessProbe": {"tcpSocket": {"port": 15000}}}
                ],
                "containers": [{
                    "name": "app",
                    "image": "app:1",
                    "imagePullPolicy": "IfNotPresent",
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}, {"containerPort": 9090}],
                    "env": [{"name": "MODE", "value": "prod"},
                            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "tok", "key": "token"}}}],
                    "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}},
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "cfg", "mountPath": "/etc/app", "subPath": "app"}],
                    "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5, "successThreshold": 1},
                    "readinessProbe": {"exec": {"command": ["true"]}, "successThreshold": 2},
                    "lifecycle": {"preStop": {"sleep": {"seconds": 5}}}
                }]
            });
        });
        assert_errors(full, &[]);
    }

    #[test]
    fn pod_needs_metadata_and_containers() {
        assert_errors(
            pod(|v| {
                v["metadata"] = json!({});
                v["spec"]["containers"] = json!([]);
            }),
            &[
                "metadata.name: Required value: name or generateName is required",
                "metadata.namespace: Required value",
                "spec.containers: Required value",
            ],
        );
        assert_errors(
            validate_pod(&from(json!({"metadata": {"name": "p", "namespace": "d"}}))),
            &["spec.containers: Required value"],
        );
    }

    #[test]
    fn container_names_and_images() {
        assert_errors(
            container(|c| c["name"] = json!("App_1")),
            &[&format!(
                "spec.containers[0].name: Invalid value: \"App_1\": {DNS1123_LABEL_MSG}"
            )],
        );
        assert_errors(
            container(|c| c["name"] = json!("")),
            &["spec.containers[0].name: Required value"],
        );
        assert_errors(
            pod(|v| {
                v["spec"]["containers"] =
                    json!([{"name": "web", "image": "a"}, {"name": "web", "image": "b"}])
            }),
            &["spec.containers[1].name: Duplicate value: \"web\""],
        );
        assert_errors(
            pod(|v| v["spec"]["initContainers"] = json!([{"name": "app", "image": "a"}])),
            &["spec.initContainers[0].name: Duplicate value: \"app\""],
        );
        assert_errors(
            container(|c| {
                c.as_object_mut()
                    .unwrap()
                    .remove("image")
                    .map(drop)
                    .unwrap_or(())
            }),
            &["spec.containers[0].image: Required value"],
        );
        assert_errors(
            container(|c| c["image"] = json!(" app:1")),
            &[
                "spec.containers[0].image: Invalid value: \" app:1\": must not have leading or trailing whitespace",
            ],
        );
        assert_errors(
            container(|c| c["imagePullPolicy"] = json!("Sometimes")),
            &[
                "spec.containers[0].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
            ],
        );
    }

    #[test]
    fn container_ports() {
        assert_errors(
            container(|c| {
                c["ports"] = json!([
                    {"containerPort": 70000},
                    {"containerPort": 0},
                    {"containerPort": 80, "hostPort": -1, "protocol": "HTTP"},
                    {"containerPort": 81, "name": "1234"},
                    {"containerPort": 82, "name": "http"},
                    {"containerPort": 83, "name": "http"},
                    {"containerPort": 84, "hostPort": 0}
                ])
            }),
            &[
                "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.containers[0].ports[1].containerPort: Required value",
                "spec.containers[0].ports[2].hostPort: Invalid value: -1: must be between 1 and 65535, inclusive",
                "spec.containers[0].ports[2].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                "spec.containers[0].ports[3].name: Invalid value: \"1234\": must contain at least one letter (a-z)",
                "spec.containers[0].ports[5].name: Duplicate value: \"http\"",
            ],
        );
        // Port names are unique per container, not per pod.
        assert_errors(
            pod(|v| {
                v["spec"]["containers"] = json!([
                    {"name": "a", "image": "a", "ports": [{"name": "http", "containerPort": 80}]},
                    {"name": "b", "image": "b", "ports": [{"name": "http", "containerPort": 81}]}
                ])
            }),
            &[],
        );
    }

    #[test]
    fn container_env() {
        assert_errors(
            container(|c| {
                c["env"] = json!([
                    {"name": "1FOO", "value": "x"},
                    {"name": ""},
                    {"name": "A", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"},
                                                "configMapKeyRef": {"name": "cm", "key": "k"}}},
                    {"name": "C", "valueFrom": {}},
                    {"name": "D", "valueFrom": {"secretKeyRef": {"name": "", "key": "a/b"}}}
                ])
            }),
            &[
                &format!(
                    "spec.containers[0].env[0].name: Invalid value: \"1FOO\": {ENV_VAR_NAME_MSG}"
                ),
                "spec.containers[0].env[1].name: Required value",
                "spec.containers[0].env[2].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty",
                "spec.containers[0].env[3].valueFrom: Invalid value: \"\": may not have more than one field specified at a time",
                "spec.containers[0].env[4].valueFrom: Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
                "spec.containers[0].env[5].valueFrom.secretKeyRef.name: Required value",
                &format!(
                    "spec.containers[0].env[5].valueFrom.secretKeyRef.key: Invalid value: \"a/b\": {CONFIG_KEY_MSG}"
                ),
            ],
        );
    }

    #[test]
    fn container_resources() {
        let resources = |r: Value| container(|c| c["resources"] = r);
        assert_errors(
            resources(json!({"limits": {"cpu": "abc"}, "requests": {"memory": "-1Gi"}})),
            &[
                &format!(
                    "spec.containers[0].resources.limits[cpu]: Invalid value: \"abc\": {QUANTITY_MSG}"
                ),
                "spec.containers[0].resources.requests[memory]: Invalid value: \"-1Gi\": must be greater than or equal to 0",
            ],
        );
        assert_errors(
            resources(json!({"limits": {"cpu": "1"}, "requests": {"cpu": "1500m"}})),
            &[
                "spec.containers[0].resources.requests: Invalid value: \"1500m\": must be less than or equal to cpu limit of 1",
            ],
        );
        assert_errors(
            resources(json!({"limits": {"memory": "1Gi"}, "requests": {"memory": "1.5Gi"}})),
            &[
                "spec.containers[0].resources.requests: Invalid value: \"1536Mi\": must be less than or equal to memory limit of 1Gi",
            ],
        );
        assert_errors(
            resources(json!({"limits": {"memory": "1Gi"}, "requests": {"memory": "1073741824"}})),
            &[],
        );
        assert_errors(resources(json!({"requests": {"cpu": "4"}})), &[]);
        assert_errors(
            resources(
                json!({"limits": {"example.com/gpu": "2"}, "requests": {"example.com/gpu": "1"}}),
            ),
            &[
                "spec.containers[0].resources.requests: Invalid value: \"1\": must be equal to example.com/gpu limit of 2",
            ],
        );
        assert_errors(
            resources(json!({"limits": {"gpu": "1"}})),
            &[
                "spec.containers[0].resources.limits[gpu]: Invalid value: \"gpu\": must be a standard resource for containers",
            ],
        );
        assert_errors(
            resources(json!({"limits": {"hugepages-2Mi": "4Mi", "ephemeral-storage": "1Gi"}})),
            &[],
        );
    }

    #[test]
    fn pod_level_policies() {
        assert_errors(
            pod(|v| v["spec"]["restartPolicy"] = json!("Sometimes")),
            &[
                "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
            ],
        );
        assert_errors(
            pod(|v| v["spec"]["runtimeClassName"] = json!("runc")),
            &[
                "spec.runtimeClassName: Unsupported value: \"runc\": supported values: \"wasm\", \"oci\"",
            ],
        );
        assert_errors(pod(|v| v["spec"]["runtimeClassName"] = json!("oci")), &[]);
        assert_errors(
            pod(|v| v["spec"]["terminationGracePeriodSeconds"] = json!(-1)),
            &[
                "spec.terminationGracePeriodSeconds: Invalid value: -1: must be greater than or equal to 0",
            ],
        );
        assert_errors(
            pod(|v| v["spec"]["activeDeadlineSeconds"] = json!(0)),
            &[
                "spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 4294967295, inclusive",
            ],
        );
        assert_errors(
            pod(|v| v["spec"]["dnsPolicy"] = json!("Bogus")),
            &[
                "spec.dnsPolicy: Unsupported value: \"Bogus\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\"",
            ],
        );
        assert_errors(
            pod(|v| v["spec"]["dnsPolicy"] = json!("None")),
            &["spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None"],
        );
        assert_errors(
            pod(|v| {
                v["spec"]["nodeName"] = json!("Node_1");
                v["spec"]["nodeSelector"] = json!({"disk": "ssd!"});
            }),
            &[
                &format!("spec.nodeSelector: Invalid value: \"ssd!\": {LABEL_VALUE_MSG}"),
                &format!("spec.nodeName: Invalid value: \"Node_1\": {DNS1123_SUBDOMAIN_MSG}"),
            ],
        );
    }

    #[test]
    fn volumes_and_mounts() {
        assert_errors(
            pod(|v| {
                v["spec"]["volumes"] = json!([
                    {"name": "data", "emptyDir": {}},
                    {"name": "data", "emptyDir": {}},
                    {"name": "none"},
                    {"name": "two", "hostPath": {"path": "/tmp"}, "emptyDir": {}},
                    {"name": "Bad", "secret": {}},
                    {"name": "hp", "hostPath": {"path": ""}}
                ]);
                v["spec"]["containers"][0]["volumeMounts"] = json!([
                    {"name": "data", "mountPath": "/data"},
                    {"name": "missing", "mountPath": "/data"},
                    {"name": "data", "mountPath": "/x", "subPath": "../etc"},
                    {"name": "data", "mountPath": "/y", "subPath": "/abs"}
                ]);
            }),
            &[
                "spec.volumes[1].name: Duplicate value: \"data\"",
                "spec.volumes[2]: Required value: must specify a volume type",
                "spec.volumes[3].emptyDir: Forbidden: may not specify more than 1 volume type",
                "spec.volumes[4].secret.secretName: Required value",
                &format!("spec.volumes[4].name: Invalid value: \"Bad\": {DNS1123_LABEL_MSG}"),
                "spec.volumes[5].hostPath.path: Required value",
                "spec.containers[0].volumeMounts[1].name: Not found: \"missing\"",
                "spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/data\": must be unique",
                "spec.containers[0].volumeMounts[2].subPath: Invalid value: \"../etc\": must not contain '..'",
                "spec.containers[0].volumeMounts[3].subPath: Invalid value: \"/abs\": must be a relative path",
            ],
        );
    }

    #[test]
    fn probes_and_lifecycle() {
        assert_errors(
            container(|c| {
                c["livenessProbe"] = json!({"httpGet": {"port": 8080}, "periodSeconds": 0, "timeoutSeconds": 0,
                                            "successThreshold": 2, "initialDelaySeconds": -1});
                c["readinessProbe"] = json!({"failureThreshold": 0});
                c["startupProbe"] = json!({"exec": {"command": []}, "httpGet": {"port": "Not_A_Name", "scheme": "FTP"},
                                           "terminationGracePeriodSeconds": 0});
            }),
            &[
                "spec.containers[0].livenessProbe.initialDelaySeconds: Invalid value: -1: must be greater than or equal to 0",
                "spec.containers[0].livenessProbe.timeoutSeconds: Invalid value: 0: must be greater than or equal to 1",
                "spec.containers[0].livenessProbe.periodSeconds: Invalid value: 0: must be greater than or equal to 1",
                "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
                "spec.containers[0].readinessProbe: Required value: must specify a handler type",
                "spec.containers[0].readinessProbe.failureThreshold: Invalid value: 0: must be greater than or equal to 1",
                "spec.containers[0].startupProbe.exec.command: Required value",
                "spec.containers[0].startupProbe.httpGet: Forbidden: may not specify more than 1 handler type",
                "spec.containers[0].startupProbe.terminationGracePeriodSeconds: Invalid value: 0: must be greater than 0",
            ],
        );
        assert_errors(
            container(|c| {
                c["readinessProbe"] = json!({"httpGet": {"port": "Not_A_Name", "scheme": "FTP"}})
            }),
            &[
                "spec.containers[0].readinessProbe.httpGet.port: Invalid value: \"Not_A_Name\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                "spec.containers[0].readinessProbe.httpGet.scheme: Unsupported value: \"FTP\": supported values: \"HTTP\", \"HTTPS\"",
            ],
        );
        assert_errors(
            container(|c| c["livenessProbe"] = json!({"grpc": {"port": 0}})),
            &[
                "spec.containers[0].livenessProbe.grpc.port: Invalid value: 0: must be between 1 and 65535, inclusive",
            ],
        );
        assert_errors(
            container(|c| {
                c["lifecycle"] = json!({"postStart": {}, "preStop": {"sleep": {"seconds": 60}}})
            }),
            &[
                "spec.containers[0].lifecycle.postStart: Required value: must specify a handler type",
                "spec.containers[0].lifecycle.preStop.sleep.seconds: Invalid value: 60: must be non-negative and less than terminationGracePeriodSeconds (30)",
            ],
        );
    }

    #[test]
    fn init_containers_and_restart_policies() {
        assert_errors(
            pod(|v| {
                v["spec"]["initContainers"] = json!([
                    {"name": "init", "image": "i", "readinessProbe": {"exec": {"command": ["true"]}}},
                    {"name": "side", "image": "s", "restartPolicy": "OnFailure"}
                ]);
                v["spec"]["containers"][0]["restartPolicy"] = json!("Always");
            }),
            &[
                "spec.containers[0].restartPolicy: Forbidden: may not be set for non-init containers",
                "spec.initContainers[0].readinessProbe: Forbidden: may not be set for init containers without restartPolicy=Always",
                "spec.initContainers[1].restartPolicy: Unsupported value: \"OnFailure\": supported values: \"Always\"",
            ],
        );
    }

    // ---- workloads --------------------------------------------------------------------

    #[test]
    fn a_good_deployment_is_valid() {
        assert_errors(deployment(|_| {}), &[]);
        assert_errors(
            deployment(|v| {
                v["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "0%"}});
                v["spec"]["revisionHistoryLimit"] = json!(0);
                v["spec"]["minReadySeconds"] = json!(5);
                v["spec"]["progressDeadlineSeconds"] = json!(600);
                v["spec"]["selector"] = json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]});
            }),
            &[],
        );
    }

    #[test]
    fn deployment_counts() {
        assert_errors(
            deployment(|v| {
                v["spec"]["replicas"] = json!(-1);
                v["spec"]["revisionHistoryLimit"] = json!(-2);
                v["spec"]["minReadySeconds"] = json!(10);
                v["spec"]["progressDeadlineSeconds"] = json!(10);
            }),
            &[
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                "spec.revisionHistoryLimit: Invalid value: -2: must be greater than or equal to 0",
                "spec.progressDeadlineSeconds: Invalid value: 10: must be greater than minReadySeconds",
            ],
        );
        assert_errors(
            validate_deployment(&from(json!({"metadata": {"name": "d", "namespace": "n"}}))),
            &["spec: Required value"],
        );
    }

    #[test]
    fn deployment_selector() {
        assert_errors(
            deployment(|v| v["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"})),
            &[
                "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`",
            ],
        );
        assert_errors(
            deployment(|v| v["spec"]["template"]["metadata"] = json!({})),
            &[
                "spec.template.metadata.labels: Invalid value: map[string]string(nil): `selector` does not match template `labels`",
            ],
        );
        assert_errors(
            deployment(|v| v["spec"]["selector"] = json!({})),
            &["spec.selector: Invalid value: {}: empty selector is invalid for deployment"],
        );
        assert_errors(
            deployment(|v| {
                v["spec"]["selector"] = json!({"matchExpressions": [
                    {"key": "app", "operator": "In", "values": []},
                    {"key": "tier", "operator": "Exists", "values": ["x"]},
                    {"key": "env", "operator": "Gt", "values": ["1"]}
                ]})
            }),
            &[
                "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
                "spec.selector.matchExpressions[1].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                "spec.selector.matchExpressions[2].operator: Invalid value: \"Gt\": not a valid selector operator",
            ],
        );
    }

    #[test]
    fn deployment_template_and_strategy() {
        assert_errors(
            deployment(|v| v["spec"]["template"]["spec"]["restartPolicy"] = json!("Never")),
            &[
                "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
            ],
        );
        assert_errors(
            deployment(|v| v["spec"]["template"]["spec"]["containers"][0]["image"] = json!("")),
            &["spec.template.spec.containers[0].image: Required value"],
        );
        assert_errors(
            deployment(|v| v["spec"]["strategy"] = json!({"type": "BlueGreen"})),
            &[
                "spec.strategy.type: Unsupported value: \"BlueGreen\": supported values: \"Recreate\", \"RollingUpdate\"",
            ],
        );
        assert_errors(
            deployment(|v| {
                v["spec"]["strategy"] =
                    json!({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}})
            }),
            &[
                "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0",
            ],
        );
        assert_errors(
            deployment(|v| {
                v["spec"]["strategy"] =
                    json!({"rollingUpdate": {"maxSurge": "0%", "maxUnavailable": "0%"}})
            }),
            &[
                "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"0%\": may not be 0 when `maxSurge` is 0",
            ],
        );
        assert_errors(
            deployment(|v| {
                v["spec"]["strategy"] =
                    json!({"rollingUpdate": {"maxSurge": "abc", "maxUnavailable": "150%"}})
            }),
            &[
                &format!(
                    "spec.strategy.rollingUpdate.maxSurge: Invalid value: \"abc\": {PERCENT_MSG}"
                ),
                "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"150%\": must not be greater than 100%",
            ],
        );
        assert_errors(
            deployment(|v| v["spec"]["strategy"] = json!({"rollingUpdate": {"maxSurge": -1}})),
            &[
                "spec.strategy.rollingUpdate.maxSurge: Invalid value: -1: must be greater than or equal to 0",
            ],
        );
        assert_errors(
            deployment(|v| {
                v["spec"]["strategy"] = json!({"type": "Recreate", "rollingUpdate": {}})
            }),
            &[
                "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'",
            ],
        );
        assert_errors(
            deployment(|v| v["spec"]["strategy"] = json!({"type": "Recreate"})),
            &[],
        );
    }

    #[test]
    fn replica_sets() {
        let rs = |edit: &dyn Fn(&mut Value)| {
            let mut v = json!({
                "metadata": {"name": "web-1", "namespace": "default"},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": template_json(None)}
            });
            edit(&mut v);
            validate_replica_set(&from(v))
        };
        assert_errors(rs(&|_| {}), &[]);
        assert_errors(
            rs(&|v| {
                v["spec"].as_object_mut().unwrap().remove("template");
                v["spec"]["replicas"] = json!(-3);
            }),
            &[
                "spec.replicas: Invalid value: -3: must be greater than or equal to 0",
                "spec.template: Required value",
            ],
        );
        assert_errors(
            rs(&|v| v["spec"]["selector"] = json!({"matchLabels": {"app": "api"}})),
            &[
                "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`",
            ],
        );
        assert_errors(
            rs(&|v| v["spec"]["template"]["spec"]["activeDeadlineSeconds"] = json!(5)),
            &[
                "spec.template.spec.activeDeadlineSeconds: Invalid value: 5: activeDeadlineSeconds in ReplicaSet is not Supported",
            ],
        );
    }

    #[test]
    fn daemon_sets() {
        let ds = |edit: &dyn Fn(&mut Value)| {
            let mut v = json!({
                "metadata": {"name": "agent", "namespace": "kube-system"},
                "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template_json(None)}
            });
            edit(&mut v);
            validate_daemon_set(&from(v))
        };
        assert_errors(ds(&|_| {}), &[]);
        assert_errors(
            ds(&|v| v["spec"]["updateStrategy"] = json!({"type": "OnDelete"})),
            &[],
        );
        assert_errors(
            ds(&|v| v["spec"]["selector"] = json!({})),
            &["spec.selector: Invalid value: {}: empty selector is invalid for daemonset"],
        );
        assert_errors(
            ds(&|v| v["spec"]["updateStrategy"] = json!({"rollingUpdate": {"maxSurge": 1}})),
            &[
                "spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: 1: may not be set when maxUnavailable is non-zero",
            ],
        );
        assert_errors(
            ds(&|v| v["spec"]["updateStrategy"] = json!({"rollingUpdate": {"maxUnavailable": 0}})),
            &[
                "spec.updateStrategy.rollingUpdate.maxUnavailable: Required value: cannot be 0 when maxSurge is 0",
            ],
        );
        assert_errors(
            ds(&|v| {
                v["spec"]["updateStrategy"] =
                    json!({"rollingUpdate": {"maxUnavailable": 0, "maxSurge": "10%"}})
            }),
            &[],
        );
        assert_errors(
            ds(&|v| v["spec"]["updateStrategy"] = json!({"type": "Always"})),
            &[
                "spec.updateStrategy.type: Unsupported value: \"Always\": supported values: \"RollingUpdate\", \"OnDelete\"",
            ],
        );
        assert_errors(
            ds(&|v| v["spec"]["template"]["spec"]["restartPolicy"] = json!("OnFailure")),
            &[
                "spec.template.spec.restartPolicy: Unsupported value: \"OnFailure\": supported values: \"Always\"",
            ],
        );
    }

    // ---- batch ------------------------------------------------------------------------

    #[test]
    fn jobs() {
        assert_errors(job(|_| {}), &[]);
        assert_errors(
            job(|v| {
                v["spec"]["template"]["spec"]
                    .as_object_mut()
                    .unwrap()
                    .remove("restartPolicy")
                    .map(drop)
                    .unwrap_or(())
            }),
            &[
                "spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\"",
            ],
        );
        assert_errors(
            job(|v| v["spec"]["template"]["spec"]["restartPolicy"] = json!("Always")),
            &[
                "spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\"",
            ],
        );
        assert_errors(
            job(|v| {
                v["spec"]["parallelism"] = json!(-1);
                v["spec"]["completions"] = json!(-1);
                v["spec"]["backoffLimit"] = json!(-1);
                v["spec"]["activeDeadlineSeconds"] = json!(0);
                v["spec"]["ttlSecondsAfterFinished"] = json!(-1);
            }),
            &[
                "spec.parallelism: Invalid value: -1: must be greater than or equal to 0",
                "spec.completions: Invalid value: -1: must be greater than or equal to 0",
                "spec.activeDeadlineSeconds: Invalid value: 0: must be greater than 0",
                "spec.backoffLimit: Invalid value: -1: must be greater than or equal to 0",
                "spec.ttlSecondsAfterFinished: Invalid value: -1: must be greater than or equal to 0",
            ],
        );
        assert_errors(
            job(|v| v["spec"]["completionMode"] = json!("Indexed")),
            &["spec.completions: Required value: when completion mode is Indexed"],
        );
        assert_errors(
            job(|v| v["spec"]["completionMode"] = json!("Sorted")),
            &[
                "spec.completionMode: Unsupported value: \"Sorted\": supported values: \"NonIndexed\", \"Indexed\"",
            ],
        );
        assert_errors(
            job(|v| v["spec"]["selector"] = json!({"matchLabels": {"app": "db"}})),
            &[
                "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`",
            ],
        );
        assert_errors(
            job(|v| v["spec"]["selector"] = json!({"matchLabels": {"app": "web"}})),
            &[],
        );
    }

    #[test]
    fn cron_jobs() {
        assert_errors(cron_job(|_| {}), &[]);
        assert_errors(
            cron_job(|v| v["spec"]["schedule"] = json!("")),
            &["spec.schedule: Required value"],
        );
        assert_errors(
            cron_job(|v| v["spec"]["schedule"] = json!("* * *")),
            &[
                "spec.schedule: Invalid value: \"* * *\": expected exactly 5 fields, found 3: [* * *]",
            ],
        );
        assert_errors(
            cron_job(|v| v["spec"]["schedule"] = json!("TZ=UTC 0 3 * * *")),
            &[
                "spec.schedule: Invalid value: \"TZ=UTC 0 3 * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            ],
        );
        assert_errors(
            cron_job(|v| {
                v["spec"]["concurrencyPolicy"] = json!("Sometimes");
                v["spec"]["startingDeadlineSeconds"] = json!(-1);
                v["spec"]["successfulJobsHistoryLimit"] = json!(-1);
                v["spec"]["failedJobsHistoryLimit"] = json!(-1);
                v["spec"]["timeZone"] = json!("Local");
            }),
            &[
                "spec.startingDeadlineSeconds: Invalid value: -1: must be greater than or equal to 0",
                "spec.timeZone: Invalid value: \"Local\": timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
                "spec.concurrencyPolicy: Unsupported value: \"Sometimes\": supported values: \"Allow\", \"Forbid\", \"Replace\"",
                "spec.successfulJobsHistoryLimit: Invalid value: -1: must be greater than or equal to 0",
                "spec.failedJobsHistoryLimit: Invalid value: -1: must be greater than or equal to 0",
            ],
        );
        assert_errors(
            cron_job(|v| {
                let spec = &mut v["spec"]["jobTemplate"]["spec"];
                spec["selector"] = json!({"matchLabels": {"a": "b"}});
                spec["manualSelector"] = json!(true);
                spec["template"]["spec"]["restartPolicy"] = json!("Always");
            }),
            &[
                "spec.jobTemplate.spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\"",
                "spec.jobTemplate.spec.selector: Invalid value: {\"matchLabels\":{\"a\":\"b\"}}: `selector` will be auto-generated",
                "spec.jobTemplate.spec.manualSelector: Unsupported value: true: supported values: \"nil\", \"false\"",
            ],
        );
        assert_errors(
            cron_job(|v| v["spec"]["jobTemplate"] = json!({})),
            &[
                "spec.jobTemplate.spec.template.spec.containers: Required value",
                "spec.jobTemplate.spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\"",
            ],
        );
    }

    #[test]
    fn cron_schedules() {
        for ok in [
            "* * * * *",
            "0 3 * * *",
            "*/15 9-17 * * 1-5",
            "0 0 1,15 * ?",
            "0 0 * JAN-MAR mon-fri",
            "5/15 * * * *",
            "0-59/2 0-23 1-31 1-12 0-6",
            "  0   3 * *  *  ",
            "@hourly",
            "@daily",
            "@midnight",
            "@weekly",
            "@monthly",
            "@yearly",
            "@annually",
            "@every 1h30m",
            "@every 1.5s",
            "@every 0",
        ] {
            assert_eq!(validate_cron_schedule(ok), Ok(()), "{ok}");
        }
        let cases = [
            ("", "empty spec string"),
            ("60 * * * *", "end of range (60) above maximum (59): 60"),
            ("* 24 * * *", "end of range (24) above maximum (23): 24"),
            ("* * 0 * *", "beginning of range (0) below minimum (1): 0"),
            ("* * * 13 *", "end of range (13) above maximum (12): 13"),
            ("* * * * 7", "end of range (7) above maximum (6): 7"),
            (
                "*/0 * * * *",
                "step of range should be a positive number: */0",
            ),
            (
                "5-1 * * * *",
                "beginning of range (5) beyond end of range (1): 5-1",
            ),
            ("1-2-3 * * * *", "too many hyphens: 1-2-3"),
            ("*/2/3 * * * *", "too many slashes: */2/3"),
            (
                "a * * * *",
                "failed to parse int from a: strconv.Atoi: parsing \"a\": invalid syntax",
            ),
            (
                "1,,2 * * * *",
                "failed to parse int from : strconv.Atoi: parsing \"\": invalid syntax",
            ),
            (
                "* * * * * *",
                "expected exactly 5 fields, found 6: [* * * * * *]",
            ),
            ("@fortnightly", "unrecognized descriptor: @fortnightly"),
            ("@every", "unrecognized descriptor: @every"),
            (
                "@every 5x",
                "failed to parse duration @every 5x: time: unknown unit \"x\" in duration \"5x\"",
            ),
            (
                "@every 5",
                "failed to parse duration @every 5: time: missing unit in duration \"5\"",
            ),
            (
                "@every .s",
                "failed to parse duration @every .s: time: invalid duration \".s\"",
            ),
        ];
        for (schedule, want) in cases {
            assert_eq!(
                validate_cron_schedule(schedule),
                Err(want.to_owned()),
                "{schedule}"
            );
        }
    }

    // ---- services and endpoints -------------------------------------------------------

    #[test]
    fn services() {
        assert_errors(service(|_| {}), &[]);
        assert_errors(
            service(|v| v["spec"] = json!({"ports": [], "clusterIP": "None"})),
            &[],
        );
        assert_errors(
            service(|v| v["spec"] = json!({})),
            &["spec.ports: Required value"],
        );
        assert_errors(
            service(|v| {
                v["spec"]["ports"] = json!([
                    {"port": 0, "protocol": "ICMP", "targetPort": "Not_A_Name"},
                    {"port": 80, "targetPort": 70000}
                ])
            }),
            &[
                "spec.ports[0].name: Required value",
                "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                "spec.ports[0].targetPort: Invalid value: \"Not_A_Name\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                "spec.ports[1].name: Required value",
                "spec.ports[1].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            ],
        );
        assert_errors(
            service(|v| {
                v["spec"]["ports"] = json!([
                    {"name": "http", "port": 80},
                    {"name": "http", "port": 80},
                    {"name": "dns", "port": 80, "protocol": "UDP"}
                ])
            }),
            &[
                "spec.ports[1].name: Duplicate value: \"http\"",
                "spec.ports[1]: Duplicate value: {\"port\":80,\"protocol\":\"TCP\"}",
            ],
        );
        assert_errors(
            service(|v| v["spec"]["ports"][0]["nodePort"] = json!(30080)),
            &["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"],
        );
        assert_errors(
            service(|v| {
                v["spec"]["type"] = json!("NodePort");
                v["spec"]["ports"] = json!([{"name": "a", "port": 80, "nodePort": 80}, {"name": "b", "port": 81, "nodePort": 80}]);
            }),
            &[
                "spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767",
                "spec.ports[1].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767",
                "spec.ports[1].nodePort: Duplicate value: 80",
            ],
        );
        assert_errors(
            service(|v| {
                v["spec"]["type"] = json!("NodePort");
                v["spec"]["ports"][0]["nodePort"] = json!(30080);
            }),
            &[],
        );
        assert_errors(
            service(|v| {
                v["spec"]["type"] = json!("Internal");
                v["spec"]["sessionAffinity"] = json!("Sticky");
                v["spec"]["clusterIP"] = json!("10.0.0.300");
            }),
            &[
                "spec.sessionAffinity: Unsupported value: \"Sticky\": supported values: \"ClientIP\", \"None\"",
                "spec.type: Unsupported value: \"Internal\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
                "spec.clusterIP: Invalid value: \"10.0.0.300\": must be a valid IP address (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ],
        );
        assert_errors(
            service(|v| {
                v["spec"]["type"] = json!("LoadBalancer");
                v["spec"]["clusterIP"] = json!("None");
            }),
            &[
                "spec.clusterIP: Invalid value: \"None\": may not be set to 'None' for LoadBalancer services",
            ],
        );
        assert_errors(service(|v| v["spec"]["clusterIP"] = json!("fd00::10")), &[]);
    }

    #[test]
    fn external_name_services() {
        assert_errors(
            service(|v| {
                v["spec"] = json!({"type": "ExternalName", "externalName": "db.example.com."})
            }),
            &[],
        );
        assert_errors(
            service(|v| v["spec"] = json!({"type": "ExternalName", "clusterIP": "10.0.0.1"})),
            &[
                "spec.clusterIP: Forbidden: may not be set for ExternalName services",
                "spec.externalName: Required value",
            ],
        );
        assert_errors(
            service(|v| v["spec"] = json!({"type": "ExternalName", "externalName": "DB"})),
            &[&format!(
                "spec.externalName: Invalid value: \"DB\": {DNS1123_SUBDOMAIN_MSG}"
            )],
        );
    }

    #[test]
    fn endpoints() {
        let ep = |subsets: Value| {
            validate_endpoints(&from(
                json!({"metadata": {"name": "web", "namespace": "default"}, "subsets": subsets}),
            ))
        };
        assert_errors(
            ep(
                json!([{"addresses": [{"ip": "127.0.0.1", "hostname": "web-0"}], "notReadyAddresses": [{"ip": "::1"}],
                       "ports": [{"port": 80}]}]),
            ),
            &[],
        );
        assert_errors(
            ep(json!([
                {"ports": [{"port": 80}]},
                {"addresses": [{"ip": "nope"}, {"ip": ""}], "ports": [{"port": 80}, {"name": "b", "port": 0, "protocol": "ICMP"}]}
            ])),
            &[
                "subsets[0]: Required value: must specify `addresses` or `notReadyAddresses`",
                "subsets[1].addresses[0].ip: Invalid value: \"nope\": must be a valid IP address (e.g. 10.9.8.7 or 2001:db8::ffff)",
                "subsets[1].addresses[1].ip: Required value",
                "subsets[1].ports[0].name: Required value",
                "subsets[1].ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                "subsets[1].ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
            ],
        );
    }

    // ---- configuration ----------------------------------------------------------------

    #[test]
    fn config_maps() {
        let cm = |body: Value| {
            let mut v = json!({"metadata": {"name": "cfg", "namespace": "default"}});
            v.as_object_mut()
                .unwrap()
                .extend(body.as_object().unwrap().clone());
            validate_config_map(&from(v))
        };
        assert_errors(
            cm(json!({"data": {"app.yaml": "x: 1"}, "binaryData": {"logo.png": "YQ=="}})),
            &[],
        );
        assert_errors(
            cm(json!({"data": {"bad key": "x", "a": "1"}, "binaryData": {"a": "YQ=="}})),
            &[
                "data[a]: Invalid value: \"a\": duplicate of key present in binaryData",
                &format!("data[bad key]: Invalid value: \"bad key\": {CONFIG_KEY_MSG}"),
                "binaryData[a]: Invalid value: \"a\": duplicate of key present in data",
            ],
        );
        assert_errors(
            cm(json!({"data": {"big": "x".repeat(MAX_DATA_SIZE + 1)}})),
            &["data: Too long: may not be more than 1048576 bytes"],
        );
    }

    #[test]
    fn secrets() {
        let secret = |body: Value| {
            let mut v = json!({"metadata": {"name": "s", "namespace": "default"}});
            v.as_object_mut()
                .unwrap()
                .extend(body.as_object().unwrap().clone());
            validate_secret(&from(v))
        };
        assert_errors(
            secret(json!({"data": {"token": "YQ=="}, "stringData": {"user": "me"}})),
            &[],
        );
        assert_errors(
            secret(json!({"data": {"..": "YQ=="}, "stringData": {"a/b": "x"}})),
            &[
                "data[..]: Invalid value: \"..\": must not be '..'",
                &format!("stringData[a/b]: Invalid value: \"a/b\": {CONFIG_KEY_MSG}"),
            ],
        );
        assert_errors(
            secret(json!({"type": "kubernetes.io/tls"})),
            &[
                "data[tls.crt]: Required value",
                "data[tls.key]: Required value",
            ],
        );
        assert_errors(
            secret(
                json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "YQ=="}, "stringData": {"tls.key": "k"}}),
            ),
            &[],
        );
        assert_errors(
            secret(json!({"type": "kubernetes.io/basic-auth"})),
            &[
                "data[username]: Required value",
                "data[password]: Required value",
            ],
        );
        assert_errors(
            secret(json!({"type": "kubernetes.io/basic-auth", "stringData": {"password": ""}})),
            &[],
        );
        assert_errors(
            secret(json!({"type": "kubernetes.io/ssh-auth", "data": {"ssh-privatekey": ""}})),
            &["data[ssh-privatekey]: Required value"],
        );
        assert_errors(
            secret(json!({"type": "kubernetes.io/service-account-token"})),
            &["metadata.annotations[kubernetes.io/service-account.name]: Required value"],
        );
        assert_errors(
            secret(json!({"type": "kubernetes.io/dockerconfigjson"})),
            &["data[.dockerconfigjson]: Required value"],
        );
        assert_errors(secret(json!({"type": "example.com/custom"})), &[]);
    }

    // ---- cluster objects --------------------------------------------------------------

    #[test]
    fn nodes() {
        let node = |v: Value| validate_node(&from(v));
        assert_errors(
            node(json!({"metadata": {"name": "node-1"}, "spec": {"podCIDR": "10.244.1.0/24"}})),
            &[],
        );
        assert_errors(
            node(json!({
                "metadata": {"name": "node-1", "namespace": "default"},
                "spec": {
                    "podCIDR": "10.0.0.0/33",
                    "podCIDRs": ["fd00::/64", "nope"],
                    "taints": [
                        {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
                        {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
                        {"key": "a", "effect": "Sometimes"},
                        {"key": "b", "effect": ""},
                        {"key": "bad key", "value": "-x", "effect": "NoExecute"}
                    ]
                }
            })),
            &[
                "metadata.namespace: Forbidden: not allowed on this type",
                "spec.podCIDR: Invalid value: \"10.0.0.0/33\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                "spec.podCIDRs[1]: Invalid value: \"nope\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                "spec.taints[1]: Duplicate value: \"dedicated=gpu:NoSchedule\": taints must be unique by key and effect pair",
                "spec.taints[2].effect: Unsupported value: \"Sometimes\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"",
                "spec.taints[3].effect: Required value",
                &format!(
                    "spec.taints[4].key: Invalid value: \"bad key\": name part {QUALIFIED_NAME_MSG}"
                ),
                &format!("spec.taints[4].value: Invalid value: \"-x\": {LABEL_VALUE_MSG}"),
            ],
        );
    }

    #[test]
    fn leases() {
        let lease = |spec: Value| {
            validate_lease(&from(
                json!({"metadata": {"name": "node-1", "namespace": "kube-node-lease"}, "spec": spec}),
            ))
        };
        assert_errors(
            lease(json!({"holderIdentity": "node-1", "leaseDurationSeconds": 40})),
            &[],
        );
        assert_errors(
            lease(json!({"leaseDurationSeconds": 0, "leaseTransitions": -1})),
            &[
                "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0",
                "spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0",
            ],
        );
    }

    #[test]
    fn events() {
        let event = |edit: &dyn Fn(&mut Value)| {
            let mut v = json!({
                "metadata": {"name": "web.17a", "namespace": "default"},
                "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
                "reason": "Started",
                "type": "Normal"
            });
            edit(&mut v);
            validate_event(&from(v))
        };
        assert_errors(event(&|_| {}), &[]);
        assert_errors(
            event(&|v| v["involvedObject"] = json!({"kind": "Node", "name": "node-1"})),
            &[],
        );
        assert_errors(
            event(&|v| {
                v["involvedObject"] = json!({"namespace": "other"});
                v["type"] = json!("Error");
            }),
            &[
                "involvedObject.kind: Required value",
                "involvedObject.name: Required value",
                "involvedObject.namespace: Invalid value: \"other\": does not match event.namespace",
                "type: Unsupported value: \"Error\": supported values: \"Normal\", \"Warning\"",
            ],
        );
    }

    #[test]
    fn errors_carry_kinds_for_status_causes() {
        let errs = deployment(|v| v["spec"]["replicas"] = json!(-1));
        assert_eq!(errs[0].kind, FieldErrorKind::Invalid);
        assert_eq!(errs[0].field, "spec.replicas");
        assert_eq!(errs[0].value.as_deref(), Some("-1"));
        assert_eq!(errs[0].detail, IS_NEGATIVE);
        assert_has(
            &errs,
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
        );
    }

    // ---- properties -------------------------------------------------------------------

    proptest! {
        #[test]
        fn generated_dns_labels_are_accepted(s in "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?") {
            prop_assert!(is_dns1123_label(&s));
            prop_assert!(is_dns1123_subdomain(&s));
            prop_assert!(is_qualified_name(&s));
            prop_assert!(is_label_value(&s));
        }

        #[test]
        fn upper_case_is_never_a_dns_name(s in "[a-z0-9]{0,5}[A-Z][a-zA-Z0-9]{0,5}") {
            prop_assert!(!is_dns1123_label(&s));
            prop_assert!(!is_dns1123_subdomain(&s));
            prop_assert!(is_qualified_name(&s) == s.bytes().last().is_some_and(|c| c.is_ascii_alphanumeric()));
        }

        #[test]
        fn container_ports_follow_the_port_range(port in any::<i32>()) {
            let errs = container(|c| c["ports"] = json!([{"containerPort": port}]));
            let want: Vec<String> = match port {
                0 => vec!["spec.containers[0].ports[0].containerPort: Required value".to_owned()],
                1..=65535 => vec![],
                p => vec![format!("spec.containers[0].ports[0].containerPort: Invalid value: {p}: {PORT_RANGE}")],
            };
            prop_assert_eq!(messages(&errs), want);
        }

        #[test]
        fn cron_fields_in_range_are_accepted(
            m in 0..60u32, h in 0..24u32, dom in 1..32u32, mon in 1..13u32, dow in 0..7u32, step in 1..10u32,
        ) {
            let schedule = format!("{m} {h}-23/{step} {dom} {mon} {dow}");
            prop_assert_eq!(validate_cron_schedule(&schedule), Ok(()), "{}", &schedule);
            let too_big = format!("{} * * * *", 60 + m);
            prop_assert!(validate_cron_schedule(&too_big).is_err());
        }

        #[test]
        fn replicas_are_checked_exactly(replicas in any::<i32>()) {
            let errs = deployment(|v| v["spec"]["replicas"] = json!(replicas));
            prop_assert_eq!(errs.is_empty(), replicas >= 0);
        }

        #[test]
        fn validation_never_panics_on_odd_strings(name in "\\PC{0,20}", image in "\\PC{0,20}", port in "\\PC{0,8}") {
            let errs = pod(|v| {
                v["metadata"]["name"] = json!(name);
                v["spec"]["containers"][0]["image"] = json!(image);
                v["spec"]["containers"][0]["ports"] = json!([{"name": port, "containerPort": 80}]);
                v["spec"]["containers"][0]["resources"] = json!({"limits": {"cpu": port}});
            });
            for e in &errs {
                prop_assert!(e.to_string().starts_with(&e.field));
            }
        }
    }
}

#[cfg(test)]
mod cron_tests {
    use super::CronSchedule;

    fn next(schedule: &str, after: &str) -> String {
        let t: jiff::Zoned = format!("{after}[UTC]").parse().unwrap();
        CronSchedule::parse(schedule)
            .unwrap()
            .next_after(t)
            .unwrap()
            .strftime("%Y-%m-%d %H:%M:%S %a")
            .to_string()
    }

    #[test]
    fn next_times_follow_cron_rules() {
        assert_eq!(
            next("* * * * *", "2026-11-22T10:15:30"),
            "2026-11-22 10:16:00 Sun"
        );
        assert_eq!(
            next("*/15 * * * *", "2026-11-22T10:15:00"),
            "2026-11-22 10:30:00 Sun"
        );
        assert_eq!(
            next("0 9 * * mon-fri", "2026-11-21T12:00:00"),
            "2026-11-23 09:00:00 Mon"
        );
        assert_eq!(
            next("@monthly", "2026-12-31T23:59:00"),
            "2027-01-01 00:00:00 Fri"
        );
        assert_eq!(
            next("0 0 29 feb *", "2026-03-01T00:00:00"),
            "2028-02-29 00:00:00 Tue"
        );
        // Day of month OR day of week when both are restricted.
        assert_eq!(
            next("0 0 13 * fri", "2026-11-22T00:00:00"),
            "2026-11-27 00:00:00 Fri"
        );
        assert_eq!(
            next("@every 90s", "2026-11-22T10:00:00"),
            "2026-11-22 10:01:30 Sun"
        );
        assert!(
            CronSchedule::parse("0 0 30 2 *")
                .unwrap()
                .next_after("2026-01-01T00:00:00[UTC]".parse().unwrap())
                .is_none()
        );
    }
}
