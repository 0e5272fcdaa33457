//! Ingest as a real process, against a real (private) tansu broker: who gets
//! in, what gets refused, what happens when the broker goes away, and what
//! SIGTERM under load leaves behind.
//!
//! Each test starts its own broker and ingest on free ports (see
//! `support`), so they need only the `tansu` binary; `./deploy/dev test`
//! runs them.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use schemas::wire::PROTOCOL_VERSION;
use schemas::{BatchId, Frame};
use support::{
    batch, connect, connect_anonymous, hello, next_frame, raw_blob, shipper, tally, Answers,
    Broker, Ingest, Pki, Validity,
};
use tokio::io::AsyncWriteExt;

fn epoch() -> u64 {
    rand::random::<u64>() >> 1
}

/// Tries a handshake with `files`; returns what the client saw, which must
/// be a refusal.
async fn refused(addr: std::net::SocketAddr, conn: std::io::Result<support::Connection>) {
    let Ok(mut conn) = conn else { return };
    // TLS 1.3: the server checks the client certificate after the client
    // finished; the refusal shows on the first read.
    match hello(&mut conn, PROTOCOL_VERSION, PROTOCOL_VERSION).await {
        None | Some(Frame::GoAway(_)) => {}
        Some(frame) => panic!("{addr}: a refused client got {frame:?}"),
    }
}

#[tokio::test]
#[ignore = "needs tansu (./deploy/dev test)"]
async fn every_bad_client_certificate_is_refused_with_its_reason_logged() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let broker = Broker::start(dir.path());
    let ingest = Ingest::start(
        dir.path(),
        &pki,
        &broker,
        "",
        "allowed_edges = [\"edge-allowed\"]",
    );

    // The allowed edge gets in.
    let mut good = shipper(ingest.addr, &pki.client("edge-allowed", Validity::Current)).await;
    let id = BatchId {
        epoch: epoch(),
        seq: 1,
    };
    good.send(Frame::Batch(batch(id, 3))).await.unwrap();
    assert_eq!(next_frame(&mut good).await, Some(Frame::Ack(id)));

    // No client certificate at all.
    refused(
        ingest.addr,
        connect_anonymous(ingest.addr, &pki.server.ca_cert).await,
    )
    .await;
    let line = ingest.wait_for_log(&["TLS handshake failed", "no_certificate"]);
    println!("no certificate → {line}");

    // A certificate from a CA ingest does not trust.
    refused(
        ingest.addr,
        connect(ingest.addr, &pki.stranger("edge-allowed")).await,
    )
    .await;
    let line = ingest.wait_for_log(&["TLS handshake failed", "unknown_issuer"]);
    assert!(line.contains("UnknownIssuer"), "{line}");
    println!("unknown CA → {line}");

    // An expired certificate from the right CA.
    refused(
        ingest.addr,
        connect(ingest.addr, &pki.client("edge-allowed", Validity::Expired)).await,
    )
    .await;
    let line = ingest.wait_for_log(&["TLS handshake failed", "expired"]);
    println!("expired → {line}");

    // A valid certificate whose edge is not on the allow-list: TLS succeeds,
    // then a GoAway names the reason.
    let mut intruder = connect(ingest.addr, &pki.client("edge-intruder", Validity::Current))
        .await
        .expect("TLS itself succeeds");
    match next_frame(&mut intruder).await {
        Some(Frame::GoAway(reason)) => assert!(reason.contains("not allowed"), "{reason}"),
        other => panic!("expected GoAway, got {other:?}"),
    }
    let line = ingest.wait_for_log(&["edge-intruder", "allowed_edges"]);
    println!("not allowed → {line}");

    for series in [
        "sluice_ingest_tls_handshake_failures_total{reason=\"no_certificate\"}",
        "sluice_ingest_tls_handshake_failures_total{reason=\"unknown_issuer\"}",
        "sluice_ingest_tls_handshake_failures_total{reason=\"expired\"}",
        "sluice_ingest_handshake_rejections_total{edge=\"edge-intruder\",reason=\"edge_not_allowed\"}",
    ] {
        assert_eq!(ingest.metric(series).await, 1.0, "{series}");
    }
    // The good connection was never disturbed.
    let id = BatchId { seq: 2, ..id };
    good.send(Frame::Batch(batch(id, 3))).await.unwrap();
    assert_eq!(next_frame(&mut good).await, Some(Frame::Ack(id)));
}

