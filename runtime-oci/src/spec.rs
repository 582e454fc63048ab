//! The OCI runtime spec (`config.json`) of a container: the image's configuration merged
//! with the pod's container, as Kubernetes defines the merge.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, LinuxSeccomp, Mount,
    MountBuilder, ProcessBuilder, RootBuilder, Spec, UserBuilder,
};
use wk_api::runtime::ContainerConfig;

use crate::store::ImageConfig;

/// Docker's default capability set.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Where a container's process runs, besides what its config says.
#[derive(Debug, Clone)]
pub struct Placement {
    pub rootfs: PathBuf,
    /// The pod's network namespace (`/run/netns/...`).
    pub netns: String,
    /// `linux.cgroupsPath`.
    pub cgroup: String,
}

/// The process arguments: Kubernetes' rule for `command`/`args` against the image's
/// `Entrypoint`/`Cmd`.
pub fn argv(config: &ContainerConfig, image: &ImageConfig) -> Vec<String> {
    match (config.command.is_empty(), config.args.is_empty()) {
        (false, _) => config.command.iter().chain(&config.args).cloned().collect(),
        (true, false) => image
            .entrypoint
            .iter()
            .chain(&config.args)
            .cloned()
            .collect(),
        (true, true) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
    }
}

/// The container's host name: the pod's `spec.hostname`, or its name.
fn hostname(config: &ContainerConfig) -> &str {
    match config.pod.hostname.as_str() {
        "" => &config.pod.name,
        h => h,
    }
}

/// The environment: the image's, then the container's (which wins), plus `HOSTNAME`.
pub fn environment(config: &ContainerConfig, image: &ImageConfig) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|(n, _)| n == k) {
        Some(e) => e.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    };
    set(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    for e in &image.env {
        let (k, v) = e.split_once('=').unwrap_or((e, ""));
        set(k, v);
    }
    set("HOSTNAME", hostname(config));
    for (k, v) in &config.env {
        set(k, v);
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Most of an image's `/etc/passwd` or `/etc/group` that is read.
const ID_FILE_MAX: u64 = 1 << 20;

/// Opens `path` for reading inside `root` as if `root` were `/`: the image's symlinks,
/// absolute or `..`, cannot lead out of it (`openat2` with `RESOLVE_IN_ROOT`).
fn open_in_root(root: &Path, path: &str) -> std::io::Result<std::fs::File> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
    let dir = std::fs::File::open(root)?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    Ok(std::fs::File::from(openat2(&dir, path, how)?))
}

/// Looks a user or group name up in the image's `/etc/passwd` or `/etc/group`: a
/// regular file of the image (not something a symlink points at on the host, not a
/// device), at most 1 MiB of it.
fn lookup_id(rootfs: &Path, file: &str, name: &str) -> Option<(u32, Option<u32>)> {
    use std::io::Read;
    let f = open_in_root(rootfs, &format!("etc/{file}")).ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    f.take(ID_FILE_MAX).read_to_string(&mut text).ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&name) && f.len() > 3).then(|| {
            (
                f[2].parse().unwrap_or(0),
                f.get(3).and_then(|g| g.parse().ok()),
            )
        })
    })
}

/// uid and gid: `runAsUser`/`runAsGroup`, else the image's `User` (`uid`, `name`,
/// `uid:gid`, `name:group`), else root.
pub fn user(
    config: &ContainerConfig,
    image: &ImageConfig,
    rootfs: &Path,
) -> Result<(u32, u32), String> {
    let (mut uid, mut gid) = (0u32, 0u32);
    if !image.user.is_empty() {
        let (u, g) = image
            .user
            .split_once(':')
            .map(|(u, g)| (u, Some(g)))
            .unwrap_or((&image.user, None));
        match u.parse::<u32>() {
            Ok(n) => uid = n,
            Err(_) => {
                let (n, primary) = lookup_id(rootfs, "passwd", u)
                    .ok_or_else(|| format!("the image's user {u:?} is not in its /etc/passwd"))?;
                uid = n;
                gid = primary.unwrap_or(0);
            }
        }
        if let Some(g) = g {
            gid = match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => lookup_id(rootfs, "group", g)
                    .map(|(n, _)| n)
                    .ok_or_else(|| format!("the image's group {g:?} is not in its /etc/group"))?,
            };
        }
    }
    if let Some(u) = config.security.run_as_user {
        uid = u;
    }
    if let Some(g) = config.security.run_as_group {
        gid = g;
    }
    Ok((uid, gid))
}

fn capability(name: &str) -> Result<Capability, String> {
    let full = if name.starts_with("CAP_") {
        name.to_string()
    } else {
        format!("CAP_{name}")
    };
    serde_json::from_value(serde_json::Value::String(full.to_ascii_uppercase()))
        .map_err(|_| format!("unknown capability {name:?}"))
}

