//! Telemetry shipping over UDP.
//!
//! Service threads record spans (a name, a duration, a status tag). Each
//! batch is one statsd-style datagram of at most 1432 bytes (a 1500-byte MTU
//! less IP/UDP headers and some room): the batcher's weight limit is the
//! datagram size and the weigher is a span's encoded line length, newline
//! included, so the processor encodes the batch and sends it, with no
//! packing of its own. It goes to a collector — here a receiver thread on 127.0.0.1 inside the example,
//! which parses every line and counts what arrived. The report compares
//! spans recorded, lines sent, datagrams sent and lines received, and names
//! any loss (UDP may drop; on loopback it should not, unless the receiver
//! falls behind its socket buffer).
//!
//! ```text
//! cargo run --release --example telemetry_udp             # ~2 s
//! cargo run --release --example telemetry_udp -- --quick  # smoke (CI)
//! ```

use microbatch::{BatchInfo, Batcher, Trigger};
use std::io::Write;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MAX_DATAGRAM: usize = 1432;
const NAMES: [&str; 4] = ["http.request", "db.query", "cache.get", "queue.publish"];

#[derive(Clone, Copy)]
struct Span {
    name: u8,
    micros: u32,
    ok: bool,
}

const STATUS: [&str; 2] = ["error", "ok"];

/// A span's statsd line: `name:micros|ms|#status:ok\n`.
fn encode(s: &Span, out: &mut Vec<u8>) -> std::io::Result<()> {
    writeln!(
        out,
        "{}:{}|ms|#status:{}",
        NAMES[s.name as usize],
        s.micros,
        STATUS[usize::from(s.ok)]
    )
}

/// The weigher: the length of the line `encode` writes, newline included,
/// computed without writing it.
fn line_len(s: &Span) -> u64 {
    let digits = s.micros.checked_ilog10().unwrap_or(0) as usize + 1;
    let len = NAMES[s.name as usize].len()
        + 1
        + digits
        + "|ms|#status:".len()
        + STATUS[usize::from(s.ok)].len()
        + 1;
    len as u64
}

/// Sends each batch as one datagram; counts lines and datagrams.
struct Shipper {
    socket: UdpSocket,
    datagram: Vec<u8>,
    lines: Arc<AtomicU64>,
    datagrams: Arc<AtomicU64>,
}

impl Shipper {
    fn ship(&mut self, batch: &[Span], info: &BatchInfo) -> std::io::Result<()> {
        self.datagram.clear();
        for s in batch {
            encode(s, &mut self.datagram)?;
        }
        // The batcher weighed the batch as exactly this datagram.
        assert_eq!(self.datagram.len() as u64, info.weight);
        assert!(self.datagram.len() <= MAX_DATAGRAM);
        self.socket.send(&self.datagram)?;
        self.datagrams.fetch_add(1, Ordering::Relaxed);
        self.lines.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let threads = 4u64;
    let per_thread: u64 = if quick { 5_000 } else { 250_000 };

    // The collector: counts every well-formed line, per span name.
    let collector = UdpSocket::bind("127.0.0.1:0").expect("bind collector");
    collector
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let addr = collector.local_addr().unwrap();
    let received = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let (mut lines, mut datagrams, mut largest) = (0u64, 0u64, 0usize);
        let mut per_name = [0u64; 4];
        while let Ok(n) = collector.recv(&mut buf) {
            datagrams += 1;
            largest = largest.max(n);
            for line in std::str::from_utf8(&buf[..n]).expect("utf-8").lines() {
                let (name, rest) = line.split_once(':').expect("statsd line");
                assert!(rest.contains("|ms|#status:"), "malformed line {line:?}");
                per_name[NAMES.iter().position(|&x| x == name).expect("known name")] += 1;
                lines += 1;
            }
        }
        (lines, datagrams, largest, per_name)
    });

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(addr).unwrap();
    let lines = Arc::new(AtomicU64::new(0));
    let datagrams = Arc::new(AtomicU64::new(0));
    let mut shipper = Shipper {
        socket,
        datagram: Vec::with_capacity(MAX_DATAGRAM),
        lines: Arc::clone(&lines),
        datagrams: Arc::clone(&datagrams),
    };
    // A datagram is the batch: the weight limit binds long before the count
    // (lines are 25-40 bytes, so at most ~57 fit), and a partial datagram
    // goes out after 10 ms.
    let batcher = Batcher::builder()
        .max_batch_size(512)
        .max_delay(Duration::from_millis(10))
        .max_batch_weight(MAX_DATAGRAM as u64, line_len)
        .build(move |batch: &mut Vec<Span>, info: &BatchInfo| shipper.ship(batch, info))
        .unwrap();

    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let b = &batcher;
            s.spawn(move || {
                let mut x = 0x2545_F491_4F6C_DD1Du64 ^ t;
                for i in 0..per_thread {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let span = Span {
                        name: (i % 4) as u8,
                        micros: (x % 20_000) as u32,
                        ok: !x.is_multiple_of(97),
                    };
                    b.submit(span).expect("open batcher");
                }
            });
        }
    });
    let m = batcher.shutdown();
    let elapsed = start.elapsed();
    let (got, got_datagrams, largest, per_name) = received.join().unwrap();
    let recorded = threads * per_thread;
    let sent = lines.load(Ordering::Relaxed);
    println!("telemetry over UDP to a collector on {addr}, {threads} threads\n");
    println!(
        "  recorded {recorded} spans in {elapsed:.2?} ({:.2} M spans/s), {} batches, {} send errors",
        recorded as f64 / elapsed.as_secs_f64() / 1e6,
        m.batches(),
        m.processor_errors
    );
    let sent_datagrams = datagrams.load(Ordering::Relaxed);
    println!(
        "  sent {sent} lines in {sent_datagrams} datagrams (avg {:.0} lines, {:.0} bytes per datagram, limit {MAX_DATAGRAM} bytes)",
        sent as f64 / sent_datagrams.max(1) as f64,
        m.processed_weight as f64 / sent_datagrams.max(1) as f64
    );
    println!(
        "  batches closed by the weight limit {}, by the time trigger {}, at shutdown {}",
        m.batches_by(Trigger::Weight),
        m.batches_by(Trigger::Time),
        m.batches_by(Trigger::Shutdown)
    );
    println!("  collector received {got} lines in {got_datagrams} datagrams (largest {largest} bytes); per name {per_name:?}");
    let lost = sent.saturating_sub(got);
    if lost == 0 {
        println!("  loss: none");
    } else {
        println!(
            "  loss: {lost} lines ({:.3}%) in {} datagrams dropped by UDP (receiver behind its socket buffer)",
            100.0 * lost as f64 / sent as f64,
            datagrams.load(Ordering::Relaxed) - got_datagrams
        );
    }
    assert_eq!(
        m.processed, recorded,
        "every recorded span was handed to the shipper"
    );
    assert_eq!(sent, recorded, "every span became a line");
    assert!(largest <= MAX_DATAGRAM);
    assert_eq!(sent_datagrams, m.batches(), "one datagram per batch");
}
