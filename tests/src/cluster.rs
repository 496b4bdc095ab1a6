//! Host side of the Kubernetes tier-3 test (`tests/tests/cluster.rs`): a real control plane on
//! the build machine that the guest's kubelet joins.
//!
//! [`Cluster::start`] creates a network namespace of its own (`ip netns add
//! rampart-k8s-PID-N`, loopback up), generates a throwaway PKI with `openssl` (a CA, the
//! apiserver's serving certificate, client certificates for the admin and for the apiserver's
//! calls to kubelets, a service-account key pair; ECDSA P-256 keys, SHA-256 signatures, SANs
//! everywhere, as Go 1.19's crypto/x509 wants), a static token for the node (user
//! `system:node:NODE`, group `system:nodes`), kubeconfigs for kubectl (admin) and for the
//! node, then runs etcd and kube-apiserver (`--authorization-mode=Node,RBAC`, admission
//! `NodeRestriction` on and `ServiceAccount` off: no controller-manager creates service
//! accounts) inside the namespace and waits for `/readyz`. Dropping it kills both (and every
//! process in their process groups) and deletes the namespace. The daemons also get
//! `PR_SET_PDEATHSIG = SIGKILL`, so they die with the thread that started them if the test
//! process is killed; keep a `Cluster` in the thread that made it. Namespaces of test
//! processes that are gone are removed by the next start.
//!
//! The guest reaches the apiserver through QEMU's user network: [`Cluster::boot`] starts
//! `rampart-image boot` with its network namespace entered, so the guest's gateway `10.0.2.2`
//! is the namespace's loopback, where the apiserver listens (`https://10.0.2.2:6443` from the
//! guest). The other way, for `kubectl logs` (apiserver to kubelet, port 10250 of the node's
//! InternalIP), [`NODE_IP`] (`10.0.2.15`, the guest's address on QEMU's user network) is
//! also local in the namespace (a `local` route on loopback with source `127.0.0.1`) and the
//! boot forwards `NODE_IP:10250` to the guest's 10250 ([`kubelet_hostfwd`]); the connection
//! leaves from 127.0.0.1, so the guest sees it come from its gateway.
//!
//! Plan, then apply: the pure functions ([`cert_plan`], [`ext_file`], [`pki_commands`],
//! [`etcd_args`], [`apiserver_args`], [`kubeconfig`], [`token_file`], [`join_host`],
//! [`kubelet_args`], [`probe_pod`], [`node_ready`], [`ready_condition`], [`pod_phase`],
//! [`probe_status`], [`stale_namespaces`]) turn names and paths into arguments, file contents
//! and verdicts; [`Cluster`] runs them.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{self, Env, HarnessError, Output};
use crate::live::LiveBoot;

/// The node's name: the guest's hostname (`[host] hostname` of the example host).
pub const NODE_NAME: &str = "rampart";
/// The guest's address on QEMU's user network (its first DHCP address), the node's InternalIP.
pub const NODE_IP: &str = "10.0.2.15";
/// The guest's gateway on QEMU's user network: the build machine's loopback, here the
/// namespace's.
pub const GATEWAY_IP: &str = "10.0.2.2";
/// The apiserver's secure port.
pub const APISERVER_PORT: u16 = 6443;
/// kubelet's port (logs, exec), which the apiserver calls.
pub const KUBELET_PORT: u16 = 10250;
/// The service network (the `kubernetes` service gets its first address).
pub const SERVICE_CIDR: &str = "10.96.0.0/24";
/// The first address of [`SERVICE_CIDR`].
pub const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";
/// The prefix of the network namespaces this module creates; the PID of the test follows.
pub const NETNS_PREFIX: &str = "rampart-k8s-";
/// The flag that turns the tier-3 test on.
pub const FLAG: &str = "RAMPART_TEST_CLUSTER";
/// How long the apiserver gets to answer `/readyz` with `ok`.
pub const READY_LIMIT: Duration = Duration::from_secs(180);

/// A failure to bring up, use or tear down the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A program could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The command line.
        program: String,
        /// The error.
        source: std::io::Error,
    },
    /// A setup command ran and failed.
    #[error("{program} failed ({status}): {output}")]
    Command {
        /// The command line.
        program: String,
        /// Its exit status.
        status: ExitStatus,
        /// What it printed.
        output: String,
    },
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A Kubernetes binary is missing.
    #[error("{path} is missing (scripts/build-kubernetes.sh builds it)")]
    MissingBinary {
        /// Where it should be.
        path: PathBuf,
    },
    /// etcd or the apiserver ended while it should be serving.
    #[error("{process} exited ({status}); the end of {log}:\n{tail}")]
    Exited {
        /// `etcd` or `kube-apiserver`.
        process: &'static str,
        /// Its exit status.
        status: ExitStatus,
        /// Its log file.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },
    /// Something did not happen in time.
    #[error("{what} not within {limit:?}; last: {last}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        limit: Duration,
        /// The last answer seen.
        last: String,
    },
    /// Entering or leaving the network namespace failed.
    #[error("setns into {path}: {source}")]
    Setns {
        /// The namespace file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The harness failed (running a command, booting).
    #[error(transparent)]
    Harness(#[from] HarnessError),
}

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ClusterError + 'a {
    move |source| ClusterError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

// ---------------------------------------------------------------------------------------------
// Plans.

/// Where the Kubernetes binaries are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    /// `etcd` (Debian's `etcd-server`).
    pub etcd: PathBuf,
    /// `kube-apiserver` (built by `scripts/build-kubernetes.sh`).
    pub apiserver: PathBuf,
    /// `kubectl` 1.20.2 (from Debian's `kubernetes-client`, not the one on `PATH`).
    pub kubectl: PathBuf,
    /// `kubelet`, for the guest image.
    pub kubelet: PathBuf,
}

