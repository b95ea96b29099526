//! Our request framing (`http1::frame_requests`, the steps the connection loop runs) against h11, an
//! independent HTTP/1.1 parser (tests/sdk/h11_frame.py, in the SDK virtualenv), over a generated corpus:
//! valid requests, hostile ones, pipelined pairs of them and truncations. On every case of the
//! `Same` relation both must frame the same requests (method, target, body bytes) and end the same
//! way (all consumed / waiting for more / refused).
//!
//! Where we are deliberately stricter than h11 (we are a proxy: a message two parsers could frame
//! differently is refused), the case names its class and we must refuse it; h11 may accept. Where
//! the RFC lets a server accept what h11 refuses, the case names that class too and we must accept it,
//! framing at least what h11 framed.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use switchyard::server::http1::{frame_requests, FrameStop, Limits};

/// How our framing must relate to h11's on a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Relation {
    /// The same requests, bodies and end.
    Same,
    /// We refuse (h11 may accept): one of the classes where a proxy must be strict.
    Stricter(&'static str),
    /// We accept what the RFC lets a server accept and h11 does not.
    Laxer(&'static str),
}

/// The classes where we are deliberately stricter than h11.
const STRICTER: &[&str] = &[
    "bare LF line endings",
    "obs-fold",
    "whitespace or garbage after a chunk size",
    "empty or malformed chunk extensions",
    "NUL in a chunk extension",
    "invalid Host values",
    "invalid request targets (userinfo, fragment, relative, non-ASCII)",
    "Transfer-Encoding in HTTP/1.0",
    "empty Transfer-Encoding",
    "invalid trailer fields",
    "both Content-Length and Transfer-Encoding (RFC 9112 §6.1 lets a server refuse it)",
    "versions other than HTTP/1.0 and HTTP/1.1",
];

/// The classes where we accept what h11 refuses, as RFC 9112 allows.
const LAXER: &[&str] = &[
    "an empty line before the request line (RFC 9112 §2.2: a server SHOULD ignore it)",
    "HTTP/1.0 keep-alive (h11 closes every HTTP/1.0 connection)",
    "whitespace before a chunk extension's semicolon (BWS in RFC 9112 §7.1.1)",
];

#[derive(Clone)]
struct Piece {
    name: String,
    wire: Vec<u8>,
    relation: Relation,
    /// A valid request after which the connection stays open (usable as the first of a pair).
    reusable: bool,
}

/// A hostile or unusual piece (not used as the first of a pair, nor truncated).
fn piece(name: &str, wire: impl AsRef<[u8]>, relation: Relation) -> Piece {
    Piece { name: name.into(), wire: wire.as_ref().to_vec(), relation, reusable: false }
}

/// A valid request after which the connection stays open.
fn valid(name: &str, wire: impl AsRef<[u8]>) -> Piece {
    Piece { reusable: true, ..piece(name, wire, Relation::Same) }
}

fn post_cl(head: &str, body: &[u8]) -> Vec<u8> {
    let mut w =
        format!("POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n{head}Content-Length: {}\r\n\r\n", body.len())
            .into_bytes();
    w.extend_from_slice(body);
    w
}

/// A POST of `body` whose Content-Length header value is `value` (`{n}` stands for the body's length).
fn post_with_cl(value: &str, body: &[u8]) -> Vec<u8> {
    let value = value.replace("{n}", &body.len().to_string());
    let mut w =
        format!("POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: {value}\r\n\r\n").into_bytes();
    w.extend_from_slice(body);
    w
}

fn post_chunked(head: &str, chunks: &str) -> String {
    format!("POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n{head}Transfer-Encoding: chunked\r\n\r\n{chunks}")
}

fn pieces() -> Vec<Piece> {
    use Relation::*;
    let json = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    let binary: Vec<u8> = (0..=255u8).collect();
    let long = format!(r#"{{"model":"m","input":"{}"}}"#, "x".repeat(3000));
    vec![
        // Valid: both frame them the same.
        valid("GET /", "GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        valid("GET with query", "GET /v1/models?x=1&y=%20 HTTP/1.1\r\nHost: gw.example:8080\r\nAccept: */*\r\n\r\n"),
        valid("POST Content-Length", post_cl("", json)),
        valid("POST empty body", post_cl("", b"")),
        valid("POST binary body", post_cl("Content-Type: application/octet-stream\r\n", &binary)),
        valid("POST 3 KB body", post_cl("", long.as_bytes())),
        valid("Content-Length twice, same value", post_with_cl("{n}\r\nContent-Length: {n}", json)),
        valid("Content-Length list, same value", post_with_cl("{n}, {n}", json)),
        valid("Content-Length with OWS", post_with_cl("  {n}  ", json)),
        valid("Content-Length with leading zeros", post_with_cl("00{n}", json)),
        valid("chunked, one chunk", post_chunked("", "5\r\nhello\r\n0\r\n\r\n")),
        valid("chunked, three chunks", post_chunked("", "1\r\na\r\n2\r\nbc\r\n3\r\ndef\r\n0\r\n\r\n")),
        valid("chunked, upper-case hex", post_chunked("", &format!("1A\r\n{}\r\n0\r\n\r\n", "z".repeat(26)))),
        valid("chunked, leading zeros", post_chunked("", "0005\r\nhello\r\n000\r\n\r\n")),
        valid("chunked, extension", post_chunked("", "5;a=b\r\nhello\r\n0;last\r\n\r\n")),
        valid("chunked, quoted extension", post_chunked("", "5;a=\"x y\"\r\nhello\r\n0\r\n\r\n")),
        valid("chunked, trailers", post_chunked("", "5\r\nhello\r\n0\r\nX-T: 1\r\nX-U: two words\r\n\r\n")),
        valid("Transfer-Encoding: Chunked", post_chunked("", "5\r\nhello\r\n0\r\n\r\n").replace("chunked", "Chunked")),
        valid("absolute-form target", "GET http://gw/v1/models HTTP/1.1\r\nHost: gw\r\n\r\n"),
        valid("tabs around a header value", "GET / HTTP/1.1\r\nHost: a\r\nX-A:\tb c\t\r\n\r\n"),
        valid("Expect: 100-continue", post_cl("Expect: 100-continue\r\n", json)),
        valid("Content-Length: 0", post_cl("", b"")),
        piece("HTTP/1.0 closes", "GET / HTTP/1.0\r\n\r\ntrailing bytes", Same),
        piece("Connection: close", "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGARBAGE", Same),
        // Hostile: both refuse.
        piece(
            "Content-Length and Transfer-Encoding",
            post_cl("Transfer-Encoding: chunked\r\n", json),
            Stricter(STRICTER[10]),
        ),
        piece("Transfer-Encoding: gzip", post_chunked("", "").replace("chunked", "gzip"), Same),
        piece(
            "Transfer-Encoding: gzip, chunked",
            post_chunked("", "5\r\nhello\r\n0\r\n\r\n").replace("chunked\r\n\r\n", "gzip, chunked\r\n\r\n"),
            Same,
        ),
        piece("two different Content-Lengths", post_cl("Content-Length: 5\r\n", json), Same),
        piece("Content-Length list that disagrees", post_with_cl("{n}, 64", json), Same),
        piece("Content-Length: abc", post_with_cl("abc", json), Same),
        piece("Content-Length: -1", post_with_cl("-1", json), Same),
        piece("no Host", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", Same),
        piece("two identical Host lines", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", Same),
        piece("two different Host lines", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Same),
        piece("chunk data without its CRLF", post_chunked("", "5\r\nhelloX\r\n0\r\n\r\n"), Same),
        piece("chunk size not hex", post_chunked("", "zz\r\nhello\r\n0\r\n\r\n"), Same),
        piece("trailer without a colon", post_chunked("", "5\r\nhello\r\n0\r\nnocolon\r\n\r\n"), Same),
        piece(
            "trailer section swallowing the next request",
            post_chunked("", "5\r\nhello\r\n0\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Same,
        ),
        piece("garbage request line", "NOT A REQUEST\r\n\r\n", Same),
        piece("space in a header name", "GET / HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n", Same),
        piece("header line without a colon", "GET / HTTP/1.1\r\nHost: a\r\nXA\r\n\r\n", Same),
        piece("space before a header's colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", Same),
        piece("NUL in a header value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n", Same),
        piece("invalid method token", "G@T / HTTP/1.1\r\nHost: a\r\n\r\n", Same),
        piece("HTTP/2.0 request line", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", Stricter(STRICTER[11])),
        // Stricter: we refuse, h11 may accept.
        piece("bare LF after the request line", "GET / HTTP/1.1\nHost: a\r\n\r\n", Stricter(STRICTER[0])),
        piece("bare LF after a header", "GET / HTTP/1.1\r\nHost: a\n\r\n", Stricter(STRICTER[0])),
        piece("bare LF ending the head", "GET / HTTP/1.1\r\nHost: a\r\n\n", Stricter(STRICTER[0])),
        piece("every line ending in LF", "GET / HTTP/1.1\nHost: a\n\n", Stricter(STRICTER[0])),
        piece("chunk size line ending in LF", post_chunked("", "5\nhello\r\n0\r\n\r\n"), Stricter(STRICTER[0])),
        piece("chunked body ending in LF", post_chunked("", "5\r\nhello\r\n0\r\n\n"), Stricter(STRICTER[0])),
        piece("obs-fold in a header", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", Stricter(STRICTER[1])),
        piece(
            "obs-fold in a trailer",
            post_chunked("", "5\r\nhello\r\n0\r\nX-T: 1\r\n 2\r\n\r\n"),
            Stricter(STRICTER[1]),
        ),
        piece("space after a chunk size", post_chunked("", "5 \r\nhello\r\n0\r\n\r\n"), Stricter(STRICTER[2])),
        piece(
            "chunk size 54 5",
            post_chunked("", &format!("54 5\r\n{}\r\n0\r\n\r\n", "q".repeat(84))),
            Stricter(STRICTER[2]),
        ),
        piece("empty chunk extension", post_chunked("", "5;\r\nhello\r\n0\r\n\r\n"), Stricter(STRICTER[3])),
        piece("chunk extension without a name", post_chunked("", "5;=b\r\nhello\r\n0\r\n\r\n"), Stricter(STRICTER[3])),
        piece(
            "chunk extension with an empty value",
            post_chunked("", "5;a=\r\nhello\r\n0\r\n\r\n"),
            Stricter(STRICTER[3]),
        ),
        piece("NUL in a chunk extension", post_chunked("", "5;a\0b\r\nhello\r\n0\r\n\r\n"), Stricter(STRICTER[4])),
        piece("Host a b", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", Stricter(STRICTER[5])),
        piece("Host u@evil.example", "GET / HTTP/1.1\r\nHost: u@evil.example\r\n\r\n", Stricter(STRICTER[5])),
        piece("Host x/?", "GET / HTTP/1.1\r\nHost: x/?\r\n\r\n", Stricter(STRICTER[5])),
        piece("Host evil#x", "GET / HTTP/1.1\r\nHost: evil#x\r\n\r\n", Stricter(STRICTER[5])),
        piece(
            "userinfo in an absolute-form target",
            "GET http://u@evil/v1/models HTTP/1.1\r\nHost: gw\r\n\r\n",
            Stricter(STRICTER[6]),
        ),
        piece("fragment in the target", "GET /v1/models#x HTTP/1.1\r\nHost: gw\r\n\r\n", Stricter(STRICTER[6])),
        piece("relative target", "GET v1/models HTTP/1.1\r\nHost: gw\r\n\r\n", Stricter(STRICTER[6])),
        piece("non-ASCII target", "GET /caf\u{e9} HTTP/1.1\r\nHost: gw\r\n\r\n", Stricter(STRICTER[6])),
        piece(
            "Transfer-Encoding in HTTP/1.0",
            post_chunked("", "5\r\nhello\r\n0\r\n\r\n").replacen("HTTP/1.1", "HTTP/1.0", 1),
            Stricter(STRICTER[7]),
        ),
        piece(
            "empty Transfer-Encoding",
            post_chunked("", "").replace("chunked\r\n\r\n", "\r\n\r\n"),
            Stricter(STRICTER[8]),
        ),
        piece("NUL in a trailer", post_chunked("", "5\r\nhello\r\n0\r\nX-T: a\0b\r\n\r\n"), Stricter(STRICTER[9])),
        piece(
            "space before a trailer's colon",
            post_chunked("", "5\r\nhello\r\n0\r\nX-T : 1\r\n\r\n"),
            Stricter(STRICTER[9]),
        ),
        // Laxer: the RFC lets us accept what h11 refuses.
        piece("empty line before the request line", "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", Laxer(LAXER[0])),
        piece(
            "HTTP/1.0 keep-alive then another request",
            "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n",
            Laxer(LAXER[1]),
        ),
        piece("whitespace before a chunk extension", post_chunked("", "5 ;a=b\r\nhello\r\n0\r\n\r\n"), Laxer(LAXER[2])),
    ]
}

struct Case {
    name: String,
    wire: Vec<u8>,
    relation: Relation,
}

/// Each piece alone, each reusable valid piece followed by every piece (pipelined), and every
/// reusable valid piece cut at three points (incomplete).
fn corpus() -> Vec<Case> {
    let pieces = pieces();
    let mut cases: Vec<Case> =
        pieces.iter().map(|p| Case { name: p.name.clone(), wire: p.wire.clone(), relation: p.relation }).collect();
    let firsts: Vec<&Piece> = pieces.iter().filter(|p| p.reusable).step_by(3).collect();
    for a in &firsts {
        for b in &pieces {
            let mut wire = a.wire.clone();
            wire.extend_from_slice(&b.wire);
            cases.push(Case { name: format!("{} + {}", a.name, b.name), wire, relation: b.relation });
        }
    }
    for p in pieces.iter().filter(|p| p.reusable) {
        for cut in [p.wire.len() / 3, p.wire.len() / 2, p.wire.len() - 1] {
            cases.push(Case {
                name: format!("{} cut at {cut}", p.name),
                wire: p.wire[..cut].to_vec(),
                relation: Relation::Same,
            });
        }
    }
    cases
}

/// One framing outcome, ours or h11's.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    /// Method, target and hex body of each request framed.
    framed: Vec<(String, String, String)>,
    /// `ok`, `incomplete` or `error`.
    end: String,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn ours(wire: &[u8]) -> Outcome {
    let limits = Limits { max_head_bytes: 16 * 1024, max_headers: 100, max_body_bytes: 1 << 20 };
    let (framed, end) = match frame_requests(wire, &limits) {
        Ok(framed) => (framed, "ok"),
        Err(e) => (e.framed, if e.stop == FrameStop::Incomplete { "incomplete" } else { "error" }),
    };
    let framed =
        framed.iter().map(|f| (f.head.method().to_string(), f.head.target().to_string(), hex(&f.body))).collect();
    Outcome { framed, end: end.into() }
}

fn h11(cases: &[Case]) -> Vec<Outcome> {
    let input = serde_json::to_vec(&cases.iter().map(|c| hex(&c.wire)).collect::<Vec<_>>()).unwrap();
    let mut child = Command::new(common::sdk_python())
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/h11_frame.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "h11_frame.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let results: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    results
        .iter()
        .map(|r| Outcome {
            framed: r["framed"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| (f[0].as_str().unwrap().into(), f[1].as_str().unwrap().into(), f[2].as_str().unwrap().into()))
                .collect(),
            end: r["end"].as_str().unwrap().into(),
        })
        .collect()
}

#[test]
fn request_framing_agrees_with_h11_except_where_we_are_deliberately_stricter() {
    let cases = corpus();
    let theirs = h11(&cases);
    assert_eq!(theirs.len(), cases.len());
    let mut failures = Vec::new();
    let (mut same, mut stricter, mut h11_accepted, mut laxer) = (0, 0, 0, 0);
    for (case, theirs) in cases.iter().zip(&theirs) {
        let ours = ours(&case.wire);
        let prefix_of = |short: &Outcome, long: &Outcome| long.framed.starts_with(&short.framed);
        let ok = match case.relation {
            Relation::Same => {
                same += 1;
                ours == *theirs
            }
            Relation::Stricter(_) => {
                stricter += 1;
                h11_accepted += usize::from(theirs.end != "error");
                ours.end == "error" && prefix_of(&ours, theirs)
            }
            Relation::Laxer(_) => {
                laxer += 1;
                ours.end == "ok" && prefix_of(theirs, &ours)
            }
        };
        if !ok {
            failures.push(format!("  {} ({:?}):\n    ours: {ours:?}\n    h11:  {theirs:?}", case.name, case.relation));
        }
    }
    println!(
        "differential: {} cases: {same} framed the same as h11, {stricter} refused by us as stricter ({h11_accepted} of \
         them accepted by h11), {laxer} accepted by us where h11 is stricter",
        cases.len()
    );
    println!("stricter classes: {}", STRICTER.join("; "));
    println!("laxer classes: {}", LAXER.join("; "));
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn every_stricter_and_laxer_class_has_a_case() {
    let pieces = pieces();
    for class in STRICTER {
        assert!(pieces.iter().any(|p| p.relation == Relation::Stricter(class)), "no case for {class}");
    }
    for class in LAXER {
        assert!(pieces.iter().any(|p| p.relation == Relation::Laxer(class)), "no case for {class}");
    }
}
