//! Request bodies in Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`),
//! turned into the JSON the rest of the server works on.
//!
//! kubectl's built-in generators (`kubectl create deployment|configmap|secret|namespace|
//! service|job|cronjob`) send their objects this way and do not fall back to JSON, so
//! wk decodes them: the `k8s\0` envelope (`runtime.Unknown`: type meta and the raw
//! object), then the object by a table of the messages those kinds use, with Kubernetes'
//! field numbers and JSON names.
//!
//! Go's encoder writes every field that is not a pointer, set or not: a zero value
//! (`""`, `0`, `false`) of such a field is dropped, as Go's `omitempty` JSON would. For
//! pointer fields (`replicas`, `backoffLimit`, …) zero is a value and is kept. A field
//! the table does not know is ignored when it holds a zero value and refused otherwise,
//! naming it: wk never drops part of an object silently. `status` is ignored (writes of
//! a resource ignore it). Responses stay JSON, which kubectl also accepts.

use base64::Engine;
use serde_json::{Map, Value};

/// How a field's value is written in JSON.
#[derive(Clone, Copy)]
enum Ty {
    Str,
    /// Bytes, base64 in JSON (Secret data, ConfigMap binaryData).
    Bytes,
    I32,
    I64,
    Bool,
    Msg(&'static Msg),
    /// `map<string, V>`: repeated entries `{1: key, 2: value}`.
    Map(&'static Ty),
    /// metav1.Time: `{1: seconds, 2: nanos}`, an RFC 3339 string; zero is no time.
    Time,
    /// intstr.IntOrString: `{1: type, 2: intVal, 3: strVal}`.
    IntOrString,
    /// resource.Quantity: `{1: string}`.
    Quantity,
    /// Read and dropped whatever it holds (an object's status).
    Skip,
}

struct Field {
    tag: u32,
    /// The JSON name; empty for an embedded message whose fields are the parent's (Go's
    /// inline structs: a Volume's source, a Probe's handler).
    name: &'static str,
    ty: Ty,
    repeated: bool,
    /// A Go pointer: its zero value is a value.
    pointer: bool,
}

struct Msg {
    name: &'static str,
    fields: &'static [Field],
}

const fn f(tag: u32, name: &'static str, ty: Ty) -> Field {
    Field {
        tag,
        name,
        ty,
        repeated: false,
        pointer: false,
    }
}

/// A Go pointer field.
const fn p(tag: u32, name: &'static str, ty: Ty) -> Field {
    Field {
        pointer: true,
        ..f(tag, name, ty)
    }
}

/// A repeated field.
const fn r(tag: u32, name: &'static str, ty: Ty) -> Field {
    Field {
        repeated: true,
        ..f(tag, name, ty)
    }
}

/// An embedded message whose fields are the parent's.
const fn inline(tag: u32, m: &'static Msg) -> Field {
    f(tag, "", Ty::Msg(m))
}

use Ty::{Bool, Bytes, I32, I64, IntOrString, Quantity, Skip, Str, Time};

static STR: Ty = Str;
static BYTES: Ty = Bytes;
static QUANTITY: Ty = Quantity;

static OWNER_REFERENCE: Msg = Msg {
    name: "OwnerReference",
    fields: &[
        f(5, "apiVersion", Str),
        f(1, "kind", Str),
        f(3, "name", Str),
        f(4, "uid", Str),
        p(6, "controller", Bool),
        p(7, "blockOwnerDeletion", Bool),
    ],
};

static OBJECT_META: Msg = Msg {
    name: "ObjectMeta",
    fields: &[
        f(1, "name", Str),
        f(2, "generateName", Str),
        f(3, "namespace", Str),
        f(4, "selfLink", Str),
        f(5, "uid", Str),
        f(6, "resourceVersion", Str),
        f(7, "generation", I64),
        f(8, "creationTimestamp", Time),
        f(9, "deletionTimestamp", Time),
        p(10, "deletionGracePeriodSeconds", I64),
        f(11, "labels", Ty::Map(&STR)),
        f(12, "annotations", Ty::Map(&STR)),
        r(13, "ownerReferences", Ty::Msg(&OWNER_REFERENCE)),
        r(14, "finalizers", Str),
    ],
};

static LABEL_SELECTOR_REQUIREMENT: Msg = Msg {
    name: "LabelSelectorRequirement",
    fields: &[f(1, "key", Str), f(2, "operator", Str), r(3, "values", Str)],
};

static LABEL_SELECTOR: Msg = Msg {
    name: "LabelSelector",
    fields: &[
        f(1, "matchLabels", Ty::Map(&STR)),
        r(2, "matchExpressions", Ty::Msg(&LABEL_SELECTOR_REQUIREMENT)),
    ],
};

static LOCAL_OBJECT_REFERENCE: Msg = Msg {
    name: "LocalObjectReference",
    fields: &[f(1, "name", Str)],
};

static KEY_SELECTOR: Msg = Msg {
    name: "KeySelector",
    fields: &[
        inline(1, &LOCAL_OBJECT_REFERENCE),
        f(2, "key", Str),
        p(3, "optional", Bool),
    ],
};

static OBJECT_FIELD_SELECTOR: Msg = Msg {
    name: "ObjectFieldSelector",
    fields: &[f(1, "apiVersion", Str), f(2, "fieldPath", Str)],
};

static ENV_VAR_SOURCE: Msg = Msg {
    name: "EnvVarSource",
    fields: &[
        p(1, "fieldRef", Ty::Msg(&OBJECT_FIELD_SELECTOR)),
        p(3, "configMapKeyRef", Ty::Msg(&KEY_SELECTOR)),
        p(4, "secretKeyRef", Ty::Msg(&KEY_SELECTOR)),
    ],
};

static ENV_VAR: Msg = Msg {
    name: "EnvVar",
    fields: &[
        f(1, "name", Str),
        f(2, "value", Str),
        p(3, "valueFrom", Ty::Msg(&ENV_VAR_SOURCE)),
    ],
};

static ENV_SOURCE: Msg = Msg {
    name: "EnvSource",
    fields: &[inline(1, &LOCAL_OBJECT_REFERENCE), p(2, "optional", Bool)],
};

static ENV_FROM_SOURCE: Msg = Msg {
    name: "EnvFromSource",
    fields: &[
        f(1, "prefix", Str),
        p(2, "configMapRef", Ty::Msg(&ENV_SOURCE)),
        p(3, "secretRef", Ty::Msg(&ENV_SOURCE)),
    ],
};

static CONTAINER_PORT: Msg = Msg {
    name: "ContainerPort",
    fields: &[
        f(1, "name", Str),
        f(2, "hostPort", I32),
        f(3, "containerPort", I32),
        f(4, "protocol", Str),
        f(5, "hostIP", Str),
    ],
};

static RESOURCE_REQUIREMENTS: Msg = Msg {
    name: "ResourceRequirements",
    fields: &[
        f(1, "limits", Ty::Map(&QUANTITY)),
        f(2, "requests", Ty::Map(&QUANTITY)),
    ],
};

static VOLUME_MOUNT: Msg = Msg {
    name: "VolumeMount",
    fields: &[
        f(1, "name", Str),
        f(2, "readOnly", Bool),
        f(3, "mountPath", Str),
        f(4, "subPath", Str),
        p(5, "mountPropagation", Str),
        f(6, "subPathExpr", Str),
        p(7, "recursiveReadOnly", Str),
    ],
};

static EXEC_ACTION: Msg = Msg {
    name: "ExecAction",
    fields: &[r(1, "command", Str)],
};

static HTTP_HEADER: Msg = Msg {
    name: "HTTPHeader",
    fields: &[f(1, "name", Str), f(2, "value", Str)],
};

static HTTP_GET_ACTION: Msg = Msg {
    name: "HTTPGetAction",
    fields: &[
        f(1, "path", Str),
        f(2, "port", IntOrString),
        f(3, "host", Str),
        f(4, "scheme", Str),
        r(5, "httpHeaders", Ty::Msg(&HTTP_HEADER)),
    ],
};

static TCP_SOCKET_ACTION: Msg = Msg {
    name: "TCPSocketAction",
    fields: &[f(1, "port", IntOrString), f(2, "host", Str)],
};

static PROBE_HANDLER: Msg = Msg {
    name: "ProbeHandler",
    fields: &[
        p(1, "exec", Ty::Msg(&EXEC_ACTION)),
        p(2, "httpGet", Ty::Msg(&HTTP_GET_ACTION)),
        p(3, "tcpSocket", Ty::Msg(&TCP_SOCKET_ACTION)),
    ],
};

static PROBE: Msg = Msg {
    name: "Probe",
    fields: &[
        inline(1, &PROBE_HANDLER),
        f(2, "initialDelaySeconds", I32),
        f(3, "timeoutSeconds", I32),
        f(4, "periodSeconds", I32),
        f(5, "successThreshold", I32),
        f(6, "failureThreshold", I32),
        p(7, "terminationGracePeriodSeconds", I64),
    ],
};

static CAPABILITIES: Msg = Msg {
    name: "Capabilities",
    fields: &[r(1, "add", Str), r(2, "drop", Str)],
};

static SECURITY_CONTEXT: Msg = Msg {
    name: "SecurityContext",
    fields: &[
        p(1, "capabilities", Ty::Msg(&CAPABILITIES)),
        p(2, "privileged", Bool),
        p(4, "runAsUser", I64),
        p(8, "runAsGroup", I64),
        p(5, "runAsNonRoot", Bool),
        p(6, "readOnlyRootFilesystem", Bool),
        p(7, "allowPrivilegeEscalation", Bool),
        p(9, "procMount", Str),
    ],
};

static POD_SECURITY_CONTEXT: Msg = Msg {
    name: "PodSecurityContext",
    fields: &[
        p(2, "runAsUser", I64),
        p(6, "runAsGroup", I64),
        p(3, "runAsNonRoot", Bool),
        r(4, "supplementalGroups", I64),
        p(5, "fsGroup", I64),
        p(9, "fsGroupChangePolicy", Str),
        p(12, "supplementalGroupsPolicy", Str),
        p(13, "seLinuxChangePolicy", Str),
    ],
};

static CONTAINER: Msg = Msg {
    name: "Container",
    fields: &[
        f(1, "name", Str),
        f(2, "image", Str),
        r(3, "command", Str),
        r(4, "args", Str),
        f(5, "workingDir", Str),
        r(6, "ports", Ty::Msg(&CONTAINER_PORT)),
        r(19, "envFrom", Ty::Msg(&ENV_FROM_SOURCE)),
        r(7, "env", Ty::Msg(&ENV_VAR)),
        f(8, "resources", Ty::Msg(&RESOURCE_REQUIREMENTS)),
        r(9, "volumeMounts", Ty::Msg(&VOLUME_MOUNT)),
        p(10, "livenessProbe", Ty::Msg(&PROBE)),
        p(11, "readinessProbe", Ty::Msg(&PROBE)),
        p(22, "startupProbe", Ty::Msg(&PROBE)),
        f(13, "terminationMessagePath", Str),
        f(20, "terminationMessagePolicy", Str),
        f(14, "imagePullPolicy", Str),
        p(15, "securityContext", Ty::Msg(&SECURITY_CONTEXT)),
        f(16, "stdin", Bool),
        f(17, "stdinOnce", Bool),
        f(18, "tty", Bool),
        p(24, "restartPolicy", Str),
    ],
};

static KEY_TO_PATH: Msg = Msg {
    name: "KeyToPath",
    fields: &[f(1, "key", Str), f(2, "path", Str), p(3, "mode", I32)],
};

static HOST_PATH: Msg = Msg {
    name: "HostPathVolumeSource",
    fields: &[f(1, "path", Str), p(2, "type", Str)],
};

static EMPTY_DIR: Msg = Msg {
    name: "EmptyDirVolumeSource",
    fields: &[f(1, "medium", Str), p(2, "sizeLimit", Quantity)],
};

static SECRET_VOLUME: Msg = Msg {
    name: "SecretVolumeSource",
    fields: &[
        f(1, "secretName", Str),
        r(2, "items", Ty::Msg(&KEY_TO_PATH)),
        p(3, "defaultMode", I32),
        p(4, "optional", Bool),
    ],
};

static CONFIG_MAP_VOLUME: Msg = Msg {
    name: "ConfigMapVolumeSource",
    fields: &[
        inline(1, &LOCAL_OBJECT_REFERENCE),
        r(2, "items", Ty::Msg(&KEY_TO_PATH)),
        p(3, "defaultMode", I32),
        p(4, "optional", Bool),
    ],
};

static VOLUME_SOURCE: Msg = Msg {
    name: "VolumeSource",
    fields: &[
        p(1, "hostPath", Ty::Msg(&HOST_PATH)),
        p(2, "emptyDir", Ty::Msg(&EMPTY_DIR)),
        p(6, "secret", Ty::Msg(&SECRET_VOLUME)),
        p(19, "configMap", Ty::Msg(&CONFIG_MAP_VOLUME)),
    ],
};

static VOLUME: Msg = Msg {
    name: "Volume",
    fields: &[f(1, "name", Str), inline(2, &VOLUME_SOURCE)],
};

static TOLERATION: Msg = Msg {
    name: "Toleration",
    fields: &[
        f(1, "key", Str),
        f(2, "operator", Str),
        f(3, "value", Str),
        f(4, "effect", Str),
        p(5, "tolerationSeconds", I64),
    ],
};

static POD_SPEC: Msg = Msg {
    name: "PodSpec",
    fields: &[
        r(1, "volumes", Ty::Msg(&VOLUME)),
        r(20, "initContainers", Ty::Msg(&CONTAINER)),
        r(2, "containers", Ty::Msg(&CONTAINER)),
        f(3, "restartPolicy", Str),
        p(4, "terminationGracePeriodSeconds", I64),
        p(5, "activeDeadlineSeconds", I64),
        f(6, "dnsPolicy", Str),
        f(7, "nodeSelector", Ty::Map(&STR)),
        f(8, "serviceAccountName", Str),
        f(9, "serviceAccount", Str),
        p(21, "automountServiceAccountToken", Bool),
        f(10, "nodeName", Str),
        f(11, "hostNetwork", Bool),
        f(12, "hostPID", Bool),
        f(13, "hostIPC", Bool),
        p(27, "shareProcessNamespace", Bool),
        p(14, "securityContext", Ty::Msg(&POD_SECURITY_CONTEXT)),
        r(15, "imagePullSecrets", Ty::Msg(&LOCAL_OBJECT_REFERENCE)),
        f(16, "hostname", Str),
        f(17, "subdomain", Str),
        f(19, "schedulerName", Str),
        r(22, "tolerations", Ty::Msg(&TOLERATION)),
        f(24, "priorityClassName", Str),
        p(25, "priority", I32),
        p(29, "runtimeClassName", Str),
        p(30, "enableServiceLinks", Bool),
        p(31, "preemptionPolicy", Str),
        p(35, "setHostnameAsFQDN", Bool),
        p(37, "hostUsers", Bool),
        p(41, "hostnameOverride", Str),
    ],
};

static POD_TEMPLATE_SPEC: Msg = Msg {
    name: "PodTemplateSpec",
    fields: &[
        f(1, "metadata", Ty::Msg(&OBJECT_META)),
        f(2, "spec", Ty::Msg(&POD_SPEC)),
    ],
};

static POD: Msg = Msg {
    name: "Pod",
    fields: &[
        f(1, "metadata", Ty::Msg(&OBJECT_META)),
        f(2, "spec", Ty::Msg(&POD_SPEC)),
        f(3, "status", Skip),
    ],
};

static CONFIG_MAP: Msg = Msg {
    name: "ConfigMap",
    fields: &[
        f(1, "metadata", Ty::Msg(&OBJECT_META)),
        f(2, "data", Ty::Map(&STR)),
        f(3, "binaryData", Ty::Map(&BYTES)),
        p(4, "immutable", Bool),
    ],
};

static SECRET: Msg = Msg {
    name: "Secret",
    fields: &[
        f(1, "metadata", Ty::Msg(&OBJECT_META)),
        f(2, "data", Ty::Map(&BYTES)),
        f(3, "type", Str),
        f(4, "stringData", Ty::Map(&STR)),
        p(5, "immutable", Bool),
    ],
};

static OBJECT_REFERENCE: Msg = Msg {
    name: "ObjectReference",
    fields: &[
        f(1, "kind", Str),
        f(2, "namespace", Str),
        f(3, "name", Str),
        f(4, "uid", Str),
        f(5, "apiVersion", Str),
        f(6, "resourceVersion", Str),
        f(7, "fieldPath", Str),
    ],
};

static SERVICE_ACCOUNT: Msg = Msg {
    name: "ServiceAccount",
    fields: &[
        f(1, "metadata", Ty::Msg(&OBJECT_META)),
        r(2, "secrets", Ty::Msg(&OBJECT_REFERENCE)),
        r(3, "imagePullSecrets", Ty::Msg(&LOCAL_OBJECT_REFERENCE)),
        p(4, "automountServiceAccountToken", Bool),
    ],
};

static NAMESPACE_SPEC: Msg = Msg {
    name: "NamespaceSpec",
    fields: &[r(1, "finalizers", Str)],
};

static NAMESPACE: Msg = Msg {
    name: "Namespace",
    fields: &[
        f(1, "metadata", Ty::Msg(&OBJECT_META)),
        f(2, "spec", Ty::Msg(&NAMESPACE_SPEC)),
        f(3, "status", Skip),
    ],
};

static SERVICE_PORT: Msg = Msg {
    name: "ServicePort",
    fields: &[
        f(1, "name", Str),
        f(2, "protocol", Str),
        p(6, "appProtocol", Str),
        f(3, "port", I32),
        f(4, "targetPort", IntOrString),
        f(5, "nodePort", I32),
    ],
};

static SERVICE_SPEC: Msg = Msg {
    name: "ServiceSpec",
    fields: &[
        r(1, "ports", Ty::Msg(&SERVICE_PORT)),
        f(2, "selector", Ty::Map(&STR)),
        f(3, "clusterIP", Str),
        r(18, "clusterIPs", Str),
        f(4, "type", Str),
        r(5, "externalIPs", Str),
        f(7, "sessionAffinity", Str),
        f(8, "loadBalancerIP", Str),
        r(9, "loadBalancerSourceRanges", Str),
        f(10, "externalName", Str),
        f(11, "externalTrafficPolicy", Str),
        f(12, "healthCheckNodePort", I32),
        f(13, "publishNotReadyAddresses", Bool),
        r(19, "ipFamilies", Str),
        p(17, "ipFamilyPolicy", Str),
        p(20, "allocateLoadBalancerNodePorts", Bool),
        p(21, "loadBalancerClass", Str),
        p(22, "internalTrafficPolicy", Str),
        p(23, "trafficDistribution", Str),
    ],
};

static SERVICE: Msg = Msg {
    name: "Service",
    fields: &[
        f(1, "metadata", Ty::Msg(&OBJECT_META)),
        f(2, "spec", Ty::Msg(&SERVICE_SPEC)),
        f(3, "status", Skip),
    ],
};

static ROLLING_UPDATE: Msg = Msg {
    name: "RollingUpdateDeployment",
    fields: &[
        p(1, "maxUnavailable", IntOrString),
        p(2, "maxSurge", IntOrString),
    ],
};

static DEPLOYMENT_STRATEGY: Msg = Msg {
    name: "DeploymentStrategy",
    fields: &[
        f(1, "type", Str),
        p(2, "rollingUpdate", Ty::Msg(&ROLLING_UPDATE)),
    ],
};

static DEPLOYMENT_SPEC: Msg = Msg {
    name: "DeploymentSpec",
    fields: &[
        p(1, "replicas", I32),
        p(2, "selector", Ty::Msg(&LABEL_SELECTOR)),
        f(3, "template", Ty::Msg(&POD_TEMPLATE_SPEC)),
        f(4, "strategy", Ty::Msg(&DEPLOYMENT_STRATEGY)),
        f(5, "minReadySeconds", I32),
        p(6, "revisionHistoryLimit", I32),
        f(7, "paused", Bool),
        p(9, "progressDeadlineSeconds", I32),
    ],
};

static DEPLOYMENT: Msg = Msg {
    name: "Deployment",
    fields: &[
        f(1, "metadata", Ty::Msg(&OBJECT_META)),
        f(2, "spec", Ty::Msg(&DEPLOYMENT_SPEC)),
        f(3, "status", Skip),
    ],
};

static JOB_SPEC: Msg = Msg {
    name: "JobSpec",
    fields: &[
        p(1, "parallelism", I32),
        p(2, "completions", I32),
        p(3, "activeDeadlineSeconds", I64),
        p(7, "backoffLimit", I32),
        p(4, "selector", Ty::Msg(&LABEL_SELECTOR)),
        p(5, "manualSelector", Bool),
        f(6, "template", Ty::Msg(&POD_TEMPLATE_SPEC)),
        p(8, "ttlSecondsAfterFinished", I32),
        p(9, "completionMode", Str),
        p(10, "suspend", Bool),
        p(12, "backoffLimitPerIndex", I32),
        p(13, "maxFailedIndexes", I32),
        p(14, "podReplacementPolicy", Str),
        p(15, "managedBy", Str),
    ],
};

static JOB: Msg = Msg {
    name: "Job",
    fields: &[
        f(1, "metadata", Ty::Msg(&OBJECT_META)),
        f(2, "spec", Ty::Msg(&JOB_SPEC)),
        f(3, "status", Skip),
    ],
};

static JOB_TEMPLATE_SPEC: Msg = Msg {
    name: "JobTemplateSpec",
    fields: &[
        f(1, "metadata", Ty::Msg(&OBJECT_META)),
        f(2, "spec", Ty::Msg(&JOB_SPEC)),
    ],
};

static CRON_JOB_SPEC: Msg = Msg {
    name: "CronJobSpec",
    fields: &[
        f(1, "schedule", Str),
        p(8, "timeZone", Str),
        p(2, "startingDeadlineSeconds", I64),
        f(3, "concurrencyPolicy", Str),
        p(4, "suspend", Bool),
        f(5, "jobTemplate", Ty::Msg(&JOB_TEMPLATE_SPEC)),
        p(6, "successfulJobsHistoryLimit", I32),
        p(7, "failedJobsHistoryLimit", I32),
    ],
};

static CRON_JOB: Msg = Msg {
    name: "CronJob",
    fields: &[
        f(1, "metadata", Ty::Msg(&OBJECT_META)),
        f(2, "spec", Ty::Msg(&CRON_JOB_SPEC)),
        f(3, "status", Skip),
    ],
};

static RESOURCE_ATTRIBUTES: Msg = Msg {
    name: "ResourceAttributes",
    fields: &[
        f(1, "namespace", Str),
        f(2, "verb", Str),
        f(3, "group", Str),
        f(4, "version", Str),
        f(5, "resource", Str),
        f(6, "subresource", Str),
        f(7, "name", Str),
    ],
};

static NON_RESOURCE_ATTRIBUTES: Msg = Msg {
    name: "NonResourceAttributes",
    fields: &[f(1, "path", Str), f(2, "verb", Str)],
};

static SELF_SUBJECT_ACCESS_REVIEW_SPEC: Msg = Msg {
    name: "SelfSubjectAccessReviewSpec",
    fields: &[
        p(1, "resourceAttributes", Ty::Msg(&RESOURCE_ATTRIBUTES)),
        p(
            2,
            "nonResourceAttributes",
            Ty::Msg(&NON_RESOURCE_ATTRIBUTES),
        ),
    ],
};

static SELF_SUBJECT_ACCESS_REVIEW: Msg = Msg {
    name: "SelfSubjectAccessReview",
    fields: &[
        f(1, "metadata", Ty::Msg(&OBJECT_META)),
        f(2, "spec", Ty::Msg(&SELF_SUBJECT_ACCESS_REVIEW_SPEC)),
        f(3, "status", Skip),
    ],
};

static SELF_SUBJECT_RULES_REVIEW_SPEC: Msg = Msg {
    name: "SelfSubjectRulesReviewSpec",
    fields: &[f(1, "namespace", Str)],
};

static SELF_SUBJECT_RULES_REVIEW: Msg = Msg {
    name: "SelfSubjectRulesReview",
    fields: &[
        f(1, "metadata", Ty::Msg(&OBJECT_META)),
        f(2, "spec", Ty::Msg(&SELF_SUBJECT_RULES_REVIEW_SPEC)),
        f(3, "status", Skip),
    ],
};

static SELF_SUBJECT_REVIEW: Msg = Msg {
    name: "SelfSubjectReview",
    fields: &[
        f(1, "metadata", Ty::Msg(&OBJECT_META)),
        f(2, "status", Skip),
    ],
};

/// The kinds whose protobuf bodies wk reads.
const KINDS: [(&str, &str, &Msg); 12] = [
    ("v1", "Namespace", &NAMESPACE),
    ("v1", "ConfigMap", &CONFIG_MAP),
    ("v1", "Secret", &SECRET),
    ("v1", "ServiceAccount", &SERVICE_ACCOUNT),
    ("v1", "Service", &SERVICE),
    ("v1", "Pod", &POD),
    ("apps/v1", "Deployment", &DEPLOYMENT),
    ("batch/v1", "Job", &JOB),
    ("batch/v1", "CronJob", &CRON_JOB),
    (
        "authorization.k8s.io/v1",
        "SelfSubjectAccessReview",
        &SELF_SUBJECT_ACCESS_REVIEW,
    ),
    (
        "authorization.k8s.io/v1",
        "SelfSubjectRulesReview",
        &SELF_SUBJECT_RULES_REVIEW,
    ),
    (
        "authentication.k8s.io/v1",
        "SelfSubjectReview",
        &SELF_SUBJECT_REVIEW,
    ),
];

/// The envelope's magic number.
const MAGIC: &[u8] = b"k8s\0";

/// Why a body could not be read: broken protobuf (400), or something wk does not read
/// in protobuf (415).
#[derive(Debug)]
pub enum DecodeError {
    Malformed(String),
    Unsupported(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Malformed(m) | DecodeError::Unsupported(m) => f.write_str(m),
        }
    }
}

type Result<T> = std::result::Result<T, DecodeError>;

fn malformed(m: impl Into<String>) -> DecodeError {
    DecodeError::Malformed(m.into())
}

/// Protobuf's wire: the fields of one message, in order, read as they are iterated.
struct Reader<'a> {
    buf: &'a [u8],
}