impl Binaries {
    /// The binaries of a workspace at `root`: `.cache/k8s/bin/*` and `/usr/bin/etcd`.
    pub fn of_workspace(root: &Path) -> Self {
        let bin = root.join(".cache/k8s/bin");
        Self {
            etcd: PathBuf::from("/usr/bin/etcd"),
            apiserver: bin.join("kube-apiserver"),
            kubectl: bin.join("kubectl"),
            kubelet: bin.join("kubelet"),
        }
    }

    /// The first one that is not a file.
    pub fn missing(&self) -> Option<&Path> {
        [&self.etcd, &self.apiserver, &self.kubectl, &self.kubelet]
            .into_iter()
            .find(|p| !p.is_file())
            .map(PathBuf::as_path)
    }
}

/// The files of one control plane, all under one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The directory.
    pub dir: PathBuf,
}

impl Layout {
    /// A file in the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    /// The CA certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.file("ca.crt")
    }
    /// etcd's data directory.
    pub fn etcd_data(&self) -> PathBuf {
        self.file("etcd-data")
    }
    /// The apiserver's static token file.
    pub fn tokens(&self) -> PathBuf {
        self.file("tokens.csv")
    }
    /// kubectl's kubeconfig (admin, client certificate, `https://127.0.0.1:6443`).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.file("admin.kubeconfig")
    }
    /// The node's kubeconfig as the build machine uses it (`https://127.0.0.1:6443`).
    pub fn node_host_kubeconfig(&self) -> PathBuf {
        self.file("node-host.kubeconfig")
    }
    /// The node's kubeconfig for the guest (`https://10.0.2.2:6443`, CA embedded, token).
    pub fn node_kubeconfig(&self) -> PathBuf {
        self.file("node.kubeconfig")
    }
    /// The service-account signing key (private).
    pub fn sa_key(&self) -> PathBuf {
        self.file("sa.key")
    }
    /// The service-account public key.
    pub fn sa_pub(&self) -> PathBuf {
        self.file("sa.pub")
    }
    /// A certificate of [`cert_plan`].
    pub fn cert(&self, name: &str) -> PathBuf {
        self.file(&format!("{name}.crt"))
    }
    /// Its key.
    pub fn key(&self, name: &str) -> PathBuf {
        self.file(&format!("{name}.key"))
    }
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A TLS server (`extendedKeyUsage = serverAuth`).
    Server,
    /// A TLS client (`extendedKeyUsage = clientAuth`).
    Client,
}

/// One leaf certificate signed by the test CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    /// File stem (`NAME.crt`, `NAME.key`).
    pub name: &'static str,
    /// The subject's common name (a Kubernetes user name for a client).
    pub common_name: String,
    /// Organisations (Kubernetes groups for a client).
    pub organisations: Vec<String>,
    /// Server or client.
    pub usage: Usage,
    /// DNS names of a server.
    pub dns: Vec<String>,
    /// IP addresses of a server.
    pub ips: Vec<String>,
}

impl CertSpec {
    /// The subject as `openssl req -subj` takes it.
    pub fn subject(&self) -> String {
        let mut s = String::new();
        for o in &self.organisations {
            s.push_str("/O=");
            s.push_str(o);
        }
        s.push_str("/CN=");
        s.push_str(&self.common_name);
        s
    }
}

/// The certificates a control plane needs: the apiserver's serving certificate (the names the
/// guest, the build machine and in-cluster clients use), the admin's (group `system:masters`)
/// and the apiserver's client certificate for kubelets (also `system:masters`, so a kubelet
/// that authorizes through the apiserver lets it read logs).
pub fn cert_plan() -> Vec<CertSpec> {
    let dns = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ];
    vec![
        CertSpec {
            name: "apiserver",
            common_name: "kube-apiserver".to_owned(),
            organisations: Vec::new(),
            usage: Usage::Server,
            dns: dns.iter().map(|d| (*d).to_owned()).collect(),
            ips: [GATEWAY_IP, "127.0.0.1", KUBERNETES_SERVICE_IP]
                .iter()
                .map(|d| (*d).to_owned())
                .collect(),
        },
        CertSpec {
            name: "admin",
            common_name: "rampart-admin".to_owned(),
            organisations: vec!["system:masters".to_owned()],
            usage: Usage::Client,
            dns: Vec::new(),
            ips: Vec::new(),
        },
        CertSpec {
            name: "apiserver-kubelet-client",
            common_name: "kube-apiserver-kubelet-client".to_owned(),
            organisations: vec!["system:masters".to_owned()],
            usage: Usage::Client,
            dns: Vec::new(),
            ips: Vec::new(),
        },
    ]
}

/// The `openssl x509 -extfile` text of a leaf certificate.
pub fn ext_file(spec: &CertSpec) -> String {
    let mut s = String::from(
        "basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature, keyEncipherment\n",
    );
    s.push_str(match spec.usage {
        Usage::Server => "extendedKeyUsage = serverAuth\n",
        Usage::Client => "extendedKeyUsage = clientAuth\n",
    });
    s.push_str("subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n");
    let sans: Vec<String> = spec
        .dns
        .iter()
        .map(|d| format!("DNS:{d}"))
        .chain(spec.ips.iter().map(|i| format!("IP:{i}")))
        .collect();
    if !sans.is_empty() {
        s.push_str("subjectAltName = ");
        s.push_str(&sans.join(", "));
        s.push('\n');
    }
    s
}

/// etcd's arguments: one member, plain HTTP on the namespace's loopback.
pub fn etcd_args(layout: &Layout) -> Vec<String> {
    let client = "http://127.0.0.1:2379";
    let peer = "http://127.0.0.1:2380";
    vec![
        "--name=rampart-test".to_owned(),
        format!("--data-dir={}", layout.etcd_data().display()),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=rampart-test={peer}"),
        "--initial-cluster-state=new".to_owned(),
        "--logger=zap".to_owned(),
    ]
}