/// Docker's default set with the container's `add`/`drop` applied.
pub fn capabilities(config: &ContainerConfig) -> Result<HashSet<Capability>, String> {
    let drop_all = config
        .security
        .drop_capabilities
        .iter()
        .any(|c| c.eq_ignore_ascii_case("ALL"));
    let mut caps = HashSet::new();
    if !drop_all {
        for c in DEFAULT_CAPABILITIES {
            caps.insert(capability(c)?);
        }
        for c in &config.security.drop_capabilities {
            caps.remove(&capability(c)?);
        }
    }
    for c in &config.security.add_capabilities {
        caps.insert(capability(c)?);
    }
    Ok(caps)
}

/// Syscalls the default filter refuses (`EPERM`), after Docker's default profile, by the
/// capability that would allow them (`None`: always refused). Everything else is allowed.
const DENIED_SYSCALLS: &[(Option<&str>, &[&str])] = &[
    (
        Some("SYS_ADMIN"),
        &[
            "mount",
            "umount",
            "umount2",
            "unshare",
            "setns",
            "pivot_root",
            "bpf",
            "perf_event_open",
            "quotactl",
            "lookup_dcookie",
            "fanotify_init",
            "swapon",
            "swapoff",
            "name_to_handle_at",
        ],
    ),
    (
        Some("SYS_PTRACE"),
        &["ptrace", "process_vm_readv", "process_vm_writev", "kcmp"],
    ),
    (
        Some("SYS_MODULE"),
        &["init_module", "finit_module", "delete_module"],
    ),
    (
        Some("SYS_TIME"),
        &["settimeofday", "clock_settime", "clock_adjtime", "stime"],
    ),
    (Some("SYS_BOOT"), &["reboot"]),
    (Some("SYS_PACCT"), &["acct"]),
    (Some("SYS_RAWIO"), &["iopl", "ioperm"]),
    (Some("DAC_READ_SEARCH"), &["open_by_handle_at"]),
    (
        None,
        &[
            "kexec_load",
            "kexec_file_load",
            "add_key",
            "keyctl",
            "request_key",
            "userfaultfd",
            "uselib",
            "ustat",
            "sysfs",
            "_sysctl",
            "nfsservctl",
            "vm86",
            "vm86old",
            "create_module",
            "get_kernel_syms",
            "query_module",
        ],
    ),
];

