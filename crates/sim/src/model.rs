//! The simulated world's parameters: the sync-delay model and the fault schedule.
//!
//! Owns: the default delay model (defended from FACTS.md in `docs/SIMULATION.md`), the
//! fault rates, and the generation of one run's fault schedule from its seed. The
//! schedule is drawn BEFORE any policy runs and names its targets by role ("the active
//! device") or by index, so both policies face the same faults at the same moments.
//! Must never: look at a policy's state.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

pub const SECOND_MS: u64 = 1_000;
pub const MINUTE_MS: u64 = 60 * SECOND_MS;
pub const HOUR_MS: u64 = 60 * MINUTE_MS;
pub const DAY_MS: u64 = 24 * HOUR_MS;

/// One-way replication delay of a file version from its writer to one other device:
/// an upload part (shared by all destinations: the writer's daemon pushes once) plus a
/// download part (per destination).
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct DelayModel {
    /// Body of the upload delay: lognormal with this median and shape.
    pub upload_median_ms: f64,
    pub upload_sigma: f64,
    /// Body of the download delay: lognormal.
    pub download_median_ms: f64,
    pub download_sigma: f64,
    /// Share of uploads that fall in the slow tail (log-uniform between the two bounds).
    pub tail_share: f64,
    pub tail_min_ms: u64,
    pub tail_max_ms: u64,
    /// Share of uploads that stall (log-uniform between the two bounds).
    pub stall_share: f64,
    pub stall_min_ms: u64,
    pub stall_max_ms: u64,
    /// Share of changes whose notification never reaches the device's watcher.
    pub notification_loss_share: f64,
    /// FSEvents coalesces writes for about this long before delivering.
    pub notification_latency_ms_max: u64,
}

impl Default for DelayModel {
    /// FACTS.md: a push seen at ~4.3 s; "5–30 s typical"; uploads stuck for minutes or
    /// hours in bad cases. Median ≈ 5 s, ~4 % between 30 s and 5 min, 0.05 % stalls of
    /// 20 min – 2 h; 2 % lost notifications (watchers die silently, cocoindex#2227).
    fn default() -> Self {
        DelayModel {
            upload_median_ms: 3_800.0,
            upload_sigma: 0.5,
            download_median_ms: 1_000.0,
            download_sigma: 0.5,
            tail_share: 0.04,
            tail_min_ms: 30 * SECOND_MS,
            tail_max_ms: 5 * MINUTE_MS,
            // Hour-long stalls are per-host episodes (FaultRates::stall_per_host_day): a
            // stuck daemon holds every upload, not one file version.
            stall_share: 0.0,
            stall_min_ms: 20 * MINUTE_MS,
            stall_max_ms: 2 * HOUR_MS,
            notification_loss_share: 0.02,
            notification_latency_ms_max: 500,
        }
    }
}

/// A standard normal draw (Box–Muller; rand 0.9 core has no normal distribution).
pub fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random_range(0.0..1.0);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

pub fn lognormal_ms(rng: &mut ChaCha8Rng, median_ms: f64, sigma: f64) -> u64 {
    (median_ms * (sigma * normal(rng)).exp()).round() as u64
}

pub fn log_uniform_ms(rng: &mut ChaCha8Rng, min_ms: u64, max_ms: u64) -> u64 {
    let (low, high) = ((min_ms.max(1)) as f64, (max_ms.max(min_ms + 1)) as f64);
    (low.ln() + rng.random_range(0.0..1.0) * (high.ln() - low.ln()))
        .exp()
        .round() as u64
}

impl DelayModel {
    /// The upload part of one write's delay. `body_only` in the quiet tail of a run.
    pub fn upload_ms(&self, rng: &mut ChaCha8Rng, body_only: bool) -> u64 {
        let pick: f64 = rng.random_range(0.0..1.0);
        if !body_only && pick < self.stall_share {
            log_uniform_ms(rng, self.stall_min_ms, self.stall_max_ms)
        } else if !body_only && pick < self.stall_share + self.tail_share {
            log_uniform_ms(rng, self.tail_min_ms, self.tail_max_ms)
        } else {
            lognormal_ms(rng, self.upload_median_ms, self.upload_sigma)
        }
    }

