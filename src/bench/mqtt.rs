//! An MQTT 3.1.1 load generator: many clients publishing sensor readings at
//! QoS 1, each with a window of publications awaiting their PUBACK, timing
//! every publication to its PUBACK. The same generator and the same payloads
//! drive our gateway and Mosquitto, so that the two differ only in the server.
//!
//! At a fixed rate each client publishes at its own phase: client `i` of `n`
//! sends its readings `i/n` of its interval after client 0 does, so the
//! offered rate arrives spread over time, as a fleet's readings do, and not
//! as every client's publication at the same instant (100 at once every
//! 10 ms for 10,000/s from 100 clients, which times how long a server takes
//! to work through a burst of 100).
//!
//! It speaks just what it needs (CONNECT, PUBLISH at QoS 1, PUBACK,
//! DISCONNECT), written by hand into one buffer per batch: the generator
//! shares the machine with the server it measures, and should cost little.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio::time::Instant;

/// How long connecting, and waiting for any one answer, may take.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// One message: its topic and payload.
#[derive(Debug, Clone)]
pub struct Message {
    /// `sensors/<type>/<device>`.
    pub topic: String,
    /// The reading's JSON.
    pub payload: Bytes,
}

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// The server.
    pub addr: SocketAddr,
    /// Concurrent connections.
    pub clients: usize,
    /// Publications each client keeps awaiting their PUBACK, at most.
    pub window: usize,
    /// Publications in all.
    pub total: u64,
    /// Publications per second in all; unset, as fast as the window allows.
    pub rate: Option<u32>,
    /// The messages, sent in turn.
    pub messages: Arc<Vec<Message>>,
}

/// What the load saw.
#[derive(Debug)]
pub struct LoadOutcome {
    /// Publications acknowledged.
    pub acked: u64,
    /// From the first publication to the last PUBACK.
    pub elapsed: Duration,
    /// Publication (its scheduled time, at a fixed rate) to PUBACK, microseconds.
    pub latency_us: Histogram<u64>,
    /// The same, one histogram per second of the load (by when each
    /// publication was sent or scheduled): a high p99 from one bad second
    /// and one from every second look alike in the whole run's.
    pub by_second_us: Vec<Histogram<u64>>,
}

/// Runs the load to its end; an error names the client and what failed.
///
/// Every client connects before the first publication: the clock (and a
/// fixed rate's schedule) starts once all of them are in, so that what is
/// timed is publication to PUBACK, not a hundred TCP and MQTT handshakes
/// queued at a server that has just started.
pub async fn run(spec: &LoadSpec) -> Result<LoadOutcome, String> {
    let all_in = Arc::new(Barrier::new(spec.clients));
    let start = Arc::new(OnceLock::new());
    let mut clients = tokio::task::JoinSet::new();
    for index in 0..spec.clients {
        let (spec, all_in, start) = (spec.clone(), Arc::clone(&all_in), Arc::clone(&start));
        clients.spawn(async move {
            // Waits for the others even when this one failed: none is left waiting.
            let connected = connect(&spec, index).await;
            all_in.wait().await;
            let started = *start.get_or_init(Instant::now);
            client(&spec, index, connected?, started)
                .await
                .map_err(|e| format!("MQTT client {index}: {e}"))
        });
    }
    let mut latency_us = histogram();
    let mut by_second_us: Vec<Histogram<u64>> = Vec::new();
    let mut acked = 0;
    while let Some(result) = clients.join_next().await {
        let seen = result.map_err(|e| e.to_string())??;
        acked += seen.acked;
        for (second, latency) in seen.by_second.iter().enumerate() {
            latency_us.add(latency).map_err(|e| e.to_string())?;
            if by_second_us.len() <= second {
                by_second_us.resize_with(second + 1, histogram);
            }
            by_second_us[second]
                .add(latency)
                .map_err(|e| e.to_string())?;
        }
    }
    let started = start.get().copied().unwrap_or_else(Instant::now);
    Ok(LoadOutcome {
        acked,
        elapsed: started.elapsed(),
        latency_us,
        by_second_us,
    })
}