/// kube-apiserver's arguments (1.20): the secure port only (`--insecure-port` only takes 0),
/// client certificates and the static token file, `Node,RBAC` authorization with the
/// `NodeRestriction` admission plugin, `ServiceAccount` admission off (nothing creates the
/// `default` service account without a controller-manager), the three service-account flags
/// 1.20 requires, and an `--advertise-address` (the namespace has no default route). Kubelets
/// are reached at their InternalIP first.
pub fn apiserver_args(layout: &Layout) -> Vec<String> {
    let p = |f: PathBuf| f.display().to_string();
    vec![
        "--etcd-servers=http://127.0.0.1:2379".to_owned(),
        "--bind-address=0.0.0.0".to_owned(),
        format!("--secure-port={APISERVER_PORT}"),
        "--insecure-port=0".to_owned(),
        format!("--advertise-address={GATEWAY_IP}"),
        format!("--tls-cert-file={}", p(layout.cert("apiserver"))),
        format!("--tls-private-key-file={}", p(layout.key("apiserver"))),
        format!("--client-ca-file={}", p(layout.ca())),
        format!("--token-auth-file={}", p(layout.tokens())),
        "--authorization-mode=Node,RBAC".to_owned(),
        "--enable-admission-plugins=NodeRestriction".to_owned(),
        "--disable-admission-plugins=ServiceAccount".to_owned(),
        "--service-account-issuer=https://kubernetes.default.svc".to_owned(),
        format!("--service-account-key-file={}", p(layout.sa_pub())),
        format!("--service-account-signing-key-file={}", p(layout.sa_key())),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        format!(
            "--kubelet-client-certificate={}",
            p(layout.cert("apiserver-kubelet-client"))
        ),
        format!(
            "--kubelet-client-key={}",
            p(layout.key("apiserver-kubelet-client"))
        ),
        "--kubelet-preferred-address-types=InternalIP,Hostname".to_owned(),
        "--allow-privileged=true".to_owned(),
        "--profiling=false".to_owned(),
    ]
}

/// How a kubeconfig user authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A client certificate and key (paths).
    Cert {
        /// The certificate.
        cert: PathBuf,
        /// The key.
        key: PathBuf,
    },
    /// A bearer token.
    Token(String),
}

/// A kubeconfig (JSON, which kubectl and kubelet read like YAML) with one cluster, one user and
/// one context: `server`, the CA given inline as PEM text.
pub fn kubeconfig(server: &str, ca_pem: &str, user: &str, credential: &Credential) -> String {
    let ca = base64(ca_pem.as_bytes());
    let mut u = serde_json::Map::new();
    match credential {
        Credential::Cert { cert, key } => {
            u.insert(
                "client-certificate".into(),
                Value::String(cert.display().to_string()),
            );
            u.insert(
                "client-key".into(),
                Value::String(key.display().to_string()),
            );
        }
        Credential::Token(t) => {
            u.insert("token".into(), Value::String(t.clone()));
        }
    }
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "rampart-test", "cluster": {
            "server": server, "certificate-authority-data": ca } }],
        "users": [{ "name": user, "user": u }],
        "contexts": [{ "name": "rampart-test", "context": {
            "cluster": "rampart-test", "user": user } }],
        "current-context": "rampart-test",
    });
    format!("{doc:#}\n")
}

/// One line of the apiserver's `--token-auth-file`: `token,user,uid,"group,..."`.
pub fn token_file(entries: &[(&str, &str, &[&str])]) -> String {
    entries
        .iter()
        .map(|(token, user, groups)| format!("{token},{user},{user},\"{}\"\n", groups.join(",")))
        .collect()
}

/// The node's static-token user.
pub fn node_user(node: &str) -> String {
    format!("system:node:{node}")
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                let idx = ((n >> shift) & 63) as usize;
                out.push(char::from(ALPHABET.get(idx).copied().unwrap_or(b'A')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The test pod: bound to `node` (no scheduler runs), `image` already in the node's containerd
/// (`imagePullPolicy: Never`), running `PROBE status` once (`restartPolicy: Never`), no
/// service-account token.
pub fn probe_pod(name: &str, node: &str, image: &str, probe: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": "default" },
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "probe",
                "image": image,
                "imagePullPolicy": "Never",
                "command": [probe, "status"],
            }],
        },
    })
}

/// A Node object as a kubelet would register it (for checking the node credentials by hand).
pub fn node_object(node: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": node, "labels": { "kubernetes.io/hostname": node } },
    })
}

/// The status of condition `Ready` of a Node (`kubectl get node -o json`): `Some(true)` for
/// `"True"`, `Some(false)` for anything else, `None` when there is no such condition.
pub fn node_ready(node: &Value) -> Option<bool> {
    node.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        .map(|c| c.get("status").and_then(Value::as_str) == Some("True"))
}

/// A Node's `Ready` condition as `STATUS (MESSAGE)`, `none` without one.
pub fn ready_condition(node: &Value) -> String {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|a| {
            a.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        })
        .map_or_else(
            || "none".to_owned(),
            |c| {
                format!(
                    "{} ({})",
                    c.get("status").and_then(Value::as_str).unwrap_or("?"),
                    c.get("message").and_then(Value::as_str).unwrap_or("")
                )
            },
        )
}

/// A Pod's `status.phase`, `""` when absent.
pub fn pod_phase(pod: &Value) -> &str {
    pod.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The `--hostfwd` that lets the apiserver reach the kubelet: `NODE_IP:10250` in the namespace
/// to the guest's 10250.
pub fn kubelet_hostfwd() -> String {
    format!("tcp:{NODE_IP}:{KUBELET_PORT}-:{KUBELET_PORT}")
}

/// The `RAMPART-PROBE {"status":{..}}` object in `log`, if any.
pub fn probe_status(log: &str) -> Option<Value> {
    log.lines()
        .filter_map(|l| l.split_once("RAMPART-PROBE ").map(|(_, j)| j))
        .filter_map(|j| serde_json::from_str::<Value>(j).ok())
        .find_map(|v| v.get("status").cloned())
}

/// The namespace names of `ip netns list` output that this module created for processes that
/// are gone (`rampart-k8s-PID-N` with no `/proc/PID`).
pub fn stale_namespaces(listing: &str, alive: impl Fn(u32) -> bool) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|n| {
            let rest = n.strip_prefix(NETNS_PREFIX)?;
            let (pid, seq) = rest.split_once('-')?;
            let pid: u32 = pid.parse().ok()?;
            seq.parse::<u32>().ok()?;
            (!alive(pid)).then(|| n.to_owned())
        })
        .collect()
}