    pub fn download_ms(&self, rng: &mut ChaCha8Rng) -> u64 {
        lognormal_ms(rng, self.download_median_ms, self.download_sigma)
    }
}

/// How often each kind of fault happens (per device or host, per day of simulated time).
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct FaultRates {
    pub crash_per_day: f64,
    /// Clean stops (SIGTERM) of the active device.
    pub resign_per_day: f64,
    pub sleep_per_host_day: f64,
    pub sleep_min_ms: u64,
    pub sleep_max_ms: u64,
    /// Share of sleeps the OS announces first (lid closed, idle sleep); the rest come
    /// unannounced (power loss, kernel panic, an announcement too late to act on).
    pub announced_sleep_share: f64,
    /// How long an announced sleep waits at most for the active device (macOS: the 30 s
    /// `kIOMessageSystemWillSleep` limit less the adapter's 1 s margin).
    pub sleep_grace_ms: u64,
    /// Downtime after a crash or stop before the process is started again.
    pub down_min_ms: u64,
    pub down_max_ms: u64,
    /// The host's sync daemon stops uploading (downloads still arrive).
    pub stall_per_host_day: f64,
    pub stall_min_ms: u64,
    pub stall_max_ms: u64,
    pub cut_per_host_day: f64,
    pub cut_min_ms: u64,
    pub cut_max_ms: u64,
    pub evict_per_device_day: f64,
    pub duplicate_per_device_day: f64,
    pub messages_per_hour: f64,
    pub activate_per_day: f64,
    /// Telegram starts its update ids over (after a week without updates; the simulator
    /// packs time, so "quiet" means nothing unconfirmed at the next message).
    pub id_reset_per_day: f64,
    /// Share of hosts whose wall clock is off by up to an hour (the rest: ±2 s, NTP).
    pub skewed_host_share: f64,
    pub drift_ppm_max: i64,
    /// The acting device's process freezes (SIGSTOP, a stalled loop, a paused VM) and
    /// later resumes; its clocks run on and do not drift apart (no sleep is seen).
    pub freeze_per_day: f64,
    pub freeze_min_ms: u64,
    pub freeze_max_ms: u64,
    /// A host's disk refuses writes for a while (read-only folder, full disk).
    pub refuse_writes_per_host_day: f64,
    pub refuse_writes_min_ms: u64,
    pub refuse_writes_max_ms: u64,
}

impl Default for FaultRates {
    fn default() -> Self {
        FaultRates {
            crash_per_day: 1.0,
            resign_per_day: 2.0,
            sleep_per_host_day: 3.0,
            sleep_min_ms: 2 * MINUTE_MS,
            sleep_max_ms: 8 * HOUR_MS,
            // Laptops: nearly every sleep is a closed lid or idle sleep, announced;
            // power loss and panics are rare (see docs/SIMULATION.md).
            announced_sleep_share: 0.9,
            sleep_grace_ms: 29 * SECOND_MS,
            down_min_ms: 30 * SECOND_MS,
            down_max_ms: 2 * HOUR_MS,
            stall_per_host_day: 1.0 / 7.0,
            stall_min_ms: 20 * MINUTE_MS,
            stall_max_ms: 2 * HOUR_MS,
            cut_per_host_day: 1.0 / 7.0,
            cut_min_ms: 10 * MINUTE_MS,
            cut_max_ms: 3 * HOUR_MS,
            evict_per_device_day: 2.0,
            duplicate_per_device_day: 1.0,
            messages_per_hour: 20.0,
            activate_per_day: 4.0,
            id_reset_per_day: 1.0 / 7.0,
            skewed_host_share: 0.25,
            drift_ppm_max: 100,
            // Around the lease (42 s): most freezes end inside it, some well past it.
            freeze_per_day: 2.0,
            freeze_min_ms: 5 * SECOND_MS,
            freeze_max_ms: 3 * MINUTE_MS,
            refuse_writes_per_host_day: 0.5,
            refuse_writes_min_ms: 10 * SECOND_MS,
            refuse_writes_max_ms: 30 * MINUTE_MS,
        }
    }
}

