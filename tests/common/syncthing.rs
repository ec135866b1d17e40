//! Real Syncthing instances on loopback, one replica each, configured before they serve.
//!
//! Each instance gets its keys from `syncthing generate`, then a config.xml written
//! here: one folder shared by all, every peer at a fixed loopback address, and every
//! discovery, relay, NAT, STUN, upgrade, usage- and crash-reporting feature off. The
//! REST API (API key, no GUI use) tells when they are connected and in sync.
//!
//! The test that uses this runs, when it can, inside a private network namespace
//! (`unshare -n`): see [`in_private_network`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The folder id every instance shares.
pub const FOLDER: &str = "baton";
/// Set in the re-executed test inside the private network namespace.
pub const NETNS_ENV: &str = "BATON_SYNCTHING_NETNS";

/// `syncthing` on PATH, if any.
pub fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("syncthing"))
        .find(|candidate| candidate.is_file())
}

/// `syncthing --version`'s first line.
pub fn version(binary: &Path) -> String {
    Command::new(binary)
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
}

/// Whether this process runs in the private network namespace the outer test made.
pub fn in_private_network() -> bool {
    std::env::var_os(NETNS_ENV).is_some()
}

/// Re-runs the current test binary's test `name` inside a new network namespace with
/// only loopback up, its output going straight to ours (so CI's log shows it). `None`
/// when no namespace can be made here (not root, no `unshare`/`ip`): the caller then
/// runs on the host's loopback.
pub fn rerun_in_private_network(name: &str, extra_env: &[(&str, String)]) -> Option<bool> {
    let probe = Command::new("unshare")
        .args(["-n", "--", "ip", "link", "set", "lo", "up"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        return None;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let status = Command::new("unshare")
        .args([
            "-n",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$@\"",
            "sh",
        ])
        .arg(exe)
        .args([
            "--exact",
            name,
            "--nocapture",
            "--test-threads=1",
            "--include-ignored",
        ])
        .env(NETNS_ENV, "1")
        .envs(extra_env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .status()
        .expect("run the test inside the namespace");
    Some(status.success())
}

/// One Syncthing instance and its replica.
pub struct Instance {
    pub name: String,
    pub home: PathBuf,
    pub replica: PathBuf,
    pub device_id: String,
    pub api: String,
    pub api_key: String,
    pub listen_port: u16,
    pub log: PathBuf,
    child: Option<Child>,
}

/// A set of instances sharing [`FOLDER`].
pub struct Cluster {
    pub instances: Vec<Instance>,
    client: reqwest::Client,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn generate(binary: &Path, home: &Path) -> String {
    let output = Command::new(binary)
        .arg("generate")
        .arg(format!("--home={}", home.display()))
        .args(["--no-default-folder", "--skip-port-probing"])
        .output()
        .expect("syncthing generate runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    text.lines()
        .find_map(|line| line.split("Device ID:").nth(1))
        .map(|id| id.trim().to_string())
        .unwrap_or_else(|| panic!("no device id from `syncthing generate`: {text}"))
}

fn config_xml(me: &Instance, all: &[Instance], watcher_delay_s: u32) -> String {
    let folder_devices: String = all
        .iter()
        .map(|peer| format!("        <device id=\"{}\"></device>\n", peer.device_id))
        .collect();
    let devices: String = all
        .iter()
        .map(|peer| {
            format!(
                "    <device id=\"{}\" name=\"{}\" compression=\"metadata\">\n        \
                 <address>tcp://127.0.0.1:{}</address>\n    </device>\n",
                peer.device_id, peer.name, peer.listen_port
            )
        })
        .collect();
    let gui = me.api.trim_start_matches("http://");
    format!(
        r#"<configuration version="36">
    <folder id="{FOLDER}" label="{FOLDER}" path="{replica}" type="sendreceive" rescanIntervalS="3600" fsWatcherEnabled="true" fsWatcherDelayS="{watcher_delay_s}" ignorePerms="false" autoNormalize="true">
{folder_devices}        <minDiskFree unit="%">0</minDiskFree>
    </folder>
{devices}    <gui enabled="true" tls="false" debugging="false">
        <address>{gui}</address>
        <apikey>{key}</apikey>
    </gui>
    <options>
        <listenAddress>tcp://127.0.0.1:{listen}</listenAddress>
        <globalAnnounceEnabled>false</globalAnnounceEnabled>
        <localAnnounceEnabled>false</localAnnounceEnabled>
        <relaysEnabled>false</relaysEnabled>
        <natEnabled>false</natEnabled>
        <stunKeepaliveStartS>0</stunKeepaliveStartS>
        <urAccepted>-1</urAccepted>
        <crashReportingEnabled>false</crashReportingEnabled>
        <startBrowser>false</startBrowser>
        <autoUpgradeIntervalH>0</autoUpgradeIntervalH>
        <minHomeDiskFree unit="%">0</minHomeDiskFree>
        <reconnectionIntervalS>1</reconnectionIntervalS>
        <setLowPriority>false</setLowPriority>
    </options>
</configuration>
"#,
        replica = me.replica.display(),
        key = me.api_key,
        listen = me.listen_port,
    )
}

impl Cluster {
    /// Generates `names.len()` instances under `root` (not started).
    pub fn generate(binary: &Path, root: &Path, names: &[&str], watcher_delay_s: u32) -> Cluster {
        let mut instances: Vec<Instance> = names
            .iter()
            .map(|name| {
                let home = root.join(format!("syncthing-{name}"));
                let replica = root.join(format!("replica-{name}"));
                std::fs::create_dir_all(replica.join(".stfolder")).expect("replica");
                let device_id = generate(binary, &home);
                Instance {
                    name: name.to_string(),
                    api: format!("http://127.0.0.1:{}", free_port()),
                    api_key: format!("baton-test-{name}-{}", std::process::id()),
                    listen_port: free_port(),
                    log: root.join(format!("syncthing-{name}.log")),
                    home,
                    replica,
                    device_id,
                    child: None,
                }
            })
            .collect();
        let configs: Vec<String> = instances
            .iter()
            .map(|me| config_xml(me, &instances, watcher_delay_s))
            .collect();
        for (instance, config) in instances.iter_mut().zip(configs) {
            std::fs::write(instance.home.join("config.xml"), config).expect("config.xml");
        }
        Cluster {
            instances,
            client: reqwest::Client::new(),
        }
    }

    /// Starts every instance (configured already: nothing is served before that).
    pub fn start(&mut self, binary: &Path) {
        for instance in &mut self.instances {
            let log = std::fs::File::create(&instance.log).expect("syncthing log");
            let child = Command::new(binary)
                .arg("serve")
                .arg(format!("--home={}", instance.home.display()))
                .args(["--no-browser", "--no-restart", "--logflags=3"])
                .env("STNOUPGRADE", "1")
                .env("STNORESTART", "1")
                .env("HOME", &instance.home)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log clone"))
                .stderr(log)
                .spawn()
                .expect("start syncthing");
            instance.child = Some(child);
        }
    }

    async fn get(&self, instance: &Instance, path: &str) -> Option<Value> {
        let response = self
            .client
            .get(format!("{}{path}", instance.api))
            .header("X-API-Key", &instance.api_key)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    /// Whether every instance answers and is connected to every other.
    pub async fn connected(&self) -> bool {
        for instance in &self.instances {
            let Some(connections) = self.get(instance, "/rest/system/connections").await else {
                return false;
            };
            for peer in self
                .instances
                .iter()
                .filter(|p| p.device_id != instance.device_id)
            {
                if connections["connections"][&peer.device_id]["connected"] != Value::Bool(true) {
                    return false;
                }
            }
        }
        true
    }

    /// Whether every instance is idle with nothing to pull, and sees every peer at 100 %.
    pub async fn in_sync(&self) -> bool {
        for instance in &self.instances {
            let Some(status) = self
                .get(instance, &format!("/rest/db/status?folder={FOLDER}"))
                .await
            else {
                return false;
            };
            if status["state"] != "idle" || status["needTotalItems"] != 0 {
                return false;
            }
            for peer in self
                .instances
                .iter()
                .filter(|p| p.device_id != instance.device_id)
            {
                let path = format!(
                    "/rest/db/completion?folder={FOLDER}&device={}",
                    peer.device_id
                );
                let Some(completion) = self.get(instance, &path).await else {
                    return false;
                };
                if completion["completion"].as_f64() != Some(100.0)
                    || completion["needItems"] != 0
                    || completion["needDeletes"] != 0
                {
                    return false;
                }
            }
        }
        true
    }

    /// The id of the latest event of `instance` (for [`Cluster::events_since`]).
    pub async fn last_event_id(&self, instance: usize) -> u64 {
        self.events_since(instance, 0, "", 0)
            .await
            .last()
            .and_then(|e| e["id"].as_u64())
            .unwrap_or(0)
    }

    /// `/rest/events` of `instance` after `since`, of the given types (comma-separated,
    /// empty for all), waiting at most `timeout_s` for one.
    pub async fn events_since(
        &self,
        instance: usize,
        since: u64,
        types: &str,
        timeout_s: u64,
    ) -> Vec<Value> {
        let mut path = format!("/rest/events?since={since}&timeout={timeout_s}");
        if !types.is_empty() {
            path.push_str(&format!("&events={types}"));
        }
        self.get(&self.instances[instance], &path)
            .await
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// Waits (bounded) until `check` holds; `what` names it in the panic.
    pub async fn wait(&self, limit: Duration, what: &str, connected_only: bool) {
        let started = Instant::now();
        loop {
            let done = if connected_only {
                self.connected().await
            } else {
                self.connected().await && self.in_sync().await
            };
            if done {
                return;
            }
            if started.elapsed() > limit {
                let logs: Vec<String> = self
                    .instances
                    .iter()
                    .map(|i| {
                        let text = std::fs::read_to_string(&i.log).unwrap_or_default();
                        let tail: Vec<&str> = text.lines().rev().take(15).collect();
                        format!(
                            "--- {} ---\n{}",
                            i.name,
                            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                        )
                    })
                    .collect();
                panic!(
                    "Syncthing: {what} not within {limit:?}\n{}",
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops every instance.
    pub fn stop(&mut self) {
        for instance in &mut self.instances {
            if let Some(mut child) = instance.child.take() {
                // SAFETY: a signal to our own child.
                unsafe {
                    libc::kill(child.id() as i32, libc::SIGTERM);
                }
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(10) {
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every path under `root`, relative, sorted (directories end in `/`).
pub fn list_tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let relative = path
                .strip_prefix(root)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(format!("{relative}/"));
                walk(root, &path, out);
            } else {
                out.push(relative);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}
