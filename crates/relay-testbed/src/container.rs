//! Postfix in a real container, for the tests of `POSTFIX_COMMAND_PREFIX` and of the sidecar
//! form: podman from Debian's packages (CLI-compatible with docker), and images built from
//! Debian's packages on this machine, since no image registry is reachable.
//!
//! - [`Image::postfix`]: the base image, `mmdebstrap` of the host's Debian release with Postfix,
//!   imported with `podman import`. Built once per machine and cached by a hash of its inputs:
//!   as a podman image tagged with the hash, and as the tarball under
//!   `target/relay-testbed-containers/`, so that a cleared image store imports it again in
//!   seconds instead of building it again (about 45 s).
//! - [`Image::build`]: a Containerfile built over such a base (`podman build --from`), as the
//!   shipped relay-sync image is.
//! - [`PostfixContainer`]: Postfix in a container of its own, `postfix start-fg` as its PID 1,
//!   on the host's network, SMTP on a free port of 127.0.0.1. Either beside this host
//!   ([`PostfixContainer::start`]: the requirements' topology; the map directory bind-mounted at
//!   the same path on both sides) or in a [`Pod`] with its configuration and queue on named
//!   volumes (the sidecar form).
//!
//! Every container, pod and volume is named uniquely (or as the caller asks, e.g.
//! `mailserver-postfix`), labelled with the process that made it, and removed on drop by that
//! name. A name already taken is never removed unless its label shows a testbed process that
//! is gone (a crashed test run of this machine); anything else is an error that says so.
//!
//! Podman runs with a `containers.conf` of the testbed's own ([`podman`]): on this machine
//! kind (cgroups v1/hybrid), `crun` refuses to start a container and the default rlimits are
//! above the VM's hard limit, so it sets `runc` and lower `nofile`/`nproc` limits, for pods'
//! infra containers too.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::free_port;

/// The container tools and the Debian packages that provide them.
const TOOLS: &[(&str, &str)] = &[
    ("/usr/bin/podman", "podman"),
    ("/usr/sbin/runc", "runc"),
    ("/usr/bin/mmdebstrap", "mmdebstrap"),
    // Podman builds its pods' infra ("pause") image from it, without a registry.
    ("/usr/bin/catatonit", "catatonit"),
    ("/usr/bin/newuidmap", "uidmap"),
];

/// The one `apt-get` line that installs every container tool the tests need.
pub const CONTAINER_PACKAGES: &str = "podman runc mmdebstrap uidmap catatonit";

/// The label every container, pod and volume of the testbed carries: the pid of the process
/// that made it, so that a leftover of a crashed run can be told from someone else's.
const OWNER_LABEL: &str = "io.relay-sync.testbed.pid";

/// Debian packages of the Postfix base image.
const BASE_PACKAGES: &str = "postfix,postfix-lmdb,postfix-cdb";

/// Debian's sources of this host, in deb822 form (Debian 12's default file).
const HOST_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";

/// Changes whenever the base image's recipe changes in a way its other inputs do not show.
const RECIPE: &str = "relay-testbed postfix base 1";

/// How long a container may take to answer SMTP after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Fails, naming the one `apt-get` line, when a container tool is missing.
pub fn require_container_tools() -> Result<()> {
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(path, _)| !Path::new(path).exists())
        .map(|(path, _)| *path)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    bail!(
        "{} missing: the container tests need podman; install it with \
         `DEBIAN_FRONTEND=noninteractive apt-get install -y {CONTAINER_PACKAGES}` (see .ci/run)",
        missing.join(", ")
    )
}

/// Where the testbed keeps its image tarballs and its `containers.conf`:
/// `target/relay-testbed-containers/` (`CARGO_TARGET_DIR` when set).
pub fn cache_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("relay-testbed-containers")
}

/// A `podman` command with the testbed's `containers.conf` (runc, rlimits this VM allows).
pub fn podman() -> Result<Command> {
    static CONF: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let conf = CONF
        .get_or_init(|| write_containers_conf().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("{e}"))?;
    // Bounded like every command the testbed runs (a build or an image import included).
    let mut command = Command::new("timeout");
    command
        .args(["-k", "10", "900", "/usr/bin/podman"])
        .env("CONTAINERS_CONF", conf)
        .stdin(Stdio::null());
    Ok(command)
}

