//! `--metrics-addr`: a scrape of the Prometheus endpoint after reading and writing through
//! a real mount shows the counters moved.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{Mount, TestStore};

/// The body of `GET /metrics` on `port`.
fn scrape(port: u16) -> String {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The value of the sample `name{labels}` (labels as the exposition writes them).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_scrape_after_reading_and_writing_shows_the_counters_moved() {
    let store = TestStore::start();
    store.put("d/in.bin", common::pseudo_random(3 << 20, 1));
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mount = Mount::new(&store, &["--metrics-addr", &addr]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        assert!(Instant::now() < deadline, "metrics endpoint not up");
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = scrape(port);

    assert_eq!(
        std::fs::read(mount.join("d/in.bin")).unwrap().len(),
        3 << 20
    );
    std::fs::write(mount.join("d/out.txt"), "written\n").unwrap();

    let after = scrape(port);
    let moved = |series: &str| sample(&after, series) - sample(&before, series);
    let get_ok = r#"rgrid_store_requests_total{operation="GetObject",outcome="ok"}"#;
    let put_ok = r#"rgrid_store_requests_total{operation="PutObject",outcome="ok"}"#;
    assert!(moved(get_ok) >= 1.0, "{after}");
    assert!(moved(put_ok) >= 1.0, "{after}");
    let from = r#"rgrid_store_bytes_total{direction="from_store"}"#;
    assert!(moved(from) >= (3 << 20) as f64, "{after}");
    let to = r#"rgrid_store_bytes_total{direction="to_store"}"#;
    assert!(moved(to) >= 8.0, "{after}");
    let reads = r#"rgrid_fuse_operation_seconds_count{operation="read"}"#;
    assert!(moved(reads) >= 1.0, "{after}");
    let committed = r#"rgrid_uploads_total{outcome="committed"}"#;
    assert!(moved(committed) >= 1.0, "{after}");
    assert!(
        after.contains("# TYPE rgrid_fuse_operation_seconds histogram"),
        "{after}"
    );
}
