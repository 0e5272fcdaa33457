use super::*;
use std::sync::atomic::AtomicUsize;

const LINE: &str =
    r#"127.0.0.1 - - [22/Nov/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "curl/8""#;

#[test]
fn the_header_nginx_writes_is_stripped() {
    let cases: [(String, Option<&str>); 10] = [
        (
            format!("<190>Nov 22 10:00:00 edge-1 nginx: {LINE}"),
            Some(LINE),
        ),
        // `nohostname`, and a one-digit day padded with a space.
        (format!("<190>Nov  2 10:00:00 nginx: {LINE}"), Some(LINE)),
        (
            format!("<13>Jan 01 00:00:00 host my_tag: {LINE}\n"),
            Some(LINE),
        ),
        ("<190>Nov 22 10:00:00 host nginx: ".into(), Some("")),
        (LINE.into(), None),
        ("<190>garbage".into(), None),
        ("<>Nov 22 10:00:00 host nginx: x".into(), None),
        ("<1900>Nov 22 10:00:00 host nginx: x".into(), None),
        ("<190>Nov 22 10:00:00 host nginx x".into(), None),
        ("<190>Nov 22 10:00:00".into(), None),
    ];
    for (datagram, want) in cases {
        let got = message_span(datagram.as_bytes()).map(|span| &datagram[span]);
        assert_eq!(got, want, "{datagram:?}");
    }
}

struct Woken(Arc<AtomicUsize>);

fn wake() -> (Wake, Woken) {
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    let wake: Wake = Arc::new(move || {
        counted.fetch_add(1, Ordering::Relaxed);
    });
    (wake, Woken(count))
}

/// The next message, waiting up to 5 s: (line, problem, seq, source).
fn next(input: &mut SyslogInput) -> (Vec<u8>, Option<Malformed>, u64, PathBuf) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some(m) = input.next_message() {
            return (m.line.to_vec(), m.problem, m.seq, m.source.to_owned());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("no datagram within 5 s");
}

fn counter(
    family: &prometheus_client::metrics::family::Family<InputLabel, Counter>,
    input: &'static str,
) -> u64 {
    family.get_or_create(&InputLabel { input }).get()
}

#[test]
fn a_unix_socket_receives_nginx_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nginx.sock");
    let metrics = Metrics::new();
    let (wake, woken) = wake();
    let mut input = SyslogInput::start(Some(&path), None, &metrics, wake).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660);

    let nginx = UnixDatagram::unbound().unwrap();
    let send = |bytes: &[u8]| nginx.send_to(bytes, &path).unwrap();
    send(format!("<190>Nov 22 10:00:00 edge nginx: {LINE}").as_bytes());
    let (line, problem, seq, source) = next(&mut input);
    assert_eq!((line.as_slice(), problem, seq), (LINE.as_bytes(), None, 1));
    assert_eq!(
        source,
        PathBuf::from(format!("syslog:unix:{}", path.display()))
    );
    assert!(
        woken.0.load(Ordering::Relaxed) >= 1,
        "the pipeline is woken"
    );

    send(&vec![b'x'; MAX_DATAGRAM + 100]);
    let (line, problem, seq, _) = next(&mut input);
    assert_eq!(
        (line.len(), problem, seq),
        (EXCERPT, Some(Malformed::TooLong), 2)
    );
    send(b"no header here");
    let (line, problem, _, _) = next(&mut input);
    assert_eq!(
        (line.as_slice(), problem),
        (&b"no header here"[..], Some(Malformed::SyslogHeader))
    );
    assert!(input.next_message().is_none());
    assert_eq!(counter(&metrics.syslog_datagrams, "unix"), 3);
    assert_eq!(counter(&metrics.syslog_oversized, "unix"), 1);

    drop(input);
    assert!(!path.exists(), "the socket is removed when the input stops");
}

#[test]
fn a_stale_socket_is_replaced_and_a_file_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nginx.sock");
    drop(UnixDatagram::bind(&path).unwrap());
    assert!(path.exists());
    let metrics = Metrics::new();
    let input = SyslogInput::start(Some(&path), None, &metrics, wake().0).unwrap();
    drop(input);

    std::fs::write(&path, "a file").unwrap();
    let err = SyslogInput::start(Some(&path), None, &metrics, wake().0).unwrap_err();
    assert!(matches!(err, SyslogError::NotASocket(_)), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "a file");
    let missing = dir.path().join("no/such/dir/nginx.sock");
    let err = SyslogInput::start(Some(&missing), None, &metrics, wake().0).unwrap_err();
    assert!(err.to_string().contains("input.syslog_unix"), "{err}");
}

#[test]
fn udp_receives_nginx_lines() {
    let metrics = Metrics::new();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut input = SyslogInput::start(None, Some(addr), &metrics, wake().0).unwrap();
    let bound = input.udp_addr().unwrap();
    assert_ne!(bound.port(), 0);
    let nginx = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..3 {
        let datagram = format!("<190>Nov 22 10:00:0{i} nginx: {LINE} {i}");
        nginx.send_to(datagram.as_bytes(), bound).unwrap();
    }
    for i in 0..3 {
        let (line, problem, seq, source) = next(&mut input);
        assert_eq!(line, format!("{LINE} {i}").into_bytes());
        assert_eq!((problem, seq), (None, i + 1));
        assert_eq!(source, PathBuf::from(format!("syslog:udp:{bound}")));
    }
    assert_eq!(counter(&metrics.syslog_datagrams, "udp"), 3);
    let err = SyslogInput::start(None, Some(bound), &metrics, wake().0).unwrap_err();
    assert!(err.to_string().contains("input.syslog_udp"), "{err}");
}

#[test]
fn a_full_queue_leaves_the_rest_to_the_kernel_which_drops_and_is_counted() {
    const QUEUE: usize = 64 << 10;
    const SENT: u64 = 3000;
    let metrics = Metrics::new();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut input =
        SyslogInput::start_with_queue(None, Some(addr), &metrics, wake().0, QUEUE).unwrap();
    let nginx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let datagram = format!("<190>Nov 22 10:00:00 nginx: {}", "y".repeat(1000));
    for _ in 0..SENT {
        nginx
            .send_to(datagram.as_bytes(), input.udp_addr().unwrap())
            .unwrap();
    }
    // Nothing is taken: the queue stays within its bound, the kernel drops.
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter(&metrics.syslog_kernel_drops, "udp") == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(input.queued_bytes() <= QUEUE, "{}", input.queued_bytes());
    let drops = counter(&metrics.syslog_kernel_drops, "udp");
    assert!(drops > 0, "the kernel should have dropped some of {SENT}");

    // Taking everything: what was received plus what was dropped is what was sent.
    let mut taken = 0u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        while input.next_message().is_some() {
            taken += 1;
        }
        let received = counter(&metrics.syslog_datagrams, "udp");
        let drops = counter(&metrics.syslog_kernel_drops, "udp");
        if taken == received && received + drops == SENT {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let received = counter(&metrics.syslog_datagrams, "udp");
    let drops = counter(&metrics.syslog_kernel_drops, "udp");
    assert_eq!((taken, received + drops), (received, SENT));
}