/// A Cap'n Proto segment holding one `Request` root struct (6 data words,
/// 12 pointers) whose pointers are all `pointer`, followed by `tail` words.
fn hostile_message(pointer: impl Fn(u32) -> u64, tail: &[u64]) -> Vec<u8> {
    const DATA: u64 = 6;
    const POINTERS: u32 = 12;
    let mut words = vec![DATA << 32 | u64::from(POINTERS) << 48]; // root: struct at offset 0
    words.extend(std::iter::repeat_n(0, DATA as usize));
    words.extend((0..POINTERS).map(pointer));
    words.extend_from_slice(tail);
    let mut message = Vec::new();
    message.extend_from_slice(&0u32.to_le_bytes()); // one segment
    message.extend_from_slice(&(words.len() as u32).to_le_bytes());
    message.extend_from_slice(&[0; 4]); // pad the table to a word
    for word in words {
        message.extend_from_slice(&word.to_le_bytes());
    }
    message
}

/// A list pointer (`kind` 1) from pointer `index` of the root struct to
/// `target` words into the segment, of `count` elements of size class 2
/// (bytes).
fn text_pointer(index: u32, target: u32, count: u32) -> u64 {
    let from = 1 + 6 + index + 1; // the word after the pointer
    let offset = (target as i64 - from as i64) as u32 & 0x3FFF_FFFF;
    1 | u64::from(offset) << 2 | 2 << 32 | u64::from(count) << 35
}

/// Poison of every kind the issue lists, each with the answer it must get.
enum Poison {
    /// Sent raw on a fresh connection; ingest must close it.
    Frame(Vec<u8>),
    /// Sent as a batch on the attacker's connection; must be NACKed as not
    /// retryable.
    Batch(bytes::Bytes),
    /// A `Hello` without our version; must get `GoAway`.
    Version,
}

fn poison(n: u64, epoch: u64) -> Poison {
    let id = BatchId { epoch, seq: n };
    match n % 8 {
        // A frame header claiming 1 GiB.
        0 => Poison::Frame([&(1u32 << 30).to_be_bytes()[..], &[3; 64]].concat()),
        // A batch frame with a flipped CRC byte.
        1 => {
            let mut raw = bytes::BytesMut::new();
            tokio_util::codec::Encoder::encode(
                &mut schemas::FrameCodec::default(),
                Frame::Batch(batch(id, 2)),
                &mut raw,
            )
            .unwrap();
            let last = raw.len() - 1;
            raw[last] ^= 0x40;
            Poison::Frame(raw.to_vec())
        }
        // LZ4 bombs: a few bytes claiming 4 GiB, or 24 MiB (under the size
        // limit, over LZ4's ratio); 16 MiB of zeros in ~64 KiB.
        2 => Poison::Batch(raw_blob(1, id, 1, u32::MAX - 7, &[0; 8])),
        3 => Poison::Batch(raw_blob(1, id, 1, 24 << 20, &[0; 8])),
        4 => Poison::Batch(raw_blob(1, id, 1, 16 << 20, &vec![0; 16 << 20])),
        // Cap'n Proto: every text claims 512 MiB far outside the segment.
        5 => Poison::Batch({
            let message = hostile_message(|i| text_pointer(i, 1 << 20, (1 << 29) - 1), &[]);
            raw_blob(1, id, 1, message.len() as u32, &message)
        }),
        // Cap'n Proto amplification: every text is the same 1 MiB, read
        // 12 times past the traversal limit.
        6 => Poison::Batch({
            let words = (1 << 20) / 8;
            let text: Vec<u64> = (0..words)
                .map(|w| {
                    if w + 1 == words {
                        0
                    } else {
                        0x4141_4141_4141_4141
                    }
                })
                .collect();
            let message = hostile_message(|i| text_pointer(i, 1 + 6 + 12, 1 << 20), &text);
            raw_blob(1, id, 1, message.len() as u32, &message)
        }),
        // A wrong batch format version, or a Hello without our protocol.
        // (A header of an unknown version is not read further: NACKed as 0/0.)
        _ if n % 16 == 7 => Poison::Batch(raw_blob(9, id, 1, 8, &[0; 8])),
        _ => Poison::Version,
    }
}