/// What one client saw: its PUBACKs, and their latencies by second of the load.
struct ClientOutcome {
    acked: u64,
    by_second: Vec<Histogram<u64>>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

/// One client's connection, its CONNACK read.
async fn connect(spec: &LoadSpec, index: usize) -> Result<(TcpStream, BytesMut), String> {
    let handshake = async {
        let mut stream = TcpStream::connect(spec.addr).await?;
        stream.set_nodelay(true)?;
        let mut out = BytesMut::with_capacity(256);
        write_connect(&mut out, &format!("metrocloud-bench-{index}"));
        stream.write_all(&out).await?;
        let mut inbox = BytesMut::with_capacity(64 * 1024);
        // CONNACK: 0x20 0x02 flags code.
        while inbox.len() < 4 {
            read_more(&mut stream, &mut inbox).await?;
        }
        if inbox[0] != 0x20 || inbox[3] != 0 {
            return Err(std::io::Error::other(format!(
                "refused: CONNACK {:02x?}",
                &inbox[..4]
            )));
        }
        inbox.advance(4);
        Ok((stream, inbox))
    };
    match tokio::time::timeout(ANSWER_WITHIN, handshake).await {
        Ok(connected) => connected.map_err(|e| format!("MQTT client {index}: {e}")),
        Err(_) => Err(format!(
            "MQTT client {index}: not connected within {ANSWER_WITHIN:?}"
        )),
    }
}

/// One client's share, once connected: publish with its window, disconnect.
async fn client(
    spec: &LoadSpec,
    index: usize,
    (mut stream, mut inbox): (TcpStream, BytesMut),
    started: Instant,
) -> std::io::Result<ClientOutcome> {
    let share = spec.total / spec.clients as u64
        + u64::from((index as u64) < spec.total % spec.clients as u64);
    let interval = spec
        .rate
        .map(|rate| Duration::from_secs_f64(spec.clients as f64 / f64::from(rate.max(1))));
    // When publication `n` of this client is due, at a fixed rate.
    let phase = interval.map_or(Duration::ZERO, |every| {
        every.mul_f64(index as f64 / spec.clients as f64)
    });
    let due_at = |every: Duration, n: u64| started + phase + every.mul_f64(n as f64);
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut by_second: Vec<Histogram<u64>> = Vec::new();
    // Send time (or scheduled time) of each packet id in flight.
    let mut sent_at: Vec<Option<Instant>> = vec![None; 65_536];
    let (mut sent, mut acked, mut in_flight) = (0u64, 0u64, 0usize);
    let mut message = index;
    let mut next_id: u16 = 0;
    while acked < share {
        let now = Instant::now();
        while sent < share && in_flight < spec.window {
            let due = interval.map(|every| due_at(every, sent));
            if due.is_some_and(|due| due > now) {
                break;
            }
            next_id = if next_id == u16::MAX { 1 } else { next_id + 1 };
            let m = &spec.messages[message % spec.messages.len()];
            message += spec.clients;
            write_publish(&mut out, &m.topic, &m.payload, next_id, false);
            sent_at[usize::from(next_id)] = Some(due.unwrap_or(now));
            sent += 1;
            in_flight += 1;
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if in_flight == 0 {
            // At a fixed rate, nothing is due yet.
            tokio::time::sleep_until(due_at(interval.unwrap_or_default(), sent)).await;
            continue;
        }
        let wait = match interval {
            Some(every) if sent < share && in_flight < spec.window => {
                due_at(every, sent).saturating_duration_since(Instant::now())
            }
            _ => ANSWER_WITHIN,
        };
        match tokio::time::timeout(wait, read_more(&mut stream, &mut inbox)).await {
            Ok(read) => read?,
            Err(_) if wait < ANSWER_WITHIN => continue,
            Err(_) => return Err(std::io::Error::other("no PUBACK within 30 s")),
        }
        let now = Instant::now();
        while let Some(id) = take_puback(&mut inbox)? {
            if let Some(at) = sent_at[usize::from(id)].take() {
                let micros = (now - at).as_micros().max(1) as u64;
                let second = (at - started).as_secs() as usize;
                if by_second.len() <= second {
                    by_second.resize_with(second + 1, histogram);
                }
                let _ = by_second[second].record(micros);
                acked += 1;
                in_flight -= 1;
            }
        }
    }
    // DISCONNECT.
    let _ = stream.write_all(&[0xe0, 0x00]).await;
    Ok(ClientOutcome { acked, by_second })
}

/// Reads what the server sent into `inbox`; its closing the connection is an error.
pub async fn read_more(stream: &mut TcpStream, inbox: &mut BytesMut) -> std::io::Result<()> {
    if stream.read_buf(inbox).await? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ));
    }
    Ok(())
}