impl FaultRates {
    /// Every fault `factor` times as often (the test suite packs days into hours).
    pub fn intensified(self, factor: f64) -> Self {
        FaultRates {
            crash_per_day: self.crash_per_day * factor,
            resign_per_day: self.resign_per_day * factor,
            sleep_per_host_day: self.sleep_per_host_day * factor,
            sleep_max_ms: (self.sleep_max_ms as f64 / factor.max(1.0)) as u64,
            down_max_ms: (self.down_max_ms as f64 / factor.max(1.0)) as u64,
            cut_per_host_day: self.cut_per_host_day * factor,
            stall_per_host_day: self.stall_per_host_day * factor,
            stall_max_ms: (self.stall_max_ms as f64 / factor.max(1.0)) as u64,
            cut_max_ms: (self.cut_max_ms as f64 / factor.max(1.0)) as u64,
            evict_per_device_day: self.evict_per_device_day * factor,
            duplicate_per_device_day: self.duplicate_per_device_day * factor,
            activate_per_day: self.activate_per_day * factor,
            id_reset_per_day: self.id_reset_per_day * factor,
            freeze_per_day: self.freeze_per_day * factor,
            refuse_writes_per_host_day: self.refuse_writes_per_host_day * factor,
            refuse_writes_max_ms: (self.refuse_writes_max_ms as f64 / factor.max(1.0)) as u64,
            ..self
        }
    }
}

/// Whom a fault hits, named so that both policies can resolve it against their own state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The device acting right now (lowest index if several); skipped if none.
    Acting,
    Device(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    Crash {
        target: Target,
        down_ms: u64,
    },
    Resign {
        down_ms: u64,
    },
    /// A host sleeps (its clock keeps counting, its processes freeze). An announced
    /// sleep is told to its devices `notice_ms` before it starts (the lid closes then,
    /// and the OS waits at most that long); `None`: unannounced. The sleep starts at
    /// the same moment either way, so every design meets the same schedule.
    Sleep {
        host: usize,
        duration_ms: u64,
        notice_ms: Option<u64>,
    },
    /// A host's uploads stall for a while.
    Stall {
        host: usize,
        duration_ms: u64,
    },
    /// A host loses sync (not Telegram) for a while.
    CutOff {
        host: usize,
        duration_ms: u64,
    },
    /// iCloud evicts a peer file on this device (stub before Sonoma, dataless after).
    Evict {
        device: usize,
        stub: bool,
    },
    /// iCloud makes a `name 2.json` copy of this device's record on every replica.
    Duplicate {
        device: usize,
    },
    Message,
    /// A user asks, in the chat, that this device become active.
    Activate {
        device: usize,
    },
    /// Telegram starts its update ids over at a random lower id, at the first message
    /// after nothing is left unconfirmed (FACTS.md: after a week without updates).
    IdReset,
    /// A process freezes for a while, then resumes (SIGSTOP then SIGCONT, a paused VM):
    /// it handles nothing meanwhile; what reaches it waits; its clocks run on.
    Freeze {
        target: Target,
        duration_ms: u64,
    },
    /// A host's disk refuses every write for a while (read-only, full).
    RefuseWrites {
        host: usize,
        duration_ms: u64,
    },
}

/// One run's world: devices, hosts, clocks and the fault schedule.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub seed: u64,
    pub devices: usize,
    /// Host of each device (several projects on one Mac share a host).
    pub host_of: Vec<usize>,
    pub hosts: Vec<HostSpec>,
    /// Start moment of each device (true time).
    pub start_ms: Vec<u64>,
    /// Faults happen in [0, fault_end_ms); after it only capped delays and messages.
    pub fault_end_ms: u64,
    pub faults: Vec<(u64, Fault)>,
}

#[derive(Clone, Copy, Debug)]
pub struct HostSpec {
    pub skew_ms: i64,
    pub drift_ppm: i64,
    /// Origin of the host's sleep-counting monotonic clock.
    pub monotonic_origin_ms: u64,
}