/// One field's value as it is on the wire.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl Wire<'_> {
    fn is_zero(&self) -> bool {
        match self {
            Wire::Varint(v) => *v == 0,
            Wire::Bytes(b) => b.is_empty(),
            Wire::Fixed => false,
        }
    }
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self
                .buf
                .split_first()
                .ok_or_else(|| malformed("truncated varint"))?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(malformed("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.buf.len() {
            return Err(malformed("truncated field"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn field(&mut self) -> Result<(u32, Wire<'a>)> {
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3).map_err(|_| malformed("field number out of range"))?;
        let value = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Wire::Fixed
            }
            2 => {
                let n = usize::try_from(self.varint()?)
                    .map_err(|_| malformed("length out of range"))?;
                Wire::Bytes(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed
            }
            w => return Err(malformed(format!("unsupported wire type {w}"))),
        };
        Ok((tag, value))
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<(u32, Wire<'a>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let item = self.field();
        if item.is_err() {
            // Nothing after a broken field can be read.
            self.buf = &[];
        }
        Some(item)
    }
}

fn fields(buf: &[u8]) -> Reader<'_> {
    Reader { buf }
}

/// Nested messages deeper than this are refused (the table's own nesting stays far
/// below it; a safeguard for what the table may become).
const MAX_DEPTH: usize = 32;

fn string(b: &[u8], at: &str) -> Result<String> {
    String::from_utf8(b.to_vec()).map_err(|_| malformed(format!("{at}: not UTF-8")))
}

fn payload<'a>(w: &Wire<'a>, at: &str) -> Result<&'a [u8]> {
    match w {
        Wire::Bytes(b) => Ok(b),
        _ => Err(malformed(format!(
            "{at}: expected a length-delimited field"
        ))),
    }
}