fn write_containers_conf() -> Result<PathBuf> {
    require_container_tools()?;
    let dir = cache_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("containers.conf");
    let text = "# Written by relay-testbed: what podman needs on this machine kind.\n\
                [containers]\n\
                default_ulimits = [\"nofile=20000:20000\", \"nproc=1024:1024\"]\n\
                [engine]\n\
                runtime = \"runc\"\n";
    if fs::read_to_string(&path).ok().as_deref() != Some(text) {
        let temp = dir.join(format!(".containers.conf.{}", std::process::id()));
        fs::write(&temp, text)?;
        fs::rename(&temp, &path)?;
    }
    Ok(path)
}

/// Runs a podman command to its end; its stdout, or an error with its stderr.
pub fn podman_run(args: &[&str]) -> Result<String> {
    let output = podman()?.args(args).output().context("cannot run podman")?;
    checked(&format!("podman {}", args.join(" ")), output)
}

fn checked(what: &str, output: Output) -> Result<String> {
    if !output.status.success() {
        bail!(
            "`{what}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A name no other testbed object of this machine has: `PREFIX-PID-N`.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A container image in podman's local store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    reference: String,
}

impl Image {
    /// The Postfix base image: the host's Debian release (`VERSION_CODENAME`) with `postfix`,
    /// `postfix-lmdb` and `postfix-cdb` (and GNU coreutils' `timeout`, which every Debian
    /// system has), built with `mmdebstrap` and `podman import` when the store and the cache
    /// have no image of the same inputs. Built once at a time on this machine (a lock file in
    /// [`cache_dir`]), once per process.
    pub fn postfix() -> Result<Image> {
        static BASE: OnceLock<Result<Image, String>> = OnceLock::new();
        BASE.get_or_init(|| build_base().map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(|e| anyhow!("{e}"))
    }

    /// Builds `containerfile` with `context` as its build context over `base` (`podman build
    /// --from`, which replaces the file's first `FROM`), tagged `localhost/NAME:HASH` where
    /// the hash covers the base, the Containerfile and every file of the context: an image of
    /// the same inputs is reused.
    pub fn build(base: &Image, containerfile: &Path, context: &Path, name: &str) -> Result<Image> {
        let mut hash = Sha256::new();
        hash.update(base.reference.as_bytes());
        hash.update(
            fs::read(containerfile)
                .with_context(|| format!("reading {}", containerfile.display()))?,
        );
        hash_tree(&mut hash, context)?;
        let reference = format!("localhost/{name}:{}", hex16(&hash.finalize()));
        let _lock = CacheLock::take()?;
        if image_exists(&reference)? {
            return Ok(Image { reference });
        }
        let containerfile = containerfile.to_string_lossy();
        let context = context.to_string_lossy();
        // Docker's image format keeps HEALTHCHECK (OCI's has no place for it).
        podman_run(&[
            "build",
            "--format",
            "docker",
            "--from",
            &base.reference,
            "--tag",
            &reference,
            "--file",
            &containerfile,
            &context,
        ])?;
        prune_other_tags(&format!("localhost/{name}"), &reference);
        Ok(Image { reference })
    }

    /// `localhost/NAME:TAG`.
    pub fn reference(&self) -> &str {
        &self.reference
    }
}

/// What the base image is made of, as one hash: the recipe, the release and the packages.
fn base_reference() -> Result<(String, String)> {
    let os_release = fs::read_to_string("/etc/os-release").context("reading /etc/os-release")?;
    let codename = os_release
        .lines()
        .find_map(|line| line.strip_prefix("VERSION_CODENAME="))
        .map(|value| value.trim_matches('"').to_owned())
        .filter(|value| !value.is_empty())
        .ok_or_else(|| anyhow!("/etc/os-release names no VERSION_CODENAME (not Debian?)"))?;
    let mut hash = Sha256::new();
    hash.update(format!("{RECIPE}\n{codename}\n{BASE_PACKAGES}\n"));
    let tag = hex16(&hash.finalize());
    Ok((codename, tag))
}

fn build_base() -> Result<Image> {
    let (codename, tag) = base_reference()?;
    let reference = format!("localhost/relay-testbed-postfix:{tag}");
    let _lock = CacheLock::take()?;
    if image_exists(&reference)? {
        return Ok(Image { reference });
    }
    let tarball = cache_dir().join(format!("postfix-{tag}.tar"));
    if !tarball.exists() {
        // mmdebstrap picks its output format by the name's extension: it must end in .tar.
        let partial = cache_dir().join(format!(".postfix-{tag}.{}.tar", std::process::id()));
        let started = Instant::now();
        // Bounded like every command the testbed runs: a stalled mirror fails the build.
        let mut mmdebstrap = Command::new("timeout");
        mmdebstrap
            .args(["-k", "10", "900", "/usr/bin/mmdebstrap"])
            .args(["--variant=apt", "--quiet"])
            .arg(format!("--include={BASE_PACKAGES}"))
            .arg(&codename)
            .arg(&partial);
        // The host's own Debian sources (its mirror), rather than mmdebstrap's default of
        // deb.debian.org and security.debian.org: a machine that reaches Debian only through
        // a mirror of its own installs from it, and so does the image.
        if Path::new(HOST_SOURCES).is_file() {
            mmdebstrap.arg(HOST_SOURCES);
        }
        let output = mmdebstrap
            .stdin(Stdio::null())
            .output()
            .context("cannot run mmdebstrap")?;
        if let Err(error) = checked(&format!("mmdebstrap {codename}"), output) {
            let _ = fs::remove_file(&partial);
            return Err(error);
        }
        fs::rename(&partial, &tarball)?;
        eprintln!(
            "relay-testbed: built the Postfix base image ({codename}) with mmdebstrap in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    podman_run(&["import", &tarball.to_string_lossy(), &reference])?;
    Ok(Image { reference })
}

/// Removes the images of `repository` other than `keep`: each build of a changed binary
/// makes a new one. One still in use by a container stays (podman refuses, which is fine).
fn prune_other_tags(repository: &str, keep: &str) {
    let Ok(listed) = podman_run(&["images", "--format", "{{.Repository}}:{{.Tag}}", repository])
    else {
        return;
    };
    for reference in listed.lines().map(str::trim) {
        if reference.starts_with(&format!("{repository}:")) && reference != keep {
            let _ = podman_run(&["rmi", reference]);
        }
    }
}

fn image_exists(reference: &str) -> Result<bool> {
    let status = podman()?
        .args(["image", "exists", reference])
        .status()
        .context("cannot run podman")?;
    Ok(status.success())
}

/// Adds every file under `dir` (names and contents, in name order) to `hash`.
fn hash_tree(hash: &mut Sha256, dir: &Path) -> Result<()> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    entries.sort();
    for path in entries {
        hash.update(
            path.file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
        if path.is_dir() {
            hash_tree(hash, &path)?;
        } else {
            hash.update(fs::read(&path).with_context(|| format!("reading {}", path.display()))?);
        }
    }
    Ok(())
}

fn hex16(digest: &[u8]) -> String {
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// An exclusive lock on [`cache_dir`]'s lock file, so that two test processes never build or
/// import the same image at once; released on drop. Within a process a mutex does the same.
struct CacheLock {
    _file: fs::File,
    _guard: std::sync::MutexGuard<'static, ()>,
}

impl CacheLock {
    fn take() -> Result<CacheLock> {
        static IN_PROCESS: Mutex<()> = Mutex::new(());
        let guard = IN_PROCESS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        fs::create_dir_all(cache_dir())?;
        let file = fs::File::options()
            .create(true)
            .append(true)
            .open(cache_dir().join("lock"))?;
        // SAFETY: flock(2) on a descriptor we own; it blocks until the lock is ours.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error()).context("locking the image cache");
        }
        Ok(CacheLock {
            _file: file,
            _guard: guard,
        })
    }
}

/// Makes sure `name` is free for a new container: gone, or a leftover of a testbed process
/// that no longer runs (removed). Someone else's container is never touched.
fn claim_name(kind: &str, name: &str) -> Result<()> {
    let inspect = podman()?
        .args([kind, "inspect", "--format"])
        .arg(format!("{{{{index .Labels \"{OWNER_LABEL}\"}}}}"))
        .arg(name)
        .output()
        .context("cannot run podman")?;
    if !inspect.status.success() {
        return Ok(()); // No such object.
    }
    let owner = String::from_utf8_lossy(&inspect.stdout).trim().to_owned();
    let gone = owner
        .parse::<u32>()
        .is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
    if !gone {
        bail!(
            "a {kind} named {name} already exists and was not left by a finished relay-testbed \
             run (label {OWNER_LABEL}={owner:?}); it is not removed: stop it, or run the tests \
             where no {kind} of that name runs"
        );
    }
    podman_run(&[kind, "rm", "--force", name])?;
    Ok(())
}

/// Serializes the containers given a fixed name (e.g. `mailserver-postfix`) within a process:
/// the requirements' name can only exist once at a time.
fn fixed_name_guard() -> std::sync::MutexGuard<'static, ()> {
    static FIXED: Mutex<()> = Mutex::new(());
    FIXED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A podman pod whose containers share the PID namespace (and the host's network, like
/// every testbed container): the sidecar form, as ECS runs a task with `pidMode: task`. Named
/// volumes made with [`Pod::volume`] are removed with it.
#[derive(Debug)]
pub struct Pod {
    name: String,
    volumes: Mutex<Vec<String>>,
}

impl Pod {
    /// Creates and starts a pod named uniquely after `prefix`, sharing `pid` and `net`.
    pub fn create(prefix: &str) -> Result<Pod> {
        require_container_tools()?;
        let name = unique_name(prefix);
        claim_name("pod", &name)?;
        podman_run(&[
            "pod",
            "create",
            "--name",
            &name,
            "--label",
            &format!("{OWNER_LABEL}={}", std::process::id()),
            "--share",
            "pid,net",
            "--network",
            "host",
        ])?;
        let pod = Pod {
            name,
            volumes: Mutex::new(Vec::new()),
        };
        podman_run(&["pod", "start", &pod.name])?;
        Ok(pod)
    }

    /// The pod's name (`--pod NAME`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A new named volume, `POD-SUFFIX`, removed with the pod; its name.
    pub fn volume(&self, suffix: &str) -> Result<String> {
        let name = format!("{}-{suffix}", self.name);
        claim_name("volume", &name)?;
        podman_run(&[
            "volume",
            "create",
            "--label",
            &format!("{OWNER_LABEL}={}", std::process::id()),
            &name,
        ])?;
        self.volumes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(name.clone());
        Ok(name)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = podman_run(&["pod", "rm", "--force", "--time", "0", &self.name]);
        let volumes = std::mem::take(
            self.volumes
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for volume in volumes {
            let _ = podman_run(&["volume", "rm", "--force", &volume]);
        }
    }
}

/// Where a [`PostfixContainer`] keeps what relay-sync shares with it.
#[derive(Debug, Clone)]
enum Layout {
    /// The requirements' topology: the maps directory bind-mounted at the same path.
    Host,
    /// The sidecar form: in a pod, with the given mounts (`SOURCE:PATH`, a named volume or a
    /// directory of this host) and its transport map at `transport`.
    Pod {
        pod: String,
        mounts: Vec<String>,
        transport: PathBuf,
    },
}

/// Postfix in a container, SMTP on a free port of 127.0.0.1, removed on drop.
///
/// Its entrypoint copies the generated `main.cf` into `/etc/postfix` on the container's first
/// start only (and `master.cf`, which holds the port, at every start), then runs `postfix
/// start-fg` (master as PID 1): a restarted container keeps what `postconf -e` wrote, a
/// recreated one starts again from the generated `main.cf`, as a container recreated from its
/// image does.
#[derive(Debug)]
pub struct PostfixContainer {
    name: String,
    image: Image,
    dir: tempfile::TempDir,
    smtp_port: AtomicU16,
    /// Debian's `master.cf`, in which the SMTP listener is moved to the port.
    master_dist: String,
    layout: Layout,
    /// `KEY=VALUE` labels besides the testbed's own.
    labels: Vec<String>,
    _fixed: Option<std::sync::MutexGuard<'static, ()>>,
}

/// The container's first-start script: `$1` is the generated files' directory.
const ENTRYPOINT: &str = r#"set -e
if [ ! -e /etc/postfix/.relay-testbed ]; then
  cp "$1/main.cf" /etc/postfix/
  touch /etc/postfix/.relay-testbed
fi
cp "$1/master.cf" /etc/postfix/
postconf -F '*/*/chroot = n'
transport=$(postconf -h transport_maps); transport=${transport#hash:}
mkdir -p "${transport%/*}"
[ -e "$transport" ] || : > "$transport"
[ -e "$transport.db" ] || postmap "hash:$transport"
exec postfix start-fg"#;

impl PostfixContainer {
    /// The requirements' topology: Postfix in a container named `name` (unique when `None`),
    /// relaying `relay_domains`, its transport map `hash:MAPS/transport` in a directory of this
    /// host ([`PostfixContainer::maps_dir`]) bind-mounted at the same path in the container.
    pub fn start(image: &Image, name: Option<&str>, relay_domains: &str) -> Result<Self> {
        Self::launch(image, name, relay_domains, None, Vec::new())
    }

    /// [`PostfixContainer::start`] with a generated name and the label `key=value`, as ECS on
    /// EC2 runs a container (`com.amazonaws.ecs.container-name=…`): found by its label only.
    pub fn start_labelled(image: &Image, label: (&str, &str), relay_domains: &str) -> Result<Self> {
        let label = format!("{}={}", label.0, label.1);
        Self::launch(image, None, relay_domains, None, vec![label])
    }

    /// The sidecar form: Postfix in `pod` with `mounts` (`SOURCE:PATH`: a pod volume or a
    /// directory of this host; the same ones a relay-sync container in the pod mounts), its
    /// transport map `hash:TRANSPORT`, which must be on one of them.
    pub fn start_in_pod(
        image: &Image,
        pod: &Pod,
        mounts: &[String],
        transport: &Path,
        relay_domains: &str,
    ) -> Result<Self> {
        let layout = Layout::Pod {
            pod: pod.name.clone(),
            mounts: mounts.to_vec(),
            transport: transport.to_owned(),
        };
        Self::launch(image, None, relay_domains, Some(layout), Vec::new())
    }

    fn launch(
        image: &Image,
        name: Option<&str>,
        relay_domains: &str,
        layout: Option<Layout>,
        labels: Vec<String>,
    ) -> Result<Self> {
        require_container_tools()?;
        let fixed = name.map(|_| fixed_name_guard());
        let name = name.map_or_else(|| unique_name("relay-testbed-postfix"), str::to_owned);
        claim_name("container", &name)?;
        let dir = tempfile::Builder::new()
            .prefix("relay-testbed-container-")
            .tempdir()?;
        // Postfix's daemons (user postfix in the container) read the maps inside.
        let mode = |path: &Path| {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        };
        mode(dir.path())?;
        for sub in ["maps", "generated"] {
            fs::create_dir(dir.path().join(sub))?;
            mode(&dir.path().join(sub))?;
        }
        let layout = layout.unwrap_or(Layout::Host);
        let transport = match &layout {
            Layout::Host => dir.path().join("maps/transport"),
            Layout::Pod { transport, .. } => transport.clone(),
        };
        fs::write(
            dir.path().join("generated/main.cf"),
            main_cf(relay_domains, &transport),
        )?;
        let master_dist = fs::read_to_string("/usr/share/postfix/master.cf.dist")
            .context("reading /usr/share/postfix/master.cf.dist (apt-get install -y postfix)")?;
        let container = PostfixContainer {
            name,
            image: image.clone(),
            dir,
            smtp_port: AtomicU16::new(0),
            master_dist,
            layout,
            labels,
            _fixed: fixed,
        };
        container.run_until_ready()?;
        Ok(container)
    }

    /// Runs the container and waits until its own Postfix answers SMTP, on a free port; when
    /// another process took the port between [`free_port`] and Postfix's bind (with the host's
    /// network, any test's server may), again on another port.
    fn run_until_ready(&self) -> Result<()> {
        let mut attempt = 1;
        loop {
            let port = free_port()?;
            self.smtp_port.store(port, Ordering::Relaxed);
            fs::write(
                self.dir.path().join("generated/master.cf"),
                crate::postfix::master_cf(&self.master_dist, port)?,
            )?;
            match self.run().and_then(|()| self.wait_ready()) {
                Ok(()) => return Ok(()),
                Err(error) if attempt < 3 && self.logs().contains("Address already in use") => {
                    let _ = error;
                    attempt += 1;
                    podman_run(&["rm", "--force", "--time", "0", &self.name])?;
                }
                Err(error) => {
                    return Err(error.context(format!("container logs:\n{}", self.logs())))
                }
            }
        }
    }

    /// `podman run` of this container, detached.
    fn run(&self) -> Result<()> {
        let generated = self.dir.path().join("generated");
        let generated = generated.to_string_lossy();
        let mut args: Vec<String> = vec![
            "run".into(),
            "--detach".into(),
            "--name".into(),
            self.name.clone(),
            "--label".into(),
            format!("{OWNER_LABEL}={}", std::process::id()),
            "--volume".into(),
            format!("{generated}:/srv/relay-testbed:ro"),
        ];
        match &self.layout {
            Layout::Host => {
                let maps = self.maps_dir();
                let maps = maps.to_string_lossy();
                args.extend([
                    "--network".into(),
                    "host".into(),
                    "--volume".into(),
                    format!("{maps}:{maps}"),
                ]);
            }
            Layout::Pod { pod, mounts, .. } => {
                args.extend(["--pod".into(), pod.clone()]);
                for mount in mounts {
                    args.extend(["--volume".into(), mount.clone()]);
                }
            }
        }
        for label in &self.labels {
            args.extend(["--label".into(), label.clone()]);
        }
        args.extend([
            self.image.reference.clone(),
            "/bin/sh".into(),
            "-c".into(),
            ENTRYPOINT.into(),
            "entrypoint".into(),
            "/srv/relay-testbed".into(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        podman_run(&args).map(|_| ())
    }

    /// Waits until the container's own Postfix listens on its port: with the host's network,
    /// a port that answers may be another test's server, so the listening socket must be held
    /// by a process in the container's PID namespace.
    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let port = self.smtp_port();
        loop {
            if self.listens_on(port) {
                return Ok(());
            }
            if !self.is_running() {
                bail!("container {} stopped while starting", self.name);
            }
            if self.logs().contains("Address already in use") {
                bail!("127.0.0.1:{port} was taken before the container's Postfix bound it");
            }
            if Instant::now() > deadline {
                bail!(
                    "container {} did not listen on 127.0.0.1:{port} within {READY_TIMEOUT:?}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether a process of this container holds the socket listening on 127.0.0.1:`port`
    /// (`/proc/net/tcp`, then the processes' descriptors).
    fn listens_on(&self, port: u16) -> bool {
        let Ok(table) = fs::read_to_string("/proc/net/tcp") else {
            return false;
        };
        let local = format!("0100007F:{port:04X}");
        let sockets: Vec<String> = table
            .lines()
            .skip(1)
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                // Field 3 is the state: 0A is LISTEN; field 9 the socket's inode.
                (fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A"))
                    .then(|| fields.get(9).map(|inode| format!("socket:[{inode}]")))
                    .flatten()
            })
            .collect();
        if sockets.is_empty() {
            return false;
        }
        let Ok(processes) = self.processes() else {
            return false;
        };
        processes.iter().any(|(pid, _)| {
            fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.flatten().any(|fd| {
                    fs::read_link(fd.path())
                        .is_ok_and(|link| sockets.iter().any(|s| link.as_os_str() == s.as_str()))
                })
            })
        })
    }

    /// The container's name (`podman exec NAME …`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The SMTP listener's port on 127.0.0.1 (another one after [`PostfixContainer::recreate`]
    /// when the old one was taken meanwhile).
    pub fn smtp_port(&self) -> u16 {
        self.smtp_port.load(Ordering::Relaxed)
    }

    /// The requirements' topology: the directory of this host holding the transport map (and
    /// any other map relay-sync keeps), mounted at the same path in the container.
    pub fn maps_dir(&self) -> PathBuf {
        self.dir.path().join("maps")
    }

    /// `podman exec NAME ARGS…`: its stdout, or an error with its stderr.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["exec", self.name.as_str()];
        all.extend_from_slice(args);
        podman_run(&all)
    }

    /// `postconf -h PARAMETER` in the container.
    pub fn postconf(&self, parameter: &str) -> Result<String> {
        Ok(self
            .exec(&["postconf", "-h", parameter])?
            .trim_end()
            .to_owned())
    }

    /// Whether the container runs.
    pub fn is_running(&self) -> bool {
        podman_run(&["inspect", "--format", "{{.State.Running}}", &self.name])
            .is_ok_and(|out| out.trim() == "true")
    }

    /// `podman stop`: Postfix stops with its container.
    pub fn stop(&self) -> Result<()> {
        podman_run(&["stop", "--time", "10", &self.name]).map(|_| ())
    }

    /// `podman start`, then waits until SMTP answers. What `postconf -e` wrote is kept.
    pub fn start_again(&self) -> Result<()> {
        podman_run(&["start", &self.name])?;
        self.wait_ready()
    }

    /// Removes the container and creates it again from its image, with the same name and
    /// mounts; waits until its Postfix answers SMTP (on another port when the old one was
    /// taken meanwhile). Its `main.cf` is the generated one again (in the
    /// host topology; in a pod, `/etc/postfix` is on a volume and stays).
    pub fn recreate(&self) -> Result<()> {
        podman_run(&["rm", "--force", "--time", "0", &self.name])?;
        self.run_until_ready()
    }

    /// The container's output: Postfix's log (`maillog_file = /dev/stdout`).
    pub fn logs(&self) -> String {
        let Ok(mut command) = podman() else {
            return String::new();
        };
        match command.args(["logs", &self.name]).output() {
            Ok(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(error) => format!("cannot run podman logs: {error}"),
        }
    }

    /// Every process in the container's PID namespace (in a pod, the whole pod's), as
    /// `(host pid, command line)`, read from this host's `/proc`: no tool in the container is
    /// needed, and a process its exec client no longer knows of is found too.
    pub fn processes(&self) -> Result<Vec<(u32, String)>> {
        let init = podman_run(&["inspect", "--format", "{{.State.Pid}}", &self.name])?;
        let init = init.trim();
        let namespace = fs::read_link(format!("/proc/{init}/ns/pid"))
            .with_context(|| format!("reading the pid namespace of {} (pid {init})", self.name))?;
        let mut found = Vec::new();
        for entry in fs::read_dir("/proc")? {
            let Ok(entry) = entry else { continue };
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if fs::read_link(entry.path().join("ns/pid")).ok().as_ref() != Some(&namespace) {
                continue;
            }
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline)
                .split('\0')
                .filter(|arg| !arg.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            found.push((pid, cmdline));
        }
        Ok(found)
    }

    /// Replaces `/usr/sbin/postfix` in the container with a script that runs `body` for
    /// `postfix reload` and hands every other call to the real one (kept as
    /// `/usr/sbin/postfix.real`). Until the container is recreated.
    pub fn wrap_postfix_reload(&self, body: &str) -> Result<()> {
        let script = format!(
            "#!/bin/sh\n# relay-testbed: postfix with another reload\nif [ \"$1\" = reload ]; then\n{body}\nfi\nexec /usr/sbin/postfix.real \"$@\"\n"
        );
        self.exec(&[
            "sh",
            "-c",
            "[ -e /usr/sbin/postfix.real ] || cp -p /usr/sbin/postfix /usr/sbin/postfix.real; \
             printf '%s' \"$1\" > /usr/sbin/postfix.new && chmod 755 /usr/sbin/postfix.new && \
             mv /usr/sbin/postfix.new /usr/sbin/postfix",
            "wrap",
            &script,
        ])
        .map(|_| ())
    }
}

impl Drop for PostfixContainer {
    fn drop(&mut self) {
        let _ = podman_run(&["rm", "--force", "--time", "0", &self.name]);
    }
}

/// The container's `main.cf`: the testbed's private gateway (loopback only, no DNS, nothing
/// delivered locally, loopback not in `mynetworks`), logging to the container's output.
fn main_cf(relay_domains: &str, transport: &Path) -> String {
    format!(
        "# A private Postfix MX gateway in a container, for relay-sync's tests (relay-testbed).\n\
         compatibility_level = 3.6\n\
         myhostname = mx.relay-sync.test\n\
         mydomain = relay-sync.test\n\
         inet_interfaces = 127.0.0.1\n\
         inet_protocols = ipv4\n\
         mydestination =\n\
         mynetworks = 192.0.2.1/32\n\
         relay_domains = {relay_domains}\n\
         transport_maps = hash:{}\n\
         smtpd_relay_restrictions = reject_unauth_destination\n\
         smtpd_recipient_restrictions =\n\
         smtp_dns_support_level = disabled\n\
         alias_maps =\n\
         alias_database =\n\
         local_recipient_maps =\n\
         maillog_file = /dev/stdout\n\
         default_database_type = hash\n",
        transport.display()
    )
}