/// Draws the times of a Poisson process of `per_day` events over `[0, end_ms)`.
/// When a person writes: bursts (conversations) by day, nothing at night. Sessions start
/// at random between 08:00 and 23:00 of simulated time; each holds 1 + a geometric
/// number of messages (mean [`BURST_MEAN`]) a log-uniform 5 s–2 min apart. The mean over
/// a day stays `per_hour` × 24, so figures stay comparable with steady traffic.
pub fn person_shaped_times(rng: &mut ChaCha8Rng, per_hour: f64, end_ms: u64) -> Vec<u64> {
    const DAY_START_MS: u64 = 8 * HOUR_MS;
    const DAY_END_MS: u64 = 23 * HOUR_MS;
    let awake_share = (DAY_END_MS - DAY_START_MS) as f64 / DAY_MS as f64;
    let sessions_per_day = per_hour * 24.0 / BURST_MEAN / awake_share;
    let mut times = Vec::new();
    for start in poisson_times(rng, sessions_per_day, end_ms) {
        let time_of_day = start % DAY_MS;
        if !(DAY_START_MS..DAY_END_MS).contains(&time_of_day) {
            continue;
        }
        let mut at = start;
        let mut more = true;
        while more && at < end_ms && times.len() < 1_000_000 {
            times.push(at);
            at += log_uniform_ms(rng, 5 * SECOND_MS, 2 * MINUTE_MS);
            more = rng.random_bool(1.0 - 1.0 / BURST_MEAN);
        }
    }
    times.sort_unstable();
    times
}

/// Mean messages per burst of [`person_shaped_times`].
pub const BURST_MEAN: f64 = 6.0;

fn poisson_times(rng: &mut ChaCha8Rng, per_day: f64, end_ms: u64) -> Vec<u64> {
    let mut times = Vec::new();
    if per_day <= 0.0 {
        return times;
    }
    let mean_gap_ms = DAY_MS as f64 / per_day;
    let mut at = 0.0;
    for _ in 0..1_000_000 {
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        at += -u.ln() * mean_gap_ms;
        if at >= end_ms as f64 {
            break;
        }
        times.push(at as u64);
    }
    times
}

impl Scenario {
    /// Draws a scenario. Same arguments, same scenario.
    pub fn generate(seed: u64, devices: usize, fault_end_ms: u64, rates: &FaultRates) -> Self {
        let mut rng = baton_core::seed::rng(seed, "faults");
        let devices = devices.max(1);
        // Devices 0 and 1 share a Mac when there are three or more (two projects).
        let host_of: Vec<usize> = (0..devices)
            .map(|d| if devices >= 3 && d >= 1 { d - 1 } else { d })
            .collect();
        let host_count = host_of.iter().max().map_or(1, |h| h + 1);
        let hosts = (0..host_count)
            .map(|_| {
                let skew_ms = if rng.random_bool(rates.skewed_host_share) {
                    rng.random_range(-(HOUR_MS as i64)..=HOUR_MS as i64)
                } else {
                    rng.random_range(-2_000..=2_000)
                };
                HostSpec {
                    skew_ms,
                    drift_ppm: rng.random_range(-rates.drift_ppm_max..=rates.drift_ppm_max),
                    monotonic_origin_ms: rng.random_range(0..30 * DAY_MS),
                }
            })
            .collect();
        let start_ms = (0..devices)
            .map(|_| rng.random_range(0..30 * SECOND_MS))
            .collect();
        let mut faults = Vec::new();
        Self::draw_faults(
            &mut rng,
            devices,
            host_count,
            fault_end_ms,
            rates,
            &mut faults,
        );
        // Drawn from a stream of their own, so the faults above stay as they were.
        let mut lease_rng = baton_core::seed::rng(seed, "lease faults");
        Self::draw_lease_faults(&mut lease_rng, host_count, fault_end_ms, rates, &mut faults);
        faults.sort_by_key(|(at, _)| *at);
        // Which sleeps are announced: a stream of its own again, so the schedule of
        // every fault is the same whatever the share.
        let mut notice_rng = baton_core::seed::rng(seed, "sleep notices");
        for (_, fault) in &mut faults {
            if let Fault::Sleep { notice_ms, .. } = fault
                && notice_rng.random_bool(rates.announced_sleep_share.clamp(0.0, 1.0))
            {
                *notice_ms = Some(rates.sleep_grace_ms);
            }
        }
        Scenario {
            seed,
            devices,
            host_of,
            hosts,
            start_ms,
            fault_end_ms,
            faults,
        }
    }