/// Whether the tier-3 tests run, from [`FLAG`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `RAMPART_TEST_CLUSTER=0`: skipped.
    Off,
    /// Unset (or another value): run when everything needed is here, else skip saying why.
    Auto,
    /// `RAMPART_TEST_CLUSTER=1`: run; a missing prerequisite is a failure.
    Required,
}

impl Mode {
    /// The mode for a value of [`FLAG`].
    pub fn from_value(v: Option<&str>) -> Self {
        match v {
            Some("0") => Mode::Off,
            Some("1") => Mode::Required,
            _ => Mode::Auto,
        }
    }

    /// The mode of this process's environment.
    pub fn from_env() -> Self {
        Self::from_value(std::env::var(FLAG).ok().as_deref())
    }
}

/// The kubelet flags of a joining node on top of what `[kubelet]` with a kubeconfig and a
/// `client_ca` generates: the node's address.
pub fn kubelet_args() -> Vec<String> {
    vec![format!("--node-ip={NODE_IP}")]
}

/// The guest side of joining, besides `[kubelet]`: a host TOML text with the NIC's modules,
/// `eth0` at `NODE_IP/24` with the default route via [`GATEWAY_IP`], firewall rules for the
/// apiserver (out, tcp 6443 to the gateway) and for the apiserver's calls to kubelet (in, tcp
/// 10250 from the gateway: QEMU's forward arrives from there).
pub fn join_host(text: &str) -> Result<String, String> {
    use toml::{Table, Value};
    let mut doc: Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    fn table<'a>(t: &'a mut Table, key: &str) -> Result<&'a mut Table, String> {
        t.entry(key)
            .or_insert_with(|| Value::Table(Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("{key} is not a table"))
    }
    fn array<'a>(t: &'a mut Table, key: &str) -> Result<&'a mut Vec<Value>, String> {
        t.entry(key)
            .or_insert_with(|| Value::Array(Vec::new()))
            .as_array_mut()
            .ok_or_else(|| format!("{key} is not a list"))
    }
    let modules = array(table(&mut doc, "kernel")?, "modules")?;
    for m in crate::network::NIC_MODULES {
        if !modules.iter().any(|v| v.as_str() == Some(m)) {
            modules.push(Value::String((*m).to_owned()));
        }
    }
    let mut iface = Table::new();
    iface.insert("name".into(), Value::String("eth0".into()));
    iface.insert(
        "addresses".into(),
        Value::Array(vec![Value::String(format!("{NODE_IP}/24"))]),
    );
    iface.insert("gateway".into(), Value::String(GATEWAY_IP.into()));
    array(table(&mut doc, "network")?, "interface")?.push(Value::Table(iface));
    let rule = |direction: &str, port: u16, peer_key: &str, comment: &str| {
        let mut r = Table::new();
        r.insert("direction".into(), Value::String(direction.into()));
        r.insert("protocol".into(), Value::String("tcp".into()));
        r.insert(
            "ports".into(),
            Value::Array(vec![Value::Integer(port.into())]),
        );
        r.insert(
            peer_key.into(),
            Value::Array(vec![Value::String(GATEWAY_IP.into())]),
        );
        r.insert("action".into(), Value::String("accept".into()));
        r.insert("comment".into(), Value::String(comment.into()));
        Value::Table(r)
    };
    let rules = array(table(&mut doc, "firewall")?, "rule")?;
    rules.push(rule(
        "out",
        APISERVER_PORT,
        "destination",
        "kubelet to the apiserver",
    ));
    rules.push(rule(
        "in",
        KUBELET_PORT,
        "source",
        "the apiserver to kubelet (logs, exec)",
    ));
    toml::to_string(&doc).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Applying.

/// The `openssl req -config` of the test PKI: the CA's subject and extensions (`-x509`); the
/// leaves' subjects come from `-subj`, their extensions from [`ext_file`].
pub const OPENSSL_CNF: &str = "[req]
prompt = no
distinguished_name = dn
x509_extensions = v3_ca

[dn]
CN = rampart-test-ca

[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
";

/// The `openssl` argument lists that make the PKI in the layout's folder, in order: the CA
/// (`req -x509` with [`OPENSSL_CNF`] as `openssl.cnf`), for each of `leaves` a key and request
/// (`req -new`) and the certificate (`x509 -req` with `NAME.ext`, [`ext_file`]), then the
/// service-account key pair. ECDSA P-256 keys, SHA-256 signatures, 3 days.
pub fn pki_commands(leaves: &[CertSpec]) -> Vec<Vec<String>> {
    let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut out = Vec::new();
    let mut ca = strings(&["req", "-config", "openssl.cnf", "-x509", "-new", "-nodes"]);
    ca.extend(strings(&["-sha256", "-days", "3"]));
    ca.extend(strings(&ec));
    ca.extend(strings(&["-keyout", "ca.key", "-out", "ca.crt"]));
    out.push(ca);
    for (i, spec) in leaves.iter().enumerate() {
        let n = spec.name;
        let mut req = strings(&["req", "-config", "openssl.cnf", "-new", "-nodes", "-sha256"]);
        req.extend(strings(&ec));
        req.extend([
            "-keyout".to_owned(),
            format!("{n}.key"),
            "-out".to_owned(),
            format!("{n}.csr"),
            "-subj".to_owned(),
            spec.subject(),
        ]);
        out.push(req);
        let mut sign = strings(&["x509", "-req", "-sha256", "-days", "3"]);
        sign.extend([
            "-in".to_owned(),
            format!("{n}.csr"),
            "-CA".to_owned(),
            "ca.crt".to_owned(),
            "-CAkey".to_owned(),
            "ca.key".to_owned(),
            "-set_serial".to_owned(),
            (i + 2).to_string(),
            "-extfile".to_owned(),
            format!("{n}.ext"),
            "-out".to_owned(),
            format!("{n}.crt"),
        ]);
        out.push(sign);
    }
    out.push(strings(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        "sa.key",
    ]));
    out.push(strings(&[
        "pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub",
    ]));
    out
}