#[tokio::test]
#[ignore = "needs tansu (./deploy/dev test)"]
async fn poison_is_refused_memory_stays_bounded_and_good_traffic_flows() {
    /// What ingest may use while attacked: about 12 MiB at startup, plus
    /// `validation_threads` (2 here) bombs of 16 MiB being decoded, plus
    /// room for librdkafka's buffers.
    const RSS_BOUND_KIB: u64 = 96 << 10;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let broker = Broker::start(dir.path());
    let ingest = Ingest::start(dir.path(), &pki, &broker, "", "");
    let client = pki.client("edge-good", Validity::Current);
    let attacker = pki.client("edge-evil", Validity::Current);
    let (rss_before, _) = ingest.memory_kib();

    // A well-behaved shipper sends one batch after another throughout.
    let stop = tokio_util::sync::CancellationToken::new();
    let good = tokio::spawn({
        let (addr, stop) = (ingest.addr, stop.clone());
        async move {
            let mut conn = shipper(addr, &client).await;
            let epoch = epoch();
            let mut slowest = Duration::ZERO;
            let mut seq = 0;
            while !stop.is_cancelled() {
                seq += 1;
                let id = BatchId { epoch, seq };
                let sent = Instant::now();
                conn.send(Frame::Batch(batch(id, 50))).await.unwrap();
                assert_eq!(next_frame(&mut conn).await, Some(Frame::Ack(id)));
                slowest = slowest.max(sent.elapsed());
            }
            (seq, slowest)
        }
    });

    let epoch = epoch();
    let mut attacker_conn = shipper(ingest.addr, &attacker).await;
    let (mut closed, mut nacked, mut goaways) = (0, 0, 0);
    for n in 0..100 {
        match poison(n, epoch) {
            Poison::Frame(bytes) => {
                let mut conn = shipper(ingest.addr, &attacker).await;
                conn.get_mut().write_all(&bytes).await.unwrap();
                conn.get_mut().flush().await.unwrap();
                match next_frame(&mut conn).await {
                    Some(Frame::GoAway(_)) | None => {}
                    Some(other) => panic!("poison frame {n} got {other:?}"),
                }
                closed += 1;
            }
            Poison::Batch(blob) => {
                attacker_conn.send(Frame::Batch(blob)).await.unwrap();
                match next_frame(&mut attacker_conn).await {
                    Some(Frame::Nack {
                        id,
                        retryable: false,
                        reason,
                    }) => {
                        let unread = BatchId { epoch: 0, seq: 0 };
                        let expected = if n % 16 == 7 {
                            unread
                        } else {
                            BatchId { epoch, seq: n }
                        };
                        assert_eq!(id, expected, "{reason}");
                        nacked += 1;
                    }
                    other => panic!("poison batch {n} got {other:?}"),
                }
            }
            Poison::Version => {
                let mut conn = connect(ingest.addr, &attacker).await.unwrap();
                match hello(&mut conn, 7, 9).await {
                    Some(Frame::GoAway(reason)) => assert!(reason.contains("version"), "{reason}"),
                    other => panic!("a Hello without our version got {other:?}"),
                }
                goaways += 1;
            }
        }
        // Spread the attack over a few seconds of good traffic.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    stop.cancel();
    let (good_batches, slowest) = good.await.unwrap();
    let (rss_after, hwm) = ingest.memory_kib();
    println!(
        "100 poison frames: {closed} connections closed, {nacked} batches NACKed, \
         {goaways} Hellos refused; RSS {rss_before} KiB before, {rss_after} KiB after, \
         peak {hwm} KiB (bound {RSS_BOUND_KIB} KiB); the good shipper had {good_batches} \
         batches ACKed meanwhile, slowest {slowest:?}"
    );
    assert_eq!(closed + nacked + goaways, 100);
    assert!(
        hwm < RSS_BOUND_KIB,
        "peak RSS {hwm} KiB over {RSS_BOUND_KIB} KiB"
    );
    assert!(good_batches >= 10, "the good shipper was starved");
    assert!(slowest < Duration::from_secs(5), "good batches stalled");

    // Counted by edge and reason.
    for reason in [
        "too_large",
        "impossible_ratio",
        "bad_record",
        "unsupported_version",
    ] {
        let series = format!(
            "sluice_ingest_batches_rejected_total{{edge=\"edge-evil\",reason=\"{reason}\"}}"
        );
        assert!(ingest.metric(&series).await >= 1.0, "{series}");
    }
    for reason in ["too_large", "crc"] {
        let series =
            format!("sluice_ingest_frame_errors_total{{edge=\"edge-evil\",reason=\"{reason}\"}}");
        assert!(ingest.metric(&series).await >= 1.0, "{series}");
    }
    // Nothing of the attacker's reached Kafka.
    let stored = broker.batches(&ingest.topic, good_batches as usize);
    assert!(stored.iter().all(|(edge, _)| edge == "edge-good"));
}

#[tokio::test]
#[ignore = "needs tansu (./deploy/dev test)"]
async fn a_stopped_broker_gets_retryable_nacks_and_never_an_ack() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let mut broker = Broker::start(dir.path());
    let ingest = Ingest::start(dir.path(), &pki, &broker, "", "");
    let client = pki.client("edge-patient", Validity::Current);
    let epoch = epoch();
    let id = |seq| BatchId { epoch, seq };
    let mut conn = shipper(ingest.addr, &client).await;
    let mut acked = Vec::new();
    for seq in 1..=5 {
        conn.send(Frame::Batch(batch(id(seq), 10))).await.unwrap();
        assert_eq!(next_frame(&mut conn).await, Some(Frame::Ack(id(seq))));
        acked.push(id(seq));
    }

    broker.kill();
    for seq in 6..=10 {
        conn.send(Frame::Batch(batch(id(seq), 10))).await.unwrap();
    }
    let mut answers = Answers::default();
    while answers.acked.len() + answers.nacked.len() < 5 {
        answers.record(next_frame(&mut conn).await.expect("ingest hung up"));
    }
    assert!(
        answers.acked.is_empty(),
        "ACKed while the broker was down: {answers:?}"
    );
    assert!(
        answers.nacked.iter().all(|(_, retryable, _)| *retryable),
        "{answers:?}"
    );
    println!("broker down: {:?}", answers.nacked.first());
    let (status, body) = ingest.http("/ready").await;
    assert_eq!(status, 503, "/ready with the broker down: {body}");

    broker.resume();
    // The shipper resends what was NACKed until it is ACKed.
    let mut owed: Vec<BatchId> = answers.nacked.iter().map(|(id, ..)| *id).collect();
    let deadline = Instant::now() + support::PATIENCE;
    while !owed.is_empty() {
        assert!(
            Instant::now() < deadline,
            "still NACKed after the broker came back; ingest's log:\n{}\nthe broker's log:\n{}",
            ingest.log(),
            broker.log()
        );
        for id in &owed {
            conn.send(Frame::Batch(batch(*id, 10))).await.unwrap();
        }
        let mut answers = Answers::default();
        while answers.acked.len() + answers.nacked.len() < owed.len() {
            answers.record(next_frame(&mut conn).await.expect("ingest hung up"));
        }
        acked.extend(&answers.acked);
        owed = answers.nacked.iter().map(|(id, ..)| *id).collect();
        if !owed.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let deadline = Instant::now() + support::PATIENCE;
    loop {
        let (status, body) = ingest.http("/ready").await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/ready after the broker came back: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let stored: HashSet<BatchId> = broker
        .batches(&ingest.topic, acked.len())
        .into_iter()
        .map(|(edge, id)| {
            assert_eq!(edge, "edge-patient");
            id
        })
        .collect();
    for id in &acked {
        assert!(stored.contains(id), "ACKed {id:?} is not in Kafka");
    }
    assert_eq!(acked.len(), 10);
}

#[tokio::test]
#[ignore = "needs tansu (./deploy/dev test)"]
async fn sigterm_under_load_answers_every_batch_it_read() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let broker = Broker::start(dir.path());
    let port = support::free_port();
    let mut ingest = Ingest::start_on(dir.path(), &pki, &broker, port, "", "");
    let client = pki.client("edge-busy", Validity::Current);
    let epoch = epoch();
    let conn = shipper(ingest.addr, &client).await;
    let (mut tx, mut rx) = conn.split();

    // Send as fast as ingest takes them, never more than the window
    // unanswered, as a shipper does; read answers on another task.
    let window = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    let reader = tokio::spawn({
        let window = window.clone();
        async move {
            let mut answers = Answers::default();
            while let Ok(Some(Ok(frame))) = tokio::time::timeout(support::PATIENCE, rx.next()).await
            {
                answers.record(frame);
                window.add_permits(1);
            }
            window.close();
            answers
        }
    });
    let sent_before_term = 1_000;
    let mut sent = Vec::new();
    for seq in 1.. {
        let Ok(permit) = window.acquire().await else {
            break; // the connection ended
        };
        permit.forget();
        let id = BatchId { epoch, seq };
        if tx.send(Frame::Batch(batch(id, 20))).await.is_err() {
            break;
        }
        sent.push(id);
        if seq == sent_before_term {
            support::signal(ingest.pid(), "TERM");
        }
    }
    let answers = reader.await.unwrap();
    let (status, took) = ingest.terminate(Duration::from_secs(20));
    assert!(status.success(), "ingest exited with {status}");
    assert_eq!(answers.goaway.as_deref(), Some("shutting down"));

    let acked: HashSet<BatchId> = answers.acked.iter().copied().collect();
    let nacked: HashSet<BatchId> = answers.nacked.iter().map(|(id, ..)| *id).collect();
    assert!(
        answers.nacked.iter().all(|(_, retryable, _)| *retryable),
        "{:?}",
        answers.nacked
    );
    let unanswered: Vec<BatchId> = sent
        .iter()
        .filter(|id| !acked.contains(id) && !nacked.contains(id))
        .copied()
        .collect();
    println!(
        "sent {}, ACKed {}, NACKed {}, unanswered {}; ingest exited {took:?} after SIGTERM",
        sent.len(),
        acked.len(),
        nacked.len(),
        unanswered.len()
    );
    assert!(acked.len() >= sent_before_term as usize - 64);

    // Unanswered means never read: none of them is in Kafka, every ACKed
    // one is, exactly once.
    let stored = tally(
        broker
            .batches(&ingest.topic, acked.len())
            .into_iter()
            .map(|(_, id)| id),
    );
    for id in &acked {
        assert_eq!(stored.get(id), Some(&1), "ACKed {id:?} in Kafka");
    }
    for id in &unanswered {
        assert!(!stored.contains_key(id), "unanswered {id:?} is in Kafka");
    }

    // The shipper resends only the NACKed and the unanswered, to a new
    // ingest; then everything is there, and what was ACKed is still there
    // once.
    let ingest = Ingest::start_on(dir.path(), &pki, &broker, port, "", "");
    let mut conn = shipper(ingest.addr, &client).await;
    let resend: Vec<BatchId> = nacked.iter().chain(&unanswered).copied().collect();
    for chunk in resend.chunks(32) {
        for id in chunk {
            conn.send(Frame::Batch(batch(*id, 20))).await.unwrap();
        }
        let mut answers = Answers::default();
        while answers.acked.len() < chunk.len() {
            answers.record(next_frame(&mut conn).await.expect("ingest hung up"));
            assert!(answers.nacked.is_empty(), "{:?}", answers.nacked);
        }
    }
    let stored = tally(
        broker
            .batches(&ingest.topic, sent.len())
            .into_iter()
            .map(|(_, id)| id),
    );
    for id in &sent {
        assert!(stored.contains_key(id), "{id:?} never reached Kafka");
    }
    for id in &acked {
        assert_eq!(stored[id], 1, "ACKed {id:?} stored twice");
    }
}