    /// Faults against the lease: the acting process frozen, a disk refusing writes.
    fn draw_lease_faults(
        rng: &mut ChaCha8Rng,
        hosts: usize,
        end_ms: u64,
        rates: &FaultRates,
        faults: &mut Vec<(u64, Fault)>,
    ) {
        for at in poisson_times(rng, rates.freeze_per_day, end_ms) {
            let duration_ms = log_uniform_ms(rng, rates.freeze_min_ms, rates.freeze_max_ms);
            let target = Target::Acting;
            faults.push((
                at,
                Fault::Freeze {
                    target,
                    duration_ms,
                },
            ));
        }
        for host in 0..hosts {
            for at in poisson_times(rng, rates.refuse_writes_per_host_day, end_ms) {
                let duration_ms =
                    log_uniform_ms(rng, rates.refuse_writes_min_ms, rates.refuse_writes_max_ms);
                faults.push((at, Fault::RefuseWrites { host, duration_ms }));
            }
        }
    }

    fn draw_faults(
        rng: &mut ChaCha8Rng,
        devices: usize,
        hosts: usize,
        end_ms: u64,
        rates: &FaultRates,
        faults: &mut Vec<(u64, Fault)>,
    ) {
        let down = |rng: &mut ChaCha8Rng| log_uniform_ms(rng, rates.down_min_ms, rates.down_max_ms);
        let n = devices as f64;
        for at in poisson_times(rng, rates.crash_per_day * n, end_ms) {
            // Half the crashes hit the active device: failover is what we measure.
            let target = if rng.random_bool(0.5) {
                Target::Acting
            } else {
                Target::Device(rng.random_range(0..devices))
            };
            let down_ms = down(rng);
            faults.push((at, Fault::Crash { target, down_ms }));
        }
        for at in poisson_times(rng, rates.resign_per_day, end_ms) {
            let down_ms = down(rng);
            faults.push((at, Fault::Resign { down_ms }));
        }
        for host in 0..hosts {
            for at in poisson_times(rng, rates.sleep_per_host_day, end_ms) {
                let duration_ms = log_uniform_ms(rng, rates.sleep_min_ms, rates.sleep_max_ms);
                faults.push((
                    at,
                    Fault::Sleep {
                        host,
                        duration_ms,
                        notice_ms: None,
                    },
                ));
            }
            for at in poisson_times(rng, rates.stall_per_host_day, end_ms) {
                let duration_ms = log_uniform_ms(rng, rates.stall_min_ms, rates.stall_max_ms);
                faults.push((at, Fault::Stall { host, duration_ms }));
            }
            for at in poisson_times(rng, rates.cut_per_host_day, end_ms) {
                let duration_ms = log_uniform_ms(rng, rates.cut_min_ms, rates.cut_max_ms);
                faults.push((at, Fault::CutOff { host, duration_ms }));
            }
        }
        for device in 0..devices {
            for at in poisson_times(rng, rates.evict_per_device_day, end_ms) {
                let stub = rng.random_bool(0.5);
                faults.push((at, Fault::Evict { device, stub }));
            }
            for at in poisson_times(rng, rates.duplicate_per_device_day, end_ms) {
                faults.push((at, Fault::Duplicate { device }));
            }
        }
        for at in person_shaped_times(rng, rates.messages_per_hour, end_ms) {
            faults.push((at, Fault::Message));
        }
        for at in poisson_times(rng, rates.activate_per_day, end_ms) {
            let device = rng.random_range(0..devices);
            faults.push((at, Fault::Activate { device }));
        }
        // Drawn last, so that the schedule of every other fault stays what it was.
        for at in poisson_times(rng, rates.id_reset_per_day, end_ms) {
            faults.push((at, Fault::IdReset));
        }
    }
}