/// The default syscall filter for a container with capabilities `caps`.
pub fn default_seccomp(caps: &HashSet<Capability>) -> Result<LinuxSeccomp, String> {
    let mut denied: Vec<&str> = Vec::new();
    for (cap, calls) in DENIED_SYSCALLS {
        if cap.is_none_or(|c| capability(c).is_ok_and(|c| !caps.contains(&c))) {
            denied.extend_from_slice(calls);
        }
    }
    let archs: &[&str] = match std::env::consts::ARCH {
        "x86_64" => &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "aarch64" => &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        _ => &[],
    };
    serde_json::from_value(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": archs,
        "syscalls": [{"names": denied, "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }))
    .map_err(|e| format!("the default seccomp profile: {e}"))
}

fn bind(destination: &str, source: &Path, read_only: bool) -> Result<Mount, String> {
    let mut options = vec!["rbind".to_string(), "rprivate".to_string()];
    options.push(if read_only { "ro" } else { "rw" }.into());
    MountBuilder::default()
        .destination(destination)
        .typ("bind")
        .source(source)
        .options(options)
        .build()
        .map_err(|e| e.to_string())
}

/// Builds the spec.
pub fn build(
    config: &ContainerConfig,
    image: &ImageConfig,
    at: &Placement,
) -> Result<Spec, String> {
    let args = argv(config, image);
    if args.is_empty() {
        return Err(
            "no command: the image has no Entrypoint or Cmd and the container sets no command"
                .into(),
        );
    }
    let (uid, gid) = user(config, image, &at.rootfs)?;
    let caps = capabilities(config)?;
    let seccomp = if config.security.seccomp_unconfined {
        None
    } else {
        Some(default_seccomp(&caps)?)
    };
    let cwd = config
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| (!image.working_dir.is_empty()).then(|| image.working_dir.clone()))
        .unwrap_or_else(|| "/".into());
    let e = |e: oci_spec::OciSpecError| e.to_string();
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(args)
        .env(environment(config, image))
        .cwd(cwd)
        .user(
            UserBuilder::default()
                .uid(uid)
                .gid(gid)
                .build()
                .map_err(e)?,
        )
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps)
                .build()
                .map_err(e)?,
        )
        .no_new_privileges(false)
        .build()
        .map_err(e)?;
    let mut mounts = oci_spec::runtime::get_default_mounts();
    for m in &config.mounts {
        mounts.push(bind(&m.container_path, &m.host_path, m.read_only)?);
    }
    let mut resources = LinuxResourcesBuilder::default();
    if let Some(bytes) = config.limits.memory_bytes {
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(bytes as i64)
                // No swap beyond the limit, so the limit is what the container can use.
                .swap(bytes as i64)
                .build()
                .map_err(e)?,
        );
    }
    if let Some(millis) = config.limits.cpu_millis {
        let period: u64 = 100_000;
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .period(period)
                .quota((millis * period / 1000).max(1000) as i64)
                .build()
                .map_err(e)?,
        );
    }
    let mut namespaces = Vec::new();
    for t in [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ] {
        namespaces.push(LinuxNamespaceBuilder::default().typ(t).build().map_err(e)?);
    }
    namespaces.push(
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Network)
            .path(at.netns.clone())
            .build()
            .map_err(e)?,
    );
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(&at.cgroup))
        .resources(resources.build().map_err(e)?)
        .masked_paths(oci_spec::runtime::get_default_maskedpaths())
        .readonly_paths(oci_spec::runtime::get_default_readonly_paths())
        .build()
        .map_err(e)?;
    linux.set_seccomp(seccomp);
    let mut spec = Spec::default();
    spec.set_process(Some(process));
    spec.set_hostname(Some(hostname(config).to_string()));
    spec.set_root(Some(
        RootBuilder::default()
            .path(&at.rootfs)
            .readonly(config.security.read_only_root_filesystem)
            .build()
            .map_err(e)?,
    ));
    spec.set_mounts(Some(mounts));
    spec.set_linux(Some(linux));
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into(), "--port=1".into()],
            env: vec!["A=image".into(), "B=image".into()],
            working_dir: "/srv".into(),
            user: "1000:1000".into(),
        }
    }

    #[test]
    fn command_and_args_follow_kubernetes() {
        let mut c = ContainerConfig::default();
        assert_eq!(argv(&c, &image()), ["/entry", "serve", "--port=1"]);
        c.args = vec!["x".into()];
        assert_eq!(argv(&c, &image()), ["/entry", "x"]);
        c.command = vec!["/bin/sh".into()];
        assert_eq!(argv(&c, &image()), ["/bin/sh", "x"]);
        c.args.clear();
        assert_eq!(argv(&c, &image()), ["/bin/sh"]);
    }

    #[test]
    fn env_user_caps_merge() {
        let mut c = ContainerConfig::default();
        c.pod.name = "p".into();
        c.env = vec![("B".into(), "pod".into())];
        let env = environment(&c, &image());
        assert!(env.contains(&"A=image".to_string()));
        assert!(env.contains(&"B=pod".to_string()));
        assert!(env.contains(&"HOSTNAME=p".to_string()));
        assert!(env.iter().any(|e| e.starts_with("PATH=")));
        // `spec.hostname` wins over the pod's name, as in /etc/hostname.
        c.pod.hostname = "h".into();
        assert!(environment(&c, &image()).contains(&"HOSTNAME=h".to_string()));
        c.pod.hostname.clear();
        assert_eq!(
            user(&c, &image(), Path::new("/nonexistent")).unwrap(),
            (1000, 1000)
        );
        c.security.run_as_user = Some(7);
        assert_eq!(
            user(&c, &image(), Path::new("/nonexistent")).unwrap(),
            (7, 1000)
        );
        let mut named = image();
        named.user = "nobody".into();
        assert!(
            user(
                &ContainerConfig::default(),
                &named,
                Path::new("/nonexistent")
            )
            .is_err()
        );
        assert_eq!(capabilities(&c).unwrap().len(), DEFAULT_CAPABILITIES.len());
        c.security.drop_capabilities = vec!["ALL".into()];
        c.security.add_capabilities = vec!["NET_ADMIN".into()];
        let caps = capabilities(&c).unwrap();
        assert_eq!(caps.len(), 1);
        assert!(caps.contains(&Capability::NetAdmin));
        c.security.add_capabilities = vec!["BOGUS".into()];
        assert!(capabilities(&c).is_err());
    }

    /// A user name is looked up in the image's own /etc/passwd: one that is a symlink
    /// out of the image (here to a file on the host) or to a device is not read.
    #[test]
    fn user_names_come_from_the_image_only() {
        let dir = tempfile::tempdir().unwrap();
        let (root, host) = (dir.path().join("root"), dir.path().join("host"));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(host.join("passwd"), "app:x:4242:4242::/:/bin/sh\n").unwrap();
        let mut named = image();
        named.user = "app".into();
        let c = ContainerConfig::default();
        std::os::unix::fs::symlink(host.join("passwd"), root.join("etc/passwd")).unwrap();
        assert!(user(&c, &named, &root).is_err(), "read the host's file");
        std::fs::remove_file(root.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("../../host/passwd", root.join("etc/passwd")).unwrap();
        assert!(
            user(&c, &named, &root).is_err(),
            "followed .. out of the image"
        );
        std::fs::remove_file(root.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", root.join("etc/passwd")).unwrap();
        assert!(user(&c, &named, &root).is_err(), "read a device");
        std::fs::remove_file(root.join("etc/passwd")).unwrap();
        std::fs::write(root.join("etc/passwd"), "app:x:51:52::/:/bin/sh\n").unwrap();
        assert_eq!(user(&c, &named, &root).unwrap(), (51, 52));
    }
}
