use super::*;

fn head(raw: &str) -> Result<Option<(RequestHead, usize)>, HeadError> {
    parse_head(raw.as_bytes(), 64 * 1024, 100)
}

fn refused(raw: &str) -> HeadError {
    head(raw).map(|h| h.map(|(h, _)| h.target().to_string())).unwrap_err()
}

#[test]
fn parses_method_path_and_headers() {
    let raw = "POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello";
    let (h, len) = head(raw).unwrap().unwrap();
    assert_eq!(len, raw.len() - 5);
    assert_eq!(h.method(), "POST");
    assert_eq!(h.path(), "/v1/chat/completions");
    assert_eq!(h.header("x-a"), Some("b"));
    assert_eq!(h.body_framing().unwrap(), BodyFraming::Length(5));
    assert!(h.keep_alive());
}

#[test]
fn a_head_with_a_value_that_is_not_utf8_reads_as_before() {
    // obs-text (RFC 9110 §5.5) in one value: that value is not text; everything else still is.
    let raw = b"GET /v1/models?x=1 HTTP/1.1\r\nHost: a\r\nX-Name: caf\xe9\r\nX-A:  b \r\n\r\n";
    let (h, _) = parse_head(raw, 64 * 1024, 100).unwrap().unwrap();
    assert_eq!((h.method(), h.path(), h.target()), ("GET", "/v1/models", "/v1/models?x=1"));
    assert_eq!(h.header("x-name"), None);
    assert_eq!(h.header("x-a"), Some("b"));
    let headers: Vec<(&str, &[u8])> = h.headers().collect();
    assert_eq!(headers, [("Host", &b"a"[..]), ("X-Name", b"caf\xe9"), ("X-A", b"b")]);
    // The text headers leave out the value that is not text.
    assert_eq!(h.text_headers().collect::<Vec<_>>(), [("Host", "a"), ("X-A", "b")]);
    // The same head in plain text reads the same through the text path.
    let (t, _) = head("GET /v1/models?x=1 HTTP/1.1\r\nHost: a\r\nX-Name: cafe\r\nX-A:  b \r\n\r\n").unwrap().unwrap();
    assert_eq!(
        (t.method(), t.path(), t.header("x-name"), t.header("X-A")),
        ("GET", "/v1/models", Some("cafe"), Some("b"))
    );
    assert_eq!(t.text_headers().collect::<Vec<_>>(), [("Host", "a"), ("X-Name", "cafe"), ("X-A", "b")]);
}

