//! The resource types wk serves, with the names Kubernetes clients expect.
//!
//! One static table drives the API server's routing, discovery documents, the storage key
//! layout and the CLI's kind/short-name lookup.

/// A resource type (a REST collection), e.g. `apps/v1 deployments`.
#[derive(Debug, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; empty for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// Lower-case plural used in URLs (`deployments`).
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    /// Subresources served besides the main resource (`status`, `scale`, `log`, `binding`).
    pub subresources: &'static [&'static str],
    /// Categories (`all`) used by `get all`.
    pub categories: &'static [&'static str],
}

impl ResourceType {
    /// `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The kind of a list of this resource (`PodList`).
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Whether the resource has a spec/status split (updates of the main resource ignore
    /// status, and `/status` updates ignore everything else).
    pub fn has_status(&self) -> bool {
        self.subresources.contains(&"status")
    }

    /// Storage key prefix of the resource, optionally narrowed to one namespace.
    /// Always ends with `/` so that prefixes never match a longer namespace name.
    pub fn key_prefix(&self, namespace: Option<&str>) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{group}/{}/{ns}/", self.plural),
            _ => format!("/registry/{group}/{}/", self.plural),
        }
    }

    /// Storage key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.key_prefix(namespace))
    }

    /// The path of the collection (`/apis/apps/v1/namespaces/ns/deployments`).
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        let base = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match namespace {
            Some(ns) if self.namespaced => format!("{base}/namespaces/{ns}/{}", self.plural),
            _ => format!("{base}/{}", self.plural),
        }
    }

    /// Why `name` cannot be one path segment of an object's URL (kubectl's own check):
    /// an empty name would address the whole collection, `.` and `..` another path, and
    /// `/`, `%`, `?` or `#` would be read as more than a name.
    pub fn invalid_name(name: &str) -> Option<String> {
        if name.is_empty() {
            return Some("resource name may not be empty".into());
        }
        if name == "." || name == ".." {
            return Some(format!("resource name may not be {name:?}"));
        }
        ['/', '%', '?', '#']
            .into_iter()
            .find(|c| name.contains(*c))
            .map(|c| format!("resource name {name:?} may not contain {c:?}"))
    }

    /// The path of one object.
    pub fn object_path(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}/{name}", self.collection_path(namespace))
    }
}

macro_rules! rt {
    ($group:expr, $kind:expr, $plural:expr, $singular:expr, [$($short:expr),*], $ns:expr, [$($sub:expr),*], [$($cat:expr),*]) => {
        ResourceType {
            group: $group,
            version: "v1",
            kind: $kind,
            plural: $plural,
            singular: $singular,
            short_names: &[$($short),*],
            namespaced: $ns,
            subresources: &[$($sub),*],
            categories: &[$($cat),*],
        }
    };
}

/// Every resource type wk serves.
pub static RESOURCES: &[ResourceType] = &[
    rt!(
        "",
        "Namespace",
        "namespaces",
        "namespace",
        ["ns"],
        false,
        ["status", "finalize"],
        []
    ),
    rt!("", "Node", "nodes", "node", ["no"], false, ["status"], []),
    rt!(
        "",
        "Pod",
        "pods",
        "pod",
        ["po"],
        true,
        ["status", "log", "exec", "binding", "eviction"],
        ["all"]
    ),
    rt!(
        "",
        "Service",
        "services",
        "service",
        ["svc"],
        true,
        ["status"],
        ["all"]
    ),
    rt!(
        "",
        "Endpoints",
        "endpoints",
        "endpoints",
        ["ep"],
        true,
        [],
        []
    ),
    rt!(
        "",
        "ConfigMap",
        "configmaps",
        "configmap",
        ["cm"],
        true,
        [],
        []
    ),
    rt!("", "Secret", "secrets", "secret", [], true, [], []),
    rt!(
        "",
        "ServiceAccount",
        "serviceaccounts",
        "serviceaccount",
        ["sa"],
        true,
        [],
        []
    ),
    rt!("", "Event", "events", "event", ["ev"], true, [], []),
    rt!(
        "apps",
        "Deployment",
        "deployments",
        "deployment",
        ["deploy"],
        true,
        ["status", "scale"],
        ["all"]
    ),
    rt!(
        "apps",
        "ReplicaSet",
        "replicasets",
        "replicaset",
        ["rs"],
        true,
        ["status", "scale"],
        ["all"]
    ),
    rt!(
        "apps",
        "DaemonSet",
        "daemonsets",
        "daemonset",
        ["ds"],
        true,
        ["status"],
        ["all"]
    ),
    rt!("batch", "Job", "jobs", "job", [], true, ["status"], ["all"]),
    rt!(
        "batch",
        "CronJob",
        "cronjobs",
        "cronjob",
        ["cj"],
        true,
        ["status"],
        ["all"]
    ),
    rt!(
        "coordination.k8s.io",
        "Lease",
        "leases",
        "lease",
        [],
        true,
        [],
        []
    ),
];

/// The API groups (other than core) in discovery order.
pub fn groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    out
}

/// Finds a resource by group and plural, as routed from a URL.
pub fn by_plural(group: &str, plural: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.plural == plural)
}

/// Finds a resource by apiVersion and kind, as written in a manifest.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.kind == kind && r.api_version() == api_version)
}

/// Finds a resource from what a user types on the command line: plural, singular, short
/// name or kind, any case, optionally qualified with a group (`deployments.apps`).
pub fn lookup(name: &str) -> Option<&'static ResourceType> {
    let lower = name.to_ascii_lowercase();
    let (name, group) = match lower.split_once('.') {
        Some((n, g)) => (n.to_string(), Some(g.to_string())),
        None => (lower, None),
    };
    RESOURCES.iter().find(|r| {
        group.as_deref().is_none_or(|g| r.group == g)
            && (r.plural == name
                || r.singular == name
                || r.kind.eq_ignore_ascii_case(&name)
                || r.short_names.contains(&name.as_str()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_by_any_name() {
        assert_eq!(lookup("po").unwrap().kind, "Pod");
        assert_eq!(lookup("Deployment").unwrap().plural, "deployments");
        assert_eq!(lookup("deploy").unwrap().group, "apps");
        assert_eq!(lookup("deployments.apps").unwrap().kind, "Deployment");
        assert_eq!(lookup("svc").unwrap().kind, "Service");
        assert!(lookup("deployments.batch").is_none());
        assert!(lookup("widgets").is_none());
    }

    #[test]
    fn keys_and_paths() {
        let pods = by_plural("", "pods").unwrap();
        assert_eq!(
            pods.key(Some("default"), "web"),
            "/registry/core/pods/default/web"
        );
        assert_eq!(pods.key_prefix(None), "/registry/core/pods/");
        assert_eq!(
            pods.object_path(Some("a"), "b"),
            "/api/v1/namespaces/a/pods/b"
        );
        let ns = by_plural("", "namespaces").unwrap();
        assert_eq!(
            ns.key(Some("ignored"), "kube-system"),
            "/registry/core/namespaces/kube-system"
        );
        let dep = by_kind("apps/v1", "Deployment").unwrap();
        assert_eq!(
            dep.collection_path(Some("x")),
            "/apis/apps/v1/namespaces/x/deployments"
        );
    }

    #[test]
    fn names_are_unique() {
        for (i, a) in RESOURCES.iter().enumerate() {
            for b in &RESOURCES[i + 1..] {
                assert_ne!(a.plural, b.plural);
                for s in a.short_names {
                    assert!(!b.short_names.contains(s));
                }
            }
        }
    }
}