/// Runs `cmd` to its end (limit 60 s); an error unless it succeeds.
fn checked(cmd: &mut Command) -> Result<Output, ClusterError> {
    let out = harness::run(cmd, Duration::from_secs(60))?;
    if !out.status.success() {
        return Err(ClusterError::Command {
            program: format!("{cmd:?}"),
            status: out.status,
            output: out.combined(),
        });
    }
    Ok(out)
}

fn random_hex(bytes: usize) -> Result<String, ClusterError> {
    let path = Path::new("/dev/urandom");
    let mut buf = vec![0u8; bytes];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(io("read", path))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes the PKI, the token file and the kubeconfigs into `layout.dir`; returns the node's
/// token.
fn write_pki(layout: &Layout, node: &str) -> Result<String, ClusterError> {
    // Our own openssl configuration, so the system's openssl.cnf adds nothing.
    let cnf = layout.file("openssl.cnf");
    std::fs::write(&cnf, OPENSSL_CNF).map_err(io("write", &cnf))?;
    for spec in cert_plan() {
        let ext = layout.file(&format!("{}.ext", spec.name));
        std::fs::write(&ext, ext_file(&spec)).map_err(io("write", &ext))?;
    }
    for args in pki_commands(&cert_plan()) {
        checked(Command::new("openssl").args(&args).current_dir(&layout.dir))?;
    }

    let token = random_hex(16)?;
    let user = node_user(node);
    std::fs::write(
        layout.tokens(),
        token_file(&[(&token, &user, &["system:nodes"])]),
    )
    .map_err(io("write", &layout.tokens()))?;
    let ca_path = layout.ca();
    let ca = std::fs::read_to_string(&ca_path).map_err(io("read", &ca_path))?;
    let local = format!("https://127.0.0.1:{APISERVER_PORT}");
    let files = [
        (
            layout.admin_kubeconfig(),
            kubeconfig(
                &local,
                &ca,
                "rampart-admin",
                &Credential::Cert {
                    cert: layout.cert("admin"),
                    key: layout.key("admin"),
                },
            ),
        ),
        (
            layout.node_host_kubeconfig(),
            kubeconfig(&local, &ca, &user, &Credential::Token(token.clone())),
        ),
        (
            layout.node_kubeconfig(),
            kubeconfig(
                &format!("https://{GATEWAY_IP}:{APISERVER_PORT}"),
                &ca,
                &user,
                &Credential::Token(token.clone()),
            ),
        ),
    ];
    for (path, text) in files {
        std::fs::write(&path, text).map_err(io("write", &path))?;
    }
    Ok(token)
}

/// Kills what still runs in `netns`, a namespace of a test process that is gone (its etcd
/// and apiserver, if it was killed before tearing down), and deletes the namespace.
fn remove_stale(netns: &str) {
    eprintln!("cluster: deleting stale network namespace {netns}");
    if let Ok(out) = checked(Command::new("ip").args(["netns", "pids", netns])) {
        for pid in out
            .stdout
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            eprintln!("cluster: killing {pid}, left in {netns}");
            // SAFETY: kill(2) on a PID `ip netns pids` listed in a namespace this module
            // created; no memory is involved.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let _ = checked(Command::new("ip").args(["netns", "del", netns]));
}

/// A process of the control plane, its output going to a log file.
struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn spawn(
        name: &'static str,
        netns: &str,
        program: &Path,
        args: &[String],
        log: PathBuf,
    ) -> Result<Self, ClusterError> {
        let out = File::create(&log).map_err(io("create", &log))?;
        let err = out.try_clone().map_err(io("duplicate", &log))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // Its own process group, killed whole on drop.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        // And killed if the test dies without dropping it (`ip netns exec` execs the daemon,
        // which keeps the setting: neither is set-user-ID).
        // SAFETY: the closure runs in the forked child before exec and only calls prctl(2),
        // which is async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let child = cmd.spawn().map_err(|source| ClusterError::Spawn {
            program: format!("{cmd:?}"),
            source,
        })?;
        Ok(Self { name, child, log })
    }

    /// An error if it has exited.
    fn check(&mut self) -> Result<(), ClusterError> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(ClusterError::Exited {
                process: self.name,
                status,
                log: self.log.clone(),
                tail: log_tail(&self.log, 30),
            }),
            _ => Ok(()),
        }
    }

    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Ok(pid) = i32::try_from(self.child.id()) {
                // SAFETY: signals the process group this module created for the daemon.
                unsafe { libc::kill(-pid, libc::SIGTERM) };
                let start = Instant::now();
                while start.elapsed() < Duration::from_secs(5) {
                    if let Ok(Some(_)) = self.child.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                // SAFETY: as above, for what did not end on SIGTERM.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last `lines` lines of a log file.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = text.lines().collect();
    v.get(v.len().saturating_sub(lines)..)
        .unwrap_or(&[])
        .join("\n")
}

/// A node seen Ready by [`Cluster::wait_node_ready`].
#[derive(Debug, Clone)]
pub struct NodeReady {
    /// The Node object (`kubectl get node -o json`) once Ready.
    pub object: Value,
    /// When the Node object was first seen.
    pub registered: Duration,
    /// Its `Ready` condition then ([`ready_condition`]).
    pub first_ready: String,
    /// When it was first seen Ready.
    pub ready: Duration,
}

/// How long the steps of [`Cluster::start`] took.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartTimes {
    /// Namespace and PKI.
    pub setup: Duration,
    /// From starting etcd to the apiserver's `/readyz` answering `ok`.
    pub ready: Duration,
}