fn varint(w: &Wire, at: &str) -> Result<u64> {
    match w {
        Wire::Varint(v) => Ok(*v),
        _ => Err(malformed(format!("{at}: expected a varint"))),
    }
}

/// One value of type `ty` (`None`: a zero value to drop).
fn value(ty: Ty, w: &Wire, at: &str, depth: usize) -> Result<Option<Value>> {
    Ok(Some(match ty {
        Str => Value::String(string(payload(w, at)?, at)?),
        Bytes => Value::String(base64::engine::general_purpose::STANDARD.encode(payload(w, at)?)),
        I32 => Value::from(varint(w, at)? as i64 as i32),
        I64 => Value::from(varint(w, at)? as i64),
        Bool => Value::Bool(varint(w, at)? != 0),
        Skip => return Ok(None),
        Ty::Msg(m) => Value::Object(message(m, payload(w, at)?, at, depth + 1)?),
        Ty::Map(v) => {
            // One entry: {1: key, 2: value}.
            let (mut key, mut val) = (String::new(), None);
            for field in fields(payload(w, at)?) {
                let (tag, w) = field?;
                match tag {
                    1 => key = string(payload(&w, at)?, at)?,
                    2 => val = value(*v, &w, at, depth + 1)?,
                    _ => {}
                }
            }
            // A map value is kept even when empty ("" is a value in a map).
            let val = val.unwrap_or_else(|| match v {
                Quantity => Value::String("0".into()),
                Str | Bytes => Value::String(String::new()),
                _ => Value::Null,
            });
            let mut o = Map::new();
            o.insert(key, val);
            Value::Object(o)
        }
        Time => {
            let (mut secs, mut nanos) = (0i64, 0i32);
            for field in fields(payload(w, at)?) {
                match field? {
                    (1, w) => secs = varint(&w, at)? as i64,
                    (2, w) => nanos = varint(&w, at)? as i64 as i32,
                    _ => {}
                }
            }
            if secs == 0 && nanos == 0 {
                return Ok(None);
            }
            let t =
                jiff::Timestamp::new(secs, nanos).map_err(|e| malformed(format!("{at}: {e}")))?;
            Value::String(wk_api::objects::rfc3339(t))
        }
        IntOrString => {
            let (mut kind, mut int, mut text) = (0u64, 0i32, String::new());
            for field in fields(payload(w, at)?) {
                match field? {
                    (1, w) => kind = varint(&w, at)?,
                    (2, w) => int = varint(&w, at)? as i64 as i32,
                    (3, w) => text = string(payload(&w, at)?, at)?,
                    _ => {}
                }
            }
            match kind {
                0 => Value::from(int),
                1 => Value::String(text),
                k => return Err(malformed(format!("{at}: IntOrString of type {k}"))),
            }
        }
        Quantity => {
            let mut text = String::new();
            for field in fields(payload(w, at)?) {
                if let (1, w) = field? {
                    text = string(payload(&w, at)?, at)?;
                }
            }
            Value::String(text)
        }
    }))
}

