//! Devices publishing to the gateway the way real ones do: each reading at
//! QoS 1, sent again after a lost connection until its PUBACK comes, each
//! device's readings in sequence. What they were told is the scenario's
//! ground truth: a reading is acknowledged once its PUBACK arrived.
//!
//! Devices share connections (one reading in flight per connection, so each
//! PUBACK names the one reading it answers); a connection serves its devices
//! in turn at the offered rate, and falls behind when pushed back.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use chrono::Utc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::bench::mqtt::{read_more, take_puback, write_connect, write_publish};
use crate::lock::lock;
use crate::sensor::device::DeviceType;
use crate::sensor::reading::{DeviceStatus, Location, SensorReading};

/// How long a device waits for a PUBACK before it counts as pushed back.
const PUSHED_BACK_AFTER: Duration = Duration::from_secs(1);

/// What the devices saw.
#[derive(Debug, Default)]
pub(super) struct DeviceLog {
    /// (device, sequence) of every reading sent at least once.
    pub sent: u64,
    /// (device, sequence) of every reading acknowledged.
    pub acked: BTreeSet<(String, u64)>,
    /// Acknowledgements while the fault was in place.
    pub acked_during_fault: u64,
    /// Readings that waited longer than a second for their PUBACK.
    pub pushed_back: u64,
    /// Connections lost and made again.
    pub reconnects: u64,
    /// Longest wait between two acknowledgements, any device.
    pub longest_stall: Duration,
    last_ack: Option<Instant>,
    /// Whether the fault is in place now.
    pub in_fault: bool,
}

/// The devices, running until stopped.
pub(super) struct Devices {
    log: Arc<Mutex<DeviceLog>>,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl Devices {
    /// `devices` devices offering `rate` readings/s in all to `gateway`.
    pub(super) fn start(gateway: SocketAddr, devices: u32, rate: u32) -> Devices {
        let log = Arc::new(Mutex::new(DeviceLog::default()));
        let stop = CancellationToken::new();
        let connections = devices.clamp(1, 50);
        let mut tasks = JoinSet::new();
        for c in 0..connections {
            let ids: Vec<u32> = (c..devices).step_by(connections as usize).collect();
            let every = Duration::from_secs_f64(f64::from(connections) / f64::from(rate.max(1)));
            let (log, stop) = (Arc::clone(&log), stop.clone());
            tasks.spawn(async move { connection(gateway, c, ids, every, log, stop).await });
        }
        Devices { log, stop, tasks }
    }

    /// The log so far.
    pub(super) fn log(&self) -> std::sync::MutexGuard<'_, DeviceLog> {
        lock(&self.log)
    }

    /// Marks the fault as in place or healed.
    pub(super) fn set_fault(&self, in_fault: bool) {
        lock(&self.log).in_fault = in_fault;
    }

    /// Stops sending new readings; each connection still waits (up to
    /// `grace`) for the PUBACK of the one it has in flight.
    pub(super) async fn stop(mut self, grace: Duration) -> DeviceLog {
        self.stop.cancel();
        let _ = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
        std::mem::take(&mut *lock(&self.log))
    }
}

/// The reading of device `id` with sequence number `sequence`.
pub(super) fn reading(id: u32, sequence: u64) -> SensorReading {
    let device_type = DeviceType::ALL[id as usize % DeviceType::ALL.len()];
    let (low, high) = crate::sensor::validate::physical_range(device_type);
    SensorReading {
        schema_version: crate::sensor::reading::SCHEMA_VERSION,
        device_id: format!("{}-{:06}", device_type.as_str(), id),
        device_type,
        run_id: "gateway-devices".to_string(),
        sequence,
        timestamp: Utc::now(),
        value: if device_type == DeviceType::Motion {
            1.0
        } else {
            (low + high) / 2.0
        },
        unit: device_type.unit().to_string(),
        location: Location {
            site: "site-01".to_string(),
            zone: "zone-01".to_string(),
            latitude: 52.5,
            longitude: 13.4,
        },
        battery_level: 80.0,
        signal_strength: -60,
        firmware_version: "1.0.0".to_string(),
        status: DeviceStatus::Ok,
        is_anomaly: false,
        anomaly_kind: None,
        fault: None,
    }
}

