//! Every fuzz seed and every input a fuzzer ever crashed on, run through the same entry
//! points the fuzz targets in `fuzz/` call: what once broke stays fixed. Inputs live in
//! `fuzz/seeds/TARGET/` and `tests/fuzz_inputs/TARGET/` (crash files go there).

use std::path::Path;

use scanstream::fuzz_api;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut count = 0;
    for dir in [
        root.join("fuzz/seeds").join(target),
        root.join("tests/fuzz_inputs").join(target),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            eprintln!("{target}: {}", path.display());
            run(&data);
            count += 1;
        }
    }
    assert!(count > 0, "no inputs for {target}");
}

#[test]
fn http_head() {
    replay("http_head", fuzz_api::http_head);
}

#[test]
fn connection() {
    replay("connection", fuzz_api::connection);
}

#[test]
fn client_message() {
    replay("client_message", fuzz_api::client_message);
}

#[test]
fn csv_rows() {
    replay("csv_rows", fuzz_api::csv_file);
}

#[test]
fn jsonl_line() {
    replay("jsonl_line", fuzz_api::jsonl_line);
}

#[test]
fn config_file() {
    replay("config_file", fuzz_api::config_file);
}

/// The connection checker must itself be able to fail, or the connection target proves
/// nothing.
#[test]
fn the_connection_checker_rejects_what_a_server_must_not_send() {
    let ok = b"HTTP/1.1 404 Not Found\r\nContent-Length: 35\r\n\r\n{\"code\":\"not_found\",\"message\":\"no\"}";
    assert_eq!(fuzz_api::check_server_bytes(ok), Ok(()));
    let upgrade = b"HTTP/1.1 101 Switching Protocols\r\n\r\n";
    let frame = |bytes: &[u8]| [upgrade.as_slice(), bytes].concat();
    assert_eq!(
        fuzz_api::check_server_bytes(&frame(b"\x81\x0c{\"type\":\"x\"}")),
        Ok(())
    );
    assert_eq!(
        fuzz_api::check_server_bytes(&frame(b"\x88\x02\x03\xe8")),
        Ok(())
    );
    let bad: [(&[u8], &str); 7] = [
        (b"HTTP/1.1 200 OK\r\n\r\nhello", "Content-Length"),
        (b"garbage\r\n\r\n", "not an HTTP response"),
        (&frame(b"\x81\x85abcdhello"), "masked"),
        (&frame(b"\x81\x05hello"), "text frame"),
        (&frame(b"\x88\x02\x03\xed"), "close code 1005"),
        (&frame(b"\x88\x02\x03\xe8\x81\x00"), "after the close"),
        (&frame(b"\xc1\x00"), "reserved bits"),
    ];
    for (bytes, why) in bad {
        let err = fuzz_api::check_server_bytes(bytes).unwrap_err();
        assert!(err.contains(why), "{err} should say {why}");
    }
}