/// Whether `v` is the zero value Go writes for a field that is not set.
fn zero(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Bool(b) => !b,
        Value::Null => true,
        _ => false,
    }
}

/// Decodes one message. A field the table does not know is ignored when it holds a zero
/// value: the fields Kubernetes' Go types write unasked are plain values (a pointer
/// field's zero is a value, so every pointer field a generator can send is in the table).
fn message(m: &Msg, buf: &[u8], at: &str, depth: usize) -> Result<Map<String, Value>> {
    if depth > MAX_DEPTH {
        return Err(malformed(format!("{at}: nested too deeply")));
    }
    let mut out = Map::new();
    for field in fields(buf) {
        let (tag, w) = field?;
        let Some(field) = m.fields.iter().find(|f| f.tag == tag) else {
            if w.is_zero() {
                continue;
            }
            return Err(DecodeError::Unsupported(format!(
                "{at}: field {tag} of {} is not supported in protobuf by wk; send JSON or YAML",
                m.name
            )));
        };
        let here = if field.name.is_empty() {
            at.to_string()
        } else {
            format!("{at}.{}", field.name)
        };
        let Some(v) = value(field.ty, &w, &here, depth)? else {
            continue;
        };
        if field.name.is_empty() {
            // Inline: its fields are this message's.
            if let Value::Object(o) = v {
                out.extend(o);
            }
        } else if let Ty::Map(_) = field.ty {
            let entry = out
                .entry(field.name)
                .or_insert_with(|| Value::Object(Map::new()));
            if let (Value::Object(all), Value::Object(one)) = (entry, v) {
                all.extend(one);
            }
        } else if field.repeated {
            let list = out
                .entry(field.name)
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(l) = list {
                l.push(v);
            }
        } else if field.pointer || !zero(&v) {
            out.insert(field.name.to_string(), v);
        }
    }
    Ok(out)
}