/// One connection serving `ids` in turn, one reading in flight.
async fn connection(
    gateway: SocketAddr,
    index: u32,
    ids: Vec<u32>,
    every: Duration,
    log: Arc<Mutex<DeviceLog>>,
    stop: CancellationToken,
) {
    let mut sequences = vec![0u64; ids.len()];
    let mut stream: Option<TcpStream> = None;
    let mut inbox = BytesMut::new();
    let mut out = BytesMut::new();
    let mut next_due = Instant::now();
    let mut turn = 0usize;
    let mut packet_id: u16 = 0;
    while !stop.is_cancelled() {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next_due) => {}
        }
        next_due += every;
        let slot = turn % ids.len();
        turn += 1;
        let reading = reading(ids[slot], sequences[slot]);
        let topic = format!(
            "sensors/{}/{}",
            reading.device_type.as_str(),
            reading.device_id
        );
        let payload = reading.to_json();
        packet_id = packet_id.checked_add(1).unwrap_or(1);
        lock(&log).sent += 1;
        let sent_at = Instant::now();
        let mut dup = false;
        // Until its PUBACK: a lost connection is made again and the reading sent again.
        loop {
            if stream.is_none() {
                match connect(gateway, index).await {
                    Some(s) => {
                        stream = Some(s);
                        inbox.clear();
                    }
                    None => {
                        if stop.is_cancelled() && sent_at.elapsed() > Duration::from_secs(5) {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            }
            let s = stream.as_mut().expect("connected");
            out.clear();
            write_publish(&mut out, &topic, &payload, packet_id, dup);
            dup = true;
            if s.write_all(&out).await.is_err() {
                stream = None;
                lock(&log).reconnects += 1;
                continue;
            }
            match wait_puback(s, &mut inbox, packet_id).await {
                Ok(()) => break,
                Err(_) => {
                    stream = None;
                    lock(&log).reconnects += 1;
                }
            }
        }
        let now = Instant::now();
        let mut l = lock(&log);
        if now - sent_at > PUSHED_BACK_AFTER {
            l.pushed_back += 1;
        }
        if let Some(last) = l.last_ack {
            l.longest_stall = l.longest_stall.max(now - last);
        }
        l.last_ack = Some(now);
        if l.in_fault {
            l.acked_during_fault += 1;
        }
        l.acked.insert((reading.device_id, sequences[slot]));
        drop(l);
        sequences[slot] += 1;
        // Behind schedule (pushed back): go on from now, not in a burst.
        next_due = next_due.max(Instant::now());
    }
}

async fn connect(gateway: SocketAddr, index: u32) -> Option<TcpStream> {
    let mut stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(gateway))
        .await
        .ok()?
        .ok()?;
    let _ = stream.set_nodelay(true);
    let mut out = BytesMut::new();
    write_connect(&mut out, &format!("chaos-device-connection-{index}"));
    stream.write_all(&out).await.ok()?;
    let mut inbox = BytesMut::new();
    while inbox.len() < 4 {
        tokio::time::timeout(Duration::from_secs(5), read_more(&mut stream, &mut inbox))
            .await
            .ok()?
            .ok()?;
    }
    (inbox[0] == 0x20 && inbox[3] == 0).then_some(stream)
}

/// Waits for the PUBACK of `id`; while the gateway pushes back, as long as
/// it takes (the connection stays up).
async fn wait_puback(stream: &mut TcpStream, inbox: &mut BytesMut, id: u16) -> std::io::Result<()> {
    loop {
        while let Some(acked) = take_puback(inbox)? {
            if acked == id {
                return Ok(());
            }
        }
        read_more(stream, inbox).await?;
    }
}