/// A running control plane in a network namespace of its own; dropping it tears it down.
pub struct Cluster {
    netns: String,
    layout: Layout,
    bins: Binaries,
    node_token: String,
    daemons: Vec<Daemon>,
    /// How long starting took.
    pub times: StartTimes,
}

impl Cluster {
    /// Creates the namespace `rampart-k8s-PID-N` (deleting those of test processes that are
    /// gone, with what still runs in them),
    /// writes the PKI and kubeconfigs into `dir` (emptied first), starts etcd and
    /// kube-apiserver in the namespace and waits for `/readyz`.
    pub fn start(dir: &Path, bins: Binaries) -> Result<Self, ClusterError> {
        if let Some(path) = bins.missing() {
            return Err(ClusterError::MissingBinary {
                path: path.to_path_buf(),
            });
        }
        let t = Instant::now();
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let netns = format!(
            "{NETNS_PREFIX}{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let listing = checked(Command::new("ip").args(["netns", "list"]))?;
        for stale in stale_namespaces(&listing.stdout, |pid| {
            Path::new(&format!("/proc/{pid}")).exists()
        }) {
            remove_stale(&stale);
        }
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        let layout = Layout {
            dir: std::path::absolute(dir).map_err(io("resolve", dir))?,
        };
        let node_token = write_pki(&layout, NODE_NAME)?;
        checked(Command::new("ip").args(["netns", "add", &netns]))?;
        // From here on, drop deletes the namespace.
        let mut cluster = Self {
            netns,
            layout,
            bins,
            node_token,
            daemons: Vec::new(),
            times: StartTimes::default(),
        };
        cluster.ip(&["link", "set", "lo", "up"])?;
        // NODE_IP local (QEMU listens there for the guest's kubelet port), but connections
        // to it leave from 127.0.0.1, which QEMU shows the guest as its gateway 10.0.2.2:
        // from NODE_IP itself they would arrive in the guest from its own address.
        cluster.ip(&[
            "route",
            "add",
            "local",
            &format!("{NODE_IP}/32"),
            "dev",
            "lo",
            "src",
            "127.0.0.1",
            "table",
            "local",
        ])?;
        cluster.times.setup = t.elapsed();

        let t = Instant::now();
        let etcd = Daemon::spawn(
            "etcd",
            &cluster.netns,
            &cluster.bins.etcd,
            &etcd_args(&cluster.layout),
            cluster.layout.file("etcd.log"),
        )?;
        cluster.daemons.push(etcd);
        let apiserver = Daemon::spawn(
            "kube-apiserver",
            &cluster.netns,
            &cluster.bins.apiserver,
            &apiserver_args(&cluster.layout),
            cluster.layout.file("kube-apiserver.log"),
        )?;
        cluster.daemons.push(apiserver);
        cluster.wait_ready(READY_LIMIT)?;
        cluster.times.ready = t.elapsed();
        Ok(cluster)
    }

    /// `ip ARGS` inside the namespace.
    fn ip(&self, args: &[&str]) -> Result<Output, ClusterError> {
        checked(
            Command::new("ip")
                .args(["netns", "exec", &self.netns, "ip"])
                .args(args),
        )
    }

    /// The namespace's name.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The files.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The node's bearer token.
    pub fn node_token(&self) -> &str {
        &self.node_token
    }

    /// An error if etcd or the apiserver has exited.
    pub fn check(&mut self) -> Result<(), ClusterError> {
        self.daemons.iter_mut().try_for_each(Daemon::check)
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), ClusterError> {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < limit {
            self.check()?;
            let out = self.kubectl(&["get", "--raw", "/readyz"])?;
            if out.status.success() && out.stdout.trim() == "ok" {
                return Ok(());
            }
            last = out.combined().trim().to_owned();
            std::thread::sleep(Duration::from_millis(500));
        }
        Err(ClusterError::Timeout {
            what: "kube-apiserver /readyz".to_owned(),
            limit,
            last: format!(
                "{last}\n--- kube-apiserver.log ---\n{}",
                log_tail(&self.layout.file("kube-apiserver.log"), 20)
            ),
        })
    }

    /// `kubectl --kubeconfig KUBECONFIG ARGS` inside the namespace (limit 60 s), whatever its
    /// exit status.
    pub fn kubectl_with(&self, kubeconfig: &Path, args: &[&str]) -> Result<Output, ClusterError> {
        Ok(harness::run(
            Command::new("ip")
                .args(["netns", "exec", &self.netns])
                .arg(&self.bins.kubectl)
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .args(["--request-timeout", "30s"])
                .args(args),
            Duration::from_secs(60),
        )?)
    }

    /// `kubectl` as the admin.
    pub fn kubectl(&self, args: &[&str]) -> Result<Output, ClusterError> {
        self.kubectl_with(&self.layout.admin_kubeconfig(), args)
    }

    /// `kubectl` as the admin; an error unless it succeeds.
    pub fn kubectl_ok(&self, args: &[&str]) -> Result<Output, ClusterError> {
        let out = self.kubectl(args)?;
        if !out.status.success() {
            return Err(ClusterError::Command {
                program: format!("kubectl {}", args.join(" ")),
                status: out.status,
                output: out.combined(),
            });
        }
        Ok(out)
    }

    /// `kubectl ARGS -o json` as the admin, parsed; `None` when kubectl fails (not found).
    pub fn get_json(&self, args: &[&str]) -> Result<Option<Value>, ClusterError> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.kubectl(&all)?;
        if !out.status.success() {
            return Ok(None);
        }
        Ok(serde_json::from_str(&out.stdout).ok())
    }

    /// `kubectl create -f FILE` of `object` (written to `<dir>/NAME.json`) with `kubeconfig`.
    pub fn create_with(
        &self,
        kubeconfig: &Path,
        name: &str,
        object: &Value,
    ) -> Result<Output, ClusterError> {
        let path = self.layout.file(&format!("{name}.json"));
        std::fs::write(&path, format!("{object:#}\n")).map_err(io("write", &path))?;
        let file = path.display().to_string();
        self.kubectl_with(kubeconfig, &["create", "-f", &file])
    }

