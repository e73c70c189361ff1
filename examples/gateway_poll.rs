//! A gateway's event loop: one thread polls a UDP socket and the batcher.
//!
//! Trading gateways drive everything from one pinned thread: it reads the
//! feed, decides, and ships what it decided, and gives no thread to anything
//! else. Here that thread receives order datagrams from a feed (a sender
//! thread on 127.0.0.1 inside the example), submits each order to the
//! batcher, and drives the batcher's flusher with [`Flusher::poll`] between
//! reads: no flusher thread, and no submit on the hot path makes a system
//! call to wake one. When neither has anything to do the loop waits on the
//! socket, with a read timeout set from [`Flusher::next_deadline`] (what an
//! epoll timeout would be), so a partial batch still goes out on time.
//!
//! Beside it, a risk thread submits a heartbeat every millisecond and calls
//! `flush()`, which returns once the owner has polled the heartbeat through:
//! the report shows how long that took. The processor journals each batch
//! (here: checks the per-source order and folds it into a checksum).
//!
//! A submit from the loop thread never waits on itself: when the queue is
//! full it gets `Full` back at once (`Backpressure::Block` would block any
//! other thread), and the loop polls to make room and submits again.
//!
//! ```text
//! cargo run --release --example gateway_poll             # ~2 s
//! cargo run --release --example gateway_poll -- --quick  # smoke (CI)
//! ```

use microbatch::{BatchInfo, Batcher, Flusher, PollState, SubmitError, Trigger};
use std::io::ErrorKind;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An order from the feed, or a heartbeat from the risk thread.
#[derive(Clone, Copy, Debug)]
struct Order {
    /// 0: the feed; 1: the risk thread's heartbeats.
    source: u8,
    seq: u64,
    price_ticks: i64,
    qty: u32,
    /// When the loop received it (or the heartbeat was made).
    at: Instant,
}

/// Orders per datagram: `seq price qty` lines.
const PER_DATAGRAM: u64 = 16;

fn percentile(v: &mut [u64], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort_unstable();
    Duration::from_nanos(v[((v.len() - 1) as f64 * p) as usize])
}

/// What the processor saw.
#[derive(Default)]
struct Journal {
    next: [u64; 2],
    checksum: u64,
    /// Receive (or heartbeat) to journaled, per order.
    latency_ns: Vec<u64>,
}