#[test]
fn incomplete_head_asks_for_more_until_the_limit() {
    assert!(head("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
    let long_line = format!("GET /{} HTTP/1.1\r\n", "a".repeat(300));
    assert_eq!(parse_head(long_line.as_bytes(), 256, 100).unwrap_err(), HeadError::UriTooLong);
    let many = format!("GET / HTTP/1.1\r\n{}", "X-Y: z\r\n".repeat(60));
    assert_eq!(parse_head(many.as_bytes(), 256, 100).unwrap_err(), HeadError::HeadersTooLarge);
    let count = format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", "X-Y: z\r\n".repeat(11));
    assert_eq!(parse_head(count.as_bytes(), 4096, 10).unwrap_err(), HeadError::HeadersTooLarge);
}

#[test]
fn ambiguous_framing_is_refused() {
    let bad = [
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    ];
    for raw in bad {
        let (h, _) = head(raw).unwrap().unwrap();
        assert_eq!(h.body_framing().unwrap_err().status(), 400, "{raw}");
    }
    let (h, _) = head("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").unwrap().unwrap();
    assert_eq!(h.body_framing().unwrap_err().status(), 501);
    assert_eq!(refused("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n").status(), 400, "obs-fold");
}

#[test]
fn http10_closes_unless_keep_alive() {
    let (h, _) = head("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
    assert!(!h.keep_alive());
    let (h, _) = head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap().unwrap();
    assert!(h.keep_alive());
    let (h, _) = head("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap().unwrap();
    assert!(!h.keep_alive());
}

#[test]
fn host_is_required_once_and_valid_on_http11() {
    assert_eq!(refused("GET / HTTP/1.1\r\n\r\n"), HeadError::Malformed("missing Host header"));
    assert_eq!(
        refused("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"),
        HeadError::Malformed("more than one Host header")
    );
    assert_eq!(refused("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n").status(), 400);
    for bad in ["x/?", "a b", "u@evil.example", "evil#x", "a:b:c", "[::1", "[zz]", "a:99999999", "a%zz", "a\\b"] {
        assert_eq!(
            refused(&format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n")),
            HeadError::Malformed("invalid Host header"),
            "{bad}"
        );
    }
    for good in ["", "a", "api.example.com:8443", "127.0.0.1", "[::1]:80", "[v1.x]", "xn--bcher-kva.example", "a%41"] {
        assert!(head(&format!("GET / HTTP/1.1\r\nHost: {good}\r\n\r\n")).unwrap().is_some(), "{good}");
    }
    assert!(head("GET / HTTP/1.0\r\n\r\n").unwrap().is_some(), "HTTP/1.0 needs no Host");
}

#[test]
fn bare_lf_line_endings_are_refused() {
    assert_eq!(refused("GET / HTTP/1.1\nHost: a\r\n\r\n"), BARE_LF);
    assert_eq!(refused("GET / HTTP/1.1\r\nHost: a\n\r\n"), BARE_LF);
    assert_eq!(refused("GET / HTTP/1.1\r\nHost: a\r\n\n"), BARE_LF);
    assert_eq!(refused("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), BARE_LF);
    assert_eq!(parse_head(b"GET / HTTP/1.1\nHost", 1024, 10).unwrap_err(), BARE_LF, "even before the head is complete");
}

#[test]
fn a_bare_lf_is_found_sixteen_bytes_at_a_time_as_memchr_finds_it() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed = crate::router::xorshift(seed);
        seed
    };
    for _ in 0..20_000 {
        // CRs, LFs and CRLFs at every offset, across and at the edges of sixteen-byte blocks.
        let len = (next() % 70) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| match next() % 6 {
                0 => b'\n',
                1 | 2 => b'\r',
                _ => b'a',
            })
            .collect();
        assert_eq!(has_bare_lf(&bytes), bare_lf_by_memchr(&bytes), "{bytes:?}");
        let mut fixed: Vec<u8> = Vec::new();
        for &c in &bytes {
            if c == b'\n' && fixed.last() != Some(&b'\r') {
                fixed.push(b'\r');
            }
            fixed.push(c);
        }
        assert!(!has_bare_lf(&fixed), "{fixed:?}");
    }
}

#[test]
fn absolute_form_targets_are_accepted_with_a_valid_authority() {
    let (h, _) = head("POST http://gw.example:8080/v1/chat/completions?x=1 HTTP/1.1\r\nHost: gw.example:8080\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(h.path(), "/v1/chat/completions");
    assert_eq!(h.target(), "http://gw.example:8080/v1/chat/completions?x=1");
    let (h, _) = head("GET HTTPS://gw HTTP/1.1\r\nHost: gw\r\n\r\n").unwrap().unwrap();
    assert_eq!(h.path(), "/");
    for bad in [
        "POST http://u@evil.example/v1/chat/completions HTTP/1.1",
        "POST http:///v1/chat/completions HTTP/1.1",
        "POST ftp://gw/v1/chat/completions HTTP/1.1",
        "POST v1/chat/completions HTTP/1.1",
        "POST /v1/chat/completions#frag HTTP/1.1",
        "GET * HTTP/1.1",
        "GET /caf\u{e9} HTTP/1.1",
        "GET h\u{e9}ttp://x/ HTTP/1.1",
    ] {
        assert_eq!(refused(&format!("{bad}\r\nHost: gw\r\n\r\n")).status(), 400, "{bad}");
    }
    assert!(head("OPTIONS * HTTP/1.1\r\nHost: gw\r\n\r\n").unwrap().is_some());
}

fn limits() -> Limits {
    Limits { max_head_bytes: 4096, max_headers: 20, max_body_bytes: 16 }
}

#[test]
fn frame_requests_gives_each_pipelined_request_its_body() {
    let wire = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcPOST /b HTTP/1.1\r\nHost: h\r\n\
                 Transfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n0\r\nT: 1\r\n\r\nGET /c HTTP/1.1\r\nHost: h\r\n\r\n";
    let framed = frame_requests(wire, &limits()).unwrap();
    let got: Vec<(&str, &[u8])> = framed.iter().map(|f| (f.head.path(), &f.body[..])).collect();
    assert_eq!(got, [("/a", &b"abc"[..]), ("/b", b"xy"), ("/c", b"")]);
}

#[test]
fn frame_requests_stops_at_the_first_refusal_or_a_close() {
    let wire = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\nHost: h\r\n\r\n";
    let e = frame_requests(wire, &limits()).unwrap_err();
    assert_eq!(e.framed.len(), 1);
    assert_eq!(e.stop, FrameStop::Refused(HeadError::Malformed("missing Host header")));
    let wire = b"GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nnot even HTTP";
    assert_eq!(frame_requests(wire, &limits()).unwrap().len(), 1);
    let e = frame_requests(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 17\r\n\r\n", &limits()).unwrap_err();
    assert!(matches!(e.stop, FrameStop::Refused(HeadError::BodyTooLarge { length: Some(17), limit: 16 })));
    let e = frame_requests(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab", &limits()).unwrap_err();
    assert_eq!(e.stop, FrameStop::Incomplete);
    let chunked = b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n11\r\n";
    let e = frame_requests(chunked, &limits()).unwrap_err();
    assert_eq!(e.stop, FrameStop::Refused(HeadError::BodyTooLarge { length: None, limit: 16 }));
}

#[test]
fn header_names_compare_in_any_case_a_word_at_a_time() {
    for name in ["content-length", "Content-Length", "CONTENT-LENGTH", "x-request-id", "X-Request-ID", "te", "Te"] {
        let lower = name.to_ascii_lowercase();
        assert!(name_is(name.as_bytes(), lower.as_bytes()), "{name}");
    }
    // Every token byte against every lower-case name byte: equal exactly when eq_ignore_ascii_case says so.
    let tchars = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    for &l in b"-0123456789abcdefghijklmnopqrstuvwxyz" {
        for &t in tchars {
            // In the tail and in a full word of eight.
            for len in [1, 8, 9] {
                let (mut name, lower) = (vec![l; len], vec![l; len]);
                name[len - 1] = t;
                assert_eq!(name_is(&name, &lower), name.eq_ignore_ascii_case(&lower), "{t} vs {l} at {len}");
            }
        }
    }
    assert!(!name_is(b"content-lengt", b"content-length"));
    assert!(!name_is(b"content-lengths", b"content-length"));
    assert!(is_lower_name(b"x-request-id") && !is_lower_name(b"X-Request-Id") && !is_lower_name(b"a_b"));
}