    /// Polls `kubectl get node NODE` (every 500 ms) until its `Ready` condition is `True`,
    /// timing from `since`; `alive` is called between polls (e.g. to check on the guest) and
    /// ends the wait with its error.
    pub fn wait_node_ready(
        &mut self,
        node: &str,
        since: Instant,
        limit: Duration,
        mut alive: impl FnMut() -> Result<(), String>,
    ) -> Result<NodeReady, ClusterError> {
        let start = Instant::now();
        let mut registered: Option<(Duration, String)> = None;
        let mut last = String::from("no node object");
        while start.elapsed() < limit {
            self.check()?;
            if let Some(object) = self.get_json(&["get", "node", node])? {
                let first = registered
                    .get_or_insert_with(|| (since.elapsed(), ready_condition(&object)))
                    .clone();
                if node_ready(&object) == Some(true) {
                    return Ok(NodeReady {
                        object,
                        registered: first.0,
                        first_ready: first.1,
                        ready: since.elapsed(),
                    });
                }
                last = ready_condition(&object);
            }
            alive().map_err(|e| ClusterError::Timeout {
                what: format!("node {node} Ready (the guest is gone)"),
                limit,
                last: e,
            })?;
            std::thread::sleep(Duration::from_millis(500));
        }
        Err(ClusterError::Timeout {
            what: format!("node {node} Ready"),
            limit,
            last,
        })
    }