/// The feed: `datagrams` datagrams of `PER_DATAGRAM` orders, in bursts,
/// then an `END` datagram (repeated: UDP may drop one).
fn feed(to: std::net::SocketAddr, datagrams: u64) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind feed");
    let mut line = String::new();
    for d in 0..datagrams {
        line.clear();
        for i in 0..PER_DATAGRAM {
            let seq = d * PER_DATAGRAM + i;
            let price = 10_000 + (seq % 50) as i64 - 25;
            line.push_str(&format!("{seq} {price} {}\n", 1 + seq % 100));
        }
        socket.send_to(line.as_bytes(), to).expect("send");
        if d % 32 == 31 {
            // Between bursts the loop goes idle and waits on the socket.
            std::thread::sleep(Duration::from_micros(300));
        }
    }
    for _ in 0..5 {
        socket.send_to(b"END", to).expect("send");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The loop's counters.
#[derive(Default, Debug)]
struct Loop {
    datagrams: u64,
    orders: u64,
    polls: u64,
    idle_waits: u64,
    full_refusals: u64,
}

/// Submits from the loop thread: on `Full`, polls to make room (the loop's
/// own submit is refused rather than left waiting for itself).
fn submit_from_loop(
    batcher: &Batcher<Order>,
    flusher: &mut Flusher<Order>,
    st: &mut Loop,
    mut order: Order,
) {
    loop {
        match batcher.submit(order) {
            Ok(()) => return,
            Err(SubmitError::Full(back)) => {
                st.full_refusals += 1;
                order = back;
                flusher.poll();
                st.polls += 1;
            }
            Err(e) => panic!("the gateway's batcher refused an order: {e}"),
        }
    }
}

fn event_loop(socket: &UdpSocket, batcher: &Batcher<Order>, mut flusher: Flusher<Order>) -> Loop {
    let mut st = Loop::default();
    let mut buf = [0u8; 2048];
    let mut closing = false;
    socket.set_nonblocking(true).unwrap();
    loop {
        // Duty 1: the socket.
        let mut busy = false;
        if !closing {
            match socket.recv(&mut buf) {
                Ok(n) if &buf[..n] == b"END" => {
                    // The feed is done: close, then poll until drained.
                    batcher.close();
                    closing = true;
                }
                Ok(n) => {
                    busy = true;
                    st.datagrams += 1;
                    let at = Instant::now();
                    for line in std::str::from_utf8(&buf[..n]).expect("utf-8").lines() {
                        let mut f = line.split(' ');
                        let mut next =
                            || f.next().expect("a field").parse::<i64>().expect("a number");
                        let order = Order {
                            source: 0,
                            seq: next() as u64,
                            price_ticks: next(),
                            qty: next() as u32,
                            at,
                        };
                        submit_from_loop(batcher, &mut flusher, &mut st, order);
                        st.orders += 1;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("recv: {e}"),
            }
        }
        // Duty 2: the batcher.
        let p = flusher.poll();
        st.polls += 1;
        if p.state == PollState::Closed {
            return st;
        }
        if busy || p.items > 0 || closing {
            continue;
        }
        // Idle: wait on the socket until the batcher's next deadline (or
        // 1 ms: the risk thread's flushes are seen by then).
        let wait = flusher
            .next_deadline()
            .map_or(Duration::from_millis(1), |d| {
                d.saturating_duration_since(Instant::now())
            })
            .clamp(Duration::from_micros(1), Duration::from_millis(1));
        st.idle_waits += 1;
        socket.set_nonblocking(false).unwrap();
        socket.set_read_timeout(Some(wait)).unwrap();
        let mut peek = [0u8; 1];
        let _ = socket.peek(&mut peek);
        socket.set_nonblocking(true).unwrap();
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let datagrams: u64 = if quick { 500 } else { 40_000 };

    let journal = Arc::new(Mutex::new(Journal::default()));
    let j = Arc::clone(&journal);
    let (batcher, flusher) = Batcher::builder()
        .max_batch_size(256)
        .capacity(1024)
        .max_delay(Duration::from_micros(200))
        .build_with_flusher(move |batch: &mut Vec<Order>, _: &BatchInfo| {
            let mut j = j.lock().unwrap();
            let done = Instant::now();
            for o in batch.iter() {
                let s = usize::from(o.source);
                assert_eq!(o.seq, j.next[s], "source {s}: out of order or duplicated");
                j.next[s] += 1;
                j.checksum = j
                    .checksum
                    .wrapping_mul(31)
                    .wrapping_add(o.price_ticks as u64 ^ u64::from(o.qty));
                j.latency_ns.push((done - o.at).as_nanos() as u64);
            }
        })
        .unwrap();
    let batcher = Arc::new(batcher);

    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind gateway");
    let addr = socket.local_addr().unwrap();
    let feeder = std::thread::spawn(move || feed(addr, datagrams));

    // The risk thread: a heartbeat and a flush every millisecond.
    let stop = Arc::new(AtomicBool::new(false));
    let risk = {
        let (b, stop) = (Arc::clone(&batcher), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut flush_ns = Vec::new();
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                let at = Instant::now();
                let beat = Order {
                    source: 1,
                    seq,
                    price_ticks: 0,
                    qty: 0,
                    at,
                };
                if b.submit(beat).is_err() {
                    break; // closed
                }
                seq += 1;
                if b.flush().is_err() {
                    break;
                }
                flush_ns.push(at.elapsed().as_nanos() as u64);
                std::thread::sleep(Duration::from_millis(1));
            }
            (seq, flush_ns)
        })
    };

    let start = Instant::now();
    let st = event_loop(&socket, &batcher, flusher);
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    feeder.join().unwrap();
    let (beats, mut flush_ns) = risk.join().unwrap();
    let m = batcher.metrics();
    let mut j = journal.lock().unwrap();
    let sent = datagrams * PER_DATAGRAM;

    println!("gateway: one thread polls a UDP feed on {addr} and the batcher; a risk thread flushes every 1 ms\n");
    println!(
        "  received {} orders in {} datagrams of {sent} sent ({} lost by UDP), in {elapsed:.2?}",
        st.orders,
        st.datagrams,
        sent - st.orders
    );
    println!(
        "  {} polls, {} idle waits on the socket (timeout from next_deadline), {} own submits refused as Full and retried after a poll",
        st.polls, st.idle_waits, st.full_refusals
    );
    println!(
        "  {} batches (size {}, time {}, flush {}, shutdown {}), {:.1} items per batch",
        m.batches(),
        m.batches_by(Trigger::Size),
        m.batches_by(Trigger::Time),
        m.batches_by(Trigger::Flush),
        m.batches_by(Trigger::Shutdown),
        m.processed as f64 / m.batches().max(1) as f64
    );
    println!(
        "  receive to journaled: p50 {:.2?}, p99 {:.2?}; the risk thread's {beats} heartbeats, submit to flush() returned: p50 {:.2?}, p99 {:.2?}",
        percentile(&mut j.latency_ns, 0.5),
        percentile(&mut j.latency_ns, 0.99),
        percentile(&mut flush_ns, 0.5),
        percentile(&mut flush_ns, 0.99)
    );
    assert_eq!(
        j.next[0], st.orders,
        "every received order journaled once, in order"
    );
    assert_eq!(j.next[1], beats, "every heartbeat journaled once, in order");
    assert_eq!(m.processed, st.orders + beats);
    assert_eq!((m.queue_depth, m.failed), (0, 0));
    println!(
        "  journal: {} orders and {beats} heartbeats, each exactly once and in order (checksum {:016x})",
        j.next[0], j.checksum
    );
}
