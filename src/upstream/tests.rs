//! The upstream client against a socket served by the test: the pool's sweep across workers, a
//! large body read straight into its buffer, and whole bodies read within a limit.

use super::*;

/// A client of the plain HTTP upstream at `addr`, with 5 s timeouts.
fn client_of(addr: std::net::SocketAddr) -> Arc<UpstreamClient> {
    let second = Duration::from_secs(5);
    let settings = UpstreamSettings {
        base_url: format!("http://{addr}"),
        connect_timeout: second,
        response_timeout: second,
        idle_timeout: second,
        ca_file: None,
        health: HealthPolicy::default(),
    };
    Arc::new(UpstreamClient::new(&settings).unwrap())
}

/// A body far larger than the read buffer, arriving in pieces, read the way the relay reads one
/// (into a buffer presized from content-length): it arrives whole, and the connection goes back to
/// the pool for the next request. A body cut short is an error, not a short answer.
#[test]
fn a_large_body_is_read_straight_into_its_buffer_whole_or_not_at_all() {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let sent = body.clone();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        for cut_short in [false, false, true] {
            let mut head = [0u8; 1024];
            let mut got = 0;
            while !head[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                got += std::io::Read::read(&mut s, &mut head[got..]).unwrap();
            }
            let length = if cut_short { sent.len() * 2 } else { sent.len() };
            s.write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {length}\r\n\r\n").as_bytes()).unwrap();
            for piece in sent.chunks(70_000) {
                s.write_all(piece).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
    let client = client_of(addr);
    for _ in 0..2 {
        let mut response = client.request("GET", "/big", "", &[], SendBody::Bytes(b"")).unwrap();
        let mut read = Vec::with_capacity(body.len());
        response.body.read_whole(&mut read, 1 << 20).unwrap();
        assert!(read == body, "{} bytes read of {}", read.len(), body.len());
    }
    let mut response = client.request("GET", "/big", "", &[], SendBody::Bytes(b"")).unwrap();
    let mut read = Vec::with_capacity(2 * body.len());
    let cut = response.body.read_whole(&mut read, 1 << 20).unwrap_err();
    assert_eq!((cut.kind(), read.len()), (io::ErrorKind::UnexpectedEof, body.len()));
    server.join().unwrap();
}

/// Whole bodies read within a limit, as the relay reads an answer: one that came with its head, one
/// that comes after it, chunked ones; a body of exactly the limit is whole, one byte more an error.
#[test]
fn a_whole_body_is_read_within_its_limit_however_it_is_framed_and_sent() {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // (head, body sent in a second write after a pause) per request, in order, over any connections.
    let script: Vec<(&str, &[u8])> = vec![
        ("content-length: 10\r\n\r\n0123456789", b""),
        ("content-length: 10\r\n\r\n", b"0123456789"),
        ("content-length: 11\r\n\r\n01234567890", b""),
        ("transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n", b"5\r\n worl\r\n0\r\n\r\n"),
        ("transfer-encoding: chunked\r\n\r\n6\r\nhello,\r\n5\r\n worl\r\n0\r\n\r\n", b""),
    ];
    let script = Arc::new(parking_lot::Mutex::new(std::collections::VecDeque::from(script)));
    let served = script.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let (mut s, script) = (s.unwrap(), served.clone());
            std::thread::spawn(move || loop {
                let mut head = [0u8; 1024];
                let mut got = 0;
                while !head[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                    match std::io::Read::read(&mut s, &mut head[got..]) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got += n,
                    }
                }
                let Some((first, later)) = script.lock().pop_front() else { return };
                s.write_all(format!("HTTP/1.1 200 OK\r\n{first}").as_bytes()).unwrap();
                if !later.is_empty() {
                    std::thread::sleep(Duration::from_millis(30));
                    s.write_all(later).unwrap();
                }
            });
        }
    });
    let client = client_of(addr);
    let read = |limit: u64| {
        let mut response = client.request("GET", "/", "", &[], SendBody::Bytes(b"")).unwrap();
        let mut out = Vec::new();
        response.body.read_whole(&mut out, limit).map(|()| String::from_utf8(out).unwrap()).map_err(|e| e.to_string())
    };
    assert_eq!(read(10).unwrap(), "0123456789", "with the head");
    assert_eq!(read(10).unwrap(), "0123456789", "after the head");
    assert_eq!(read(10).unwrap_err(), "the upstream body exceeds 10 bytes");
    assert_eq!(read(10).unwrap(), "hello worl", "chunked, exactly the limit");
    assert_eq!(read(10).unwrap_err(), "the upstream body exceeds 10 bytes");
}

#[test]
fn a_checkin_sweeps_the_other_workers_expired_connections_now_and_then() {
    affinity::set_workers(2);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let second = Duration::from_secs(1);
    let client = UpstreamClient::new(&UpstreamSettings {
        base_url: format!("http://{}", listener.local_addr().unwrap()),
        connect_timeout: second,
        response_timeout: second,
        idle_timeout: second,
        ca_file: None,
        health: HealthPolicy::default(),
    })
    .unwrap();
    // Connections until there is one on each worker (outside a client connection none is moved).
    let (mut on0, mut on1) = (Vec::new(), Vec::new());
    while on0.len() < 2 || on1.is_empty() {
        let conn = client.connect(None).unwrap();
        if affinity::of_fd(conn.fd) == 0 {
            on0.push(conn)
        } else {
            on1.push(conn)
        }
    }
    let long_ago = crate::clock::coarse_millis() - 2 * POOL_IDLE_MS;
    client.idle[0].lock().push((on0.pop().unwrap(), long_ago));
    client.checkin(on1.pop().unwrap());
    assert!(client.idle[0].lock().is_empty(), "worker 0's expired connection is swept by a checkin on worker 1");
    assert_eq!(client.idle[1].lock().len(), 1);
    // Not at every checkin: the next sweep is POOL_SWEEP_MS away.
    client.idle[0].lock().push((on0.pop().unwrap(), long_ago));
    let again = client.idle[1].lock().pop().unwrap().0;
    client.checkin(again);
    assert_eq!(client.idle[0].lock().len(), 1);
}