    /// Polls `kubectl get pod NAME` (every 250 ms) until its phase is one of `phases`.
    pub fn wait_pod_phase(
        &mut self,
        pod: &str,
        phases: &[&str],
        limit: Duration,
    ) -> Result<Value, ClusterError> {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < limit {
            self.check()?;
            if let Some(obj) = self.get_json(&["get", "pod", pod])? {
                if phases.contains(&pod_phase(&obj)) {
                    return Ok(obj);
                }
                last = obj
                    .get("status")
                    .map_or_else(|| "no status".to_owned(), Value::to_string);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Err(ClusterError::Timeout {
            what: format!("pod {pod} in {phases:?}"),
            limit,
            last,
        })
    }

    /// Boots `image` like [`LiveBoot::start`], with QEMU started inside the namespace (so the
    /// guest's `10.0.2.2` is its loopback) and `--hostfwd` [`kubelet_hostfwd`] added to
    /// `extra`. The calling thread enters the namespace for the spawn only.
    pub fn boot(
        &self,
        env: &Env,
        image: &Path,
        name: &str,
        memory_mib: u32,
        timeout: u64,
        extra: &[String],
    ) -> Result<LiveBoot, ClusterError> {
        let mut args = extra.to_vec();
        args.extend(["--hostfwd".to_owned(), kubelet_hostfwd()]);
        let target = PathBuf::from(format!("/run/netns/{}", self.netns));
        let _inside = ThreadNetns::enter(&target)?;
        Ok(LiveBoot::start(
            env, image, name, memory_mib, timeout, &args,
        )?)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for d in self.daemons.iter_mut().rev() {
            d.stop();
        }
        let _ = harness::run(
            Command::new("ip").args(["netns", "del", &self.netns]),
            Duration::from_secs(30),
        );
    }
}

/// The calling thread inside another network namespace until dropped (`setns(2)` changes the
/// calling thread only; children spawned meanwhile start inside).
struct ThreadNetns {
    back: File,
    path: PathBuf,
}

impl ThreadNetns {
    fn enter(target: &Path) -> Result<Self, ClusterError> {
        let here = Path::new("/proc/thread-self/ns/net");
        let back = File::open(here).map_err(io("open", here))?;
        let ns = File::open(target).map_err(io("open", target))?;
        setns(&ns, target)?;
        Ok(Self {
            back,
            path: here.to_path_buf(),
        })
    }
}

impl Drop for ThreadNetns {
    fn drop(&mut self) {
        if let Err(e) = setns(&self.back, &self.path) {
            eprintln!("cluster: cannot return to the test's network namespace: {e}");
        }
    }
}

fn setns(ns: &File, path: &Path) -> Result<(), ClusterError> {
    // SAFETY: `ns` is an open network-namespace file for the duration of the call; setns only
    // changes the calling thread's namespace (nothing in this crate has a dependency with a
    // safe wrapper for it).
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(ClusterError::Setns {
            path: path.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_table() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want, "{input:?}");
        }
    }

    #[test]
    fn certificates_have_sans_and_groups() {
        let plan = cert_plan();
        let server = plan.iter().find(|c| c.name == "apiserver").unwrap();
        let ext = ext_file(server);
        assert!(ext.contains("extendedKeyUsage = serverAuth"));
        for san in [
            "IP:10.0.2.2",
            "IP:127.0.0.1",
            "DNS:localhost",
            "DNS:kubernetes.default",
        ] {
            assert!(ext.contains(san), "{san} missing: {ext}");
        }
        assert!(ext.contains(&format!("IP:{KUBERNETES_SERVICE_IP}")));
        let admin = plan.iter().find(|c| c.name == "admin").unwrap();
        assert_eq!(admin.subject(), "/O=system:masters/CN=rampart-admin");
        assert!(ext_file(admin).contains("clientAuth"));
        assert!(!ext_file(admin).contains("subjectAltName"));
    }

    #[test]
    fn apiserver_flags_needed_by_1_20() {
        let layout = Layout {
            dir: PathBuf::from("/x"),
        };
        let args = apiserver_args(&layout);
        for want in [
            "--insecure-port=0",
            "--advertise-address=10.0.2.2",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--service-account-key-file=/x/sa.pub",
            "--service-account-signing-key-file=/x/sa.key",
            "--authorization-mode=Node,RBAC",
            "--token-auth-file=/x/tokens.csv",
            "--client-ca-file=/x/ca.crt",
        ] {
            assert!(args.iter().any(|a| a == want), "{want} missing: {args:?}");
        }
        let etcd = etcd_args(&layout);
        assert!(etcd.contains(&"--data-dir=/x/etcd-data".to_owned()));
    }

    #[test]
    fn pki_command_order() {
        let cmds = pki_commands(&cert_plan());
        // CA, then request + signature per leaf, then the service-account pair.
        assert_eq!(cmds.len(), 1 + 2 * cert_plan().len() + 2);
        assert!(cmds[0].starts_with(&["req".to_owned(), "-config".to_owned()]));
        assert!(cmds[0].contains(&"-x509".to_owned()));
        for c in &cmds[..cmds.len() - 2] {
            assert!(c.contains(&"-sha256".to_owned()), "{c:?}");
        }
        let sign = &cmds[2];
        assert_eq!(sign[0], "x509");
        assert!(sign
            .windows(2)
            .any(|w| w[0] == "-extfile" && w[1] == "apiserver.ext"));
        let admin_req = &cmds[3];
        assert!(admin_req
            .windows(2)
            .any(|w| w[0] == "-subj" && w[1] == "/O=system:masters/CN=rampart-admin"));
        let serials: Vec<&String> = cmds
            .iter()
            .filter_map(|c| c.windows(2).find(|w| w[0] == "-set_serial").map(|w| &w[1]))
            .collect();
        assert_eq!(serials, ["2", "3", "4"]);
        assert_eq!(cmds.last().unwrap()[0], "pkey");
    }

    #[test]
    fn kubeconfigs() {
        let token = kubeconfig(
            "https://10.0.2.2:6443",
            "PEM",
            "system:node:rampart",
            &Credential::Token("t0k".into()),
        );
        let v: Value = serde_json::from_str(&token).unwrap();
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://10.0.2.2:6443"
        );
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority-data"],
            "UEVN"
        );
        assert_eq!(v["users"][0]["user"]["token"], "t0k");
        assert_eq!(v["contexts"][0]["context"]["user"], "system:node:rampart");
        assert_eq!(v["current-context"], "rampart-test");
        let cert = kubeconfig(
            "https://127.0.0.1:6443",
            "PEM",
            "admin",
            &Credential::Cert {
                cert: "/a.crt".into(),
                key: "/a.key".into(),
            },
        );
        let v: Value = serde_json::from_str(&cert).unwrap();
        assert_eq!(v["users"][0]["user"]["client-certificate"], "/a.crt");
        assert_eq!(v["users"][0]["user"]["client-key"], "/a.key");
    }

    #[test]
    fn token_lines() {
        assert_eq!(
            token_file(&[
                ("abc", "system:node:n", &["system:nodes"]),
                ("d", "u", &["a", "b"])
            ]),
            "abc,system:node:n,system:node:n,\"system:nodes\"\nd,u,u,\"a,b\"\n"
        );
    }

    #[test]
    fn readiness_and_phase() {
        let ready = json!({"status": {"conditions": [
            {"type": "MemoryPressure", "status": "False"},
            {"type": "Ready", "status": "True"}]}});
        let not_ready = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        assert_eq!(node_ready(&ready), Some(true));
        assert_eq!(node_ready(&not_ready), Some(false));
        assert_eq!(node_ready(&json!({"status": {}})), None);
        let pending = json!({"status": {"conditions": [
            {"type": "Ready", "status": "False", "message": "runtime not ready"}]}});
        assert_eq!(ready_condition(&pending), "False (runtime not ready)");
        assert_eq!(ready_condition(&json!({})), "none");
        assert_eq!(
            pod_phase(&json!({"status": {"phase": "Succeeded"}})),
            "Succeeded"
        );
        assert_eq!(pod_phase(&json!({})), "");
    }

    #[test]
    fn pod_is_bound_and_never_pulls() {
        let pod = probe_pod("p", "rampart", "img:1", "/rampart-probe");
        assert_eq!(pod["spec"]["nodeName"], "rampart");
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Never");
        assert_eq!(
            pod["spec"]["containers"][0]["command"],
            json!(["/rampart-probe", "status"])
        );
    }

    #[test]
    fn probe_status_line() {
        let log = "noise\nRAMPART-PROBE {\"status\":{\"Seccomp\":\"2\",\"NoNewPrivs\":\"1\"}}\n";
        let s = probe_status(log).unwrap();
        assert_eq!(s["Seccomp"], "2");
        assert_eq!(s["NoNewPrivs"], "1");
        assert!(probe_status("RAMPART-PROBE {\"sleep\":{}}").is_none());
    }

    #[test]
    fn stale_namespace_selection() {
        let listing = "rampart-k8s-10-0 (id: 3)\nrampart-k8s-11-2\nrfw-1-2\nrampart-k8s-x-1\nrampart-k8s-12\nrampart-k8s-13-1\n";
        let alive = |pid: u32| pid == 11;
        assert_eq!(
            stale_namespaces(listing, alive),
            ["rampart-k8s-10-0", "rampart-k8s-13-1"]
        );
    }

    #[test]
    fn modes() {
        assert_eq!(Mode::from_value(Some("0")), Mode::Off);
        assert_eq!(Mode::from_value(Some("1")), Mode::Required);
        assert_eq!(Mode::from_value(None), Mode::Auto);
        assert_eq!(Mode::from_value(Some("yes")), Mode::Auto);
    }

    #[test]
    fn joining_host_parses() {
        let example = harness::workspace_root().join("examples/host.toml");
        let text = std::fs::read_to_string(&example).unwrap();
        let joined = join_host(&text).unwrap();
        let cfg = rampart_config::parse(&joined, &example).unwrap();
        assert!(cfg
            .kernel
            .modules
            .iter()
            .any(|m| m.as_str() == "virtio_net"));
        assert_eq!(cfg.firewall.rules.len(), 2, "{joined}");
        assert!(joined.contains("10.0.2.15/24"), "{joined}");
        assert_eq!(kubelet_args(), ["--node-ip=10.0.2.15"]);
    }

    #[test]
    fn hostfwd_to_kubelet() {
        assert_eq!(kubelet_hostfwd(), "tcp:10.0.2.15:10250-:10250");
    }
}