/// The next PUBACK's packet id, if a whole one is buffered; other packets are skipped.
pub fn take_puback(inbox: &mut BytesMut) -> std::io::Result<Option<u16>> {
    loop {
        if inbox.len() < 2 {
            return Ok(None);
        }
        let mut remaining = 0usize;
        let mut header = 1;
        loop {
            let Some(&byte) = inbox.get(header) else {
                return Ok(None);
            };
            remaining |= usize::from(byte & 0x7f) << (7 * (header - 1));
            header += 1;
            if byte & 0x80 == 0 {
                break;
            }
            if header > 4 {
                return Err(std::io::Error::other("malformed remaining length"));
            }
        }
        if inbox.len() < header + remaining {
            return Ok(None);
        }
        let kind = inbox[0] >> 4;
        let packet = inbox.split_to(header + remaining);
        if kind == 4 && remaining >= 2 {
            return Ok(Some(u16::from_be_bytes([
                packet[header],
                packet[header + 1],
            ])));
        }
    }
}

fn write_remaining_length(out: &mut BytesMut, mut length: usize) {
    loop {
        let mut byte = (length % 128) as u8;
        length /= 128;
        if length > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if length == 0 {
            return;
        }
    }
}

/// CONNECT, MQTT 3.1.1, clean session, keep-alive 60 s, no login.
pub fn write_connect(out: &mut BytesMut, client_id: &str) {
    out.put_u8(0x10);
    write_remaining_length(out, 10 + 2 + client_id.len());
    out.put_u16(4);
    out.put_slice(b"MQTT");
    out.put_u8(4);
    out.put_u8(0x02);
    out.put_u16(60);
    out.put_u16(client_id.len() as u16);
    out.put_slice(client_id.as_bytes());
}

/// PUBLISH at QoS 1 (`dup`: sent again after a lost connection).
pub fn write_publish(out: &mut BytesMut, topic: &str, payload: &[u8], id: u16, dup: bool) {
    out.put_u8(if dup { 0x3a } else { 0x32 });
    write_remaining_length(out, 2 + topic.len() + 2 + payload.len());
    out.put_u16(topic.len() as u16);
    out.put_slice(topic.as_bytes());
    out.put_u16(id);
    out.put_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::mqttbytes::v4;

    #[test]
    fn what_the_generator_writes_is_mqtt_as_a_codec_reads_it() {
        let mut out = BytesMut::new();
        write_connect(&mut out, "bench-7");
        let payload = vec![b'x'; 300];
        write_publish(&mut out, "sensors/light/light-000001", &payload, 513, false);
        match v4::Packet::read(&mut out, 1 << 20).unwrap() {
            v4::Packet::Connect(c) => {
                assert_eq!(c.client_id, "bench-7");
                assert!(c.clean_session);
            }
            other => panic!("{other:?}"),
        }
        match v4::Packet::read(&mut out, 1 << 20).unwrap() {
            v4::Packet::Publish(p) => {
                assert_eq!(p.topic, "sensors/light/light-000001");
                assert_eq!(p.pkid, 513);
                assert_eq!(p.qos, rumqttc::mqttbytes::QoS::AtLeastOnce);
                assert_eq!(&p.payload[..], &payload[..]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pubacks_are_found_whole_and_other_packets_skipped() {
        let mut inbox = BytesMut::new();
        inbox.put_slice(&[0xd0, 0x00, 0x40, 0x02, 0x01, 0x02, 0x40, 0x02, 0x00]);
        assert_eq!(take_puback(&mut inbox).unwrap(), Some(0x0102));
        assert_eq!(
            take_puback(&mut inbox).unwrap(),
            None,
            "half a PUBACK waits"
        );
        inbox.put_u8(0x07);
        assert_eq!(take_puback(&mut inbox).unwrap(), Some(7));
        assert!(inbox.is_empty());
    }
}