/// Decodes a protobuf request body into the object's JSON.
pub fn to_json(body: &[u8]) -> Result<Value> {
    let envelope = body.strip_prefix(MAGIC).ok_or_else(|| {
        malformed("the body does not start with Kubernetes' protobuf magic number")
    })?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), None);
    for field in fields(envelope) {
        match field? {
            (1, Wire::Bytes(tm)) => {
                for field in fields(tm) {
                    match field? {
                        (1, Wire::Bytes(b)) => api_version = string(b, "apiVersion")?,
                        (2, Wire::Bytes(b)) => kind = string(b, "kind")?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(b)) => raw = Some(b),
            (3, Wire::Bytes(enc)) if !enc.is_empty() => {
                return Err(DecodeError::Unsupported(
                    "compressed protobuf bodies are not supported".into(),
                ));
            }
            _ => {}
        }
    }
    let raw = raw.ok_or_else(|| malformed("the protobuf envelope holds no object"))?;
    let Some((_, _, msg)) = KINDS
        .iter()
        .find(|(v, k, _)| *v == api_version && *k == kind)
    else {
        let clip = |s: &str| s.chars().take(100).collect::<String>();
        return Err(DecodeError::Unsupported(format!(
            "protobuf bodies of {} {} are not supported by wk; send JSON or YAML",
            clip(&api_version),
            clip(&kind)
        )));
    };
    let mut object = message(msg, raw, "", 0)?;
    object.insert("apiVersion".into(), Value::String(api_version));
    object.insert("kind".into(), Value::String(kind));
    Ok(Value::Object(object))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A varint.
    fn v(mut n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes_field(tag: u32, b: &[u8]) -> Vec<u8> {
        let mut out = v(u64::from(tag) << 3 | 2);
        out.extend(v(b.len() as u64));
        out.extend(b);
        out
    }

    fn int_field(tag: u32, n: u64) -> Vec<u8> {
        let mut out = v(u64::from(tag) << 3);
        out.extend(v(n));
        out
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let tm = [
            bytes_field(1, api_version.as_bytes()),
            bytes_field(2, kind.as_bytes()),
        ]
        .concat();
        [
            MAGIC.to_vec(),
            bytes_field(1, &tm),
            bytes_field(2, raw),
            bytes_field(3, b""),
            bytes_field(4, b""),
        ]
        .concat()
    }

    /// The body `kubectl create deployment d1 --image=busybox --port=80 --replicas=2`
    /// sends (kubectl 1.32, from `-v=9`).
    const KUBECTL_DEPLOYMENT: &str = "
        6b3873000a150a07617070732f7631120a4465706c6f796d656e7412b8010a1d0a02643112001a0022002a0032003800
        42005a090a03617070120264311288010802120b0a090a03617070120264311a6f0a1b0a0012001a0022002a00320038
        0042005a090a0361707012026431125012320a0762757379626f78120762757379626f782a00320a0a00100018502200
        2a0042006a007200800100880100900100a201001a00320042004a0052005800600068008201008a01009a0100c20100
        22020a00280038001a0c0800100018002000280038001a002200";

    fn unhex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
            .collect()
    }

    #[test]
    fn kubectls_deployment() {
        let d = to_json(&unhex(KUBECTL_DEPLOYMENT)).unwrap();
        assert_eq!(
            d,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "d1", "labels": {"app": "d1"}},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "d1"}},
                    "template": {"metadata": {"labels": {"app": "d1"}},
                        "spec": {"containers": [{"name": "busybox", "image": "busybox",
                            "ports": [{"containerPort": 80}], "resources": {}}]}},
                    "strategy": {}}})
        );
    }

    /// Zero values of plain fields are dropped, of pointer fields kept; maps, repeated
    /// fields, inline messages, IntOrString and bytes come out as in JSON.
    #[test]
    fn fields_come_out_as_in_json() {
        let meta = [
            bytes_field(1, b"web"),
            bytes_field(2, b""),
            bytes_field(
                11,
                &[bytes_field(1, b"app"), bytes_field(2, b"web")].concat(),
            ),
        ]
        .concat();
        let port = [
            bytes_field(1, b"http"),
            bytes_field(2, b"TCP"),
            int_field(3, 80),
            bytes_field(4, &[int_field(1, 1), bytes_field(3, b"http")].concat()),
            int_field(5, 0),
        ]
        .concat();
        let spec = [bytes_field(1, &port), bytes_field(4, b"ClusterIP")].concat();
        let raw = [bytes_field(1, &meta), bytes_field(2, &spec)].concat();
        let got = to_json(&envelope("v1", "Service", &raw)).unwrap();
        assert_eq!(
            got,
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {"type": "ClusterIP", "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": "http"}]}})
        );
        // replicas 0 is a value; a Secret's bytes are base64.
        let spec = [int_field(1, 0), int_field(5, 0)].concat();
        let d = to_json(&envelope("apps/v1", "Deployment", &bytes_field(2, &spec))).unwrap();
        assert_eq!(d["spec"], json!({"replicas": 0}));
        let pod_spec = [int_field(37, 0), int_field(11, 0)].concat();
        let template = bytes_field(2, &pod_spec);
        let spec = [int_field(7, 0), bytes_field(6, &template)].concat();
        let j = to_json(&envelope("batch/v1", "Job", &bytes_field(2, &spec))).unwrap();
        assert_eq!(
            j["spec"],
            json!({"backoffLimit": 0, "template": {"spec": {"hostUsers": false}}}),
            "hostNetwork (plain) false is dropped, hostUsers (a pointer) kept"
        );
        let data = bytes_field(
            2,
            &[bytes_field(1, b"k"), bytes_field(2, b"\xff\x00")].concat(),
        );
        let s = to_json(&envelope("v1", "Secret", &data)).unwrap();
        assert_eq!(s["data"], json!({"k": "/wA="}));
    }

    /// Unknown non-zero fields, unknown kinds and broken bodies are refused by name.
    #[test]
    fn what_is_not_understood_is_refused() {
        let e = to_json(&envelope("v1", "ConfigMap", &int_field(99, 1))).unwrap_err();
        assert!(
            matches!(&e, DecodeError::Unsupported(m) if m.contains("field 99 of ConfigMap")),
            "{e}"
        );
        assert!(to_json(&envelope("v1", "ConfigMap", &int_field(99, 0))).is_ok());
        let e = to_json(&envelope("rbac.authorization.k8s.io/v1", "Role", b"")).unwrap_err();
        assert!(
            matches!(&e, DecodeError::Unsupported(m) if m.contains("Role are not supported")),
            "{e}"
        );
        assert!(matches!(
            to_json(b"{\"kind\": 1}"),
            Err(DecodeError::Malformed(_))
        ));
        let mut cut = envelope("v1", "ConfigMap", &bytes_field(1, &bytes_field(1, b"x")));
        cut.truncate(cut.len() - 8);
        assert!(matches!(to_json(&cut), Err(DecodeError::Malformed(_))));
        // Past the depth limit, an error rather than deeper recursion.
        let e = message(&CONFIG_MAP, b"", "", MAX_DEPTH + 1).unwrap_err();
        assert!(
            matches!(&e, DecodeError::Malformed(m) if m.contains("nested too deeply")),
            "{e}"
        );
    }
}
